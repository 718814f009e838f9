"""Snapshot dumps/loads speed and size on the rows of issue 19, against pickle and dispatch-py.

Run:  PYTHONPATH=. python benchmarks/bench_snapshot_micro.py [--samples N] [--only CASE ...]

Cases: small (a generator paused with 10 small locals), deep50 (a 50-deep ``yield from``
chain, 5 locals a frame), list100k, dict10k, bytes1M (a generator holding that state),
cold (the first dumps/loads after ``gc.collect()`` against the warm figure).

Each case interleaves its sides (sample i of every side back to back, the order
alternating) and reports the median of the per-sample ratios. Times are CPU time of
this thread (``time.thread_time``): on a machine shared with other work, time spent
waiting for a core is not counted against either side. dispatch-py is compared
when it imports (a throwaway venv: ``pip install dispatch-py==0.8.0
http-message-signatures==0.5.0``, then this script with ``PYTHONPATH=<repo>``).
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import snapshot_micro_workloads as w

import contsnap

try:
    import dispatch_micro_workloads as d
except ImportError:
    d = None

P = pickle.HIGHEST_PROTOCOL
CLOCK = time.thread_time


def interleave(
    sides: dict[str, tuple[Callable[[], Any], int]], samples: int
) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {name: [] for name in sides}
    items = list(sides.items())
    for sample in range(samples + 1):
        for name, (run, loops) in items if sample % 2 else items[::-1]:
            start = CLOCK()
            for _ in range(loops):
                run()
            elapsed = (CLOCK() - start) / loops
            if sample:
                values[name].append(elapsed)
    return values


def ratio(values: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(n / m for n, m in zip(values[num], values[den]))


def t(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


def paused(make: Callable[..., Any], *args: Any) -> Any:
    gen = make(*args)
    next(gen)
    return gen


def case(
    name: str, sides: dict[str, tuple[Callable[[], Any], int]], samples: int, sizes: dict[str, int]
) -> None:
    values = interleave(sides, samples)
    med = {k: statistics.median(v) for k, v in values.items()}
    print(f"== {name}: " + ", ".join(f"{k} {t(v)}" for k, v in med.items()))
    for op in ("dumps", "loads"):
        for peer in ("pickle", "dispatch"):
            if f"{peer} {op}" in values:
                num, den = values[f"contsnap {op}"], values[f"{peer} {op}"]
                found = ratio(values, f"contsnap {op}", f"{peer} {op}")
                print(
                    f"   contsnap {op} / {peer} {op}: {found:.2f}x median of pairs, "
                    f"{min(num) / min(den):.2f}x best / best"
                )
    print("   sizes: " + ", ".join(f"{k} {v} B" for k, v in sizes.items()))


def state_case(
    name: str,
    make: Callable[..., Any],
    state: Any,
    args: tuple[Any, ...],
    plain: Any,
    loops: int,
    samples: int,
) -> None:
    gen = paused(make, *args)
    blob = contsnap.dumps(gen)
    assert next(contsnap.loads(blob)) == next(paused(make, *args))
    sides = {
        "contsnap dumps": (lambda: contsnap.dumps(gen), loops),
        "contsnap loads": (lambda: contsnap.loads(blob), loops),
    }
    sizes = {"contsnap": len(blob)}
    if plain is not None:
        pblob = pickle.dumps(plain, P)
        sides["pickle dumps"] = (lambda: pickle.dumps(plain, P), loops)
        sides["pickle loads"] = (lambda: pickle.loads(pblob), loops)
        sizes["pickle"] = len(pblob)
    if d is not None:
        dgen = paused(getattr(d, make.__name__), *args)
        dblob = pickle.dumps(dgen, P)
        assert next(pickle.loads(dblob)) == next(contsnap.loads(blob))
        sides["dispatch dumps"] = (lambda: pickle.dumps(dgen, P), loops)
        sides["dispatch loads"] = (lambda: pickle.loads(dblob), loops)
        sizes["dispatch"] = len(dblob)
    case(name, sides, samples, sizes)


def cold(samples: int) -> None:
    gen = paused(w.ten_locals, 100)
    blob = contsnap.dumps(gen)
    junk: list[Any] = []
    warm = {"dumps": lambda: contsnap.dumps(gen), "loads": lambda: contsnap.loads(blob)}
    if d is not None:  # the same effect on the peer, for scale
        dgen = paused(d.ten_locals, 100)
        dblob = pickle.dumps(dgen, P)
        warm["dispatch dumps"] = lambda: pickle.dumps(dgen, P)
        warm["dispatch loads"] = lambda: pickle.loads(dblob)
    for op, run in warm.items():
        firsts, warms = [], []
        for _ in range(samples):
            junk = [{"x": [i]} for i in range(20_000)]  # other work in between
            del junk
            gc.collect()
            start = CLOCK()
            run()
            firsts.append(CLOCK() - start)
            start = CLOCK()
            for _ in range(200):
                run()
            warms.append((CLOCK() - start) / 200)
        print(
            f"== cold {op}: first after gc.collect() {t(statistics.median(firsts))}, warm "
            f"{t(statistics.median(warms))}: {ratio({'f': firsts, 'w': warms}, 'f', 'w'):.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    n = args.samples
    only = set(args.only or ["small", "deep50", "list100k", "dict10k", "bytes1M", "cold"])
    print(
        f"python {sys.version.split()[0]}, dispatch-py {'present' if d else 'absent'}, "
        f"contsnap from {contsnap.__file__}"
    )
    if "small" in only:
        gen = paused(w.ten_locals, 100)
        local_values = {
            k: v for k, v in dict(gen.gi_frame.f_locals).items() if not k.startswith("_cs")
        }
        assert len(local_values) == 10, sorted(local_values)
        state_case("small: 10 small locals", w.ten_locals, None, (100,), local_values, 300, n)
    if "deep50" in only:
        state_case("deep50: 50-deep yield from chain", w.deep, None, (50, 10), None, 20, n)
    if "list100k" in only:
        state = list(range(100_000))
        state_case("list100k", w.holding, state, (state, 10), state, 3, n)
    if "dict10k" in only:
        state = {f"key{i}": f"value{i}" for i in range(10_000)}
        state_case("dict10k", w.holding, state, (state, 10), state, 5, n)
    if "bytes1M" in only:
        state = os.urandom(1 << 20)
        state_case("bytes1M", w.holding, state, (state, 10), state, 5, n)
    if "cold" in only:
        cold(n)


if __name__ == "__main__":
    main()
