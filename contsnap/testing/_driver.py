"""The driver: run a generator in one mode (native, transformed, round trip, fork) and
record its transcript."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, cast

from ._actions import MODES, Action, Close, Mode, Send, Throw, Trace, _as_action
from ._log import TraceLog, _frozen


class SnapshotBackend(Protocol):
    """What the ``roundtrip`` and ``fork`` modes need; the ``contsnap`` module is one."""

    def dumps(self, gen: Any) -> Any: ...

    def loads(self, data: Any) -> Any: ...

    def detach(self, gen: Any) -> None: ...

    def fork(self, gen: Any) -> Any: ...


def _contsnap_backend() -> SnapshotBackend:
    import contsnap

    return cast(SnapshotBackend, contsnap)


@contextlib.contextmanager
def _unraisable_into(log: TraceLog) -> Iterator[None]:
    """Record exceptions Python can only print (e.g. from a generator that is closed as it
    is freed, whose ``finally`` yields) as ``("unraisable", type_name, args)`` events."""

    def hook(info: Any) -> None:
        args = info.exc_value.args if info.exc_value is not None else ()
        log.sink.append(("unraisable", info.exc_type.__name__, _frozen(args)))

    previous = sys.unraisablehook
    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _frame_of(gen: Any) -> Any:
    """The frame of a generator, coroutine or async generator; None once it has ended."""
    for name in ("gi_frame", "cr_frame", "ag_frame"):
        if hasattr(gen, name):
            return getattr(gen, name)
    return None


def _record_step(trace: Trace, resume: Callable[[], object], event: str = "yield") -> bool:
    """Resume the generator once; record what came out (a suspension as ``(event, value)``).
    True while it is still suspended."""
    try:
        value = resume()
    except StopIteration as stop:
        trace.append(("return", _frozen(stop.value)))
        return False
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        trace.append(("raise", type(exc).__name__, _frozen(exc.args)))
        return False
    trace.append((event, _frozen(value)))
    return True


def _apply(gen: Any, action: Action, trace: Trace, event: str = "yield") -> bool:
    """Perform one driver action on a suspended generator; True if it is suspended again."""
    if isinstance(action, Send):
        trace.append(("send", _frozen(action.value)))
        return _record_step(trace, lambda: gen.send(action.value), event)
    if isinstance(action, Throw):
        trace.append(("throw", action.exc_type.__name__, _frozen(action.args)))
        return _record_step(trace, lambda: gen.throw(action.exc_type(*action.args)), event)
    trace.append(("close",))
    try:
        gen.close()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        trace.append(("raise", type(exc).__name__, _frozen(exc.args)))
    else:
        trace.append(("closed",))
    return False


@dataclasses.dataclass
class _Run:
    """The fixed parameters of one [`run_trace`][contsnap.testing.run_trace] call."""

    actions: list[Action]
    fill: Action | None
    max_steps: int
    roundtrip: bool
    backend: SnapshotBackend | None
    log: TraceLog
    event: str = "yield"  # how a suspension is recorded: "await" for a coroutine

    def action_at(self, position: int) -> Action:
        if position < len(self.actions):
            return self.actions[position]
        return Close() if self.fill is None else self.fill

    def drive(self, gen: Any, trace: Trace, position: int, fork_at: int | None) -> list[Trace]:
        """Drive a suspended ``gen`` from action ``position`` to its end, recording into
        ``trace``; at suspension ``fork_at`` also drive a fork. Returns the transcripts.

        The n-th suspension (counted from 0, the one reached by priming) is
        followed by action n, so ``position`` is also the suspension index.
        """
        self.log.sink = trace
        while True:
            try:
                if self.roundtrip:
                    gen = self._move(gen)
                twin = self._fork(gen) if position == fork_at else None
            except BaseException:
                self._discard(gen)
                raise
            if twin is not None:
                twin_trace = list(trace)
                return [
                    *self.drive(gen, trace, position, None),
                    *self.drive(twin, twin_trace, position, None),
                ]
            if position >= self.max_steps:
                trace.append(("step limit", self.max_steps))
                break
            if not _apply(gen, self.action_at(position), trace, self.event):
                break
            position += 1
        # A generator whose `finally` yielded during close() is still suspended; Python
        # would close it again whenever it is freed. Do that now, so that it happens at
        # the same point of the transcript in every mode.
        for _ in range(self.max_steps):
            if _frame_of(gen) is None:
                break
            _apply(gen, Close(), trace, self.event)
        return [trace]

    def _discard(self, gen: Any) -> None:
        """End a generator the harness gave up on, unheard, so that it cannot write into a
        later transcript when it is freed (a ``finally`` that yields needs several closes)."""
        sink, self.log.sink = self.log.sink, []
        try:
            for _ in range(self.max_steps):
                if _frame_of(gen) is None:
                    break
                with contextlib.suppress(Exception):
                    gen.close()
        finally:
            self.log.sink = sink

    def _fork(self, gen: Any) -> Any:
        assert self.backend is not None
        return self.backend.fork(gen)

    def _move(self, gen: Any) -> Any:
        """Snapshot to bytes and back; end the old copy without running its ``finally``."""
        assert self.backend is not None
        restored = self.backend.loads(self.backend.dumps(gen))
        try:
            self.backend.detach(gen)
        except BaseException:
            self._discard(restored)
            raise
        return restored


def run_trace(
    make_gen: Callable[[TraceLog], Any],
    sends: Sequence[object],
    *,
    mode: Mode = "native",
    fork_at: int | None = None,
    fill: Action | None = Send(None),
    max_steps: int = 10_000,
    backend: SnapshotBackend | None = None,
) -> dict[str, Trace]:
    """Drive the generator ``make_gen(log)`` with ``sends`` and return its transcripts.

    ``sends`` lists driver actions ([`Send`][contsnap.testing.Send],
    [`Throw`][contsnap.testing.Throw], [`Close`][contsnap.testing.Close]; a bare value means
    ``Send(value)``). The generator is primed with ``next()`` first; when the actions run out,
    ``fill`` is applied until the generator ends (``None``: close it), and ``max_steps`` actions in
    total stop a generator that does not end.

    A transcript lists, in order, each driver action and what came of it:
    ``("yield", v)``, ``("return", v)``, ``("raise", type_name, args)``,
    ``("closed",)``, and the ``("log", x)`` side effects in between; also
    ``("unraisable", type_name, args)`` for an exception Python could only print
    (from a generator closed as it was freed, e.g. one a ``break`` abandoned).

    Modes, which only change how the generator is driven (``make_gen`` decides
    whether it is transformed):

    * ``"native"`` and ``"transformed"``: drive it as is; key ``mode``;
    * ``"roundtrip"``: at every suspension replace ``g`` by
      ``loads(dumps(g))`` and ``detach(g)``; key ``"roundtrip"``;
    * ``"fork"``: at suspension ``fork_at`` (default: half-way through the
      actions) ``fork(g)``, drive the original to its end, then the copy with
      the same remaining actions; keys ``"fork/original"`` and ``"fork/copy"``,
      both full transcripts from the start. If the generator ends before
      ``fork_at``, only ``"fork/original"`` is returned.

    ``backend`` provides dumps/loads/detach/fork; it defaults to ``contsnap``
    (another implementation, or a test double, can be checked the same way).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    actions = [_as_action(step) for step in sends]
    needs_backend = mode in ("roundtrip", "fork")
    if needs_backend and backend is None:
        backend = _contsnap_backend()
    if mode == "fork" and fork_at is None:
        fork_at = len(actions) // 2
    log = TraceLog()
    run = _Run(actions, fill, max_steps, mode == "roundtrip", backend, log)
    trace: Trace = [("start",)]
    log.sink = trace
    with _unraisable_into(log):
        gen = make_gen(log)
        if _record_step(trace, lambda: gen.send(None)):
            traces = run.drive(gen, trace, 0, fork_at if mode == "fork" else None)
        else:
            traces = [trace]
    if mode != "fork":
        return {mode: trace}
    return dict(zip(("fork/original", "fork/copy"), traces))
