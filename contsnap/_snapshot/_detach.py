"""Detach a paused generator from what it runs (its delegation chain), and where it waits."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable
from typing import Any

from .. import _genexps, _runtime
from .._errors import NotCheckpointableError
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
    """Checkpointable generators the frame holds directly: they moved with it."""
    found = []
    for value in state.values.values():
        if isinstance(
            value, (contextlib.AbstractContextManager, contextlib.AbstractAsyncContextManager)
        ):
            value = getattr(value, "gen", None)  # an @(async)contextmanager's generator
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
