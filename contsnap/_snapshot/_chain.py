"""A chain of delegation (``yield from`` / ``await``) saved flat, and the reduction of a
generator's frame state.
"""

from __future__ import annotations

import contextvars
import types
import weakref
from collections.abc import Callable
from typing import Any

from .. import _runtime
from .._errors import SnapshotCorruptError
from .._registry import STATE
from ._capture import _PREFIX, CLOSED, FrameState, _weak_data, capture, info_of
from ._restore import (
    _CURRENT_LOAD,
    _is_pending,
    _load_context,
    closed_generator,
    globals_by_name,
    new_generator,
    set_generator_state,
)

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
        self.values = [
            globals_by_name(top),
            *(globals_by_name(state) for _member, state in chain),
        ]
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


def _reduce_state(
    state: FrameState, chain: list[tuple[Any, FrameState]] | None = None
) -> tuple[Any, ...]:
    if state.status == CLOSED:
        return (closed_generator, (state.info,))
    if chain:
        return (new_generator, _args(state), _Chain(state, chain), None, None, set_chain_state)
    values = globals_by_name(state)
    return (new_generator, _args(state), values, None, None, set_generator_state)


#: while ``pause()`` saves a task: its coroutine and the context variables the task set
TASK_CONTEXT: contextvars.ContextVar[tuple[Any, list[tuple[Any, Any]]] | None] = (
    contextvars.ContextVar("contsnap_task_context", default=None)
)
