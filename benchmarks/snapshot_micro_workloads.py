"""Workloads of bench_snapshot_micro.py (importable, so snapshots name them by import path)."""

from __future__ import annotations

import contsnap


@contsnap.checkpointable
def ten_locals(n):
    a, b, c, d, e = 1, 2.5, "three", None, True
    f, g, h = [1, 2], (3, 4), {"k": 5}
    for i in range(n):
        yield a + i


@contsnap.checkpointable
def deep(depth, n):
    a, b, c = "x", 2.5, [depth]
    if depth == 0:
        for i in range(n):
            yield i
        return depth
    return (yield from deep(depth - 1, n))


@contsnap.checkpointable
def holding(state, n):
    for i in range(n):
        yield len(state) + i
