"""``@checkpointable``: the decorator (the import hook, ``_hook``, is its sibling)."""

from __future__ import annotations

from typing import TypeVar

from .._info import function_info
from ._marking import forget_module, make_checkpointable, refresh_roundtrip_mode, roundtrip_mode

__all__ = [
    "checkpointable",
    "forget_module",
    "function_info",
    "make_checkpointable",
    "refresh_roundtrip_mode",
    "roundtrip_mode",
]

F = TypeVar("F")


def checkpointable(fn: F) -> F:
    """Make a generator function's suspended generators snapshottable.

    The returned function still returns native generators; their frames can be
    captured by [`contsnap.dumps`][contsnap.dumps], ``pickle``, ``copy.deepcopy`` and
    [`contsnap.fork`][contsnap.fork], and restored where they were paused.
    """
    return make_checkpointable(fn)
