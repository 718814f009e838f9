"""The log: a side-effect channel of the program under test that survives snapshots by
reference."""

from __future__ import annotations

import copy
import itertools
import weakref
from collections.abc import Callable
from typing import Final

from .._registry import STATE
from ._actions import Trace

_live_logs: weakref.WeakValueDictionary[int, TraceLog] = weakref.WeakValueDictionary()
STATE.add(__name__, "_live_logs", None, "the live logs, by token")
_log_tokens = itertools.count()
STATE.add(__name__, "_log_tokens", None, "a counter: tokens stay unique")


def _find_log(token: int) -> TraceLog:
    try:
        return _live_logs[token]
    except KeyError:
        raise LookupError(
            f"TraceLog #{token} no longer exists: a snapshot that holds a TraceLog can only"
            " be restored while the run that made it is alive (in the same process)"
        ) from None


class TraceLog:
    """The ``log`` handed to a generator under test: ``log.append(x)`` writes a
    ``("log", x)`` event into the transcript being recorded.

    It stands for the world outside the generator (a file, a database), so it is
    not copied by a snapshot: pickling and ``copy.deepcopy`` keep a reference to
    this same object. A restored or forked generator therefore logs into the
    same transcript, and a ``finally`` that runs twice shows up twice.
    """

    def __init__(self) -> None:
        self.token = next(_log_tokens)
        self.sink: Trace = []
        _live_logs[self.token] = self

    def append(self, item: object) -> None:
        """Record a side effect of the generator."""
        self.sink.append(("log", _frozen(item)))

    def __reduce__(self) -> tuple[Callable[[int], TraceLog], tuple[int]]:
        return (_find_log, (self.token,))

    def __copy__(self) -> TraceLog:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> TraceLog:
        return self

    def __repr__(self) -> str:
        return f"<TraceLog #{self.token}>"


class _LogPlaceholder:
    def __repr__(self) -> str:
        return "contsnap.testing.LOG"


LOG: Final = _LogPlaceholder()
"""Put ``LOG`` among the arguments given to
[`check_generator_equivalence`][contsnap.testing.check_generator_equivalence] where the
generator takes the [`TraceLog`][contsnap.testing.TraceLog] of the run."""


def _frozen(value: object) -> object:
    """A copy of ``value`` as it is now, so that later mutation cannot rewrite the transcript."""
    try:
        return copy.deepcopy(value)
    except Exception:
        return ("<not copyable>", repr(value))
