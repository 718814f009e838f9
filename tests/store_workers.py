"""Code the store contract tests run in separate processes (spawned, so nothing is inherited)."""

from __future__ import annotations

import os
from typing import Any

from contsnap.stores import FencedError, open_store


def cas_rounds(
    url: str, options: dict[str, Any], key: str, rounds: int, barrier: Any, out: Any
) -> None:
    """In each round ``r`` (all workers start it together), try a compare-and-set from version
    ``r``; report the rounds won."""
    store = open_store(url, **options)
    wins = []
    for r in range(rounds):
        barrier.wait(60)
        if store.cas(key, f"{os.getpid()}:{r}".encode(), r, keep=rounds):
            wins.append(r)
    store.close()
    out.put((os.getpid(), wins))


def lease_holder(url: str, options: dict[str, Any], ttl: float, out: Any, go: Any) -> None:
    """Take the lease on "job" and write under it; when told, shorten the lease to ``ttl``,
    and when told again, try to write once more (after the test froze and thawed us)."""
    store = open_store(url, **options)
    lease = store.acquire("job", 60)
    store.put("result", b"holder first", lease=lease)
    out.put(("ready", os.getpid(), lease.token))
    go.wait(60)
    go.clear()
    lease = store.renew(lease, ttl)
    out.put(("renewed", lease.ttl, lease.token))
    go.wait(60)
    try:
        store.put("result", b"holder after the pause", lease=lease)
        out.put(("written", ""))
    except FencedError as exc:
        out.put(("fenced", str(exc)))
    except Exception as exc:  # reported, so the test shows it
        out.put(("error", repr(exc)))
    store.close()
