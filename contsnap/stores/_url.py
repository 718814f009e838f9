"""``open_store(url)``: the backend a URL names, with keyword options passed through."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from contsnap.stores._base import StoreBase, StoreError

__all__ = ["open_store"]

_SCHEMES = "file:///dir, sqlite:///path (sqlite:////absolute/path), redis://host:port/db, postgresql://user@host:port/db"


def open_store(url: str, **options: Any) -> StoreBase:
    """Open the store ``url`` names; ``options`` go to the backend's constructor.

    ``file:///dir`` is a `FileStore`, ``sqlite:///relative.db`` or
    ``sqlite:////absolute.db`` a `SQLiteStore`, ``redis://`` (or
    ``rediss://``, ``unix://``) a `RedisStore`, ``postgresql://`` (or
    ``postgres://``) a `PostgresStore`.
    """
    if not isinstance(url, str):
        raise StoreError(f"open_store: the URL must be a string, not {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise StoreError(
                f"open_store: {url!r} is not a local directory URL; write file:///absolute/dir"
            )
        from contsnap.stores._files import FileStore

        return FileStore(parts.path, **options)
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.lower().startswith("sqlite:///") else ""
        if not path:
            raise StoreError(
                f"open_store: {url!r} names no database file; write sqlite:///relative.db "
                "or sqlite:////absolute/path.db"
            )
        from contsnap.stores._sqlite import SQLiteStore

        return SQLiteStore(os.path.expanduser(path), **options)
    if scheme in ("redis", "rediss", "unix"):
        from contsnap.stores._redis import RedisStore

        return RedisStore(url, **options)
    if scheme in ("postgresql", "postgres"):
        from contsnap.stores._postgres import PostgresStore

        return PostgresStore(url, **options)
    raise StoreError(f"open_store: cannot open {url!r}; use one of {_SCHEMES}")
