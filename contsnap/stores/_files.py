"""FileStore: a directory of checkpoint files, one file per key, written atomically.

The newest generation of ``key`` is the file ``key``, older ones ``key.1``,
``key.2``, ... (so a checkpoint is a plain file you can copy). Each write goes
to a temporary file that is fsynced, renamed over the old one with
``os.replace`` and followed by an fsync of the directory, so a crash leaves the
old bytes or the new ones, never a mix. Bookkeeping lives in ``.contsnap/``:
``key.meta`` (versions and expiry), ``key.lock`` (an ``fcntl`` lock around
each change), ``key.lease`` (the lease record with its fencing token) and
``key.held`` (an ``fcntl`` lock the holder keeps while its process lives, so a
crashed holder's lease can be taken at once, without waiting for its ttl).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from contsnap.stores._base import (
    Entry,
    Lease,
    StoreBase,
    StoreError,
    check_generation,
    check_key,
    check_positive,
    conflict_error,
    default_owner,
    fenced_error,
    held_error,
)

__all__ = ["FileStore"]


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


_GENERATION_SUFFIX = re.compile(r"\.\d+$")
_META = ".contsnap"


class FileStore(StoreBase):
    """A store in one directory; several processes may share it on one machine.

    It has expiry (``ttl=``/``idle=`` on `put`, removed by `sweep`)
    but no size bounds: use `SQLiteStore` where the number or bytes of
    keys must stay bounded. ``fsync=False`` skips the fsyncs (tests, tmpfs).
    """

    __module__ = "contsnap.stores"

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.url = f"file://{self.directory}"
        self.fsync = fsync
        self._meta = os.path.join(self.directory, _META)
        try:
            os.makedirs(self._meta, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"store {self.url}: cannot create the directory ({exc}); choose a writable location"
            ) from exc
        self._held: dict[str, tuple[int, int]] = {}  # key -> (token, fd of its fcntl lock)
        self._mutex = threading.Lock()

    # --- paths and low-level file operations -------------------------------------------------

    def _key(self, key: object) -> str:
        key = check_key(self.url, key)
        if _GENERATION_SUFFIX.search(key):
            raise StoreError(
                f"store {self.url}: key {key!r} ends in .<digits>, which FileStore uses for "
                "older generations (key.1, key.2, ...); choose another key"
            )
        return key

    def _path(self, key: str, generation: int = 0) -> str:
        name = key if generation == 0 else f"{key}.{generation}"
        return os.path.join(self.directory, name)

    def _side(self, key: str, suffix: str) -> str:
        return os.path.join(self._meta, f"{key}.{suffix}")

    @contextmanager
    def _flock(self, path: str, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    def _write_file(self, path: str, data: bytes) -> None:
        """Atomically replace ``path`` by ``data`` (temp file, fsync, rename, fsync of the dir)."""
        folder = os.path.dirname(path)
        tmp = os.path.join(folder, f".tmp-{os.getpid()}-{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._sync_dir(folder)

    def _sync_dir(self, folder: str) -> None:
        if self.fsync:
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _read_json(self, path: str) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as f:
                value = json.loads(f.read())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise StoreError(
                f"store {self.url}: the bookkeeping file {path} is damaged ({exc}); "
                "delete it to reset that key"
            ) from exc
        if not isinstance(value, dict):
            raise StoreError(f"store {self.url}: the bookkeeping file {path} is damaged")
        return value

    def _live_meta(self, key: str, now: float) -> dict[str, Any] | None:
        meta = self._read_json(self._side(key, "meta"))
        if meta is None or not os.path.exists(self._path(key)):
            return None
        expires = meta.get("expires")
        if expires is not None and expires <= now:
            return None
        return meta

    # --- reads -------------------------------------------------------------------------------

    def entry(self, key: str, *, generation: int = 0) -> Entry | None:
        """The ``generation`` of ``key`` with its version, or ``None`` if missing or expired."""
        key = self._key(key)
        generation = check_generation(self.url, generation)
        with self._flock(self._side(key, "lock"), fcntl.LOCK_SH):
            meta = self._live_meta(key, time.time())
            if meta is None or generation >= len(meta["versions"]):
                return None
            if os.path.exists(self._side(key, "putting")):
                data = self._find(key, meta, generation)
                if data is None:
                    return None
            else:
                try:
                    with open(self._path(key, generation), "rb") as f:
                        data = f.read()
                except FileNotFoundError:
                    return None
        return Entry(data, int(meta["versions"][generation]), generation)

    # A put renames the older generations up (key -> key.1 ...), writes the new bytes as
    # ``key``, then the bookkeeping: that last write is its commit point. It marks its
    # start with the file ``key.putting`` and removes it after the bookkeeping, so a put
    # killed in between is seen by the next reader: the bookkeeping's digests then find
    # each generation it recorded where the renames left it (one up), or not at all.

    def _find(self, key: str, meta: dict[str, Any], generation: int) -> bytes | None:
        """The bytes of ``generation`` as ``meta`` recorded them, after a killed put."""
        digests = meta.get("digests")
        if not isinstance(digests, list) or len(digests) <= generation:
            # recorded by an older contsnap: nothing tells which file is which
            with suppress(FileNotFoundError), open(self._path(key, generation), "rb") as f:
                return f.read()
            return None
        want = digests[generation]
        places = [generation, *(g for g in range(len(digests) + 1) if g != generation)]
        for place in places:
            try:
                with open(self._path(key, place), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            if _digest(data) == want:
                return data
        return None

    def _settle(self, key: str, meta: dict[str, Any]) -> tuple[list[int], list[str]]:
        """Put the generations of a killed put's ``meta`` back in place (see `_find`).

        Returns their versions and digests, up to the first one that is gone.
        """
        versions = [int(v) for v in meta["versions"]]
        digests = meta.get("digests")
        if not isinstance(digests, list) or len(digests) != len(versions):
            return versions, []
        found = []
        for generation in range(len(versions)):
            data = self._find(key, meta, generation)
            if data is None:
                break
            found.append(data)
        for generation, data in enumerate(found):
            self._write_file(self._path(key, generation), data)
        self._remove_generations(key, len(found))
        return versions[: len(found)], digests[: len(found)]

    def version(self, key: str) -> int | None:
        """The newest version of ``key`` (1 after its first put), or ``None`` if absent."""
        versions = self.generations(key)
        return versions[0] if versions else None

    def generations(self, key: str) -> list[int]:
        """The versions kept for ``key``, newest first (index = generation)."""
        key = self._key(key)
        with self._flock(self._side(key, "lock"), fcntl.LOCK_SH):
            meta = self._live_meta(key, time.time())
            if meta is None:
                return []
            versions = [int(v) for v in meta["versions"]]
            if os.path.exists(self._side(key, "putting")):  # a put was killed
                for generation in range(len(versions)):
                    if self._find(key, meta, generation) is None:
                        return versions[:generation]
        return versions

    def keys(self, *, group: str | None = None) -> list[str]:
        """The live keys, sorted; only those written with ``group=`` if given."""
        if group is not None:
            check_key(self.url, group, "group")
        found = []
        now = time.time()
        for name in os.listdir(self._meta):
            if name.endswith(".meta"):
                key = name[: -len(".meta")]
                meta = self._live_meta(key, now)
                if meta is not None and (group is None or meta.get("group") == group):
                    found.append(key)
        return sorted(found)

    # --- writes ------------------------------------------------------------------------------

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
        data = self._check_put({key: data}, keep, expect, ttl, idle, group)[key]
        key = self._key(key)
        with self._fenced(lease), self._flock(self._side(key, "lock")):
            now = time.time()
            meta = self._live_meta(key, now)
            putting = self._side(key, "putting")
            versions: list[int] = []
            digests: list[str] = []
            if meta is not None and os.path.exists(putting):
                versions, digests = self._settle(key, meta)  # an earlier put was killed
            elif meta is not None:
                versions = [int(v) for v in meta["versions"]]
                recorded = meta.get("digests")
                digests = recorded if isinstance(recorded, list) else []
            current = None if meta is None else int(meta["versions"][0])
            if expect is not None and (current or 0) != expect:
                raise conflict_error(self.url, key, expect, current)
            if meta is None:
                self._remove_generations(key, 0)
            new = (current or 0) + 1
            os.close(os.open(putting, os.O_WRONLY | os.O_CREAT, 0o600))
            # older generations recorded without their digests get none
            digests = [_digest(data), *digests] if len(digests) == len(versions) else []
            versions = [new, *versions][:keep]
            digests = digests[:keep]
            self._rotate(key, len(versions))
            self._write_file(self._path(key), data)
            self._remove_generations(key, len(versions))
            deadline = None if ttl is None else now + ttl
            expires = [t for t in (deadline, None if idle is None else now + idle) if t is not None]
            meta = {
                "versions": versions,
                "digests": digests,
                "group": group,
                "deadline": deadline,
                "idle": idle,
                "expires": min(expires) if expires else None,
            }
            self._write_file(self._side(key, "meta"), json.dumps(meta).encode())
            os.unlink(putting)
        return new

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
        """Store one key; several keys at once cannot be atomic on files, so that is refused."""
        if len(items) != 1:
            raise StoreError(
                f"store {self.url}: put_many of {len(items)} keys cannot be atomic in a "
                "directory of files; use SQLiteStore, RedisStore or PostgresStore for that"
            )
        [(key, data)] = items.items()
        return {key: self.put(key, data, keep=keep, lease=lease, ttl=ttl, idle=idle, group=group)}

    def _rotate(self, key: str, count: int) -> None:
        """Shift generations up by one so that ``count`` remain once the new file is written."""
        for generation in range(count - 2, 0, -1):
            with suppress(FileNotFoundError):
                os.replace(self._path(key, generation), self._path(key, generation + 1))
        if count >= 2 and os.path.exists(self._path(key)):
            # a hard link keeps `key` readable until the new bytes replace it
            link = os.path.join(self.directory, f".tmp-link-{os.getpid()}-{threading.get_ident()}")
            with suppress(FileNotFoundError):
                os.unlink(link)
            os.link(self._path(key), link)
            os.replace(link, self._path(key, 1))

    def _remove_generations(self, key: str, first: int) -> None:
        generation = max(first, 1)
        while os.path.exists(self._path(key, generation)):
            os.unlink(self._path(key, generation))
            generation += 1
        if first == 0:
            with suppress(FileNotFoundError):
                os.unlink(self._path(key))

    def delete(self, key: str, *, lease: Lease | None = None) -> bool:
        """Remove ``key`` and all its generations; return whether it existed."""
        key = self._key(key)
        with self._fenced(lease), self._flock(self._side(key, "lock")):
            existed = self._live_meta(key, time.time()) is not None
            self._remove_generations(key, 0)
            for side in ("meta", "putting"):
                with suppress(FileNotFoundError):
                    os.unlink(self._side(key, side))
            self._sync_dir(self.directory)
        return existed

    def touch(self, key: str) -> bool:
        """Restart ``key``'s idle timer; return whether it exists."""
        key = self._key(key)
        with self._flock(self._side(key, "lock")):
            now = time.time()
            meta = self._live_meta(key, now)
            if meta is None:
                return False
            if meta.get("idle") is not None:
                deadline = meta.get("deadline")
                meta["expires"] = min(t for t in (deadline, now + meta["idle"]) if t is not None)
                self._write_file(self._side(key, "meta"), json.dumps(meta).encode())
        return True

    def sweep(self) -> int:
        """Remove every expired key, and temporary files a crash left; return how many keys."""
        removed = 0
        now = time.time()
        for folder in (self.directory, self._meta):
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                with suppress(FileNotFoundError):
                    if name.startswith(".tmp-") and os.stat(path).st_mtime < now - 3600:
                        os.unlink(path)
        for name in os.listdir(self._meta):
            if not name.endswith(".meta"):
                continue
            key = name[: -len(".meta")]
            meta = self._read_json(os.path.join(self._meta, name))
            if meta is None or meta.get("expires") is None or meta["expires"] > now:
                continue
            with self._flock(self._side(key, "lock")):
                if self._live_meta(key, time.time()) is None and os.path.exists(
                    self._side(key, "meta")
                ):
                    self._remove_generations(key, 0)
                    os.unlink(self._side(key, "meta"))
                    with suppress(FileNotFoundError):
                        os.unlink(self._side(key, "putting"))
                    removed += 1
        return removed

    # --- leases ------------------------------------------------------------------------------

    def _acquire(self, key: str, ttl: float, owner: str | None) -> Lease:
        """One try at the lease (see `StoreBase.acquire`)."""
        key = self._key(key)
        check_positive(self.url, "ttl", ttl)
        name, pid, host = default_owner()
        owner = name if owner is None else owner
        with self._mutex, self._flock(self._side(key, "lease.lock")):
            now = time.time()
            record = self._read_json(self._side(key, "lease"))
            held = os.open(self._side(key, "held"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got_lock = True
            except BlockingIOError:
                got_lock = False
            if record is not None and record["expires"] > now and not got_lock:
                os.close(held)
                raise held_error(
                    self.url, key, record["owner"], record["pid"], record["host"],
                    record["expires"] - now,
                )  # fmt: skip
            token = (0 if record is None else int(record["token"])) + 1
            if key in self._held:  # an earlier lease of this object: over now
                os.close(self._held.pop(key)[1])
            if got_lock:
                self._held[key] = (token, held)
            else:  # a paused holder keeps its fcntl lock; the record decides
                os.close(held)
            lease = Lease(key, token, owner, pid, host, now + ttl, ttl)
            self._write_record(lease)
        return lease

    def _write_record(self, lease: Lease) -> None:
        record = {
            "token": lease.token,
            "owner": lease.owner,
            "pid": lease.pid,
            "host": lease.host,
            "expires": lease.expires_at,
        }
        self._write_file(self._side(lease.key, "lease"), json.dumps(record).encode())

    def _check_lease(self, lease: Lease, now: float) -> None:
        record = self._read_json(self._side(lease.key, "lease"))
        if record is None or int(record["token"]) != lease.token or record["expires"] <= now:
            token = None if record is None else int(record["token"])
            raise fenced_error(
                self.url, lease, token, record is not None and record["expires"] > now
            )

    @contextmanager
    def _fenced(self, lease: Lease | None) -> Iterator[None]:
        """Hold the lease record still while a write under ``lease`` runs, after checking it."""
        if lease is None:
            yield
            return
        with self._flock(self._side(lease.key, "lease.lock")):
            self._check_lease(lease, time.time())
            yield

    def renew(self, lease: Lease, ttl: float | None = None) -> Lease:
        """Extend a live lease by ``ttl`` (default: its own); `FencedError` if lost."""
        ttl = lease.ttl if ttl is None else ttl
        check_positive(self.url, "ttl", ttl)
        with self._flock(self._side(lease.key, "lease.lock")):
            now = time.time()
            self._check_lease(lease, now)
            renewed = Lease(
                lease.key, lease.token, lease.owner, lease.pid, lease.host, now + ttl, ttl
            )
            self._write_record(renewed)
        return renewed

    def release(self, lease: Lease) -> bool:
        """Give the lease up; ``False`` if it was no longer live (released, expired or taken)."""
        with self._mutex, self._flock(self._side(lease.key, "lease.lock")):
            record = self._read_json(self._side(lease.key, "lease"))
            if self._held.get(lease.key, (None, 0))[0] == lease.token:
                os.close(self._held.pop(lease.key)[1])
            if (
                record is None
                or int(record["token"]) != lease.token
                or record["expires"] <= time.time()
            ):
                return False
            self._write_record(
                Lease(lease.key, lease.token, lease.owner, lease.pid, lease.host, 0.0, lease.ttl)
            )
        return True

    def current_lease(self, key: str) -> Lease | None:
        """The live lease on ``key`` as it stands (``ttl``: the seconds left), or ``None``.

        A holder that died on this host is shown until its lease expires, though
        the next `acquire` takes its lease at once.
        """
        key = self._key(key)
        record = self._read_json(self._side(key, "lease"))
        now = time.time()
        if record is None or record["expires"] <= now:
            return None
        return Lease(
            key, int(record["token"]), record["owner"], int(record["pid"]), record["host"],
            record["expires"], record["expires"] - now,
        )  # fmt: skip

    def close(self) -> None:
        """Let go of the ``fcntl`` locks of the leases this object holds."""
        with self._mutex:
            for _token, fd in self._held.values():
                os.close(fd)
            self._held.clear()

    def __repr__(self) -> str:
        return f"FileStore({self.directory!r})"
