"""Delegation chains as deep as native Python runs them (``yield from`` / ``await`` /
``async for``, about 900 levels under the default recursion limit): ``dumps``, ``fork``,
``copy.deepcopy`` and ``pickle`` save and restore them at any such depth, on every
supported version. Nothing in contsnap recurses once per level."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import contsnap
from contsnap.testing import LOG, check_generator_equivalence, load_program

CHAINS = """
import contsnap


def chain(n, log):
    if n == 0:
        got = yield "leaf"
        log.append(("leaf got", got))
        yield got
        return "done"
    result = yield from chain(n - 1, log)
    return result


def holding(n, box):
    if n == 0:
        value = box.pop()  # only the innermost frame holds it
        yield "holding's leaf"
        return value
    return (yield from holding(n - 1, box))


def locked_above(box, log):
    lock = box.pop()

    def held():  # a closure: the lock is in a cell, saved before the chain below
        return lock

    result = yield from chain(3, log)
    return held, result


def peeks_at_its_delegate(log):
    inner = chain(2, log)

    def peek():  # a closure: the delegate is in a cell too
        return inner

    result = yield from inner
    return result, list(peek())


async def achain(n, log):
    if n == 0:
        await contsnap.checkpoint()
        log.append("leaf resumed")
        return "done"
    return await achain(n - 1, log)


async def agen(n, log):
    if n == 0:
        await contsnap.checkpoint()
        yield "leaf"
        await contsnap.checkpoint()
        yield "leaf2"
        return
    async for value in agen(n - 1, log):
        yield value
"""

COPIES: dict[str, Callable[[Any], Any]] = {
    "dumps": lambda gen: contsnap.loads(contsnap.dumps(gen)),
    "fork": contsnap.fork,
    "pickle": lambda gen: pickle.loads(pickle.dumps(gen)),
    "deepcopy": copy.deepcopy,
}


@pytest.fixture(scope="module")
def programs() -> Iterator[Any]:
    with load_program(CHAINS) as native, load_program(CHAINS, marked=True) as marked:
        yield native, marked


def _deepest(make: Callable[[int], Any], step: Callable[[Any], object]) -> int:
    """The deepest chain native code can start from this frame (binary search)."""
    low, high = 1, sys.getrecursionlimit() + 50
    while low < high:
        mid = (low + high + 1) // 2
        try:
            step(make(mid))
        except RecursionError:
            high = mid - 1
        else:
            low = mid
    return low


def _first_checkpoint(agen: Any) -> None:
    agen.asend(None).send(None)


def _finish(coroutine: Any) -> Any:
    while True:
        try:
            coroutine.send(None)
        except StopIteration as stop:
            return stop.value


@pytest.mark.parametrize("how", COPIES)
def test_yield_from_chain_as_deep_as_native_python(how: str, programs: Any) -> None:
    native, marked = programs
    depth = _deepest(lambda n: native.chain(n, []), next)
    assert depth > 900 if sys.getrecursionlimit() >= 1000 else depth > 0
    gen = marked.chain(depth, [])
    assert next(gen) == "leaf"  # the marked chain runs as deep as the native one
    restored = COPIES[how](gen)
    gen.close()
    assert restored.send("x") == "x"
    with pytest.raises(StopIteration) as stop:
        next(restored)
    assert stop.value.value == "done"


@pytest.mark.parametrize("how", COPIES)
def test_await_chain_as_deep_as_native_python(how: str, programs: Any) -> None:
    native, marked = programs
    depth = _deepest(lambda n: native.achain(n, []), _finish)
    coroutine = marked.achain(depth, [])
    coroutine.send(None)
    restored = COPIES[how](coroutine)
    coroutine.close()
    assert _finish(restored) == "done"


@pytest.mark.parametrize("how", COPIES)
def test_async_for_chain_of_async_generators(how: str, programs: Any) -> None:
    native, marked = programs
    # the transformed ``async for`` awaits one helper more than the native one at the
    # innermost level (3.10 counts it): the margin is the transform's, not the snapshot's
    depth = _deepest(lambda n: native.agen(n, []), _first_checkpoint) - 1
    agen = marked.agen(depth, [])
    step = agen.asend(None)
    step.send(None)  # paused at the leaf's first checkpoint, inside the step
    restored = COPIES[how](agen)
    step.close()
    # the first step from as deep a frame as _deepest's, then the rest
    assert _call(_first_step, restored) == "leaf"
    seen: list[object] = []

    async def drain() -> None:
        async for value in restored:
            seen.append(value)

    _finish(drain())
    assert seen == ["leaf2"]


def _call(step: Callable[[Any], Any], obj: Any) -> Any:
    return step(obj)


def _first_step(agen: Any) -> Any:
    try:
        agen.asend(None).send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the restored step did not finish at the leaf's yield")


def test_deep_chain_restores_in_a_fresh_process(programs: Any, tmp_path: Any) -> None:
    _native, marked = programs
    gen = marked.chain(900, [])
    next(gen)
    blob = tmp_path / "deep.ckpt"
    blob.write_bytes(contsnap.dumps(gen))
    program = (
        "import sys, contsnap\n"
        f"sys.path.insert(0, {os.path.dirname(marked.__file__)!r})\n"
        f"import {marked.__name__}\n"
        f"g = contsnap.loads(open({str(blob)!r}, 'rb').read())\n"
        "print(g.send('far'), end=' ')\n"
        "try:\n    next(g)\nexcept StopIteration as stop:\n    print(stop.value)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["far", "done"]


def test_deep_chain_matches_native_at_every_suspension(programs: Any) -> None:
    """Round trip at every suspension, and a fork, of a 300-deep chain."""
    native, marked = programs
    check_generator_equivalence(native.chain, marked.chain, (300, LOG), ["a", "b"])


@pytest.mark.parametrize("kind", ["lock", "deeply nested list"])
def test_an_unsaveable_local_at_the_bottom_of_a_deep_chain_is_named(
    kind: str, programs: Any
) -> None:
    import threading

    _native, marked = programs
    held: Any = threading.Lock()
    if kind != "lock":
        for _ in range(100_000):
            held = [held]
    gen = marked.holding(600, [held])
    next(gen)
    with pytest.raises(contsnap.NotCheckpointableError) as refused:
        contsnap.dumps(gen)
    message = str(refused.value)
    assert "holding at " in message and "local variable 'value'" in message, message
    with open(marked.__file__, encoding="utf-8") as source:
        line = source.read().splitlines().index('        yield "holding\'s leaf"') + 1
    assert f":{line}:" in message  # the innermost frame's yield


def test_detach_of_a_chain_as_deep_as_native_python(programs: Any) -> None:
    native, marked = programs
    depth = _deepest(lambda n: native.chain(n, []), next)
    gen = marked.chain(depth, [])
    next(gen)
    moved = contsnap.loads(contsnap.dumps(gen))
    contsnap.detach(gen)  # the whole chain ends, running no finally
    assert gen.gi_frame is None
    assert moved.send("on") == "on"


@pytest.mark.parametrize("how", ["pickle", "dumps"])
def test_a_generator_of_a_chain_that_failed_to_save_saves_whole_on_its_own(
    how: str, programs: Any
) -> None:
    import threading

    _native, marked = programs
    top = marked.locked_above([threading.Lock()], [])
    assert next(top) == "leaf"
    save = pickle.dumps if how == "pickle" else contsnap.dumps
    with pytest.raises(Exception, match="lock"):
        save(top)  # fails at the top's own cell, after its chain was listed
    below = top.gi_yieldfrom  # chain(3): saved alone now, its state and chain included
    load = pickle.loads if how == "pickle" else contsnap.loads
    copied = load(save(below))
    assert copied.send("alone") == "alone"
    with pytest.raises(StopIteration) as stop:
        next(copied)
    assert stop.value.value == "done"


# (plain pickle of a local function is the parity item of issue 18, not this one)
@pytest.mark.parametrize("how", ["dumps", "fork", "deepcopy"])
def test_a_delegate_also_held_in_a_cell_is_copied_once(how: str, programs: Any) -> None:
    native, marked = programs
    check_generator_equivalence(
        native.peeks_at_its_delegate,
        marked.peeks_at_its_delegate,
        (LOG,),
        ["x", "y"],
        backend=_Backend(COPIES[how]),
    )


class _Backend:
    def __init__(self, copy_of: Callable[[Any], Any]) -> None:
        self.copy_of = copy_of

    def dumps(self, gen: Any) -> Any:
        return self.copy_of(gen)

    def loads(self, data: Any) -> Any:
        return data

    def detach(self, gen: Any) -> None:
        contsnap.detach(gen)

    def fork(self, gen: Any) -> Any:
        return self.copy_of(gen)
