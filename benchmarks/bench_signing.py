"""What signing by default costs: dumps/loads with the per-user key against an explicit opt-out.

Usage: ``python benchmarks/bench_signing.py [--rounds N] [--json FILE]``.

Both sides run interleaved in one process (signed, unsigned, signed, ...), so drift
in the machine's speed hits both alike; each figure is the median of per-round
ratios signed/unsigned, with the 25-75% spread. Two states: a generator paused
with ten small locals (a function in an importable module), and one holding 1 MiB
of random bytes (incompressible: the HMAC runs over the whole of it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from core_workloads import marked_ten_locals

import contsnap


@contsnap.checkpointable
def holding(blob: bytes):
    data = blob
    for i in range(10):
        yield len(data) + i


def _states() -> dict[str, Any]:
    small = marked_ten_locals(100)
    next(small)
    large = holding(os.urandom(1 << 20))
    next(large)
    return {"ten small locals": small, "1 MiB of random bytes": large}


def _time(fn: Callable[[], Any], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def _spread(values: list[float]) -> tuple[float, float, float]:
    quartiles = statistics.quantiles(values, n=4)
    return statistics.median(values), quartiles[0], quartiles[2]


def _sides(gen: Any, signed_blob: bytes, unsigned_blob: bytes) -> dict[str, Any]:
    return {
        "dumps": (lambda: contsnap.dumps(gen), lambda: contsnap.dumps(gen, sign=False)),
        "loads": (
            lambda: contsnap.detach(contsnap.loads(signed_blob)),
            lambda: contsnap.detach(contsnap.loads(unsigned_blob, allow_unsigned=True)),
        ),
    }


def measure(rounds: int) -> list[dict[str, Any]]:
    rows = []
    for name, gen in _states().items():
        inner = 200 if name.startswith("ten") else 5
        signed_blob = contsnap.dumps(gen)
        unsigned_blob = contsnap.dumps(gen, sign=False)
        for what, (signed, unsigned) in _sides(gen, signed_blob, unsigned_blob).items():
            ratios, signed_times, unsigned_times = [], [], []
            for _ in range(rounds):
                a = _time(signed, inner)
                b = _time(unsigned, inner)
                signed_times.append(a)
                unsigned_times.append(b)
                ratios.append(a / b)
            median, low, high = _spread(ratios)
            rows.append(
                {
                    "state": name,
                    "operation": what,
                    "signed_us": statistics.median(signed_times) * 1e6,
                    "unsigned_us": statistics.median(unsigned_times) * 1e6,
                    "ratio": median,
                    "ratio_25": low,
                    "ratio_75": high,
                    "signed_bytes": len(signed_blob),
                    "unsigned_bytes": len(unsigned_blob),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    # a key file of the benchmark's own, as the per-user default would be
    os.environ.setdefault("CONTSNAP_KEY_FILE", os.path.join(tempfile.mkdtemp(), "key"))
    rows = measure(args.rounds)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"signing by default, {args.rounds} interleaved rounds, load {load:.2f}")
    print(f"{'state':24} {'op':6} {'signed':>11} {'unsigned':>11} {'ratio (25-75%)':>22} bytes")
    for r in rows:
        print(
            f"{r['state']:24} {r['operation']:6} {r['signed_us']:9.1f}us {r['unsigned_us']:9.1f}us"
            f" {r['ratio']:7.3f} ({r['ratio_25']:.3f}-{r['ratio_75']:.3f})"
            f"  {r['signed_bytes']} / {r['unsigned_bytes']}"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"load": load, "rows": rows}, out, indent=2)


if __name__ == "__main__":
    main()
