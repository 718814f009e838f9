"""Hypothesis strategies and a differential harness for checkpointable generators.

The strongest test of contsnap runs one generator program natively, transformed
by ``@checkpointable``, transformed with a snapshot/restore at every suspension,
and forked half-way, and compares everything a user can observe: yielded
values, return value, exceptions and side effects. This module provides the
pieces:

* :func:`generator_programs` writes random generator-function modules that use
  most of the statement and expression forms of Python 3.10, and always
  terminate within a bounded number of steps;
* :func:`sent_values` and :func:`driver_actions` draw what the driver does to a
  paused generator (send, throw, close), as plain data so that every mode
  replays the same actions;
* :func:`run_trace` drives a generator and records a transcript;
  :func:`assert_equivalent` and :func:`check_generator_equivalence` compare the
  transcripts of every mode and fail with a readable diff.

It imports ``hypothesis`` at the top, so import it only from tests; contsnap
itself is imported lazily, when a mode needs it.
"""

from __future__ import annotations

import ast
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

__all__ = [
    "LOG",
    "MODES",
    "Action",
    "Close",
    "Event",
    "Mode",
    "Send",
    "SnapshotBackend",
    "Throw",
    "Trace",
    "TraceLog",
    "assert_equivalent",
    "check_generator_equivalence",
    "driver_actions",
    "generator_programs",
    "load_program",
    "mark_generators",
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


@dataclasses.dataclass(frozen=True)
class Throw:
    """Resume the generator by raising ``exc_type(*args)`` at the paused ``yield``."""

    exc_type: type[BaseException] = ValueError
    args: tuple[object, ...] = ("thrown",)


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
"""Put ``LOG`` among the arguments given to :func:`check_generator_equivalence`
where the generator takes the :class:`TraceLog` of the run."""


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


def _record_step(trace: Trace, resume: Callable[[], object]) -> bool:
    """Resume the generator once; record what came out. True while it is still suspended."""
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
    trace.append(("yield", _frozen(value)))
    return True


def _apply(gen: Any, action: Action, trace: Trace) -> bool:
    """Perform one driver action on a suspended generator; True if it is suspended again."""
    if isinstance(action, Send):
        trace.append(("send", _frozen(action.value)))
        return _record_step(trace, lambda: gen.send(action.value))
    if isinstance(action, Throw):
        trace.append(("throw", action.exc_type.__name__, _frozen(action.args)))
        return _record_step(trace, lambda: gen.throw(action.exc_type(*action.args)))
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
    """The fixed parameters of one :func:`run_trace` call."""

    actions: list[Action]
    fill: Action | None
    max_steps: int
    roundtrip: bool
    backend: SnapshotBackend | None
    log: TraceLog

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
            if not _apply(gen, self.action_at(position), trace):
                break
            position += 1
        # A generator whose `finally` yielded during close() is still suspended; Python
        # would close it again whenever it is freed. Do that now, so that it happens at
        # the same point of the transcript in every mode.
        for _ in range(self.max_steps):
            if getattr(gen, "gi_frame", None) is None:
                break
            _apply(gen, Close(), trace)
        return [trace]

    def _discard(self, gen: Any) -> None:
        """End a generator the harness gave up on, unheard, so that it cannot write into a
        later transcript when it is freed (a ``finally`` that yields needs several closes)."""
        sink, self.log.sink = self.log.sink, []
        try:
            for _ in range(self.max_steps):
                if getattr(gen, "gi_frame", None) is None:
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

    ``sends`` lists driver actions (:class:`Send`, :class:`Throw`, :class:`Close`;
    a bare value means ``Send(value)``). The generator is primed with ``next()``
    first; when the actions run out, ``fill`` is applied until the generator
    ends (``None``: close it), and ``max_steps`` actions in total stop a
    generator that does not end.

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
    runs: Mapping[Mode, Callable[[], dict[str, Trace]]],
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

    ``genfunc_native`` is the plain function, ``genfunc_marked`` the same one
    under ``@contsnap.checkpointable``. Each run calls it with a deep copy of
    ``args``, where :data:`LOG` is replaced by the run's :class:`TraceLog`.
    ``actions`` and the keywords are as for :func:`run_trace`. Returns the
    transcripts; raises ``AssertionError`` with a diff otherwise. Use it in a
    plain pytest test.
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


def _is_generator_function(node: ast.FunctionDef) -> bool:
    """Whether ``yield`` occurs in the function's own scope (not in nested ones)."""
    pending: list[ast.AST] = list(node.body)
    while pending:
        child = pending.pop()
        if isinstance(child, (ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            pending.extend(ast.iter_child_nodes(child))
    return False


def mark_generators(source: str) -> str:
    """Return ``source`` with every top-level generator function decorated by
    ``@contsnap.checkpointable`` (outermost) and ``import contsnap`` added."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    decorate = [
        (node.decorator_list[0] if node.decorator_list else node).lineno
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and _is_generator_function(node)
    ]
    for lineno in sorted(decorate, reverse=True):
        lines.insert(lineno - 1, "@contsnap.checkpointable\n")
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

    A real file lets ``inspect.getsource`` (and so ``@checkpointable``) read the
    functions; the module is in ``sys.modules`` while the block runs, so that
    pickle can refer to its functions and classes by name. With ``marked``,
    the generator functions are decorated first (:func:`mark_generators`).
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

    ``source_or_module`` is module source text (as :func:`generator_programs`
    draws) or an imported module, whose source is re-imported twice: as is, and
    with its generator functions marked ``@contsnap.checkpointable``. ``sends``
    are the driver actions, as for :func:`run_trace`. On a difference, the
    ``AssertionError`` shows the numbered program, the actions and a diff.

    A global ``NONCE`` in the module is set to a fresh number in both copies,
    so that a generator restored into the globals of another module (say, an
    earlier copy of the same program) logs a different one.
    """
    source = (
        source_or_module
        if isinstance(source_or_module, str)
        else inspect.getsource(source_or_module)
    )
    with contextlib.ExitStack() as stack:
        native = stack.enter_context(load_program(source))
        marked = native
        if any(mode != "native" for mode in modes):
            try:
                marked = stack.enter_context(load_program(source, marked=True))
            except Exception as exc:
                raise AssertionError(
                    f"importing the program marked @contsnap.checkpointable failed:"
                    f" {type(exc).__name__}: {exc}\n{_context(source, sends)}"
                ) from exc
        nonce = next(_nonces)
        for module in {native, marked}:
            if hasattr(module, "NONCE"):
                setattr(module, "NONCE", nonce)  # noqa: B010
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
# Random generator programs.
# ---------------------------------------------------------------------------

_PRELUDE: Final = '''\
"""A program drawn by contsnap.testing.generator_programs()."""

# assert_equivalent() sets this per call: a generator restored into the globals
# of another module (an earlier copy of the same program) logs the wrong one.
NONCE = None


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
'''

# Locals every generated function starts with: three ints, a list that never
# gets shorter than 3, a dict whose keys never change (so loops over it are
# safe), an object with an attribute, and a list for starred targets.
_LOCALS: Final = (
    "b = 1",
    "c = 2",
    "items = [3, 1, 4]",
    'table = {"k0": 0, "k1": 1, "k2": 2}',
    "box = Box(5)",
    "mid = []",
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

    def nested(self, **changes: Any) -> _Scope:
        return dataclasses.replace(self, depth=self.depth + 1, **changes)


def _cost(lines: _Lines, scope: _Scope) -> int:
    """Steps a simple statement can take: one, plus one per yield, plus `inner`'s run."""
    text = "\n".join(lines)
    return len(lines) + text.count("yield") + text.count("inner(") * scope.inner_cost


def _small(draw: st.DrawFn, low: int = 0, high: int = 9) -> str:
    return str(draw(st.integers(low, high)))


def _int_expr(
    draw: st.DrawFn, scope: _Scope, depth: int = 0, *, yields: bool = True, walrus: bool = True
) -> str:
    """An expression that gives an int (or raises TypeError, having received None).

    ``yields=False`` keeps ``yield`` out (where a step count must stay exact);
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
    # A yield inside an expression: the partial results around it must survive.
    form = draw(st.integers(0, 2))
    if form == 0:
        return f"(yield {sub()})"
    if form == 1:
        return f"((yield {sub()}) or 0)"
    return "((yield) or 1)"


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
    return f"(yield {left})"


def _tag(scope: _Scope, prefix: str = "s") -> str:
    return f'"{scope.fresh(prefix)}"'


def _simple(draw: st.DrawFn, scope: _Scope) -> _Lines:
    """One line-level statement, usually with a yield somewhere in it."""
    kinds = ["log", "assign", "yield", "receive", "yield-in-expression", "augment", "yield"]
    kinds += ["receive", "yield-in-expression", "starred"]
    kinds += ["raise", "raise"] * (scope.in_try or scope.in_except)
    kinds += ["closure"] * scope.closures + ["handled"] * bool(scope.errors)
    kinds += ["delegate"] * bool(scope.inner_cost)
    kind = draw(st.sampled_from(kinds))
    target = draw(st.sampled_from(_INTS))
    value = _int_expr(draw, scope)
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
    return [
        draw(
            st.sampled_from(
                [f"{target} = yield from inner({value}, log)", f"yield from inner({value}, log)"]
            )
        )
    ]


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
    if not any("yield" in line for line in lines) and cost + 2 <= budget:
        lines.append(f"yield {_tag(scope, 'y')}")  # so that every clause can be resumed in
        cost += 2
    return (lines or ["pass"]), max(cost, 1)


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
        else:
            value = _int_expr(draw, scope)
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
        tests_cost += 1 + test.count("yield")
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
    overhead = 2 + test.count("yield")  # the test and the counter's increment
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
    sources = ["range", "range-of", "items", "table", "enumerate", "zip"]
    if scope.inner_cost and scope.inner_cost * 2 < budget:
        sources += ["inner", "inner", "inner"]
    source = draw(st.sampled_from(sources))
    header_cost = 1
    if source == "range":
        header = f"for {item} in range({rounds}):"
    elif source == "range-of":
        header = f"for {item} in range({_int_expr(draw, scope, 1)} % {rounds + 1}):"
        header_cost += header.count("yield")
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
    managers = []
    for _ in range(draw(st.integers(1, 2))):
        label = scope.fresh("cm")
        name = draw(st.sampled_from([f'"{label}"', f'(yield "{label}")']))
        managers.append(f"Ctx(log, {name}, {draw(st.booleans())})")
    bound = scope.fresh("name")
    header = f"with {', '.join(managers)} as {bound}:"
    body, spent = _block(draw, scope.nested(), budget - 3)
    lines = [header, f'    log.append(("inside", {bound}))', *_indent(body)]
    return lines, spent + 3 + header.count("yield")


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
    cost = 1 + subject.count("yield")
    bodies_cost = 0
    for pattern, captured in chosen:
        if draw(st.integers(0, 3)) == 0 and " if " not in pattern:  # a guard that yields
            pattern += f" if {_condition(draw, scope)}"
        cost += pattern.count("yield")
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
    """``def name(parameter, log):`` with the standard locals, a random body and a return."""
    preamble = [f"a = {parameter}", *_LOCALS]
    preamble.append(f'log.append(("start", "{name}", a))')
    if scope.closures:
        preamble += _CLOSURES
    ending = draw(st.sampled_from(["return (a, b, c)", "return", "return {}"]))
    if "{}" in ending:
        ending = ending.format(_int_expr(draw, scope))
    fixed_cost = len(preamble) + 3 + ending.count("yield")
    body, cost = _block(draw, scope, budget - fixed_cost, least=2, most=6)
    if not any("yield" in line for line in body):  # it must stay a generator function
        body.append(f"yield {_tag(scope, 'y')}")
    body.append('log.append(("nonce", NONCE))')
    lines = [f"def {name}({parameter}, log):", *_indent([*preamble, *body, ending])]
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
    subscripts, f-strings, conditional expressions, walrus and augmented
    assignments (to names, attributes, items); starred assignment; a closure
    writing a ``nonlocal`` and lambdas reading locals (cell variables); list
    comprehensions; early ``return``; and ``yield from inner(...)``, where
    ``inner(n, log)`` is a second, smaller random generator function at module
    level (defined when ``gen`` calls it). Every function appends its side
    effects to ``log``.

    Loops are bounded, so a run takes at most about ``max_steps`` statements
    whatever is sent in; division is never by zero. The module is valid
    Python 3.10 and uses no sets or hashes, so native runs are deterministic.
    """
    counter = itertools.count()

    def fresh(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    inner_budget = max_steps // 10 + 12  # about a dozen of its steps are its preamble
    inner_lines, inner_cost = _function(draw, "inner", "n", _Scope(fresh=fresh), inner_budget)
    gen_scope = _Scope(fresh=fresh, inner_cost=inner_cost, closures=draw(st.booleans()))
    gen_lines, _ = _function(draw, "gen", "arg", gen_scope, max_steps - inner_cost)
    if any("inner(" in line for line in gen_lines):  # else it never runs: leave it out
        gen_lines = [*inner_lines, "", "", *gen_lines]
    return "\n".join([_PRELUDE, "", *gen_lines, ""])
