"""Saving a generator expression that transformed code made (see ``contsnap._transform._genexps``).

The runtime remembers the factory of each one: a lambda of the transformed
function whose closure holds the cells the expression reads. A single-``for``
generator expression paused at its yield (or not started) holds nothing but
the iterator it loops over (``.0``): the loop variable is bound again before
it is read. It is saved as its factory and that iterator; restored, the
factory makes it again over the iterator, which goes on where it stood.

What is not the same after a restore: the restored expression has not run yet
(``inspect.getgeneratorstate`` says ``GEN_CREATED``, ``send()`` of a value
other than None is refused as for a new one) and its frame no longer shows the
last value of the loop variable.
"""

from __future__ import annotations

import copy
import sys
import types
from typing import Any

from . import _runtime
from ._errors import NotCheckpointableError


def factory_of(gen: Any) -> Any:
    """The factory of a generator expression made by transformed code (None: not one)."""
    return _runtime.genexp_factory(gen)


def _where(gen: Any) -> str:
    code = gen.ag_code if type(gen) is types.AsyncGeneratorType else gen.gi_code
    return f"{gen.__qualname__} ({code.co_filename}:{code.co_firstlineno})"


def _iterator(gen: Any) -> tuple[bool, Any]:
    """(finished, the iterator the expression loops over)."""
    if type(gen) is types.AsyncGeneratorType:
        frame = gen.ag_frame
        if frame is not None and (gen.ag_await is not None or _async_running(gen)):
            raise NotCheckpointableError(
                f"cannot snapshot the asynchronous generator expression {_where(gen)}: it is in "
                "the middle of a step (an await inside it); take the snapshot between its steps"
            )
    else:
        frame = gen.gi_frame
        if gen.gi_running:
            raise NotCheckpointableError(
                f"cannot snapshot the generator expression {_where(gen)} while it is running"
            )
    if frame is None:
        return True, None
    local = frame.f_locals
    iterator = local.get(".0")
    if sys.version_info < (3, 13):
        local.clear()  # leave no cache of the locals on the frame (see _snapshot.read_locals)
    if iterator is None:
        raise NotCheckpointableError(
            f"cannot snapshot the generator expression {_where(gen)}: its iterator is not readable"
        )
    return False, iterator


def _async_running(gen: Any) -> bool:
    if sys.version_info >= (3, 12):
        return bool(gen.ag_running) and not gen.ag_suspended
    return bool(gen.ag_running)


def reduce(gen: Any) -> tuple[Any, ...] | None:
    """How a snapshot saves ``gen`` if it is a generator expression of transformed code."""
    factory = factory_of(gen)
    if factory is None:
        return None
    finished, iterator = _iterator(gen)
    if finished:
        return (finished_genexp, (factory, type(gen) is types.AsyncGeneratorType))
    return (make_genexp, (factory, iterator))


def deepcopy(gen: Any, memo: dict[int, Any]) -> Any:
    """``copy.deepcopy`` of such a generator expression (None: it is not one)."""
    reduced = reduce(gen)
    if reduced is None:
        return None
    make, args = reduced
    made = make(*copy.deepcopy(args, memo))
    memo[id(gen)] = made
    return made


def make_genexp(factory: Any, iterator: Any) -> Any:
    """The generator expression ``factory`` makes, over ``iterator`` (at its position)."""
    return _runtime.genexp(_runtime.reentered(iterator), factory)


class _NoItems:
    """An empty (async) iterator: what a finished expression is made over."""

    def __iter__(self) -> _NoItems:
        return self

    def __next__(self) -> Any:
        raise StopIteration

    def __aiter__(self) -> _NoItems:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration


def finished_genexp(factory: Any, is_async: bool) -> Any:
    """A generator expression of ``factory`` that has finished."""
    made = _runtime.genexp(_NoItems(), factory)
    if is_async:
        step = made.aclose()
        try:
            step.send(None)
        except StopIteration:
            pass
    else:
        made.close()
    return made
