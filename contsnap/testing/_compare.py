"""Comparing the transcripts of every mode, with a readable diff."""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._actions import MODES, Action, Mode, Send, Trace
from ._driver import SnapshotBackend, run_trace
from ._log import LOG, TraceLog


def _context(subject: str, actions: Sequence[object]) -> str:
    numbered = "\n".join(f"{n:4} | {line}" for n, line in enumerate(subject.splitlines(), 1))
    return f"program:\n{numbered}\nactions: {list(actions)!r}"


def _compare(
    runs: Mapping[str, Callable[[], dict[str, Trace]]],
    *,
    subject: str,
    actions: Sequence[object],
) -> dict[str, Trace]:
    """Run every mode; fail with the program and a diff where one differs from native."""
    traces: dict[str, Trace] = {}
    for mode, run in runs.items():
        try:
            traces.update(run())
        except Exception as exc:
            raise AssertionError(
                f"mode {mode!r} failed in the harness (not inside the generator):"
                f" {type(exc).__name__}: {exc}\n{_context(subject, actions)}"
            ) from exc
    reference_name = "native" if "native" in traces else next(iter(traces))
    reference = traces[reference_name]
    for name, trace in traces.items():
        if trace == reference:
            continue
        expected = [repr(event) for event in reference]
        actual = [repr(event) for event in trace]
        first = next(
            (i for i, (x, y) in enumerate(zip(expected, actual)) if x != y),
            min(len(expected), len(actual)),
        )
        diff = "\n".join(
            difflib.unified_diff(expected, actual, reference_name, name, n=4, lineterm="")
        )
        raise AssertionError(
            f"{name} transcript differs from {reference_name} at event {first}\n"
            f"{_context(subject, actions)}\n{diff}"
        )
    return traces


def _bind(args: Sequence[object], log: TraceLog) -> list[object]:
    fresh = copy.deepcopy([arg for arg in args if arg is not LOG])
    values = iter(fresh)
    return [log if arg is LOG else next(values) for arg in args]


def _check(
    genfunc_native: Callable[..., Any],
    genfunc_marked: Callable[..., Any],
    args: Sequence[object],
    actions: Sequence[object],
    *,
    subject: str,
    modes: Sequence[Mode],
    **options: Any,
) -> dict[str, Trace]:
    def runner(mode: Mode) -> Callable[[], dict[str, Trace]]:
        func = genfunc_native if mode == "native" else genfunc_marked
        return lambda: run_trace(lambda log: func(*_bind(args, log)), actions, mode=mode, **options)

    return _compare({mode: runner(mode) for mode in modes}, subject=subject, actions=actions)


def check_generator_equivalence(
    genfunc_native: Callable[..., Any],
    genfunc_marked: Callable[..., Any],
    args: Sequence[object],
    actions: Sequence[object],
    *,
    modes: Sequence[Mode] = MODES,
    fork_at: int | None = None,
    fill: Action | None = Send(None),
    max_steps: int = 10_000,
    backend: SnapshotBackend | None = None,
) -> dict[str, Trace]:
    """Assert that a generator function behaves the same natively, transformed,
    round-tripped through bytes at every suspension, and forked.

    ``genfunc_native`` is the plain function, ``genfunc_marked`` the same one under
    ``@contsnap.checkpointable``. Each run calls it with a deep copy of ``args``, where
    [`LOG`][contsnap.testing.LOG] is replaced by the run's [`TraceLog`][contsnap.testing.TraceLog].
    ``actions`` and the keywords are as for [`run_trace`][contsnap.testing.run_trace]. Returns the
    transcripts; raises ``AssertionError`` with a diff otherwise. Use it in a plain pytest test.
    """
    try:
        subject = inspect.getsource(genfunc_native)
    except (OSError, TypeError):
        subject = repr(genfunc_native)
    return _check(
        genfunc_native,
        genfunc_marked,
        args,
        actions,
        subject=subject,
        modes=modes,
        fork_at=fork_at,
        fill=fill,
        max_steps=max_steps,
        backend=backend,
    )
