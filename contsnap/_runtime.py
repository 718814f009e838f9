"""Helpers that transformed code calls at run time, bound as ``__contsnap_rt__`` (and
the hottest also one by one: see `bind`).

The transform (``contsnap._transform``) emits references to the names defined
here and nowhere else, so this module is the whole contract between generated
code and the library. Everything here is small and hot: no imports of the
snapshot machinery.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import itertools
import sys
import types
import weakref
from collections.abc import Iterator
from typing import Any

from . import _labels
from ._registry import STATE

builtins_iter = iter
iter = iter
next = next
type_of = type
_TextIOWrapper = io.TextIOWrapper
#: what transformed code of an older version checks (now `builtin_iters`)
reread = frozenset({_TextIOWrapper, enumerate})


class _Shared(set):  # type: ignore[type-arg]
    """A set that pickles by name: the globals of a function saved by value hold it."""

    def __reduce__(self) -> str:
        return "builtin_iters"


#: Iterator types that a ``for`` loop runs over as they are: their ``__iter__`` is C
#: code that returns the iterator itself. The loop takes ``iter()`` of its iterable in
#: C and calls `for_iter` (Python) only for the others; it adds each new such type.
builtin_iters: set[type] = _Shared({types.GeneratorType, zip, map, filter, reversed})


def _add_builtin_iterators() -> None:
    made: list[Any] = [(), [], "", "\u20ac", b"", bytearray(), {}, {}.values(), {}.items()]
    made += [set(), range(1), range(2**64), reversed([]), reversed({}), memoryview(b"")]
    for thing in made:
        with contextlib.suppress(TypeError):  # (what an older Python cannot iterate)
            builtin_iters.add(type(builtins_iter(thing)))
    builtin_iters.add(type(builtins_iter(int, 0)))


_add_builtin_iterators()
STATE.add(
    __name__,
    "builtin_iters",
    None,
    "a cache of C iterator types a for loop runs as they are: it only grows, rightly",
)
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class statement's (may be made per call)


def _in_c(kind: type, method: str) -> bool:
    """Is ``kind``'s ``method`` (``__iter__``, ``__aiter__``) C code? Then calling it again
    on an iterator runs nothing of the user's (an iterator's returns itself)."""
    return type(getattr(kind, method, None)) is types.WrapperDescriptorType


def for_iter(iterator: Any) -> Any:
    """What a ``for`` loop iterates, given ``iter(iterable)`` that is not of `builtin_iters`.

    * An iterator whose ``__iter__`` is Python code, or that has none (Python's
      loop calls ``iter()`` once, on the iterable, and accepts any object with
      ``__next__``): wrapped in `ForIterator`, so that the native loop over it
      does not call ``__iter__`` a second time.
    * An open text file: CPython disables ``tell()`` on a text file while it is
      iterated with ``next()``, so a snapshot could not say where the loop was.
      A seekable text file is read with ``readline()`` instead (the same lines,
      with ``tell()`` intact); ``iter(f.readline, "")`` is a C iterator that
      pickles as the file (through its resource handler) and the sentinel.
    """
    kind = type(iterator)
    if kind is _TextIOWrapper:
        if not iterator.closed and iterator.seekable():
            return iter(iterator.readline, "")
        return iterator
    if kind is enumerate:  # ``enumerate(f)`` holds the file itself: read it the same way
        _make, (inner, start) = iterator.__reduce__()
        if type(inner) is _TextIOWrapper and not inner.closed and inner.seekable():
            return enumerate(iter(inner.readline, ""), start)
        return iterator
    if not _in_c(kind, "__iter__"):
        return ForIterator(iterator)
    if not kind.__flags__ & _HEAP_TYPE:
        builtin_iters.add(kind)
    return iterator


def reentered(iterator: Any) -> Any:
    """The iterator a restored generator expression is made over again: it loops over it
    with Python's own ``for`` (``async for``), which asks it for ``__iter__``
    (``__aiter__``) once more. The expression did that once already, on its iterable:
    an iterator whose own method is Python code (or missing) is wrapped, as `for_iter`
    and `aiter` wrap it for a loop."""
    kind = type(iterator)
    if kind in builtin_iters or kind is ForIterator or kind is AsyncIterator:
        return iterator
    if hasattr(kind, "__next__"):
        return iterator if _in_c(kind, "__iter__") else ForIterator(iterator)
    if hasattr(kind, "__anext__") and kind is not types.AsyncGeneratorType:
        return iterator if _in_c(kind, "__aiter__") else AsyncIterator(iterator)
    return iterator


class ForIterator:
    """A ``for`` loop's iterator whose own ``__iter__`` must not be called again.

    The loop asks this for ``__iter__`` and is handed the iterator itself, so it then
    calls the iterator's ``__next__`` directly: nothing in between per item.
    """

    __slots__ = ("iterator",)

    def __init__(self, iterator: Any) -> None:
        self.iterator = iterator

    def __iter__(self) -> Any:
        return self.iterator

    def __next__(self) -> Any:
        return type(self.iterator).__next__(self.iterator)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ForIterator, (self.iterator,))


class YieldFromIterator(ForIterator):
    """`ForIterator` for ``yield from``, which also uses the iterator's ``send``,
    ``throw`` and ``close`` when it has them (and names it when it has no ``send``)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name in ("send", "throw", "close"):
            return getattr(self.iterator, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (YieldFromIterator, (self.iterator,))


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"<contsnap {self._name}>"

    def __reduce__(self) -> str:
        return self._name


#: Value a resumed generator yields while it is primed; restore discards it.
PRIME = _Marker("PRIME")
#: Sentinel for ``next(iterator, END)`` in resumed ``for`` loops.
END = _Marker("END")
#: Stands for an unbound first parameter when a frame is rebuilt.
UNBOUND = _Marker("UNBOUND")


class Detach(BaseException):
    """Thrown into a generator to end it without running its ``finally`` blocks.

    Transformed code lets it pass every ``except`` clause, ``finally`` body and
    context-manager exit, so the continuation that moved elsewhere is the only
    one that will run them.
    """

    __module__ = "contsnap._runtime"


def is_detach(exc: BaseException | None) -> bool:
    """True for a Detach, or an exception group made only of Detach (from ``except*``)."""
    if isinstance(exc, Detach):
        return True
    if sys.version_info >= (3, 11) and isinstance(exc, BaseExceptionGroup):  # noqa: F821
        return all(is_detach(inner) for inner in exc.exceptions)
    return False


def live() -> bool:
    """False while a Detach is propagating: transformed ``finally`` bodies then stay silent."""
    return not is_detach(sys.exc_info()[1])


#: ``types.coroutine`` sets it on a generator function's code: its generators can be awaited
ITERABLE_COROUTINE = inspect.CO_ITERABLE_COROUTINE


def _iterable_coroutine(obj: Any) -> bool:
    return isinstance(obj, types.GeneratorType) and bool(obj.gi_code.co_flags & ITERABLE_COROUTINE)


def yield_from_iter(obj: Any) -> Any:
    """The iterator ``yield from obj`` delegates to (generators are their own iterator).

    A coroutine is delegated to only from a ``@types.coroutine`` generator, as
    Python does; this is called straight from the transformed frame.
    """
    if isinstance(obj, types.GeneratorType):
        return obj
    if isinstance(obj, types.CoroutineType):
        if sys._getframe(1).f_code.co_flags & (ITERABLE_COROUTINE | inspect.CO_COROUTINE):
            return obj
        raise TypeError("cannot 'yield from' a coroutine object in a non-coroutine generator")
    iterator = iter(obj)
    kind = type(iterator)
    if kind in builtin_iters or _in_c(kind, "__iter__"):
        return iterator
    # the transformed ``yield from`` asks it for an iterator again: as in a for loop,
    # an iterator whose own __iter__ is Python code (or missing) is not asked
    return YieldFromIterator(iterator)


def _enter(manager: Any, enter: str, exit_: str, protocol: str) -> Any:
    """``type(manager).<enter>(manager)``, refusing non-managers exactly as Python does."""
    cls = type(manager)
    for name, missing in ((enter, ""), (exit_, f" (missed {exit_} method)")):
        if not hasattr(cls, name):
            if sys.version_info < (3, 11):
                raise AttributeError(name)
            raise TypeError(f"'{cls.__name__}' object does not support the {protocol}{missing}")
    return getattr(cls, enter)(manager)


def _exit(manager: Any, name: str, exc: BaseException | None) -> Any:
    """Call ``<name>`` with the exception being handled (or three ``None``)."""
    exit_ = getattr(type(manager), name)
    if exc is None:
        return exit_(manager, None, None, None)
    return exit_(manager, type(exc), exc, exc.__traceback__)


def with_enter(manager: Any) -> Any:
    return _enter(manager, "__enter__", "__exit__", "context manager protocol")


def with_exit(manager: Any, exc: BaseException | None) -> Any:
    return _exit(manager, "__exit__", exc)


#: Restored generators not yet primed, by id: a resumed ``yield from`` primes them itself.
#: Only a load adds to it, and its end takes them out again (held until then, so an id
#: stays its generator's).
UNPRIMED: dict[int, Any] = {}
STATE.add(
    __name__, "UNPRIMED", None, "restored generators not primed yet, held by a load until it ends"
)


def resumed_await(point: Any) -> Any:
    """A saved ``yield from point.__await__()`` (a safe point's): what to go on with."""
    return type(point).__contsnap_resume__(point).__await__()


def coroutine_await(coro: Any) -> Any:
    """``coro.__await__()``: a saved ``yield from coro.__await__()`` is restored by it."""
    return coro.__await__()


def resume_delegate(delegate: Any) -> Any:
    """What a resumed ``yield from`` re-enters.

    A delegate restored in the same load is still unprimed: delegating to it
    primes it, and its ``PRIME`` travels up the chain (no extra frame per
    level). A delegate that is already paused is wrapped in `Reattach`, or in
    `ReattachThrowing` when it has a ``throw`` method of its own.
    """
    if UNPRIMED.pop(id(delegate), None) is not None:
        return delegate
    if type(delegate) is types.CoroutineType:
        # ``yield from coro`` in a ``@types.coroutine`` generator: re-entered through the
        # coroutine's own iterator (a coroutine has no ``__next__``)
        delegate = delegate.__await__()
    if hasattr(delegate, "throw"):
        return ReattachThrowing(delegate)
    return Reattach(delegate)


class Reattach:
    """Lets a restored ``yield from`` re-enter a delegate that is already paused.

    Its first ``__next__`` returns `PRIME` without touching the delegate
    (that is the priming step of restore); afterwards it forwards ``send``
    and ``close`` exactly as ``yield from`` would to the delegate. It has no
    ``throw``, like the delegates it stands for (a list iterator...): an
    exception thrown in is then raised at the ``yield from`` itself, as
    Python does, and a ``StopIteration`` thrown in is not taken for the
    delegate's return.
    """

    __slots__ = ("_delegate", "_primed")

    def __init__(self, delegate: Any) -> None:
        self._delegate = delegate
        self._primed = False

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if not self._primed:
            self._primed = True
            return PRIME
        return next(self._delegate)

    def send(self, value: Any) -> Any:
        if value is None or genexp_factory(self._delegate) is not None:
            # a generator expression ignores what it is sent; restored, it has not started
            return self.__next__()
        return self._delegate.send(value)

    def close(self) -> None:
        close = getattr(self._delegate, "close", None)
        if close is not None:
            close()


class ReattachThrowing(Reattach):
    """`Reattach` for a delegate with a ``throw`` method: forwards it."""

    __slots__ = ()

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:
            return self._delegate.throw(typ)
        return self._delegate.throw(typ, val, tb)


slice = slice


def set_items(iterable: Any) -> list[Any]:
    """The items of ``*iterable`` in a set display, unpacked as the display would
    (its error for a non-iterable is that of ``iter()``)."""
    return [*iter(iterable)]


# ------------------------------------------------------------------ async

StopAsyncIteration = StopAsyncIteration


def aiter(obj: Any) -> Any:
    """``type(obj).__aiter__(obj)``, as ``async for`` calls it: the iterator that the loop
    keeps in a local.

    The transformed loop is a native ``async for`` over that iterator, which asks it
    for ``__aiter__`` again: an async generator answers itself in C. Any other is
    given the ``__aiter__`` of `AsyncIterator`, so that Python code of its own is not
    called a second time (nor missed: Python accepts one without ``__aiter__``).
    """
    method = getattr(type(obj), "__aiter__", None)
    if method is None:
        raise TypeError(
            f"'async for' requires an object with __aiter__ method, got {type(obj).__name__}"
        )
    iterator = method(obj)
    kind = type(iterator)
    if kind is types.AsyncGeneratorType:
        return iterator
    if _in_c(kind, "__aiter__"):
        return iterator  # C code that returns the iterator itself
    if not hasattr(kind, "__anext__"):
        raise TypeError(
            "'async for' received an object from __aiter__ that does not implement "
            f"__anext__: {kind.__name__}"
        )
    return AsyncIterator(iterator)


class AsyncIterator:
    """An ``async for`` loop's iterator whose own ``__aiter__`` must not be called again
    (or that has none): the loop asks this and is handed the iterator itself, whose
    ``__anext__`` it then calls directly (`ANext` of a step in flight uses this one's)."""

    __slots__ = ("iterator",)

    def __init__(self, iterator: Any) -> None:
        self.iterator = iterator

    def __aiter__(self) -> Any:
        return self.iterator

    def __anext__(self) -> Any:
        return type(self.iterator).__anext__(self.iterator)

    def __reduce__(self) -> tuple[Any, ...]:
        return (AsyncIterator, (self.iterator,))


class ANext:
    """The awaitable of one ``async for`` step; it knows its iterator, so it can be saved.

    Awaiting it delegates straight to ``__anext__()``'s own awaitable (no
    Python frame in between), which it keeps as ``pending``. A restored step
    over an async generator asks the restored generator again (the generator's
    own frame holds where the step was); a step whose ``__anext__`` is a
    checkpointable coroutine in flight resumes that coroutine.
    """

    __slots__ = ("iterator", "pending")

    def __init__(self, iterator: Any, pending: Any = None) -> None:
        self.iterator = iterator
        self.pending = pending

    def __await__(self) -> Any:
        awaitable = type(self.iterator).__anext__(self.iterator)
        self.pending = awaitable
        if isinstance(awaitable, types.CoroutineType):
            return awaitable.__await__()
        try:
            return _await_iter(awaitable)
        except Exception as exc:  # as Python says it, with the reason as the cause
            raise TypeError(
                f"'async for' received an invalid object from __anext__: {type(awaitable).__name__}"
            ) from exc

    def in_flight(self) -> Any:
        """The step's coroutine to save with it, or None when the iterator's own state is enough.

        Raises ``TypeError`` naming what the step awaits when it can be neither.
        """
        pending = self.pending
        if pending is None or type(self.iterator) is types.AsyncGeneratorType:
            return None
        if type(pending) is types.CoroutineType:
            return pending
        raise TypeError(
            f"an async for step is in progress in {type(self.iterator).__qualname__}.__anext__, "
            f"which returned {type(pending).__qualname__}: only a checkpointable coroutine "
            "__anext__ (or an async generator) can be saved in the middle of a step"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (ANext, (self.iterator, self.in_flight()))

    def __contsnap_resume__(self) -> Any:
        # calls no Python code for an async generator's step: resuming the innermost
        # level of a chain as deep as the recursion limit allows takes no extra frame
        if self.pending is None or type(self.iterator) is types.AsyncGeneratorType:
            again = object.__new__(ANext)
            again.iterator, again.pending = self.iterator, None
            return again
        pending = self.in_flight()
        return ANext(self.iterator) if pending is None else pending


_ACM = contextlib._AsyncGeneratorContextManager
#: what ``@asynccontextmanager``'s ``__aenter__``/``__aexit__`` run (their code, to know them)
ACM_ENTER_CODE = _ACM.__aenter__.__code__
ACM_EXIT_CODE = _ACM.__aexit__.__code__
#: 3.11.7+ close the generator that did not stop (3.10 leaves it to the collector)
_ACM_EXIT_CLOSES = "aclose" in ACM_EXIT_CODE.co_names


class _ContextManagerEnd(ANext):
    """What `ContextManagerStep` and `ContextManagerThrow` share: contextlib's ending of a
    step after which the generator went on instead of stopping (``did_not_stop``: a
    RuntimeError, with the ``aclose()`` this Python's contextlib does first), and the rest
    of that ``aclose()`` when the snapshot was taken inside it (``closing``)."""

    __slots__ = ("closing",)
    #: contextlib's message when the generator did not stop
    DID_NOT_STOP = ""

    def _rest_of_closing(self) -> Any:
        try:
            raise RuntimeError(self.DID_NOT_STOP)
        finally:
            yield from _rest_of_aclose(self.iterator)

    def _did_not_stop(self) -> Any:
        try:
            raise RuntimeError(self.DID_NOT_STOP)
        finally:
            if _ACM_EXIT_CLOSES:
                self.closing = True
                yield from self.iterator.aclose().__await__()


class ContextManagerStep(_ContextManagerEnd):
    """The rest of an ``@asynccontextmanager``'s ``__aenter__`` (``kind`` "enter") or of its
    ``__aexit__`` with no exception ("exit"), paused inside the step of its marked async
    generator: what contextlib's coroutine does with the step's end, as it does it."""

    __slots__ = ("kind",)
    DID_NOT_STOP = "generator didn't stop"

    def __init__(self, iterator: Any, kind: str, closing: bool = False) -> None:
        super().__init__(iterator)
        self.kind = kind
        self.closing = closing  # in the aclose() after "generator didn't stop"

    def __await__(self) -> Any:
        if self.closing:
            yield from self._rest_of_closing()
        try:
            value = yield from ANext(self.iterator).__await__()
        except StopAsyncIteration:
            if self.kind == "enter":
                raise RuntimeError("generator didn't yield") from None
            return False
        if self.kind == "enter":
            return value
        yield from self._did_not_stop()

    def __reduce__(self) -> tuple[Any, ...]:
        return (ContextManagerStep, (self.iterator, self.kind, self.closing))

    def __contsnap_resume__(self) -> ContextManagerStep:
        return ContextManagerStep(self.iterator, self.kind, self.closing)


def _rest_of_aclose(agen: Any) -> Any:
    """The rest of an ``aclose()`` whose generator was saved in the middle of it (awaiting
    in a ``finally``): it goes on, and must end, as ``aclose()`` wants."""
    try:
        yield from ANext(agen).__await__()
    except (StopAsyncIteration, GeneratorExit):
        return
    raise RuntimeError("async generator ignored GeneratorExit")


class ContextManagerThrow(_ContextManagerEnd):
    """The rest of an ``@asynccontextmanager``'s ``__aexit__`` for a body that raised
    ``value``, paused inside the ``athrow()`` step of its marked async generator: the step
    goes on as an ``asend(None)`` (the exception is in the generator's frame already), and
    its end is judged as contextlib judges it."""

    __slots__ = ("value",)
    DID_NOT_STOP = "generator didn't stop after athrow()"

    def __init__(self, iterator: Any, value: BaseException, closing: bool = False) -> None:
        super().__init__(iterator)
        self.value = value
        self.closing = closing  # in the aclose() after "generator didn't stop after athrow()"

    def __await__(self) -> Any:
        value = self.value
        if self.closing:
            yield from self._rest_of_closing()
        try:
            yield from ANext(self.iterator).__await__()
        except StopAsyncIteration as exc:
            return exc is not value
        except RuntimeError as exc:
            if exc is value:
                return False
            if isinstance(value, (StopIteration, StopAsyncIteration)) and exc.__cause__ is value:
                return False
            raise
        except BaseException as exc:
            if exc is not value:
                raise
            return False
        yield from self._did_not_stop()

    def __reduce__(self) -> tuple[Any, ...]:
        return (ContextManagerThrow, (self.iterator, self.value, self.closing))

    def __contsnap_resume__(self) -> ContextManagerThrow:
        return ContextManagerThrow(self.iterator, self.value, self.closing)


class AwaitGenerator:
    """An await of a checkpointable generator: what a snapshot saves for an ``await x``
    whose ``x.__await__()`` returned one (the rest of the await is that generator's).

    Awaiting it delegates to the generator again; a restored one is primed at its
    yield, so the event loop's next ``send`` goes on where the original went on.
    """

    __slots__ = ("generator",)

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def __await__(self) -> Any:
        return self.generator

    def __reduce__(self) -> tuple[Any, ...]:
        return (AwaitGenerator, (self.generator,))

    def __contsnap_resume__(self) -> AwaitGenerator:
        return self


def anext(iterator: Any) -> ANext:
    if getattr(type(iterator), "__anext__", None) is None:
        raise TypeError(
            "'async for' received an object from __aiter__ that does not implement "
            f"__anext__: {type(iterator).__name__}"
        )
    return ANext(iterator)


def _through(coroutine: Any) -> Any:
    return (yield from coroutine)


def _await_iter(awaitable: Any) -> Any:
    """What ``await awaitable`` iterates, checked as Python checks it."""
    if _iterable_coroutine(awaitable):
        return _through(awaitable)  # ``__await__`` may not return a coroutine itself
    method = getattr(type(awaitable), "__await__", None)
    if method is None:
        raise TypeError(f"object {type(awaitable).__name__} can't be used in 'await' expression")
    result = method(awaitable)
    if isinstance(result, types.CoroutineType) or _iterable_coroutine(result):
        raise TypeError("__await__() returned a coroutine")
    if not hasattr(type(result), "__next__"):
        raise TypeError(f"__await__() returned non-iterator of type '{type(result).__name__}'")
    return result


def _awaitable(obj: Any, method: str) -> Any:
    """``obj``, if ``async with`` can await it (else Python's TypeError for ``method``)."""
    if not (
        isinstance(obj, types.CoroutineType)
        or hasattr(type(obj), "__await__")
        or _iterable_coroutine(obj)
    ):
        raise TypeError(
            f"'async with' received an object from {method} that does not implement "
            f"__await__: {type(obj).__name__}"
        )
    return obj


def aenter(manager: Any) -> Any:
    """The awaitable of ``__aenter__``, refusing non-managers as ``async with`` does."""
    return _awaitable(
        _enter(manager, "__aenter__", "__aexit__", "asynchronous context manager protocol"),
        "__aenter__",
    )


def aexit(manager: Any, exc: BaseException | None) -> Any:
    """The awaitable of ``__aexit__`` with the exception being handled (or three ``None``)."""
    return _awaitable(_exit(manager, "__aexit__", exc), "__aexit__")


#: Restored coroutines not yet started, by id (held weakly): a resumed ``await`` starts
#: them itself. A plain dict, which :func:`resume_awaitable` reads without running any
#: Python code: the innermost level of a resumed chain is then no deeper than a native
#: one, so a chain as deep as the recursion limit allows resumes too.
UNSTARTED: dict[int, weakref.ref[Any]] = {}
STATE.add(__name__, "UNSTARTED", None, "restored coroutines not started yet")


def add_unstarted(coroutine: Any) -> None:
    key = id(coroutine)

    def forget(ref: weakref.ref[Any]) -> None:
        if UNSTARTED.get(key) is ref:
            del UNSTARTED[key]

    UNSTARTED[key] = weakref.ref(coroutine, forget)


#: Restored coroutines of a paused task, with what their first await resumes and the
#: task's context variables, which are set again when it does (in the new task).
PENDING_CONTEXT: weakref.WeakKeyDictionary[Any, tuple[Any, list[tuple[Any, Any]]]] = (
    weakref.WeakKeyDictionary()
)
STATE.add(__name__, "PENDING_CONTEXT", None, "restored coroutines of a paused task, with context")


def _enter_saved_context(awaitable: Any) -> None:
    for coro, (awaited, items) in list(PENDING_CONTEXT.items()):
        if awaited is awaitable:
            del PENDING_CONTEXT[coro]
            for var, value in items:
                var.set(value)
            return


def resume_awaitable(awaitable: Any) -> Any:
    """What a resumed ``await`` re-enters.

    A restored coroutine (not started yet) is awaited as it is: its own
    dispatch takes it to where it was; so is a restored generator-based
    coroutine (``@types.coroutine``), which is primed at its yield. A safe point (an object with
    ``__contsnap_resume__``) says what to await after a restore: nothing for
    ``checkpoint()``, the rest of the time for ``sleep()``, a new ``get()``
    for a queue.
    """
    if PENDING_CONTEXT:
        _enter_saved_context(awaitable)
    entry = UNSTARTED.get(id(awaitable))
    if entry is not None and entry() is awaitable:
        del UNSTARTED[id(awaitable)]
        return awaitable
    if type(awaitable) is types.GeneratorType and awaitable.gi_code.co_flags & ITERABLE_COROUTINE:
        # a restored ``@types.coroutine`` generator, primed at its yield: awaiting
        # it sends the event loop's None in, as the original await would have
        return awaitable
    resume = getattr(type(awaitable), "__contsnap_resume__", None)
    if resume is not None:
        return resume(awaitable)
    raise RuntimeError(f"cannot resume an await of {type(awaitable).__name__}")


def exc_match(exc: BaseException, kind: Any) -> bool:
    """Does ``exc`` match an ``except kind`` clause (one whose type yields, tested in a
    handler by the transformed code)? As CPython tests it, TypeError included."""
    kinds = kind if type(kind) is tuple else (kind,)
    for one in kinds:
        if not (isinstance(one, type) and issubclass(one, BaseException)):
            raise TypeError(
                "catching classes that do not inherit from BaseException is not allowed"
            )
    return isinstance(exc, kind)


def own_names(listing: Any) -> Any:
    """What ``locals()``/``vars()``/``dir()`` show natively: the frame's names without
    the transform's ``_cs_*`` helpers (a fresh dict, as ``locals()`` is on 3.13)."""
    if type(listing) is dict:
        return {k: v for k, v in listing.items() if not (type(k) is str and k.startswith("_cs_"))}
    if type(listing) is list:
        return [k for k in listing if not (type(k) is str and k.startswith("_cs_"))]
    return listing


#: generator expressions made by transformed code (weak references to them), with the
#: factory that made each (see ``contsnap._transform._genexps``): what a snapshot saves
#: for one. A plain dict of weak references: a WeakKeyDictionary costs a Python call more.
GENEXPS: dict[weakref.ref[Any], Any] = {}
STATE.add(__name__, "GENEXPS", None, "live generator expressions: what saves each")
_weak = weakref.ref


def _forget_genexp(reference: weakref.ref[Any]) -> None:
    GENEXPS.pop(reference, None)


def genexp_factory(gen: Any) -> Any:
    """The factory of a generator expression made by `genexp` (None: not one)."""
    try:
        return GENEXPS.get(_weak(gen))
    except TypeError:  # not weakly referenceable: not one of them
        return None


#: the qualname a generator expression made by each code gets: without the factory's part
_QUALNAMES: dict[Any, str] = {}
STATE.add(__name__, "_QUALNAMES", "clear")


def genexp(iterable: Any, factory: Any) -> Any:
    """A generator expression of transformed code: ``factory(iterable)``, remembered."""
    made = factory(iterable)
    GENEXPS[_weak(made, _forget_genexp)] = factory
    code = made.gi_code if type(made) is types.GeneratorType else made.ag_code
    qualname = _QUALNAMES.get(code)
    if qualname is None:
        qualname = made.__qualname__
        if qualname.endswith(_FACTORY_QUALNAME):  # named as natively, without the factory
            qualname = qualname[: -len(_FACTORY_QUALNAME)] + "<genexpr>"
        if len(_QUALNAMES) < 10_000:
            _QUALNAMES[code] = qualname
    made.__qualname__ = qualname
    return made


_FACTORY_QUALNAME = "<lambda>.<locals>.<genexpr>"


def chain_genexps(iterables: Any) -> Any:
    """The items of each iterable in turn (a generator expression's nested ``for``)."""
    return itertools.chain.from_iterable(iterables)


def bind(namespace: dict[str, Any]) -> None:
    """Give a namespace that transformed functions run in the names they read: this
    module as ``__contsnap_rt__`` and each of ``_labels.HELPERS`` under its own name.
    Names already there are left alone."""
    if LAST_BOUND in namespace:  # bound already: the usual case, kept cheap
        return
    namespace.setdefault(_labels.RT, sys.modules[__name__])
    for name in _labels.HELPERS:
        namespace.setdefault(_labels.helper(name), globals()[name])


#: the name bind() gives last: a namespace that has it is bound
LAST_BOUND = _labels.helper(_labels.HELPERS[-1])
