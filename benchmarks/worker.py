"""A measuring worker: one process per implementation, driven by ``run.py`` over a pipe.

Run by the driver as ``<interpreter> benchmarks/worker.py IMPL [IMPL ...]``, where
the interpreter is the one the implementation is installed in (contsnap: the
driver's own, with the work tree under test first on ``sys.path``; a peer: its
virtual environment under ``benchmarks/.venvs/``). It reads one JSON request a
line on stdin and answers one JSON line on stdout; everything else the process
prints goes to stderr. It never measures unless asked, so while one side of a
comparison is timed the other workers sit idle in ``readline()``.

Requests (``impl`` names one of the implementations this worker hosts):

``{"op": "hello"}``
    versions of Python and of each implementation.
``{"op": "prepare", "impl": I, "case": C, "n": N}``
    builds case ``C`` (a snapshot case of ``CASES``, or ``loop:<name>`` of
    ``states.LOOPS`` draining ``N`` items, by default the table's), takes a
    snapshot, restores it and answers its size and the value the restored
    generator yields next (the driver checks that every side agrees).
``{"op": "sample", "impl": I, "case": C, "action": A, "loops": N, "target": S}``
    seconds per call of action ``A`` (``dumps``, ``loads``, ``first-dumps``,
    ``first-loads``, ``first-frozen-dumps``, ``first-frozen-loads``; for a loop ``run``,
    draining the restored generator, or
    ``fresh``, draining one made anew), timed over ``N`` calls after ``gc.collect()``. With
    ``N`` = 0 the worker times one call and picks ``N`` so that a sample lasts about
    ``S`` seconds; it answers the ``loops`` it chose, which the driver sends from
    then on.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import states  # noqa: E402

# snapshot case -> the state its paused generator holds (None: the workload makes its own)
CASES: dict[str, Callable[[], Any]] = {
    "small": lambda: None,
    "list": states.list_of_ints,
    "bytes": states.random_bytes,
    "dict": states.str_dict,
    "chain": lambda: None,
}
CHAIN_DEPTH = 50


class Impl:
    """One implementation: how it makes a paused generator, snapshots it and restores it."""

    name = ""

    def version(self) -> str:
        raise NotImplementedError

    def generator(self, case: str, state: Any) -> Any:
        raise NotImplementedError

    def loop(self, name: str, n: int) -> Any:
        raise NotImplementedError

    def dumps(self, obj: Any) -> bytes:
        raise NotImplementedError

    def loads(self, blob: bytes) -> Any:
        raise NotImplementedError


def plain_generator(module: Any, prefix: str, case: str, state: Any) -> Any:
    if case == "small":
        return getattr(module, prefix + "ten_locals")(100)
    if case == "chain":
        return getattr(module, prefix + "deep")(CHAIN_DEPTH, 10)
    return getattr(module, prefix + "holding")(state, 10)


class Native(Impl):
    """Plain generators: the loops' baseline (never snapshotted)."""

    name = "native"

    def version(self) -> str:
        return platform.python_version()

    def loop(self, name: str, n: int) -> Any:
        return states.LOOPS[name][0](n)


class Pickle(Impl):
    """``pickle`` of the same state: a dict of the paused generator's locals."""

    name = "pickle"

    def version(self) -> str:
        return f"protocol {pickle.HIGHEST_PROTOCOL}"

    def generator(self, case: str, state: Any) -> Any:
        if case == "chain":
            raise Unsupported("no plain-pickle equivalent of a chain of frames")
        gen = plain_generator(states, "", case, state)
        next(gen)
        return dict(gen.gi_frame.f_locals)

    def dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, blob: bytes) -> Any:
        return pickle.loads(blob)


class Contsnap(Impl):
    name = "contsnap"

    def __init__(self) -> None:
        import core_workloads

        import contsnap

        self.w, self.contsnap = core_workloads, contsnap

    def version(self) -> str:
        return f"{self.contsnap.__version__} ({os.path.dirname(self.contsnap.__file__)})"

    def generator(self, case: str, state: Any) -> Any:
        return plain_generator(self.w, "marked_", case, state)

    def loop(self, name: str, n: int) -> Any:
        return self.w.MARKED_LOOPS[name](n)

    def dumps(self, obj: Any) -> bytes:
        return self.contsnap.dumps(obj)

    def loads(self, blob: bytes) -> Any:
        return self.contsnap.loads(blob)


class Dispatch(Impl):
    name = "dispatch-py"

    def __init__(self) -> None:
        import dispatch_workloads

        self.w = dispatch_workloads

    def version(self) -> str:
        from importlib.metadata import version

        return version("dispatch-py")

    def generator(self, case: str, state: Any) -> Any:
        return plain_generator(self.w, "dispatch_", case, state)

    def loop(self, name: str, n: int) -> Any:
        if name not in self.w.DURABLE_LOOPS:
            raise Unsupported("dispatch-py has no durable async generators")
        return self.w.DURABLE_LOOPS[name](n)

    def dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, blob: bytes) -> Any:
        return pickle.loads(blob)


class Pyteleport(Impl):
    """pyteleport's generator pickling: ``dill`` with the reducer pyteleport registers."""

    name = "pyteleport"

    def __init__(self) -> None:
        import dill
        import pyteleport  # noqa: F401  (registers the generator reducer with dill)

        self.dill = dill

    def version(self) -> str:
        from importlib.metadata import version

        return f"{version('pyteleport')} (dill {version('dill')})"

    def generator(self, case: str, state: Any) -> Any:
        return plain_generator(states, "", case, state)

    def loop(self, name: str, n: int) -> Any:
        if states.is_async(name):
            raise Unsupported("pyteleport does not support async code")
        return states.LOOPS[name][0](n)

    def dumps(self, obj: Any) -> bytes:
        return self.dill.dumps(obj)

    def loads(self, blob: bytes) -> Any:
        return self.dill.loads(blob)


IMPLS: dict[str, type[Impl]] = {
    "native": Native,
    "pickle": Pickle,
    "contsnap": Contsnap,
    "dispatch-py": Dispatch,
    "pyteleport": Pyteleport,
}


class Unsupported(Exception):
    """The implementation has no equivalent of this case (reported, not an error)."""


def _step(gen: Any, is_async: bool) -> Any:
    return states.advance_async(gen) if is_async else next(gen)


class Prepared:
    """A case made ready for sampling: the paused object, its snapshot, how to time each action."""

    def __init__(self, impl: Impl, case: str, n: int | None = None) -> None:
        self.impl = impl
        self.loop_name = case[5:] if case.startswith("loop:") else None
        if self.loop_name is not None:
            self.prepare_loop(self.loop_name, n or states.LOOPS[self.loop_name][1])
        else:
            self.state = CASES[case]()
            self.obj = impl.generator(case, self.state)
            if not isinstance(impl, Pickle):
                next(self.obj)
            self.blob = impl.dumps(self.obj)
            restored = impl.loads(self.blob)
            self.check = None if isinstance(impl, Pickle) else next(restored)

    def prepare_loop(self, name: str, n: int) -> None:
        self.is_async = states.is_async(name)
        self.n = n
        if isinstance(self.impl, Native):
            self.blob = b""
            probe = self.impl.loop(name, n + 1)
            _step(probe, self.is_async)
            self.check = _step(probe, self.is_async)
            return
        paused = self.impl.loop(name, n + 1)
        _step(paused, self.is_async)
        self.blob = self.impl.dumps(paused)
        self.check = _step(self.impl.loads(self.blob), self.is_async)

    def info(self) -> dict[str, Any]:
        return {"bytes": len(self.blob), "check": repr(self.check)}

    def call(self, action: str) -> Callable[[], Any]:
        impl = self.impl
        if action.endswith("dumps"):
            obj = self.obj
            return lambda: impl.dumps(obj)
        if action.endswith("loads"):
            blob = self.blob
            return lambda: impl.loads(blob)
        raise ValueError(action)

    def setup_run(self, fresh: bool = False) -> Any:
        """A generator paused after its first item: restored from the snapshot, or native.

        ``fresh``: the implementation's generator made anew, never snapshotted.
        """
        assert self.loop_name is not None
        if fresh or isinstance(self.impl, Native):
            gen = self.impl.loop(self.loop_name, self.n + 1)
            _step(gen, self.is_async)
            return gen
        return self.impl.loads(self.blob)

    def sample(self, action: str, loops: int, target: float) -> tuple[float, int]:
        if action in ("run", "fresh"):
            drain = states.drain_async if self.is_async else states.drain
            if loops == 0:
                loops = 1  # each run drains a whole loop: milliseconds already
            prepared = [self.setup_run(fresh=action == "fresh") for _ in range(loops)]
            gc.collect()
            start = time.perf_counter()
            for gen in prepared:
                drain(gen)
            return (time.perf_counter() - start) / loops, loops
        call = self.call(action)
        if action.startswith("first-frozen-"):
            # the same with the heap frozen first (gc.freeze(), as a service does after
            # start-up): the collection walks only what is younger, and leaves the caches be
            gc.freeze()
            try:
                gc.collect()
                start = time.perf_counter()
                call()
                return time.perf_counter() - start, 1
            finally:
                gc.unfreeze()
        if action.startswith("first-"):
            # the first call after a collection (and, between samples, other processes' work)
            gc.collect()
            start = time.perf_counter()
            call()
            return time.perf_counter() - start, 1
        if loops == 0:  # calibrate: one call to warm up, then a batch of at least 1 ms
            call()
            gc.collect()
            batch, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < 1e-3 or batch == 0:
                call()
                batch += 1
            loops = max(1, min(20_000, round(target / (elapsed / batch))))
        gc.collect()
        start = time.perf_counter()
        for _ in range(loops):
            call()
        return (time.perf_counter() - start) / loops, loops


def serve(names: list[str], out: Any) -> None:
    impls: dict[str, Impl] = {}
    failed: dict[str, str] = {}
    for name in names:
        try:
            impls[name] = IMPLS[name]()
        except Exception as exc:  # reported to the driver, which skips the side
            failed[name] = f"{type(exc).__name__}: {exc}"
    prepared: dict[tuple[str, str], Prepared] = {}
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        try:
            if op == "quit":
                break
            if op == "hello":
                reply: dict[str, Any] = {
                    "python": platform.python_version(),
                    "executable": sys.executable,
                    "versions": {name: impl.version() for name, impl in impls.items()},
                    "failed": failed,
                }
            elif op == "prepare":
                key = (request["impl"], request["case"])
                prepared[key] = Prepared(impls[request["impl"]], request["case"], request.get("n"))
                reply = prepared[key].info()
            elif op == "sample":
                entry = prepared[(request["impl"], request["case"])]
                seconds, loops = entry.sample(
                    request["action"], request["loops"], request["target"]
                )
                reply = {"seconds": seconds, "loops": loops}
            elif op == "forget":
                prepared.pop((request["impl"], request["case"]), None)
                gc.collect()
                reply = {}
            else:
                raise ValueError(f"unknown op {op!r}")
        except Unsupported as exc:
            reply = {"unsupported": str(exc)}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def main() -> None:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    serve(sys.argv[1:], out)


if __name__ == "__main__":
    main()
