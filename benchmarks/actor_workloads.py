"""Actors for benchmarks/bench_actors.py (importable by name, so snapshots name them)."""

from __future__ import annotations

import contsnap
from contsnap import actors


@contsnap.checkpointable
async def holder(seed):
    state = [seed * 1000 + i for i in range(100)]  # ~1 KB of live state once pickled
    while True:
        message = await actors.receive()
        if message == "stop":
            return len(state)
        state[message % 100] += 1
