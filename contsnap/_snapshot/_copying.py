"""What ``import contsnap`` registers for plain ``pickle``, ``copy.copy`` and
``copy.deepcopy`` of generators, coroutines and async generators.
"""

from __future__ import annotations

import copy
import copyreg
import pickle
import types
from typing import Any

from .. import _genexps, _runtime
from .._errors import CheckpointError
from ._capture import CLOSED, SUSPENDABLE, FrameState, _expect_generator, capture, info_of
from ._chain import (
    _SHALLOW,
    _args,
    _Chain,
    _chain_below,
    _reduce_state,
    _shallow_state,
    _with_context,
)
from ._pickler import from_payload, to_payload
from ._reducers import (
    _Discard,
    _plainly_picklable,
    _Probe,
    bound_method,
    closed_generator_by_name,
    generator_by_name,
    reduce_bound_method,
)
from ._restore import (
    _load_context,
    closed_generator,
    globals_by_name,
    new_generator,
    rebuild,
    set_generator_state,
)


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
        chain = _chain_below(state, _never)
        reduced = _with_context(gen, _reduce_state(state, chain))
        # the generators it delegates to pickle without a check of their own (their
        # locals are in the _Chain): their function's cells (a method's __class__) too
        if _plainly_picklable(reduced, [_args(below) for _member, below in chain]):
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


def generator_from_payload(payload: bytes) -> Any:
    """A generator saved by plain ``pickle`` (see _reduce_generator)."""
    return from_payload(payload)


# What ``import contsnap`` registers globally (docs/limitations.md): the reducer of the
# generator, coroutine and async generator types (nothing else can pickle them) and the
# extension codes. Every other type contsnap saves its own way (cells, views,
# weak references, context variables...) is handled by the snapshot pickler only.
# (The extension codes are registered in contsnap/_snapshot/__init__.py.)
for _kind in SUSPENDABLE:
    copyreg.pickle(_kind, _reduce_generator)


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
        owner = copy.deepcopy(value.__self__, memo)
        reduced = reduce_bound_method(value)  # super().__getitem__: not getattr's
        if reduced is not NotImplemented:
            return bound_method(reduced[1][0], reduced[1][1], owner)
        return getattr(owner, value.__name__)
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
            values: Any = {k: _deepcopy_local(v, memo) for k, v in globals_by_name(level).items()}
            pending = _runtime.PENDING_CONTEXT.get(original)
            if pending is not None:  # restored from a paused task, not run yet
                values = (values, copy.deepcopy(pending[1], memo))
            set_generator_state(copied, values)
    return memo[id(gen)]


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
