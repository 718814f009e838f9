"""Generator expressions held across a yield (issue 18): made through a factory the
snapshot names, so they resume exactly instead of being refused.

Each program runs natively, transformed, round-tripped at every suspension and
forked (contsnap's harness), through plain pickle + deepcopy, and in a fresh process.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from copy_ways import BACKENDS, WAYS

import contsnap
from contsnap.testing import LOG, check_generator_equivalence


def lazy_then_list(log, xs):
    k = 2
    lazy = (x * k for x in xs if x != 2)
    got = yield 0
    k = got or 10  # the expression reads k when it runs, as natively
    log.append(next(lazy))
    yield list(lazy)


def roundrobin(log, *iterables):
    # the itertools recipe: cycle() over a generator expression's islice
    iterators = map(iter, iterables)
    for num_active in range(len(iterables), 0, -1):
        iterators = itertools.cycle(itertools.islice(iterators, num_active))
        yield from map(next, iterators)


def roundrobin_with_a_genexp(log, *iterables):
    # the older recipe: cycle() over a generator expression of bound __next__ methods
    num_active = len(iterables)
    nexts = itertools.cycle(iter(it).__next__ for it in iterables)
    while num_active:
        try:
            for step in nexts:
                yield step()
        except StopIteration:
            num_active -= 1
            nexts = itertools.cycle(itertools.islice(nexts, num_active))


def nested_fors(log, n):
    pairs = ((a, b) for a in range(n) if a for b in range(a) if (a + b) % 2)
    total = 0
    for pair in pairs:
        total += sum(pair)
        log.append(pair)
        yield total
    inner = (y * 2 for y in (z + 1 for z in range(n)))
    yield next(inner)
    yield list(inner)


@contsnap.checkpointable
def consumer(source):
    for item in source:
        yield item + 100


def held_by_another_generator(log, n):
    feed = consumer(x * x for x in range(n))
    yield next(feed)
    got = yield next(feed)
    yield list(feed), got


def delegates_to_a_genexp(log, n):
    result = yield from (x for x in range(n) if x % 3)
    log.append(result)
    yield "done"


def finished_and_unstarted(log):
    done = (x for x in "ab")
    log.append(list(done))
    fresh = (x.upper() for x in "cd")
    yield 1
    yield list(done), list(fresh)


PROGRAMS: dict[Callable[..., Any], tuple[Any, ...]] = {
    lazy_then_list: ([1, 2, 3, 4],),
    roundrobin: ("ABC", "D", "EF"),
    roundrobin_with_a_genexp: ("ABC", "D", "EF"),
    nested_fors: (5,),
    held_by_another_generator: (4,),
    delegates_to_a_genexp: (7,),
    finished_and_unstarted: (),
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("actions", [[None] * 3, [5, None, 3, None, None, 7]])
@pytest.mark.parametrize("function", list(PROGRAMS), ids=lambda f: f.__name__)
def test_generator_expressions_resume_as_natively(
    function: Any, actions: list[object], backend: str
) -> None:
    args = (LOG, *PROGRAMS[function])
    marked = contsnap.checkpointable(function)
    check_generator_equivalence(
        function, marked, args, actions, fork_at=2, backend=BACKENDS[backend]
    )


@pytest.mark.parametrize("way", list(WAYS))
def test_a_copy_of_a_held_generator_expression_is_its_own(way: str) -> None:
    marked = contsnap.checkpointable(lazy_then_list)
    native = list(lazy_then_list([], [1, 2, 3, 4]))
    gen = marked([], [1, 2, 3, 4])
    next(gen)
    copied = WAYS[way](gen)
    assert [0, *gen] == native  # the original first...
    assert [0, *copied] == native  # ...and the copy still has every item


def test_generator_expressions_resume_in_a_fresh_process(tmp_path: Path) -> None:
    paused, expected = [], []
    for function, args in PROGRAMS.items():
        if function is lazy_then_list:
            continue  # its log is the test's list
        marked = contsnap.checkpointable(function)
        gen = marked([], *args)
        next(gen)
        paused.append(gen)
        expected.append(list(marked([], *args))[1:])
    path = tmp_path / "genexps.ckpt"
    path.write_bytes(contsnap.dumps(paused))
    program = textwrap.dedent(
        f"""
        import sys, contsnap
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import test_genexps
        for name in {[f.__name__ for f in PROGRAMS]!r}:
            setattr(test_genexps, name, contsnap.checkpointable(getattr(test_genexps, name)))
        print([list(gen) for gen in contsnap.loads(open({str(path)!r}, "rb").read())])
        """
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(expected)


async def ticks(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


async def doubles(source):
    doubled = (x * 2 async for x in source)
    first = await doubled.__anext__()
    await contsnap.checkpoint()
    return first, [x async for x in doubled]


async def _pause_then_finish(coro: Any) -> tuple[bytes, Any]:
    task = asyncio.ensure_future(coro)
    blob = await contsnap.pause(task)
    contsnap.unpause(task)
    return blob, await task


def test_an_async_generator_expression_resumes_after_pause() -> None:
    marked = contsnap.checkpointable(doubles)
    blob, native = asyncio.run(_pause_then_finish(marked(contsnap.checkpointable(ticks)(4))))
    assert native == (0, [2, 4, 6])
    assert asyncio.run(contsnap.loads(blob)) == native


def test_an_async_generator_expression_over_an_unmarked_one_is_refused_by_name() -> None:
    marked = contsnap.checkpointable(doubles)

    async def scenario() -> Any:
        task = asyncio.ensure_future(marked(ticks(4)))
        with pytest.raises(contsnap.NotCheckpointableError, match="ticks") as refused:
            await contsnap.pause(task)
        return str(refused.value), await task

    message, result = asyncio.run(scenario())
    assert result == (0, [2, 4, 6]) and "doubles" in message


def parts_in_parentheses(log, n):
    lazy = (x * 2 for x in (yield 1))  # the first iterable is a yield
    got = yield next(lazy)
    picked = ((lambda: v) for v in range(n) if (v if got else not v))  # noqa: B023 - read at once
    pairs = ((a if a else -1) for a in range(n) for b in (range(a) if a else ()))
    yield [f() for f in picked], list(pairs), list(lazy)


def test_parts_in_parentheses_resume_as_natively() -> None:
    marked = contsnap.checkpointable(parts_in_parentheses)
    check_generator_equivalence(parts_in_parentheses, marked, (LOG, 4), [None, [1, 2, 3], 5])


@contsnap.checkpointable
def spans_lines():
    both = ((a, b)
            for a in range(2)
            for b in range(2))  # fmt: skip
    yield next(both)
    yield list(both)


def test_a_generator_expression_left_native_is_refused_by_name() -> None:
    gen = spans_lines()
    next(gen)
    with pytest.raises(contsnap.NotCheckpointableError) as refused:
        contsnap.dumps(gen)
    message = str(refused.value)
    assert "'both'" in message and "spans_lines" in message and "leaves native" in message
    assert "test_genexps.py:" in message
