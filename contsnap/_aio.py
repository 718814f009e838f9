"""Safe points for coroutines under asyncio, and pausing a running task.

A marked coroutine can be snapshotted while it is suspended at an ``await``
of another marked coroutine, or of one of the *safe points* defined here:

* ``await contsnap.checkpoint()`` suspends exactly once (like
  ``asyncio.sleep(0)``); a restored coroutine continues right after it;
* ``await contsnap.sleep(seconds)`` keeps its deadline as wall-clock time, so a
  restored sleep waits only for what is left;
* ``await queue.get()`` on a [`Queue`][contsnap.Queue], whose contents are part of the
  snapshot (an item is taken from the queue only when the getter really runs).

[`pause`][contsnap.pause] asks a running task to stop at its next safe point and returns
its snapshot; the task stays parked until [`unpause`][contsnap.unpause] (or a move with
[`contsnap.detach`][contsnap.detach]).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import inspect
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

from . import _codec
from ._errors import CheckpointError, NotCheckpointableError
from ._registry import STATE


class _Pause:
    """A pause request for one task: it parks at its next safe point until released."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.parked: asyncio.Future[None] = loop.create_future()
        self.release: asyncio.Future[None] = loop.create_future()
        #: the task's context variables where it parked (read inside the task: a task's
        #: context is not reachable from outside before 3.12)
        self.context: contextvars.Context | None = None


_PAUSES: weakref.WeakKeyDictionary[asyncio.Task[Any], _Pause] = weakref.WeakKeyDictionary()
STATE.add(__name__, "_PAUSES", None, "the pauses of live tasks")
# The future a task is waiting on inside a safe point: pause() wakes it.
_WAITING: weakref.WeakKeyDictionary[asyncio.Task[Any], asyncio.Future[Any]] = (
    weakref.WeakKeyDictionary()
)
STATE.add(__name__, "_WAITING", None, "what live tasks wait on at a safe point")


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: driven by hand
        return None


def _park(request: _Pause) -> Generator[Any, Any, None]:
    task = _current_task()
    while True:
        if not request.parked.done():
            request.context = contextvars.copy_context()
            request.parked.set_result(None)
        yield from request.release.__await__()
        # released, but paused again before this task ran on: stay parked here
        again = _PAUSES.get(task) if task is not None else None
        if again is None or again.release.done():
            return
        request = again


async def _safe_point() -> None:
    """Park here if the current task was asked to pause."""
    task = _current_task()
    request = _PAUSES.get(task) if task is not None else None
    if request is not None and not request.release.done():
        await _Parked(request)


class _Parked:
    __slots__ = ("request",)

    def __init__(self, request: _Pause) -> None:
        self.request = request

    def __await__(self) -> Generator[Any, Any, None]:
        return _park(self.request)


@contextlib.contextmanager
def _waiting(future: asyncio.Future[Any]) -> Iterator[None]:
    task = _current_task()
    if task is not None:
        _WAITING[task] = future
    try:
        yield
    finally:
        if task is not None and _WAITING.get(task) is future:
            del _WAITING[task]


class _Done:
    """An awaitable that completes at once: what a passed safe point resumes as."""

    __slots__ = ()

    def __await__(self) -> Iterator[None]:
        return iter(())


_DONE = _Done()


class Checkpoint:
    """The awaitable of [`checkpoint`][contsnap.checkpoint]."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, None]:
        task = _current_task()
        request = _PAUSES.get(task) if task is not None else None
        if request is not None and not request.release.done():
            yield from _park(request)
            return
        yield
        # asked while it waited here: it parks here, past its one suspension (a task
        # that ends without another safe point could not be paused at all)
        request = _PAUSES.get(task) if task is not None else None
        if request is not None and not request.release.done():
            yield from _park(request)

    def __reduce__(self) -> tuple[Any, ...]:
        return (checkpoint, ())

    def __contsnap_resume__(self) -> _Done:
        return _DONE

    def __repr__(self) -> str:
        return "contsnap.checkpoint()"


def checkpoint() -> Checkpoint:
    """A safe point: suspends exactly once, giving other tasks a turn.

    A coroutine driven by hand (``send(None)``) stops here too, and can be
    snapshotted.
    """
    return Checkpoint()


class Sleep:
    """The awaitable of [`sleep`][contsnap.sleep]; its deadline is wall-clock time."""

    __slots__ = ("deadline", "seconds")

    def __init__(self, seconds: float, deadline: float | None = None) -> None:
        self.seconds = seconds
        self.deadline = deadline

    def __await__(self) -> Generator[Any, Any, None]:
        # a generator function (as every safe point's): a snapshot finds the Sleep as the
        # ``self`` of the frame the awaiting coroutine delegates to
        if self.deadline is None:
            self.deadline = time.time() + max(0.0, self.seconds)
        loop = asyncio.get_running_loop()
        suspended = False
        while True:
            yield from _safe_point().__await__()
            remaining = self.deadline - time.time()
            if remaining <= 0:
                if not suspended:
                    # like asyncio.sleep(0): always one suspension; a pause asked
                    # meanwhile parks it here
                    yield from asyncio.sleep(0).__await__()
                    yield from _safe_point().__await__()
                return
            wake: asyncio.Future[None] = loop.create_future()
            timer = loop.call_later(remaining, _resolve, wake)
            try:
                with _waiting(wake):
                    yield from wake.__await__()
            finally:
                timer.cancel()
            suspended = True

    def __reduce__(self) -> tuple[Any, ...]:
        return (Sleep, (self.seconds, self.deadline))

    def __contsnap_resume__(self) -> Sleep:
        return Sleep(self.seconds, self.deadline)

    def __repr__(self) -> str:
        return f"contsnap.sleep({self.seconds!r})"


def _resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


def sleep(seconds: float) -> Sleep:
    """A safe point that waits ``seconds``; a snapshot keeps the remaining time."""
    return Sleep(float(seconds))


class Queue:
    """A FIFO queue for coroutines whose contents are saved with a snapshot.

    ``await queue.get()`` is a safe point: a task paused there leaves the item
    it would have taken in the queue, so nothing is lost or delivered twice.
    """

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self._items: collections.deque[Any] = collections.deque(items)
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()

    def __reduce__(self) -> tuple[Any, ...]:
        return (Queue, (list(self._items),))

    def __len__(self) -> int:
        return len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                break

    async def put(self, item: Any) -> None:
        """Put an item (the queue is unbounded, so this never waits)."""
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def get(self) -> QueueGet:
        """A safe point that waits for an item and takes it."""
        return QueueGet(self)

    def __repr__(self) -> str:
        return f"contsnap.Queue({list(self._items)!r})"


class QueueGet:
    """The awaitable of [`Queue.get`][contsnap.Queue.get]."""

    __slots__ = ("queue",)

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def __await__(self) -> Generator[Any, Any, Any]:
        # a generator function, as Sleep's
        queue = self.queue
        loop = asyncio.get_running_loop()
        while True:
            yield from _safe_point().__await__()
            if queue._items:
                return queue._items.popleft()
            getter: asyncio.Future[None] = loop.create_future()
            queue._getters.append(getter)
            try:
                with _waiting(getter):
                    yield from getter.__await__()
            finally:
                if getter in queue._getters:
                    queue._getters.remove(getter)

    def __reduce__(self) -> tuple[Any, ...]:
        return (QueueGet, (self.queue,))

    def __contsnap_resume__(self) -> QueueGet:
        return QueueGet(self.queue)

    def __repr__(self) -> str:
        return f"{self.queue!r}.get()"


#: Code of the helpers above: a detach passes through them untouched.
TRANSPARENT_CODES = frozenset(
    {
        _park.__code__,
        _safe_point.__code__,
        Checkpoint.__await__.__code__,
        Sleep.__await__.__code__,
        QueueGet.__await__.__code__,
    }
)


async def pause(task: asyncio.Task[Any], *, timeout: float | None = None) -> bytes:
    """Stop ``task`` at its next safe point and return its snapshot (the task stays parked).

    Nothing else is cancelled; call [`unpause`][contsnap.unpause] to let the task go on, or
    [`contsnap.detach`][contsnap.detach] it when its continuation moves elsewhere. If the
    task does not reach a safe point within ``timeout`` seconds (it awaits a
    socket, a foreign future...), the request is withdrawn and
    ``NotCheckpointableError`` names what it awaits and where. A snapshot that
    is refused withdraws the request too: the task goes on.

    The context variables the task has set (``var.set()`` inside it) are saved
    with it, and set again in the task that runs the restored coroutine; each
    must be a global of an importable module (saved by module and name).
    """
    if not isinstance(task, asyncio.Task):
        what = "a coroutine" if asyncio.iscoroutine(task) else f"{type(task).__qualname__}"
        raise TypeError(
            f"contsnap.pause() takes the asyncio.Task that runs a checkpointable coroutine, "
            f"not {what} ({task!r}): start it with task = asyncio.create_task(coro), then "
            "await contsnap.pause(task)"
        )
    from ._snapshot import TASK_CONTEXT, context_var_address, waiting_point

    await park({task.get_name(): task}, timeout=timeout)
    request = _PAUSES.get(task)
    if request is None or request.release.done() or task.done():
        # parked, then let go before this ran on: a task.cancel() (its own, a timeout's)
        # throws CancelledError in at the safe point, and the task goes on from there
        _PAUSES.pop(task, None)
        why = "cancelled" if task.cancelled() or _cancelled(request) else "let go"
        raise CheckpointError(
            f"cannot pause {task.get_name()}: it was {why} at its safe point before the "
            "snapshot was taken, and went on from there; there is no paused state to save"
        )
    parked = request.context if request is not None else None
    coro = task.get_coro()
    context = _set_in_task(parked) if parked is not None else []
    for var, _value in context:
        if context_var_address(var) is None:
            unpause(task)
            raise NotCheckpointableError(
                f"cannot pause {task.get_name()} ({waiting_point(coro)}): it has set the "
                f"context variable {var.name!r} ({var!r}), which is not a global of an "
                "imported module, so a restore could not find it; define it at module level "
                "(name = contextvars.ContextVar(...)), or reset it before the pause"
            )
    token = TASK_CONTEXT.set((coro, context))
    try:
        return _codec.encode(coro, kind="snapshot")
    except BaseException:
        unpause(task)  # a refused snapshot withdraws the request, as a late task's does
        raise
    finally:
        TASK_CONTEXT.reset(token)


def _set_in_task(parked: contextvars.Context) -> list[tuple[contextvars.ContextVar[Any], Any]]:
    """The context variables the task set itself: those it does not share with the caller."""
    here = contextvars.copy_context()
    return [
        (var, value)
        for var, value in parked.items()
        if not (var in here and here[var] is value)
        and not getattr(var, "name", "").startswith("contsnap_")
    ]


async def park(
    tasks: dict[str, asyncio.Task[Any]],
    *,
    timeout: float | None = None,
    allow_finished: bool = False,
    in_place: bool = False,
    on_wait: Callable[[], object] | None = None,
) -> None:
    """Stop every task at its next safe point (they stay parked until
    [`unpause`][contsnap.unpause]).

    With ``in_place``, a task that waits inside a safe point (an empty queue's
    ``get()``, a ``sleep()``) counts as parked where it is, without a turn of
    the loop: if its wait ends during the pause it parks on waking. Only for a
    pause that ends with ``unpause`` (a task parked in place cannot be detached,
    and its context variables are not read).

    ``on_wait`` is called before park() lets the loop run the tasks still on their way
    (not at all when every task is parked already).

    ``tasks`` maps a name (used in errors) to each task. If some do not
    arrive within ``timeout``, every request is withdrawn and
    ``NotCheckpointableError`` names each late task and where it waits; a task
    that finishes first is a ``CheckpointError`` (or, with ``allow_finished``,
    simply not parked).
    """
    from ._snapshot import info_of, waiting_point

    requests: dict[str, _Pause] = {}
    if allow_finished:
        tasks = {name: task for name, task in tasks.items() if not task.done()}
    for name, task in tasks.items():
        if task.done():
            raise CheckpointError(f"cannot pause {name}: the task has finished")
        coro = task.get_coro()
        if info_of(coro) is None:
            what = getattr(coro, "__qualname__", coro)
            raise NotCheckpointableError(
                f"cannot pause {name}: its coroutine {what!r} is not checkpointable; "
                "mark it with @contsnap.checkpointable"
            )
    loop = asyncio.get_running_loop()
    # one request for every task parked in place: nothing to wait for, one future to release
    in_place_request: _Pause | None = None
    for name, task in tasks.items():
        request = _PAUSES.get(task)
        waiting = _WAITING.get(task)
        idle = waiting is not None and not waiting.done()
        if in_place and idle and (request is None or request.release.done()):
            if in_place_request is None:
                in_place_request = _Pause(loop)
                in_place_request.parked.set_result(None)
            _PAUSES[task] = requests[name] = in_place_request
            continue
        if request is None or request.release.done():
            request = _PAUSES[task] = _Pause(loop)
        requests[name] = request
        if waiting is None or waiting.done():
            continue
        if in_place:
            _resolve(request.parked)
        else:
            waiting.set_result(None)  # a safe point that waits: let it see the request
    # the tasks still on their way to a safe point (the woken ones have not run yet)
    on_the_way = {name: r for name, r in requests.items() if not r.parked.done()}
    # where each waits now: if it ends without reaching a safe point, that is why
    asked_at = {name: _waits_at(tasks[name], waiting_point) for name in on_the_way}
    # one wake-up when every task is parked (or one ended), not one per task
    settled: asyncio.Future[None] = loop.create_future()
    waiting_for = len(on_the_way)

    def arrived(_: object) -> None:
        nonlocal waiting_for
        waiting_for -= 1
        if waiting_for <= 0 and not settled.done():
            settled.set_result(None)

    def ended_early(task: asyncio.Task[Any]) -> None:
        if allow_finished:
            if not any(r.parked.done() for n, r in on_the_way.items() if tasks[n] is task):
                arrived(task)
        elif not settled.done():
            settled.set_result(None)

    if not on_the_way:  # every task parked in place (or none asked): no turn of the loop
        return
    for name, request in on_the_way.items():
        request.parked.add_done_callback(arrived)
        tasks[name].add_done_callback(ended_early)
    if on_wait is not None:
        on_wait()
    try:
        await asyncio.wait({settled}, timeout=timeout)
    finally:
        for name, request in on_the_way.items():
            request.parked.remove_done_callback(arrived)
            tasks[name].remove_done_callback(ended_early)
    late = [n for n, r in requests.items() if not r.parked.done()]
    ended = [n for n in late if tasks[n].done()]
    if allow_finished:
        late = [n for n in late if n not in ended]
        ended = []
    if ended:
        late = ended
    if not late:
        return
    for name, task in tasks.items():
        _PAUSES.pop(task, None)
        _resolve(requests[name].release)
    if ended:
        why = "; ".join(f"{n}: {asked_at[n]}" for n in ended[:5] if asked_at.get(n))
        raise CheckpointError(
            f"cannot pause {', '.join(ended)}: the task finished without reaching a safe point"
            + (
                "; when pause() was asked it waited where no snapshot can be taken, and ran "
                f"to its end from there ({why})"
                if why
                else ""
            )
        )
    where = "; ".join(f"{n}: {waiting_point(tasks[n].get_coro())}" for n in late[:5])
    if len(late) > 5:
        where += f"; and {len(late) - 5} more"
    raise NotCheckpointableError(
        f"{len(late)} task{'s' * (len(late) > 1)} did not reach a safe point within {timeout} s "
        f"({where}); await contsnap.checkpoint(), contsnap.sleep() or a contsnap.Queue "
        "instead, or a marked coroutine that does"
    )


def _waits_at(task: asyncio.Task[Any], waiting_point: Any) -> str:
    """Where a task's coroutine waits, for the error if it ends before parking."""
    coro = task.get_coro()
    if getattr(coro, "cr_frame", None) is None:
        return ""
    if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:  # type: ignore[arg-type]
        return "it had not started yet"
    try:
        return str(waiting_point(coro))
    except Exception:  # only an error message is at stake
        return ""


def _cancelled(request: _Pause | None) -> bool:
    """Whether the parked task was cancelled: cancel() cancels the future it waits on."""
    return request is not None and request.release.cancelled()


def unpause(task: asyncio.Task[Any]) -> None:
    """Let a task parked by [`pause`][contsnap.pause] go on."""
    request = _PAUSES.pop(task, None)
    if request is not None:
        _resolve(request.release)


def detach_task(task: asyncio.Task[Any]) -> None:
    """End a parked task without running its ``finally`` blocks or ``__aexit__``."""
    from ._runtime import Detach

    request = _PAUSES.pop(task, None)
    if request is None or not request.parked.done():
        raise CheckpointError(
            f"cannot detach {task.get_name()}: only a task parked by contsnap.pause() can be"
        )
    if _cancelled(request) or task.done():
        raise CheckpointError(
            f"cannot detach {task.get_name()}: it was cancelled while paused, so it went on "
            "from its safe point with the CancelledError (its except and finally clauses ran); "
            "the snapshot pause() returned is a copy of where it stopped, not a move"
        )
    from ._snapshot import capture, delegation_chain, detach, info_of, owned_generators

    chain = delegation_chain(task.get_coro())
    held: list[Any] = []
    for member in chain:
        if info_of(member) is not None:
            # one the chain runs through (an async generator paused inside its step)
            # ends with the task's own Detach
            owned = owned_generators(capture(member))
            held.extend(g for g in owned if not any(g is m for m in chain))
    for generator in held:  # they move with the snapshot too (an async for's generator)
        detach(generator)
    task.add_done_callback(_forget_detach)
    if not request.release.done():
        request.release.set_exception(Detach())


def _forget_detach(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: the Detach is the expected end of a moved task
