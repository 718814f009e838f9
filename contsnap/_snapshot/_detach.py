"""Detach a paused generator from what it runs (its delegation chain), and where it waits."""

from __future__ import annotations

import copyreg
import gc
import sys
import types
from collections.abc import Callable
from typing import Any

from .. import _genexps, _resources, _runtime
from .._errors import NotCheckpointableError
from .._registry import STATE
from ._capture import (
    _PREFIX,
    FrameState,
    _attr,
    _expect_generator,
    _is_created,
    _running,
    _unmarked,
    capture,
    info_of,
    noun,
    safe_point_of,
    wrapped_coroutine,
)


def delegation_chain(gen: Any) -> list[Any]:
    """``gen`` and what it delegates to (``yield from`` / ``await``), as the snapshot saw it."""
    return _captured_chain(gen, {})


def _captured_chain(gen: Any, states: dict[int, FrameState]) -> list[Any]:
    """`delegation_chain`, keeping the state of each member it captured in ``states``
    (by id of the member, which the chain holds)."""
    chain = [gen]
    current = gen
    while info_of(current) is not None and len(chain) < 10_000:
        if _attr(current, "frame") is None or _is_created(current):
            break
        state = states[id(current)] = capture(current)
        delegate = state.delegate
        if delegate is None:
            break
        # ``yield from coro.__await__()``: the Detach passes through the wrapper into it
        delegate = wrapped_coroutine(delegate) or delegate
        chain.append(delegate)
        if isinstance(delegate, _runtime.ANext):  # an async for step: into its generator
            delegate = delegate.in_flight() or delegate.iterator
            chain.append(delegate)
        current = delegate
    return chain


def owned_generators(state: FrameState) -> list[Any]:
    """Checkpointable generators the frame holds: they moved with it.

    Held in a local or a cell, or inside the data a local holds (a list of tasks,
    an object's attribute, an ``ExitStack`` of ``@contextmanager`` objects), as far as a
    snapshot copies it: left behind, the old copy would be closed when freed and run
    its ``finally`` a second time. The walk goes through containers, instances that
    pickle as plain data, bound methods and the closures of local functions; not into
    modules, classes, module-level functions, objects with a reduce of their own or a
    resource handler, nor into the generators it finds (each is detached in turn).
    A generator running now (the caller driving this one) is not among them, nor a
    coroutine found inside data (an asyncio task may be driving it).
    """
    if _WALKED_FOR[0] != _resources.generation():  # resource handlers changed since
        _WALKED.clear()
        _WALKED_FOR[0] = _resources.generation()
    walked = _WALKED
    found = []
    seen: set[int] = set()
    level: list[Any] = list(state.values.values())
    for cell in state.cells:
        try:
            level.append(cell.cell_contents)
        except ValueError:  # empty
            pass
    direct = True  # the frame's own locals: any checkpointable generator or coroutine
    while level:
        bulk: list[Any] = []  # looked into with one gc.get_referents call
        below: list[Any] = []
        for value in level:
            key = id(value)
            if key in seen:
                continue
            seen.add(key)
            kind = type(value)
            how = walked.get(kind)
            if how is None:
                how = walked[kind] = _how_to_walk(kind)
            if how is _BULK:
                if kind is not dict or "__name__" not in value or not _is_namespace(value):
                    bulk.append(value)
            elif how is _SPECIAL:
                if kind in _PREFIX:
                    if (
                        (direct or kind is not types.CoroutineType)  # (a task may drive it)
                        and info_of(value) is not None
                        and _attr(value, "frame") is not None
                        and not _running(value)
                    ):
                        found.append(value)
                else:
                    below.extend(_held_by(value, kind))
        if bulk:
            below.extend(filter(gc.is_tracked, gc.get_referents(*bulk)))
        level = below
        direct = False
    return found


def _held_by(value: Any, kind: type) -> list[Any]:
    """What of ``value`` (a function, a bound method, an ``async for`` step) a snapshot
    copies with it, for `owned_generators`' walk."""
    if kind is types.FunctionType:
        if "<locals>" not in value.__qualname__ or not value.__closure__:
            return []  # saved by name (or holds nothing of the frame's)
        cells: list[Any] = []
        for cell in value.__closure__:
            try:
                cells.append(cell.cell_contents)
            except ValueError:
                pass
        return cells
    if kind is types.MethodType:
        return [value.__self__]
    if kind is types.BuiltinMethodType:
        owner = value.__self__
        return [] if owner is None or isinstance(owner, (types.ModuleType, type)) else [owner]
    if isinstance(value, _runtime.ANext):
        return [value.iterator]
    return []


#: how `owned_generators` treats an object of a type: looks into it in bulk, looks
#: at it by type (a generator, a function, a bound method), or leaves it
_BULK, _SPECIAL, _SKIP = "bulk", "special", "skip"
_WALKED: dict[type, str] = {}
STATE.add(__name__, "_WALKED", "clear")  # answers per type, under `_WALKED_FOR`'s handlers
_WALKED_FOR = [-1]
STATE.add(
    __name__, "_WALKED_FOR", lambda: _WALKED_FOR.__setitem__(0, -1)
)  # the generation of resource handlers `_WALKED` answers for

_CONTAINER_MODULES = frozenset({"builtins", "collections", "itertools", "functools", "contextlib"})
_LEAVES = (types.ModuleType, type, types.CodeType, types.FrameType, types.TracebackType)
_BY_TYPE = frozenset(
    {*_PREFIX, types.FunctionType, types.MethodType, types.BuiltinMethodType, _runtime.ANext}
)


def _how_to_walk(kind: type) -> str:
    if kind in _BY_TYPE or issubclass(kind, _runtime.ANext):
        return _SPECIAL
    if issubclass(kind, _LEAVES) or _resources.handler_for(kind) is not None:
        return _SKIP
    if kind.__module__ in _CONTAINER_MODULES:
        return _BULK  # the library's containers, iterators and helpers
    if kind in copyreg.dispatch_table:
        return _SKIP
    plain = ("__reduce_ex__", "__reduce__", "__getstate__")
    if all(getattr(kind, name, None) is getattr(object, name, None) for name in plain):
        return _BULK
    return _SKIP


def _is_namespace(mapping: dict[Any, Any]) -> bool:
    """A module's globals (``globals()`` held in a local): the module is not copied."""
    name = mapping.get("__name__")
    module = sys.modules.get(name) if isinstance(name, str) else None
    return module is not None and getattr(module, "__dict__", None) is mapping


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


def _kind_name(obj: Any) -> str:
    """The type a delegate is named by: the user's iterator, not the runtime's wrapper."""
    if type(obj) is _runtime.YieldFromIterator:
        obj = obj.iterator
    return type(obj).__qualname__


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
                return f"it delegates to a {_kind_name(member)} object with its own throw()"
    except NotCheckpointableError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def detach(gen: Any, *, owned: bool = True, keep: Callable[[Any], bool] | None = None) -> None:
    """End ``gen`` without running its ``finally`` blocks or context-manager exits.

    The whole ``yield from`` / ``await`` chain is ended, and so are the
    checkpointable generators the frames hold in their locals (a ``for``
    loop's iterator, a ``@contextmanager``, an ``async for``'s async
    generator): their continuation moved with the snapshot too. Those for
    which ``keep`` is true are left alone: the snapshot passed them by
    reference (``to_payload``'s ``keep``).
    """
    info = _expect_generator(gen, "detach()")
    if _running(gen):
        raise NotCheckpointableError(f"cannot detach {info.qualname} while it is running")
    if _attr(gen, "frame") is None:
        return
    if _is_created(gen):
        _end_unstarted(gen)
        return
    captured: dict[int, FrameState] = {}
    chain = _captured_chain(gen, captured)
    held: list[Any] = []
    for member in chain:
        if _genexps.factory_of(member) is not None:
            continue  # a generator expression of transformed code: no finally to skip
        if type(member) in _PREFIX:
            if info_of(member) is None:
                if type(member) is types.GeneratorType and safe_point_of(member) is not None:
                    continue  # a safe point's own __await__: a detach passes through it
                raise _unmarked(member)
            # refuses where a snapshot would be refused (the chain's walk captured most)
            state = captured.get(id(member)) or capture(member)
            held.extend(g for g in owned_generators(state) if not any(g is m for m in chain))
        elif hasattr(type(member), "__contsnap_resume__"):
            continue  # a contsnap safe point: a detach passes through it
        elif _has_own_throw(member):
            raise NotCheckpointableError(
                f"cannot detach {info.qualname}: it delegates (yield from) to a "
                f"{_kind_name(member)} object, whose own throw() would run its code"
            )
    for inner in held if owned else ():
        if _attr(inner, "frame") is not None and not (keep is not None and keep(inner)):
            detach(inner, keep=keep)
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
