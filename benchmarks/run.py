"""Every contsnap benchmark in one command: a table of ratios, a JSON file and plots.

Run:  python benchmarks/run.py [--quick] [--only SECTION ...] [--markdown]

Sections (``--only`` takes these names):

fresh     fresh-run overhead, transformed / native: a loop that only yields, a
          compute-heavy loop, a 3-deep ``yield from`` chain, a 3-deep await chain
restored  a restored generator running on, against a native one
snapshot  dumps/loads time and size for 10 small locals, against ``pickle`` of a dict
          of the same locals (and against dispatch-py when it is installed)
steps     restore time as a function of the steps already taken (must be flat)
hook      import hook: warm import hooked / plain, cold transform ms per 1000 lines
growth    snapshot time and size as live state grows, 1 KB ... 10 MB, against pickle
durable   contsnap.run() autosaving every 15 s and every 1 s, against the bare loop

How it measures. Each comparison runs in this one process with its sides
interleaved: sample i of every side is taken back to back (the order alternates
between samples), so a burst of load from other work on the machine hits the
sides of a pair alike. A ratio is best / best: the fastest sample of one side
over the fastest of the other, the least disturbed runs (other work on a shared
machine only ever adds time). The 25th-75th percentile of the per-pair ratios is
shown next to it as a measure of the noise; the best absolute times are in the
last column and depend on the machine. pyperf's ``Runner``
is not used because it runs each benchmark alone in worker processes, one after
the other, which is the opposite of interleaving; the samples go into pyperf
``Run``/``Benchmark`` objects instead, written next to the JSON as a pyperf
suite (``python -m pyperf stats benchmarks/results/full-py3.11.pyperf.json``).

Writes benchmarks/results/<mode>-py<X.Y>.json (rows and plotted series) and the
pyperf suite; plots go to docs/img/ for a full run, to
benchmarks/results/img-quick/ for ``--quick`` (so a smoke run does not replace
the figures of the docs). Quick mode takes about a minute on two
shared cores; a full run about seven minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pickle
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import core_workloads as w  # noqa: E402
from report import (  # noqa: E402
    Row,
    format_table,
    markdown_table,
    paired_ratio,
    results_json,
    rows_from_json,
)

import contsnap  # noqa: E402
from contsnap import _snapshot  # noqa: E402

SECTIONS = ("fresh", "restored", "snapshot", "steps", "hook", "growth", "durable")

try:
    import pyperf
except ImportError:  # pragma: no cover - the bench extra is missing
    pyperf = None


@dataclass
class Config:
    quick: bool

    def samples(self, quick: int, full: int) -> int:
        return quick if self.quick else full


@dataclass
class Side:
    """One side of a comparison: ``run(setup())`` is timed, ``loops`` times per sample."""

    label: str
    run: Callable[[Any], Any]
    setup: Callable[[], Any] = lambda: None
    loops: int = 1
    self_timed: bool = False  # run() returns its own duration (e.g. an import without its cleanup)


PYPERF_BENCHMARKS: list[Any] = []


def interleave(
    name: str, sides: list[Side], samples: int, warmups: int = 1
) -> dict[str, list[float]]:
    """Seconds per call for each side, sample i of every side taken back to back."""
    values: dict[str, list[float]] = {side.label: [] for side in sides}
    warm: dict[str, list[tuple[int, float]]] = {side.label: [] for side in sides}
    for sample in range(warmups + samples):
        order = sides if sample % 2 == 0 else sides[::-1]
        for side in order:
            prepared = [side.setup() for _ in range(side.loops)]
            gc.collect()
            if side.self_timed:
                elapsed = sum(side.run(item) for item in prepared)
            else:
                start = time.perf_counter()
                for item in prepared:
                    side.run(item)
                elapsed = time.perf_counter() - start
            per_call = elapsed / side.loops
            if sample < warmups:
                warm[side.label].append((side.loops, per_call))
            else:
                values[side.label].append(per_call)
    if pyperf is not None:
        for side in sides:
            run = pyperf.Run(
                values[side.label],
                warmups=warm[side.label] or None,
                metadata={"name": f"{name} [{side.label}]", "unit": "second", "loops": side.loops},
                collect_metadata=False,
            )
            PYPERF_BENCHMARKS.append(pyperf.Benchmark([run]))
    return values


def median(values: list[float]) -> float:
    return statistics.median(values)


def _t(seconds: float) -> str:
    """A duration, readable."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} us"


def ratio_row(
    section: str,
    name: str,
    values: dict[str, list[float]],
    numerator: str,
    denominator: str,
    target: float | None,
    **extra: Any,
) -> Row:
    best_num, best_den = min(values[numerator]), min(values[denominator])
    _, spread = paired_ratio(values[numerator], values[denominator])
    detail = f"{_t(best_num)} vs {_t(best_den)}"
    return Row(section, name, best_num / best_den, "x", target, spread, detail, dict(extra))


def _drain(it: Iterator[Any]) -> None:
    for _ in it:
        pass


def _advanced(make: Callable[[], Iterator[Any]], steps: int = 1) -> Callable[[], Iterator[Any]]:
    def setup() -> Iterator[Any]:
        gen = make()
        for _ in range(steps):
            next(gen)
        return gen

    return setup


# -- fresh-run overhead -------------------------------------------------------------------


def bench_fresh(cfg: Config, series: dict[str, Any]) -> list[Row]:
    section = "fresh run, transformed / native"
    samples = cfg.samples(7, 25)
    rows = []
    cases: list[tuple[str, Callable[[int], Any], Callable[[int], Any], int, float]] = [
        ("loop that only yields, 1e6 yields", w.only_yields, w.marked_only_yields, 10**6, 1.05),
        (
            "compute-heavy loop, a yield per 60 multiply-mod steps (5e3 yields)",
            w.compute_heavy,
            w.marked_compute_heavy,
            5_000,
            1.02,
        ),
        ("3-deep yield from chain, 2e5 yields", w.top_gen, w.marked_top_gen, 200_000, 1.10),
    ]
    for name, native, marked, n, target in cases:
        values = interleave(
            name,
            [
                Side("native", lambda _, f=native, n=n: _drain(f(n))),
                Side("contsnap", lambda _, f=marked, n=n: _drain(f(n))),
            ],
            samples,
        )
        rows.append(ratio_row(section, name, values, "contsnap", "native", target))
    n = 100_000
    assert asyncio.run(w.chain(n)) == asyncio.run(w.marked_chain(n))
    name = "3-deep await chain, 1e5 steps (asyncio.run)"
    values = interleave(
        name,
        [
            Side("native", lambda _: asyncio.run(w.chain(n))),
            Side("contsnap", lambda _: asyncio.run(w.marked_chain(n))),
        ],
        samples,
    )
    rows.append(ratio_row(section, name, values, "contsnap", "native", 1.05))
    dispatch = _dispatch()
    if dispatch is not None:
        name = "peer: dispatch-py @durable, loop that only yields, 1e6 yields"
        values = interleave(
            name,
            [
                Side("native", lambda _: _drain(w.only_yields(10**6))),
                Side("dispatch", lambda _: _drain(dispatch.dispatch_only_yields(10**6))),
            ],
            cfg.samples(3, 7),
        )
        rows.append(ratio_row(section, name, values, "dispatch", "native", None))
    return rows


# -- restored generators running on -------------------------------------------------------


def bench_restored(cfg: Config, series: dict[str, Any]) -> list[Row]:
    section = "restored generator running on / native"
    samples = cfg.samples(7, 25)
    rows = []
    cases: list[tuple[str, Callable[[int], Any], Callable[[int], Any], int]] = [
        (
            "loop that only yields, 1e6 yields after the restore",
            w.only_yields,
            w.marked_only_yields,
            10**6,
        ),
        (
            "compute-heavy loop, 5e3 yields after the restore",
            w.compute_heavy,
            w.marked_compute_heavy,
            5_000,
        ),
    ]
    for name, native, marked, n in cases:
        paused = marked(n + 1)
        next(paused)
        blob = contsnap.dumps(paused)
        values = interleave(
            name,
            [
                Side("native", _drain, setup=_advanced(lambda f=native, n=n: f(n + 1))),
                Side("restored", _drain, setup=lambda blob=blob: contsnap.loads(blob)),
            ],
            samples,
        )
        rows.append(ratio_row(section, name, values, "restored", "native", 1.10))
    return rows


# -- snapshot of 10 small locals ----------------------------------------------------------


def _dispatch() -> Any:
    try:
        import dispatch_workloads
    except ImportError:
        return None
    return dispatch_workloads


def bench_snapshot(cfg: Config, series: dict[str, Any]) -> list[Row]:
    section = "snapshot of 10 small locals"
    samples, loops = cfg.samples(7, 25), 200
    g = w.marked_ten_locals(100)
    next(g)
    local_values = {k: v for k, v in dict(g.gi_frame.f_locals).items() if not k.startswith("_cs")}
    assert len(local_values) == 10, sorted(local_values)
    blob = contsnap.dumps(g)
    state_bytes = len(_snapshot.to_payload(g)[0])
    plain = pickle.dumps(local_values, protocol=pickle.HIGHEST_PROTOCOL)
    sides = [
        Side("contsnap.dumps", lambda _: contsnap.dumps(g), loops=loops),
        Side("pickle.dumps", lambda _: pickle.dumps(local_values, protocol=5), loops=loops),
        Side("contsnap.loads", lambda _: contsnap.loads(blob), loops=loops),
        Side("pickle.loads", lambda _: pickle.loads(plain), loops=loops),
    ]
    dispatch = _dispatch()
    if dispatch is not None:
        dg = dispatch.dispatch_ten_locals(100)
        next(dg)
        dblob = pickle.dumps(dg, protocol=pickle.HIGHEST_PROTOCOL)
        assert next(pickle.loads(dblob)) == next(contsnap.loads(blob))
        sides += [
            Side("dispatch dumps", lambda _: pickle.dumps(dg, protocol=5), loops=loops),
            Side("dispatch loads", lambda _: pickle.loads(dblob), loops=loops),
        ]
    values = interleave(section, sides, samples)
    rows = [
        ratio_row(
            section,
            "contsnap.dumps / pickle.dumps(dict of the locals)",
            values,
            "contsnap.dumps",
            "pickle.dumps",
            5.0,
        ),
        ratio_row(
            section, "contsnap.loads / pickle.loads", values, "contsnap.loads", "pickle.loads", 5.0
        ),
        Row(
            section,
            "size of the snapshot",
            len(blob),
            "B",
            250,
            detail=f"state pickle {state_bytes} B; pickle of the dict {len(plain)} B",
        ),
    ]
    if dispatch is None:
        rows.append(
            Row(
                section,
                "peer: dispatch-py",
                float("nan"),
                "",
                None,
                detail="skipped: dispatch-py is not installed (pip install dispatch-py "
                "http-message-signatures==0.5.0; CPython 3.11/3.12)",
            )
        )
    else:
        rows += [
            ratio_row(
                section,
                "peer: dispatch-py dumps / pickle.dumps(dict)",
                values,
                "dispatch dumps",
                "pickle.dumps",
                None,
            ),
            ratio_row(
                section,
                "peer: dispatch-py loads / pickle.loads",
                values,
                "dispatch loads",
                "pickle.loads",
                None,
            ),
            Row(section, "peer: dispatch-py snapshot size", len(dblob), "B", None),
            ratio_row(
                section,
                "contsnap.dumps / dispatch-py dumps",
                values,
                "contsnap.dumps",
                "dispatch dumps",
                None,
            ),
            ratio_row(
                section,
                "contsnap.loads / dispatch-py loads",
                values,
                "contsnap.loads",
                "dispatch loads",
                None,
            ),
        ]
    return rows


# -- restore time against steps taken -----------------------------------------------------


def bench_steps(cfg: Config, series: dict[str, Any]) -> list[Row]:
    section = "restore time after N steps / after 1e2 steps"
    steps = [10**k for k in range(2, 7)]
    blobs = {}
    for n in steps:
        g = w.marked_ten_locals(10**7)
        for _ in range(n):
            next(g)
        blobs[n] = contsnap.dumps(g)
    sides = [Side(f"{n:.0e}", lambda _, b=blobs[n]: contsnap.loads(b), loops=100) for n in steps]
    values = interleave(section, sides, cfg.samples(7, 25))
    series["restore_vs_steps"] = {
        "steps": steps,
        "loads_seconds": [min(values[f"{n:.0e}"]) for n in steps],
        "bytes": [len(blobs[n]) for n in steps],
    }
    return [
        ratio_row(section, f"contsnap.loads after {n:.0e} steps", values, f"{n:.0e}", "1e+02", 1.10)
        for n in steps[1:]
    ]


# -- import hook --------------------------------------------------------------------------


def bench_hook(cfg: Config, series: dict[str, Any]) -> list[Row]:
    import bench_hook as bh

    section = "import hook"
    folder = tempfile.mkdtemp(prefix="contsnap-bench-hook-")
    sys.path.insert(0, folder)
    cases = [
        bh.Case("generated generator-heavy module", bh.generated_module(), folder, "gen"),
        bh.Case("stdlib difflib", bh._stdlib_source("difflib"), folder, "difflib"),
        bh.Case("stdlib tokenize", bh._stdlib_source("tokenize"), folder, "tokenize"),
    ]
    bh.settle()
    hook = contsnap.install_import_hook(
        [c.hooked for c in cases] + [c.uncached for c in cases], mark_all=True
    )
    rows = []
    try:
        for case in cases:
            transformed = case.warm_up()
            name = (
                f"warm import, hooked / plain: {case.label} "
                f"({case.lines} lines, {transformed} generators)"
            )
            values = interleave(
                name,
                [
                    Side("plain", lambda _, m=case.plain: bh._import(m), loops=5, self_timed=True),
                    Side(
                        "hooked", lambda _, m=case.hooked: bh._import(m), loops=5, self_timed=True
                    ),
                ],
                cfg.samples(10, 40),
            )
            rows.append(ratio_row(section, name, values, "hooked", "plain", 1.2))
        for case in cases:
            cold = case.cold_import(cfg.samples(3, 7))
            rows.append(
                Row(
                    section,
                    f"cold transform: {case.label}",
                    cold * 1e3 / case.lines * 1000,
                    "ms/1000 lines",
                    150,
                    detail=f"{_t(cold)} for {case.lines} lines (best of {cfg.samples(3, 7)})",
                )
            )
    finally:
        hook.uninstall()
        sys.path.remove(folder)
        shutil.rmtree(folder, ignore_errors=True)
    return rows


# -- snapshot as state grows --------------------------------------------------------------


def _records(target_bytes: int) -> list[tuple[int, str, float]]:
    """A list of small records that pickles to about ``target_bytes``."""
    sample = [(i, f"item-{i}", i * 0.5) for i in range(1000)]
    per_record = len(pickle.dumps(sample, protocol=5)) / 1000
    return [(i, f"item-{i}", i * 0.5) for i in range(max(1, int(target_bytes / per_record)))]


def bench_growth(cfg: Config, series: dict[str, Any]) -> list[Row]:
    section = "snapshot as live state grows, contsnap / pickle of the same locals"
    sizes = [10**3, 10**4, 10**5, 10**6, 10**7]
    labels = ["1 KB", "10 KB", "100 KB", "1 MB", "10 MB"]
    rows = []
    points = []
    for size, label in zip(sizes, labels):
        state = _records(size)
        g = w.marked_holding(state, 10)
        next(g)
        local_values = {
            k: v for k, v in dict(g.gi_frame.f_locals).items() if not k.startswith("_cs")
        }
        blob = contsnap.dumps(g)
        plain = pickle.dumps(local_values, protocol=5)
        loops = max(1, 200_000 // size)
        values = interleave(
            f"{section}: {label}",
            [
                Side("contsnap.dumps", lambda _, g=g: contsnap.dumps(g), loops=loops),
                Side(
                    "pickle.dumps",
                    lambda _, v=local_values: pickle.dumps(v, protocol=5),
                    loops=loops,
                ),
                Side("contsnap.loads", lambda _, b=blob: contsnap.loads(b), loops=loops),
                Side("pickle.loads", lambda _, p=plain: pickle.loads(p), loops=loops),
            ],
            cfg.samples(3, 9),
        )
        size_note = f"; {len(blob):,} B vs {len(plain):,} B"
        dumps_row = ratio_row(
            section, f"dumps, {label}", values, "contsnap.dumps", "pickle.dumps", None
        )
        dumps_row.detail += size_note
        rows.append(dumps_row)
        rows.append(
            ratio_row(section, f"loads, {label}", values, "contsnap.loads", "pickle.loads", None)
        )
        points.append(
            {
                "label": label,
                "pickle_bytes": len(plain),
                "contsnap_bytes": len(blob),
                **{f"{k}_seconds": min(v) for k, v in values.items()},
            }
        )
        del state, g, blob, plain, local_values
    series["state_growth"] = points
    return rows


# -- durable jobs -------------------------------------------------------------------------


def _calibrate_steps(seconds: float, work: int) -> int:
    start = time.perf_counter()
    _drain(w.long_job(2_000, work))
    per_step = (time.perf_counter() - start) / 2_000
    return max(2_000, int(seconds / per_step))


def bench_durable(cfg: Config, series: dict[str, Any]) -> list[Row]:
    section = "durable job: contsnap.run() / the bare loop"
    seconds = 2.0 if cfg.quick else 16.0
    work = 200
    steps = _calibrate_steps(seconds, work)
    folder = tempfile.mkdtemp(prefix="contsnap-bench-durable-")
    checkpoint = os.path.join(folder, "job.ckpt")

    def fresh_start() -> None:
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))

    def durable(every: float, steps: int = steps, work: int = work) -> Callable[[Any], Any]:
        def run(_: Any) -> Any:
            return contsnap.run(
                w.marked_long_job, steps, work, checkpoint=checkpoint, every=every, progress=False
            )

        return run

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # what run() costs per yield, apart from saving: a job of near-empty steps
            tiny = 100_000
            per_step = interleave(
                f"{section}: per-step cost",
                [
                    Side("marked loop", lambda _: _drain(w.marked_long_job(tiny, 1))),
                    Side("run", durable(3600.0, tiny, 1), setup=fresh_start),
                ],
                cfg.samples(5, 15),
            )
            values = interleave(
                section,
                [
                    Side("bare loop", lambda _: _drain(w.long_job(steps, work))),
                    Side("marked loop", lambda _: _drain(w.marked_long_job(steps, work))),
                    Side("every 15 s", durable(15.0), setup=fresh_start),
                    Side("every 1 s", durable(1.0), setup=fresh_start),
                ],
                cfg.samples(2, 4),
                warmups=0,
            )
        g = w.marked_long_job(steps, work)
        for _ in range(5_000):
            next(g)
        blob = contsnap.dumps(g)
        save_times = []
        for _ in range(10):
            start = time.perf_counter()
            data = contsnap.dumps(g)
            with open(checkpoint + ".probe", "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            save_times.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    save = median(save_times)
    job = min(values["bare loop"])
    rows = []
    for every in (15.0, 1.0):
        label = f"every {every:.0f} s"
        row = ratio_row(
            section,
            f"autosave {label}, a {job:.0f} s job of {steps:,} steps",
            values,
            label,
            "bare loop",
            None,
        )
        saves = int(job // every) + 1
        row.detail += f"; ~{saves} saves of {_t(save)} ({len(blob) / 1e3:.0f} KB)"
        row.extra = {"every": every, "save_seconds": save, "saves": saves, "steps": steps}
        rows.append(row)
    rows.append(
        ratio_row(
            section,
            "(the same marked generator drained without run(), for reference)",
            values,
            "marked loop",
            "bare loop",
            None,
        )
    )
    step_cost = (min(per_step["run"]) - min(per_step["marked loop"])) / tiny
    rows.append(
        Row(
            section,
            "run()'s own cost per yield (job of near-empty steps, no autosave)",
            step_cost * 1e6,
            "us",
            None,
            detail=f"{_t(min(per_step['run']))} vs {_t(min(per_step['marked loop']))} "
            f"for {tiny:,} yields; this job's steps take {_t(job / steps)}",
        )
    )
    series["durable"] = {
        "run_seconds_per_yield": step_cost,
        "save_seconds": save,
        "checkpoint_bytes": len(blob),
        "steps": steps,
        "job_seconds": job,
    }
    return rows


# -- plots --------------------------------------------------------------------------------


def plot(rows: list[Row], series: dict[str, Any], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = folder / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    targeted = [r for r in rows if r.unit == "x" and r.target is not None]
    if targeted:
        fig, ax = plt.subplots(figsize=(11, 0.45 * len(targeted) + 1.2))
        names = [r.name if len(r.name) < 72 else r.name[:69] + "..." for r in targeted][::-1]
        vals = [r.value for r in targeted][::-1]
        colors = ["tab:green" if r.missed_by is None else "tab:red" for r in targeted][::-1]
        ax.barh(names, vals, color=colors, alpha=0.8)
        for i, r in enumerate(targeted[::-1]):
            ax.plot([r.target, r.target], [i - 0.4, i + 0.4], color="black", linewidth=2)
            if r.spread:  # the noise: 25-75% of the paired ratios, not an error bar of the value
                ax.plot(list(r.spread), [i, i], color="dimgrey", linewidth=1, marker="|")
        ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel(
            "contsnap / baseline, best / best (black tick: target; grey: 25-75% of paired ratios)"
        )
        ax.set_xscale("log")
        ax.set_title("Ratios with a target (green: met, red: missed)")
        save(fig, "ratios.png")
    if "restore_vs_steps" in series:
        data = series["restore_vs_steps"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(data["steps"], [s * 1e6 for s in data["loads_seconds"]], marker="o")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("steps taken before the snapshot")
        ax.set_ylabel("contsnap.loads (us)")
        ax.set_title("Restore time does not depend on steps taken")
        save(fig, "restore_vs_steps.png")
    if "state_growth" in series:
        data = series["state_growth"]
        x = [p["pickle_bytes"] for p in data]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
        for key, style in (
            ("contsnap.dumps", "o-"),
            ("pickle.dumps", "o--"),
            ("contsnap.loads", "s-"),
            ("pickle.loads", "s--"),
        ):
            left.plot(x, [p[f"{key}_seconds"] * 1e3 for p in data], style, label=key)
        left.set_xscale("log")
        left.set_yscale("log")
        left.set_xlabel("live state (bytes of plain pickle)")
        left.set_ylabel("time (ms)")
        left.legend()
        left.set_title("Time")
        right.plot(x, [p["contsnap_bytes"] for p in data], "o-", label="contsnap.dumps")
        right.plot(x, x, "o--", label="pickle.dumps")
        right.set_xscale("log")
        right.set_yscale("log")
        right.set_xlabel("live state (bytes of plain pickle)")
        right.set_ylabel("snapshot size (bytes)")
        right.legend()
        right.set_title("Size (contsnap compresses)")
        save(fig, "state_growth.png")
    return written


# -- main ---------------------------------------------------------------------------------

BENCHES: dict[str, Callable[[Config, dict[str, Any]], list[Row]]] = {
    "fresh": bench_fresh,
    "restored": bench_restored,
    "snapshot": bench_snapshot,
    "steps": bench_steps,
    "hook": bench_hook,
    "growth": bench_growth,
    "durable": bench_durable,
}


def machine() -> dict[str, Any]:
    dispatch = _dispatch()
    version = None
    if dispatch is not None:
        from importlib.metadata import version as dist_version

        version = dist_version("dispatch-py")
    return {
        "contsnap": contsnap.__version__,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "dispatch_py": version,
        "pyperf": getattr(pyperf, "__version__", None),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer samples, shorter jobs (< 2 min)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, metavar="SECTION", help=", ".join(SECTIONS)
    )
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    parser.add_argument(
        "--results", type=Path, default=HERE / "results", help="where the JSON goes"
    )
    parser.add_argument("--plots", type=Path, help="where the PNGs go (default: see above)")
    parser.add_argument(
        "--replot", type=Path, metavar="JSON", help="redraw the plots of a results file, no timing"
    )
    args = parser.parse_args(argv)
    if args.replot:
        text = args.replot.read_text(encoding="utf-8")
        rows = rows_from_json(text)
        print(format_table(rows))
        folder = args.plots or HERE.parent / "docs" / "img"
        for path in plot(rows, json.loads(text)["series"], folder):
            print("wrote", path)
        return 0
    cfg = Config(quick=args.quick)
    mode = "quick" if args.quick else "full"
    meta = {"mode": mode, "sections": args.only or list(SECTIONS), **machine()}
    print(
        f"contsnap {meta['contsnap']}, Python {meta['python']}, {meta['cpu_count']} CPUs, "
        f"{mode} run; ratios are contsnap / baseline, measured interleaved in this process",
        flush=True,
    )
    rows: list[Row] = []
    series: dict[str, Any] = {}
    started = time.perf_counter()
    for name in args.only or SECTIONS:
        t0 = time.perf_counter()
        print(f"  {name} ...", end="", flush=True)
        rows += BENCHES[name](cfg, series)
        print(f" {time.perf_counter() - t0:.0f} s", flush=True)
    meta["seconds"] = round(time.perf_counter() - started, 1)
    meta["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print()
    print(format_table(rows))
    if args.markdown:
        print()
        print(markdown_table(rows))
    args.results.mkdir(parents=True, exist_ok=True)
    stem = f"{mode}-py{sys.version_info[0]}.{sys.version_info[1]}"
    if args.only:
        stem += "-" + "-".join(args.only)
    out = args.results / f"{stem}.json"
    out.write_text(results_json(meta, rows, series), encoding="utf-8")
    written = [out]
    if pyperf is not None and PYPERF_BENCHMARKS:
        suite_path = args.results / f"{stem}.pyperf.json"
        pyperf.BenchmarkSuite(PYPERF_BENCHMARKS).dump(str(suite_path), replace=True)
        written.append(suite_path)
    if not args.no_plots:
        folder = args.plots or (
            HERE / "results" / "img-quick" if args.quick else HERE.parent / "docs" / "img"
        )
        written += plot(rows, series, folder)
    print()
    print(
        f"{meta['seconds']:.0f} s; wrote "
        + ", ".join(
            str(p.relative_to(Path.cwd())) if p.is_relative_to(Path.cwd()) else str(p)
            for p in written
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
