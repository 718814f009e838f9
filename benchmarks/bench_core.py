"""Sync-core benchmark: ratios against native Python and a hand-written peer, in one run.

Run:  python benchmarks/bench_core.py [--quick]

Reports
* a loop that only yields, transformed vs native (target <= 1.05x);
* a compute-heavy generator, transformed vs native (target <= 1.02x);
* dumps/loads of a generator with 10 small locals (target < 10 us each) and its size
  (target <= 250 bytes), next to pickling the same state held by a hand-written iterator
  class, which is what people write today because generators cannot be pickled.

Timings are the best of several repeats (the least disturbed run); ratios compare runs
made in the same process, interleaved, so machine load affects both sides alike.
"""

from __future__ import annotations

import argparse
import pickle
import platform
import sys
import timeit
from collections.abc import Callable
from typing import Any

from core_workloads import (
    TenLocalsByHand,
    compute_heavy,
    marked_compute_heavy,
    marked_only_yields,
    marked_ten_locals,
    only_yields,
)

import contsnap
from contsnap import _snapshot


def _drain(make: Callable[[int], Any], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in make(n):
            pass

    return run


def _best(fn: Callable[[], Any], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def _ratio(native: Callable[[], Any], marked: Callable[[], Any], repeat: int) -> tuple[float, ...]:
    best_native = best_marked = float("inf")
    for _ in range(repeat):  # interleave so both sides see the same load
        best_native = min(best_native, _best(native, 1, 1))
        best_marked = min(best_marked, _best(marked, 1, 1))
    return best_native, best_marked, best_marked / best_native


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args(argv)
    repeat = 5 if args.quick else 25
    print(f"contsnap {contsnap.__version__}, Python {platform.python_version()} ({sys.platform})")
    print()
    rows = []
    n = 200_000
    native, marked, ratio = _ratio(_drain(only_yields, n), _drain(marked_only_yields, n), repeat)
    rows.append(("loop that only yields (2e5 yields)", native * 1e3, marked * 1e3, ratio, 1.05))
    n = 5_000
    native, marked, ratio = _ratio(
        _drain(compute_heavy, n), _drain(marked_compute_heavy, n), repeat
    )
    rows.append(("compute-heavy generator (5e3 yields)", native * 1e3, marked * 1e3, ratio, 1.02))
    print(f"{'workload':40} {'native ms':>10} {'contsnap ms':>12} {'ratio':>7} {'target':>7}")
    for name, nat, mar, rat, target in rows:
        flag = "" if rat <= target else "  (missed)"
        print(f"{name:40} {nat:10.2f} {mar:12.2f} {rat:6.3f}x {target:6.2f}x{flag}")

    g = marked_ten_locals(100)
    next(g)
    blob = contsnap.dumps(g)
    payload = _snapshot.to_payload(g)[0]
    number = 2_000
    dumps_us = _best(lambda: contsnap.dumps(g), number, repeat) * 1e6
    loads_us = _best(lambda: contsnap.loads(blob), number, repeat) * 1e6
    fork_us = _best(lambda: contsnap.fork(g), number, repeat) * 1e6
    peer = TenLocalsByHand(100)
    next(peer)
    peer_blob = pickle.dumps(peer, protocol=pickle.HIGHEST_PROTOCOL)
    peer_dumps = _best(lambda: pickle.dumps(peer, protocol=5), number, repeat) * 1e6
    peer_loads = _best(lambda: pickle.loads(peer_blob), number, repeat) * 1e6
    print()
    print("generator with 10 small locals, paused at its first yield")
    print(f"{'':28} {'dumps us':>9} {'loads us':>9} {'bytes':>6}")
    print(f"{'contsnap.dumps/loads':28} {dumps_us:9.1f} {loads_us:9.1f} {len(blob):6d}")
    print(f"{'  of which the state pickle':28} {'':9} {'':9} {len(payload):6d}")
    print(f"{'contsnap.fork (in process)':28} {fork_us:9.1f} {'':9} {'':6}")
    print(
        f"{'peer: hand-written class':28} {peer_dumps:9.1f} {peer_loads:9.1f} {len(peer_blob):6d}"
    )
    print("targets: dumps and loads < 10 us each, snapshot <= 250 bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
