"""Checkpointable coroutines and async generators under asyncio."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import textwrap
import time
import types
import weakref
from pathlib import Path
from typing import Any

import pytest

import contsnap

LOG: list[object] = []


@pytest.fixture(autouse=True)
def _clean_log() -> None:
    LOG.clear()


class Resource:
    def __init__(self, name: str) -> None:
        self.name = name

    @contsnap.checkpointable
    async def __aenter__(self):
        LOG.append(("aenter", self.name))
        await contsnap.checkpoint()
        return self.name

    @contsnap.checkpointable
    async def __aexit__(self, kind, value, tb):
        LOG.append(("aexit", self.name, getattr(kind, "__name__", None)))
        return kind is KeyError


@contsnap.checkpointable
async def leaf(n):
    total = 0
    for i in range(n):
        await contsnap.checkpoint()
        total += i
        LOG.append(("leaf", i))
    return total


@contsnap.checkpointable
async def middle(n):
    try:
        first = await leaf(n)
        both = first + (await leaf(2)) * 10
        if both > 100:
            raise ValueError(both)
        return both
    except ValueError as exc:
        await contsnap.checkpoint()
        LOG.append(("caught", exc.args))
        return -1
    finally:
        LOG.append("middle-finally")


@contsnap.checkpointable
async def top(n):
    async with Resource("r") as name:
        result = await middle(n)
        LOG.append((name, result))
    try:
        async with Resource("s"):
            await contsnap.checkpoint()
            raise KeyError("swallowed")
    finally:
        LOG.append("top-finally")
    return result


@contsnap.checkpointable
async def numbers(n):
    try:
        for i in range(n):
            await contsnap.checkpoint()
            received = yield i * 10
            if received is not None:
                LOG.append(("received", received))
    finally:
        LOG.append("numbers-finally")


@contsnap.checkpointable
async def consume(n):
    seen = []
    async for value in numbers(n):
        seen.append(value)
        await contsnap.checkpoint()
    else:
        LOG.append("for-else")
    return seen


def drive(coro: Any, *, roundtrip: bool) -> Any:
    """Run a coroutine by hand; with ``roundtrip`` move it through bytes at every suspension."""
    while True:
        if roundtrip and inspect.getcoroutinestate(coro) == inspect.CORO_SUSPENDED:
            moved = contsnap.loads(contsnap.dumps(coro))
            contsnap.detach(coro)
            coro = moved
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value


@pytest.mark.parametrize(
    ("function", "args"),
    [(top, (3,)), (top, (20,)), (consume, (3,))],
    ids=["with-and-except", "raises", "async-for"],
)
def test_round_trip_at_every_suspension_matches_native(function: Any, args: tuple[Any]) -> None:
    native_result = drive(function.__wrapped__(*args), roundtrip=False)
    native_log = list(LOG)
    for roundtrip in (False, True):
        LOG.clear()
        assert drive(function(*args), roundtrip=roundtrip) == native_result
        assert native_log == LOG


def test_coroutines_stay_native() -> None:
    coro = top(1)
    assert inspect.iscoroutine(coro)
    assert coro.__qualname__ == "top"
    gen = numbers(1)
    assert inspect.isasyncgen(gen)
    restored = contsnap.loads(contsnap.dumps(coro))
    assert inspect.iscoroutine(restored)
    coro.close()
    assert asyncio.run(restored) == 10


def test_restored_coroutine_is_driven_by_asyncio_run() -> None:
    coro = top(3)
    for _ in range(4):
        coro.send(None)
    blob = contsnap.dumps(coro)
    contsnap.detach(coro)
    assert LOG == [("aenter", "r"), ("leaf", 0), ("leaf", 1)]
    assert asyncio.run(contsnap.loads(blob)) == 13
    assert LOG[-4:] == [
        ("aexit", "r", None),
        ("aenter", "s"),
        ("aexit", "s", "KeyError"),
        "top-finally",
    ]


def test_detached_coroutine_runs_no_finally_and_no_aexit() -> None:
    coro = top(3)
    for _ in range(4):
        coro.send(None)
    LOG.clear()
    contsnap.detach(coro)
    assert LOG == []
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


def test_async_generator_asend_athrow_aclose_on_restored_copies() -> None:
    async def scenario() -> list[object]:
        gen = numbers(5)
        out: list[object] = [await gen.__anext__(), await gen.asend("a")]
        copy_one = contsnap.loads(contsnap.dumps(gen))
        copy_two = contsnap.fork(gen)
        out.append(await copy_one.asend("b"))
        with pytest.raises(KeyError):
            await copy_two.athrow(KeyError("k"))
        await gen.aclose()
        out.append([v async for v in copy_one])
        return out

    assert asyncio.run(scenario()) == [0, 10, 20, [30, 40]]
    assert LOG == [
        ("received", "a"),
        ("received", "b"),
        "numbers-finally",  # copy_two, by the KeyError
        "numbers-finally",  # gen, by aclose
        "numbers-finally",  # copy_one, exhausted
    ]


def test_pause_a_running_task_and_resume_the_snapshot_elsewhere(tmp_path: Path) -> None:
    async def scenario() -> tuple[bytes, list[int]]:
        task = asyncio.ensure_future(consume(6))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        blob = await contsnap.pause(task)
        assert not task.done()
        contsnap.unpause(task)
        return blob, await task

    blob, result = asyncio.run(scenario())
    assert result == [0, 10, 20, 30, 40, 50]
    path = tmp_path / "task.ckpt"
    path.write_bytes(blob)
    program = textwrap.dedent(
        f"""
        import asyncio, sys, contsnap
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        print(asyncio.run(contsnap.loads(open({str(path)!r}, "rb").read())))
        """
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(result)


@contsnap.checkpointable
async def sleeper(seconds):
    started = time.time()
    await contsnap.sleep(seconds)
    return time.time() - started


def test_sleep_keeps_its_wall_clock_deadline() -> None:
    async def scenario() -> tuple[float, float]:
        task = asyncio.ensure_future(sleeper(0.4))
        await asyncio.sleep(0.1)
        blob = await contsnap.pause(task)
        contsnap.detach(task)
        began = time.time()
        await contsnap.loads(blob)
        return time.time() - began, blob.__len__()

    waited, _ = asyncio.run(scenario())
    assert 0.1 < waited < 0.39  # what was left of 0.4 s, not a fresh 0.4 s


@contsnap.checkpointable
async def worker(inbox, outbox):
    while True:
        message = await inbox.get()
        if message is None:
            return "stopped"
        await contsnap.checkpoint()
        outbox.put_nowait(message * 2)


def test_queue_contents_are_part_of_the_snapshot_and_nothing_is_lost() -> None:
    async def scenario() -> bytes:
        inbox, outbox = contsnap.Queue(), contsnap.Queue()
        coro = worker(inbox, outbox)
        task = asyncio.ensure_future(coro)
        for i in range(3):
            inbox.put_nowait(i)
        await contsnap.pause(task)  # parked at a safe point: nothing half-delivered
        blob = contsnap.dumps((coro, inbox, outbox))
        contsnap.detach(task)
        inbox.put_nowait(99)  # sent to the old inbox after the snapshot: not part of it
        return blob

    blob = asyncio.run(scenario())
    coro, inbox, outbox = contsnap.loads(blob)
    done_before = list(outbox._items)
    inbox.put_nowait(None)
    assert asyncio.run(coro) == "stopped"
    assert (
        done_before + list(outbox._items)
        == [0, 2, 4][: len(done_before)] + [0, 2, 4][len(done_before) :]
    )


def test_pause_times_out_on_a_foreign_await_and_names_it() -> None:
    @contsnap.checkpointable
    async def stuck(event):
        await event.wait()

    async def scenario() -> None:
        event = asyncio.Event()
        task = asyncio.ensure_future(stuck(event))
        await asyncio.sleep(0)
        with pytest.raises(contsnap.NotCheckpointableError) as info:
            await contsnap.pause(task, timeout=0.05)
        assert "did not reach a safe point within 0.05 s" in str(info.value)
        assert "stuck" in str(info.value) and __file__ in str(info.value)
        event.set()
        await task  # the withdrawn request left it running

    asyncio.run(scenario())


def test_pause_of_a_coroutine_says_to_pass_its_task() -> None:
    @contsnap.checkpointable
    async def work():
        await contsnap.checkpoint()

    async def scenario() -> None:
        coro = work()
        try:
            with pytest.raises(TypeError, match=r"not a coroutine .*asyncio.create_task\(coro\)"):
                await contsnap.pause(coro)  # type: ignore[arg-type]
        finally:
            coro.close()

    asyncio.run(scenario())


def test_checkpoint_suspends_exactly_once() -> None:
    @contsnap.checkpointable
    async def twice():
        await contsnap.checkpoint()
        await contsnap.checkpoint()
        return "done"

    coro = twice()
    assert coro.send(None) is None
    assert coro.send(None) is None
    with pytest.raises(StopIteration) as stop:
        coro.send(None)
    assert stop.value.value == "done"


def test_unsafe_await_is_refused_with_the_awaited_object() -> None:
    @contsnap.checkpointable
    async def waits_on_future(fut):
        return await fut

    async def scenario() -> None:
        fut = asyncio.get_running_loop().create_future()
        coro = waits_on_future(fut)
        task = asyncio.ensure_future(coro)
        await asyncio.sleep(0)
        with pytest.raises(
            contsnap.NotCheckpointableError, match="which is not a safe point"
        ) as info:
            contsnap.dumps(coro)
        # the future itself is named, not the FutureIter that its __await__ returned
        assert "it awaits <Future pending" in str(info.value)
        assert "FutureIter" not in str(info.value)
        fut.set_result(1)
        assert await task == 1

    asyncio.run(scenario())


@contsnap.checkpointable
async def doubled(x):
    await contsnap.checkpoint()
    return x * 2


@contsnap.checkpointable
async def comprehensions(xs):
    x = "outer"
    evens = [await doubled(x) for x in xs if x % 2]
    table = {x: await doubled(x) for x in xs}
    streamed = [value async for value in numbers(3)]
    distinct = {v async for v in numbers(4) if v}
    return evens, table, streamed, distinct, x


def test_async_comprehensions_are_captured_at_every_await() -> None:
    expected = drive(comprehensions.__wrapped__([1, 2, 3]), roundtrip=False)
    assert expected[-1] == "outer"  # the comprehension's variable did not leak
    assert drive(comprehensions([1, 2, 3]), roundtrip=True) == expected


@contsnap.checkpointable
async def set_of(xs):
    set = frozenset  # asyncstdlib's module defines `async def set`
    distinct = {v async for v in numbers(xs) if v}
    return distinct, set


def test_an_awaiting_set_comprehension_does_not_look_up_the_name_set() -> None:
    # its rewritten loop starts from an empty set: once made by calling `set`,
    # whatever that name meant where the comprehension was written
    expected = ({10, 20}, frozenset)
    assert drive(set_of.__wrapped__(3), roundtrip=False) == expected
    assert drive(set_of(3), roundtrip=False) == expected
    assert drive(set_of(3), roundtrip=True) == expected


@types.coroutine
@contsnap.checkpointable
def bare_yield_then(value):
    sent = yield "waiting"
    return value, sent


@contsnap.checkpointable
async def awaits_a_generator_coroutine():
    first = await bare_yield_then(1)
    return first, await bare_yield_then(2)


def test_a_types_coroutine_generator_is_still_known_and_restored_awaitable() -> None:
    # types.coroutine replaces the function's code by a copy with another flag
    coro = awaits_a_generator_coroutine()
    assert coro.send(None) == "waiting"
    restored = contsnap.loads(contsnap.dumps(coro))
    contsnap.detach(coro)
    assert restored.send(None) == "waiting"  # the first await finished with None
    with pytest.raises(StopIteration) as done:
        restored.send("x")
    assert done.value.value == ((1, None), (2, "x"))


@contsnap.checkpointable
async def two_checkpoints():
    x = 1
    await contsnap.checkpoint()
    x = 2
    await contsnap.checkpoint()
    return x


def test_a_restored_coroutine_saved_again_before_its_first_step_stays_where_it_was() -> None:
    coro = two_checkpoints()
    coro.send(None)
    restored = contsnap.loads(contsnap.dumps(coro))
    contsnap.detach(coro)
    again = contsnap.loads(contsnap.dumps(restored))  # not stepped in between
    restored.close()  # it goes on as `again`; never started, it runs no code here
    first_checkpoint = two_checkpoints.__code__.co_firstlineno + 3
    assert contsnap.describe(contsnap.dumps(again))["frames"][0]["line"] == first_checkpoint
    copied = contsnap.fork(again)
    for run in (again, copied):
        assert run.send(None) is None  # the second checkpoint, not the first again
        with pytest.raises(StopIteration) as done:
            run.send(None)
        assert done.value.value == 2


# --- errors worded as Python words them (found by CPython's test_coroutines) -------------


class NotAwaitedManager:
    """``__aenter__``/``__aexit__`` return plain values, not awaitables."""

    def __init__(self, enter: Any, exit_: Any) -> None:
        self.enter, self.exit = enter, exit_

    def __aenter__(self):
        return self.enter

    def __aexit__(self, *exc_info):
        return self.exit


class BadAnext:
    """An async iterator whose ``__anext__`` result cannot be awaited."""

    def __init__(self, step: Any) -> None:
        self.step = step

    def __aiter__(self):
        return self

    def __anext__(self):
        return self.step


class RaisingAwait:
    def __await__(self):
        raise ZeroDivisionError


@types.coroutine
def yielding_step():
    yield "tick"
    return 7


class GeneratorAnext:
    """``__anext__`` returns a ``@types.coroutine`` generator: Python awaits it."""

    def __init__(self) -> None:
        self.left = 2

    def __aiter__(self):
        return self

    def __anext__(self):
        if not self.left:
            raise StopAsyncIteration
        self.left -= 1
        return yielding_step()


@contsnap.checkpointable
async def enter_manager(manager):
    async with manager:
        LOG.append("body")
        raise ZeroDivisionError


@contsnap.checkpointable
async def iterate(iterable):
    seen = []
    async for item in iterable:
        seen.append(item)
    return seen


async def coroutine_value():
    return "spam"


@contsnap.checkpointable
def delegate_to(awaitable):
    return (yield from awaitable)


def outcome(coro: Any) -> tuple[Any, ...]:
    """What stepping ``coro`` to its end shows: the values sent out, the result or error."""
    sent = []
    try:
        while True:
            sent.append(coro.send(None))
    except StopIteration as stop:
        return ("returned", sent, stop.value)
    except Exception as exc:
        cause, context = exc.__cause__, exc.__context__
        return (
            "raised",
            sent,
            type(exc),
            str(exc),
            type(cause) if cause else None,
            type(context) if context else None,
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda f: f(NotAwaitedManager(123, None)),
        lambda f: f(NotAwaitedManager(asyncio.sleep(0), 456)),
    ],
    ids=["aenter", "aexit"],
)
def test_async_with_refuses_a_non_awaitable_as_python_does(make: Any) -> None:
    native = outcome(make(enter_manager.__wrapped__))
    native_log = list(LOG)
    LOG.clear()
    assert outcome(make(enter_manager)) == native
    assert LOG == native_log
    assert "'async with' received an object from __a" in native[3]


@pytest.mark.parametrize(
    "make",
    [lambda: BadAnext(()), lambda: BadAnext(RaisingAwait()), GeneratorAnext],
    ids=["tuple", "await-raises", "generator-coroutine"],
)
def test_async_for_awaits_what_anext_returns_as_python_does(make: Any) -> None:
    assert outcome(iterate(make())) == outcome(iterate.__wrapped__(make()))


def test_yield_from_a_coroutine_only_in_a_generator_coroutine() -> None:
    native_gen = delegate_to.__wrapped__
    coro = coroutine_value()
    refused = outcome(native_gen(coro))
    assert refused[2:4] == (
        TypeError,
        "cannot 'yield from' a coroutine object in a non-coroutine generator",
    )
    assert outcome(delegate_to(coro)) == refused
    allowed = types.coroutine(contsnap.checkpointable(native_gen))
    assert outcome(allowed(coro)) == ("returned", [], "spam")


async def stream_with_cleanup():
    try:
        await contsnap.checkpoint()
        yield 1
    finally:
        LOG.append("stream-finally")


async def loops_over_stream():
    async for _ in stream_with_cleanup():
        pass


def test_an_async_for_left_by_an_exception_drops_its_iterator_at_once() -> None:
    # the frame stays alive in the traceback; the helper awaiting __anext__ held
    # the async generator, so its finally ran later than natively
    seen = []
    for function in (loops_over_stream, contsnap.checkpointable(loops_over_stream)):
        LOG.clear()
        coro = function()
        coro.send(None)
        try:
            coro.throw(GeneratorExit())
        except GeneratorExit:
            seen.append(list(LOG))  # while the traceback is alive
    assert seen == [["stream-finally"]] * 2


class CountingAsyncIter:
    """A class-based async iterator whose ``__anext__`` is a checkpointable coroutine."""

    def __init__(self, limit: int) -> None:
        self.i = 0
        self.limit = limit

    def __aiter__(self):
        return self

    @contsnap.checkpointable
    async def __anext__(self):
        self.i += 1
        if not self.i % 3:
            await contsnap.checkpoint()  # a step in flight when the loop is saved
        if self.i > self.limit:
            raise StopAsyncIteration
        return self.i


@contsnap.checkpointable
async def sums_a_class_iterator(limit):
    seen = []
    async for value in CountingAsyncIter(limit):
        seen.append(value)
    return seen


def test_an_async_for_step_in_a_coroutine_anext_resumes_that_step() -> None:
    # re-asking the iterator would run __anext__ again and skip a value
    assert drive(sums_a_class_iterator(10), roundtrip=True) == list(range(1, 11))


@contsnap.checkpointable
async def awaited_inside() -> str:
    await contsnap.checkpoint()
    return "inner done"


@contsnap.checkpointable
async def awaits_inside() -> str:
    return await awaited_inside()


@pytest.mark.parametrize("end", ["close", "run"])
def test_a_restored_coroutine_ended_before_its_first_step_leaves_no_warning(end: str) -> None:
    # the restored awaited coroutine was awaited before the snapshot: when the restored
    # outer one never takes a step, Python must not report it as "never awaited"
    import gc
    import warnings

    coro = awaits_inside()
    coro.send(None)  # paused at the checkpoint, inside awaited_inside()
    data = contsnap.dumps(coro)
    coro.close()
    gc.collect()  # earlier tests' garbage is not this test's business
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored = contsnap.loads(data)
        if end == "close":
            restored.close()
        else:
            assert asyncio.run(restored) == "inner done"
        del restored
        gc.collect()
    assert [str(w.message) for w in caught] == []


class Tracked:
    """An awaitable whose end is observable: a weak reference to it dies."""

    refs: list[weakref.ref[Tracked]] = []

    def __await__(self):
        Tracked.refs.append(weakref.ref(self))
        yield
        return "tracked"


def test_a_finished_await_lets_go_of_its_awaitable_as_natively() -> None:
    # the transform used to keep the awaitable in a local, after the await too
    async def awaits_inline(values):
        value = (await Tracked()).upper()
        values.append(value)
        await contsnap.checkpoint()

    seen = []
    for function in (awaits_inline, contsnap.checkpointable(awaits_inline)):
        Tracked.refs.clear()
        values: list[str] = []
        coro = function(values)
        coro.send(None)  # inside Tracked.__await__
        coro.send(None)  # the await is over; paused at the checkpoint
        seen.append((values, [ref() is None for ref in Tracked.refs]))
        coro.close()
    assert seen == [(["TRACKED"], [True])] * 2


class AwaitsThroughAGenerator:
    """An awaitable whose ``__await__`` hands over a checkpointable generator."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __await__(self):
        return counts_down(self.n)


@contsnap.checkpointable
def counts_down(n):
    while n:
        LOG.append(("down", n))
        yield  # to the event loop, as a bare await would
        n -= 1
    return "landed"


@contsnap.checkpointable
async def awaits_a_generator_through_await():
    first = await AwaitsThroughAGenerator(2)
    await contsnap.checkpoint()
    return first, await AwaitsThroughAGenerator(1)


def test_an_await_whose_iterator_is_a_checkpointable_generator_is_saved_at_every_step() -> None:
    native = drive(awaits_a_generator_through_await.__wrapped__(), roundtrip=False)
    native_log = list(LOG)
    LOG.clear()
    assert drive(awaits_a_generator_through_await(), roundtrip=True) == native
    assert LOG == native_log == [("down", 2), ("down", 1), ("down", 1)]


@contsnap.checkpointable
async def sleeps_and_takes(queue):
    await contsnap.sleep(0.001)
    first = await queue.get()
    second = await queue.get()
    return first, second


def test_safe_points_are_found_in_the_frame_and_saved_again_after_a_restore() -> None:
    # the snapshot reads each safe point from the frame; a restored coroutine paused
    # again in its resumed await (a new get() of the restored queue) is saved again
    async def moved(data: bytes) -> tuple[Any, Any]:
        coro = contsnap.loads(data)
        task = asyncio.ensure_future(coro)
        await asyncio.sleep(0.01)  # past the restored sleep, waiting on the empty queue
        return task, coro.cr_frame.f_locals["queue"]

    async def scenario() -> Any:
        queue = contsnap.Queue()
        task = asyncio.ensure_future(sleeps_and_takes(queue))
        await asyncio.sleep(0)  # in the sleep
        data = await contsnap.pause(task)
        contsnap.detach(task.get_coro())
        task, queue = await moved(data)
        queue.put_nowait("a")  # taken by the get() it waits in
        await asyncio.sleep(0)
        data = await contsnap.pause(task)  # in the second get()
        contsnap.detach(task.get_coro())
        task, queue = await moved(data)
        data = await contsnap.pause(task)  # in the resumed second get()
        contsnap.detach(task.get_coro())
        task, queue = await moved(data)
        queue.put_nowait("b")
        return await task

    assert asyncio.run(scenario()) == ("a", "b")
