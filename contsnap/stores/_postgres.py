"""PostgresStore: a store in PostgreSQL tables (psycopg 3), every write one transaction.

Writers of one key are serialised by a transaction-scoped advisory lock on the
key's name; a write under a lease re-reads the lease row inside that
transaction and goes ahead only ``WHERE token = <its token>`` and the lease is
live, so a holder that lost its lease cannot commit. Times are the server's
(``clock_timestamp()``), so the clocks of the clients do not matter.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from contsnap.stores._base import StoreError, check_positive
from contsnap.stores._sql import SQLStore

__all__ = ["PostgresStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {p}keys (
    key TEXT PRIMARY KEY, grp TEXT, version BIGINT NOT NULL, size BIGINT NOT NULL,
    accessed DOUBLE PRECISION NOT NULL, deadline DOUBLE PRECISION, idle DOUBLE PRECISION,
    expires DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS {p}keys_grp ON {p}keys (grp, accessed);
CREATE INDEX IF NOT EXISTS {p}keys_accessed ON {p}keys (accessed);
CREATE INDEX IF NOT EXISTS {p}keys_expires ON {p}keys (expires);
CREATE TABLE IF NOT EXISTS {p}gens (
    key TEXT NOT NULL, version BIGINT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (key, version));
CREATE TABLE IF NOT EXISTS {p}totals (shard INTEGER PRIMARY KEY, bytes BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {p}leases (
    key TEXT PRIMARY KEY, token BIGINT NOT NULL, owner TEXT NOT NULL, pid BIGINT NOT NULL,
    host TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL)
"""

_CLOCK = "extract(epoch FROM clock_timestamp())::float8"
_NOW = f"SELECT {_CLOCK}"
# the locks, taken in the order given, then the clock: one round trip (a CTE calling a
# volatile function is evaluated once, in full, before the query reads its count)
_LOCK_THEN_NOW = (
    "WITH locked AS (SELECT pg_advisory_xact_lock(hashtextextended(name, 0)) "
    "FROM unnest(%s::text[]) AS name) "
    f"SELECT {_CLOCK} FROM (SELECT count(*) FROM locked) AS done"
)


def _now(cur: Any) -> float:
    """The server's clock, read after any locks were granted."""
    cur.execute(_NOW)
    row = cur.fetchone()
    assert row is not None
    return float(row[0])


class PostgresStore(SQLStore):
    """A store in a PostgreSQL database, shared by every process that connects to it.

    ``max_bytes`` bounds the bytes of all keys (least recently used keys are
    evicted), ``max_per_group`` the keys of one ``group=`` (``group_slack``: as
    for `SQLiteStore`). ``synchronous_commit=False`` trades the last few commits on a server crash
    for speed (fine for web pages, not for durable jobs).

    A client frozen inside a write (SIGSTOP, a long GC pause) would keep that
    write's locks, and so every other writer of the key, waiting until it wakes:
    the server ends such a session after ``idle_in_transaction`` seconds idle
    inside a transaction (its write is rolled back), and the store opens a new
    connection on its next use.
    """

    __module__ = "contsnap.stores"
    _CLOCK = _CLOCK

    def __init__(
        self,
        url: str,
        *,
        max_bytes: int | None = None,
        max_per_group: int | None = None,
        group_slack: int = 0,
        synchronous_commit: bool = True,
        prefix: str = "contsnap_",
        idle_in_transaction: float = 10.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._setup_bounds(max_bytes, max_per_group, group_slack)
        check_positive(url, "idle_in_transaction", idle_in_transaction)
        self._settings = [
            f"SET idle_in_transaction_session_timeout = {max(1, round(idle_in_transaction * 1000))}"
        ]
        if not synchronous_commit:
            self._settings.append("SET synchronous_commit = off")
        self._closed = False
        if not prefix.replace("_", "").isalnum():
            raise StoreError(f"store {url}: prefix={prefix!r} must be letters, digits and _")
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError(
                f"store {url}: PostgresStore needs psycopg 3; install it with "
                "pip install 'contsnap[postgres]'"
            ) from exc
        self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        self._lock = threading.RLock()
        self._db = self._connect()
        with self._write(["#schema"]) as (cur, _):
            for statement in _SCHEMA.format(p=prefix).split(";"):
                cur.execute(statement)

    def _translate(self, sql: str) -> str:
        return sql.replace("{p}", self.prefix).replace("?", "%s")

    def _connect(self) -> Any:
        import psycopg

        try:
            db = psycopg.connect(self.url, autocommit=True)
            for setting in self._settings:
                db.execute(setting)
        except psycopg.Error as exc:
            raise StoreError(
                f"store {self.url}: cannot connect to PostgreSQL ({exc}); check the URL, the "
                "credentials and that the server is running"
            ) from exc
        return db

    def _connection(self) -> Any:
        """The connection, opened again if the server ended it (e.g. idle in a transaction)."""
        if self._db.broken and not self._closed:
            self._db.close()
            self._db = self._connect()
        return self._db

    @contextmanager
    def _write(self, locks: Sequence[str]) -> Iterator[tuple[Any, float]]:
        with self._lock, self._failures():
            db = self._connection()
            with db.transaction(), db.cursor() as cur:
                if locks:  # sorted by the caller: no two writers wait on each other
                    cur.execute(_LOCK_THEN_NOW, ([self.prefix + name for name in locks],))
                    row = cur.fetchone()
                    assert row is not None
                    now = float(row[0])
                else:
                    now = _now(cur)
                yield cur, now

    @contextmanager
    def _read(self, clock: bool = True) -> Iterator[tuple[Any, float]]:
        with self._lock, self._failures(), self._connection().cursor() as cur:
            yield cur, (_now(cur) if clock else 0.0)

    @contextmanager
    def _failures(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise StoreError(
                f"store {self.url}: PostgreSQL failed ({exc}); check that the server is "
                "running and reachable"
            ) from exc

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._closed = True
            self._db.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"
