"""The benchmark's workloads as plain Python: the standard library only, importable by every side.

The native side runs these functions as they are; pyteleport pickles their
generators with ``dill``; ``core_workloads`` marks them with
``contsnap.checkpointable`` and ``dispatch_workloads`` with dispatch-py's
``@durable``. Each is written once, here, so every side runs the same source.
A function that calls itself (``deep``) is written again in those two modules,
since its recursive call must reach the marked function, not this one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any


def ten_locals(n):
    a, b, c, d, e = 1, 2.5, "three", None, True
    f, g, h = [1, 2], (3, 4), {"k": 5}
    for i in range(n):
        yield a + i


def holding(state, n):
    """A generator whose live state is ``state``."""
    for i in range(n):
        yield len(state) + i


def deep(depth, n):
    """A ``yield from`` chain ``depth`` frames deep, 5 locals a frame (n, label, ...)."""
    label, scale, seen = f"frame-{depth}", depth * 0.5, [depth]
    if depth == 0:
        for i in range(n):
            yield i + len(seen) + len(label) + int(scale)
    else:
        return (yield from deep(depth - 1, n))


# -- the states of the snapshot cases ----------------------------------------------------------


def list_of_ints(count: int = 100_000) -> list[int]:
    rng = random.Random(19)
    return [rng.randrange(1 << 30) for _ in range(count)]


def random_bytes(size: int = 1 << 20) -> bytes:
    return random.Random(19).randbytes(size)


def str_dict(count: int = 10_000) -> dict[str, str]:
    rng = random.Random(19)
    return {f"key-{i:05d}": f"value-{rng.randrange(1 << 40):x}" for i in range(count)}


# -- loop forms: a restored generator running on against a native one ----------------------------
# Each form twice: a body that only yields, and a compute body (60 multiply-mod steps a yield).


class Guard:
    """A context manager for the loops inside ``with`` (picklable by reference to its class)."""

    def __init__(self) -> None:
        self.entered = 0

    def __enter__(self) -> Guard:
        self.entered += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.entered -= 1


class ARange:
    """An async iterator over range(n) that never suspends: ``async for`` without an event loop."""

    def __init__(self, n: int) -> None:
        self.i, self.n = 0, n

    def __aiter__(self) -> ARange:
        return self

    async def __anext__(self) -> int:
        if self.i >= self.n:
            raise StopAsyncIteration
        self.i += 1
        return self.i - 1


def for_only(n):
    for i in range(n):
        yield i


def for_compute(n):
    acc = 0
    for i in range(n):
        for j in range(60):
            acc = (acc * 31 + i * j) % 1_000_003
        yield acc


def while_only(n):
    i = 0
    while i < n:
        yield i
        i += 1


def while_compute(n):
    acc = 0
    i = 0
    while i < n:
        j = 0
        while j < 60:
            acc = (acc * 31 + i * j) % 1_000_003
            j += 1
        yield acc
        i += 1


def nested_only(n):
    for i in range(n // 100):
        for j in range(100):
            yield j


def nested_compute(n):
    acc = 0
    for i in range(n // 10):
        for j in range(10):
            for k in range(60):
                acc = (acc * 31 + j * k + i) % 1_000_003
            yield acc


def try_only(n):
    try:
        for i in range(n):
            yield i
    finally:
        n = 0


def try_compute(n):
    acc = 0
    try:
        for i in range(n):
            for j in range(60):
                acc = (acc * 31 + i * j) % 1_000_003
            yield acc
    finally:
        n = 0


def with_only(n):
    with Guard():
        for i in range(n):
            yield i


def with_compute(n):
    acc = 0
    with Guard():
        for i in range(n):
            for j in range(60):
                acc = (acc * 31 + i * j) % 1_000_003
            yield acc


async def async_for_only(n):
    async for i in ARange(n):
        yield i


async def async_for_compute(n):
    acc = 0
    async for i in ARange(n):
        for j in range(60):
            acc = (acc * 31 + i * j) % 1_000_003
        yield acc


# name -> (the generator function, items a sample drains after the restore)
LOOPS: dict[str, tuple[Any, int]] = {
    "for, only yields": (for_only, 300_000),
    "for, compute": (for_compute, 5_000),
    "while, only yields": (while_only, 300_000),
    "while, compute": (while_compute, 5_000),
    "nested for, only yields": (nested_only, 300_000),
    "nested for, compute": (nested_compute, 5_000),
    "for inside try, only yields": (try_only, 300_000),
    "for inside try, compute": (try_compute, 5_000),
    "for inside with, only yields": (with_only, 300_000),
    "for inside with, compute": (with_compute, 5_000),
    "async for, only yields": (async_for_only, 50_000),
    "async for, compute": (async_for_compute, 2_000),
}


def is_async(name: str) -> bool:
    return name.startswith("async")


def drain(it: Iterator[Any]) -> None:
    for _ in it:
        pass


def drain_async(agen: Any) -> None:
    """Run an async generator to its end by hand (nothing in these loops suspends)."""

    async def consume() -> None:
        async for _ in agen:
            pass

    coro = consume()
    try:
        coro.send(None)
    except StopIteration:
        pass
    else:  # pragma: no cover - a loop that suspended
        raise RuntimeError("the async loop suspended")


def advance_async(agen: Any) -> Any:
    """Take one item of an async generator by hand; the generator is left paused at its yield."""
    step = agen.__anext__()
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the async loop suspended")  # pragma: no cover
