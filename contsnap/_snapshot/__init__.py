"""Capture the frame of a suspended transformed generator, and rebuild it.

Capture reads ``gi_frame.f_locals`` of a paused generator: the resume label,
the locals live there and the cell objects (through the ``_cs_cellref``
closure the transform plants). Rebuild calls the *resume variant* with that
state and primes it once, so the new generator is paused at the same yield.

A ``copyreg`` reducer for the generator type makes ``pickle``, ``cloudpickle``
and ``copy.deepcopy`` work on checkpointable generators; the generator object
is created first and its state set afterwards, so an object that holds the
generator which holds the object (``self.job = self.run()``) pickles fine.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import copyreg
import gc
import importlib
import inspect
import io
import json
import pickle
import sys
import types
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cloudpickle

from . import _genexps, _moved, _resources, _runtime, _views
from ._errors import CheckpointError, NotCheckpointableError, SnapshotCorruptError
from ._info import (
    FunctionInfo,
    _info_by_name,
    adopt_function,
    by_value_class,
    current_session,
    info_for_code,
    pending_info,
)
from ._migrate import Migrating
from ._registry import STATE

CREATED, SUSPENDED, CLOSED = "created", "suspended", "closed"


class _Box:
    """Carries label and locals into a resume-variant generator until it first runs."""

    __slots__ = ("cells", "info", "label", "spec", "values")

    def __init__(
        self,
        label: int,
        values: dict[str, Any],
        cells: tuple[types.CellType, ...] = (),
        info: FunctionInfo | None = None,
    ) -> None:
        self.label = label
        self.values = values
        self.cells = cells
        #: the function the generator was made for (set by new_generator)
        self.info = info
        #: the LabelInfo of ``label`` (None: not started)
        self.spec: Any = None


@dataclass(slots=True)
class FrameState:
    """One captured generator frame."""

    info: FunctionInfo
    status: str
    label: int
    values: dict[str, Any]
    cells: tuple[types.CellType, ...]
    #: (__name__, __qualname__) when the object was renamed (round-trip drivers)
    names: tuple[str, str] | None = None
    #: the label's LabelInfo, when capture looked it up already
    spec: Any = None

    @property
    def delegate(self) -> Any:
        spec = self.spec if self.spec is not None else self.info.labels.get(self.label)
        if spec is None or spec.delegate is None:
            return None
        return self.values.get(spec.delegate)

    @property
    def line(self) -> int:
        """The line it is paused at (the function's first line when it has not started)."""
        return self.spec.line if self.spec is not None else self.info.line_of(self.label)


# Restored generators that have finished: their code is not the info's own.
_CLOSED: weakref.WeakKeyDictionary[Any, FunctionInfo] = weakref.WeakKeyDictionary()
STATE.add(__name__, "_CLOSED", None, "restored generators that have finished")
# Generators made by a pickle load whose state has not arrived yet.
_AWAITING_STATE: weakref.WeakKeyDictionary[Any, _Box] = weakref.WeakKeyDictionary()
STATE.add(__name__, "_AWAITING_STATE", None, "generators a load made, their state still to come")
# Generators of changed code whose old state goes through a migration when it arrives.
_MIGRATING: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
STATE.add(__name__, "_MIGRATING", None, "generators whose old state goes through a migration")
# Restored generators and coroutines not started yet: their saved point (label 0: not
# started when saved either) and locals, for a snapshot taken before their first step.
_UNSTARTED_BOX: weakref.WeakKeyDictionary[Any, _Box] = weakref.WeakKeyDictionary()
STATE.add(__name__, "_UNSTARTED_BOX", None, "restored generators not started yet, and their state")


def _weak_data(mapping: weakref.WeakKeyDictionary[Any, Any]) -> dict[Any, Any]:
    """The dict inside a weak dictionary: tested for being empty without the weak
    dictionary's own ``__len__``, which is Python code."""
    return mapping.data  # type: ignore[attr-defined,no-any-return]


#: the native objects a checkpointable function returns
SUSPENDABLE = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)
_PREFIX = {types.GeneratorType: "gi", types.CoroutineType: "cr", types.AsyncGeneratorType: "ag"}
_NOUN = {
    types.GeneratorType: "generator",
    types.CoroutineType: "coroutine",
    types.AsyncGeneratorType: "async generator",
}


def _attr(obj: Any, name: str) -> Any:
    return getattr(obj, f"{_PREFIX[type(obj)]}_{name}")


def _running(obj: Any) -> bool:
    """Is the frame executing right now? (``ag_running`` means "an asend is in progress".)"""
    if type(obj) is not types.AsyncGeneratorType:
        return bool(_attr(obj, "running"))
    frame: types.FrameType | None = obj.ag_frame
    if frame is None:
        return False
    if sys.version_info >= (3, 12):
        return not obj.ag_suspended and obj.ag_running and not _is_created(obj)
    caller: types.FrameType | None = sys._getframe()
    while caller is not None:
        if caller is frame:
            return True
        caller = caller.f_back
    return False


def noun(obj: Any) -> str:
    return _NOUN.get(type(obj), type(obj).__name__)


def _is_created(obj: Any) -> bool:
    """Not started yet (the frame exists but has run nothing)."""
    if type(obj) is types.GeneratorType:
        return inspect.getgeneratorstate(obj) == inspect.GEN_CREATED
    if type(obj) is types.CoroutineType:
        return inspect.getcoroutinestate(obj) == inspect.CORO_CREATED
    if sys.version_info >= (3, 12):
        return inspect.getasyncgenstate(obj) == inspect.AGEN_CREATED
    frame = obj.ag_frame
    created_lasti = -1 if sys.version_info < (3, 11) else 0
    return frame is not None and not obj.ag_running and frame.f_lasti == created_lasti


def info_of(gen: Any) -> FunctionInfo | None:
    kind = type(gen)
    if kind is types.GeneratorType:  # the usual case, without the attribute names built
        frame = gen.gi_frame
        found = info_for_code(gen.gi_code, frame.f_globals if frame is not None else None)
        return found if found is not None else _CLOSED.get(gen)
    if kind not in _PREFIX:
        return None
    frame = _attr(gen, "frame")
    info = info_for_code(_attr(gen, "code"), frame.f_globals if frame is not None else None)
    if info is None:
        info = _CLOSED.get(gen)
    return info


def _unmarked(gen: Any) -> NotCheckpointableError:
    name = getattr(gen, "__qualname__", type(gen).__name__)
    code = _attr(gen, "code") if type(gen) in _PREFIX else None
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    return NotCheckpointableError(
        f"{noun(gen)} {name}{where} is not checkpointable: mark its function with "
        "@contsnap.checkpointable (or name its module to the import hook)"
    )


def read_locals(frame: types.FrameType) -> dict[str, Any]:
    """The frame's locals, leaving no trace on the frame.

    Before 3.13, ``frame.f_locals`` fills a dict cached on the frame, which
    then keeps every local of that moment alive: a local the generator drops
    after the snapshot would be finalised late (``__del__``, weakref callbacks
    and ``finally`` of held generators in another order than in a run never
    snapshotted). The cache is emptied again; CPython refills it from the
    frame before anything reads it (``frame.f_locals``, ``locals()``, a trace
    function), so nothing is written back.
    """
    cached = frame.f_locals
    local = dict(cached)
    if sys.version_info < (3, 13):
        cached.clear()
    return local


def capture(gen: Any) -> FrameState:
    """Read the state of a checkpointable generator without changing it."""
    if type(gen) is types.GeneratorType and _SUSPENDED_FLAG and gen.gi_suspended:  # type: ignore[attr-defined,unused-ignore]
        # the usual case, answered without the checks that concern other states
        frame = gen.gi_frame
        info = info_for_code(gen.gi_code, frame.f_globals)  # type: ignore[union-attr]
        if info is not None:
            return _capture_suspended(gen, info, frame)  # type: ignore[arg-type]
    info = info_of(gen)
    if info is None:
        raise _unmarked(gen)
    if _running(gen):
        raise NotCheckpointableError(
            f"{noun(gen)} {info.qualname} is running; a snapshot can only be taken while it "
            "is suspended (not from inside itself)"
        )
    frame = _attr(gen, "frame")
    if frame is None:
        return FrameState(info, CLOSED, 0, {}, ())
    if _is_created(gen):
        box = _UNSTARTED_BOX.get(gen)
        if box is not None:  # restored, not stepped yet: still where it was saved
            names = (gen.__name__, gen.__qualname__)
            renamed = names if names != (info.name, info.qualname) else None
            status = SUSPENDED if box.label else CREATED
            return FrameState(info, status, box.label, dict(box.values), box.cells, renamed)
        return _capture_created(gen, info, frame)
    return _capture_suspended(gen, info, frame)


#: 3.11+ tell a suspended generator by ``gi_suspended``
_SUSPENDED_FLAG = sys.version_info >= (3, 11)


def _capture_suspended(gen: Any, info: FunctionInfo, frame: types.FrameType) -> FrameState:
    local = frame.f_locals
    try:
        return _capture_from(gen, info, frame, local)
    finally:
        if sys.version_info < (3, 13):
            local.clear()  # see read_locals: the frame must not keep its locals alive


def _capture_from(gen: Any, info: FunctionInfo, frame: types.FrameType, local: Any) -> FrameState:
    line = frame.f_lineno
    label = info.label_of_line.get(line) or local.get("_cs_label", 0)
    labels = info.labels
    spec = labels.get(label)
    if spec is None or spec.line != line:
        raise NotCheckpointableError(
            f"cannot snapshot {info.qualname} at {info.filename}:{line}: it is suspended "
            "inside an expression contsnap does not track (an async comprehension?); "
            "write it as a loop"
        )
    if spec.refuse is not None:
        raise NotCheckpointableError(f"cannot snapshot {info.where(label)}: {spec.refuse}")
    if spec.kind == "await":
        awaited = local.get(spec.delegate or "")
        if isinstance(awaited, _runtime.ANext):
            try:
                awaited.in_flight()
            except TypeError as exc:
                where = info.where(label)
                raise NotCheckpointableError(f"cannot snapshot {where}: {exc}") from None
        if info_of(awaited) is None and not hasattr(type(awaited), "__contsnap_resume__"):
            raise NotCheckpointableError(
                f"cannot snapshot {info.where(label)}: it awaits {awaited!r}, which is not a "
                "safe point; await contsnap.checkpoint(), contsnap.sleep(), a contsnap.Queue, "
                "or a checkpointable coroutine"
            )
    saved = info.saved_names_without_cells(label)
    values = {n: v for n, v in local.items() if n in saved}
    closure: tuple[types.CellType, ...] = ()
    if info.cell_names:
        cellref = local.get("_cs_cellref")
        # the lambda's closure is in the order of its free variables (sorted by the
        # compiler), not in the order the names were written
        by_name = (
            dict(zip(cellref.__code__.co_freevars, cellref.__closure__ or ()))
            if cellref is not None
            else {}
        )
        if set(by_name) != set(info.cell_names):
            raise NotCheckpointableError(f"cannot read the closure cells of {info.qualname}")
        closure = tuple(by_name[name] for name in info.cell_names)
    name, qualname = gen.__name__, gen.__qualname__
    renamed = None
    if name != info.name or qualname != info.qualname:
        renamed = (name, qualname)
    return FrameState(info, SUSPENDED, label, values, closure, renamed, spec)


def _capture_created(gen: Any, info: FunctionInfo, frame: types.FrameType) -> FrameState:
    local = read_locals(frame)
    free = [n for n in info.cell_names if n not in info.cellvars]
    closure_cells: dict[str, types.CellType] = {}
    if free:
        closure_cells = _free_cells_of_created(gen)
        if not set(free) <= set(closure_cells):
            raise NotCheckpointableError(
                f"cannot snapshot the unstarted generator {info.qualname}: its closure is not "
                "reachable; advance it to its first yield first"
            )
    cells = []
    for name in info.cell_names:
        if name in info.cellvars:
            cells.append(types.CellType(local[name]) if name in local else types.CellType())
        else:
            cells.append(closure_cells[name])
    values = {n: v for n, v in local.items() if n in info.user_names}
    return FrameState(info, CREATED, 0, values, tuple(cells))


def _free_cells_of_created(gen: Any) -> dict[str, types.CellType]:
    """The closure cells of an unstarted generator, by free-variable name.

    3.11+ keep the function object in the frame (a GC referent of the
    generator); 3.10 copies the closure into the frame, whose referents end
    with the cell variables' cells and then the free variables' cells.
    """
    code = _attr(gen, "code")
    for obj in gc.get_referents(gen):
        if isinstance(obj, types.FunctionType) and obj.__code__ is code:
            return dict(zip(code.co_freevars, obj.__closure__ or ()))
    frame = _attr(gen, "frame")
    cells = [obj for obj in gc.get_referents(frame) if type(obj) is types.CellType]
    if len(cells) < len(code.co_freevars):
        return {}
    return dict(zip(code.co_freevars, cells[len(cells) - len(code.co_freevars) :]))


def new_generator(
    info: FunctionInfo,
    label: int,
    cells: tuple[types.CellType, ...],
    names: tuple[str, str] | None = None,
) -> Any:
    """Create (but do not start) a resume-variant generator; its values come later."""
    if isinstance(info, Migrating):  # saved by older code: the label is decided later
        return _new_migrating(info, label, cells, names)
    spec = info.labels.get(label) if label != 0 else None
    if label != 0 and spec is None:
        raise SnapshotCorruptError(
            f"snapshot of {info.qualname} names resume point {label}, which that function "
            "does not have"
        )
    if len(cells) != len(info.cell_names):
        raise SnapshotCorruptError(f"snapshot of {info.qualname} has the wrong number of cells")
    code = info.resume_code_for_restore()
    if cells:
        by_name = dict(zip(info.cell_names, cells))
        closure = tuple(by_name[n] for n in code.co_freevars)
        fn = types.FunctionType(code, info.globals, info.name, None, closure or None)
        fn.__qualname__ = info.qualname
        fn.__module__ = info.module
    else:
        cached = _RESUME_FUNCTIONS.get(id(code))
        if cached is not None and cached.__code__ is code and cached.__globals__ is info.globals:
            fn = cached
        else:
            # no closure: one function per resume code serves every restore
            fn = types.FunctionType(code, info.globals, info.name, None, None)
            fn.__qualname__ = info.qualname
            fn.__module__ = info.module
            if len(_RESUME_FUNCTIONS) >= 1024:
                _RESUME_FUNCTIONS.clear()
            _RESUME_FUNCTIONS[id(code)] = fn
    if _runtime.LAST_BOUND not in info.globals:
        _runtime.bind(info.globals)
    box = _Box(label, {}, cells, info)
    box.spec = spec
    gen = fn(_runtime.UNBOUND, box) if info.first_param is not None else fn(box)
    if names is not None:
        gen.__name__, gen.__qualname__ = (str(n) for n in names)
    load = _CURRENT_LOAD.get()
    if load is not None:  # handed to set_generator_state within this load
        load.pending[id(gen)] = (gen, box)
    else:
        _AWAITING_STATE[gen] = box
    return gen


#: resume functions without a closure, by id of their code
_RESUME_FUNCTIONS: dict[int, types.FunctionType] = {}
STATE.add(__name__, "_RESUME_FUNCTIONS", "clear")  # resume functions by code


def _pending_box(gen: Any, load: _Load | None) -> _Box | None:
    """The box `new_generator` made for ``gen``, taken (None: not waiting for its state)."""
    if load is not None:
        entry = load.pending.pop(id(gen), None)
        if entry is not None and entry[0] is gen:
            return entry[1]
    return _AWAITING_STATE.pop(gen, None)


def _is_pending(gen: Any, load: _Load | None) -> bool:
    if load is not None:
        entry = load.pending.get(id(gen))
        if entry is not None and entry[0] is gen:
            return True
    return gen in _AWAITING_STATE


def _new_migrating(
    migrating: Migrating,
    label: int,
    cells: tuple[types.CellType, ...],
    names: tuple[str, str] | None,
) -> Any:
    info = migrating.info
    fresh_cells = tuple(types.CellType() for _ in info.cell_names)
    gen = new_generator(info, 0, fresh_cells, names)
    _MIGRATING[gen] = (migrating, label, cells, fresh_cells)
    return gen


def set_generator_state(gen: Any, values: Any) -> None:
    """Give a generator from `new_generator` its locals and prime it.

    The state of the coroutine of a paused task is ``(locals, context)``: the
    context variables the task had set, set again when it resumes.
    """
    load = _CURRENT_LOAD.get()
    box = _pending_box(gen, load)
    info = box.info if box is not None else None
    if box is None or info is None:
        raise SnapshotCorruptError("generator state arrived for an unknown generator")
    context: list[tuple[Any, Any]] | None = None
    if type(values) is tuple and len(values) == 2:
        values, context = values
        if not isinstance(context, list) or not all(
            isinstance(item, tuple) and len(item) == 2 and type(item[0]) is contextvars.ContextVar
            for item in context
        ):
            raise SnapshotCorruptError(f"snapshot of {info.qualname} has a malformed context")
    if type(values) is not dict:
        raise SnapshotCorruptError(f"snapshot of {info.qualname} has malformed locals")
    # (the weak dictionary's own truth test is Python code; its dict's is not)
    migrating = _MIGRATING.pop(gen, None) if _weak_data(_MIGRATING) else None
    if migrating is not None:
        how, old_label, old_cells, fresh_cells = migrating
        box.label, values, cell_values = how.apply(old_label, values, old_cells)
        for name, cell in zip(info.cell_names, fresh_cells):
            if name in cell_values:
                cell.cell_contents = cell_values[name]
            elif len(old_cells) == len(fresh_cells):
                with contextlib.suppress(ValueError):
                    cell.cell_contents = old_cells[info.cell_names.index(name)].cell_contents
    allowed = info.allowed_names(box.label)
    if not values.keys() <= allowed:
        if not all(isinstance(k, str) for k in values):
            raise SnapshotCorruptError(f"snapshot of {info.qualname} has malformed locals")
        unknown = set(values) - allowed
        raise SnapshotCorruptError(
            f"snapshot of {info.qualname} has locals the function does not have: "
            f"{', '.join(sorted(unknown))}"
        )
    label = box.label
    if migrating is not None:
        box.spec = info.labels.get(label) if label else None
    kind = box.spec.kind if label else None
    if label:
        _check_helpers(info, label, values)
    box.values = values
    if context and kind == "await":
        # set in the task that runs it, when its dispatch resumes the await
        _runtime.PENDING_CONTEXT[gen] = (values.get(info.labels[box.label].delegate or ""), context)
    if not label:
        # not started when saved: its frame holds only the box until the first step,
        # so a snapshot taken before then reads the arguments from the box
        _UNSTARTED_BOX[gen] = box
        return
    if kind == "await":
        # a coroutine is not primed: the event loop's first send runs its
        # dispatch, and a resumed await starts a restored coroutine it awaits
        if type(gen) is types.CoroutineType:
            _runtime.add_unstarted(gen)
            _UNSTARTED_BOX[gen] = box  # a snapshot before its first step saves this
            delegate = box.values.get(info.labels[box.label].delegate or "")
            if type(delegate) is types.CoroutineType:
                weakref.finalize(gen, _close_if_unstarted, delegate).atexit = False
        return
    if type(gen) is types.AsyncGeneratorType:
        _prime(gen)
        return
    if load is None:
        _prime(gen)
    else:
        # primed when the whole load is done: a delegate is then primed by the
        # resumed ``yield from`` of the generator that delegates to it
        _runtime.UNPRIMED[id(gen)] = gen
        load.deferred[id(gen)] = box
        load.restored.append(gen)


def _close_if_unstarted(delegate: types.CoroutineType[Any, Any, Any]) -> None:
    """The restored coroutine that awaited ``delegate`` is gone without a first step
    (closed, thrown into, or dropped), so nothing will start ``delegate`` either.

    The original closed its awaited coroutine when it was closed; close this one too
    (no code of it runs: it never started) instead of leaving Python to warn that a
    coroutine awaited before the snapshot "was never awaited".
    """
    if inspect.getcoroutinestate(delegate) == inspect.CORO_CREATED:
        delegate.close()


#: what each kind of transform helper local must hold (by the type's special methods)
_HELPER_SHAPES = (
    ("_cs_iter_", "__next__", "an iterator"),
    ("_cs_aiter_", "__anext__", "an async iterator"),
    ("_cs_mgr_", "__exit__", "a context manager"),
    ("_cs_amgr_", "__aexit__", "an async context manager"),
)


#: helpers bound before any yield of their statement (a loop's iterator, a with's manager)
_ALWAYS_BOUND = ("_cs_iter_", "_cs_aiter_", "_cs_mgr_", "_cs_amgr_")


def _check_helpers(info: FunctionInfo, label: int, values: dict[str, Any]) -> None:
    """A verified snapshot whose helper locals are missing or of the wrong type comes from a
    bug or was made by hand: name it here, not later inside contsnap's runtime."""
    checks = _HELPER_CHECKS.get((id(info), label))
    if checks is None or checks[0] is not info:
        checks = _HELPER_CHECKS[(id(info), label)] = (info, _helper_checks(info, label))
    for name, required, method, what in checks[1]:
        if name not in values:
            if required:
                raise SnapshotCorruptError(
                    f"snapshot of {_helper_place(info, label)} lacks the local {name!r} the "
                    "transform keeps at that point; restore from an intact snapshot"
                )
            continue
        value = values[name]
        if method is None:  # a with statement's "exited" flag
            if type(value) is not bool:
                raise SnapshotCorruptError(
                    f"snapshot of {_helper_place(info, label)}: its local {name!r} is a "
                    f"{type(value).__name__}, not a bool; restore from an intact snapshot"
                )
        elif value is not None and not hasattr(type(value), method):
            raise SnapshotCorruptError(
                f"snapshot of {_helper_place(info, label)}: its local {name!r} is a "
                f"{type(value).__name__}, not {what}; restore from an intact snapshot"
            )


def _helper_place(info: FunctionInfo, label: int) -> str:
    return f"{info.qualname} ({info.filename}:{info.line_of(label)})"


def _helper_checks(info: FunctionInfo, label: int) -> list[tuple[str, bool, str | None, str]]:
    """What `_check_helpers` checks at ``label``: (name, must be there, the special method
    its value's type must have, or None for a bool, and what that makes it)."""
    checks: list[tuple[str, bool, str | None, str]] = []
    for name in sorted(info.labels[label].helpers):
        required = name.startswith(_ALWAYS_BOUND)
        if name.startswith("_cs_wx_"):
            checks.append((name, required, None, "a bool"))
            continue
        shape = next((s for s in _HELPER_SHAPES if name.startswith(s[0])), None)
        if shape is not None:
            checks.append((name, required, shape[1], shape[2]))
        elif required:
            checks.append((name, True, "__class__", "anything"))
    return checks


#: _helper_checks by (id of the info, label), with the info (so that the id stays its own)
_HELPER_CHECKS: dict[
    tuple[int, int], tuple[FunctionInfo, list[tuple[str, bool, str | None, str]]]
] = {}
STATE.add(__name__, "_HELPER_CHECKS", "clear")  # per-label checks of helper locals


def _prime(gen: Any) -> None:
    """Run the resume dispatch up to the saved yield (no user code runs on the way)."""
    _runtime.UNPRIMED.pop(id(gen), None)
    if type(gen) is types.AsyncGeneratorType:
        step = gen.__anext__()
        try:
            step.send(None)
        except StopIteration as done:
            primed = done.value
        else:
            step.close()
            primed = None
    else:
        primed = gen.send(None)
    if primed is not _runtime.PRIME:
        gen.close()
        name = getattr(gen, "__qualname__", "generator")
        raise SnapshotCorruptError(f"restored {name} did not stop where it was saved")


class _Load:
    """The load in progress: the generators it restored, in the order they were made; the
    boxes of those made and waiting for their state, and of those waiting to be primed,
    by id (the generators themselves are held, so the ids stay theirs)."""

    __slots__ = ("deferred", "pending", "restored")

    def __init__(self) -> None:
        self.restored: list[Any] = []
        self.pending: dict[int, tuple[Any, _Box]] = {}
        self.deferred: dict[int, _Box] = {}


_CURRENT_LOAD: contextvars.ContextVar[_Load | None] = contextvars.ContextVar(
    "contsnap_loading", default=None
)


class _load_context:
    """Prime the generators a load restores once it is complete, outermost first."""

    __slots__ = ("load", "token")

    def __enter__(self) -> None:
        if _CURRENT_LOAD.get() is not None:
            self.token = None
            return
        self.load = _Load()
        self.token = _CURRENT_LOAD.set(self.load)

    def __exit__(self, kind: Any, exc: Any, traceback: Any) -> None:
        if self.token is None:
            return
        _CURRENT_LOAD.reset(self.token)
        load = self.load
        load.pending.clear()
        restored = load.restored
        try:
            if kind is None:
                _prime_restored(restored, load)
        finally:
            unprimed = _runtime.UNPRIMED
            for gen in restored:  # left unprimed by a load that failed
                unprimed.pop(id(gen), None)


def _prime_restored(restored: list[Any], load: _Load) -> None:
    unprimed = _runtime.UNPRIMED
    if len(restored) == 1:
        if id(restored[0]) in unprimed:
            _prime(restored[0])
        return
    below: dict[int, Any] = {}  # which restored generator delegates to which
    outer: dict[int, Any] = {}
    for made in restored:
        delegate = _delegate_of_unprimed(made, load)
        if delegate is not None:
            below[id(made)] = delegate
            outer[id(delegate)] = made
    for gen in restored:
        if id(gen) in unprimed:
            _prime_chain_of(gen, outer, below)


def _prime_chain_of(gen: Any, outer: dict[int, Any], below: dict[int, Any]) -> None:
    # Prime from the outermost generator that delegates to this one, so the
    # whole chain settles with one send and native ``yield from`` in between.
    top = gen
    while id(top) in outer and id(outer[id(top)]) in _runtime.UNPRIMED:
        top = outer[id(top)]
    _prime_deep(top, below)
    if id(gen) in _runtime.UNPRIMED:  # not reached through the chain: prime it alone
        _prime(gen)


def _prime_deep(top: Any, below: dict[int, Any]) -> None:
    """Prime ``top`` and the chain below it, which may be as deep as native Python allows:
    the frames of the load above it must not be what exceeds the recursion limit."""
    length = 0
    delegate = below.get(id(top))
    while delegate is not None and length < 100_000:
        length += 1
        delegate = below.get(id(delegate))
    depth = 0
    frame: types.FrameType | None = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back
    limit = sys.getrecursionlimit()
    needed = depth + length + 50
    if needed <= limit:
        _prime(top)
        return
    sys.setrecursionlimit(needed)
    try:
        _prime(top)
    finally:
        sys.setrecursionlimit(limit)


def _delegate_of_unprimed(gen: Any, load: _Load) -> Any:
    box = load.deferred.get(id(gen))
    if box is None or box.values is None:  # None: primed, its box read
        return None
    spec = box.spec
    return box.values.get(spec.delegate) if spec is not None and spec.delegate else None


def closed_generator(given: FunctionInfo | Migrating) -> Any:
    """A finished generator (or coroutine...) that still knows which function it came from."""
    info: FunctionInfo = given.info if isinstance(given, Migrating) else given

    def finished() -> Iterator[None]:
        yield  # pragma: no cover - never started

    async def finished_coroutine() -> None:
        pass  # pragma: no cover - never started

    async def finished_async_gen() -> Any:
        yield  # pragma: no cover - never started

    code = info.resume_code
    if code.co_flags & inspect.CO_COROUTINE:
        gen: Any = finished_coroutine()
    elif code.co_flags & inspect.CO_ASYNC_GENERATOR:
        gen = finished_async_gen()
    else:
        gen = finished()
    gen.__name__ = info.name
    gen.__qualname__ = info.qualname
    if type(gen) is types.AsyncGeneratorType:
        gen.aclose().close()  # an unstarted async generator closes without an event loop
    else:
        gen.close()
    _CLOSED[gen] = info
    return gen


def rebuild(state: FrameState) -> Any:
    """Restore a captured frame in this process (values by reference)."""
    if state.status == CLOSED:
        return closed_generator(state.info)
    gen = new_generator(state.info, state.label, state.cells, state.names)
    set_generator_state(gen, dict(state.values))
    return gen


# ---------------------------------------------------------------- pickling


# A chain of delegation (``yield from`` / ``await``, ~900 deep natively) is saved flat:
# nested, each level would cost pickle several C frames (its recursion limit is hit
# from ~200 levels). The outermost generator's state is a _Chain: first every
# generator it delegates to, made without its state (memoised, so a later reference is
# a memo lookup), then the locals of each level, in order.


def _with_context(gen: Any, reduced: tuple[Any, ...]) -> tuple[Any, ...]:
    """The state of a paused task's coroutine carries the context variables it set: while
    ``pause()`` saves it, and while a restored one has not run yet (saved again as it is)."""
    task = TASK_CONTEXT.get()
    context: list[tuple[Any, Any]] | None
    if task is not None and task[0] is gen:
        context = task[1]
    else:
        pending_contexts = _runtime.PENDING_CONTEXT
        pending = pending_contexts.get(gen) if _weak_data(pending_contexts) else None
        context = pending[1] if pending is not None else None
    if not context or len(reduced) != 6:
        return reduced
    if isinstance(reduced[2], _Chain):  # the outermost level's locals carry it
        values: list[Any] = reduced[2].values
        values[0] = (values[0], context)
        return reduced
    return (*reduced[:2], (reduced[2], context), *reduced[3:])


def _next_in_chain(state: FrameState) -> Any:
    """The checkpointable generator (coroutine...) ``state``'s frame is delegating to."""
    delegate = state.delegate
    kind = type(delegate)
    if kind is types.GeneratorType:  # the usual case: yield from
        return delegate if info_of(delegate) is not None else None
    if isinstance(delegate, _runtime.ANext):  # an async for step: into its generator
        try:
            delegate = delegate.in_flight() or delegate.iterator
        except TypeError:  # capture refused it already, naming it
            return None
        kind = type(delegate)
    if kind in _PREFIX and info_of(delegate) is not None:
        return delegate
    return None


def _chain_below(state: FrameState, done: Callable[[Any], bool]) -> list[tuple[Any, FrameState]]:
    """The generators ``state`` delegates to, outermost first, with their frames; it stops
    at one ``done`` says is saved already, and at a finished one."""
    chain: list[tuple[Any, FrameState]] = []
    seen: set[int] = set()
    current = state
    while True:
        member = _next_in_chain(current)
        if member is None or id(member) in seen or done(member):
            return chain
        current = capture(member)
        if current.status == CLOSED:
            return chain
        seen.add(id(member))
        chain.append((member, current))


class _Chain:
    """The state of a generator that delegates: the generators below it and every level's
    locals. While it is being pickled, those generators pickle without their state."""

    __slots__ = ("__weakref__", "members", "values")

    def __init__(
        self, top: FrameState, chain: list[tuple[Any, FrameState]], *, register: bool = True
    ) -> None:
        self.members = [member for member, _state in chain]
        self.values = [top.values, *(state.values for _member, state in chain)]
        if not register:  # the fast pickler keeps the members' states itself
            return
        alive = weakref.ref(self)
        for member, state in chain:
            _SHALLOW[member] = (alive, state)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_chain_parts, (self.members, self.values))


#: generators to pickle without their state: a _Chain being pickled carries it (an
#: entry whose _Chain is gone, after a pickle that failed, is stale)
_SHALLOW: weakref.WeakKeyDictionary[Any, tuple[weakref.ref[_Chain], FrameState]] = (
    weakref.WeakKeyDictionary()
)
STATE.add(__name__, "_SHALLOW", None, "generators a _Chain being pickled carries")


def _shallow_state(gen: Any) -> FrameState | None:
    if not _weak_data(_SHALLOW):
        return None
    entry = _SHALLOW.pop(gen, None)
    if entry is None or entry[0]() is None:
        return None
    return entry[1]


def _chain_parts(members: Any, values: Any) -> tuple[Any, Any]:
    return (members, values)


def set_chain_state(gen: Any, parts: Any) -> None:
    """Give a generator and the generators it delegates to their locals; primed together
    (from the outermost, through native ``yield from``) once all have them."""
    try:
        members, values = parts
        members, values = list(members), list(values)
    except (TypeError, ValueError):
        raise SnapshotCorruptError("the delegation chain in the snapshot is malformed") from None
    if len(values) != len(members) + 1 or not all(type(m) in _PREFIX for m in members):
        raise SnapshotCorruptError("the delegation chain in the snapshot is malformed")
    with _load_context():
        set_generator_state(gen, values[0])
        load = _CURRENT_LOAD.get()
        for member, member_values in zip(members, values[1:]):
            if _is_pending(member, load):  # else it was saved on its own too, with this state
                set_generator_state(member, member_values)


def _args(state: FrameState) -> tuple[Any, ...]:
    args: tuple[Any, ...] = (state.info, state.label, state.cells)
    if state.names is not None:
        args += (state.names,)
    return args


def _reduce_generator(gen: Any) -> tuple[Any, ...]:
    """How plain ``pickle`` (and any other pickler) saves a generator; contsnap's own
    pickler has its reducer_override.

    The frame's state goes to that pickler as it is (objects the generator shares
    with the rest of what it pickles stay shared, a cycle through the generator
    stays a cycle) when plain pickling carries it as ``contsnap.dumps`` would.
    When it holds what only contsnap's pickler saves right (local functions and
    classes, closure cells, resources, exceptions, views, weak references,
    generator expressions), the generator is saved as the payload that pickler
    makes of it: the same result as ``dumps``, or the same error.
    """
    shallow = _shallow_state(gen)
    if shallow is not None:
        return (new_generator, _args(shallow))
    if info_of(gen) is not None:
        state = capture(gen)
        reduced = _with_context(gen, _reduce_state(state, _chain_below(state, _never)))
        if _plainly_picklable(reduced):
            # Named in full, not by an extension code: unpickling it first imports contsnap,
            # which registers the codes the rest of the stream uses ("unregistered extension
            # code 240" for a process that had not imported contsnap)
            if reduced[0] is new_generator:
                return (generator_by_name, *reduced[1:])
            if reduced[0] is closed_generator:
                return (closed_generator_by_name, *reduced[1:])
            return reduced
        _forget_chain(reduced)
    payload, _captured, _refs = to_payload(gen)
    return (generator_from_payload, (payload,))


def _never(member: Any) -> bool:
    return False


def _forget_chain(reduced: tuple[Any, ...]) -> None:
    """A _Chain made for a plain pickle that will not use it: its members pickle whole."""
    if len(reduced) > 2 and isinstance(reduced[2], _Chain):
        for member in reduced[2].members:
            _SHALLOW.pop(member, None)


class _NeedsContsnap(Exception):
    pass


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


class _Probe(pickle.Pickler):
    """Walks what a plain pickle (``copying``: a plain deepcopy) of a frame's state would
    save, stopping at the first object that only contsnap's pickler saves right."""

    def __init__(self, file: Any, protocol: int, copying: bool = False) -> None:
        super().__init__(file, protocol=protocol)
        self.copying = copying

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if self.copying and (
            kind is types.ModuleType
            or (
                kind in (types.BuiltinMethodType, types.MethodWrapperType)
                and not isinstance(getattr(obj, "__self__", None), (types.ModuleType, type))
                and getattr(obj, "__self__", None) is not None
            )
        ):
            raise _NeedsContsnap
        if kind in _PREFIX:
            if info_of(obj) is None:
                raise _NeedsContsnap  # a generator expression (or a refusal to name)
            return (int, ())  # pickled on its own terms when the real pickle meets it
        if (
            kind in _NEEDS_CONTSNAP
            or kind in _views.REDUCERS
            or isinstance(obj, BaseException)
            or _is_local_class(obj)
            or (kind is types.FunctionType and not _cp._should_pickle_by_reference(obj))
            or _resources.handler_for(kind) is not None
            or _views.is_ndarray_view(obj)
        ):
            raise _NeedsContsnap
        return NotImplemented


_NEEDS_CONTSNAP = frozenset(
    {types.CellType, weakref.ReferenceType, contextvars.ContextVar, types.TracebackType}
)


def _plainly_picklable(reduced: tuple[Any, ...]) -> bool:
    try:
        _Probe(_Discard(), protocol=pickle.HIGHEST_PROTOCOL).dump(reduced[1:3])
    except RecursionError:
        return False
    except Exception:
        return False
    return True


def generator_from_payload(payload: bytes) -> Any:
    """A generator saved by plain ``pickle`` (see _reduce_generator)."""
    return from_payload(payload)


def generator_by_name(*args: Any) -> Any:
    """`new_generator`, referenced by name in a plain pickle (see _reduce_generator)."""
    return new_generator(*args)


def closed_generator_by_name(info: FunctionInfo) -> Any:
    """`closed_generator`, referenced by name in a plain pickle."""
    return closed_generator(info)


def _reduce_state(
    state: FrameState, chain: list[tuple[Any, FrameState]] | None = None
) -> tuple[Any, ...]:
    if state.status == CLOSED:
        return (closed_generator, (state.info,))
    if chain:
        return (new_generator, _args(state), _Chain(state, chain), None, None, set_chain_state)
    return (new_generator, _args(state), state.values, None, None, set_generator_state)


def _make_cell() -> types.CellType:
    return types.CellType()


def _set_cell(cell: types.CellType, state: tuple[bool, Any]) -> None:
    full, value = state
    if full:
        cell.cell_contents = value


def _reduce_cell(cell: types.CellType) -> tuple[Any, ...]:
    try:
        state = (True, cell.cell_contents)
    except ValueError:
        state = (False, None)
    return (_make_cell, (), state, None, None, _set_cell)


def rebuild_exception(make: Any, args: tuple[Any, ...]) -> BaseException:
    """Rebuild a saved exception; one whose ``__init__`` needs more than its args still loads."""
    try:
        exc = make(*args)
    except Exception:
        if not (isinstance(make, type) and issubclass(make, BaseException)):
            raise
        exc = make.__new__(make, *args)
        exc.args = args
    if not isinstance(exc, BaseException):
        raise SnapshotCorruptError(f"a saved exception rebuilt as {type(exc).__name__}")
    return exc


def set_exception_state(exc: BaseException, state: tuple[Any, ...]) -> None:
    """Chaining and traceback are not pickled by Python; contsnap keeps them."""
    attributes, cause, context, suppress, traceback = state
    if attributes:
        if isinstance(attributes, tuple):  # (__dict__, slots)
            attributes, slots = attributes
            for name, value in (slots or {}).items():
                setattr(exc, name, value)
        if attributes:
            exc.__dict__.update(attributes)
    exc.__cause__ = cause
    exc.__context__ = context
    exc.__suppress_context__ = suppress
    if traceback is not None:
        exc.__traceback__ = traceback


# What ``import contsnap`` registers globally (docs/limitations.md): the reducer of the
# generator, coroutine and async generator types (nothing else can pickle them) and the
# extension codes below. Every other type contsnap saves its own way (cells, views,
# weak references, context variables...) is handled by the snapshot pickler only.
for _kind in SUSPENDABLE:
    copyreg.pickle(_kind, _reduce_generator)

# One-byte pickle opcodes for the reconstructors every snapshot names (codes in
# the range copyreg reserves for private use), keeping small snapshots small.
for _code, _func in enumerate(
    ("new_generator", "set_generator_state", "closed_generator", "_make_cell", "_set_cell"),
    start=240,
):
    copyreg.add_extension(__name__, _func, _code)
copyreg.add_extension("contsnap._info", "_info_by_name", 245)
copyreg.add_extension("contsnap._info", "_info_by_value", 246)
copyreg.add_extension(__name__, "rebuild_exception", 247)
copyreg.add_extension(__name__, "set_exception_state", 248)
copyreg.add_extension(__name__, "_chain_parts", 249)
copyreg.add_extension(__name__, "set_chain_state", 250)
copyreg.add_extension(__name__, "range_iterator", 251)
copyreg.add_extension(__name__, "function_at", 252)
copyreg.add_extension(__name__, "generator_at", 253)


_RANGE_ITERATOR = type(iter(range(0)))


def range_iterator(start: int, stop: int, step: int, position: int) -> Iterator[int]:
    """A ``range`` iterator that has produced ``position`` items (saved as four integers:
    stock pickle names ``iter`` and ``range`` and costs several times more)."""
    iterator = iter(range(start, stop, step))
    if position:
        iterator.__setstate__(position)  # type: ignore[attr-defined]
    return iterator


def _reduce_range_iterator(iterator: Any) -> tuple[Any, ...]:
    _iter, (whole,), position = iterator.__reduce__()
    # 3.12+ give the range still to go and no position; 3.10-3.11 the whole and where
    return (range_iterator, (whole.start, whole.stop, whole.step, position or 0))


# ---------------------------------------------------------------- functions by index

#: the functions table of the snapshot being loaded (its verified metadata's
#: ``functions``: [module, qualname, fingerprint]) and the infos resolved from it so far
_FUNCTIONS: contextvars.ContextVar[tuple[list[Any], dict[int, Any]] | None] = (
    contextvars.ContextVar("contsnap_functions", default=None)
)


def function_at(index: int) -> Any:
    """The info of entry ``index`` of the functions table the snapshot's metadata lists
    (format 3 names each importable function once, there, not again in the payload)."""
    table = _FUNCTIONS.get()
    if table is None:
        raise SnapshotCorruptError(
            "the snapshot names its functions by their place in a table of its metadata, "
            "which this load does not have; load it with contsnap.loads"
        )
    entries, resolved = table
    found = resolved.get(index)
    if found is not None:
        return found
    entry = entries[index] if type(index) is int and 0 <= index < len(entries) else None
    if not (
        type(entry) is list
        and 3 <= len(entry) <= 4
        and type(entry[0]) is str
        and type(entry[1]) is str
        and type(entry[2]) is str
    ):
        raise SnapshotCorruptError(
            f"the snapshot names function {index!r} of its metadata's table, which has no "
            "such entry; restore from an intact copy of the snapshot"
        )
    found = resolved[index] = _info_by_name(*entry[:3])
    return found


def generator_at(
    index: int,
    label: int,
    cells: tuple[types.CellType, ...],
    names: tuple[str, str] | None = None,
) -> Any:
    """`new_generator` of the function at ``index`` of the functions table (`function_at`):
    the payload of a format-3 snapshot names its generators' functions so."""
    return new_generator(function_at(index), label, cells, names)


class _NotFast(Exception):
    """The fast pickler met something only the full one saves as contsnap must."""


class _FastPickler(pickle.Pickler):
    """The C pickler, for the snapshots most programs take: every function and class named
    by import path. It answers the types a snapshot always holds first (generators, their
    function infos, cells, ``range`` iterators), lets plain pickle save every type whose
    saving contsnap and cloudpickle do not change, and gives up (`_NotFast`) on anything
    else: `to_payload` then pickles the whole object again with the full `_Pickler`. Its
    function infos are entries of `functions`, a table the codec writes in the metadata.
    """

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.buffer = file
        self.captured: dict[int, FrameState] = {}
        #: [module, qualname, fingerprint, file] of every function named, in order of first
        #: use, as JSON (see function_json), and their places in it by id of their info
        self.functions: list[str] = []
        self.function_index: dict[int, int] = {}
        #: the generators of chains being pickled, to pickle without their state (a
        #: _Chain carries it), by id, with that state
        self.shallow: dict[int, tuple[Any, FrameState]] = {}

    def reset(self) -> None:
        """Ready for the next snapshot (a pickler is made once and used again)."""
        self.clear_memo()
        self.buffer.seek(0)
        self.buffer.truncate()
        self.captured = {}
        self.functions = []
        self.function_index = {}
        self.shallow = {}

    def forget(self) -> None:
        """After a failed dump: nothing it saw stays referenced."""
        self.shallow.clear()
        self.captured.clear()
        self.clear_memo()

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        fast = _FAST_REDUCERS.get(kind)
        if fast is not None:
            return fast(self, obj)
        plain = _PLAIN.get(kind)
        if plain is None:
            plain = _PLAIN[kind] = _is_plain_type(kind)
        if plain:
            return NotImplemented
        if kind is types.FunctionType or isinstance(obj, type):
            known = _BY_PATH.get(id(obj))
            if known is None or known[0] is not obj:
                if len(_BY_PATH) >= 512:
                    _BY_PATH.clear()
                known = _BY_PATH[id(obj)] = (obj, _named_by_path(obj))
            if known[1]:
                return NotImplemented
        raise _NotFast

    def index_of(self, info: FunctionInfo) -> int:
        found = self.function_index.get(id(info))
        if found is None:
            found = self.function_index[id(info)] = len(self.functions)
            self.functions.append(function_json(info))
        return found


def function_json(info: FunctionInfo) -> str:
    """The functions-table entry of ``info`` in a format-3 snapshot's metadata, as JSON:
    ``[module, qualname, fingerprint, file]`` (made once per function)."""
    known = _FUNCTION_JSON.get(id(info))
    if known is not None and known[0] is info:
        return known[1]
    entry = json.dumps(
        [info.module, info.qualname, info.fingerprint, info.filename],
        separators=(",", ":"),
        allow_nan=False,
    )
    if len(_FUNCTION_JSON) >= 4096:
        _FUNCTION_JSON.clear()
    _FUNCTION_JSON[id(info)] = (info, entry)
    return entry


#: function_json by id of the info, with the info (so that the id stays its own)
_FUNCTION_JSON: dict[int, tuple[FunctionInfo, str]] = {}
STATE.add(__name__, "_FUNCTION_JSON", "clear")  # functions-table entries by function


def _fast_generator(pickler: _FastPickler, gen: Any) -> Any:
    if pickler.shallow:
        entry = pickler.shallow.pop(id(gen), None)
        if entry is not None and entry[0] is gen:  # a _Chain being pickled carries its state
            pickler.captured[id(gen)] = entry[1]
            return (generator_at, _fast_args(pickler, entry[1]))
    state = capture(gen)
    pickler.captured[id(gen)] = state
    if state.status == CLOSED:
        return (closed_generator, (state.info,))
    args = _fast_args(pickler, state)
    saved = pickler.captured.__contains__
    chain = _chain_below(state, lambda member: saved(id(member)))
    if chain:
        whole = _Chain(state, chain, register=False)
        for member, member_state in chain:
            pickler.shallow[id(member)] = (member, member_state)
        reduced: tuple[Any, ...] = (generator_at, args, whole, None, None, set_chain_state)
    else:
        reduced = (generator_at, args, state.values, None, None, set_generator_state)
    return _with_context(gen, reduced)


def _fast_args(pickler: _FastPickler, state: FrameState) -> tuple[Any, ...]:
    """`_args` with the function as its index in the pickler's functions table."""
    info = state.info
    at = pickler.function_index.get(id(info))
    if at is None:
        if not info.importable():
            raise _NotFast  # saved by value: cloudpickle
        at = pickler.index_of(info)
    args: tuple[Any, ...] = (at, state.label, state.cells)
    if state.names is not None:
        args += (state.names,)
    return args


def _fast_info(pickler: _FastPickler, info: FunctionInfo) -> Any:
    if not info.importable():
        raise _NotFast  # saved by value: cloudpickle
    return (function_at, (pickler.index_of(info),))


#: fast picklers ready for use (one per snapshot in progress at a time)
_FAST_PICKLERS: list[_FastPickler] = []
STATE.add(__name__, "_FAST_PICKLERS", "clear")  # a pool of picklers to reuse

_FAST_REDUCERS: dict[type, Callable[[_FastPickler, Any], Any]] = {
    kind: _fast_generator for kind in SUSPENDABLE
}
_FAST_REDUCERS[FunctionInfo] = _fast_info
_FAST_REDUCERS[types.CellType] = lambda _pickler, cell: _reduce_cell(cell)
_FAST_REDUCERS[_RANGE_ITERATOR] = lambda _pickler, it: _reduce_range_iterator(it)

#: types whose instances plain pickle saves as the full pickler would (see _is_plain_type),
#: valid while the resource handlers are those of `_resources.generation`
_PLAIN: dict[type, bool] = {}
STATE.add(__name__, "_PLAIN", "clear")  # which types the fast pickler saves as they are
_PLAIN_FOR = [-1]
STATE.add(
    __name__, "_PLAIN_FOR", lambda: _PLAIN_FOR.__setitem__(0, -1)
)  # _PLAIN is for this generation of resource handlers


def _is_plain_type(kind: type) -> bool:
    """Does plain pickle save instances of ``kind`` as the full pickler would?"""
    return not (
        issubclass(kind, (BaseException, type, types.FunctionType, types.TracebackType))
        or kind in _cp.Pickler._dispatch_table
        or kind in _views.REDUCERS
        or kind in (contextvars.ContextVar, _LiveGlobals, _SessionGlobals, _MainGlobals)
        or kind.__module__.split(".", 1)[0] in ("numpy", "cloudpickle")
        or _resources.handler_for(kind) is not None
        or "<locals>" in kind.__qualname__
        or not _named_by_path(kind)
    )


def _named_by_path(obj: Any) -> bool:
    """Does pickle name ``obj`` (a function or class) by import path, as cloudpickle
    would? Not when it lives in ``__main__``, a notebook or a function (by value)."""
    try:
        return bool(_cp._should_pickle_by_reference(obj)) and obj.__module__ not in _OWN_BY_VALUE
    except Exception:
        return False


_OWN_BY_VALUE = frozenset({"__main__", "__mp_main__"})
#: functions and classes seen by the fast pickler: (the object, named by path?), by id
_BY_PATH: dict[int, tuple[Any, bool]] = {}
STATE.add(__name__, "_BY_PATH", "clear")  # code reachable by path, by code object


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc,unused-ignore]
    """cloudpickle that keeps closure cells shared, and keeps identity when copying locally.

    cloudpickle gives every rebuilt closure fresh cells, which would split a
    generator's frame from the closures it made; here the real cell objects
    are pickled (memoised, so sharing survives). Exceptions keep their cause
    and context. With ``local=True`` (a copy within this process: fork,
    deepcopy) function infos, classes, module globals and tracebacks are
    passed by reference through `refs`, so a copy still sees live module
    state and exceptions keep their tracebacks.
    """

    def __init__(
        self, file: io.BytesIO, *, local: bool, keep: Callable[[Any], bool] | None = None
    ) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.local = local
        self.keep = keep
        #: every generator frame captured while pickling, by id of the generator
        self.captured: dict[int, FrameState] = {}
        #: objects passed by reference to an in-process copy
        self.refs: list[Any] = []
        #: the interactive namespace being saved as a whole, if any
        self.session = current_session()
        #: stands for the globals of ``__main__`` (a script's functions saved by value)
        self.main_globals: _MainGlobals | None = None
        _resources.resolve_refusals()

    def by_reference(self, obj: Any) -> tuple[Any, ...]:
        self.refs.append(obj)
        return (_local_ref, (len(self.refs) - 1,))

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if self.keep is not None and self.keep(obj):
            return self.by_reference(obj)
        if kind in _PREFIX:
            shallow = _shallow_state(obj)
            if shallow is not None:  # a _Chain being pickled carries its state
                self.captured[id(obj)] = shallow
                return (new_generator, _args(shallow))
            genexp = _genexps.reduce(obj) if info_of(obj) is None else None
            if genexp is not None:  # a generator expression of transformed code
                return genexp
            state = capture(obj)
            self.captured[id(obj)] = state
            return _with_context(obj, _reduce_state(state, _chain_below(state, self._saved)))
        if kind is types.CellType:
            return _reduce_cell(obj)
        if kind is _RANGE_ITERATOR:
            return _reduce_range_iterator(obj)
        view = _views.REDUCERS.get(kind)
        if view is not None:
            return view(obj)
        if _views.is_ndarray_view(obj):
            return _views.reduce_ndarray(obj)
        if kind is contextvars.ContextVar:
            return self.by_reference(obj) if self.local else _reduce_context_var(obj)
        if kind is types.FunctionType and obj.__module__ in _OWN_MODULES:
            return NotImplemented
        if kind is _LiveGlobals:
            return self.by_reference(obj.namespace)
        if kind is _SessionGlobals:
            return (_session_globals, ())
        if kind is _MainGlobals:
            return (_main_globals, (_PROCESS, obj.fallback))
        if _is_local_class(obj):
            return self._fresh_class_reduce(obj)
        if isinstance(obj, type) and not self.local:
            reduced = super().reducer_override(obj)
            if isinstance(reduced, tuple) and reduced[-1] is _cp._class_setstate:
                # a class saved by value: loaded where it already lives, it stays as is
                return by_value_class(reduced)
            return reduced
        if self.local and (
            kind is FunctionInfo or kind is types.TracebackType or isinstance(obj, type)
        ):
            return self.by_reference(obj)
        if kind is weakref.ReferenceType:
            return _reduce_weak_reference(obj)
        resource = _resources.handler_for(kind)
        if resource is not None:
            return _resources.reduce_resource(obj, resource)
        if isinstance(obj, BaseException):
            return self._reduce_exception(obj)
        if kind is types.TracebackType:
            return (_no_traceback, ())  # as pickle drops an exception's traceback
        return super().reducer_override(obj)

    def _saved(self, gen: Any) -> bool:
        """Is ``gen`` pickled already (or passed by reference)? A chain stops there."""
        return id(gen) in self.captured or (self.keep is not None and self.keep(gen))

    def _fresh_class_reduce(self, cls: type) -> Any:
        """A class defined in a function, by value and untracked: each load makes its own
        (cloudpickle would hand an in-process load the original, sharing its state)."""
        make, args, state, *rest = _cp._dynamic_class_reduce(cls)
        if make is _cp._make_skeleton_class:
            args = (*args[:4], None, *args[5:])  # no class tracker id
            if isinstance(state, tuple) and isinstance(state[0], dict):
                # cloudpickle drops it; a restored frame's class keeps its own
                state = ({**state[0], "__qualname__": cls.__qualname__}, *state[1:])
        return (make, args, state, *rest)

    def _reduce_exception(self, exc: BaseException) -> Any:
        reduced = exc.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
        if not isinstance(reduced, tuple) or len(reduced) < 2 or len(reduced) > 3:
            return super().reducer_override(exc)
        attributes = reduced[2] if len(reduced) == 3 else None
        traceback = exc.__traceback__ if self.local else None
        state = (attributes, exc.__cause__, exc.__context__, exc.__suppress_context__, traceback)
        return (rebuild_exception, reduced[:2], state, None, None, set_exception_state)

    def _dynamic_function_reduce(self, func: types.FunctionType) -> tuple[Any, ...]:
        if "__contsnap__" not in func.__dict__:
            pending_info(func)  # a function the hook made: its copy must carry its info
        code, base_globals, name, defaults, _empty = self._function_getnewargs(func)
        state, slotstate = _cp._function_getstate(func)
        if self.local:
            base_globals = _LiveGlobals(func.__globals__)
            slotstate["__globals__"] = {}
        elif self.session is not None and func.__globals__ is self.session:
            base_globals = _SESSION_GLOBALS
        elif func.__globals__ is _main_namespace():
            if self.main_globals is None:  # one per pickle: its functions share globals
                self.main_globals = _MainGlobals(base_globals)
            base_globals = self.main_globals
        newargs = (code, base_globals, name, defaults, func.__closure__)
        setter = set_function_state if "__contsnap__" in state else _cp._function_setstate
        if base_globals is self.main_globals:
            setter = set_main_function_state
        return (_cp._make_function, newargs, (state, slotstate), None, None, setter)


_cp: Any = importlib.import_module("cloudpickle.cloudpickle")
_OWN_MODULES = frozenset({__name__, "contsnap._info", "contsnap._runtime", "contsnap._resources"})

#: while ``pause()`` saves a task: its coroutine and the context variables the task set
TASK_CONTEXT: contextvars.ContextVar[tuple[Any, list[tuple[Any, Any]]] | None] = (
    contextvars.ContextVar("contsnap_task_context", default=None)
)


def context_var_address(var: contextvars.ContextVar[Any]) -> tuple[str, str] | None:
    """``(module, name)`` of the module-level variable that is ``var``, if there is one."""
    modules = list(sys.modules.items())
    for module_name, module in modules:  # first where its own name says
        if getattr(module, "__dict__", {}).get(var.name) is var:
            return module_name, var.name
    for module_name, module in modules:
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for name, value in list(namespace.items()):
            if value is var and isinstance(name, str):
                return module_name, name
    if var is _decimal_context_var():
        return "decimal", "getcontext"
    return None


def _decimal_context_var() -> Any:
    """The variable behind ``decimal.getcontext()`` (no module names it)."""
    decimal = sys.modules.get("decimal")
    if decimal is None:
        return None
    probe = contextvars.Context()
    probe.run(decimal.getcontext)
    return next(iter(probe), None)


def context_var(module_name: str, name: str) -> contextvars.ContextVar[Any]:
    """The module-level context variable a snapshot names (imports its module)."""
    if (module_name, name) == ("decimal", "getcontext"):
        importlib.import_module("decimal")
        var = _decimal_context_var()
    else:
        var = getattr(importlib.import_module(module_name), name, None)
    if type(var) is not contextvars.ContextVar:
        raise CheckpointError(
            f"the snapshot holds the context variable {module_name}.{name}, which this "
            "process's module does not define"
        )
    return var


def _reduce_context_var(var: contextvars.ContextVar[Any]) -> tuple[Any, ...]:
    address = context_var_address(var)
    if address is None:
        raise NotCheckpointableError(
            f"the context variable {var.name!r} ({var!r}) cannot be saved: it is not a global "
            "of an imported module, so no other process could find it; define it at module "
            "level (name = contextvars.ContextVar(...)), or reset it before the snapshot"
        )
    return (context_var, address)


#: the by-reference table of the in-process copy being loaded
_REFS: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "contsnap_refs", default=None
)


def _no_traceback() -> None:
    return None


def _local_ref(index: int) -> Any:
    refs = _REFS.get()
    if refs is None or not 0 <= index < len(refs):
        raise SnapshotCorruptError(
            "the snapshot refers to objects of an in-process copy; it cannot be loaded here"
        )
    return refs[index]


class _LiveGlobals:
    """Stands for a module's globals in an in-process copy (pickled by reference)."""

    __slots__ = ("namespace",)

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace


class _SessionGlobals:
    """Stands for the namespace of the interactive session being saved (one per pickle)."""

    __slots__ = ()


_SESSION_GLOBALS = _SessionGlobals()


def _session_globals() -> dict[str, Any]:
    """The namespace a session snapshot is restored into (a fresh one outside a session)."""
    namespace = current_session()
    return namespace if namespace is not None else {}


#: this process, as a snapshot names it: a load in the process that saved binds the
#: functions of its script to the live ``__main__`` globals, not to a copy
_PROCESS = uuid.uuid4().hex


def _main_namespace() -> dict[str, Any] | None:
    main = sys.modules.get("__main__")
    return getattr(main, "__dict__", None)


class _MainGlobals:
    """Stands for the globals of ``__main__``: the live ones when loaded in the process that
    saved them, else ``fallback`` (the module attributes cloudpickle keeps) and a copy of
    the globals each function uses, as cloudpickle does."""

    __slots__ = ("fallback",)

    def __init__(self, fallback: dict[str, Any]) -> None:
        self.fallback = fallback


def _main_globals(process: str, fallback: dict[str, Any]) -> dict[str, Any]:
    namespace = _main_namespace()
    return namespace if process == _PROCESS and namespace is not None else fallback


def set_main_function_state(fn: types.FunctionType, state: Any) -> None:
    """The state of a function of ``__main__``: loaded in the process that saved it, its
    globals are the live ones, which the snapshot's copies never overwrite (they only fill
    names the script has deleted since)."""
    namespace = fn.__globals__
    if namespace is not _main_namespace():
        set_function_state(fn, state)
        return
    attributes, slots = state
    slots = dict(slots)
    for name, value in slots.pop("__globals__").items():
        namespace.setdefault(name, value)
    builtins = namespace.get("__builtins__")
    set_function_state(fn, (attributes, {**slots, "__globals__": {}}))
    namespace["__builtins__"] = builtins  # cloudpickle sets its own: keep the script's


def set_function_state(fn: types.FunctionType, state: Any) -> None:
    """cloudpickle's function state setter, then adopt a checkpointable function by value."""
    _cp._function_setstate(fn, state)
    adopt_function(fn)


def to_payload(
    obj: Any, *, local: bool = False, keep: Callable[[Any], bool] | None = None
) -> tuple[bytes, dict[int, FrameState], list[Any]]:
    """Pickle ``obj`` (usually a generator); a failure names the variable that caused it.

    Returns the bytes, the frames captured on the way (by id of their
    generator) and, for a local copy, the objects passed by reference.
    """
    return _full_payload(obj, local=local, keep=keep)


def to_indexed_payload(
    obj: Any,
) -> tuple[bytes, dict[int, FrameState], tuple[dict[int, int], list[str]] | None]:
    """Pickle ``obj`` for the codec, the fast way when it can (see `_FastPickler`).

    Returns the bytes, the frames captured and the functions table the payload refers to
    (to be written in the metadata: the places of the infos by their id, and each entry
    as JSON; None when the full pickler made the payload).
    """
    if current_session() is None:
        if _PLAIN_FOR[0] != _resources.generation():
            _PLAIN.clear()
            _PLAIN_FOR[0] = _resources.generation()
        _resources.resolve_refusals()
        try:
            pickler = _FAST_PICKLERS.pop()
        except IndexError:  # none free (the first, another thread's, a nested snapshot)
            pickler = _FastPickler(io.BytesIO())
        buffer = pickler.buffer
        try:
            pickler.dump(obj)
        except Exception:  # _NotFast, or an error the full pickler will describe
            pickler.forget()
        else:
            table = (pickler.function_index, pickler.functions)
            result = buffer.getvalue(), pickler.captured, table
            pickler.reset()
            _FAST_PICKLERS.append(pickler)
            return result
    _resources.resolve_refusals(force=True)
    payload, captured, _refs = _full_payload(obj, local=False, keep=None)
    return payload, captured, None


def _full_payload(
    obj: Any, *, local: bool, keep: Callable[[Any], bool] | None
) -> tuple[bytes, dict[int, FrameState], list[Any]]:
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, local=local, keep=keep)
    try:
        pickler.dump(obj)
    except CheckpointError as exc:
        raise _diagnose(obj, exc) or exc from None
    except RecursionError:
        raise NotCheckpointableError(
            "the snapshot is nested too deeply to serialise (a very long chain of objects?)"
        ) from None
    except Exception as exc:
        diagnosed = _diagnose(obj, exc)
        if diagnosed is not None:
            raise diagnosed from exc
        raise NotCheckpointableError(
            f"cannot serialise the snapshot: {type(exc).__name__}: {exc}"
        ) from exc
    return buffer.getvalue(), pickler.captured, pickler.refs


def from_payload(
    data: bytes | memoryview,
    refs: list[Any] | None = None,
    *,
    functions: list[Any] | None = None,
    old_paths: bool = False,
) -> Any:
    """Unpickle a payload; restored generators are primed once the load is complete.

    ``functions`` is the functions table of the verified metadata the payload refers to
    (format 3; see `function_at`). ``old_paths``: the payload was written before contsnap's
    modules moved into packages (formats 1 and 2), so the module paths it names are mapped
    (`contsnap._moved`); a newer payload names only current paths and is unpickled as it is,
    without the mapping's Python-level lookups or a copy of a large payload.
    """
    refs_token = _REFS.set(refs)
    functions_token = _FUNCTIONS.set((functions, {}) if functions is not None else None)
    try:
        with _load_context():
            return _moved.loads(data) if old_paths else pickle.loads(data)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"the snapshot's contents cannot be rebuilt in this process: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        _FUNCTIONS.reset(functions_token)
        _REFS.reset(refs_token)


def _locals_to_diagnose(gen: Any) -> tuple[FrameState, Iterator[tuple[str, Any]]] | None:
    """The frame of ``gen`` and its locals, the user's own variables first: a file is
    better named as ``f`` than as the iterator of the for loop reading it."""
    if info_of(gen) is None:
        return None
    try:
        state = capture(gen)
    except CheckpointError:
        return None
    return state, iter(sorted(state.values.items(), key=lambda item: _local_order(item[0])))


def _diagnose(gen: Any, exc: BaseException) -> NotCheckpointableError | None:
    """Find the local variable whose value made pickling fail.

    Depth first through the generators the frames hold (a delegation chain may be as
    deep as native Python allows: a stack, not recursion).
    """
    first = _locals_to_diagnose(gen)
    if first is None:
        return None
    stack = [first]
    visited = {id(gen)}
    while stack:
        state, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        name, value = item
        if info_of(value) is not None:
            if id(value) not in visited and len(visited) < 100_000:
                visited.add(id(value))
                inner = _locals_to_diagnose(value)
                if inner is not None:
                    stack.append(inner)
            continue
        try:
            to_payload(value, local=True)
        except Exception as err:
            holder = _describe_local(name, state)
            if _genexps.factory_of(value) is not None:
                code = _attr(value, "code")
                cause = err.__cause__ or err if isinstance(err, NotCheckpointableError) else err
                return NotCheckpointableError(
                    f"cannot snapshot {state.info.where(state.label)}: {holder} holds the "
                    f"{noun(value)} expression at {code.co_filename}:{code.co_firstlineno}, "
                    f"which cannot be saved: {cause}"
                )
            if type(value) in _PREFIX:
                code = _attr(value, "code")
                where = f"{value.__qualname__} ({code.co_filename}:{code.co_firstlineno})"
                if name.startswith("_cs_dlg_"):
                    what = f"it delegates (yield from) to the generator {where}"
                else:
                    what = f"{holder} holds the {noun(value)} {where}"
                if code.co_name == "<genexpr>":
                    return NotCheckpointableError(
                        f"cannot snapshot {state.info.where(state.label)}: {what}, a generator "
                        "expression contsnap leaves native (several for clauses over several "
                        "lines or asynchronous, a walrus, a first iterable over several lines, "
                        "inside an f-string, or made outside a marked function); write it on "
                        "one line, or as a marked generator function"
                    )
                return NotCheckpointableError(
                    f"cannot snapshot {state.info.where(state.label)}: {what}, which is not "
                    "checkpointable; mark its function with @contsnap.checkpointable"
                )
            if isinstance(err, _resources.ResourceRefused):
                held = err.reason
                if type(value) is not err.kind:
                    held = f"a {_resources.type_name(type(value))} object that refers to {held}"
                advice = f"; {err.advice}" if err.advice else ""
                where = state.info.where(state.label)
                return NotCheckpointableError(
                    f"cannot snapshot {where}: {holder} holds {held}{advice}"
                )
            cause = err.__cause__ or err if isinstance(err, NotCheckpointableError) else err
            return NotCheckpointableError(
                f"cannot snapshot {state.info.where(state.label)}: {holder} holds a "
                f"{type(value).__module__}.{type(value).__qualname__} object, which cannot be "
                f"serialised ({type(cause).__name__}: {cause}); keep it out of the generator's "
                "locals across yields, or register a resource handler for its type"
            )
    return None


_HELPER_MEANING = {
    "iter": "the iterator of a for loop",
    "dlg": "the delegate of its yield from",
    "mgr": "the context manager of a with statement",
    "amgr": "the async context manager of an async with statement",
    "aiter": "the async iterator of an async for loop",
    "aitem": "the step in flight of an async for loop",
    "aent": "what an async with statement's __aenter__ returned",
    "ent": "what a with statement's __enter__ returned",
    "aw": "the awaitable of an await",
    "t": "a partial result of an expression",
    "aug": "a partial result of an augmented assignment",
    "hx": "the exception being handled",
    "fx": "the exception passing through a finally block",
    "rv": "the value being returned",
}


def _local_order(name: str) -> tuple[bool, str]:
    return (name.startswith("_cs_"), name)


def _describe_local(name: str, state: FrameState) -> str:
    if not name.startswith("_cs_"):
        return f"local variable {name!r}"
    kind = name[len("_cs_") :].rsplit("_", 1)[0]
    return _HELPER_MEANING.get(kind, f"the internal value {name!r}")


def _expect_generator(gen: Any, verb: str) -> FunctionInfo:
    info = info_of(gen)
    if info is None:
        if type(gen) in _PREFIX:
            raise _unmarked(gen)
        raise TypeError(
            f"{verb} needs a checkpointable generator or coroutine, got {type(gen).__name__}"
        )
    return info


def copy_generator(gen: Any) -> Any:
    """An independent copy of a paused generator, within this process."""
    _expect_generator(gen, "fork()")
    payload, _captured, refs = to_payload(gen, local=True)
    return from_payload(payload, refs)


# ---------------------------------------------------------------- copy module


def _deepcopy_generator(gen: Any, memo: dict[int, Any]) -> Any:
    """``copy.deepcopy`` of a generator: honours the memo, so shared objects stay shared.

    The generators it delegates to are made first (into the memo), then every level's
    locals are copied: no recursion per level of a long ``yield from`` chain.
    """
    genexp = _genexps.deepcopy(gen, memo) if info_of(gen) is None else None
    if genexp is not None:
        return genexp
    state = capture(gen)
    if state.status != CLOSED and not _plainly_copyable(state, memo):
        return _deepcopy_as_fork(gen, memo)
    try:
        return _deepcopy_levels(gen, state, memo)
    except CheckpointError:
        raise
    except Exception:
        return _deepcopy_as_fork(gen, memo)


def _bound_builtin(value: Any) -> bool:
    """A builtin method bound to an object (``seen.__contains__``), not to a module or class."""
    if type(value) not in (types.BuiltinMethodType, types.MethodWrapperType):
        return False
    owner = getattr(value, "__self__", None)
    return owner is not None and not isinstance(owner, (types.ModuleType, type))


def _deepcopy_local(value: Any, memo: dict[int, Any]) -> Any:
    """A local of a copied frame; a bound builtin method (plain deepcopy keeps it as it is)
    follows its object's copy, as a snapshot's does."""
    if _bound_builtin(value):
        return getattr(copy.deepcopy(value.__self__, memo), value.__name__)
    return copy.deepcopy(value, memo)


def _deepcopy_as_fork(gen: Any, memo: dict[int, Any]) -> Any:
    """What plain deepcopy does not copy as a snapshot does (local functions and classes,
    cells, views, bound builtin methods, weak references, exceptions, an open file, a
    lock...): copied as fork() copies it, through the resource handlers, or refused with
    the same error naming the variable."""
    copied = copy_generator(gen)
    memo[id(gen)] = copied
    return copied


def _plainly_copyable(state: FrameState, memo: dict[int, Any]) -> bool:
    """Does plain deepcopy copy every level's locals as a snapshot would?"""
    levels = [state, *(level for _, level in _chain_below(state, lambda m: id(m) in memo))]
    try:
        _Probe(_Discard(), protocol=pickle.HIGHEST_PROTOCOL, copying=True).dump(
            [
                {k: v.__self__ if _bound_builtin(v) else v for k, v in level.values.items()}
                for level in levels
            ]
        )
    except Exception:
        return False
    return True


def _deepcopy_levels(gen: Any, state: FrameState, memo: dict[int, Any]) -> Any:
    if state.status == CLOSED:
        result = closed_generator(state.info)
        memo[id(gen)] = result
        return result
    levels = [(gen, state), *_chain_below(state, lambda member: id(member) in memo)]
    with _load_context():
        made: list[Any] = []
        for original, level in levels:
            cells = tuple(_deepcopy_cell(cell, memo) for cell in level.cells)
            if id(original) in memo:  # copied whole already, through a cell that holds it
                made.append(None)
                continue
            copied = new_generator(level.info, level.label, cells, level.names)
            memo[id(original)] = copied
            made.append(copied)
        for copied, (original, level) in zip(made, levels):
            if copied is None:
                continue
            values: Any = {k: _deepcopy_local(v, memo) for k, v in level.values.items()}
            pending = _runtime.PENDING_CONTEXT.get(original)
            if pending is not None:  # restored from a paused task, not run yet
                values = (values, copy.deepcopy(pending[1], memo))
            set_generator_state(copied, values)
    return memo[id(gen)]


def _dead_reference() -> weakref.ReferenceType[Any]:
    """A weak reference whose object is gone."""
    gone = _Referent()
    reference = weakref.ref(gone)
    del gone
    return reference


class _Referent:
    __slots__ = ("__weakref__",)


def _weak_reference(referent: Any, callback: Any = None) -> weakref.ReferenceType[Any]:
    """A weak reference to the restored object (dead when nothing else restored holds it)."""
    return weakref.ref(referent, callback)


def _reduce_weak_reference(reference: weakref.ReferenceType[Any]) -> tuple[Any, ...]:
    referent = reference()
    if referent is None:
        return (_dead_reference, ())
    callback = reference.__callback__
    return (_weak_reference, (referent,) if callback is None else (referent, callback))


def _is_local_class(cls: Any) -> bool:
    """A class a function defines (each call makes a new one): a copy gets its own."""
    return (
        isinstance(cls, type)
        and type(cls) is type
        and "<locals>" in getattr(cls, "__qualname__", "")
        and not _cp._should_pickle_by_reference(cls)
    )


def _deepcopy_cell(cell: types.CellType, memo: dict[int, Any]) -> types.CellType:
    found = memo.get(id(cell))
    if found is not None:
        return found  # type: ignore[no-any-return]
    new = types.CellType()
    memo[id(cell)] = new
    try:
        contents = cell.cell_contents
    except ValueError:
        return new
    new.cell_contents = copy.deepcopy(contents, memo)
    return new


def _copy_generator_shallow(gen: Any) -> Any:
    """``copy.copy``: a second continuation sharing every local (and closure cell)."""
    with _load_context():
        result = rebuild(capture(gen))
    return result


for _kind in SUSPENDABLE:
    copy._deepcopy_dispatch[_kind] = _deepcopy_generator  # type: ignore[attr-defined]
for _kind in SUSPENDABLE:
    copy._copy_dispatch[_kind] = _copy_generator_shallow  # type: ignore[attr-defined]


# ---------------------------------------------------------------- detach


def delegation_chain(gen: Any) -> list[Any]:
    """``gen`` and what it delegates to (``yield from`` / ``await``), as the snapshot saw it."""
    chain = [gen]
    current = gen
    while info_of(current) is not None and len(chain) < 10_000:
        if _attr(current, "frame") is None or _is_created(current):
            break
        delegate = capture(current).delegate
        if delegate is None:
            break
        chain.append(delegate)
        if isinstance(delegate, _runtime.ANext):  # an async for step: into its generator
            delegate = delegate.in_flight() or delegate.iterator
            chain.append(delegate)
        current = delegate
    return chain


def owned_generators(state: FrameState) -> list[Any]:
    """Checkpointable generators the frame holds directly: they moved with it."""
    found = []
    for value in state.values.values():
        if isinstance(value, contextlib.AbstractContextManager):
            value = getattr(value, "gen", None)  # a @contextmanager's generator
        elif isinstance(value, _runtime.ANext):
            value = value.iterator
        if info_of(value) is not None and _attr(value, "frame") is not None:
            found.append(value)
    return found


def _end_unstarted(gen: Any) -> None:
    if type(gen) is types.AsyncGeneratorType:
        gen.aclose().close()
    else:
        gen.close()


def _throw_detach(gen: Any) -> None:
    """Throw the private Detach in; it must come back out (the frame is then finished)."""
    if type(gen) is types.AsyncGeneratorType and gen.ag_running:
        raise NotCheckpointableError(
            f"cannot detach {gen.__qualname__} in the middle of a step (an asend() that is "
            "awaiting): detach the coroutine that drives it, or let the step finish"
        )
    try:
        if type(gen) is types.AsyncGeneratorType:
            step = gen.athrow(_runtime.Detach())
            step.send(None)
            step.close()
        else:
            gen.throw(_runtime.Detach())
    except BaseException as exc:  # the Detach coming back is the success case
        if not _runtime.is_detach(exc):
            raise
    else:
        _end_unstarted(gen) if _is_created(gen) else gen.close()
        raise NotCheckpointableError(
            f"{gen.__qualname__} went on running while being detached; it was closed instead"
        )


def _has_own_throw(obj: Any) -> bool:
    try:
        return callable(getattr(obj, "throw", None))
    except Exception:  # a __getattr__ that fails: assume the worst
        return True


def detach_obstacle(gen: Any) -> str | None:
    """Why [`detach`][contsnap.detach] would refuse ``gen`` (None when it would not)."""
    try:
        for member in delegation_chain(gen):
            if _genexps.factory_of(member) is not None:
                continue  # a generator expression of transformed code: nothing to run
            if type(member) in _PREFIX and info_of(member) is None:
                return f"it delegates to the unmarked {noun(member)} {member.__qualname__}"
            if type(member) in _PREFIX:
                capture(member)
            elif not hasattr(type(member), "__contsnap_resume__") and _has_own_throw(member):
                return f"it delegates to a {type(member).__qualname__} object with its own throw()"
    except NotCheckpointableError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def detach(gen: Any, *, owned: bool = True) -> None:
    """End ``gen`` without running its ``finally`` blocks or context-manager exits.

    The whole ``yield from`` / ``await`` chain is ended, and so are the
    checkpointable generators the frames hold in their locals (a ``for``
    loop's iterator, a ``@contextmanager``, an ``async for``'s async
    generator): their continuation moved with the snapshot too.
    """
    info = _expect_generator(gen, "detach()")
    if _running(gen):
        raise NotCheckpointableError(f"cannot detach {info.qualname} while it is running")
    if _attr(gen, "frame") is None:
        return
    if _is_created(gen):
        _end_unstarted(gen)
        return
    chain = delegation_chain(gen)
    held: list[Any] = []
    for member in chain:
        if _genexps.factory_of(member) is not None:
            continue  # a generator expression of transformed code: no finally to skip
        if type(member) in _PREFIX:
            if info_of(member) is None:
                raise _unmarked(member)
            state = capture(member)  # refuses where a snapshot would be refused
            held.extend(g for g in owned_generators(state) if not any(g is m for m in chain))
        elif hasattr(type(member), "__contsnap_resume__"):
            continue  # a contsnap safe point: a detach passes through it
        elif _has_own_throw(member):
            raise NotCheckpointableError(
                f"cannot detach {info.qualname}: it delegates (yield from) to a "
                f"{type(member).__qualname__} object, whose own throw() would run its code"
            )
    for inner in held if owned else ():
        if _attr(inner, "frame") is not None:
            detach(inner)
    _throw_detach(gen)


def waiting_point(obj: Any) -> str:
    """Where a suspended chain of coroutines waits, for error messages."""
    current = obj
    while info_of(current) is not None:
        info = info_of(current)
        assert info is not None
        if _attr(current, "frame") is None:
            return f"{info.qualname} has finished"
        try:
            state = capture(current)
        except NotCheckpointableError as exc:
            return str(exc).removeprefix("cannot snapshot ")
        delegate = state.delegate
        if delegate is None or info_of(delegate) is None:
            where = f"{info.filename}:{info.line_of(state.label)}"
            return f"{info.qualname} awaits {delegate!r} at {where}"
        current = delegate
    return f"it awaits {obj!r}"
