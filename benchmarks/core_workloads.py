"""contsnap's side of the benchmarks: the workloads marked with ``contsnap.checkpointable``.

The plain sources live in ``states`` (shared with the native side and the peers);
each is marked here under a ``marked_`` name, in an importable module, so snapshots
name them by import path. Some older workloads of ``run.py`` are still written here.
"""

from __future__ import annotations

from collections.abc import Iterator

from states import LOOPS, holding, ten_locals

import contsnap


def only_yields(n):
    for i in range(n):
        yield i


def compute_heavy(n):
    acc = 0
    for i in range(n):
        for j in range(60):
            acc = (acc * 31 + i * j) % 1_000_003
        yield acc


class TenLocalsByHand:
    """The peer: the same state as an explicit, picklable iterator class."""

    def __init__(self, n: int) -> None:
        self.n, self.i = n, 0
        self.a, self.b, self.c, self.d, self.e = 1, 2.5, "three", None, True
        self.f, self.g, self.h = [1, 2], (3, 4), {"k": 5}

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self.i >= self.n:
            raise StopIteration
        self.i += 1
        return self.a + self.i - 1


marked_only_yields = contsnap.checkpointable(only_yields)
marked_compute_heavy = contsnap.checkpointable(compute_heavy)
marked_ten_locals = contsnap.checkpointable(ten_locals)


async def leaf(i):
    return i * 2


async def middle(i):
    return await leaf(i) + 1


async def chain(n):
    total = 0
    for i in range(n):
        total += await middle(i)
    return total


marked_leaf = contsnap.checkpointable(leaf)


@contsnap.checkpointable
async def marked_middle(i):
    return await marked_leaf(i) + 1


@contsnap.checkpointable
async def marked_chain(n):
    total = 0
    for i in range(n):
        total += await marked_middle(i)
    return total


def leaf_gen(n):
    for i in range(n):
        yield i


def middle_gen(n):
    return (yield from leaf_gen(n))


def top_gen(n):
    return (yield from middle_gen(n))


marked_leaf_gen = contsnap.checkpointable(leaf_gen)


@contsnap.checkpointable
def marked_middle_gen(n):
    return (yield from marked_leaf_gen(n))


@contsnap.checkpointable
def marked_top_gen(n):
    return (yield from marked_middle_gen(n))


marked_holding = contsnap.checkpointable(holding)


def long_job(steps, work):
    """A durable job's loop: each step updates a 4096-entry table (~40 KB of state)."""
    counts = {}
    for step in range(steps):
        for j in range(work):
            key = (step * 31 + j) % 4096
            counts[key] = counts.get(key, 0) + 1
        yield step
    return len(counts)


marked_long_job = contsnap.checkpointable(long_job)


@contsnap.checkpointable
def marked_deep(depth, n):
    """states.deep, marked: its recursive call must reach the marked function."""
    label, scale, seen = f"frame-{depth}", depth * 0.5, [depth]
    if depth == 0:
        for i in range(n):
            yield i + len(seen) + len(label) + int(scale)
    else:
        return (yield from marked_deep(depth - 1, n))


MARKED_LOOPS = {name: contsnap.checkpointable(fn) for name, (fn, _) in LOOPS.items()}
