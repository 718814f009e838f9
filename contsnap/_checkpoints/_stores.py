"""A durable job's checkpoints in a store (``contsnap.run(..., store=...)``).

The same duties as `contsnap._checkpoints._files.CheckpointFiles` — the last ``keep``
generations, the newest one that verifies, a single runner per job — on any
`contsnap.stores.Store`, so that the job can be resumed from another
process or machine. The single runner is a lease with a fencing token: every
save is a write under the lease, refused once another process took the job over.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Collection, Iterator
from typing import Any

from .._errors import CheckpointError, SnapshotKindError
from ..stores import FencedError, Lease, LeaseHeldError, Store, StoreError
from ._files import Generations, Verified, newest_verified


class TakenOverError(CheckpointError):
    """The job's lease was lost (it expired during a long step); another runner owns the job."""

    __module__ = "contsnap"


class StoreCheckpoints(Generations):
    """The generations of one job's checkpoint under ``key`` in ``store``."""

    def __init__(self, store: Store, key: str, keep: int = 3, lease: float = 30.0) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        if not lease > 0:
            raise ValueError(f"lease must be a positive number of seconds, not {lease!r}")
        self.store = store
        self.key = key
        self.keep = keep
        self.ttl = float(lease)
        self.path = f"{store.url} key {key}"
        self.lease: Lease | None = None
        self._renew_at = 0.0
        #: newest generations to pass over when loading (a fallback after repeated crashes)
        self.skip = 0

    def _read(self, generation: int) -> bytes | None:
        return self.store.get(self.key, generation=generation)

    def verified(
        self,
        *,
        kinds: Collection[str],
        identity: str | None = None,
        key: Any = None,
        allow_unsigned: bool | None = None,
    ) -> Verified | None:
        """The newest generation that verifies, passing over the ``skip`` newest ones."""
        candidates = (
            (f"{self.path} generation {index}", functools.partial(self._read, index))
            for index in range(self.skip, self.keep)
        )
        found = newest_verified(
            candidates, kinds=kinds, identity=identity, key=key, allow_unsigned=allow_unsigned
        )
        job = found.meta.get("job") if found is not None else None
        kept_under = job.get("store_key", self.key) if isinstance(job, dict) else self.key
        if found is not None and kept_under != self.key:
            # signed, but written under another key: someone with write access to the store
            # (and no key) copied another job's checkpoint over this one
            raise SnapshotKindError(
                f"{found.path}: this checkpoint was written for the key {kept_under!r}, not "
                f"{self.key!r}; nothing was unpickled. Restore this key's own checkpoint, or "
                "delete it to start the job afresh"
            )
        return found

    def binding(self) -> dict[str, Any]:
        return {"store_key": self.key}

    @contextlib.contextmanager
    def hold(self, *, wait: float = 0.0) -> Iterator[None]:
        """Run the block as the job's only runner: a lease on its key, renewed as it goes."""
        try:
            self.lease = self.store.acquire(self.key, self.ttl, wait=wait)
        except LeaseHeldError as exc:
            error = LeaseHeldError(
                f"the job {self.key!r} in {self.store.url} is already running (pid {exc.pid} on "
                f"host {exc.host}, its lease ends in {exc.expires_in or 0:.0f} s unless "
                "renewed); wait for it to end, stop it, or pass wait=SECONDS to wait for it"
            )
            error.owner, error.pid, error.host = exc.owner, exc.pid, exc.host
            error.expires_in = exc.expires_in
            raise error from None
        self._renew_at = time.monotonic() + self.ttl / 3
        try:
            yield
        finally:
            lease, self.lease = self.lease, None
            with contextlib.suppress(StoreError):
                self.store.release(lease)

    def heartbeat(self) -> None:
        """Renew the lease once a third of its time has passed (at the job's safe points)."""
        if self.lease is None or time.monotonic() < self._renew_at:
            return
        try:
            self.lease = self.store.renew(self.lease)
        except (FencedError, StoreError) as exc:
            raise self._taken_over(exc) from exc
        self._renew_at = time.monotonic() + self.ttl / 3

    def save(self, data: bytes) -> None:
        try:
            self.store.put(self.key, data, keep=self.keep, lease=self.lease)
        except FencedError as exc:
            raise self._taken_over(exc) from exc

    def clear(self) -> None:
        self.store.delete(self.key, lease=self.lease)

    def _taken_over(self, exc: Exception) -> TakenOverError:
        return TakenOverError(
            f"the lease on job {self.key!r} in {self.store.url} was lost ({exc}): a step ran "
            f"longer than the lease ({self.ttl:g} s) and another runner may own the job now. "
            "This process stops without saving; give run() a longer lease= or shorter steps"
        )
