"""Coroutines and async generators, driven by hand or by asyncio, and what is done to
them at their checkpoints."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

from hypothesis import strategies as st

from .._registry import STATE
from ._actions import MODES, Action, Close, Mode, Send, Throw, Trace, _as_action
from ._driver import (
    SnapshotBackend,
    _contsnap_backend,
    _frame_of,
    _record_step,
    _Run,
    _unraisable_into,
)
from ._log import TraceLog, _frozen

AsyncMode = Literal["native", "transformed", "roundtrip", "fork", "asyncio"]
ASYNC_MODES: Final[tuple[AsyncMode, ...]] = (*MODES, "asyncio")


@st.composite
def coroutine_actions(draw: st.DrawFn, max_size: int = 12) -> list[Action]:
    """What a driver does to a coroutine paused at a checkpoint: mostly ``Send(None)``
    (what an event loop does), often a thrown ``ValueError`` or ``KeyError`` (what the
    programs catch), rarely ``close()``. Shrinks towards plain sends.

    Only ``None`` is sent: a coroutine paused at ``await contsnap.checkpoint()``
    ignores what it is sent, and a restored one (not started yet) refuses anything else.
    """
    actions: list[Action] = []
    for _ in range(draw(st.integers(0, max_size))):
        roll = draw(st.integers(0, 19))
        if roll < 14:
            actions.append(Send(None))
        elif roll < 17:
            actions.append(Throw(ValueError, ("thrown", len(actions))))
        elif roll < 19:
            actions.append(Throw(KeyError, ("thrown",)))
        else:
            actions.append(Close())
    return actions


@dataclasses.dataclass
class _Step:
    """One ``asend``/``athrow``/``aclose`` of an async generator, being stepped by hand."""

    kind: Literal["send", "throw", "close"]
    awaitable: Any
    # The rest of a step that a restored (or forked) copy goes on with: an
    # asend(None), since the original step got as far as the saved await.
    resumed: bool = False


_Progress = Literal["awaiting", "yielded", "ended"]


@dataclasses.dataclass
class _AsyncGenRun(_Run):
    """`_Run` for an async generator: each action is a step awaitable, sent ``None``
    until it is done; every await it passes on the way is a suspension too."""

    inside_steps: bool = True  # round-trip at the awaits inside a step, not only at yields

    def start(self, agen: Any, trace: Trace, fork_at: int | None) -> list[Trace]:
        """Prime ``agen`` (run it to its first yield, through any awaits) and drive it."""
        priming = _Step("send", agen.asend(None))
        progress = self._advance(priming, trace)
        if progress == "ended":
            return [trace]
        step = None if progress == "yielded" else priming
        return self.drive_steps(agen, step, trace, 0, 0, fork_at)

    def drive_steps(
        self,
        agen: Any,
        step: _Step | None,
        trace: Trace,
        position: int,
        suspension: int,
        fork_at: int | None,
    ) -> list[Trace]:
        """Drive ``agen`` to its end from a suspension: at a yield when ``step`` is None,
        else at an await inside ``step``. ``position`` is the next action; suspensions
        of both kinds are counted, so ``fork_at`` may fall inside a step."""
        self.log.sink = trace
        while True:
            try:
                if self.roundtrip and (step is None or self.inside_steps):
                    agen, step = self._move_agen(agen, step)
                twin = None
                if suspension == fork_at:
                    assert self.backend is not None
                    copy = self.backend.fork(agen)
                    twin = copy, self._rest_of(copy, step)
            except BaseException:
                self._discard_agen(agen, step)
                raise
            if twin is not None:
                twin_trace = list(trace)
                return [
                    *self.drive_steps(agen, step, trace, position, suspension, None),
                    *self.drive_steps(*twin, twin_trace, position, suspension, None),
                ]
            if suspension >= self.max_steps:
                trace.append(("step limit", self.max_steps))
                if step is not None:
                    self._abandon(step)
                break
            suspension += 1
            if step is None:
                step = self._begin(agen, self.action_at(position), trace)
                position += 1
            progress = self._advance(step, trace)
            if progress != "awaiting":
                step = None
            if progress == "ended":
                break
        # An async generator that yielded during aclose() is still suspended: close it
        # again now, so that it happens at the same point of the transcript in every mode.
        for _ in range(3):
            if _frame_of(agen) is None:
                break
            self._run_step(self._begin(agen, Close(), trace), trace)
        return [trace]

    @staticmethod
    def _begin(agen: Any, action: Action, trace: Trace) -> _Step:
        if isinstance(action, Send):
            trace.append(("send", _frozen(action.value)))
            return _Step("send", agen.asend(action.value))
        if isinstance(action, Throw):
            trace.append(("throw", action.exc_type.__name__, _frozen(action.args)))
            return _Step("throw", agen.athrow(action.exc_type(*action.args)))
        trace.append(("close",))
        return _Step("close", agen.aclose())

    @staticmethod
    def _advance(step: _Step, trace: Trace) -> _Progress:
        """Send ``None`` into the step once; record what came of it."""
        try:
            awaited = step.awaitable.send(None)
        except StopIteration as done:
            if step.kind != "close":
                trace.append(("yield", _frozen(done.value)))
                return "yielded"
            if step.resumed:  # what aclose() says of an async generator that yields
                trace.append(("raise", "RuntimeError", ("async generator ignored GeneratorExit",)))
            else:
                trace.append(("closed",))
            return "ended"
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            closed = isinstance(exc, (StopAsyncIteration, GeneratorExit))
            if step.kind == "close" and step.resumed and closed:
                trace.append(("closed",))  # what aclose() makes of either
            elif isinstance(exc, StopAsyncIteration) and step.kind != "close":
                trace.append(("return", None))
            else:
                trace.append(("raise", type(exc).__name__, _frozen(exc.args)))
            return "ended"
        trace.append(("await", _frozen(awaited)))
        return "awaiting"

    def _run_step(self, step: _Step, trace: Trace) -> None:
        for _ in range(self.max_steps):
            if self._advance(step, trace) != "awaiting":
                return
        self._abandon(step)

    def _abandon(self, step: _Step) -> None:
        """End an unfinished step by throwing ``GeneratorExit`` in where it waits (its
        ``close()`` would only forget it, leaving the generator to the garbage collector)."""
        try:
            step.awaitable.throw(GeneratorExit)
            for _ in range(self.max_steps):
                step.awaitable.send(None)
        except (Exception, GeneratorExit):
            pass

    @staticmethod
    def _rest_of(agen: Any, step: _Step | None) -> _Step | None:
        return None if step is None else _Step(step.kind, agen.asend(None), resumed=True)

    def _move_agen(self, agen: Any, step: _Step | None) -> tuple[Any, _Step | None]:
        """Snapshot to bytes and back; end the old copy without running its ``finally``.
        Inside a step, the restored copy goes on with ``asend(None)``."""
        assert self.backend is not None
        restored = self.backend.loads(self.backend.dumps(agen))
        try:
            self.backend.detach(agen)
        except BaseException:
            self._discard_agen(restored, None)
            raise
        return restored, self._rest_of(restored, step)

    def _discard_agen(self, agen: Any, step: _Step | None) -> None:
        """End an async generator the harness gave up on, unheard (see ``_discard``)."""
        sink, self.log.sink = self.log.sink, []
        try:
            if step is not None:
                self._abandon(step)
            for _ in range(3):
                if _frame_of(agen) is None:
                    break
                with contextlib.suppress(Exception):
                    self._run_step(_Step("close", agen.aclose()), [])
        finally:
            self.log.sink = sink


def run_async_trace(
    make: Callable[[TraceLog], Any],
    actions: Sequence[object],
    *,
    mode: Mode = "native",
    fork_at: int | None = None,
    fill: Action | None = Send(None),
    max_steps: int = 10_000,
    backend: SnapshotBackend | None = None,
    inside_steps: bool = True,
) -> dict[str, Trace]:
    """Drive the coroutine or async generator ``make(log)`` by hand; return its transcripts.

    No event loop is needed when only ``contsnap.checkpoint()`` suspends: each
    ``send(None)`` that comes back with ``None`` is one checkpoint passed.

    A **coroutine** is driven like a generator by [`run_trace`][contsnap.testing.run_trace]: its
    first ``send(None)`` primes it, then ``actions`` apply one per suspension (see
    [`coroutine_actions`][contsnap.testing.coroutine_actions]); a suspension is recorded as
    ``("await", value)``.

    An **async generator** is stepped as ``async for`` would, but by hand: it is
    primed with ``asend(None)``, then each action becomes a step awaitable
    (``Send(v)``: ``asend(v)``, ``Throw``: ``athrow(...)``, ``Close``:
    ``aclose()``), sent ``None`` until it is done. An await passed inside a step
    is recorded as ``("await", value)``; the end of a step as ``("yield", v)``,
    ``("return", None)`` (``StopAsyncIteration``), ``("closed",)`` or ``("raise",
    type_name, args)``. Both kinds of suspension count for ``fork_at`` and
    ``max_steps``.

    Modes are those of [`run_trace`][contsnap.testing.run_trace]. In ``"roundtrip"``, an async
    generator is moved through bytes at every yield and, with ``inside_steps``, at every await
    inside a step too; the restored copy then goes on with ``asend(None)`` (and a step that was an
    ``aclose()`` is judged as ``aclose()`` would judge it).

    What has ``asend``/``athrow``/``aclose`` is driven as an async generator, what
    has ``send``/``throw``/``close`` as a coroutine, so a test double will do.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    steps = [_as_action(step) for step in actions]
    if mode in ("roundtrip", "fork") and backend is None:
        backend = _contsnap_backend()
    if mode == "fork" and fork_at is None:
        fork_at = len(steps) // 2
    chosen_fork = fork_at if mode == "fork" else None
    log = TraceLog()
    trace: Trace = [("start",)]
    log.sink = trace
    # in a context of its own, as a task would be: what the program sets in its context
    # variables must not leak into the next run (of another mode)
    traces = contextvars.copy_context().run(
        _drive_by_hand,
        make,
        log,
        trace,
        steps,
        fill,
        max_steps,
        mode,
        backend,
        inside_steps,
        chosen_fork,
    )
    if mode != "fork":
        return {mode: trace}
    return dict(zip(("fork/original", "fork/copy"), traces))


def _drive_by_hand(
    make: Callable[[TraceLog], Any],
    log: TraceLog,
    trace: Trace,
    steps: list[Action],
    fill: Action | None,
    max_steps: int,
    mode: Mode,
    backend: SnapshotBackend | None,
    inside_steps: bool,
    chosen_fork: int | None,
) -> list[Trace]:
    with _unraisable_into(log):
        subject = make(log)
        if hasattr(subject, "asend"):
            agen_run = _AsyncGenRun(
                steps, fill, max_steps, mode == "roundtrip", backend, log, inside_steps=inside_steps
            )
            traces = agen_run.start(subject, trace, chosen_fork)
        elif hasattr(subject, "send"):
            run = _Run(steps, fill, max_steps, mode == "roundtrip", backend, log, "await")
            if _record_step(trace, lambda: subject.send(None), "await"):
                traces = run.drive(subject, trace, 0, chosen_fork)
            else:
                traces = [trace]
        else:
            raise TypeError(
                f"make(log) must return a coroutine or an async generator, not {subject!r}"
            )
    return traces


async def _iterate(agen: Any, log: TraceLog) -> None:
    """What the asyncio mode runs an async generator in: ``async for``, logging each value."""
    async for value in agen:
        log.append(("got", value))


_marked_iterate: list[Callable[..., Any]] = []
STATE.add(__name__, "_marked_iterate")


def _iterator_coroutine(agen: Any, log: TraceLog, *, marked: bool) -> Any:
    if not marked:
        return _iterate(agen, log)
    if not _marked_iterate:
        import contsnap

        _marked_iterate.append(contsnap.checkpointable(_iterate))
    return _marked_iterate[0](agen, log)


async def _pause_then_go_on(task: asyncio.Task[Any], turns: int, move: bool) -> asyncio.Task[Any]:
    """After ``turns`` turns of the loop, ``contsnap.pause()`` the task; then unpause it,
    or with ``move`` detach it and go on with the snapshot restored. Returns the task
    that will finish the work (none of this happens to a task that has finished)."""
    import contsnap

    for _ in range(turns):
        if task.done():
            return task
        await asyncio.sleep(0)
    if task.done():
        return task
    # pause() is awaited here, not in a task of its own, so that its request is in
    # before the task's next step; if the task ends without passing another safe
    # point, stop waiting (pause() itself would wait for ever).
    waiting = asyncio.current_task()
    assert waiting is not None

    def ended(_: object) -> None:
        waiting.cancel()

    task.add_done_callback(ended)
    try:
        snapshot = await contsnap.pause(task)
    except asyncio.CancelledError:
        if not task.done():
            raise
        if sys.version_info >= (3, 11):
            waiting.uncancel()
        return task
    finally:
        task.remove_done_callback(ended)
    if not move:
        contsnap.unpause(task)
        return task
    contsnap.detach(task)
    return asyncio.ensure_future(contsnap.loads(snapshot))


def run_asyncio_trace(
    make: Callable[[TraceLog], Any], *, pause_at: int | None = None, move: bool = False
) -> dict[str, Trace]:
    """Run ``make(log)`` as an asyncio task under ``asyncio.run``; return its transcript.

    A coroutine is the task; an async generator is iterated by a small ``async
    for`` coroutine that logs ``("got", value)`` for each value. With
    ``pause_at``, the task is paused by ``contsnap.pause()`` after that many turns
    of the loop and then let go with ``contsnap.unpause()`` (key
    ``"asyncio/paused"``), or with ``move`` detached and replaced by its snapshot
    restored in the same loop (key ``"asyncio/moved"``); without, key ``"asyncio"``.
    Pausing needs ``make`` to give a marked coroutine or async generator.

    The transcript holds ``("start",)``, the log, and ``("return", value)`` or
    ``("raise", type_name, args)``: suspensions are the loop's business.
    """
    log = TraceLog()
    trace: Trace = [("start",)]
    log.sink = trace

    async def main() -> object:
        subject = make(log)
        if inspect.isasyncgen(subject):
            subject = _iterator_coroutine(subject, log, marked=pause_at is not None)
        task = asyncio.ensure_future(subject)
        if pause_at is not None:
            task = await _pause_then_go_on(task, pause_at, move)
        return await task

    with _unraisable_into(log):
        try:
            result = asyncio.run(main())
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            trace.append(("raise", type(exc).__name__, _frozen(exc.args)))
        else:
            trace.append(("return", _frozen(result)))
    key = "asyncio" if pause_at is None else "asyncio/moved" if move else "asyncio/paused"
    return {key: trace}
