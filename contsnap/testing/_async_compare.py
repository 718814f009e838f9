"""Comparing the transcripts of a coroutine or an async generator in every mode."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from ._actions import MODES, Action, Mode, Send, Trace
from ._async_driver import ASYNC_MODES, AsyncMode, run_async_trace, run_asyncio_trace
from ._compare import _bind, _compare
from ._driver import SnapshotBackend
from ._loading import _native_and_marked
from ._log import LOG


def _check_async(
    native_fn: Callable[..., Any],
    marked_fn: Callable[..., Any],
    args: Sequence[object],
    actions: Sequence[object],
    *,
    subject: str,
    modes: Sequence[AsyncMode],
    pause_at: int,
    move: bool,
    **options: Any,
) -> dict[str, Trace]:
    def runner(mode: Mode) -> Callable[[], dict[str, Trace]]:
        func = native_fn if mode == "native" else marked_fn
        return lambda: run_async_trace(
            lambda log: func(*_bind(args, log)), actions, mode=mode, **options
        )

    by_hand: dict[str, Callable[[], dict[str, Trace]]] = {
        mode: runner(mode) for mode in MODES if mode in modes
    }
    traces = _compare(by_hand, subject=subject, actions=actions) if by_hand else {}
    if "asyncio" in modes:
        under_asyncio = {
            "asyncio": lambda: run_asyncio_trace(lambda log: native_fn(*_bind(args, log))),
            "asyncio/moved" if move else "asyncio/paused": lambda: run_asyncio_trace(
                lambda log: marked_fn(*_bind(args, log)), pause_at=pause_at, move=move
            ),
        }
        what = [
            f"asyncio.run; contsnap.pause() after {pause_at} turns, then "
            + ("detach and go on with the snapshot" if move else "unpause")
        ]
        traces.update(_compare(under_asyncio, subject=subject, actions=what))
    return traces


def check_coroutine_equivalence(
    native_fn: Callable[..., Any],
    marked_fn: Callable[..., Any],
    args: Sequence[object],
    actions: Sequence[object] = (),
    *,
    modes: Sequence[AsyncMode] = ASYNC_MODES,
    fork_at: int | None = None,
    fill: Action | None = Send(None),
    max_steps: int = 10_000,
    backend: SnapshotBackend | None = None,
    inside_steps: bool = True,
    pause_at: int = 1,
    move: bool = False,
) -> dict[str, Trace]:
    """Assert that a coroutine function or async generator function behaves the same
    natively, transformed, round-tripped through bytes at every suspension, forked,
    and paused in a real event loop.

    ``native_fn`` is the plain function, ``marked_fn`` the same one under
    ``@contsnap.checkpointable``; both may only await marked coroutines and contsnap's safe points.
    Arguments are as for
    [`check_generator_equivalence`][contsnap.testing.check_generator_equivalence]
    ([`LOG`][contsnap.testing.LOG] stands for the run's [`TraceLog`][contsnap.testing.TraceLog]);
    ``actions`` and the keywords up to ``inside_steps`` are as for
    [`run_async_trace`][contsnap.testing.run_async_trace]. Mode ``"asyncio"`` compares ``native_fn``
    under ``asyncio.run`` with ``marked_fn`` under ``asyncio.run``, paused after ``pause_at`` turns
    of the loop (see [`run_asyncio_trace`][contsnap.testing.run_asyncio_trace]). Returns the
    transcripts; raises ``AssertionError`` with a diff otherwise.
    """
    try:
        subject = inspect.getsource(native_fn)
    except (OSError, TypeError):
        subject = repr(native_fn)
    return _check_async(
        native_fn,
        marked_fn,
        args,
        actions,
        subject=subject,
        modes=modes,
        pause_at=pause_at,
        move=move,
        fork_at=fork_at,
        fill=fill,
        max_steps=max_steps,
        backend=backend,
        inside_steps=inside_steps,
    )


def assert_async_equivalent(
    source_or_module: str | ModuleType,
    actions: Sequence[object] = (),
    *,
    arg: object = 0,
    entry: str = "gen",
    modes: Sequence[AsyncMode] = ASYNC_MODES,
    fork_at: int | None = None,
    fill: Action | None = Send(None),
    max_steps: int = 10_000,
    inside_steps: bool = True,
    pause_at: int = 1,
    move: bool = False,
) -> dict[str, Trace]:
    """[`assert_equivalent`][contsnap.testing.assert_equivalent] for programs whose ``entry(arg,
    log)`` is a coroutine or an async generator (as
    [`coroutine_programs`][contsnap.testing.coroutine_programs] and
    [`async_generator_programs`][contsnap.testing.async_generator_programs] draw): the marked copy
    of the module has every ``async def`` marked, methods included. Keywords as for
    [`check_coroutine_equivalence`][contsnap.testing.check_coroutine_equivalence]."""
    source = (
        source_or_module
        if isinstance(source_or_module, str)
        else inspect.getsource(source_or_module)
    )
    with _native_and_marked(source, modes, actions) as (native, marked):
        return _check_async(
            getattr(native, entry),
            getattr(marked, entry),
            (arg, LOG),
            actions,
            subject=source,
            modes=modes,
            pause_at=pause_at,
            move=move,
            fork_at=fork_at,
            fill=fill,
            max_steps=max_steps,
            inside_steps=inside_steps,
        )
