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

import copy
import copyreg
import gc
import importlib
import inspect
import io
import pickle
import types
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import cloudpickle

from . import _runtime
from ._errors import CheckpointError, NotCheckpointableError, SnapshotCorruptError
from ._info import FunctionInfo, info_for_code

CREATED, SUSPENDED, CLOSED = "created", "suspended", "closed"


class _Box:
    """Carries label and locals into a resume-variant generator until it first runs."""

    __slots__ = ("label", "values")

    def __init__(self, label: int, values: dict[str, Any]) -> None:
        self.label = label
        self.values = values


@dataclass
class FrameState:
    """One captured generator frame."""

    info: FunctionInfo
    status: str
    label: int
    values: dict[str, Any]
    cells: tuple[types.CellType, ...]

    @property
    def delegate(self) -> Any:
        spec = self.info.labels.get(self.label)
        if spec is None or spec.delegate is None:
            return None
        return self.values.get(spec.delegate)


# Restored generators that have finished: their code is not the info's own.
_CLOSED: weakref.WeakKeyDictionary[Generator[Any, Any, Any], FunctionInfo] = (
    weakref.WeakKeyDictionary()
)
# Generators made by a pickle load whose state has not arrived yet.
_PENDING: weakref.WeakKeyDictionary[Generator[Any, Any, Any], _Box] = weakref.WeakKeyDictionary()


def info_of(gen: Any) -> FunctionInfo | None:
    if not isinstance(gen, types.GeneratorType):
        return None
    info = info_for_code(gen.gi_code)
    if info is None:
        info = _CLOSED.get(gen)
    return info


def _unmarked(gen: Any) -> NotCheckpointableError:
    name = getattr(gen, "__qualname__", type(gen).__name__)
    code = getattr(gen, "gi_code", None)
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    return NotCheckpointableError(
        f"generator {name}{where} is not checkpointable: mark its function with "
        "@contsnap.checkpointable (or name its module to the import hook)"
    )


def capture(gen: Any) -> FrameState:
    """Read the state of a checkpointable generator without changing it."""
    info = info_of(gen)
    if info is None:
        raise _unmarked(gen)
    if gen.gi_running:
        raise NotCheckpointableError(
            f"generator {info.qualname} is running; a snapshot can only be taken while it "
            "is paused at a yield (not from inside itself)"
        )
    frame = gen.gi_frame
    if frame is None:
        return FrameState(info, CLOSED, 0, {}, ())
    if inspect.getgeneratorstate(gen) == inspect.GEN_CREATED:
        return _capture_created(gen, info, frame)
    local = dict(frame.f_locals)
    label = info.label_of_line.get(frame.f_lineno) or local.get("_cs_label", 0)
    if label not in info.labels:
        raise NotCheckpointableError(f"generator {info.qualname} is paused at an unknown point")
    refuse = info.labels[label].refuse
    if refuse is not None:
        raise NotCheckpointableError(f"cannot snapshot {info.where(label)}: {refuse}")
    saved = info.saved_names(label)
    cells = set(info.cell_names)
    values = {n: v for n, v in local.items() if n in saved and n not in cells}
    cellref = local.get("_cs_cellref")
    closure: tuple[types.CellType, ...] = ()
    if info.cell_names:
        closure = tuple(cellref.__closure__ or ()) if cellref is not None else ()
        if len(closure) != len(info.cell_names):
            raise NotCheckpointableError(f"cannot read the closure cells of {info.qualname}")
    return FrameState(info, SUSPENDED, label, values, closure)


def _capture_created(gen: Any, info: FunctionInfo, frame: types.FrameType) -> FrameState:
    local = dict(frame.f_locals)
    free = [n for n in info.cell_names if n not in info.cellvars]
    closure_cells: dict[str, types.CellType] = {}
    if free:
        func = _function_of(gen)
        if func is None or func.__closure__ is None:
            raise NotCheckpointableError(
                f"cannot snapshot the unstarted generator {info.qualname}: its closure is not "
                "reachable; advance it to its first yield first"
            )
        closure_cells = dict(zip(func.__code__.co_freevars, func.__closure__))
    cells = []
    for name in info.cell_names:
        if name in info.cellvars:
            cells.append(types.CellType(local[name]) if name in local else types.CellType())
        else:
            cells.append(closure_cells[name])
    values = {n: v for n, v in local.items() if n in info.user_names}
    return FrameState(info, CREATED, 0, values, tuple(cells))


def _function_of(gen: Any) -> types.FunctionType | None:
    """The function object of an unstarted generator (found through the GC's referents)."""
    seen = gc.get_referents(gen)
    if gen.gi_frame is not None:
        seen += gc.get_referents(gen.gi_frame)
    for obj in seen:
        if isinstance(obj, types.FunctionType) and obj.__code__ is gen.gi_code:
            return obj
    return None


def new_generator(
    info: FunctionInfo, label: int, cells: tuple[types.CellType, ...]
) -> Generator[Any, Any, Any]:
    """Create (but do not start) a resume-variant generator; its values come later."""
    if label != 0 and label not in info.labels:
        raise SnapshotCorruptError(
            f"snapshot of {info.qualname} names resume point {label}, which that function "
            "does not have"
        )
    if len(cells) != len(info.cell_names):
        raise SnapshotCorruptError(f"snapshot of {info.qualname} has the wrong number of cells")
    by_name = dict(zip(info.cell_names, cells))
    closure = tuple(by_name[n] for n in info.resume_code.co_freevars)
    fn = types.FunctionType(info.resume_code, info.globals, info.name, None, closure or None)
    fn.__qualname__ = info.qualname
    fn.__module__ = info.module
    info.globals.setdefault("__contsnap_rt__", _runtime)
    box = _Box(label, {})
    gen = fn(_runtime.UNBOUND, box) if info.first_param is not None else fn(box)
    _PENDING[gen] = box
    return gen  # type: ignore[no-any-return]


def set_generator_state(gen: Generator[Any, Any, Any], values: Any) -> None:
    """Give a generator from :func:`new_generator` its locals and prime it."""
    box = _PENDING.pop(gen, None)
    info = info_of(gen)
    if box is None or info is None:
        raise SnapshotCorruptError("generator state arrived for an unknown generator")
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise SnapshotCorruptError(f"snapshot of {info.qualname} has malformed locals")
    allowed = info.saved_names(box.label) if box.label else frozenset(info.user_names)
    unknown = set(values) - allowed
    if unknown:
        raise SnapshotCorruptError(
            f"snapshot of {info.qualname} has locals the function does not have: "
            f"{', '.join(sorted(unknown))}"
        )
    box.values = values
    if box.label:
        primed = gen.send(None)
        if primed is not _runtime.PRIME:
            raise SnapshotCorruptError(f"restored {info.qualname} did not stop where it was saved")


def closed_generator(info: FunctionInfo) -> Generator[Any, Any, Any]:
    """A finished generator that still knows which function it came from."""

    def finished() -> Generator[Any, Any, Any]:
        yield  # pragma: no cover - never started

    gen = finished()
    setattr(gen, "__name__", info.name)  # noqa: B010 - Generator's type omits these
    setattr(gen, "__qualname__", info.qualname)  # noqa: B010
    gen.close()
    _CLOSED[gen] = info
    return gen


def rebuild(state: FrameState) -> Generator[Any, Any, Any]:
    """Restore a captured frame in this process (values by reference)."""
    if state.status == CLOSED:
        return closed_generator(state.info)
    gen = new_generator(state.info, state.label, state.cells)
    set_generator_state(gen, dict(state.values))
    return gen


# ---------------------------------------------------------------- pickling


def _reduce_generator(gen: Generator[Any, Any, Any]) -> tuple[Any, ...]:
    return _reduce_state(capture(gen))


def _reduce_state(state: FrameState) -> tuple[Any, ...]:
    if state.status == CLOSED:
        return (closed_generator, (state.info,))
    return (
        new_generator,
        (state.info, state.label, state.cells),
        state.values,
        None,
        None,
        set_generator_state,
    )


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


copyreg.pickle(types.GeneratorType, _reduce_generator)
copyreg.pickle(types.CellType, _reduce_cell)

# One-byte pickle opcodes for the reconstructors every snapshot names (codes in
# the range copyreg reserves for private use), keeping small snapshots small.
for _code, _func in enumerate(
    ("new_generator", "set_generator_state", "closed_generator", "_make_cell", "_set_cell"),
    start=240,
):
    copyreg.add_extension(__name__, _func, _code)
copyreg.add_extension("contsnap._info", "_info_by_name", 245)
copyreg.add_extension("contsnap._info", "_info_by_value", 246)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc,unused-ignore]
    """cloudpickle that keeps closure cells shared, and keeps identity when copying locally.

    cloudpickle gives every rebuilt closure fresh cells, which would split a
    generator's frame from the closures it made; here the real cell objects
    are pickled (memoised, so sharing survives). With ``local=True`` (a copy
    within this process: fork, deepcopy) function infos, classes and module
    globals are passed by reference, so a copy still sees live module state.
    """

    def __init__(self, file: io.BytesIO, *, local: bool) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.local = local
        #: every generator frame captured while pickling, by id of the generator
        self.captured: dict[int, FrameState] = {}

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is types.GeneratorType:
            state = capture(obj)
            self.captured[id(obj)] = state
            return _reduce_state(state)
        if kind is types.CellType:
            return _reduce_cell(obj)
        if kind is types.FunctionType and obj.__module__ in _OWN_MODULES:
            return NotImplemented
        if self.local and (kind is FunctionInfo or isinstance(obj, type)):
            return (_local_object, (_remember(obj),))
        return super().reducer_override(obj)

    def _dynamic_function_reduce(self, func: types.FunctionType) -> tuple[Any, ...]:
        code, base_globals, name, defaults, _empty = self._function_getnewargs(func)
        state, slotstate = _cp._function_getstate(func)
        if self.local:
            base_globals = _LiveGlobals(func.__globals__)
            slotstate["__globals__"] = {}
        newargs = (code, base_globals, name, defaults, func.__closure__)
        return (_cp._make_function, newargs, (state, slotstate), None, None, _cp._function_setstate)


_cp: Any = importlib.import_module("cloudpickle.cloudpickle")
_OWN_MODULES = frozenset({__name__, "contsnap._info", "contsnap._runtime"})
_LOCAL_OBJECTS: dict[int, Any] = {}


def _remember(obj: Any) -> int:
    _LOCAL_OBJECTS[id(obj)] = obj
    return id(obj)


def _local_object(key: int) -> Any:
    return _LOCAL_OBJECTS[key]


class _LiveGlobals:
    __slots__ = ("namespace",)

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace

    def __reduce__(self) -> tuple[Any, ...]:
        return (_local_object, (_remember(self.namespace),))


def to_payload(obj: Any, *, local: bool = False) -> tuple[bytes, dict[int, FrameState]]:
    """Pickle ``obj`` (usually a generator); a failure names the variable that caused it.

    Returns the bytes and the frames captured on the way (by id of their generator).
    """
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, local=local)
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
    return buffer.getvalue(), pickler.captured


def from_payload(data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except CheckpointError:
        raise
    except Exception as exc:
        raise SnapshotCorruptError(
            f"the snapshot's contents cannot be rebuilt: {type(exc).__name__}: {exc}"
        ) from exc


def _diagnose(gen: Any, exc: BaseException, depth: int = 0) -> NotCheckpointableError | None:
    """Find the local variable whose value made pickling fail."""
    if depth > 50 or info_of(gen) is None:
        return None
    try:
        state = capture(gen)
    except CheckpointError:
        return None
    for name, value in sorted(state.values.items()):
        if info_of(value) is not None:
            inner = _diagnose(value, exc, depth + 1)
            if inner is not None:
                return inner
            continue
        try:
            _Pickler(io.BytesIO(), local=True).dump(value)
        except Exception as err:
            if isinstance(value, types.GeneratorType):
                what = f"an unmarked generator {value.__qualname__}"
                hint = "mark its function with @contsnap.checkpointable"
            else:
                what = f"a {type(value).__module__}.{type(value).__qualname__} object"
                hint = (
                    "keep it out of the generator's locals across yields, or register a "
                    "resource handler for its type"
                )
            return NotCheckpointableError(
                f"cannot snapshot {state.info.where(state.label)}: local variable {name!r} "
                f"holds {what}, which cannot be serialised ({type(err).__name__}: {err}); {hint}"
            )
    return None


def copy_generator(gen: Any) -> Generator[Any, Any, Any]:
    """An independent copy of a paused generator, within this process."""
    if info_of(gen) is None:
        raise (
            _unmarked(gen)
            if isinstance(gen, types.GeneratorType)
            else TypeError(f"expected a checkpointable generator, got {type(gen).__name__}")
        )
    result = from_payload(to_payload(gen, local=True)[0])
    return result  # type: ignore[no-any-return]


def _deepcopy_generator(gen: Any, memo: dict[int, Any]) -> Any:
    return copy_generator(gen)


copy._deepcopy_dispatch[types.GeneratorType] = _deepcopy_generator  # type: ignore[attr-defined]


# ---------------------------------------------------------------- detach


def delegation_chain(gen: Any) -> list[Any]:
    chain = [gen]
    while True:
        inner = getattr(chain[-1], "gi_yieldfrom", None)
        if inner is None:
            return chain
        if isinstance(inner, _runtime.Reattach):
            inner = inner._delegate
        chain.append(inner)


def detach(gen: Any) -> None:
    """End ``gen`` without running its ``finally`` blocks or context-manager exits."""
    info = info_of(gen)
    if info is None:
        raise (
            _unmarked(gen)
            if isinstance(gen, types.GeneratorType)
            else TypeError(f"detach() needs a checkpointable generator, got {type(gen).__name__}")
        )
    if gen.gi_running:
        raise NotCheckpointableError(f"cannot detach {info.qualname} while it is running")
    if gen.gi_frame is None:
        return
    if inspect.getgeneratorstate(gen) == inspect.GEN_CREATED:
        gen.close()
        return
    for inner in delegation_chain(gen)[1:]:
        if isinstance(inner, types.GeneratorType) and info_of(inner) is None:
            raise _unmarked(inner)
    try:
        gen.throw(_runtime.Detach())
    except BaseException as exc:
        if not _runtime.is_detach(exc):
            raise
    else:
        gen.close()
        raise NotCheckpointableError(
            f"{info.qualname} yielded while being detached; it was closed instead"
        )
