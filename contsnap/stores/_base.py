"""The store protocol: bytes by key, generations, compare-and-set, leases with fencing tokens.

Every backend (files, SQLite, Redis, PostgreSQL) keeps the same contract, which
``tests/test_stores.py`` checks on all four. Values are opaque bytes: a store
never unpickles anything; signing and decoding belong to the layers above.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from contsnap._errors import CheckpointError

__all__ = [
    "Entry",
    "FencedError",
    "Lease",
    "LeaseHeldError",
    "Store",
    "StoreError",
    "VersionConflictError",
]

_MODULE = "contsnap.stores"


class StoreError(CheckpointError):
    """A store refused an operation, could not be reached, or was given bad input."""

    __module__ = _MODULE


class VersionConflictError(StoreError):
    """A compare-and-set write lost: the key's version is not the one the writer expected."""

    __module__ = _MODULE


class LeaseHeldError(StoreError):
    """Another owner holds a live lease on the key; the message names it (owner, pid, host).

    The holder is also in the attributes ``owner``, ``pid``, ``host`` and
    ``expires_in`` (seconds), for a caller that decides to wait.
    """

    __module__ = _MODULE
    owner: str | None = None
    pid: int | None = None
    host: str | None = None
    expires_in: float | None = None


class FencedError(StoreError):
    """A write under a lease was refused: the lease expired, or a newer token was issued since."""

    __module__ = _MODULE


@dataclass(frozen=True)
class Lease:
    """A lease on ``key`` held by ``owner``; ``token`` grows with every acquire of that key.

    Every write made with ``lease=`` checks that this token is still the newest
    one and that the lease is live, so a holder that was paused past its ttl
    (GC, SIGSTOP, a network partition) cannot overwrite its successor's data.
    ``expires_at`` is in seconds since the epoch on the store's clock (the
    server's for Redis and PostgreSQL).
    """

    key: str
    token: int
    owner: str
    pid: int
    host: str
    expires_at: float
    ttl: float

    __module__ = _MODULE


@dataclass(frozen=True)
class Entry:
    """One stored generation: its bytes and the key's version that wrote it."""

    data: bytes
    version: int
    generation: int

    __module__ = _MODULE


@runtime_checkable
class Store(Protocol):
    """What every contsnap store offers; see ``docs/stores.md`` for the semantics."""

    url: str

    def put(
        self,
        key: str,
        data: bytes,
        *,
        keep: int = 1,
        expect: int | None = None,
        lease: Lease | None = None,
        ttl: float | None = None,
        idle: float | None = None,
        group: str | None = None,
    ) -> int: ...

    def put_many(
        self,
        items: Mapping[str, bytes],
        *,
        keep: int = 1,
        lease: Lease | None = None,
        ttl: float | None = None,
        idle: float | None = None,
        group: str | None = None,
    ) -> dict[str, int]: ...

    def get(self, key: str, *, generation: int = 0) -> bytes | None: ...

    def keys(self, *, group: str | None = None) -> list[str]: ...

    def entry(self, key: str, *, generation: int = 0) -> Entry | None: ...

    def version(self, key: str) -> int | None: ...

    def generations(self, key: str) -> list[int]: ...

    def delete(self, key: str, *, lease: Lease | None = None) -> bool: ...

    def touch(self, key: str) -> bool: ...

    def cas(self, key: str, data: bytes, expect: int, *, keep: int = 1) -> bool: ...

    def acquire(
        self, key: str, ttl: float, *, owner: str | None = None, wait: float = 0.0
    ) -> Lease: ...

    def renew(self, lease: Lease, ttl: float | None = None) -> Lease: ...

    def release(self, lease: Lease) -> bool: ...

    def current_lease(self, key: str) -> Lease | None: ...

    def sweep(self) -> int: ...

    def close(self) -> None: ...


# --- shared checks and messages, used by every backend --------------------------------------

_KEY = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.:@=+\-]{0,199}")


def check_key(url: str, key: object, what: str = "key") -> str:
    """Return ``key`` if it is a usable key; raise a `StoreError` saying why not."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise StoreError(
            f"store {url}: {what} {key!r} is not a valid key; use 1-200 characters of "
            "letters, digits and _ . : @ = + - (not starting with .)"
        )
    return key


def check_data(url: str, key: str, data: object) -> bytes:
    """Return ``data`` as bytes; a store holds bytes only (it never pickles for you)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise StoreError(
        f"store {url}: the value for key {key!r} is a {type(data).__name__}, not bytes; "
        "a store keeps opaque bytes - encode it first (e.g. contsnap.dumps)"
    )


def check_positive(url: str, name: str, value: float | None, *, integer: bool = False) -> None:
    """Refuse a non-positive (or, with ``integer``, non-int) ``name=`` argument."""
    if value is None:
        return
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
    if integer:
        bad = bad or not isinstance(value, int)
    if bad:
        kind = "a positive integer" if integer else "a positive number of seconds"
        raise StoreError(f"store {url}: {name}={value!r} must be {kind}")


def check_generation(url: str, generation: object) -> int:
    """Generation 0 is the newest, 1 the one before, ..."""
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise StoreError(f"store {url}: generation={generation!r} must be an integer >= 0")
    return generation


def default_owner() -> tuple[str, int, str]:
    """``(owner, pid, host)`` of this process: the name a refused acquirer is told."""
    pid, host = os.getpid(), socket.gethostname()
    return f"pid {pid} on {host}", pid, host


def held_error(url: str, key: str, owner: str, pid: int, host: str, left: float) -> LeaseHeldError:
    error = LeaseHeldError(
        f"store {url}: the lease on {key!r} is held by {owner!r} (pid {pid}, host {host}) "
        f"for {max(left, 0.0):.1f} s more; wait for it to be released or to expire, "
        "or stop that process"
    )
    error.owner, error.pid, error.host, error.expires_in = owner, int(pid), host, max(left, 0.0)
    return error


def fenced_error(url: str, lease: Lease, token: int | None, live: bool) -> FencedError:
    if token is None or token == lease.token:
        why = (
            "the lease expired or was released"
            if token is not None
            else "the lease no longer exists"
        )
    else:
        why = f"a newer lease (token {token}) was issued since" + ("" if live else " and expired")
    return FencedError(
        f"store {url}: write under the lease on {lease.key!r} (token {lease.token}, "
        f"{lease.owner}) refused: {why}; another process may own this work now - "
        "stop, acquire the lease again and reload the data before writing"
    )


def conflict_error(url: str, key: str, expect: int, actual: int | None) -> VersionConflictError:
    found = "is missing" if actual is None else f"is at version {actual}"
    return VersionConflictError(
        f"store {url}: compare-and-set on {key!r} expected version {expect} but the key "
        f"{found}; another writer won - read it again and retry"
    )


class StoreBase:
    """Argument checks and the conveniences every backend shares."""

    url: str = ""

    def cas(self, key: str, data: bytes, expect: int, *, keep: int = 1) -> bool:
        """Write ``data`` if ``key`` is at version ``expect`` (0: absent); return whether it won."""
        try:
            self.put(key, data, keep=keep, expect=expect)
        except VersionConflictError:
            return False
        return True

    def acquire(
        self, key: str, ttl: float, *, owner: str | None = None, wait: float = 0.0
    ) -> Lease:
        """Take the lease on ``key`` for ``ttl`` seconds, or raise `LeaseHeldError`.

        ``owner`` names the holder in the error another process gets (default:
        pid and host). With ``wait``, a held lease is tried again until it is
        free or ``wait`` seconds have passed.
        """
        check_key(self.url, key)
        check_positive(self.url, "ttl", ttl)
        if wait:
            check_positive(self.url, "wait", wait)
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._acquire(key, ttl, owner)  # type: ignore[attr-defined, no-any-return]
            except LeaseHeldError as held:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                time.sleep(min(left, 0.1, max(held.expires_in or 0.0, 0.005)))

    def put(
        self,
        key: str,
        data: bytes,
        *,
        keep: int = 1,
        expect: int | None = None,
        lease: Lease | None = None,
        ttl: float | None = None,
        idle: float | None = None,
        group: str | None = None,
    ) -> int:
        """Store ``data`` as the newest generation of ``key``; return its new version."""
        items = self._check_put({key: data}, keep, expect, ttl, idle, group)
        return self._put_items(items, keep, expect, lease, ttl, idle, group)[key]

    def put_many(
        self,
        items: Mapping[str, bytes],
        *,
        keep: int = 1,
        lease: Lease | None = None,
        ttl: float | None = None,
        idle: float | None = None,
        group: str | None = None,
    ) -> dict[str, int]:
        """Store several keys at once (one transaction or script): all are written, or none."""
        checked = self._check_put(items, keep, None, ttl, idle, group)
        return self._put_items(checked, keep, None, lease, ttl, idle, group)

    def _put_items(
        self,
        items: dict[str, bytes],
        keep: int,
        expect: int | None,
        lease: Lease | None,
        ttl: float | None,
        idle: float | None,
        group: str | None,
    ) -> dict[str, int]:
        """Write the checked ``items``; each backend's own, atomic."""
        raise NotImplementedError

    def get(self, key: str, *, generation: int = 0) -> bytes | None:
        """The bytes of ``key``'s ``generation`` (0 newest), or ``None`` if missing or expired."""
        found = self.entry(key, generation=generation)  # type: ignore[attr-defined]
        return None if found is None else found.data

    def _check_put(
        self,
        items: Mapping[str, object],
        keep: int,
        expect: int | None,
        ttl: float | None,
        idle: float | None,
        group: str | None,
    ) -> dict[str, bytes]:
        checked = {check_key(self.url, k): check_data(self.url, k, v) for k, v in items.items()}
        check_positive(self.url, "keep", keep, integer=True)
        check_positive(self.url, "ttl", ttl)
        check_positive(self.url, "idle", idle)
        if group is not None:
            check_key(self.url, group, "group")
        if expect is not None and (
            isinstance(expect, bool) or not isinstance(expect, int) or expect < 0
        ):
            raise StoreError(
                f"store {self.url}: expect={expect!r} must be a version >= 0 (0: key absent)"
            )
        return checked

    def __enter__(self) -> StoreBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]
