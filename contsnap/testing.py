"""Hypothesis strategies and a differential harness for checkpointable generators,
coroutines and async generators.

The strongest test of contsnap runs one generator program natively, transformed
by ``@checkpointable``, transformed with a snapshot/restore at every suspension,
and forked half-way, and compares everything a user can observe: yielded
values, return value, exceptions and side effects. This module provides the
pieces:

* [`generator_programs`][contsnap.testing.generator_programs] writes random generator-function
  modules that use most of the statement and expression forms of Python 3.10, and always terminate
  within a bounded number of steps;
* [`sent_values`][contsnap.testing.sent_values] and
  [`driver_actions`][contsnap.testing.driver_actions] draw what the driver does to a paused
  generator (send, throw, close), as plain data so that every mode replays the same actions;
* [`run_trace`][contsnap.testing.run_trace] drives a generator and records a transcript;
  [`assert_equivalent`][contsnap.testing.assert_equivalent] and
  [`check_generator_equivalence`][contsnap.testing.check_generator_equivalence] compare the
  transcripts of every mode and fail with a readable diff.

The same for ``async def``: [`coroutine_programs`][contsnap.testing.coroutine_programs] and
[`async_generator_programs`][contsnap.testing.async_generator_programs] write programs that await
checkpoints, chains of coroutines, ``async for`` and ``async with``;
[`coroutine_actions`][contsnap.testing.coroutine_actions] draws what is done to a coroutine at its
checkpoints; [`run_async_trace`][contsnap.testing.run_async_trace] drives a coroutine or an async
generator by hand (no event loop: only ``contsnap.checkpoint()`` suspends) and
[`run_asyncio_trace`][contsnap.testing.run_asyncio_trace] runs one under ``asyncio.run``, paused
there by ``contsnap.pause()``; [`assert_async_equivalent`][contsnap.testing.assert_async_equivalent]
and [`check_coroutine_equivalence`][contsnap.testing.check_coroutine_equivalence] compare.

It imports ``hypothesis`` at the top, so import it only from tests; contsnap
itself is imported lazily, when a mode needs it.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import copy
import dataclasses
import difflib
import importlib.util
import inspect
import itertools
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal, Protocol, cast

from hypothesis import strategies as st

from ._lambdas import own_scope_yields

__all__ = [
    "ASYNC_MODES",
    "LOG",
    "MODES",
    "Action",
    "AsyncMode",
    "Close",
    "Event",
    "Mode",
    "Send",
    "SnapshotBackend",
    "Throw",
    "Trace",
    "TraceLog",
    "assert_async_equivalent",
    "assert_equivalent",
    "async_generator_programs",
    "check_coroutine_equivalence",
    "check_generator_equivalence",
    "coroutine_actions",
    "coroutine_programs",
    "driver_actions",
    "generator_programs",
    "load_program",
    "mark_generators",
    "run_async_trace",
    "run_asyncio_trace",
    "run_trace",
    "sent_values",
]

# ---------------------------------------------------------------------------
# Driver actions: plain data, so that every mode replays the very same steps.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Send:
    """Resume the generator with ``gen.send(value)`` (``Send(None)`` is ``next(gen)``)."""

    value: object = None


@dataclasses.dataclass(frozen=True, init=False)
class Throw:
    """Resume the generator by raising ``exc_type(*args)`` at the paused ``yield``.

    ``Throw(KeyError("k"))`` is ``Throw(KeyError, ("k",))``: every mode throws an
    exception of its own, rebuilt from the type and the arguments, so the
    instance given must be one that its type and ``args`` rebuild.
    """

    exc_type: type[BaseException]
    args: tuple[object, ...]

    def __init__(
        self,
        exc_type: type[BaseException] | BaseException = ValueError,
        args: tuple[object, ...] = ("thrown",),
    ) -> None:
        if isinstance(exc_type, BaseException):
            instance = exc_type
            exc_type, args = type(instance), tuple(instance.args)
            _check_rebuilds(instance)
        elif not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
            raise TypeError(
                f"Throw takes an exception class and its arguments, e.g. "
                f"Throw(KeyError, ('k',)), or an exception, e.g. Throw(KeyError('k')); "
                f"got {exc_type!r}"
            )
        if not isinstance(args, tuple):
            raise TypeError(
                f"Throw's args is a tuple of the exception's arguments, e.g. "
                f"Throw({exc_type.__name__}, ('k',)); got {args!r}"
            )
        object.__setattr__(self, "exc_type", exc_type)
        object.__setattr__(self, "args", args)


def _check_rebuilds(instance: BaseException) -> None:
    """``type(instance)(*instance.args)`` must be an equal exception: every mode throws one."""
    kind = type(instance)
    try:
        rebuilt = kind(*instance.args)
    except Exception as exc:
        problem = f"{kind.__name__}(*{instance.args!r}) raises {type(exc).__name__}: {exc}"
    else:
        if rebuilt.args == instance.args and vars(rebuilt) == vars(instance):
            return
        problem = (
            f"{kind.__name__}(*{instance.args!r}) has the attributes {vars(rebuilt)!r}, "
            f"not {vars(instance)!r}"
        )
    raise TypeError(
        f"Throw({instance!r}): each mode throws a new exception built from the type and its "
        f"args, but {problem}; pass Throw(SomeError, args) with args that build it"
    )


@dataclasses.dataclass(frozen=True)
class Close:
    """Call ``gen.close()``: the generator runs its ``finally`` blocks and ends."""


Action = Send | Throw | Close
"""One step of the driver; a bare value in an action list stands for ``Send(value)``."""

Event = tuple[object, ...]
"""One entry of a transcript, e.g. ``("yield", 3)`` or ``("raise", "KeyError", ("k",))``."""

Trace = list[Event]

Mode = Literal["native", "transformed", "roundtrip", "fork"]
MODES: Final[tuple[Mode, ...]] = ("native", "transformed", "roundtrip", "fork")


def sent_values() -> st.SearchStrategy[int | None]:
    """Values to send into a generator: small ints mostly (programs compute with them).

    ``None`` comes up about one time in eight: it is what ``next()`` sends, and it
    makes arithmetic on the received value raise ``TypeError``, which is one more
    exception path to compare.
    """
    return st.integers(-3, 12).map(lambda n: None if n > 10 else n)


@st.composite
def driver_actions(draw: st.DrawFn, max_size: int = 12) -> list[Action]:
    """Lists of driver actions: mostly sends, sometimes a thrown ``ValueError``/``KeyError``,
    rarely a ``close()``. Shrinks towards plain sends."""
    actions: list[Action] = []
    for _ in range(draw(st.integers(0, max_size))):
        roll = draw(st.integers(0, 39))
        if roll < 36:
            actions.append(Send(draw(sent_values())))
        elif roll < 38:
            actions.append(Throw(ValueError, ("thrown", len(actions))))
        elif roll < 39:
            actions.append(Throw(KeyError, ("thrown",)))
        else:
            actions.append(Close())
    return actions


def _as_action(step: object) -> Action:
    return step if isinstance(step, (Send, Throw, Close)) else Send(step)


# ---------------------------------------------------------------------------
# The log: a side-effect channel that survives snapshots by reference.
# ---------------------------------------------------------------------------

_live_logs: weakref.WeakValueDictionary[int, TraceLog] = weakref.WeakValueDictionary()
_log_tokens = itertools.count()


def _find_log(token: int) -> TraceLog:
    try:
        return _live_logs[token]
    except KeyError:
        raise LookupError(
            f"TraceLog #{token} no longer exists: a snapshot that holds a TraceLog can only"
            " be restored while the run that made it is alive (in the same process)"
        ) from None


class TraceLog:
    """The ``log`` handed to a generator under test: ``log.append(x)`` writes a
    ``("log", x)`` event into the transcript being recorded.

    It stands for the world outside the generator (a file, a database), so it is
    not copied by a snapshot: pickling and ``copy.deepcopy`` keep a reference to
    this same object. A restored or forked generator therefore logs into the
    same transcript, and a ``finally`` that runs twice shows up twice.
    """

    def __init__(self) -> None:
        self.token = next(_log_tokens)
        self.sink: Trace = []
        _live_logs[self.token] = self

    def append(self, item: object) -> None:
        """Record a side effect of the generator."""
        self.sink.append(("log", _frozen(item)))

    def __reduce__(self) -> tuple[Callable[[int], TraceLog], tuple[int]]:
        return (_find_log, (self.token,))

    def __copy__(self) -> TraceLog:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> TraceLog:
        return self

    def __repr__(self) -> str:
        return f"<TraceLog #{self.token}>"


class _LogPlaceholder:
    def __repr__(self) -> str:
        return "contsnap.testing.LOG"


LOG: Final = _LogPlaceholder()
"""Put ``LOG`` among the arguments given to
[`check_generator_equivalence`][contsnap.testing.check_generator_equivalence] where the
generator takes the [`TraceLog`][contsnap.testing.TraceLog] of the run."""


def _frozen(value: object) -> object:
    """A copy of ``value`` as it is now, so that later mutation cannot rewrite the transcript."""
    try:
        return copy.deepcopy(value)
    except Exception:
        return ("<not copyable>", repr(value))


# ---------------------------------------------------------------------------
# The driver.
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Comparing modes.
# ---------------------------------------------------------------------------


def _context(subject: str, actions: Sequence[object]) -> str:
    numbered = "\n".join(f"{n:4} | {line}" for n, line in enumerate(subject.splitlines(), 1))
    return f"program:\n{numbered}\nactions: {list(actions)!r}"


def _compare(
    runs: Mapping[str, Callable[[], dict[str, Trace]]],
    *,
    subject: str,
    actions: Sequence[object],
) -> dict[str, Trace]:
    """Run every mode; fail with the program and a diff where one differs from native."""
    traces: dict[str, Trace] = {}
    for mode, run in runs.items():
        try:
            traces.update(run())
        except Exception as exc:
            raise AssertionError(
                f"mode {mode!r} failed in the harness (not inside the generator):"
                f" {type(exc).__name__}: {exc}\n{_context(subject, actions)}"
            ) from exc
    reference_name = "native" if "native" in traces else next(iter(traces))
    reference = traces[reference_name]
    for name, trace in traces.items():
        if trace == reference:
            continue
        expected = [repr(event) for event in reference]
        actual = [repr(event) for event in trace]
        first = next(
            (i for i, (x, y) in enumerate(zip(expected, actual)) if x != y),
            min(len(expected), len(actual)),
        )
        diff = "\n".join(
            difflib.unified_diff(expected, actual, reference_name, name, n=4, lineterm="")
        )
        raise AssertionError(
            f"{name} transcript differs from {reference_name} at event {first}\n"
            f"{_context(subject, actions)}\n{diff}"
        )
    return traces


def _bind(args: Sequence[object], log: TraceLog) -> list[object]:
    fresh = copy.deepcopy([arg for arg in args if arg is not LOG])
    values = iter(fresh)
    return [log if arg is LOG else next(values) for arg in args]


def _check(
    genfunc_native: Callable[..., Any],
    genfunc_marked: Callable[..., Any],
    args: Sequence[object],
    actions: Sequence[object],
    *,
    subject: str,
    modes: Sequence[Mode],
    **options: Any,
) -> dict[str, Trace]:
    def runner(mode: Mode) -> Callable[[], dict[str, Trace]]:
        func = genfunc_native if mode == "native" else genfunc_marked
        return lambda: run_trace(lambda log: func(*_bind(args, log)), actions, mode=mode, **options)

    return _compare({mode: runner(mode) for mode in modes}, subject=subject, actions=actions)


def check_generator_equivalence(
    genfunc_native: Callable[..., Any],
    genfunc_marked: Callable[..., Any],
    args: Sequence[object],
    actions: Sequence[object],
    *,
    modes: Sequence[Mode] = MODES,
    fork_at: int | None = None,
    fill: Action | None = Send(None),
    max_steps: int = 10_000,
    backend: SnapshotBackend | None = None,
) -> dict[str, Trace]:
    """Assert that a generator function behaves the same natively, transformed,
    round-tripped through bytes at every suspension, and forked.

    ``genfunc_native`` is the plain function, ``genfunc_marked`` the same one under
    ``@contsnap.checkpointable``. Each run calls it with a deep copy of ``args``, where
    [`LOG`][contsnap.testing.LOG] is replaced by the run's [`TraceLog`][contsnap.testing.TraceLog].
    ``actions`` and the keywords are as for [`run_trace`][contsnap.testing.run_trace]. Returns the
    transcripts; raises ``AssertionError`` with a diff otherwise. Use it in a plain pytest test.
    """
    try:
        subject = inspect.getsource(genfunc_native)
    except (OSError, TypeError):
        subject = repr(genfunc_native)
    return _check(
        genfunc_native,
        genfunc_marked,
        args,
        actions,
        subject=subject,
        modes=modes,
        fork_at=fork_at,
        fill=fill,
        max_steps=max_steps,
        backend=backend,
    )


# ---------------------------------------------------------------------------
# Loading program text as real modules (inspect.getsource must work on them).
# ---------------------------------------------------------------------------


def _is_generator_function(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether ``yield`` occurs in the function's own scope (not in nested ones)."""
    return own_scope_yields(node.body)


def mark_generators(source: str) -> str:
    """Return ``source`` with every top-level generator function, coroutine function
    and async generator function, and every such method of a top-level class,
    decorated by ``@contsnap.checkpointable`` (outermost); ``import contsnap`` is added."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    methods = [
        member
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        for member in node.body
        if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    decorate = [
        node
        for node in [*tree.body, *methods]
        if isinstance(node, ast.AsyncFunctionDef)
        or (isinstance(node, ast.FunctionDef) and _is_generator_function(node))
    ]
    for function in sorted(decorate, key=lambda function: function.lineno, reverse=True):
        first = function.decorator_list[0] if function.decorator_list else function
        indent = " " * function.col_offset
        lines.insert(first.lineno - 1, indent + "@contsnap.checkpointable\n")
    # The import goes after the docstring and any `from __future__` import.
    first_plain = 0
    for node in tree.body:
        is_docstring = (
            node is tree.body[0]
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        )
        if not (is_docstring or (isinstance(node, ast.ImportFrom) and node.module == "__future__")):
            break
        first_plain = cast(int, node.end_lineno)
    lines.insert(first_plain, "import contsnap\n")
    return "".join(lines)


_module_serial = itertools.count()
_nonces = itertools.count(1)


@contextlib.contextmanager
def load_program(source: str, *, marked: bool = False) -> Iterator[ModuleType]:
    """Import ``source`` from a real file in a temporary directory, for the ``with`` block.

    A real file lets ``inspect.getsource`` (and so ``@checkpointable``) read the functions; the
    module is in ``sys.modules`` while the block runs, so that pickle can refer to its functions and
    classes by name. With ``marked``, the generator functions are decorated first
    ([`mark_generators`][contsnap.testing.mark_generators]).
    """
    text = mark_generators(source) if marked else source
    name = f"_contsnap_program_{next(_module_serial)}"
    with tempfile.TemporaryDirectory(prefix="contsnap-program-") as directory:
        path = Path(directory) / f"{name}.py"
        path.write_text(text, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
            yield module
        finally:
            sys.modules.pop(name, None)
            from contsnap._decorator import forget_module

            forget_module(name)  # thousands of programs must not pile up in memory


@contextlib.contextmanager
def _native_and_marked(
    source: str, modes: Sequence[str], actions: Sequence[object]
) -> Iterator[tuple[ModuleType, ModuleType]]:
    """Import ``source`` as is and, if a mode needs it, marked; set ``NONCE`` in both."""
    with contextlib.ExitStack() as stack:
        native = stack.enter_context(load_program(source))
        marked = native
        if any(mode != "native" for mode in modes):
            try:
                marked = stack.enter_context(load_program(source, marked=True))
            except Exception as exc:
                raise AssertionError(
                    f"importing the program marked @contsnap.checkpointable failed:"
                    f" {type(exc).__name__}: {exc}\n{_context(source, actions)}"
                ) from exc
        nonce = next(_nonces)
        for module in {native, marked}:
            if hasattr(module, "NONCE"):
                setattr(module, "NONCE", nonce)  # noqa: B010
        yield native, marked


def assert_equivalent(
    source_or_module: str | ModuleType,
    sends: Sequence[object],
    *,
    arg: object = 0,
    entry: str = "gen",
    modes: Sequence[Mode] = MODES,
    fork_at: int | None = None,
    fill: Action | None = Send(None),
    max_steps: int = 10_000,
) -> dict[str, Trace]:
    """Assert that ``entry(arg, log)`` of a program module gives the same transcript
    natively, transformed, round-tripped at every suspension, and forked.

    ``source_or_module`` is module source text (as
    [`generator_programs`][contsnap.testing.generator_programs] draws) or an imported module, whose
    source is re-imported twice: as is, and with its generator functions marked
    ``@contsnap.checkpointable``. ``sends`` are the driver actions, as for
    [`run_trace`][contsnap.testing.run_trace]. On a difference, the ``AssertionError`` shows the
    numbered program, the actions and a diff.

    A global ``NONCE`` in the module is set to a fresh number in both copies,
    so that a generator restored into the globals of another module (say, an
    earlier copy of the same program) logs a different one.
    """
    source = (
        source_or_module
        if isinstance(source_or_module, str)
        else inspect.getsource(source_or_module)
    )
    with _native_and_marked(source, modes, sends) as (native, marked):
        return _check(
            getattr(native, entry),
            getattr(marked, entry),
            (arg, LOG),
            sends,
            subject=source,
            modes=modes,
            fork_at=fork_at,
            fill=fill,
            max_steps=max_steps,
        )


# ---------------------------------------------------------------------------
# Coroutines and async generators, driven by hand or by asyncio.
# ---------------------------------------------------------------------------

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
    if mode != "fork":
        return {mode: trace}
    return dict(zip(("fork/original", "fork/copy"), traces))


async def _iterate(agen: Any, log: TraceLog) -> None:
    """What the asyncio mode runs an async generator in: ``async for``, logging each value."""
    async for value in agen:
        log.append(("got", value))


_marked_iterate: list[Callable[..., Any]] = []


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


def _check_async(
    native_fn: Callable[..., Any],
    marked_fn: Callable[..., Any],
    args: Sequence[object],
    actions: Sequence[object],
    *,
    subject: str,
    modes: Sequence[AsyncMode],
    pause_at: int,
    move: bool,
    **options: Any,
) -> dict[str, Trace]:
    def runner(mode: Mode) -> Callable[[], dict[str, Trace]]:
        func = native_fn if mode == "native" else marked_fn
        return lambda: run_async_trace(
            lambda log: func(*_bind(args, log)), actions, mode=mode, **options
        )

    by_hand: dict[str, Callable[[], dict[str, Trace]]] = {
        mode: runner(mode) for mode in MODES if mode in modes
    }
    traces = _compare(by_hand, subject=subject, actions=actions) if by_hand else {}
    if "asyncio" in modes:
        under_asyncio = {
            "asyncio": lambda: run_asyncio_trace(lambda log: native_fn(*_bind(args, log))),
            "asyncio/moved" if move else "asyncio/paused": lambda: run_asyncio_trace(
                lambda log: marked_fn(*_bind(args, log)), pause_at=pause_at, move=move
            ),
        }
        what = [
            f"asyncio.run; contsnap.pause() after {pause_at} turns, then "
            + ("detach and go on with the snapshot" if move else "unpause")
        ]
        traces.update(_compare(under_asyncio, subject=subject, actions=what))
    return traces


def check_coroutine_equivalence(
    native_fn: Callable[..., Any],
    marked_fn: Callable[..., Any],
    args: Sequence[object],
    actions: Sequence[object] = (),
    *,
    modes: Sequence[AsyncMode] = ASYNC_MODES,
    fork_at: int | None = None,
    fill: Action | None = Send(None),
    max_steps: int = 10_000,
    backend: SnapshotBackend | None = None,
    inside_steps: bool = True,
    pause_at: int = 1,
    move: bool = False,
) -> dict[str, Trace]:
    """Assert that a coroutine function or async generator function behaves the same
    natively, transformed, round-tripped through bytes at every suspension, forked,
    and paused in a real event loop.

    ``native_fn`` is the plain function, ``marked_fn`` the same one under
    ``@contsnap.checkpointable``; both may only await marked coroutines and contsnap's safe points.
    Arguments are as for
    [`check_generator_equivalence`][contsnap.testing.check_generator_equivalence]
    ([`LOG`][contsnap.testing.LOG] stands for the run's [`TraceLog`][contsnap.testing.TraceLog]);
    ``actions`` and the keywords up to ``inside_steps`` are as for
    [`run_async_trace`][contsnap.testing.run_async_trace]. Mode ``"asyncio"`` compares ``native_fn``
    under ``asyncio.run`` with ``marked_fn`` under ``asyncio.run``, paused after ``pause_at`` turns
    of the loop (see [`run_asyncio_trace`][contsnap.testing.run_asyncio_trace]). Returns the
    transcripts; raises ``AssertionError`` with a diff otherwise.
    """
    try:
        subject = inspect.getsource(native_fn)
    except (OSError, TypeError):
        subject = repr(native_fn)
    return _check_async(
        native_fn,
        marked_fn,
        args,
        actions,
        subject=subject,
        modes=modes,
        pause_at=pause_at,
        move=move,
        fork_at=fork_at,
        fill=fill,
        max_steps=max_steps,
        backend=backend,
        inside_steps=inside_steps,
    )


def assert_async_equivalent(
    source_or_module: str | ModuleType,
    actions: Sequence[object] = (),
    *,
    arg: object = 0,
    entry: str = "gen",
    modes: Sequence[AsyncMode] = ASYNC_MODES,
    fork_at: int | None = None,
    fill: Action | None = Send(None),
    max_steps: int = 10_000,
    inside_steps: bool = True,
    pause_at: int = 1,
    move: bool = False,
) -> dict[str, Trace]:
    """[`assert_equivalent`][contsnap.testing.assert_equivalent] for programs whose ``entry(arg,
    log)`` is a coroutine or an async generator (as
    [`coroutine_programs`][contsnap.testing.coroutine_programs] and
    [`async_generator_programs`][contsnap.testing.async_generator_programs] draw): the marked copy
    of the module has every ``async def`` marked, methods included. Keywords as for
    [`check_coroutine_equivalence`][contsnap.testing.check_coroutine_equivalence]."""
    source = (
        source_or_module
        if isinstance(source_or_module, str)
        else inspect.getsource(source_or_module)
    )
    with _native_and_marked(source, modes, actions) as (native, marked):
        return _check_async(
            getattr(native, entry),
            getattr(marked, entry),
            (arg, LOG),
            actions,
            subject=source,
            modes=modes,
            pause_at=pause_at,
            move=move,
            fork_at=fork_at,
            fill=fill,
            max_steps=max_steps,
            inside_steps=inside_steps,
        )


# ---------------------------------------------------------------------------
# Random generator programs.
# ---------------------------------------------------------------------------

_PRELUDE: Final = '''\
"""A program drawn by contsnap.testing.generator_programs()."""

import contextvars

# assert_equivalent() sets this per call: a generator restored into the globals
# of another module (an earlier copy of the same program) logs the wrong one.
NONCE = None

# set and read by the programs: a paused task keeps what it set
CV = contextvars.ContextVar("CV", default=0)


class Ctx:
    """Logs its enter and exit (with the exception type); may swallow an Exception."""

    def __init__(self, log, name, suppress):
        self.log = log
        self.name = name
        self.suppress = suppress

    def __enter__(self):
        self.log.append(("enter", self.name))
        return self.name

    def __exit__(self, exc_type, exc, tb):
        self.log.append(("exit", self.name, None if exc_type is None else exc_type.__name__))
        return self.suppress and exc_type is not None and issubclass(exc_type, Exception)


class Box:
    def __init__(self, attr):
        self.attr = attr


class Shown:
    """Logs its conversions to text: a %-format shows when it converts each item."""

    def __init__(self, log, value):
        self.log = log
        self.value = value

    def __str__(self):
        self.log.append(("str", self.value))
        return str(self.value)

    def __repr__(self):
        self.log.append(("repr", self.value))
        return repr(self.value)
'''

# Locals every generated function starts with: three ints, a list that never
# gets shorter than 3, a dict whose keys change at most once (one "grown" key:
# a loop over it then raises, as Python does), an object with an attribute, a
# list for starred targets, and objects that look into others: a live view of
# the dict's keys, a writable memoryview of a bytearray, a bound method of a set.
_LOCALS: Final = (
    "b = 1",
    "c = 2",
    "items = [3, 1, 4]",
    'table = {"k0": 0, "k1": 1, "k2": 2}',
    "box = Box(5)",
    "mid = []",
    "keys, buf = table.keys(), bytearray(b'abcdefgh')",
    "window, known = memoryview(buf)[2:6], set(items).__contains__",
)
_INTS: Final = ("a", "b", "c")
_KEYS: Final = ('"k0"', '"k1"', '"k2"')

_Lines = list[str]


def _indent(lines: _Lines) -> _Lines:
    return ["    " + line for line in lines]


@dataclasses.dataclass(frozen=True)
class _Scope:
    """What the statement builders may use at one point of a function body."""

    fresh: Callable[[str], str]  # hands out names never used before: i0, w1, err2...
    inner_cost: int = 0  # > 0: `inner` exists and costs at most this many steps
    closures: bool = False  # `bump` (writes nonlocal c) and `scale` (reads b) exist
    depth: int = 0  # nesting of compound statements
    loops: int = 0  # nesting of loops: break/continue allowed when > 0
    in_try: bool = False  # a raise here may be caught
    in_except: bool = False  # a bare `raise` would re-raise
    in_finally: bool = False  # no return/break/continue here
    ints: tuple[str, ...] = _INTS
    keys: tuple[str, ...] = _KEYS
    errors: tuple[str, ...] = ()  # bound `except ... as` names
    # The async programs: "coroutine" bodies await, "asyncgen" bodies also yield.
    dialect: Literal["sync", "coroutine", "asyncgen"] = "sync"
    callee: str = "inner"  # the helper `inner_cost` is the price of
    agen_rounds: int = 0  # > 0: the async generator `agen` exists and yields at most this often
    agen_cost: int = 0  # the steps of a whole run of `agen`
    returns: Literal["any", "int", "none"] = "any"  # what a `return` may give back

    def nested(self, **changes: Any) -> _Scope:
        return dataclasses.replace(self, depth=self.depth + 1, **changes)

    @property
    def can_yield(self) -> bool:
        """A ``yield`` may go here. Not in an async generator's ``finally``: closed by
        ``aclose()``, CPython marks it closed for good when it yields there."""
        return self.dialect == "sync" or (self.dialect == "asyncgen" and not self.in_finally)

    @property
    def can_await(self) -> bool:
        return self.dialect != "sync"


def _suspensions(text: str, scope: _Scope) -> int:
    """The most suspensions ``text`` can cause: one per yield or checkpoint, plus the
    whole run of each call of the helper ``scope.callee``."""
    calls = text.count(f"{scope.callee}(") * scope.inner_cost
    return text.count("yield") + text.count("checkpoint()") + calls


def _cost(lines: _Lines, scope: _Scope) -> int:
    """Steps a simple statement can take: one, plus one per suspension, plus helpers' runs."""
    return len(lines) + _suspensions("\n".join(lines), scope)


def _small(draw: st.DrawFn, low: int = 0, high: int = 9) -> str:
    return str(draw(st.integers(low, high)))


def _int_expr(
    draw: st.DrawFn, scope: _Scope, depth: int = 0, *, yields: bool = True, walrus: bool = True
) -> str:
    """An expression that gives an int (or raises TypeError, having received None).

    ``yields=False`` keeps suspensions out (where a step count must stay exact);
    ``walrus=False`` keeps ``:=`` out (a comprehension's iterable may not have it).
    """
    kinds = ["name", "number", "name", "lookup"]  # atoms first: they are what shrinking seeks
    if depth < 2:
        kinds += ["add", "modulo"] + ["yield"] * yields
    if depth < 1:
        kinds += ["scale", "divide", "choose", "builtin", "lambda", "comprehension"]
        kinds += ["closure"] * scope.closures + ["walrus"] * walrus + ["yield"] * yields
    kind = draw(st.sampled_from(kinds))

    def sub(*, walrus: bool = walrus) -> str:
        return _int_expr(draw, scope, depth + 1, yields=yields, walrus=walrus)

    if kind == "name":
        return draw(st.sampled_from(scope.ints))
    if kind == "number":
        return _small(draw)
    if kind == "lookup":
        lookups = ["len(items)", "box.attr", "len(mid)", *(f"table[{k}]" for k in _KEYS)]
        return draw(st.sampled_from(lookups))
    if kind == "add":
        return f"({sub()} {draw(st.sampled_from(['+', '-']))} {sub()})"
    if kind == "scale":  # bounded, however many times a loop repeats it
        return f"(({sub()} * {_small(draw, 2, 5)}) % 97)"
    if kind == "divide":  # the divisor is 1..5, never 0
        return f"({sub()} // ({sub()} % 5 + 1))"
    if kind == "modulo":
        return f"({sub()} % {_small(draw, 2, 7)})"
    if kind == "choose":
        test = _condition(draw, scope, depth + 1, yields=yields, walrus=walrus)
        return f"({sub()} if {test} else {sub()})"
    if kind == "builtin":
        name = draw(st.sampled_from(["abs", "max", "min"]))
        return f"abs({sub()})" if name == "abs" else f"{name}({sub()}, {sub()})"
    if kind == "lambda":  # the lambda reads a local, which makes that local a cell
        return f"(lambda q: q + {draw(st.sampled_from(scope.ints))})({sub()})"
    if kind == "comprehension":
        form = draw(st.integers(0, 2))
        if form == 0:
            return f"sum([q * 2 for q in range({sub(walrus=False)} % 4)])"
        if form == 1:
            return f"len([q for q in items if q and q > {draw(st.sampled_from(scope.ints))}])"
        return "sum([v for k, v in table.items() if v])"
    if kind == "closure":
        return f"{draw(st.sampled_from(['bump', 'scale']))}({sub()})"
    if kind == "walrus":
        return f"({draw(st.sampled_from(_INTS))} := {sub()})"
    # A suspension inside an expression: the partial results around it must survive.
    if scope.dialect == "sync" or (scope.can_yield and draw(st.booleans())):
        form = draw(st.integers(0, 2))
        if form == 0:
            return f"(yield {sub()})"
        if form == 1:
            return f"((yield {sub()}) or 0)"
        return "((yield) or 1)"
    return _awaited_int(draw, scope, sub)


def _awaited_int(draw: st.DrawFn, scope: _Scope, sub: Callable[[], str]) -> str:
    """An ``await`` that gives an int: of a checkpoint (None, so ``or`` a value), or of
    the helper coroutine ``scope.callee``, which returns an int."""
    forms = ["checkpoint", "checkpoint-or-1"] + ["call", "call"] * bool(scope.inner_cost)
    form = draw(st.sampled_from(forms))
    if form == "checkpoint":
        return f"(await contsnap.checkpoint() or {sub()})"
    if form == "checkpoint-or-1":
        return "((await contsnap.checkpoint()) or 1)"
    return f"(await {scope.callee}({sub()}, log))"


def _condition(
    draw: st.DrawFn, scope: _Scope, depth: int = 0, *, yields: bool = True, walrus: bool = True
) -> str:
    """A boolean expression, sometimes with a walrus or a yield in it."""
    kinds = ["compare", "parity", "truthy", "both"] + ["walrus"] * walrus + ["yield"] * yields
    kind = draw(st.sampled_from(kinds))

    def operand() -> str:
        return _int_expr(draw, scope, depth + 1, yields=yields, walrus=walrus)

    left = operand()
    if kind == "compare":
        return f"{left} {draw(st.sampled_from(['<', '>', '==', '!=', '<=']))} {operand()}"
    if kind == "parity":
        return f"{left} % 2 == 0"
    if kind == "truthy":
        return draw(st.sampled_from([left, f"not {left}"]))
    if kind == "both":
        op = draw(st.sampled_from(["and", "or"]))
        return f"{left} > {_small(draw)} {op} {operand()} < {_small(draw)}"
    if kind == "walrus":
        return f"({draw(st.sampled_from(_INTS))} := {left}) > {_small(draw, 0, 4)}"
    if scope.dialect == "sync" or (scope.can_yield and draw(st.booleans())):
        return f"(yield {left})"
    if scope.inner_cost and draw(st.booleans()):
        return f"(await {scope.callee}({left}, log)) % 2 == 1"
    return f"(await contsnap.checkpoint() is None and {left} > {_small(draw)})"


def _tag(scope: _Scope, prefix: str = "s") -> str:
    return f'"{scope.fresh(prefix)}"'


def _simple(draw: st.DrawFn, scope: _Scope) -> _Lines:
    """One line-level statement, usually with a yield somewhere in it."""
    kinds = ["log", "assign", "yield", "receive", "yield-in-expression", "augment", "yield"]
    kinds += ["receive", "yield-in-expression", "starred"]
    kinds += ["raise", "raise"] * (scope.in_try or scope.in_except)
    kinds += ["closure"] * scope.closures + ["handled"] * bool(scope.errors)
    kinds += ["delegate"] * bool(scope.inner_cost)
    kinds += ["live", "genexp"]
    if scope.can_await:
        return _simple_async(draw, scope)
    kind = draw(st.sampled_from(kinds))
    target = draw(st.sampled_from(_INTS))
    return _simple_form(draw, scope, kind, target, _int_expr(draw, scope))


def _simple_form(draw: st.DrawFn, scope: _Scope, kind: str, target: str, value: str) -> _Lines:
    """The statement of one ``kind`` of `_simple`: ``target`` is an int local that
    the statement may assign, ``value`` an int expression it may use."""
    if kind == "log":
        return [f"log.append(({_tag(scope)}, {value}))"]
    if kind == "assign":
        return [f"{target} = {value}"]
    if kind == "augment":
        return [f"{target} {draw(st.sampled_from(['+=', '-=']))} {value}"]
    if kind == "yield":
        return [draw(st.sampled_from([f"yield {value}", f"yield {_tag(scope, 'y')}", "yield"]))]
    if kind == "receive":
        place = draw(
            st.sampled_from(
                [target, "box.attr", f"table[{draw(st.sampled_from(scope.keys))}]", "items[1]"]
            )
        )
        return [
            draw(
                st.sampled_from(
                    [
                        f"{place} = yield {value}",
                        f"{place} += yield {value}",
                        f"{place} += yield",
                        f"{place} = (yield {value}) or 0",
                    ]
                )
            )
        ]
    if kind == "yield-in-expression":
        other = _int_expr(draw, scope, 1, yields=False)
        test = _condition(draw, scope)
        return [
            draw(
                st.sampled_from(
                    [
                        f"log.append(({_tag(scope)}, {other}, (yield {value})))",
                        f"{target} = {other} + (yield {value})",
                        f"{target} = items[(yield {value}) % 3]",
                        f"log.append(f'{{{other}}}:{{(yield {value})}}')",
                        f"log.append('%s|%4r' % (Shown(log, {other}), (yield {value})))",
                        f"{target} = len('<%r%%>' % ((yield {value}), Shown(log, {other})))",
                        f"{target} = (yield {value}) if {test} else (yield {other})",
                        f"log.append(({target} := (yield {value})))",
                        f"{target} = bump(1) + (yield {value})" if scope.closures else "yield",
                    ]
                )
            )
        ]
    if kind == "starred":
        first, last = draw(st.sampled_from([("a", "b"), ("b", "c"), ("c", "a")]))
        return [
            draw(
                st.sampled_from(
                    [
                        f"{first}, *mid, {last} = ({value}, (yield {first}), {_small(draw)}, 7)",
                        f"{first}, *mid = items[:3]",
                        f"*mid, {last} = [{value}, (yield)]",
                    ]
                )
            )
        ]
    if kind == "raise":
        exc = draw(
            st.sampled_from(
                [
                    f'raise ValueError("raised", {value})',
                    f'raise KeyError("k{draw(st.integers(0, 3))}")',
                    f'{target} = table["missing"]',
                    *(["raise"] if scope.in_except else []),
                ]
            )
        )
        return [f"if {_condition(draw, scope)}:", f"    {exc}"]
    if kind == "closure":
        return [
            draw(
                st.sampled_from(
                    [
                        f'log.append(("bump", bump({value})))',
                        f"{target} = scale({value})",
                    ]
                )
            )
        ]
    if kind == "handled":
        error = draw(st.sampled_from(scope.errors))
        return [f'yield ("handling", {error}.args)']
    if kind == "genexp":  # a generator expression held across a yield, read lazily after
        held = scope.fresh("lazy")
        rounds = draw(st.integers(1, 3))
        small = _small(draw)
        made, used = draw(
            st.sampled_from(
                [
                    (
                        f"(v * {small} + {target} for v in items[:{rounds}] if v != {small})",
                        f"{target} = next({held}, -1)",
                    ),
                    (
                        f"((p, q) for p in range({rounds + 1}) if p for q in range(p) if p + q)",
                        f"log.append(('pairs', next({held}, None), list({held})))",
                    ),
                    (
                        f"(w for w in (x + {target} for x in items[:{rounds}]))",
                        f"log.append(('nested', list({held})))",
                    ),
                    (
                        f"__import__('itertools').cycle(x - {small} for x in items[:{rounds}])",
                        f"log.append(('cycle', [next({held}) for _ in range({rounds + 2})]))",
                    ),
                ]
            )
        )
        return [f"{held} = {made}", f"yield {_tag(scope, 'y')}", used]
    if kind == "live":  # views must see writes made before and after a restore
        forms = [
            f"window[{value} % 4] = {value} % 256",
            f'log.append(("live", bytes(buf), list(keys), known({value})))',
            'log.append(("window", window.tolist(), len(keys)))',
            "grow",
        ]
        if scope.can_await:  # a task's context variables: pause() keeps what it set
            forms += [f"CV.set({value})", 'log.append(("cv", CV.get()))']
        live = draw(st.sampled_from(forms))
        if live == "grow":  # inside a loop over the dict, its next step raises RuntimeError
            return [f"if {_condition(draw, scope)}:", f'    table["grown"] = {value}']
        return [live]
    form = draw(st.integers(0, 2))
    if form == 2:  # held unstarted across a suspension: saved before its first step
        held = scope.fresh("held")
        return [f"{held} = inner({value}, log)", "yield", f"{target} = yield from {held}"]
    if form == 1:
        return [f"yield from inner({value}, log)"]
    return [f"{target} = yield from inner({value}, log)"]


def _simple_async(draw: st.DrawFn, scope: _Scope) -> _Lines:
    """One line-level statement of an async function, usually with an ``await`` in it
    (and, in an async generator, often a ``yield``)."""
    kinds = ["log", "assign", "augment", "checkpoint", "checkpoint", "receive", "receive"]
    kinds += ["await-in-expression", "await-in-expression", "await-in-expression", "starred"]
    kinds += ["raise", "raise"] * (scope.in_try or scope.in_except)
    kinds += ["closure"] * scope.closures + ["handled"] * bool(scope.errors)
    kinds += ["delegate"] * bool(scope.inner_cost)
    kinds += ["live"]
    if scope.can_yield:
        kinds += ["yield", "yield", "receive-yield", "yield-in-expression"]
    kind = draw(st.sampled_from(kinds))
    target = draw(st.sampled_from(_INTS))
    value = _int_expr(draw, scope)
    callee = scope.callee
    calls = bool(scope.inner_cost)
    simple = ("log", "assign", "augment", "raise", "closure", "yield", "yield-in-expression")
    if kind in (*simple, "live"):
        return _simple_form(draw, scope, kind, target, value)
    if kind == "receive-yield":
        return _simple_form(draw, scope, "receive", target, value)
    if kind == "checkpoint":
        return ["await contsnap.checkpoint()"]
    if kind == "receive":
        place = draw(
            st.sampled_from(
                [target, "box.attr", f"table[{draw(st.sampled_from(scope.keys))}]", "items[1]"]
            )
        )
        forms = [
            f"{place} = await contsnap.checkpoint() or {value}",
            f"{place} += (await contsnap.checkpoint()) or 1",
        ]
        if calls:
            forms += [
                f"{place} = await {callee}({value}, log)",
                f"{place} += await {callee}({value}, log)",
                f"{place} -= await {callee}({value}, log)",
            ]
        return [draw(st.sampled_from(forms))]
    if kind == "await-in-expression":
        other = _int_expr(draw, scope, 1, yields=False)
        test = _condition(draw, scope)
        awaited = _awaited_int(draw, scope, lambda: value)
        forms = [
            f"log.append(({_tag(scope)}, {other}, await contsnap.checkpoint()))",
            f"log.append(({_tag(scope)}, {other}, {awaited}))",
            f"{target} = {other} + {awaited}",
            f"{target} = max({other}, {awaited})",
            f"{target} = items[{awaited} % 3]",
            f"log.append(f'{{{other}}}:{{{awaited}}}')",
            f"log.append('%s|%4r' % (Shown(log, {other}), {awaited}))",
            f"{target} = {awaited} if {test} else {other}",
            f"{target} = {other} if {test} else {awaited}",
            f"log.append(({target} := {awaited}))",
            f"{target} = bump(1) + {awaited}" if scope.closures else f"{target} -= {awaited}",
        ]
        if scope.can_yield:  # a yield and an await in one expression
            forms += [f"{target} = (yield {value}) if {test} else {awaited}"]
        return [draw(st.sampled_from(forms))]
    if kind == "starred":
        first, last = draw(st.sampled_from([("a", "b"), ("b", "c"), ("c", "a")]))
        pause = "(await contsnap.checkpoint() or 4)"
        return [
            draw(
                st.sampled_from(
                    [
                        f"{first}, *mid, {last} = ({value}, {pause}, {_small(draw)}, 7)",
                        f"{first}, *mid = items[:3]",
                        f"*mid, {last} = [await contsnap.checkpoint(), {value}]",
                    ]
                )
            )
        ]
    if kind == "handled":
        error = draw(st.sampled_from(scope.errors))
        forms = [f'log.append(("handling", {error}.args, await contsnap.checkpoint()))']
        if scope.can_yield:
            forms.append(f'yield ("handling", {error}.args)')
        return [draw(st.sampled_from(forms))]
    form = draw(
        st.sampled_from(
            [
                f"{target} = await {callee}({value}, log)",
                f"await {callee}({value}, log)",
                f'log.append(("result", await {callee}({value}, log)))',
                "held",
            ]
        )
    )
    if form == "held":  # held unstarted across a checkpoint: saved before its first step
        held = scope.fresh("held")
        return [
            f"{held} = {callee}({value}, log)",
            "await contsnap.checkpoint()",
            f"{target} = await {held}",
        ]
    return [form]


def _block(
    draw: st.DrawFn, scope: _Scope, budget: int, least: int = 1, most: int = 3
) -> tuple[_Lines, int]:
    """A list of ``least`` to ``most`` statements that takes at most ``budget`` steps."""
    lines: _Lines = []
    cost = 0
    for _ in range(draw(st.integers(least, most))):
        if cost >= budget:
            break
        statement, spent = _statement(draw, scope, budget - cost)
        lines += statement
        cost += spent
    if not any(_suspends(line) for line in lines) and cost + 2 <= budget:
        lines.append(_pause(draw, scope))  # so that every clause can be resumed in
        cost += 2
    return (lines or ["pass"]), max(cost, 1)


def _suspends(line: str) -> bool:
    return "yield" in line or "await " in line or line.lstrip().startswith("async ")


def _pause(draw: st.DrawFn, scope: _Scope) -> str:
    """A statement that only suspends."""
    if scope.dialect == "sync" or (scope.can_yield and draw(st.booleans())):
        return f"yield {_tag(scope, 'y')}"
    return "await contsnap.checkpoint()"


def _statement(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    """One statement, simple or compound, and the most steps it can take (<= ``budget``)."""
    kinds = ["simple", "simple", "simple", "simple"]
    if scope.depth < 3 and budget >= 8:
        kinds += ["if", "try", "with", "match"]
        if scope.loops < 2:
            kinds += ["while", "for"]
    if scope.loops and not scope.in_finally:
        kinds += ["jump"]
    if scope.depth and not scope.in_finally:  # an early return at the top would cut it short
        kinds += ["return"]
    kind = draw(st.sampled_from(kinds))
    if kind in _COMPOUND:
        lines, spent = _COMPOUND[kind](draw, scope, budget)
    else:
        if kind == "simple":
            lines = _simple(draw, scope)
        elif kind == "jump":
            jump = draw(st.sampled_from(["break", "continue"]))
            lines = [f"if {_condition(draw, scope)}:", f"    {jump}"]
        elif scope.returns == "none":  # an async generator: a bare return
            lines = [f"if {_condition(draw, scope)}:", "    return"]
        else:
            value = _int_expr(draw, scope)
            if scope.returns == "any":
                value = draw(st.sampled_from([value, f'("early", {value})']))
            lines = [f"if {_condition(draw, scope)}:", f"    return {value}"]
        spent = _cost(lines, scope)
    if spent > budget:  # too dear here: a cheap statement instead
        return [f"log.append({_tag(scope)})"], 1
    return lines, spent


def _if(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    inside = scope.nested()
    branches = draw(st.integers(1, 3))
    lines: _Lines = []
    tests_cost = 0
    bodies_cost = 0
    share = max(1, budget // 2)
    for number in range(branches):
        test = _condition(draw, scope)
        tests_cost += 1 + _suspensions(test, scope)
        body, spent = _block(draw, inside, share)
        bodies_cost = max(bodies_cost, spent)
        lines += [f"{'if' if number == 0 else 'elif'} {test}:", *_indent(body)]
    if draw(st.booleans()):
        body, spent = _block(draw, inside, share)
        bodies_cost = max(bodies_cost, spent)
        lines += ["else:", *_indent(body)]
    return lines, tests_cost + bodies_cost


def _loop_share(budget: int, rounds: int, overhead: int) -> int:
    """The budget of one round of a loop body (or of its `else`), when each round
    also spends ``overhead`` steps on the loop's own test and bookkeeping."""
    return max(1, budget // (rounds + 1) - overhead)


def _while(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    counter = scope.fresh("w")
    rounds = draw(st.integers(1, 4))
    test = f"{counter} < {rounds}"
    if draw(st.booleans()):  # the counter still bounds it; the test may also yield
        test += f" and ({_condition(draw, scope)})"
    overhead = 2 + _suspensions(test, scope)  # the test and the counter's increment
    share = _loop_share(budget - 1, rounds, overhead)
    body, spent = _block(draw, scope.nested(loops=scope.loops + 1), share)
    lines = [f"{counter} = 0", f"while {test}:", f"    {counter} += 1", *_indent(body)]
    cost = 1 + (rounds + 1) * overhead + rounds * spent
    if draw(st.booleans()):
        tail, tail_cost = _block(draw, scope.nested(), share, most=1)
        lines += ["else:", *_indent(tail)]
        cost += tail_cost
    return lines, cost


def _for(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    rounds = draw(st.integers(1, 4))
    item = scope.fresh("i")
    value = scope.fresh("v")
    ints = (*scope.ints, item)
    keys = scope.keys
    sources = ["range", "range-of", "items", "table", "enumerate", "zip", "genexp"]
    if scope.dialect == "sync" and scope.inner_cost and scope.inner_cost * 2 < budget:
        sources += ["inner", "inner", "inner"]
    if scope.agen_rounds and scope.agen_cost * 2 < budget:
        sources += ["agen", "agen", "agen"]
    source = draw(st.sampled_from(sources))
    header_cost = 1
    if source == "range":
        header = f"for {item} in range({rounds}):"
    elif source == "range-of":
        header = f"for {item} in range({_int_expr(draw, scope, 1)} % {rounds + 1}):"
        header_cost += _suspensions(header, scope)
    elif source == "items":
        header = f"for {item} in items[:{rounds}]:"
    elif source == "table":
        rounds = 3
        header = f"for {item}, {value} in table.items():"
        ints, keys = (*scope.ints, value), (*scope.keys, item)
    elif source == "enumerate":
        header = f"for {item}, {value} in enumerate(items[:{rounds}]):"
        ints = (*ints, value)
    elif source == "zip":
        header = f"for {item}, {value} in zip(range({rounds}), items):"
        ints = (*ints, value)
    elif source == "genexp":  # the loop's iterator is a generator expression, held across
        header = f"for {item} in (g * {_small(draw)} for g in range({rounds}) if g != 1):"
    elif source == "agen":  # an async for: each value the async generator yields is a round
        rounds = scope.agen_rounds
        header = f"async for {item} in agen({_int_expr(draw, scope, 1, yields=False)}, log):"
        header_cost += scope.agen_cost
    else:  # iterate a generator: each of its yields is a round
        rounds = scope.inner_cost
        header = f"for {item} in inner({_int_expr(draw, scope, 1, yields=False)}, log):"
        header_cost += scope.inner_cost
    inside = scope.nested(loops=scope.loops + 1, ints=ints, keys=keys)
    share = _loop_share(budget - header_cost, rounds, 1)
    body, spent = _block(draw, inside, share)
    lines = [header, *_indent(body)]
    cost = header_cost + rounds * (spent + 1)
    if draw(st.booleans()):
        tail, tail_cost = _block(draw, scope.nested(), share, most=1)
        lines += ["else:", *_indent(tail)]
        cost += tail_cost
    return lines, cost


def _try(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    handlers = draw(
        st.lists(
            st.sampled_from(["ValueError", "KeyError", "both", "Exception"]),
            max_size=2,
            unique=True,
        )
    )
    has_else = bool(handlers) and draw(st.booleans())
    has_finally = not handlers or draw(st.booleans())
    share = max(1, budget // (2 + len(handlers) + has_else + has_finally))
    body, cost = _block(draw, scope.nested(in_try=True), share)
    lines = ["try:", *_indent(body)]
    for caught in handlers:
        error = scope.fresh("err")
        clause = "(ValueError, KeyError)" if caught == "both" else caught
        handler_scope = scope.nested(in_except=True, errors=(*scope.errors, error))
        handler, spent = _block(draw, handler_scope, share)
        lines += [
            f"except {clause} as {error}:",
            f'    log.append(("caught", type({error}).__name__, {error}.args))',
            *_indent(handler),
        ]
        cost += spent + 1
    if has_else:
        tail, spent = _block(draw, scope.nested(), share)
        lines += ["else:", *_indent(tail)]
        cost += spent
    if has_finally:
        cleanup, spent = _block(draw, scope.nested(in_finally=True, in_except=False), share)
        lines += ["finally:", *_indent(cleanup)]
        cost += spent
    return lines, cost


def _with(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    asynchronous = scope.can_await and draw(st.booleans())
    managers = []
    pauses = 0  # an `ACtx` that pauses awaits a checkpoint in __aenter__ and __aexit__
    for _ in range(draw(st.integers(1, 2))):
        label = scope.fresh("cm")
        names = [f'"{label}"'] + [f'(yield "{label}")'] * scope.can_yield
        names += [f'("{label}", await contsnap.checkpoint())'] * scope.can_await
        name = draw(st.sampled_from(names))
        if asynchronous:
            pause = draw(st.booleans())
            pauses += 2 * pause
            managers.append(f"ACtx(log, {name}, {draw(st.booleans())}, {pause})")
        else:
            managers.append(f"Ctx(log, {name}, {draw(st.booleans())})")
    bound = scope.fresh("name")
    header = f"{'async ' * asynchronous}with {', '.join(managers)} as {bound}:"
    body, spent = _block(draw, scope.nested(), budget - 3 - pauses)
    lines = [header, f'    log.append(("inside", {bound}))', *_indent(body)]
    return lines, spent + 3 + pauses + _suspensions(header, scope)


def _match(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    shape = draw(st.sampled_from(["int", "pair", "table"]))
    first, second = scope.fresh("m"), scope.fresh("m")
    if shape == "int":
        subject = _int_expr(draw, scope)
        patterns = [
            (_small(draw), ()),
            (f"{_small(draw)} | {_small(draw)}", ()),
            (f"int({first}) if {first} > {_small(draw)}", (first,)),
            ("None", ()),
        ]
    elif shape == "pair":
        subject = f"({_int_expr(draw, scope)}, {_int_expr(draw, scope)})"
        patterns = [
            (f"({_small(draw)}, {first})", (first,)),
            (
                f"({first}, {second}) if {first} is not None and {second} is not None"
                f" and {first} > {second}",
                (first, second),
            ),
            (f"[{first}, *rest]", (first,)),
        ]
    else:
        subject = "table"
        patterns = [
            (f'{{"k0": {first}}} if {first}', (first,)),
            ('{"k1": 1 | 2}', ()),
        ]
    chosen = draw(st.lists(st.sampled_from(patterns), min_size=1, max_size=3, unique=True))
    share = max(1, budget // (len(chosen) + 2))
    lines = [f"match {subject}:"]
    cost = 1 + _suspensions(subject, scope)
    bodies_cost = 0
    for pattern, captured in chosen:
        if draw(st.integers(0, 3)) == 0 and " if " not in pattern:  # a guard that yields
            pattern += f" if {_condition(draw, scope)}"
        cost += _suspensions(pattern, scope)
        body, spent = _block(draw, scope.nested(ints=(*scope.ints, *captured)), share)
        bodies_cost = max(bodies_cost, spent)
        lines += [f"    case {pattern}:", *_indent(_indent(body))]
    if draw(st.booleans()):
        body, spent = _block(draw, scope.nested(), share)
        bodies_cost = max(bodies_cost, spent)
        lines += ["    case _:", *_indent(_indent(body))]
    return lines, cost + bodies_cost


_COMPOUND: Final[dict[str, Callable[[st.DrawFn, _Scope, int], tuple[_Lines, int]]]] = {
    "if": _if,
    "while": _while,
    "for": _for,
    "try": _try,
    "with": _with,
    "match": _match,
}

_CLOSURES: Final = (
    "def bump(step):",
    "    nonlocal c",
    "    c = c + step",
    "    return c",
    "scale = lambda x: x * 2 + b",
)


def _function(
    draw: st.DrawFn, name: str, parameter: str, scope: _Scope, budget: int
) -> tuple[_Lines, int]:
    """``def name(parameter, log):`` with the standard locals, a random body and a return
    (``async def`` in the async dialects)."""
    preamble = [f"a = {parameter}", *_LOCALS]
    preamble.append(f'log.append(("start", "{name}", a))')
    if scope.can_await:
        preamble.append("CV.set(0)")  # every run starts from the same context value
    if scope.closures:
        preamble += _CLOSURES
    if scope.returns == "none":
        ending = "return"
    elif scope.returns == "int":
        ending = f"return {_int_expr(draw, scope)}"
    else:
        ending = draw(st.sampled_from(["return (a, b, c)", "return", "return {}"]))
        if "{}" in ending:
            ending = ending.format(_int_expr(draw, scope))
    fixed_cost = len(preamble) + 3 + _suspensions(ending, scope)
    body, cost = _block(draw, scope, budget - fixed_cost, least=2, most=6)
    if scope.dialect != "coroutine" and not any("yield" in line for line in body):
        body.append(f"yield {_tag(scope, 'y')}")  # it must stay a generator function
    body.append('log.append(("nonce", NONCE))')
    define = f"{'async ' * scope.can_await}def {name}({parameter}, log):"
    lines = [define, *_indent([*preamble, *body, ending])]
    return lines, fixed_cost + cost


@st.composite
def generator_programs(draw: st.DrawFn, max_steps: int = 200) -> str:
    """Source text of a module defining ``def gen(arg, log):``, a random generator function.

    Its body mixes assignments and int arithmetic; if/elif/else; ``while``
    loops with counters and ``for`` loops over ``range``, list slices,
    ``dict.items()``, ``enumerate``, ``zip`` and the generator ``inner``; break
    and continue; loop ``else``; try/except/else/finally with yields in every
    clause, deliberate ``ValueError``/``KeyError`` and bare re-raise; ``with``
    over a logging context manager that sometimes swallows the exception;
    match/case with guards; ``yield`` inside call arguments, operators,
    subscripts, f-strings, %-formats (beside an item that logs when it is
    converted), conditional expressions, walrus and augmented assignments (to
    names, attributes, items); starred assignment; a closure writing a
    ``nonlocal`` and lambdas reading locals (cell variables); list
    comprehensions; generator expressions held across a yield and read after it
    (one ``for``, several, nested, under ``itertools.cycle``, a ``for`` loop's own
    iterable); early ``return``; ``yield from inner(...)``, where
    ``inner(n, log)`` is a second, smaller random generator function at module
    level (defined when ``gen`` calls it), also held unstarted across a yield
    first. Every function appends its side effects to ``log``. Each function also
    holds objects that look into others across its yields: a live
    ``table.keys()`` view, a writable ``memoryview`` of a ``bytearray`` written
    through, a set's bound ``__contains__``; and its ``table`` may grow by one key,
    so that a loop over it raises "dictionary changed size during iteration".

    Loops are bounded, so a run takes at most about ``max_steps`` statements
    whatever is sent in; division is never by zero. The module is valid
    Python 3.10 and iterates no set or hash order, so native runs are
    deterministic.
    """
    counter = itertools.count()

    def fresh(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    inner_budget = max_steps // 10 + 14  # about a dozen of its steps are its preamble
    inner_lines, inner_cost = _function(draw, "inner", "n", _Scope(fresh=fresh), inner_budget)
    gen_scope = _Scope(fresh=fresh, inner_cost=inner_cost, closures=draw(st.booleans()))
    gen_lines, _ = _function(draw, "gen", "arg", gen_scope, max_steps - inner_cost)
    if any("inner(" in line for line in gen_lines):  # else it never runs: leave it out
        gen_lines = [*inner_lines, "", "", *gen_lines]
    return "\n".join([_PRELUDE, "", *gen_lines, ""])


# ---------------------------------------------------------------------------
# Random coroutine and async generator programs.
# ---------------------------------------------------------------------------

_ACTX: Final = '''

class ACtx:
    """Logs its async enter and exit; may swallow an Exception; with `pauses`, awaits a
    checkpoint in both (so a marked program marks these methods too)."""

    def __init__(self, log, name, suppress, pauses):
        self.log = log
        self.name = name
        self.suppress = suppress
        self.pauses = pauses

    async def __aenter__(self):
        self.log.append(("aenter", self.name))
        if self.pauses:
            await contsnap.checkpoint()
        return self.name

    async def __aexit__(self, exc_type, exc, tb):
        self.log.append(("aexit", self.name, None if exc_type is None else exc_type.__name__))
        if self.pauses:
            await contsnap.checkpoint()
        return self.suppress and exc_type is not None and issubclass(exc_type, Exception)
'''

# The sync prelude after its docstring line, with the import the awaits need and ACtx.
_ASYNC_PRELUDE: Final = (
    '"""A program drawn by contsnap.testing.{strategy}()."""\n\nimport contsnap\n'
    + _PRELUDE.split("\n", 1)[1]
    + _ACTX
)


def _leaf(draw: st.DrawFn) -> tuple[_Lines, int]:
    """``async def leaf(n, log)``: the innermost coroutine of an await chain. It awaits one
    or two checkpoints, may raise ``KeyError`` and may log in a ``finally``."""
    pauses = draw(st.integers(1, 2))
    body = ["await contsnap.checkpoint()"] * pauses
    if draw(st.booleans()):
        body += [f"if n % 5 == {_small(draw, 0, 4)}:", '    raise KeyError("leaf")']
    if draw(st.booleans()):
        body = ["try:", *_indent(body), "finally:", '    log.append(("leaf end", n))']
    result = draw(st.sampled_from(["n * 3 % 11", "n // 2 - 1", "abs(n) + 1"]))
    lines = [
        "async def leaf(n, log):",
        *_indent(['log.append(("leaf", n))', *body, f"return {result}"]),
    ]
    return lines, len(lines) + pauses


def _agen(draw: st.DrawFn, leaf_cost: int) -> tuple[_Lines, int, int]:
    """``async def agen(n, log)``: an async generator for ``async for``, yielding one to
    three values with checkpoints around them; it may await ``leaf``, raise
    ``ValueError`` and await in its ``finally``. Returns its lines, the most values it
    yields and the most steps a whole run takes."""
    rounds = draw(st.integers(1, 3))
    received = draw(
        st.sampled_from(
            [
                "got = yield n + k",
                "got = yield k * 2",
                "got = yield (await contsnap.checkpoint() or k)",
            ]
        )
    )
    loop = ["await contsnap.checkpoint()"] * draw(st.booleans()) + [received]
    loop.append('log.append(("agen got", k, got))')
    once = 0
    if draw(st.booleans()):
        loop += [f"if k == {_small(draw, 0, rounds - 1)}:", "    await leaf(n + k, log)"]
        once = leaf_cost
    if draw(st.booleans()):
        loop += [f"if n + k == {_small(draw, 0, 5)}:", '    raise ValueError("agen", k)']
    cleanup = ['log.append(("agen end", n))']
    cleanup += ["await contsnap.checkpoint()"] * draw(st.booleans())
    body = [
        'log.append(("start", "agen", n))',
        "try:",
        f"    for k in range({rounds}):",
        *_indent(_indent(loop)),
        "finally:",
        *_indent(cleanup),
    ]
    loop_text = "\n".join(loop)
    per_round = 1 + len(loop) + loop_text.count("yield") + loop_text.count("checkpoint()")
    cost = 4 + rounds * per_round + once + 2 * len(cleanup)
    return ["async def agen(n, log):", *_indent(body)], rounds, cost


def _async_program(
    draw: st.DrawFn, dialect: Literal["coroutine", "asyncgen"], max_steps: int
) -> str:
    counter = itertools.count()

    def fresh(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    leaf_lines, leaf_cost = _leaf(draw)
    inner_scope = _Scope(
        fresh=fresh, dialect="coroutine", callee="leaf", inner_cost=leaf_cost, returns="int"
    )
    inner_budget = max_steps // 10 + 14  # about a dozen of its steps are its preamble
    inner_lines, inner_cost = _function(draw, "inner", "n", inner_scope, inner_budget)
    agen_lines, agen_rounds, agen_cost = _agen(draw, leaf_cost)
    gen_scope = _Scope(
        fresh=fresh,
        inner_cost=inner_cost,
        closures=draw(st.booleans()),
        dialect=dialect,
        agen_rounds=agen_rounds,
        agen_cost=agen_cost,
        returns="none" if dialect == "asyncgen" else "any",
    )
    gen_lines, _ = _function(draw, "gen", "arg", gen_scope, max_steps - inner_cost)
    helpers: list[_Lines] = []
    # Only the helpers that run: an unused one would be noise in every failure report.
    if any("inner(" in line for line in gen_lines):
        helpers.append(inner_lines)
    if any("agen(" in line for line in gen_lines):
        helpers.append(agen_lines)
    if any("leaf(" in line for lines in helpers for line in lines):
        helpers.insert(0, leaf_lines)
    strategy = "coroutine_programs" if dialect == "coroutine" else "async_generator_programs"
    lines = [_ASYNC_PRELUDE.replace("{strategy}", strategy).rstrip("\n")]
    for helper in [*helpers, gen_lines]:
        lines += ["", "", *helper]
    return "\n".join([*lines, ""])


@st.composite
def coroutine_programs(draw: st.DrawFn, max_steps: int = 200) -> str:
    """Source text of a module defining ``async def gen(arg, log):``, a random coroutine.

    ``gen`` is built from the statements of
    [`generator_programs`][contsnap.testing.generator_programs] (loops, try/except/else/finally,
    ``with``, match, closures, comprehensions, early ``return``, raised exceptions...) with
    ``await`` where those have ``yield``: ``await contsnap.checkpoint()`` as a statement and inside
    call arguments, operators, subscripts, f-strings, %-formats, conditional expressions, walrus,
    starred and augmented assignments (to names, attributes, items), ``while`` tests, ``match``
    guards and ``with`` headers. It also awaits ``inner(n, log)``, a smaller random coroutine that
    may await ``leaf(n, log)`` (so await chains are three deep: ``x += await inner(...)``),
    sometimes held unstarted across a checkpoint first; iterates ``async for v in agen(n, log)``,
    an async generator, with break/continue/else; and enters ``async with ACtx(...)``, an async
    context manager that logs its enter and exit, may swallow the exception and may await a
    checkpoint in ``__aenter__``/``__aexit__``. Helpers appear only when used; every function
    appends its side effects to ``log``.
    It sets and reads ``CV``, a module-level ``ContextVar`` (a task paused by
    [`contsnap.pause`][contsnap.pause] keeps what it set).

    The program imports ``contsnap`` for the checkpoints but marks nothing
    ([`assert_async_equivalent`][contsnap.testing.assert_async_equivalent] imports a marked copy
    too). Only ``contsnap.checkpoint()`` suspends, so a run needs no event loop: a driver calling
    ``send(None)`` steps it. A run takes at most about ``max_steps`` statements; the module is valid
    Python 3.10.
    """
    return _async_program(draw, "coroutine", max_steps)


@st.composite
def async_generator_programs(draw: st.DrawFn, max_steps: int = 200) -> str:
    """Like [`coroutine_programs`][contsnap.testing.coroutine_programs], but ``gen`` is an async
    generator: it also yields (statements, received values in expressions, in ``with`` headers, in
    exception handlers), and returns nothing. It never yields inside a ``finally`` (closed by
    ``aclose()`` there, CPython marks an async generator closed for good); it awaits there instead.
    """
    return _async_program(draw, "asyncgen", max_steps)
