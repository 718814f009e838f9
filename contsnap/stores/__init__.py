"""Stores: bytes by key, with generations, compare-and-set, leases with fencing tokens, expiry.

Four backends keep one contract (``docs/stores.md``): `FileStore` (a
directory), `SQLiteStore` (one file, several processes),
`RedisStore` and `PostgresStore` (servers; install
``contsnap[redis]`` or ``contsnap[postgres]``). `open_store` picks one from
a URL. Values are opaque bytes: a store never unpickles anything.
"""

from __future__ import annotations

from contsnap.stores._base import (
    Entry,
    FencedError,
    Lease,
    LeaseHeldError,
    Store,
    StoreError,
    VersionConflictError,
)
from contsnap.stores._files import FileStore
from contsnap.stores._postgres import PostgresStore
from contsnap.stores._redis import RedisStore
from contsnap.stores._sqlite import SQLiteStore
from contsnap.stores._url import open_store

__all__ = [
    "Entry",
    "FencedError",
    "FileStore",
    "Lease",
    "LeaseHeldError",
    "PostgresStore",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "StoreError",
    "VersionConflictError",
    "open_store",
]

open_store.__module__ = __name__
Store.__module__ = __name__
