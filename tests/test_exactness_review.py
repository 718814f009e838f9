"""Differences from native Python found by the exactness review (hand-written tricky
programs and the conformance runs): each test shows one that once was.

The differential tests run the function natively, transformed, moved to a restored
copy at every suspension, and forked, with both harness backends (contsnap's own,
and plain pickle + deepcopy).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from copy_ways import BACKENDS, WAYS

import contsnap
from contsnap.testing import (
    LOG,
    Send,
    Throw,
    check_coroutine_equivalence,
    check_generator_equivalence,
)

# ---------------------------------------------------------------- yield from


class OnlyNext:
    """An iterator with no send, throw or close."""

    def __init__(self) -> None:
        self.n = 0

    def __iter__(self) -> OnlyNext:
        return self

    def __next__(self) -> int:
        self.n += 1
        if self.n > 3:
            raise StopIteration
        return self.n


def delegates_to_plain_iterators(log):
    try:
        got = yield from [10, 20, 30]
        log.append(("list returned", got))
    except StopIteration as exc:
        log.append(("caught StopIteration", exc.args))
    except ValueError as exc:
        log.append(("caught ValueError", exc.args))
    got = yield from OnlyNext()
    yield got
    return (yield from iter([7, 8]))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("at", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("thrown", [StopIteration, ValueError, GeneratorExit])
def test_an_exception_thrown_into_a_resumed_yield_from_an_iterator_is_raised_there(
    thrown: type[BaseException], at: int, backend: str
) -> None:
    # a thrown StopIteration was taken for the list iterator's return value
    marked = contsnap.checkpointable(delegates_to_plain_iterators)
    actions = [Send(None)] * at + [Throw(thrown, ("t",))]
    check_generator_equivalence(
        delegates_to_plain_iterators, marked, (LOG,), actions, backend=BACKENDS[backend]
    )


# ---------------------------------------------------------------- for and async for


class CountsIter:
    """An iterator whose ``__iter__`` logs (and returns itself)."""

    def __init__(self, log, n):
        self.log, self.n, self.i = log, n, 0

    def __iter__(self):
        self.log.append("__iter__")
        return self

    def __next__(self):
        self.i += 1
        if self.i > self.n:
            raise StopIteration
        return self.i


class NextOnly:
    def __init__(self, n):
        self.n = n

    def __next__(self):
        self.n -= 1
        if self.n < 0:
            raise StopIteration
        return self.n


class GivesNextOnly:
    """Python accepts an ``__iter__`` that returns an object with ``__next__`` only."""

    def __iter__(self):
        return NextOnly(2)


class Restarts:
    """An iterator whose own ``__iter__`` returns another one (not itself)."""

    def __init__(self, start=0):
        self.i = start

    def __iter__(self):
        return Restarts(100)

    def __next__(self):
        self.i += 1
        if self.i % 100 > 2:
            raise StopIteration
        return self.i


def loops_over_user_iterators(log):
    for x in CountsIter(log, 2):
        got = yield x
        log.append(got)
    for y in GivesNextOnly():
        yield y
    for z in iter(Restarts()):
        yield z
    yield [w for w in CountsIter(log, 2)]


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_for_loop_calls_iter_once_and_takes_an_iterator_without_iter(backend: str) -> None:
    # the transformed loop called __iter__ on the iterator again: twice in all, an
    # iterator whose __iter__ is not itself restarted, and one without failed
    marked = contsnap.checkpointable(loops_over_user_iterators)
    check_generator_equivalence(
        loops_over_user_iterators, marked, (LOG,), [1, 2, 3], backend=BACKENDS[backend]
    )


class CallerNames:
    """An iterator that notes which frame calls its ``__next__`` / ``__anext__`` (in a
    class attribute: a restored copy of the iterator writes to the same list)."""

    seen: list[str] = []

    def __init__(self, n=3):
        self.n = n

    def __iter__(self):
        return self

    def __next__(self):
        self.seen.append(sys._getframe(1).f_code.co_name)
        self.n -= 1
        if self.n < 0:
            raise StopIteration
        return self.n

    def __aiter__(self):
        return self

    async def __anext__(self):
        self.seen.append(sys._getframe(1).f_code.co_name)
        self.n -= 1
        if self.n < 0:
            raise StopAsyncIteration
        return self.n


def test_a_loop_calls_the_next_of_a_user_iterator_from_its_own_frame() -> None:
    # the loop over a user iterator is handed the iterator itself: its __next__ is
    # called by the generator's frame, as natively, with no wrapper frame per item
    @contsnap.checkpointable
    def loop():
        for x in CallerNames():
            yield x

    @contsnap.checkpointable
    async def aloop():
        async for x in CallerNames():
            yield x

    seen = CallerNames.seen
    seen.clear()
    gen = loop()
    assert next(gen) == 2
    restored = contsnap.loads(contsnap.dumps(gen))
    assert list(restored) == [1, 0]
    assert seen == ["loop"] * 4

    async def drain(agen):
        return [x async for x in agen]

    seen.clear()
    agen = aloop()
    step = agen.__anext__()
    with pytest.raises(StopIteration) as first:
        step.send(None)
    assert first.value.value == 2
    again = contsnap.loads(contsnap.dumps(agen))
    coro = drain(again)
    with pytest.raises(StopIteration) as rest:
        coro.send(None)
    assert rest.value.value == [1, 0]
    assert seen == ["aloop"] * 4


def holds_generator_expressions_over_user_iterators(log):
    counted = (x * 2 for x in CountsIter(log, 3))
    bare = (y + 1 for y in GivesNextOnly())
    yield next(counted)
    yield next(bare)
    yield list(counted), list(bare)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_restored_generator_expression_does_not_call_iter_again(backend: str) -> None:
    # remade over its saved iterator, the expression's own loop asked it for __iter__
    # again (and failed on one with __next__ only)
    function = holds_generator_expressions_over_user_iterators
    marked = contsnap.checkpointable(function)
    check_generator_equivalence(function, marked, (LOG,), [], backend=BACKENDS[backend])


class Echo:
    """A generator-like iterator class: yield from sends and throws to it."""

    def __init__(self, log):
        self.log, self.last = log, 0

    def __iter__(self):
        self.log.append("Echo.__iter__")
        return self

    def __next__(self):
        return self.send(None)

    def send(self, value):
        if self.last >= 3:
            raise StopIteration(("echo done", value))
        self.last += 1
        return ("echo", self.last, value)

    def throw(self, kind, value=None, tb=None):
        self.log.append(("Echo.throw", getattr(kind, "__name__", type(kind).__name__)))
        self.last = 10
        return "thrown in"


def delegates_to_user_iterators(log):
    yield from CountsIter(log, 2)
    got = yield from GivesNextOnly()
    yield got


def delegates_to_a_generator_like_class(log):
    got = yield from Echo(log)
    yield got


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("actions", [[1, 2, 3, 4], [None, Throw(KeyError, ("k",))]])
def test_yield_from_a_user_iterator_calls_iter_once(actions: list[object], backend: str) -> None:
    # the transformed yield from asked the iterator for __iter__ again (and failed on one
    # with __next__ only)
    function = delegates_to_user_iterators
    marked = contsnap.checkpointable(function)
    check_generator_equivalence(function, marked, (LOG,), actions, backend=BACKENDS[backend])


@pytest.mark.parametrize(
    "actions", [[1, 2, 3, 4], [None, 5, Throw(KeyError, ("k",)), 6], [None, Throw(GeneratorExit)]]
)
def test_yield_from_still_sends_and_throws_to_the_iterator(actions: list[object]) -> None:
    # (its own throw() runs its code: a snapshot of the delegating frame is refused)
    function = delegates_to_a_generator_like_class
    marked = contsnap.checkpointable(function)
    modes = ("native", "transformed")
    check_generator_equivalence(function, marked, (LOG,), actions, modes=modes)


class CountsAIter:
    def __init__(self, log, n):
        self.log, self.n, self.i = log, n, 0

    def __aiter__(self):
        self.log.append("__aiter__")
        return self

    async def __anext__(self):
        await contsnap.checkpoint()
        self.i += 1
        if self.i > self.n:
            raise StopAsyncIteration
        return self.i


async def async_loops_over_a_user_iterator(log):
    async for x in CountsAIter(log, 2):
        log.append(x)
        await contsnap.checkpoint()
    return [y async for y in CountsAIter(log, 2)]


def test_an_async_for_loop_calls_aiter_once() -> None:
    # test_coroutines' test_for_1 counts the calls
    marked = contsnap.checkpointable(async_loops_over_a_user_iterator)
    marked_next = contsnap.checkpointable(CountsAIter.__anext__)
    original = CountsAIter.__anext__
    check_coroutine_equivalence(
        async_loops_over_a_user_iterator, marked, (LOG,), modes=("native", "transformed")
    )
    CountsAIter.__anext__ = marked_next  # type: ignore[method-assign]
    try:
        check_coroutine_equivalence(
            async_loops_over_a_user_iterator, marked, (LOG,), modes=("native", "roundtrip", "fork")
        )
    finally:
        CountsAIter.__anext__ = original  # type: ignore[method-assign]


# ---------------------------------------------------------------- plain pickle of a chain


class Base:
    @contsnap.checkpointable
    def steps(self):
        yield "base 1"
        yield "base 2"


class Child(Base):
    @contsnap.checkpointable
    def steps(self):
        yield "child"
        yield from super().steps()  # its function has a __class__ cell
        yield __class__.__name__


@contsnap.checkpointable
def delegates_to_a_method_with_super():
    child = Child()
    yield "start"
    yield from child.steps()


@pytest.mark.parametrize("way", list(WAYS))
def test_a_delegate_whose_function_has_cells_is_copied_every_way(way: str) -> None:
    # plain pickle probed the delegating generator's own state only: the delegate's
    # __class__ cell then reached pickle ("cannot pickle 'cell' object")
    seen = []
    gen = delegates_to_a_method_with_super()
    value = next(gen)
    while True:
        copied = WAYS[way](gen)
        try:
            value = next(copied)
        except StopIteration:
            break
        seen.append(value)
        assert next(gen) == value
    assert seen == ["child", "base 1", "base 2", "Child"]


# ---------------------------------------------------------------- exception context


@contsnap.checkpointable
def pauses_in_a_handler():
    try:
        try:
            raise KeyError("inner")
        except KeyError:
            raise ValueError("outer")
    except ValueError as exc:
        yield repr(exc.__context__)
        yield repr(exc.__context__)
        raise


@pytest.mark.parametrize("way", list(WAYS))
def test_an_exception_being_handled_keeps_its_context_when_restored_in_an_except_clause(
    way: str,
) -> None:
    # the resumed handler re-raised the saved exception to re-enter it, which set its
    # __context__ to whatever the restoring code was handling
    gen = pauses_in_a_handler()
    assert next(gen) == "KeyError('inner')"
    try:
        raise TypeError("restoring while handling this")
    except TypeError:
        copied = WAYS[way](gen)
    assert next(copied) == "KeyError('inner')"
    with pytest.raises(ValueError) as raised:
        next(copied)
    assert repr(raised.value.__context__) == "KeyError('inner')"
    gen.close()


# ---------------------------------------------------------------- round-trip mode

EXEC_NAMESPACE_PROGRAM = '''
import linecache
import contsnap

SOURCE = """
import contsnap

@contsnap.checkpointable
def walk(n):
    if n:
        for x in walk(n - 1):
            yield x
        yield n
"""
linecache.cache["<walk>"] = (len(SOURCE), None, SOURCE.splitlines(True), "<walk>")
namespace = {"__name__": "walks"}  # not a module: its functions are saved by value
exec(compile(SOURCE, "<walk>", "exec"), namespace)
print(list(namespace["walk"](3)), namespace["walk"].__qualname__)
'''


def _run_in_roundtrip_mode(mode: str, program: str, folder: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTSNAP_")}
    env["CONTSNAP_ROUNDTRIP"] = mode
    script = folder / "program.py"
    script.write_text(program)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "no round trip was performed" not in out.stderr
    return out.stdout


@pytest.mark.parametrize("mode", ["1", "pickle"])
def test_a_recursive_generator_of_an_exec_namespace_is_moved_by_value(
    mode: str, tmp_path: Path
) -> None:
    # its globals name the round-trip wrapper, which was rebuilt before the function
    # it wraps was (test_generators' doctests, CONTSNAP_ROUNDTRIP=pickle)
    out = _run_in_roundtrip_mode(mode, EXEC_NAMESPACE_PROGRAM, tmp_path)
    assert out.split() == ["[1,", "2,", "3]", "walk"]


HOLDS_ITS_DRIVER_PROGRAM = """
import contsnap

finalized = []

@contsnap.checkpointable
def holds_itself():
    try:
        me = yield
        yield me is not None
        yield 2
    finally:
        finalized.append(True)

gen = holds_itself()
next(gen)
print(gen.send(gen), next(gen), finalized)
gen.close()
print(finalized)
"""


@pytest.mark.parametrize("mode", ["1", "pickle"])
def test_a_generator_that_holds_its_own_driver_is_moved(mode: str, tmp_path: Path) -> None:
    # copying mode passes the running driver by reference, then tried to detach it
    # with the old copy (test_generators' test_refcycle, test_yield_from's
    # test_close_with_cleared_frame)
    out = _run_in_roundtrip_mode(mode, HOLDS_ITS_DRIVER_PROGRAM, tmp_path)
    assert out.splitlines() == ["True 2 []", "[True]"]
