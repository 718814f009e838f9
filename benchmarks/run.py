"""Every contsnap benchmark in one command: a table of ratios, a JSON file, the docs' tables, plots.

Run:  python benchmarks/run.py [--quick] [--only SECTION ...] [--setup] [--no-peers]

Sections (``--only`` takes these names):

snapshot  dumps/loads time and size of five states against dispatch-py, pyteleport and
          ``pickle`` of the same state: a generator paused with 10 small locals, one
          holding a list of 100k ints, 1 MiB of random bytes, a dict of 10k str->str,
          a 50-deep ``yield from`` chain with 5 locals a frame; and the first call
          after ``gc.collect()`` against the warm figure
restored  a restored generator running on against a native one, for every loop form
          (for, while, nested, inside try, inside with, async for; a body that only
          yields and a compute body), and the peers' restored generators
fresh     fresh-run overhead, transformed / native
steps     restore time as a function of the steps already taken (must be flat)
actors    the pause of a whole-system checkpoint at 1,000 and 10,000 actors
hook      import hook: warm import hooked / plain, cold transform ms per 1000 lines
growth    snapshot time and size as live state grows, 1 KB ... 10 MB, against pickle
durable   contsnap.run() autosaving every 15 s and every 1 s, against the bare loop

The peers. dispatch-py and pyteleport live in virtual environments of their own
under ``benchmarks/.venvs/`` (git-ignored), made by ``--setup`` or, the first
time, by any run (``peers.py``: pinned releases, installed with pip from the same
base interpreter). A peer that cannot be installed or imported for this Python is
reported as skipped, with the reason. contsnap is measured from the work tree this
file is in (it goes first on ``sys.path``), whatever contsnap the interpreter has
installed.

How it measures: lock-step rounds. A comparison is a list of sides (contsnap's
dumps, dispatch-py's dumps, ``pickle.dumps`` of the same state, ...). Each
implementation runs in a worker process of its own interpreter (``worker.py``:
contsnap and ``pickle`` in the driver's interpreter, each peer in its virtual
environment), and the sections with no peer run in this process. Round i asks
every side, one after the other, for sample i: the driver sends the request, that
worker alone runs (the others wait on their pipe: nothing else of the benchmark
competes for the two cores), ``gc.collect()``, times a calibrated number of calls
with ``time.perf_counter`` and answers seconds per call. The order of the sides
reverses every round, so drift in the machine's speed, and load from other work,
falls on the sides of a round alike. Round 0 is a warm-up, in which each side picks
its number of calls (a sample of about 10 ms), kept for the rest of the run.

The figures: a ratio is the median over the rounds of the per-round ratio (sample
i of one side over sample i of the other), with the 25th-75th percentile of those
ratios as the spread; absolute times are medians of the samples. The first-call
figure of a side is one call timed right after ``gc.collect()``, in a round where
the other workers have just run (the caches are cold); its ratio is to the warm
per-call figure of the same round. pyperf's ``Runner`` is not used, because it runs
each benchmark alone, one after the other, the opposite of interleaving; the
samples go into pyperf ``Run`` objects when pyperf is installed.

Writes benchmarks/results/<mode>-py<X.Y>.json: the rows, the series the docs'
tables and plots are drawn from, the machine's load average at the start and the
end, Python's version, the commit and the peers' versions. A full run of every
section then writes docs/performance.md's generated tables (``report.py``) and the
plots in docs/img/ (``plots.py``, with matplotlib from the driver's interpreter or
from the ``plots`` virtual environment). ``--quick`` takes about a minute and
writes quick-*.json (git-ignored) and plots in benchmarks/results/img-quick/; it
leaves the docs alone. A full run takes about ten minutes on two shared cores.
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
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the work tree under test, before any installed contsnap

import core_workloads as w  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402
import states  # noqa: E402
from report import (  # noqa: E402
    Row,
    format_table,
    markdown_table,
    paired_ratio,
    results_json,
)

import contsnap  # noqa: E402

SECTIONS = (
    "snapshot",
    "restored",
    "fresh",
    "steps",
    "actors",
    "hook",
    "growth",
    "durable",
)

try:
    import pyperf
except ImportError:  # pragma: no cover - the bench extra is missing
    pyperf = None


T = TypeVar("T")


@dataclass
class Config:
    quick: bool

    def samples(self, quick: T, full: T) -> T:
        return quick if self.quick else full


@dataclass
class Remote:
    """A side measured in a worker process: one ``sample`` request per round (see worker.py)."""

    worker: peers.Worker
    impl: str
    case: str
    action: str
    target: float
    loops: int = 0  # 0 until the warm-up round, in which the worker calibrates it

    def take(self) -> float:
        reply = self.worker.ask(
            {
                "op": "sample",
                "impl": self.impl,
                "case": self.case,
                "action": self.action,
                "loops": self.loops,
                "target": self.target,
            }
        )
        if "seconds" not in reply:
            raise peers.WorkerError(
                f"{self.impl} {self.action} on {self.case}: {reply.get('traceback', reply)}"
            )
        self.loops = reply["loops"]
        return float(reply["seconds"])


@dataclass
class Side:
    """One side of a comparison: ``run(setup())`` is timed, ``loops`` times per sample.

    A side with ``remote`` is timed by its worker instead.
    """

    label: str
    run: Callable[[Any], Any] = lambda _: None
    setup: Callable[[], Any] = lambda: None
    loops: int = 1
    self_timed: bool = False  # run() returns its own duration (e.g. an import without its cleanup)
    remote: Remote | None = None


PYPERF_BENCHMARKS: list[Any] = []


def _take(side: Side) -> float:
    """Seconds per call of one sample of a side."""
    if side.remote is not None:
        return side.remote.take()
    prepared = [side.setup() for _ in range(side.loops)]
    gc.collect()
    if side.self_timed:
        elapsed = sum(side.run(item) for item in prepared)
    else:
        start = time.perf_counter()
        for item in prepared:
            side.run(item)
        elapsed = time.perf_counter() - start
    return elapsed / side.loops


def interleave(
    name: str, sides: list[Side], samples: int, warmups: int = 1
) -> dict[str, list[float]]:
    """Seconds per call for each side, in lock-step rounds: sample i of every side back to back.

    The order of the sides reverses every round.
    """
    values: dict[str, list[float]] = {side.label: [] for side in sides}
    warm: dict[str, list[tuple[int, float]]] = {side.label: [] for side in sides}
    for sample in range(warmups + samples):
        order = sides if sample % 2 == 0 else sides[::-1]
        for side in order:
            per_call = _take(side)
            loops = side.remote.loops if side.remote is not None else side.loops
            if sample < warmups:
                warm[side.label].append((loops, per_call))
            else:
                values[side.label].append(per_call)
    if pyperf is not None:
        for side in sides:
            run = pyperf.Run(
                values[side.label],
                warmups=warm[side.label] or None,
                metadata={
                    "name": f"{name} [{side.label}]",
                    "unit": "second",
                    "loops": side.remote.loops if side.remote is not None else side.loops,
                },
                collect_metadata=False,
            )
            PYPERF_BENCHMARKS.append(pyperf.Benchmark([run]))
    return values


def median(values: list[float]) -> float:
    return statistics.median(values)


def _t(seconds: float) -> str:
    """A duration, readable."""
    return report.format_seconds(seconds)


def ratio_row(
    section: str,
    name: str,
    values: dict[str, list[float]],
    numerator: str,
    denominator: str,
    target: float | None,
    **extra: Any,
) -> Row:
    """The median of the per-round ratios numerator / denominator, with their 25-75% spread."""
    value, spread = paired_ratio(values[numerator], values[denominator])
    detail = f"{_t(median(values[numerator]))} vs {_t(median(values[denominator]))}"
    return Row(section, name, value, "x", target, spread, detail, dict(extra))


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
    return rows + _fresh_peers(cfg, section)


def _fresh_peers(cfg: Config, section: str) -> list[Row]:
    """dispatch-py's fresh generators (a Python wrapper around each) against native ones.

    pyteleport's fresh generators are plain ones, so it has no row here.
    """
    IMPLS.start()
    if "dispatch-py" not in IMPLS.workers:
        return []
    worker = IMPLS.workers["dispatch-py"]
    rows = []
    for form in ("for, only yields", "for, compute"):
        case = f"loop:{form}"
        _prepare("dispatch-py", case)
        _prepare("native", case, worker)
        values = interleave(
            f"{section}: dispatch-py {form}",
            [
                Side("dispatch-py", remote=Remote(worker, "dispatch-py", case, "fresh", 0)),
                Side("native", remote=Remote(worker, "native", case, "fresh", 0)),
            ],
            cfg.samples(3, 15),
        )
        name = f"peer: dispatch-py @durable, {form} ({states.LOOPS[form][1]:,} items)"
        rows.append(ratio_row(section, name, values, "dispatch-py", "native", None))
        _forget("dispatch-py", case)
        _forget("native", case, worker)
    return rows


# -- the implementations' workers ----------------------------------------------------------


class Implementations:
    """The worker processes: contsnap (with ``pickle`` and native) and each peer that could start.

    A side's ``native`` baseline runs in the same worker as the side, so that a
    restored loop is compared with a native one of the same process.
    """

    def __init__(self, use_peers: bool) -> None:
        self.workers: dict[str, peers.Worker] = {}
        self.skipped: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.use_peers = use_peers

    def start(self) -> None:
        if self.workers:
            return
        self._add("contsnap", sys.executable, ["contsnap", "pickle", "native"])
        for peer in peers.PEERS:
            if not self.use_peers:
                self.skipped[peer.name] = "not measured in this run (--no-peers)"
                continue
            record = peers.setup(peer)
            if not record["ok"]:
                self.skipped[peer.name] = record["reason"]
                continue
            self._add(peer.name, peers.venv_python(peer), [peer.name, "native"])

    def _add(self, name: str, python: str | Path, impls: list[str]) -> None:
        try:
            worker = peers.Worker(name, python, impls)
        except peers.WorkerError as exc:
            self.skipped[name] = str(exc)
            return
        failed = worker.hello["failed"]
        if name in failed:
            self.skipped[name] = f"cannot be imported: {failed[name]}"
            worker.close()
            return
        self.workers[name] = worker
        self.versions.update(worker.hello["versions"])

    @property
    def sides(self) -> list[str]:
        """The implementations that snapshot, contsnap first."""
        return [
            name for name in ("contsnap", *(p.name for p in peers.PEERS)) if name in self.workers
        ]

    def worker(self, impl: str) -> peers.Worker:
        return self.workers["contsnap" if impl == "pickle" else impl]

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
        self.workers.clear()


IMPLS = Implementations(use_peers=True)


def _prepare(
    impl: str, case: str, worker: peers.Worker | None = None, n: int | None = None
) -> dict[str, Any]:
    """Ask a worker to build a case; an answer with ``unsupported`` or ``error`` is a skip."""
    request = {"op": "prepare", "impl": impl, "case": case, "n": n}
    reply = (worker or IMPLS.worker(impl)).ask(request)
    if "error" in reply:
        print(f"\n  {impl} failed on {case}: {reply['traceback']}", file=sys.stderr)
    return reply


def _forget(impl: str, case: str, worker: peers.Worker | None = None) -> None:
    (worker or IMPLS.worker(impl)).ask({"op": "forget", "impl": impl, "case": case})


def _skip_reason(reply: dict[str, Any]) -> str:
    return str(reply.get("unsupported") or reply.get("error") or "skipped")


def _skipped_peer_rows(section: str) -> list[Row]:
    return [
        Row(section, f"{name}: skipped", float("nan"), "", None, detail=reason)
        for name, reason in IMPLS.skipped.items()
    ]


# -- restored generators running on -------------------------------------------------------


def _loop_target(form: str) -> float:
    return 1.05 if form.endswith("only yields") else 1.02


def bench_restored(cfg: Config, series: dict[str, Any]) -> list[Row]:
    """Every loop form: each implementation's restored generator against a native one."""
    section = "restored generator running on / native"
    IMPLS.start()
    rows: list[Row] = []
    table: list[dict[str, Any]] = []
    target_time = cfg.samples(0.004, 0.01)
    for form in states.LOOPS:
        case = f"loop:{form}"
        sides: list[Side] = []
        entry: dict[str, Any] = {}
        for impl in IMPLS.sides:
            worker = IMPLS.worker(impl)
            n = states.LOOPS[form][1] // cfg.samples(5, 1)
            reply = _prepare(impl, case, n=n)
            native = _prepare("native", case, worker, n=n)
            if "bytes" not in reply:
                entry[impl] = {"skipped": _skip_reason(reply)}
                continue
            if reply["check"] != native["check"]:
                entry[impl] = {
                    "skipped": f"WRONG: the restored generator yielded {reply['check']}, "
                    f"the native one {native['check']}"
                }
                continue
            for label, who in ((f"{impl} restored", impl), (f"{impl} native", "native")):
                sides.append(Side(label, remote=Remote(worker, who, case, "run", target_time)))
        values = interleave(f"{section}: {form}", sides, cfg.samples(3, 15))
        for impl in IMPLS.sides:
            if impl in entry:
                reason = entry[impl]["skipped"]
                rows.append(Row(section, f"{form}: {impl}", float("nan"), "", None, detail=reason))
                continue
            target = _loop_target(form) if impl == "contsnap" else None
            row = ratio_row(
                section, f"{form}: {impl}", values, f"{impl} restored", f"{impl} native", target
            )
            rows.append(row)
            entry[impl] = {"ratio": row.value, "spread": list(row.spread or ()), "target": target}
        for impl in IMPLS.sides:
            _forget(impl, case)
            _forget("native", case, IMPLS.worker(impl))
        table.append({"form": form, "sides": entry})
    series["restored"] = {"forms": table, "skipped": dict(IMPLS.skipped)}
    return rows + _skipped_peer_rows(section)


# -- snapshots of five states against the peers and pickle -----------------------------------

SNAPSHOT_CASES = {
    "small": "generator paused with 10 small locals",
    "list": "list of 100k ints",
    "bytes": "1 MiB of random bytes",
    "dict": "dict of 10k str->str",
    "chain": "50-deep yield from chain, 5 locals a frame",
}
# case -> target of contsnap / pickle (dumps and loads), from issue 19
PICKLE_TARGETS = {"list": 1.5, "dict": 1.5, "bytes": 2.0}
# cases in which contsnap is to be faster than dispatch-py
PEER_TARGETS = {"small": 1.0, "chain": 1.0}
SIZE_TARGETS = {"small": 300}
FIRST_CALL_TARGET = 2.0


def _expected_next(case: str) -> str:
    """What the native generator of a snapshot case yields after the item it was paused at."""
    import worker

    gen = worker.plain_generator(states, "", case, worker.CASES[case]())
    next(gen)
    return repr(next(gen))


def bench_snapshot(cfg: Config, series: dict[str, Any]) -> list[Row]:
    IMPLS.start()
    rows: list[Row] = []
    table: list[dict[str, Any]] = []
    target_time = cfg.samples(0.004, 0.01)
    for case, label in SNAPSHOT_CASES.items():
        section = f"snapshot: {label}"
        entry: dict[str, Any] = {}
        sides: list[Side] = []
        expected = _expected_next(case)
        for impl in ["pickle", *IMPLS.sides]:
            reply = _prepare(impl, case)
            if "bytes" not in reply:
                entry[impl] = {"skipped": _skip_reason(reply)}
                continue
            if impl != "pickle" and reply["check"] != expected:
                entry[impl] = {
                    "skipped": f"WRONG: the restored generator yielded {reply['check']}, "
                    f"the native one {expected}"
                }
                continue
            entry[impl] = {"bytes": reply["bytes"]}
            worker = IMPLS.worker(impl)
            actions = ["dumps", "loads"]
            if case == "small":
                actions += FIRST_ACTIONS
            for action in actions:
                sides.append(
                    Side(f"{impl} {action}", remote=Remote(worker, impl, case, action, target_time))
                )
        values = interleave(
            section, sides, cfg.samples(3, 25) if case == "small" else cfg.samples(2, 11)
        )
        have_pickle = "pickle dumps" in values
        for impl in IMPLS.sides:
            if "bytes" not in entry.get(impl, {}):
                continue
            data = entry[impl]
            for action in ("dumps", "loads"):
                data[action] = median(values[f"{impl} {action}"])
                if have_pickle:
                    target = PICKLE_TARGETS.get(case) if impl == "contsnap" else None
                    row = ratio_row(
                        section,
                        f"{impl} {action} / pickle {action}",
                        values,
                        f"{impl} {action}",
                        f"pickle {action}",
                        target,
                    )
                    rows.append(row)
                    data[f"{action}_vs_pickle"] = [row.value, *(row.spread or ())]
            for peer in IMPLS.sides:
                if impl != "contsnap" or peer == "contsnap":
                    continue
                if "bytes" not in entry.get(peer, {}):
                    continue
                for action in ("dumps", "loads"):
                    target = PEER_TARGETS.get(case) if peer == "dispatch-py" else None
                    row = ratio_row(
                        section,
                        f"contsnap {action} / {peer} {action}",
                        values,
                        f"contsnap {action}",
                        f"{peer} {action}",
                        target,
                    )
                    rows.append(row)
                    data[f"{action}_vs_{peer}"] = [row.value, *(row.spread or ())]
            if case == "small":
                rows += _first_call_rows(section, impl, values, data)
        if have_pickle:
            for action in ("dumps", "loads"):
                entry["pickle"][action] = median(values[f"pickle {action}"])
            if case == "small":
                rows += _first_call_rows(section, "pickle", values, entry["pickle"])
        for impl, data in entry.items():
            if "bytes" in data:
                rows.append(
                    Row(
                        section,
                        f"size: {impl}",
                        data["bytes"],
                        "B",
                        SIZE_TARGETS.get(case) if impl == "contsnap" else None,
                    )
                )
            else:
                rows.append(
                    Row(section, f"{impl}: skipped", float("nan"), "", None, detail=data["skipped"])
                )
        for impl in ["pickle", *IMPLS.sides]:
            _forget(impl, case)
        table.append({"case": case, "label": label, "sides": entry})
    series["snapshot"] = {"cases": table, "skipped": dict(IMPLS.skipped)}
    return rows + _skipped_peer_rows("snapshot: peers")


#: the first call after gc.collect(): as it comes, and with the heap frozen before it
FIRST_ACTIONS = ["first-dumps", "first-loads", "first-frozen-dumps", "first-frozen-loads"]


def _first_call_rows(
    section: str, impl: str, values: dict[str, list[float]], data: dict[str, Any]
) -> list[Row]:
    """The first call after ``gc.collect()`` against the warm figure of ``impl`` (small
    state), as it comes and with the heap frozen (``gc.freeze()``) before the collection."""
    rows = []
    for frozen in ("", "frozen-"):
        for action in ("dumps", "loads"):
            how = ", heap frozen" if frozen else ""
            row = ratio_row(
                section,
                f"{impl} first {action} after gc.collect(){how} / warm",
                values,
                f"{impl} first-{frozen}{action}",
                f"{impl} {action}",
                FIRST_CALL_TARGET if impl == "contsnap" and not frozen else None,
            )
            rows.append(row)
            name = f"first_{frozen.replace('-', '_')}{action}"
            data[name] = median(values[f"{impl} first-{frozen}{action}"])
            data[f"{name}_vs_warm"] = [row.value, *(row.spread or ())]
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


# -- actors ---------------------------------------------------------------------------------


async def _actor_pauses(count: int, repeat: int) -> tuple[list[float], list[float], int]:
    """Pauses of ``System.checkpoint()`` with ``count`` actors, and the whole calls.

    The pause is the time the actors are stopped: from the start of the checkpoint (every
    actor parked, the set captured, every actor released) until the event loop can run
    them again (``System.last_pause``). The call returns later: the checkpoint is signed
    (and written) in a thread while the actors go on."""
    from actor_workloads import holder

    from contsnap import actors

    system = actors.System(f"bench-{count}")
    refs = [system.spawn(holder, i, name=f"a{i}") for i in range(count)]
    for ref in refs:
        ref.send(1)
    await asyncio.sleep(0.05)
    pauses = []
    calls = []
    size = 0
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        data = await system.checkpoint()
        calls.append(time.perf_counter() - started)
        pauses.append(system.last_pause if system.last_pause is not None else calls[-1])
        size = len(data)
        await asyncio.sleep(0.01)
    await system.stop()
    return pauses, calls, size


def bench_actors(cfg: Config, series: dict[str, Any]) -> list[Row]:
    section = "actors: pause of a whole-system checkpoint"
    rows = []
    points = []
    cases = [(1_000, 40.0, cfg.samples(3, 9)), (10_000, 500.0, 5)]
    for count, target, repeat in cases[:1] if cfg.quick else cases:  # quick: 1,000 only
        pauses, calls, size = asyncio.run(_actor_pauses(count, repeat))
        ms = [p * 1e3 for p in pauses]
        rows.append(
            Row(
                section,
                f"{count:,} actors (~1 KB of state each)",
                median(ms),
                "ms",
                target,
                (report.quantile(ms, 0.25), report.quantile(ms, 0.75)),
                detail=f"best {min(ms):.1f} ms of {len(ms)}; {median(pauses) / count * 1e6:.0f} us "
                f"an actor; checkpoint() returns after {median(calls) * 1e3:.0f} ms (signed while "
                f"the actors run); snapshot {size / 1024:.0f} KB",
            )
        )
        points.append(
            {"actors": count, "pause_ms": ms, "call_ms": [c * 1e3 for c in calls], "bytes": size}
        )
    series["actors"] = points
    return rows


# -- import hook --------------------------------------------------------------------------


def _cold_imports(bh: Any, case: Any, repeat: int) -> list[float]:
    """Hooked imports with no cache file (none read, none written), each after gc.collect()."""
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            times = []
            for _ in range(repeat):
                gc.collect()
                times.append(bh._import(case.uncached))
            return times
    finally:
        sys.dont_write_bytecode = saved


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
            rows.append(ratio_row(section, name, values, "hooked", "plain", 1.1))
        for case in cases:
            cold = _cold_imports(bh, case, cfg.samples(3, 9))
            per_1000 = [c * 1e3 / case.lines * 1000 for c in cold]
            rows.append(
                Row(
                    section,
                    f"cold transform: {case.label}",
                    median(per_1000),
                    "ms/1000 lines",
                    150,
                    (report.quantile(per_1000, 0.25), report.quantile(per_1000, 0.75)),
                    detail=f"median {_t(median(cold))} for {case.lines} lines, "
                    f"best {_t(min(cold))} ({len(cold)} imports)",
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
    sizes = [10**3, 10**4, 10**5, 10**6, 10**7][: cfg.samples(4, 5)]  # quick: up to 1 MB
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
    seconds = 1.0 if cfg.quick else 16.0
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


# -- plots ----------------------------------------------------------------------------------


def draw_plots(results: Path, folder: Path) -> list[Path]:
    """plots.py on a results file: here if matplotlib imports, else in the ``plots`` venv."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        record = peers.setup(peers.PLOTS)
        if not record["ok"]:
            print(f"no plots: {record['reason']}", file=sys.stderr)
            return []
        done = subprocess.run(
            [
                str(peers.venv_python(peers.PLOTS)),
                str(HERE / "plots.py"),
                str(results),
                str(folder),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(f"no plots: {done.stderr[-2000:]}", file=sys.stderr)
            return []
        return [Path(line) for line in done.stdout.split()]
    import plots

    return plots.plot_file(results, folder)


# -- main ---------------------------------------------------------------------------------

BENCHES: dict[str, Callable[[Config, dict[str, Any]], list[Row]]] = {
    "snapshot": bench_snapshot,
    "restored": bench_restored,
    "fresh": bench_fresh,
    "steps": bench_steps,
    "actors": bench_actors,
    "hook": bench_hook,
    "growth": bench_growth,
    "durable": bench_durable,
}


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def machine() -> dict[str, Any]:
    commit = _git("rev-parse", "--short=12", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "contsnap")
    return {
        "contsnap": contsnap.__version__,
        "contsnap_path": str(Path(contsnap.__file__).parent),
        "commit": commit,
        "contsnap_modified": bool(dirty),  # contsnap/ differs from the commit
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "pyperf": getattr(pyperf, "__version__", None),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter jobs (~1 min)")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, metavar="SECTION", help=", ".join(SECTIONS)
    )
    parser.add_argument(
        "--setup", action="store_true", help="make the peers' virtual environments again, then stop"
    )
    parser.add_argument("--no-peers", action="store_true", help="measure contsnap and pickle only")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    parser.add_argument(
        "--no-docs", action="store_true", help="a full run leaves docs/performance.md alone"
    )
    parser.add_argument(
        "--results", type=Path, default=HERE / "results", help="where the JSON goes"
    )
    parser.add_argument("--plots", type=Path, help="where the PNGs go (default: see above)")
    parser.add_argument(
        "--replot",
        type=Path,
        metavar="JSON",
        help="the docs' tables and the plots of a results file again, no timing",
    )
    args = parser.parse_args(argv)
    if args.setup:
        for peer in (*peers.PEERS, peers.PLOTS):
            record = peers.setup(peer, force=True)
            print(f"{peer.name}: {'ready' if record['ok'] else record['reason']}")
        return 0
    if args.replot:
        document = json.loads(args.replot.read_text(encoding="utf-8"))
        print(format_table(report.rows_of(document)))
        if document["meta"]["mode"] == "full" and set(document["meta"]["sections"]) == set(
            SECTIONS
        ):
            print("wrote", report.write_docs(document, args.replot))
        folder = args.plots or ROOT / "docs" / "img"
        for path in draw_plots(args.replot, folder):
            print("wrote", path)
        return 0
    cfg = Config(quick=args.quick)
    IMPLS.use_peers = not args.no_peers
    mode = "quick" if args.quick else "full"
    meta = {"mode": mode, "sections": args.only or list(SECTIONS), **machine()}
    print(
        f"contsnap {meta['contsnap']} from {meta['contsnap_path']} (commit {meta['commit']}"
        f"{', modified' if meta['contsnap_modified'] else ''}), Python {meta['python']}, "
        f"{meta['cpu_count']} CPUs, load {meta['loadavg_start'][0]:.1f}, {mode} run",
        flush=True,
    )
    rows: list[Row] = []
    series: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        for name in args.only or SECTIONS:
            t0 = time.perf_counter()
            print(f"  {name} ...", end="", flush=True)
            rows += BENCHES[name](cfg, series)
            print(f" {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        meta["peers"] = {"versions": dict(IMPLS.versions), "skipped": dict(IMPLS.skipped)}
        IMPLS.close()
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
    if mode == "full" and not args.only and not args.no_docs:
        written.append(report.write_docs(json.loads(out.read_text(encoding="utf-8")), out))
    if not args.no_plots:
        folder = args.plots or (
            HERE / "results" / "img-quick" if args.quick else ROOT / "docs" / "img"
        )
        written += draw_plots(out, folder)
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
