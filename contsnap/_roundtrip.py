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

A decorated function called from plain code then returns a driver: a
checkpointable generator, coroutine or async generator that forwards the
protocol (``send``/``throw``/``close``, ``asend``/``athrow``/``aclose``) and
moves the real object at its suspensions (see `drive_generator` and
`drive_async_generator`). Objects created by transformed code are
driven by the frame that holds them, so a ``yield from`` or ``await`` chain
is moved as a whole. A coroutine waiting on something that is not a safe
point (an asyncio future, an unmarked awaitable) cannot be moved there; such
suspensions are counted as skipped in the report.
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import os
import re
import sys
import threading
import types
from typing import Any

from ._errors import CheckpointError
from ._marking import _marking
from ._marking._decorator import checkpointable
from ._registry import STATE
from ._runtime import ANext, AwaitGenerator
from ._snapshot import (
    SUSPENDABLE,
    _load_context,
    capture,
    closed_generator,
    delegation_chain,
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
STATE.add(__name__, "STATS")
FAILURES: collections.Counter[str] = collections.Counter()
STATE.add(__name__, "FAILURES")
#: suspensions where no snapshot can be taken (a foreign await...): not moved
SKIPPED: collections.Counter[str] = collections.Counter()
STATE.add(__name__, "SKIPPED")


#: ``moving`` is set in a thread while it moves an object: what runs then (a
#: ``__reduce__`` the pickler calls, which may drive a generator) is not moved
_MOVE = threading.local()
STATE.add(__name__, "_MOVE", "attributes")
#: how such a suspension is counted in the report
NESTED = "a suspension while another move pickles (a __reduce__ running a generator)"


def _move(obj: Any) -> Any:
    """A restored copy of a suspended ``obj``; ``obj`` itself is detached."""
    if getattr(_MOVE, "moving", False):
        SKIPPED[NESTED] += 1
        return obj
    _MOVE.moving = True
    try:
        return _move_now(obj)
    finally:
        _MOVE.moving = False


def _move_now(obj: Any) -> Any:
    kind = type(obj).__name__
    obstacle = _obstacle(obj)
    if obstacle is not None:
        SKIPPED[re.sub(r" at 0x[0-9a-f]+", "", obstacle)] += 1
        return obj
    try:
        if MODE == "pickle":
            # the driver moving ``obj`` is running: whatever refers to it keeps it
            payload, _captured, refs = to_payload(obj, keep=_running_generator)
            new = from_payload(payload, refs)
            detach(obj, keep=_running_generator)  # the copy holds what was kept
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


def _obstacle(obj: Any) -> str | None:
    """Why ``obj`` cannot be moved now, looking through the drivers its chain awaits."""
    found = detach_obstacle(obj)
    if found is not None:
        return found
    for member in delegation_chain(obj):
        if isinstance(member, _Driven) and _movable(member.generator):
            driven = capture(member.generator).values.get("gen")
            if _movable(driven):
                found = _obstacle(driven)
                if found is not None:
                    return found
    return None


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
    # only the delegation chain moves: another generator the frame holds may be
    # shared (self.job = ...), and the test may still use it
    spec = state.info.labels.get(state.label)
    if _movable(delegate):
        assert spec is not None and spec.delegate is not None
        values[spec.delegate] = _rebuild(delegate, memo, rebuilt)
    elif isinstance(delegate, _Driven) and _movable(delegate.generator):
        # a driven coroutine awaited by transformed code: its driver moves too (the old
        # one is detached, which must not reach the shared coroutine it drives)
        assert spec is not None and spec.delegate is not None
        values[spec.delegate] = _Driven(_rebuild(delegate.generator, memo, rebuilt))
    elif isinstance(delegate, ANext) and _movable(delegate.in_flight()):
        # an ``async for`` step in progress in a coroutine ``__anext__``: it moves too
        assert spec is not None and spec.delegate is not None
        pending = _rebuild(delegate.in_flight(), memo, rebuilt)
        values[spec.delegate] = ANext(delegate.iterator, pending)
    elif isinstance(delegate, ANext) and _movable(delegate.iterator):
        # an ``async for`` step in progress: its async generator moves with the chain
        assert spec is not None and spec.delegate is not None
        values[spec.delegate] = ANext(_rebuild(delegate.iterator, memo, rebuilt))
    for name, value in values.items():  # other names for what moved see the new copy
        moved = memo.get(id(value))
        if moved is not None:
            values[name] = moved
    set_generator_state(new, values)
    rebuilt.append(obj)
    return new


#: contsnap modules whose frames call user code on behalf of transformed code
_HELPERS = frozenset({"contsnap._runtime", "contsnap._aio"})


def _movable(obj: Any) -> bool:
    return type(obj) in SUSPENDABLE and info_of(obj) is not None and _suspended(obj)


def _suspended(obj: Any) -> bool:
    frame = getattr(obj, "gi_frame", None) or getattr(obj, "cr_frame", None)
    frame = frame or getattr(obj, "ag_frame", None)
    return frame is not None and not (
        getattr(obj, "gi_running", False) or getattr(obj, "cr_running", False)
    )


@checkpointable
def drive_generator(gen: Any) -> Any:
    """Forward the generator protocol to ``gen``, moving it at every suspension.

    A generator is moved as soon as it suspends (its restored copy is primed).
    A coroutine is moved when it is sent ``None``, which is how an event loop
    resumes it: its restored copy is unstarted, and its first ``send(None)``
    resumes the saved ``await``. A throw or another value goes to it unmoved.

    What the caller throws is passed on outside the ``except`` clause that
    caught it, so exception contexts come out as with ``yield from``.
    """
    coroutine = type(gen) is types.CoroutineType
    try:
        value = gen.send(None)
    except StopIteration as done:
        return done.value
    while True:
        if not coroutine:
            gen = _move(gen)
        thrown = None
        try:
            sent = yield value
        except BaseException as exc:
            thrown = exc
        try:
            # (a GeneratorExit too, thrown as close() throws it: what the generator does
            # with it comes out as natively, whether the caller closed the driver or threw
            # it in: a yield in a `finally` is yielded, so that close() raises "generator
            # ignored GeneratorExit" and the generator stays suspended; a value returned
            # ends the driver with it, which 3.13's close() returns)
            if coroutine and thrown is None and sent is None:
                gen = _move(gen)
            value = gen.send(sent) if thrown is None else gen.throw(thrown)
        except StopIteration as done:
            return done.value
        finally:
            thrown = None


#: Awaiting it runs `drive_generator` over a coroutine (step by step); a snapshot of the
#: awaiting frame saves the same (see ``_snapshot._capture.awaited_of``).
_Driven = AwaitGenerator


@checkpointable
async def drive_coroutine(coro: Any) -> Any:
    return await _Driven(drive_generator(coro))


@checkpointable
async def drive_async_generator(agen: Any) -> Any:
    """Forward the async generator protocol to ``agen``, moving it at every yield.

    Only its yields move it: between two awaits inside one step its caller is
    the ``asend()`` awaitable, which no snapshot holds.
    """
    try:
        value = await agen.asend(None)
    except StopAsyncIteration:
        return
    while True:
        agen = _move(agen)
        thrown = None
        try:
            sent = yield value
        except BaseException as exc:
            thrown = exc
        try:
            if isinstance(thrown, GeneratorExit):
                await agen.aclose()
                raise thrown
            if thrown is None:
                value = await agen.asend(sent)
            else:
                value = await agen.athrow(thrown)
        except StopAsyncIteration:
            return
        finally:
            thrown = None


_DRIVERS = {0x20: drive_generator, 0x80: drive_coroutine, 0x200: drive_async_generator}


def _driver_for(function: types.FunctionType) -> Any:
    for flag, driver in _DRIVERS.items():
        if function.__code__.co_flags & flag:
            return driver
    raise TypeError(f"{function.__qualname__} is not a generator, coroutine or async generator")


def wrap(function: types.FunctionType) -> Any:
    """The round-trip form of a decorated function (see the module docstring)."""
    return Driven(function)


class Driven:
    """A checkpointable function whose calls from plain code come back driven.

    It looks like the function to introspection: ``__code__`` is the
    function's own, so ``inspect.iscoroutinefunction`` and friends (and
    ``unittest``'s async test cases) see what it is; it binds as a method.
    A call made by transformed code is not driven: the caller's own driver
    moves the whole chain.

    What it calls lives in slots, out of reach of ``functools.wraps`` applied
    to it (``@wraps(f) async def wrapper``), which sets ``__wrapped__`` and
    copies ``f``'s attributes over the wrapper's, as it does natively.
    """

    __slots__ = ("__dict__", "__weakref__", "_cs_driver", "_cs_function")
    __name__: str
    __qualname__: str

    def __init__(self, function: types.FunctionType) -> None:
        self._cs_function = function
        self._cs_driver = _driver_for(function)
        if hasattr(function, "__contsnap__"):
            functools.update_wrapper(self, function)
        else:
            # being unpickled by value while its own globals name this wrapper (a
            # recursive function of a doctest or exec namespace): its attributes come
            # with its state, later; they are copied on first use (`__getattr__`)
            self.__module__ = function.__module__

    @property
    def __contsnap__(self) -> Any:
        return self._cs_function.__contsnap__  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        # reached only for what the instance lacks: a wrapper made before its function was
        # complete (see __init__) copies the function's attributes now
        if not name.startswith("_cs_") and self._completed():
            return getattr(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _completed(self) -> bool:
        """Copy the function's attributes if that was put off (see __init__) and the
        function is complete now: did it copy them?"""
        if "__wrapped__" in vars(self) or not hasattr(self._cs_function, "__contsnap__"):
            return False
        functools.update_wrapper(self, self._cs_function)
        return True

    @property
    def __code__(self) -> types.CodeType:
        return self._cs_function.__code__

    @property
    def __defaults__(self) -> tuple[Any, ...] | None:
        return self._cs_function.__defaults__

    @property
    def __kwdefaults__(self) -> dict[str, Any] | None:
        return self._cs_function.__kwdefaults__

    @property
    def __globals__(self) -> dict[str, Any]:
        return self._cs_function.__globals__

    @property
    def __closure__(self) -> tuple[types.CellType, ...] | None:
        return self._cs_function.__closure__

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1)
        made = self._cs_function(*args, **kwargs)
        while caller.f_back is not None and caller.f_globals.get("__name__") in _HELPERS:
            caller = caller.f_back  # called for transformed code (an async with's __aenter__)
        if info_of_code(caller.f_code) is not None:
            return made  # driven by the transformed frame that holds it
        driver = self._cs_driver(made)
        driver.__name__ = self.__name__  # names stay the user's (even if reassigned)
        driver.__qualname__ = self.__qualname__
        return driver

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else types.MethodType(self, obj)

    def __repr__(self) -> str:
        return f"<function {self.__qualname__} at {id(self):#x}>"

    def __reduce__(self) -> Any:
        # like a function: by import path where it is found there, else by value
        self._completed()
        if "<locals>" not in self.__qualname__:
            module = sys.modules.get(self.__module__)
            found: Any = module
            for part in self.__qualname__.split("."):
                found = getattr(found, part, None)
            if found is self:
                return self.__qualname__
        return (wrap, (self._cs_function,))


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


# round-trip mode wraps every function marked from now on (``_marking`` calls this)
_marking.roundtrip_wrappers.append(wrap)
