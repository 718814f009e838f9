"""What a paused generator holds: its frame state (`FrameState`), read from the frame
(`capture`), and which function it runs (`info_of`).
"""

from __future__ import annotations

import gc
import inspect
import sys
import types
import weakref
from dataclasses import dataclass
from typing import Any

from .. import _runtime
from .._errors import NotCheckpointableError
from .._info import FunctionInfo, info_for_code
from .._registry import STATE

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
_ITERABLE_COROUTINE = _runtime.ITERABLE_COROUTINE


async def _a_coroutine() -> None:
    pass


def _wrapper_type() -> type:
    coro = _a_coroutine()
    try:
        return type(coro.__await__())
    finally:
        coro.close()


#: what ``coro.__await__()`` returns: an ``__await__`` may hand that on
_COROUTINE_WRAPPER = _wrapper_type()


async def _an_async_generator() -> Any:
    yield


def _asend_type() -> type:
    agen = _an_async_generator()
    step = agen.asend(None)
    try:
        return type(step)
    finally:
        step.close()


#: what ``agen.asend(v)``, ``agen.__anext__()`` and ``anext(agen)`` return
_ASEND = _asend_type()


def _athrow_type() -> type:
    step = _an_async_generator().aclose()
    try:
        return type(step)
    finally:
        step.close()


#: what ``agen.athrow(...)`` and ``agen.aclose()`` return
_ATHROW = _athrow_type()
#: before 3.13 ``frame.f_locals`` is a dict cached on the frame (see read_locals)
_CACHED_LOCALS = sys.version_info < (3, 13)
#: what a coroutine (an async generator) is awaiting: the iterator its frame delegates to
_AWAITING = {types.CoroutineType: "cr_await", types.AsyncGeneratorType: "ag_await"}
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
    elif type(gen) is types.CoroutineType and _SUSPENDED_FLAG and gen.cr_suspended:  # type: ignore[attr-defined,unused-ignore]
        # the same for a coroutine (an actor, a paused task)
        frame = gen.cr_frame
        info = info_for_code(gen.cr_code, frame.f_globals)  # type: ignore[union-attr]
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
    step: Any = None
    if spec.kind == "await":
        awaited = local.get(spec.delegate or "")
        if type(awaited) is _runtime.ANext:
            pass  # the step of a spelled-out ``async for``, or a resumed one: held in its local
        elif spec.anext_of is not None:
            # a native ``async for`` step: what it awaits is the frame's own
            awaited = step = _runtime.ANext(local.get(spec.anext_of), _attr(gen, "await"))
        else:
            # the frame holds what it awaits (the local, if any, is a restored frame's
            # saved awaitable, which the frame may have gone past)
            awaited = step = awaited_of(getattr(gen, _AWAITING.get(type(gen), "gi_yieldfrom")))
        if isinstance(awaited, _runtime.ANext):
            try:
                awaited.in_flight()
            except TypeError as exc:
                where = info.where(label)
                raise NotCheckpointableError(f"cannot snapshot {where}: {exc}") from None
        if info_of(awaited) is None and not hasattr(type(awaited), "__contsnap_resume__"):
            raise NotCheckpointableError(
                f"cannot snapshot {info.where(label)}: it awaits {_described(awaited)}, which "
                "is not a safe point; await contsnap.checkpoint(), contsnap.sleep(), a "
                "contsnap.Queue, or a checkpointable coroutine"
            )
    saved = info.saved_names_without_cells(label)
    values = {n: v for n, v in local.items() if n in saved}
    if step is not None:
        values[spec.delegate] = step
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


def _context_manager_step(coro: Any) -> Any:
    """An ``@asynccontextmanager``'s ``__aenter__``, or its ``__aexit__`` without an
    exception, paused inside the step of its marked async generator: the rest of it."""
    frame = coro.cr_frame
    step = coro.cr_await
    if frame is None or type(step) not in (_ASEND, _ATHROW):
        return None
    local = frame.f_locals
    manager, exc_type, value = local.get("self"), local.get("typ"), local.get("value")
    if _CACHED_LOCALS:
        local.clear()  # see read_locals
    agen = getattr(manager, "gen", None)
    referents = gc.get_referents(step)
    if info_of(agen) is None or not any(r is agen for r in referents):
        return None
    # an athrow() holds its arguments, an aclose() (after "didn't stop") only the generator
    closing = type(step) is _ATHROW and len(referents) == 1
    if coro.cr_code is _runtime.ACM_ENTER_CODE:
        return _runtime.ContextManagerStep(agen, "enter") if type(step) is _ASEND else None
    if exc_type is None:
        if type(step) is _ASEND or closing:
            return _runtime.ContextManagerStep(agen, "exit", closing)
        return None
    if type(step) is _ATHROW and isinstance(value, BaseException):
        return _runtime.ContextManagerThrow(agen, value, closing)
    return None


def safe_point_of(gen: Any) -> Any:
    """The safe point whose own ``__await__`` generator ``gen`` is (unmarked), or None."""
    if info_of(gen) is not None or gen.gi_frame is None:
        return None
    point = awaited_of(gen)
    return point if point is not gen and hasattr(type(point), "__contsnap_resume__") else None


def wrapped_coroutine(wrapper: Any) -> Any:
    """The checkpointable coroutine whose ``__await__()`` made ``wrapper``, or None."""
    if type(wrapper) is _COROUTINE_WRAPPER:
        for coro in gc.get_referents(wrapper):
            if type(coro) is types.CoroutineType and info_of(coro) is not None:
                return coro
    return None


def awaited_of(iterator: Any) -> Any:
    """What an ``await`` is waiting on, from the iterator the frame delegates to.

    ``cr_await`` / ``ag_await`` is that iterator: a coroutine (or a
    ``@types.coroutine`` generator) awaited is its own iterator; a safe point's
    ``__await__(self)`` is a generator function, whose frame holds the safe
    point; a ``__await__`` that returned a checkpointable generator is awaited
    again through that generator. Anything else comes back as it is (a
    snapshot refuses it).
    """
    kind = type(iterator)
    if kind is types.CoroutineType:
        code = iterator.cr_code
        if code is _runtime.ACM_ENTER_CODE or code is _runtime.ACM_EXIT_CODE:
            return _context_manager_step(iterator) or iterator
        return iterator
    if kind is _COROUTINE_WRAPPER:
        # ``def __await__(self): return self.run().__await__()``: awaiting the coroutine
        # itself goes on the same way (the wrapper only passes send/throw/close on)
        return wrapped_coroutine(iterator) or iterator
    if kind is _ASEND:
        # ``await agen.asend(v)`` (``__anext__()``, ``anext(agen)``) in the middle of the
        # step: the generator's frame holds where, so the rest is an async for's step
        for agen in gc.get_referents(iterator):
            if type(agen) is types.AsyncGeneratorType and info_of(agen) is not None:
                return _runtime.ANext(agen)
        return iterator
    if kind is not types.GeneratorType:
        return iterator
    code = iterator.gi_code
    if code.co_flags & _ITERABLE_COROUTINE:
        return iterator
    if code.co_name == "__await__":
        # a safe point's own ``__await__(self)`` (its class says so: same code, and a
        # resume); not ``co_varnames``, which 3.11+ build anew at every read
        local = iterator.gi_frame.f_locals
        point = local.get("self")
        if _CACHED_LOCALS:
            local.clear()  # see read_locals
        kind = type(point)
        method = getattr(kind, "__await__", None)
        if getattr(method, "__code__", None) is code and hasattr(kind, "__contsnap_resume__"):
            return point
    if info_of(iterator) is not None:
        return _runtime.AwaitGenerator(iterator)
    return iterator


def _described(awaited: Any) -> str:
    """``awaited`` for an error message: an awaitable's own iterator is named by its
    awaitable (the future of an asyncio ``FutureIter``, the coroutine of a wrapper)."""
    if type(awaited) is types.GeneratorType:
        frame = awaited.gi_frame
        code = awaited.gi_code
        if frame is not None and code.co_name == "__await__" and code.co_argcount:
            owner = read_locals(frame).get(code.co_varnames[0])
            if owner is not None:
                return repr(owner)
    elif type(awaited) not in _PREFIX and not hasattr(type(awaited), "__await__"):
        for referent in gc.get_referents(awaited):
            if hasattr(type(referent), "__await__"):
                return repr(referent)
    return repr(awaited)


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


def _expect_generator(gen: Any, verb: str) -> FunctionInfo:
    info = info_of(gen)
    if info is None:
        if type(gen) in _PREFIX:
            raise _unmarked(gen)
        raise TypeError(
            f"{verb} needs a checkpointable generator or coroutine, got {type(gen).__name__}"
        )
    return info
