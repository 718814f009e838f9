"""Generators and coroutines saved before their first step, restored, and saved again.

A restored generator that has not run yet holds only contsnap's box in its
frame until its first step: a second snapshot must still find its arguments
(a scheduler autosaving its pending tasks twice).
"""

from __future__ import annotations

import ast
import copy
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

import contsnap
from contsnap.testing import (
    LOG,
    check_coroutine_equivalence,
    check_generator_equivalence,
    load_program,
)


def _dumps(obj: Any) -> Any:
    return contsnap.loads(contsnap.dumps(obj))


def _pickle(obj: Any) -> Any:
    return pickle.loads(pickle.dumps(obj))


COPIES: dict[str, Callable[[Any], Any]] = {
    "dumps": _dumps,
    "fork": contsnap.fork,
    "pickle": _pickle,
    "deepcopy": copy.deepcopy,
}


class _Backend:
    """A snapshot backend built on ``pickle`` or ``copy.deepcopy`` (with contsnap's detach)."""

    def __init__(self, how: str) -> None:
        self.copy = COPIES[how]

    def dumps(self, gen: Any) -> Any:
        return self.copy(gen)

    def loads(self, data: Any) -> Any:
        return data

    def detach(self, gen: Any) -> None:
        contsnap.detach(gen)

    def fork(self, gen: Any) -> Any:
        return self.copy(gen)


def scaled(a, b=2, *rest, key=3, **more):
    total = a * b + key + sum(rest) + sum(more.values())
    cell = [total]

    def read():
        return cell[0]

    received = yield total
    yield (read(), received, a)
    return a + b


marked_scaled = contsnap.checkpointable(scaled)


@pytest.mark.parametrize("how", COPIES)
@pytest.mark.parametrize("times", [1, 2, 3])
def test_unstarted_generator_copied_again_keeps_its_arguments(how: str, times: int) -> None:
    gen = marked_scaled(4, 5, 6, key=7, extra=8)
    for _ in range(times):
        gen = COPIES[how](gen)
    assert next(gen) == 4 * 5 + 6 + 7 + 8
    assert gen.send("x") == (41, "x", 4)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == 9


async def ticks(a, b=2):
    for i in range(a):
        await contsnap.checkpoint()
        yield i * b


marked_ticks = contsnap.checkpointable(ticks)


def _finish(coroutine: Any) -> Any:
    while True:
        try:
            coroutine.send(None)
        except StopIteration as stop:
            return stop.value


@pytest.mark.parametrize("how", COPIES)
def test_unstarted_async_generator_copied_twice_keeps_its_arguments(how: str) -> None:
    agen = marked_ticks(3, b=5)
    agen = COPIES[how](COPIES[how](agen))

    async def collect() -> list[int]:
        return [value async for value in agen]

    assert _finish(collect()) == [0, 5, 10]


PROGRAMS = """
import contsnap


def pending_tasks(n, log):
    # a scheduler holding tasks it has not started: each suspension is an autosave
    tasks = [worker(i, log) for i in range(n)]
    spare = worker(99, log)
    yield len(tasks)
    while tasks:
        task = tasks.pop(0)
        try:
            got = next(task)
        except StopIteration as stop:
            log.append(("done", stop.value))
            continue
        yield got
        tasks.append(task)
    yield from spare


def worker(i, log):
    log.append(("worker starts", i))
    yield i * 10
    yield i * 10 + 1
    return i


def fresh_generator_factory(n, log):
    # a generator that returns a fresh (unstarted) generator, saved on the way
    made = yield from maker(n, log)
    yield ("made", type(made).__name__)
    yield ("first", next(made))
    yield from made


def maker(n, log):
    fresh = worker(n, log)
    yield "before"
    return fresh


async def holds_unstarted(n, log):
    # an unstarted coroutine held in a local across checkpoints
    later = step(n, log)
    await contsnap.checkpoint()
    log.append("between")
    await contsnap.checkpoint()
    return await later


async def step(n, log):
    log.append(("step starts", n))
    await contsnap.checkpoint()
    return n * 2
"""


@pytest.mark.parametrize("how", ["contsnap", *COPIES])
@pytest.mark.parametrize("program", ["pending_tasks", "fresh_generator_factory"])
def test_generators_holding_unstarted_generators_match_native(how: str, program: str) -> None:
    backend = None if how == "contsnap" else _Backend(how)
    with load_program(PROGRAMS) as native, load_program(PROGRAMS, marked=True) as marked:
        check_generator_equivalence(
            getattr(native, program), getattr(marked, program), (3, LOG), [], backend=backend
        )


@pytest.mark.parametrize("how", ["contsnap", *COPIES])
def test_coroutine_holding_an_unstarted_coroutine_matches_native(how: str) -> None:
    backend = None if how == "contsnap" else _Backend(how)
    with load_program(PROGRAMS) as native, load_program(PROGRAMS, marked=True) as marked:
        check_coroutine_equivalence(
            native.holds_unstarted, marked.holds_unstarted, (3, LOG), backend=backend
        )


def test_restored_unstarted_generators_saved_again_finish_in_a_fresh_process(
    tmp_path: Any,
) -> None:
    with load_program(PROGRAMS) as native, load_program(PROGRAMS, marked=True) as marked:
        expected_log: list[object] = []
        expected = list(native.pending_tasks(3, expected_log))
        gen = marked.pending_tasks(3, [])
        first = next(gen)
        gen = contsnap.loads(contsnap.dumps(gen))  # its tasks: restored, not started
        blob = tmp_path / "tasks.ckpt"
        blob.write_bytes(contsnap.dumps(gen))  # ... and saved again
        program = (
            "import sys, contsnap\n"
            f"sys.path.insert(0, {os.path.dirname(marked.__file__)!r})\n"
            f"import {marked.__name__}\n"
            f"g = contsnap.loads(open({str(blob)!r}, 'rb').read())\n"
            "print(list(g))\n"
        )
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        out = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, env=env, check=False
        )
    assert out.returncode == 0, out.stderr
    assert [first, *ast.literal_eval(out.stdout)] == expected
