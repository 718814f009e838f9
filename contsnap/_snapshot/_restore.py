"""Rebuild a generator from its frame state: made without its state, the state set
(checked) afterwards, primed once so it waits where the original did; a load's context.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import sys
import types
import weakref
from collections.abc import Iterator
from typing import Any

from .. import _runtime
from .._errors import SnapshotCorruptError
from .._info import FunctionInfo
from .._migrate import Migrating
from .._registry import STATE
from ._capture import _CLOSED, _UNSTARTED_BOX, CLOSED, FrameState, _Box, _weak_data

# Generators made by a pickle load whose state has not arrived yet.
_AWAITING_STATE: weakref.WeakKeyDictionary[Any, _Box] = weakref.WeakKeyDictionary()
STATE.add(__name__, "_AWAITING_STATE", None, "generators a load made, their state still to come")
# Generators of changed code whose old state goes through a migration when it arrives.
_MIGRATING: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
STATE.add(__name__, "_MIGRATING", None, "generators whose old state goes through a migration")


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


def module_attribute(module: str, name: str, attribute: str | None) -> Any:
    """A global of an importable module that a snapshot named instead of copying it (see
    `globals_by_name`), or its bound method ``attribute``."""
    try:
        value = vars(importlib.import_module(module))[name]
    except (ImportError, KeyError):
        raise SnapshotCorruptError(
            f"the snapshot names the global {module}.{name}, which is not there"
        ) from None
    return value if attribute is None else getattr(value, attribute)


class _GlobalByName:
    """A helper local's value that is a global of the function's module: pickled by
    name, deep-copied as itself."""

    __slots__ = ("value", "where")

    def __init__(self, value: Any, where: tuple[str, str, str | None]) -> None:
        self.value = value
        self.where = where

    def __reduce__(self) -> tuple[Any, ...]:
        return (module_attribute, self.where)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self.value


#: what a helper local may hold that is saved by path or by value anyway
_NOT_GLOBALS = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        complex,
        str,
        bytes,
        types.FunctionType,
        types.ModuleType,
        type,
    }
)
_BOUND = (types.BuiltinMethodType, types.MethodType)
_BY_VALUE_MODULES = frozenset({"__main__", "__mp_main__"})


def globals_by_name(state: FrameState) -> dict[str, Any]:
    """``state.values``, where a helper local of the transformed code holds a global of
    the function's module (or a bound method of one), that value named instead.

    The transform keeps what Python evaluated before a yield in a helper
    (``results.append((yield x))`` holds ``results.append``; a ``for`` over a
    global iterator, a ``with`` over a global manager hold it): the user wrote the
    global's name, and copied with the snapshot it would no longer be the
    module's object (the append would go to a copy of ``results``). The user's own
    locals are copied as documented. Not for a function of ``__main__``, whose
    globals travel with it (by value, in the same pickle).
    """
    spec = state.spec
    values = state.values
    if spec is None or not spec.helpers:
        return values
    names = _global_names(state.info)
    if not names:
        return values
    namespace = state.info.globals
    replaced: dict[str, Any] | None = None
    for local in spec.helpers:
        value = target = values.get(local, _NOT_HELD)
        if type(value) in _NOT_GLOBALS:
            continue
        attribute = None
        if type(value) in _BOUND:  # (a builtin function is bound to its module)
            target = value.__self__
            attribute = value.__name__
            if target is None or type(target) is types.ModuleType:
                continue
            try:
                if getattr(target, attribute) != value:
                    continue
            except Exception:
                continue
        # only a global the function names can have been evaluated before its yield
        name = next((n for n in names if namespace.get(n) is target), None)
        if name is None:
            continue
        if replaced is None:
            replaced = dict(values)
        replaced[local] = _GlobalByName(value, (state.info.module, name, attribute))
    return values if replaced is None else replaced


_NOT_HELD = object()
#: per function (by its fresh code): the number of globals of its module when last
#: looked, and the globals it names that may be held by a helper (see `_global_names`)
_GLOBAL_NAMES: dict[int, tuple[Any, int, tuple[str, ...]]] = {}
STATE.add(__name__, "_GLOBAL_NAMES", "clear")  # per function: the globals it names


def _global_names(info: FunctionInfo) -> tuple[str, ...]:
    """The names of the module's globals the function's code names, that are neither
    functions, classes, modules nor plain values (those are saved as they are);
    recomputed when the module gains or loses a global. Empty for a module that is
    not importable as itself (``__main__``, exec'd code)."""
    code = info.fresh_code
    if code is None:
        return ()
    namespace = info.globals
    found = _GLOBAL_NAMES.get(id(code))
    if found is not None and found[0] is code and found[1] == len(namespace):
        return found[2]
    module = sys.modules.get(info.module)
    names: tuple[str, ...] = ()
    if info.module not in _BY_VALUE_MODULES and getattr(module, "__dict__", None) is namespace:
        names = tuple(
            name
            for name in code.co_names
            if name in namespace
            and not name.startswith("__contsnap")
            and type(namespace[name]) not in _NOT_GLOBALS
        )
    _GLOBAL_NAMES[id(code)] = (code, len(namespace), names)
    return names


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
        # an unstarted async generator closes without an event loop, but only when its
        # aclose() runs (closing the awaitable unstarted leaves the generator unstarted:
        # its copy then yielded None where the original was exhausted)
        try:
            gen.aclose().send(None)
        except StopIteration:
            pass
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
