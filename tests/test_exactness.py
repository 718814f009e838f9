"""Resume exactly (issue 18): each test shows a difference from native Python that once was.

Every copying way is tried where it applies: ``dumps``/``loads``, ``pickle``,
``copy.deepcopy`` and ``fork``; the differential tests compare with the same
function run natively.
"""

from __future__ import annotations

import array
import asyncio
import contextvars
import copy
import decimal
import itertools
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest
from copy_ways import BACKENDS, WAYS

import contsnap

LOG: list[object] = []


@pytest.fixture(autouse=True)
def _clean_log() -> None:
    LOG.clear()


# ---------------------------------------------------------------- a snapshot changes nothing


class Noisy:
    def __init__(self, name: str) -> None:
        self.name = name

    def __del__(self) -> None:
        LOG.append(("del", self.name))


@contsnap.checkpointable
def drops_a_local():
    held = Noisy("held")
    yield 1
    held = None  # noqa: F841 - dropping it is the point
    LOG.append("dropped")
    yield 2


@pytest.mark.parametrize("way", ["dumps", "pickle", "deepcopy", "fork"])
def test_a_snapshot_does_not_keep_the_original_locals_alive(way: str) -> None:
    gen = drops_a_local()
    next(gen)
    copied = WAYS[way](gen)
    copied.close()
    del copied
    LOG.clear()
    next(gen)
    assert LOG == [("del", "held"), "dropped"]  # as in a run never snapshotted


# ---------------------------------------------------------------- helper names stay hidden


def lists_its_scope(log):
    total = 0
    with open(__file__) as source:
        for n in range(3):
            got = yield sorted(locals())
            total += got or n
            log.append(sorted(vars()))
            log.append(dir())
    held = locals()
    yield sorted(held)
    log.append(sorted(k for k in (lambda: locals())()))
    log.append(total)
    yield [sorted(locals()) for _ in range(1)]


@pytest.mark.parametrize("actions", [[1, 2, 3, 4, 5, 6], [None] * 8])
def test_locals_vars_and_dir_show_the_user_names_only(actions: list[object]) -> None:
    from contsnap.testing import LOG as RUN_LOG
    from contsnap.testing import check_generator_equivalence

    marked = contsnap.checkpointable(lists_its_scope)
    traces = check_generator_equivalence(lists_its_scope, marked, (RUN_LOG,), actions)
    assert ("yield", ["log", "n", "source", "total"]) in traces["roundtrip"]


def test_a_locals_dict_held_across_a_snapshot_keeps_its_contents() -> None:
    @contsnap.checkpointable
    def holds_locals():
        a = 1
        seen = locals()
        yield 1
        yield dict(seen)

    for way in WAYS.values():
        gen = holds_locals()
        next(gen)
        copied = way(gen)
        assert next(copied) == {"a": 1}
        assert next(gen) == {"a": 1}


# ---------------------------------------------------------------- context variables of a task

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST_ID", default="none")
DEPTH: contextvars.ContextVar[list[int]] = contextvars.ContextVar("depth_of_calls")


@contsnap.checkpointable
async def handles_a_request(name):
    REQUEST_ID.set(name)
    trail = [1]
    DEPTH.set(trail)
    decimal.setcontext(decimal.Context(prec=5))
    await contsnap.checkpoint()
    trail.append(2)
    await contsnap.checkpoint()
    await contsnap.checkpoint()
    return REQUEST_ID.get(), DEPTH.get() is trail, DEPTH.get(), str(decimal.Decimal(1) / 7)


async def _pause_after(steps: int, coro: Any) -> tuple[bytes, Any]:
    task = asyncio.ensure_future(coro)
    for _ in range(steps):
        await asyncio.sleep(0)
    blob = await contsnap.pause(task)
    contsnap.unpause(task)
    return blob, await task


@pytest.mark.parametrize("steps", [0, 1])
def test_a_paused_task_keeps_the_context_variables_it_set(steps: int, tmp_path: Path) -> None:
    blob, native = asyncio.run(_pause_after(steps, handles_a_request("r1")))
    assert native == ("r1", True, [1, 2], "0.14286")
    assert asyncio.run(contsnap.loads(blob)) == native  # in this process
    assert REQUEST_ID.get() == "none"  # the caller's context is not touched
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
    assert out.stdout.strip() == str(native)  # in a new process


def test_pausing_a_task_that_set_an_unnamed_context_variable_is_refused() -> None:
    hidden = contextvars.ContextVar("hidden")

    @contsnap.checkpointable
    async def sets_hidden():
        hidden.set(1)
        await contsnap.checkpoint()
        await contsnap.checkpoint()
        return hidden.get()

    async def scenario() -> Any:
        task = asyncio.ensure_future(sets_hidden())
        await asyncio.sleep(0)
        try:
            await contsnap.pause(task)
        except contsnap.NotCheckpointableError as refused:
            message = str(refused)
        else:
            message = "not refused"
            contsnap.unpause(task)
        return message, await task  # a refused pause is withdrawn: the task goes on

    message, result = asyncio.run(scenario())
    assert result == 1
    assert "'hidden'" in message and "sets_hidden" in message and "module level" in message


def test_a_pause_whose_snapshot_is_refused_lets_the_task_go_on() -> None:
    @contsnap.checkpointable
    async def holds_a_lock():
        lock = threading.Lock()
        await contsnap.checkpoint()
        await contsnap.checkpoint()
        return lock.locked()

    async def scenario() -> Any:
        task = asyncio.ensure_future(holds_a_lock())
        await asyncio.sleep(0)
        with pytest.raises(contsnap.NotCheckpointableError, match="'lock'"):
            await contsnap.pause(task)
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(scenario()) is False


# ---------------------------------------------------------------- memoryviews


def writes_through_views(log):
    buffer = bytearray(b"abcdefghijkl")
    middle = memoryview(buffer)[2:10]
    odd = memoryview(buffer)[1::2]
    backwards = memoryview(buffer)[::-3]
    words = memoryview(buffer).cast("H")
    grid = memoryview(buffer).cast("B", (3, 4))
    frozen = memoryview(buffer)[4:].toreadonly()
    numbers = array.array("i", [1, 2, 3, 4])
    tail = memoryview(numbers)[1:]
    for round_ in range(3):
        got = yield bytes(buffer), bytes(odd), bytes(backwards), list(tail)
        middle[round_] = ord("A") + (got or 0) % 26
        odd[round_ + 2] = ord("0") + round_
        backwards[1] = ord("z") - round_
        words[5] = 0x4241 + round_
        grid[2, round_] = ord("x")
        tail[round_] = (got or 0) * 10
        log.append((bytes(frozen), frozen.readonly, grid.tolist()[2], words[0], numbers.tolist()))
    try:
        frozen[0] = 1
    except TypeError as exc:
        log.append(str(exc))
    yield bytes(buffer)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("actions", [[1, 2, 3, 4], [None, 7, None, 25]])
def test_memoryviews_write_through_to_their_exporter_after_a_restore(
    actions: list[object], backend: str
) -> None:
    from contsnap.testing import LOG as RUN_LOG
    from contsnap.testing import check_generator_equivalence

    marked = contsnap.checkpointable(writes_through_views)
    check_generator_equivalence(
        writes_through_views, marked, (RUN_LOG,), actions, fork_at=2, backend=BACKENDS[backend]
    )


@contsnap.checkpointable
def view_and_buffer():
    buffer = bytearray(b"abcdef")
    view = memoryview(buffer)[1:4]
    yield 1
    view[0] = ord("X")
    yield bytes(buffer), view.readonly


@pytest.mark.parametrize("way", ["dumps", "pickle", "deepcopy", "fork"])
def test_a_memoryview_and_its_bytearray_stay_one_after_every_way_of_copying(way: str) -> None:
    gen = view_and_buffer()
    next(gen)
    copied = WAYS[way](gen)
    assert next(copied) == (b"aXcdef", False)
    assert next(gen) == (b"aXcdef", False)  # the original has its own buffer


def test_a_released_memoryview_comes_back_released() -> None:
    view = memoryview(b"abc")
    view.release()
    again = contsnap.loads(contsnap.dumps(view))
    with pytest.raises(ValueError, match="released"):
        bytes(again)


# ---------------------------------------------------------------- dict and set iteration


def iterates_and_mutates(log, grow_at):
    table = {"a": 1, "b": 2, "c": 3, "d": 4}
    keys, values, items = table.keys(), table.values(), table.items()
    try:
        for n, key in enumerate(table):
            got = yield key, table[key], list(values)
            table["b"] = (got or 0) + 100
            if n == grow_at:
                table[f"new{n}"] = n
                yield "grown", len(keys)
    except RuntimeError as exc:
        log.append(str(exc))
    pairs = iter(items)
    backwards = reversed(table)
    yield next(pairs), next(backwards)
    table["a"] = -1
    yield next(pairs), list(keys)[-1], next(backwards), sorted(values)
    del table["c"]
    try:
        yield next(pairs)
    except RuntimeError as exc:
        log.append(str(exc))
    seen = {10, 20, 30}
    try:
        for member in seen:
            yield member
            if member == 20:
                seen.add(40)
    except RuntimeError as exc:
        log.append(str(exc))
    yield sorted(seen)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("grow_at", [-1, 0, 2])
@pytest.mark.parametrize("actions", [[1, 2, 3, 4, 5, 6, 7, 8, 9], [None] * 12])
def test_dict_and_set_iteration_sees_changes_and_the_size_check_after_a_restore(
    grow_at: int, actions: list[object], backend: str
) -> None:
    from contsnap.testing import LOG as RUN_LOG
    from contsnap.testing import check_generator_equivalence

    marked = contsnap.checkpointable(iterates_and_mutates)
    traces = check_generator_equivalence(
        iterates_and_mutates,
        marked,
        (RUN_LOG, grow_at),
        actions,
        fork_at=1,
        backend=BACKENDS[backend],
    )
    if grow_at >= 0:
        assert ("log", "dictionary changed size during iteration") in traces["roundtrip"]


def groups_lazily(log, data):
    for key, group in itertools.groupby(data, key=lambda x: x // 10):
        first = next(group)
        got = yield key, first
        if got:
            yield list(group)  # noqa: B031 - one use per round
    log.append("done")


@pytest.mark.parametrize("actions", [[None] * 6, [1] * 10, [None, 1, None, 1, None, 1]])
def test_a_live_groupby_group_keeps_its_contents_after_a_restore(actions: list[object]) -> None:
    from contsnap.testing import LOG as RUN_LOG
    from contsnap.testing import check_generator_equivalence

    marked = contsnap.checkpointable(groups_lazily)
    data = [1, 2, 3, 11, 12, 25, 31, 32]
    check_generator_equivalence(groups_lazily, marked, (RUN_LOG, data), actions, fork_at=2)


@contsnap.checkpointable
def loops_over_a_dict(table):
    for key in table:
        yield key


@pytest.mark.parametrize("way", ["dumps", "pickle", "deepcopy", "fork"])
def test_a_restored_dict_loop_raises_when_its_dict_grows(way: str) -> None:
    gen = loops_over_a_dict({"a": 1, "b": 2})
    next(gen)
    copied = WAYS[way](gen)
    table = copied.gi_frame.f_locals["table"]
    table["c"] = 3
    with pytest.raises(RuntimeError, match="changed size"):
        next(copied)


def test_a_dict_loop_whose_keys_were_swapped_is_refused_by_name() -> None:
    gen = loops_over_a_dict({"a": 1, "b": 2, "c": 3})
    next(gen)
    table = gen.gi_frame.f_locals["table"]
    del table["a"]
    table["z"] = 0  # same size: CPython notices only when the loop runs out
    with pytest.raises(contsnap.NotCheckpointableError, match="loops_over_a_dict.*keys"):
        contsnap.dumps(gen)


@contsnap.checkpointable
def numpy_views():
    import numpy

    whole = numpy.arange(12, dtype=numpy.int32)
    middle = whole[2:8]
    column = whole.reshape(3, 4)[:, 1]
    backwards = whole[::-3]
    yield 1
    middle[0] = 100
    column[2] = 77
    backwards[0] = -5
    yield whole.tolist(), numpy.shares_memory(middle, whole)


@pytest.mark.parametrize("way", ["dumps", "deepcopy", "fork"])
def test_numpy_views_stay_views_of_their_base(way: str) -> None:
    pytest.importorskip("numpy")
    gen = numpy_views()
    next(gen)
    copied = WAYS[way](gen)
    expected = ([0, 1, 100, 3, 4, 5, 6, 7, 8, 77, 10, -5], True)
    assert next(copied) == expected
    assert next(gen) == expected


# ---------------------------------------------------------------- a copy is independent


@contsnap.checkpointable
def unique_everseen(iterable):
    seen = set()
    for element in itertools.filterfalse(seen.__contains__, iterable):
        seen.add(element)
        yield element


class Target:
    def __init__(self, value: int) -> None:
        self.value = value


@contsnap.checkpointable
def refers_weakly():
    target = Target(1)
    weak = weakref.ref(target)
    orphan = weakref.ref(Target(0))  # dead already
    yield
    target.value += 1
    yield weak() is target, weak().value, orphan()


def counter_factory():
    count = [0]

    def bump():
        count[0] += 1
        return count[0]

    return bump


@contsnap.checkpointable
def holds_closures():
    bump = counter_factory()
    scaled = lambda factor=[10]: bump() * factor[0]  # noqa: E731
    yield bump()
    yield bump(), scaled()


@contsnap.checkpointable
def defines_a_class():
    class Counter:
        count = 0

        def bump(self):
            type(self).count += 1
            return super().__repr__().startswith("<")

    counter = Counter()
    yield
    yield counter.bump(), Counter.count, type(counter) is Counter


COPIED_FRAMES = {
    unique_everseen: (([1, 2, 1, 3, 2, 4],), [2, 3, 4]),
    refers_weakly: ((), [(True, 2, None)]),
    holds_closures: ((), [(2, 30)]),
    defines_a_class: ((), [(True, 1, True)]),
}


@pytest.mark.parametrize("way", ["dumps", "pickle", "deepcopy", "fork"])
@pytest.mark.parametrize(
    "function",
    list(COPIED_FRAMES),
    ids=lambda f: f.__name__,
)
def test_a_copy_shares_nothing_with_the_original(way: str, function: Any) -> None:
    args, rest = COPIED_FRAMES[function]
    gen = function(*args)
    next(gen)
    copied = WAYS[way](gen)
    assert list(gen) == rest  # the original runs first...
    assert list(copied) == rest  # ...and the copy still sees its own state


def test_deepcopy_outside_a_frame_keeps_functions_and_classes_as_python_does() -> None:
    bump = counter_factory()

    class Local:
        pass

    items = [1]
    copied = copy.deepcopy([bump, Local, items.append, weakref.ref(Local)])
    assert copied[0] is bump and copied[1] is Local and copied[3] is not None
    assert copied[2].__self__ is items


def test_views_copies_and_weak_references_resume_in_a_fresh_process(tmp_path: Path) -> None:
    paused = []
    for function, args in [
        (view_and_buffer, ()),
        (unique_everseen, ([1, 2, 1, 3, 2, 4],)),
        (refers_weakly, ()),
        (loops_over_a_dict, ({"a": 1, "b": 2, "c": 3},)),
    ]:
        gen = function(*args)
        next(gen)
        paused.append(gen)
    path = tmp_path / "views.ckpt"
    path.write_bytes(contsnap.dumps(paused))
    expected = [list(gen) for gen in paused]
    program = textwrap.dedent(
        f"""
        import sys, contsnap
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        print([list(gen) for gen in contsnap.loads(open({str(path)!r}, "rb").read())])
        """
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(expected)


@contsnap.checkpointable
def loops_over_a_reshuffled_set():
    members = set(range(20))
    for gone in range(1, 19):
        members.discard(gone)
    members.add(40)  # a rebuilt set of these iterates in another order
    for member in members:
        yield member
    try:
        for member in members:
            yield member
            members.add(member + 100)
    except RuntimeError as exc:
        yield str(exc)


@pytest.mark.parametrize("way", ["dumps", "pickle", "deepcopy", "fork"])
def test_a_restored_set_loop_yields_what_the_original_would(way: str) -> None:
    native = list(loops_over_a_reshuffled_set.__wrapped__())
    assert native[-1] == "Set changed size during iteration"
    for stop in range(1, 5):
        gen = loops_over_a_reshuffled_set()
        head = [next(gen) for _ in range(stop)]
        assert head + list(WAYS[way](gen)) == native


@pytest.mark.parametrize("way", ["dumps", "pickle", "deepcopy", "fork"])
def test_a_restored_task_not_run_yet_keeps_its_context_when_copied_again(way: str) -> None:
    blob, native = asyncio.run(_pause_after(1, handles_a_request("r2")))
    restored = contsnap.loads(blob)
    again = WAYS[way](restored)
    assert asyncio.run(again) == native
    assert asyncio.run(restored) == native
