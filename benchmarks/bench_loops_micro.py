"""Loop forms run natively, transformed (fresh) and restored mid-loop: ratios to native.

    PYTHONPATH=$PWD python benchmarks/bench_loops_micro.py [--samples 15] [--only NAME]
        [--clock cpu|wall]

Each sample times the three sides back to back (order alternating); the figure is
the median over samples of each side's time divided by native's in that sample.
The default clock is the process's CPU time: on a machine shared with other work
it is far steadier than wall time for a loop that never waits.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import contsnap

N_YIELDS = 300_000
N_COMPUTE = 3_000


def for_only_yields(n):
    for i in range(n):
        yield i


def while_only_yields(n):
    i = 0
    while i < n:
        yield i
        i += 1


def several_yields(n):
    for i in range(n // 3):
        yield i
        yield -i
        yield i + 1


def for_else_continue(n):
    for i in range(n):
        if i % 7 == 0:
            continue
        yield i
    else:
        yield -1


def nested(n):
    for i in range(n // 100):
        for j in range(100):
            yield j


def in_try(n):
    try:
        for i in range(n):
            try:
                yield i
            except KeyError:
                pass
    finally:
        pass


def in_with(n):
    with contextlib.nullcontext() as held:
        for i in range(n):
            yield held


def compute_heavy(n):
    acc = 0
    for i in range(n):
        for j in range(60):
            acc = (acc * 31 + i * j) % 1_000_003
        yield acc


def compute_while(n):
    acc, i = 0, 0
    while i < n:
        j = 0
        while j < 60:
            acc = (acc * 31 + i * j) % 1_000_003
            j += 1
        yield acc
        i += 1


class ARange:
    """An async iterator over range(n) that never suspends (a class: its attributes are
    read and written at every step, so a restored copy must be laid out as a new one)."""

    def __init__(self, n: int) -> None:
        self.i, self.n = 0, n

    def __aiter__(self) -> ARange:
        return self

    async def __anext__(self) -> int:
        if self.i >= self.n:
            raise StopAsyncIteration
        self.i += 1
        return self.i - 1


@contsnap.checkpointable  # what an async for holds must be checkpointable
async def arange_source(n):
    for i in range(n):
        yield i


async def async_for_only_yields(n):
    async for i in ARange(n):
        yield i


async def async_for_over_generator(n):
    async for i in arange_source(n):
        yield i


async def async_for_compute(n):
    acc = 0
    async for i in ARange(n):
        for j in range(60):
            acc = (acc * 31 + i * j) % 1_000_003
        yield acc


CASES: dict[str, tuple[Callable[[int], Any], int]] = {
    "for, only yields": (for_only_yields, N_YIELDS),
    "while, only yields": (while_only_yields, N_YIELDS),
    "for, three yields an iteration": (several_yields, N_YIELDS),
    "for/else with continue": (for_else_continue, N_YIELDS),
    "nested for, yields inside": (nested, N_YIELDS),
    "for inside try, try inside for": (in_try, N_YIELDS),
    "for inside with": (in_with, N_YIELDS),
    "compute loop (for), 60 steps a yield": (compute_heavy, N_COMPUTE),
    "compute loop (while), 60 steps a yield": (compute_while, N_COMPUTE),
    "async for, only yields": (async_for_only_yields, N_YIELDS // 3),
    "async for over an async generator": (async_for_over_generator, N_YIELDS // 3),
    "async for, compute": (async_for_compute, N_COMPUTE),
}


def drain(gen: Iterator[Any]) -> None:
    for _ in gen:
        pass


def drain_async(agen: Any) -> None:
    """Run an async generator to its end by hand (nothing in these loops suspends)."""

    async def consume() -> None:
        async for _ in agen:
            pass

    with contextlib.suppress(StopIteration):
        consume().send(None)


def step_async(agen: Any) -> Any:
    """Take one item of an async generator that never suspends."""
    try:
        agen.__anext__().send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the async loop suspended")


def items_async(agen: Any) -> list[Any]:
    out: list[Any] = []
    with contextlib.suppress(StopAsyncIteration):
        while True:
            out.append(step_async(agen))
    return out


def measure(
    native: Callable[[int], Any], n: int, samples: int, clock: Callable[[], float]
) -> dict[str, float]:
    is_async = inspect.isasyncgenfunction(native)
    step, drained = (step_async, drain_async) if is_async else (next, drain)
    marked = contsnap.checkpointable(native)
    paused = marked(n + 1)
    step(paused)
    blob = contsnap.dumps(paused)

    def native_side() -> Any:
        gen = native(n + 1)
        step(gen)
        return gen

    def fresh_side() -> Any:
        gen = marked(n + 1)
        step(gen)
        return gen

    def restored_side() -> Any:
        return contsnap.loads(blob)

    sides = {"native": native_side, "fresh": fresh_side, "restored": restored_side}
    listed = items_async if is_async else list
    assert listed(restored_side()) == listed(native_side())
    times: dict[str, list[float]] = {name: [] for name in sides}
    for sample in range(samples + 1):
        order = list(sides.items())
        if sample % 2:
            order.reverse()
        for name, setup in order:
            gen = setup()
            gc.collect()
            start = clock()
            drained(gen)
            elapsed = clock() - start
            if sample:  # the first round warms up
                times[name].append(elapsed)
    base = times["native"]
    return {
        "native_ms": statistics.median(base) * 1e3,
        "fresh": statistics.median(f / b for f, b in zip(times["fresh"], base)),
        "restored": statistics.median(r / b for r, b in zip(times["restored"], base)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--only", default="")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"python {sys.version.split()[0]}, {args.samples} interleaved samples, {args.clock} time")
    print(f"{'case':42} {'native':>9} {'fresh/n':>8} {'restored/n':>10}")
    for name, (fn, n) in CASES.items():
        if args.only and args.only not in name:
            continue
        row = measure(fn, n, args.samples, clock)
        print(
            f"{name:42} {row['native_ms']:7.2f}ms {row['fresh']:8.3f} {row['restored']:10.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
