"""The store logic SQLite and PostgreSQL share: three tables, every write in one transaction.

``<prefix>keys`` holds one row per key (version, group, size, last access,
expiry), ``<prefix>gens`` the last ``keep`` generations of its bytes,
``<prefix>leases`` one row per leased key whose ``token`` only ever grows (the
row outlives a release, so the next acquire gets a bigger token), and
``<prefix>totals`` the bytes of all keys, spread over a few rows so that
concurrent writers rarely wait on the same row (the ``max_bytes`` check sums
those rows instead of scanning every key). A backend
supplies the connection, the transaction boundaries and the clock.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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

_LEASE_LOCK = "#lease/"  # a prefix no valid key has: lease locks never collide with data keys
_TOTAL_SHARDS = 16
_BATCH = 100  # keys per DELETE ... IN (...) of an eviction or a sweep


class SQLStore(StoreBase):
    """Shared implementation; subclasses define ``_write``, ``_read`` and ``_translate``."""

    prefix: str
    max_bytes: int | None
    max_per_group: int | None
    group_slack: int
    _statements: dict[str, str]

    def _setup_bounds(
        self, max_bytes: int | None, max_per_group: int | None, group_slack: int = 0
    ) -> None:
        check_positive(self.url, "max_bytes", max_bytes, integer=True)
        check_positive(self.url, "max_per_group", max_per_group, integer=True)
        if (
            isinstance(group_slack, bool)
            or not isinstance(group_slack, int)
            or not 0 <= group_slack < (max_per_group or 1)
        ):
            raise StoreError(
                f"store {self.url}: group_slack={group_slack!r} must be an integer from 0 to "
                "max_per_group - 1 (how many keys below max_per_group an eviction goes)"
            )
        self.max_bytes, self.max_per_group = max_bytes, max_per_group
        self.group_slack = group_slack
        self._statements = {}

    # --- backend hooks ---------------------------------------------------------------------

    def _write(self, locks: Sequence[str]) -> Any:  # context manager yielding (cursor, now)
        raise NotImplementedError

    def _read(self, clock: bool = True) -> Any:
        """Context manager yielding (cursor, now); ``clock=False``: ``now`` is not needed."""
        raise NotImplementedError

    #: SQL for the store's clock where the server keeps it (PostgreSQL); None: this process's
    _CLOCK: str | None = None

    def _translate(self, sql: str) -> str:
        """The statement with the table prefix filled in and the backend's placeholders."""
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        """`_translate`, remembered: the same text each time, so the driver's cache hits."""
        done = self._statements.get(sql)
        if done is None:
            done = self._statements[sql] = self._translate(sql)
        return done

    # --- reads -----------------------------------------------------------------------------

    def entry(self, key: str, *, generation: int = 0) -> Entry | None:
        """The ``generation`` of ``key`` with its version, or ``None`` if missing or expired."""
        check_key(self.url, key)
        generation = check_generation(self.url, generation)
        with self._read() as (cur, now):
            cur.execute(
                self._q(
                    "SELECT g.data, g.version, k.expires FROM {p}keys k JOIN {p}gens g "
                    "ON g.key = k.key WHERE k.key = ? ORDER BY g.version DESC LIMIT 1 OFFSET ?"
                ),
                (key, generation),
            )
            row = cur.fetchone()
        if row is None or _expired(row[2], now):
            return None
        return Entry(bytes(row[0]), int(row[1]), generation)

    def get(self, key: str, *, generation: int = 0) -> bytes | None:
        """The bytes of ``key``'s ``generation`` (0 newest), or ``None`` if missing or expired."""
        if generation != 0 or type(generation) is not int:
            return super().get(key, generation=generation)
        check_key(self.url, key)
        clock = self._CLOCK
        # the newest generation is the one the key row names; a server's clock is read by the
        # query itself (no round trip for it), this process's is passed in
        with self._read(clock=clock is None) as (cur, now):
            cur.execute(
                self._q(
                    "SELECT g.data FROM {p}keys k JOIN {p}gens g "
                    "ON g.key = k.key AND g.version = k.version WHERE k.key = ? "
                    f"AND (k.expires IS NULL OR k.expires > {clock or '?'})"
                ),
                (key,) if clock else (key, now),
            )
            row = cur.fetchone()
        return None if row is None else bytes(row[0])

    def version(self, key: str) -> int | None:
        """The newest version of ``key`` (1 after its first put), or ``None`` if absent."""
        check_key(self.url, key)
        with self._read() as (cur, now):
            cur.execute(self._q("SELECT version, expires FROM {p}keys WHERE key = ?"), (key,))
            row = cur.fetchone()
        return None if row is None or _expired(row[1], now) else int(row[0])

    def generations(self, key: str) -> list[int]:
        """The versions kept for ``key``, newest first (index = generation)."""
        check_key(self.url, key)
        with self._read() as (cur, now):
            cur.execute(
                self._q(
                    "SELECT g.version, k.expires FROM {p}keys k JOIN {p}gens g ON g.key = k.key "
                    "WHERE k.key = ? ORDER BY g.version DESC"
                ),
                (key,),
            )
            rows = cur.fetchall()
        return [int(r[0]) for r in rows if not _expired(r[1], now)]

    def keys(self, *, group: str | None = None) -> list[str]:
        """The live keys, sorted; only those written with ``group=`` if given."""
        if group is not None:
            check_key(self.url, group, "group")
        sql = "SELECT key, expires FROM {p}keys" + ("" if group is None else " WHERE grp = ?")
        with self._read() as (cur, now):
            cur.execute(self._q(sql), () if group is None else (group,))
            rows = cur.fetchall()
        return sorted(str(r[0]) for r in rows if not _expired(r[1], now))

    # --- writes ----------------------------------------------------------------------------

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
        versions: dict[str, int] = {}
        q = self._q
        with self._write(self._locks(items, lease)) as (cur, now):
            if lease is not None:
                self._check_lease(cur, now, lease)
            deadline = None if ttl is None else now + ttl
            expires = _expiry(now, deadline, idle)
            delta = 0  # the change of the stored bytes, added to the totals once at the end
            for key, data in items.items():
                if not expect:
                    # the usual case, a key not stored yet: its INSERT is its only check
                    cur.execute(
                        q(
                            "INSERT INTO {p}keys (key, grp, version, size, accessed, deadline, "
                            "idle, expires) VALUES (?, ?, 1, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (key) DO NOTHING"
                        ),
                        (key, group, len(data), now, deadline, idle, expires),
                    )
                    if cur.rowcount == 1:
                        cur.execute(
                            q("INSERT INTO {p}gens (key, version, data) VALUES (?, 1, ?)"),
                            (key, data),
                        )
                        delta += len(data)
                        versions[key] = 1
                        continue
                row, freed = self._live_row(cur, now, key)
                delta -= freed
                current, old_size = (None, 0) if row is None else row
                if expect is not None and (current or 0) != expect:
                    raise conflict_error(self.url, key, expect, current)
                new = (current or 0) + 1
                cur.execute(
                    q("INSERT INTO {p}gens (key, version, data) VALUES (?, ?, ?)"),
                    (key, new, data),
                )
                size = len(data)
                if current is not None and keep > 1:
                    cur.execute(
                        q("DELETE FROM {p}gens WHERE key = ? AND version <= ?"),
                        (key, new - keep),
                    )
                    cur.execute(
                        q("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM {p}gens WHERE key = ?"),
                        (key,),
                    )
                    size = int(cur.fetchone()[0])
                elif current is not None:  # keep=1: the new generation is all that stays
                    cur.execute(q("DELETE FROM {p}gens WHERE key = ? AND version < ?"), (key, new))
                delta += size - old_size
                cur.execute(
                    q(
                        "INSERT INTO {p}keys (key, grp, version, size, accessed, deadline, idle, "
                        "expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                        "grp = excluded.grp, version = excluded.version, size = excluded.size, "
                        "accessed = excluded.accessed, deadline = excluded.deadline, "
                        "idle = excluded.idle, expires = excluded.expires"
                    ),
                    (key, group, new, size, now, deadline, idle, expires),
                )
                versions[key] = new
            delta -= self._enforce_bounds(cur, group, set(items), delta)
            self._add_bytes(cur, delta)
        return versions

    def _locks(self, keys: Mapping[str, object] | Sequence[str], lease: Lease | None) -> list[str]:
        names = list(keys)
        if lease is not None:
            names.append(_LEASE_LOCK + lease.key)
        return sorted(set(names))

    def _live_row(self, cur: Any, now: float, key: str) -> tuple[tuple[int, int] | None, int]:
        """The key's (version, size) or None, and the bytes freed dropping it if it had expired.

        An expired key is dropped first: a put starts it afresh.
        """
        cur.execute(self._q("SELECT version, size, expires FROM {p}keys WHERE key = ?"), (key,))
        row = cur.fetchone()
        if row is None:
            return None, 0
        if _expired(row[2], now):
            return None, self._drop(cur, key, int(row[1]))
        return (int(row[0]), int(row[1])), 0

    def _drop(self, cur: Any, key: str, size: int | None = None) -> int:
        """Delete ``key`` (``size``: its bytes, if known); the bytes freed, for the totals."""
        if size is None:
            cur.execute(self._q("SELECT size FROM {p}keys WHERE key = ?"), (key,))
            row = cur.fetchone()  # (no DELETE ... RETURNING: SQLite has it only since 3.35)
            size = 0 if row is None else int(row[0])
        cur.execute(self._q("DELETE FROM {p}keys WHERE key = ?"), (key,))
        cur.execute(self._q("DELETE FROM {p}gens WHERE key = ?"), (key,))
        return size

    def _drop_known(self, cur: Any, victims: Sequence[tuple[str, int]]) -> int:
        """Delete the keys of ``(key, size)`` pairs, a batch per statement; the bytes freed."""
        for start in range(0, len(victims), _BATCH):
            names = [key for key, _ in victims[start : start + _BATCH]]
            marks = ", ".join("?" * len(names))
            cur.execute(self._q(f"DELETE FROM {{p}}keys WHERE key IN ({marks})"), names)
            cur.execute(self._q(f"DELETE FROM {{p}}gens WHERE key IN ({marks})"), names)
        return sum(size for _, size in victims)

    def _add_bytes(self, cur: Any, delta: int) -> None:
        if delta:
            cur.execute(
                self._q(
                    "INSERT INTO {p}totals (shard, bytes) VALUES (?, ?) ON CONFLICT (shard) "
                    "DO UPDATE SET bytes = {p}totals.bytes + excluded.bytes"
                ),
                (os.getpid() % _TOTAL_SHARDS, delta),
            )

    def _enforce_bounds(
        self, cur: Any, group: str | None, written: set[str], pending: int = 0
    ) -> int:
        """Evict least-recently-used keys (never the ones just written) to honour the bounds.

        ``pending``: bytes this transaction wrote that the totals do not show yet.
        Returns the bytes freed (the caller adds both to the totals, once).
        """
        freed = 0
        stored = None  # the totals' bytes, read with the group's count when both are bounded
        if self.max_per_group is not None and group is not None:
            if self.max_bytes is None:
                cur.execute(self._q("SELECT COUNT(*) FROM {p}keys WHERE grp = ?"), (group,))
                count = int(cur.fetchone()[0])
            else:
                cur.execute(
                    self._q(
                        "SELECT (SELECT COUNT(*) FROM {p}keys WHERE grp = ?), "
                        "(SELECT COALESCE(SUM(bytes), 0) FROM {p}totals)"
                    ),
                    (group,),
                )
                count, stored = (int(n) for n in cur.fetchone())
            over = count - self.max_per_group
            if over > 0:
                # down to group_slack below the bound: the next group_slack puts evict nothing
                wanted = over + self.group_slack
                # the least recently used first (ties: the later key), never one just written
                cur.execute(
                    self._q(
                        "SELECT key, size FROM {p}keys WHERE grp = ? "
                        "ORDER BY accessed, key DESC LIMIT ?"
                    ),
                    (group, wanted + len(written)),
                )
                victims = [(k, int(n)) for k, n in cur.fetchall() if k not in written][:wanted]
                freed += self._drop_known(cur, victims)
                # more keys written at once than the bound: the later ones go too
                for key in sorted(written, reverse=True)[: over - len(victims)]:
                    freed += self._drop(cur, key)
        if self.max_bytes is None:
            return freed
        if stored is None:  # (the group evictions since are in freed, not yet in the totals)
            cur.execute(self._q("SELECT COALESCE(SUM(bytes), 0) FROM {p}totals"))
            stored = int(cur.fetchone()[0])
        total = stored + pending - freed
        while total > self.max_bytes:
            # a batch of the least recently used keys; it holds some not written now, if any exist
            cur.execute(
                self._q("SELECT key, size FROM {p}keys ORDER BY accessed, key LIMIT ?"),
                (len(written) + 32,),
            )
            victims = [(k, int(size)) for k, size in cur.fetchall() if k not in written]
            if not victims:
                raise StoreError(
                    f"store {self.url}: writing {sorted(written)} needs {total} bytes, more "
                    f"than max_bytes={self.max_bytes} even after evicting every other key; "
                    "raise max_bytes or keep fewer generations"
                )
            chosen = []
            for key, size in victims:
                if total <= self.max_bytes:
                    break
                chosen.append((key, size))
                total -= size
            freed += self._drop_known(cur, chosen)
        return freed

    def delete(self, key: str, *, lease: Lease | None = None) -> bool:
        """Remove ``key`` and all its generations; return whether it existed."""
        check_key(self.url, key)
        with self._write(self._locks([key], lease)) as (cur, now):
            if lease is not None:
                self._check_lease(cur, now, lease)
            row, freed = self._live_row(cur, now, key)
            if row is not None:
                freed += self._drop(cur, key, row[1])
            self._add_bytes(cur, -freed)
        return row is not None

    def touch(self, key: str) -> bool:
        """Mark ``key`` used now: last in the LRU order, its idle timer restarted."""
        check_key(self.url, key)
        with self._write([key]) as (cur, now):
            cur.execute(
                self._q("SELECT deadline, idle, expires FROM {p}keys WHERE key = ?"), (key,)
            )
            row = cur.fetchone()
            if row is None or _expired(row[2], now):
                return False
            cur.execute(
                self._q("UPDATE {p}keys SET accessed = ?, expires = ? WHERE key = ?"),
                (now, _expiry(now, row[0], row[1]), key),
            )
        return True

    def sweep(self) -> int:
        """Remove every expired key; return how many."""
        with self._write([]) as (cur, now):
            cur.execute(
                self._q("SELECT key, size FROM {p}keys WHERE expires IS NOT NULL AND expires <= ?"),
                (now,),
            )
            expired = [(str(key), int(size)) for key, size in cur.fetchall()]
            self._add_bytes(cur, -self._drop_known(cur, expired))
        return len(expired)

    # --- leases ----------------------------------------------------------------------------

    def _acquire(self, key: str, ttl: float, owner: str | None) -> Lease:
        """One try at the lease (see `StoreBase.acquire`)."""
        check_key(self.url, key)
        check_positive(self.url, "ttl", ttl)
        name, pid, host = default_owner()
        owner = name if owner is None else owner
        with self._write([_LEASE_LOCK + key]) as (cur, now):
            cur.execute(
                self._q("SELECT token, owner, pid, host, expires FROM {p}leases WHERE key = ?"),
                (key,),
            )
            row = cur.fetchone()
            if row is not None and row[4] > now:
                raise held_error(self.url, key, row[1], row[2], row[3], row[4] - now)
            token = (0 if row is None else int(row[0])) + 1
            cur.execute(
                self._q(
                    "INSERT INTO {p}leases (key, token, owner, pid, host, expires) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                    "token = excluded.token, owner = excluded.owner, pid = excluded.pid, "
                    "host = excluded.host, expires = excluded.expires"
                ),
                (key, token, owner, pid, host, now + ttl),
            )
        return Lease(key, token, owner, pid, host, now + ttl, ttl)

    def renew(self, lease: Lease, ttl: float | None = None) -> Lease:
        """Extend a live lease by ``ttl`` (default: its own); `FencedError` if lost."""
        ttl = lease.ttl if ttl is None else ttl
        check_positive(self.url, "ttl", ttl)
        with self._write([_LEASE_LOCK + lease.key]) as (cur, now):
            self._check_lease(cur, now, lease)
            cur.execute(
                self._q("UPDATE {p}leases SET expires = ? WHERE key = ?"), (now + ttl, lease.key)
            )
        return Lease(lease.key, lease.token, lease.owner, lease.pid, lease.host, now + ttl, ttl)

    def release(self, lease: Lease) -> bool:
        """Give the lease up; ``False`` if it was no longer live (released, expired or taken)."""
        with self._write([_LEASE_LOCK + lease.key]) as (cur, now):
            cur.execute(
                self._q(
                    "UPDATE {p}leases SET expires = 0 WHERE key = ? AND token = ? AND expires > ?"
                ),
                (lease.key, lease.token, now),
            )
            return bool(cur.rowcount)

    def current_lease(self, key: str) -> Lease | None:
        """The live lease on ``key`` as it stands (``ttl``: the seconds left), or ``None``."""
        check_key(self.url, key)
        with self._read() as (cur, now):
            cur.execute(
                self._q("SELECT token, owner, pid, host, expires FROM {p}leases WHERE key = ?"),
                (key,),
            )
            row = cur.fetchone()
        if row is None or row[4] <= now:
            return None
        return Lease(key, int(row[0]), row[1], int(row[2]), row[3], row[4], row[4] - now)

    def _check_lease(self, cur: Any, now: float, lease: Lease) -> None:
        cur.execute(self._q("SELECT token, expires FROM {p}leases WHERE key = ?"), (lease.key,))
        row = cur.fetchone()
        if row is None or int(row[0]) != lease.token or row[1] <= now:
            raise fenced_error(
                self.url,
                lease,
                None if row is None else int(row[0]),
                row is not None and row[1] > now,
            )


def _expired(expires: float | None, now: float) -> bool:
    return expires is not None and expires <= now


def _expiry(now: float, deadline: float | None, idle: float | None) -> float | None:
    """When a key expires: its absolute deadline or ``idle`` after its last use, whichever first."""
    candidates = [t for t in (deadline, None if idle is None else now + idle) if t is not None]
    return min(candidates) if candidates else None
