"""Round-trip test mode: continue every checkpointable generator from a restored copy.

Set ``CONTSNAP_ROUNDTRIP`` before the process starts (or use the pytest plugin's
``--contsnap-roundtrip``):

* ``1`` (or ``ref``): at every suspension the frame is captured and continued
  from a copy rebuilt through the same capture/restore path as ``loads``, its
  values carried by reference, so objects shared with the test keep their
  identity;
* ``pickle``: the values go through the snapshot pickler (copied), so state
  that cannot be serialised fails with a named ``NotCheckpointableError``.

The old copy is detached, so no ``finally`` block runs twice. With
``CONTSNAP_ROUNDTRIP_REPORT=FILE`` a JSON summary is written at exit.

A decorated generator function then returns a driver: a checkpointable
generator that forwards ``send``/``throw``/``close`` and moves the real
generator at every suspension. Coroutines and async generators are not
driven yet (see :func:`wrap`). Generators created by transformed
code are driven by the generator that holds them, so a ``yield from`` chain
is moved as a whole.
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import os
import sys
import types
from typing import Any

from ._decorator import checkpointable
from ._errors import CheckpointError
from ._snapshot import (
    SUSPENDABLE,
    _load_context,
    capture,
    closed_generator,
    detach,
    detach_obstacle,
    from_payload,
    info_of,
    new_generator,
    set_generator_state,
    to_payload,
)

MODE = (os.environ.get("CONTSNAP_ROUNDTRIP") or "").strip().lower() or None
if MODE in ("0", "off", "no", "false"):
    MODE = None
if MODE not in (None, "1", "ref", "pickle"):
    raise CheckpointError(
        f"CONTSNAP_ROUNDTRIP={MODE!r} is not a round-trip mode; use 1 (by reference) or pickle"
    )

STATS: collections.Counter[str] = collections.Counter()
FAILURES: collections.Counter[str] = collections.Counter()
#: suspensions where no snapshot can be taken (a foreign await...): not moved
SKIPPED: collections.Counter[str] = collections.Counter()


def _move(obj: Any) -> Any:
    """A restored copy of a suspended ``obj``; ``obj`` itself is detached."""
    kind = type(obj).__name__
    obstacle = detach_obstacle(obj)
    if obstacle is not None:
        SKIPPED[obstacle] += 1
        return obj
    try:
        if MODE == "pickle":
            # the driver moving ``obj`` is running: whatever refers to it keeps it
            payload, _captured, refs = to_payload(obj, keep=_running_generator)
            new = from_payload(payload, refs)
            detach(obj)
        else:
            rebuilt: list[Any] = []
            with _load_context():
                new = _rebuild(obj, {}, rebuilt)
            for old in reversed(rebuilt):  # outermost first: its detach ends its delegates
                detach(old, owned=False)
    except CheckpointError as exc:
        FAILURES[f"{type(exc).__name__}: {exc}"] += 1
        raise
    STATS[kind] += 1
    return new


def _running_generator(obj: Any) -> bool:
    return type(obj) is types.GeneratorType and obj.gi_running


def _rebuild(obj: Any, memo: dict[int, Any], rebuilt: list[Any]) -> Any:
    """Rebuild ``obj`` and the suspended generators its frame holds directly (by reference)."""
    found = memo.get(id(obj))
    if found is not None:
        return found
    state = capture(obj)
    if state.status == "closed":
        return closed_generator(state.info)
    new = new_generator(state.info, state.label, state.cells, state.names)
    memo[id(obj)] = new
    values = dict(state.values)
    delegate = state.delegate
    if type(delegate) in SUSPENDABLE and info_of(delegate) is not None and _suspended(delegate):
        # only the delegation chain moves: another generator the frame holds may be
        # shared (self.job = ...), and the test may still use it
        spec = state.info.labels[state.label]
        assert spec.delegate is not None
        values[spec.delegate] = _rebuild(delegate, memo, rebuilt)
    set_generator_state(new, values)
    rebuilt.append(obj)
    return new


def _suspended(obj: Any) -> bool:
    frame = getattr(obj, "gi_frame", None) or getattr(obj, "cr_frame", None)
    frame = frame or getattr(obj, "ag_frame", None)
    return frame is not None and not (
        getattr(obj, "gi_running", False) or getattr(obj, "cr_running", False)
    )


@checkpointable
def drive_generator(gen: Any) -> Any:
    """Forward the generator protocol to ``gen``, moving it at every suspension.

    What the caller throws is passed on outside the ``except`` clause that
    caught it, so exception contexts come out as with ``yield from``.
    """
    try:
        value = gen.send(None)
    except StopIteration as done:
        return done.value
    while True:
        gen = _move(gen)
        thrown = None
        try:
            sent = yield value
        except BaseException as exc:
            thrown = exc
        try:
            if isinstance(thrown, GeneratorExit):
                returned = gen.close()
                if returned is not None:  # 3.13: close() returns what the generator returned
                    return returned
                raise thrown
            value = gen.send(sent) if thrown is None else gen.throw(thrown)
        except StopIteration as done:
            return done.value
        finally:
            thrown = None


class _Driven:
    """Awaiting it runs :func:`drive_generator` over a coroutine (step by step)."""

    __slots__ = ("driver",)

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def __await__(self) -> Any:
        return self.driver

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Driven, (self.driver,))

    def __contsnap_resume__(self) -> _Driven:
        return self


@checkpointable
async def drive_coroutine(coro: Any) -> Any:
    return await _Driven(drive_generator(coro))


def wrap(function: types.FunctionType) -> Any:
    """The round-trip form of a decorated function (see the module docstring)."""
    flags = function.__code__.co_flags

    @functools.wraps(function)
    def start(*args: Any, **kwargs: Any) -> Any:
        made = function(*args, **kwargs)
        caller = sys._getframe(1).f_code
        if info_of_code(caller) is not None:
            return made  # driven by the transformed frame that holds it
        if flags & (0x80 | 0x200):
            # Coroutines and async generators are not driven yet: a driver would have
            # to re-await foreign futures and unmarked awaitables it cannot capture.
            # (tests/test_async.py and contsnap.testing move them at every safe point.)
            return made
        driver: Any = drive_generator(made)
        driver.__name__ = start.__name__  # names stay the user's (even if reassigned)
        driver.__qualname__ = start.__qualname__
        return driver

    start.__contsnap__ = function.__contsnap__  # type: ignore[attr-defined]
    return start


def info_of_code(code: types.CodeType) -> Any:
    from ._info import info_for_code

    return info_for_code(code)


def report() -> dict[str, Any]:
    return {
        "mode": MODE,
        "round_trips": dict(STATS),
        "total": sum(STATS.values()),
        "failures": dict(FAILURES),
        "skipped_suspensions": dict(SKIPPED),
    }


def _write_report() -> None:
    path = os.environ.get("CONTSNAP_ROUNDTRIP_REPORT")
    summary = report()
    if MODE and not summary["total"]:
        print(
            "contsnap: CONTSNAP_ROUNDTRIP is set but no round trip was performed: "
            "no checkpointable generator or coroutine ran",
            file=sys.stderr,
        )
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(summary, out, indent=2, sort_keys=True)


if MODE:
    atexit.register(_write_report)
