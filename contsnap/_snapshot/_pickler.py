"""The snapshot pickler (cloudpickle that keeps cells shared) and the payload functions:
object -> bytes, bytes -> object, and why an object could not be saved.
"""

from __future__ import annotations

import contextvars
import io
import pickle
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle

from .. import _genexps, _moved, _resources, _runtime, _views
from .._errors import CheckpointError, NotCheckpointableError, SnapshotCorruptError
from .._info import FunctionInfo, by_value_class, current_session, pending_info
from ._capture import (
    _PREFIX,
    FrameState,
    _attr,
    capture,
    info_of,
    noun,
    safe_point_of,
    wrapped_coroutine,
)
from ._chain import _args, _chain_below, _reduce_state, _shallow_state, _with_context
from ._functions import (
    _FAST_PICKLERS,
    _FUNCTIONS,
    _FastPickler,
    ready_for_handlers,
    reduce_inline,
)
from ._reducers import (
    _MATCH,
    _PROCESS,
    _RANGE_ITERATOR,
    _SESSION_GLOBALS,
    _cp,
    _is_local_class,
    _LiveGlobals,
    _main_globals,
    _main_namespace,
    _MainGlobals,
    _no_traceback,
    _reduce_cell,
    _reduce_context_var,
    _reduce_match,
    _reduce_range_iterator,
    _reduce_weak_reference,
    _session_globals,
    _SessionGlobals,
    rebuild_exception,
    reduce_bound_method,
    reduce_sentinel,
    set_exception_state,
    set_function_state,
    set_main_function_state,
)
from ._restore import _load_context, new_generator


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
            point = safe_point_of(obj) if kind is types.GeneratorType else None
            if point is not None:  # ``yield from checkpoint().__await__()`` in an __await__
                return (_runtime.resumed_await, (point,))
            state = capture(obj)
            self.captured[id(obj)] = state
            return _with_context(obj, _reduce_state(state, _chain_below(state, self._saved)))
        if kind is types.CellType:
            return _reduce_cell(obj)
        coro = wrapped_coroutine(obj)
        if coro is not None:  # ``yield from coro.__await__()``: the same of the restored one
            return (_runtime.coroutine_await, (coro,))
        if kind is _RANGE_ITERATOR:
            return _reduce_range_iterator(obj)
        if kind is _MATCH:
            return _reduce_match(obj)
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
        if kind is types.BuiltinMethodType or kind is types.MethodWrapperType:
            reduced = reduce_bound_method(obj)
        elif kind is object:
            reduced = reduce_sentinel(obj)
        else:
            reduced = reduce_inline(obj, kind)
        if reduced is not NotImplemented:
            return reduced
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


#: the modules whose functions pickle by path: this package (its modules too) and these
_PACKAGE = __name__.rpartition(".")[0]
_PARTS = (
    "_capture",
    "_restore",
    "_detach",
    "_chain",
    "_reducers",
    "_functions",
    "_pickler",
    "_copying",
)
_OWN_MODULES = frozenset(
    {_PACKAGE, *(f"{_PACKAGE}.{part}" for part in _PARTS)}
    | {"contsnap._info", "contsnap._runtime", "contsnap._resources"}
)


#: the by-reference table of the in-process copy being loaded
_REFS: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "contsnap_refs", default=None
)


def _local_ref(index: int) -> Any:
    refs = _REFS.get()
    if refs is None or not 0 <= index < len(refs):
        raise SnapshotCorruptError(
            "the snapshot refers to objects of an in-process copy; it cannot be loaded here"
        )
    return refs[index]


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
        ready_for_handlers()
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
