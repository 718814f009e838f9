"""Async-core benchmark: a chain of 3 awaiting coroutines, transformed vs native.

Run:  python benchmarks/bench_async.py [--quick]

1e5 steps, each an ``await`` through three coroutines that never suspend (no
safe point is crossed): the cost of the transform itself. Target <= 1.05x.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import timeit

from core_workloads import chain, marked_chain

import contsnap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else 15
    n = 100_000
    assert asyncio.run(chain(n)) == asyncio.run(marked_chain(n))
    best_native = best_marked = float("inf")
    for _ in range(repeat):  # interleaved, so both see the same machine load
        best_native = min(
            best_native, min(timeit.repeat(lambda: asyncio.run(chain(n)), number=1, repeat=1))
        )
        best_marked = min(
            best_marked,
            min(timeit.repeat(lambda: asyncio.run(marked_chain(n)), number=1, repeat=1)),
        )
    print(f"contsnap {contsnap.__version__}, Python {platform.python_version()}")
    ratio = best_marked / best_native
    flag = "" if ratio <= 1.05 else "  (missed)"
    print(f"{'workload':44} {'native ms':>10} {'contsnap ms':>12} {'ratio':>7}")
    print(
        f"{'3-coroutine await chain, 1e5 steps':44} {best_native * 1e3:10.1f} "
        f"{best_marked * 1e3:12.1f} {ratio:6.3f}x (target 1.05x){flag}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
