"""SQLiteStore: the embedded shared store (stdlib ``sqlite3``, WAL, safe for several processes).

Every write is one ``BEGIN IMMEDIATE`` transaction, so compare-and-set, lease
acquire and fenced writes are serialised by SQLite's own file lock; readers
never block writers (WAL). A commit is in the WAL, so in the operating system's
hands, before ``put`` returns: a crash of the process loses nothing
(``synchronous=NORMAL``: the WAL is fsynced at each checkpoint, so a power cut
may lose the last commits, never corrupt the file). `SQLiteStore.sweep` also
truncates the WAL, which otherwise keeps the size of its busiest moment.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from contsnap.stores._base import StoreError
from contsnap.stores._sql import SQLStore

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {p}keys (
    key TEXT PRIMARY KEY, grp TEXT, version INTEGER NOT NULL, size INTEGER NOT NULL,
    accessed REAL NOT NULL, deadline REAL, idle REAL, expires REAL);
CREATE INDEX IF NOT EXISTS {p}keys_grp ON {p}keys (grp, accessed);
CREATE INDEX IF NOT EXISTS {p}keys_accessed ON {p}keys (accessed);
CREATE INDEX IF NOT EXISTS {p}keys_expires ON {p}keys (expires);
CREATE TABLE IF NOT EXISTS {p}gens (
    key TEXT NOT NULL, version INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (key, version));
CREATE TABLE IF NOT EXISTS {p}totals (shard INTEGER PRIMARY KEY, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS {p}leases (
    key TEXT PRIMARY KEY, token INTEGER NOT NULL, owner TEXT NOT NULL, pid INTEGER NOT NULL,
    host TEXT NOT NULL, expires REAL NOT NULL);
"""


class SQLiteStore(SQLStore):
    """A store in one SQLite file, shared by every process that opens the same path.

    ``max_bytes`` bounds the bytes of all keys (least recently used keys are
    evicted), ``max_per_group`` the keys of one ``group=``; a put that takes a
    group over its bound evicts its least recently used keys down to
    ``max_per_group - group_slack`` (default 0: exactly the bound; a slack makes
    the eviction's writes once every ``group_slack + 1`` puts instead of on each).
    ``busy_timeout`` is how long a writer waits for another process's transaction
    (seconds).
    """

    __module__ = "contsnap.stores"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        max_per_group: int | None = None,
        group_slack: int = 0,
        busy_timeout: float = 10.0,
        prefix: str = "contsnap_",
    ) -> None:
        self.path = os.fspath(path)
        self.url = f"sqlite:///{os.path.abspath(self.path)}"
        self.prefix = prefix
        self._setup_bounds(max_bytes, max_per_group, group_slack)
        if not prefix.replace("_", "").isalnum():
            raise StoreError(f"store {self.url}: prefix={prefix!r} must be letters, digits and _")
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self._write([]) as (cur, _now):
                for statement in _SCHEMA.format(p=prefix).split(";"):
                    if statement.strip():
                        cur.execute(statement)
        except sqlite3.Error as exc:
            raise StoreError(
                f"store {self.url}: cannot open the SQLite database ({exc}); check that the "
                "directory exists and is writable"
            ) from exc
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass

    def _translate(self, sql: str) -> str:
        return sql.replace("{p}", self.prefix)

    @contextmanager
    def _failures(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(
                f"store {self.url}: SQLite failed ({exc}); check the disk and the file's "
                "permissions; if it is locked, raise busy_timeout or find the process "
                "holding a long transaction"
            ) from exc

    @contextmanager
    def _write(self, locks: Sequence[str]) -> Iterator[tuple[Any, float]]:
        # BEGIN IMMEDIATE takes SQLite's write lock up front: the whole database is the lock.
        with self._lock, self._failures():
            cur = self._db.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreError(
                    f"store {self.url}: the database stayed locked by another writer ({exc}); "
                    "raise busy_timeout or find the process holding a long transaction"
                ) from exc
            try:
                yield cur, time.time()
            except BaseException:
                if self._db.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")

    @contextmanager
    def _read(self, clock: bool = True) -> Iterator[tuple[Any, float]]:
        with self._lock, self._failures():
            yield self._db.cursor(), time.time()

    def sweep(self) -> int:
        """Remove expired keys, then truncate the WAL so the file's growth stays bounded."""
        removed = super().sweep()
        with self._lock, self._failures():
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"
