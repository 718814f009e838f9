"""Hypothesis strategies and a differential harness for checkpointable generators,
coroutines and async generators.

The strongest test of contsnap runs one generator program natively, transformed
by ``@checkpointable``, transformed with a snapshot/restore at every suspension,
and forked half-way, and compares everything a user can observe: yielded
values, return value, exceptions and side effects. This module provides the
pieces:

* [`generator_programs`][contsnap.testing.generator_programs] writes random generator-function
  modules that use most of the statement and expression forms of Python 3.10, and always terminate
  within a bounded number of steps;
* [`sent_values`][contsnap.testing.sent_values] and
  [`driver_actions`][contsnap.testing.driver_actions] draw what the driver does to a paused
  generator (send, throw, close), as plain data so that every mode replays the same actions;
* [`run_trace`][contsnap.testing.run_trace] drives a generator and records a transcript;
  [`assert_equivalent`][contsnap.testing.assert_equivalent] and
  [`check_generator_equivalence`][contsnap.testing.check_generator_equivalence] compare the
  transcripts of every mode and fail with a readable diff.

The same for ``async def``: [`coroutine_programs`][contsnap.testing.coroutine_programs] and
[`async_generator_programs`][contsnap.testing.async_generator_programs] write programs that await
checkpoints, chains of coroutines, ``async for`` and ``async with``;
[`coroutine_actions`][contsnap.testing.coroutine_actions] draws what is done to a coroutine at its
checkpoints; [`run_async_trace`][contsnap.testing.run_async_trace] drives a coroutine or an async
generator by hand (no event loop: only ``contsnap.checkpoint()`` suspends) and
[`run_asyncio_trace`][contsnap.testing.run_asyncio_trace] runs one under ``asyncio.run``, paused
there by ``contsnap.pause()``; [`assert_async_equivalent`][contsnap.testing.assert_async_equivalent]
and [`check_coroutine_equivalence`][contsnap.testing.check_coroutine_equivalence] compare.

It imports ``hypothesis`` at the top, so import it only from tests; contsnap
itself is imported lazily, when a mode needs it.
"""

from __future__ import annotations

import types

from ._actions import (
    MODES,
    Action,
    Close,
    Event,
    Mode,
    Send,
    Throw,
    Trace,
    driver_actions,
    sent_values,
)
from ._async_compare import assert_async_equivalent, check_coroutine_equivalence
from ._async_driver import (
    ASYNC_MODES,
    AsyncMode,
    coroutine_actions,
    run_async_trace,
    run_asyncio_trace,
)
from ._async_programs import async_generator_programs, coroutine_programs
from ._compare import check_generator_equivalence
from ._compound import generator_programs
from ._driver import SnapshotBackend, run_trace
from ._loading import assert_equivalent, load_program, mark_generators
from ._log import LOG, TraceLog

__all__ = [
    "ASYNC_MODES",
    "LOG",
    "MODES",
    "Action",
    "AsyncMode",
    "Close",
    "Event",
    "Mode",
    "Send",
    "SnapshotBackend",
    "Throw",
    "Trace",
    "TraceLog",
    "assert_async_equivalent",
    "assert_equivalent",
    "async_generator_programs",
    "check_coroutine_equivalence",
    "check_generator_equivalence",
    "coroutine_actions",
    "coroutine_programs",
    "driver_actions",
    "generator_programs",
    "load_program",
    "mark_generators",
    "run_async_trace",
    "run_asyncio_trace",
    "run_trace",
    "sent_values",
]

# documented, pickled and shown as contsnap.testing.X, wherever in the package X is written
for _name in __all__:
    _obj = globals()[_name]
    # (a generic alias such as list[int] passes isinstance(.., type) on 3.10: not ours)
    if isinstance(_obj, (type, types.FunctionType)) and not isinstance(_obj, types.GenericAlias):
        _obj.__module__ = __name__
del _name, _obj
