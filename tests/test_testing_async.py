"""Tests of the async half of contsnap.testing: random coroutine and async generator
programs, and the harness that drives them by hand and under asyncio.

As in test_testing_strategy.py, the harness is first checked on plain CPython,
with a replaying test double of the snapshot backend; the last section judges
the real core: native == transformed == roundtrip == fork == paused under asyncio.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from typing import Any

import pytest
import sampling
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import contsnap
from contsnap.testing import (
    LOG,
    Action,
    Close,
    Send,
    Throw,
    TraceLog,
    assert_async_equivalent,
    async_generator_programs,
    check_coroutine_equivalence,
    coroutine_actions,
    coroutine_programs,
    driver_actions,
    load_program,
    mark_generators,
    run_async_trace,
    run_asyncio_trace,
)

# Async generator programs compute with what they are sent; 1 keeps that going
# once the drawn actions run out (asend(None) would make it a TypeError).
FILL = Send(1)

PROGRAMS = {"coroutine": coroutine_programs, "async generator": async_generator_programs}


def top_level_functions(source: str) -> dict[str, ast.AsyncFunctionDef]:
    return {
        node.name: node for node in ast.parse(source).body if isinstance(node, ast.AsyncFunctionDef)
    }


def own_scope(function: ast.AsyncFunctionDef) -> list[ast.AST]:
    """The nodes of ``function``'s body, not those of functions nested in it."""
    found: list[ast.AST] = []
    pending: list[ast.AST] = list(function.body)
    while pending:
        node = pending.pop()
        found.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))
    return found


def yields_in(node: ast.AST) -> list[ast.Yield]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Yield)]


def native_trace(source: str, arg: int, actions: list[Action], **options: Any) -> list[Any]:
    with load_program(source) as module:
        return run_async_trace(lambda log: module.gen(arg, log), actions, **options)["native"]


# --- the programs ----------------------------------------------------------


@given(coroutine_programs())
def test_coroutine_programs_are_python_310_modules(source: str) -> None:
    tree = ast.parse(source, feature_version=(3, 10))
    compile(tree, "<program>", "exec")
    functions = top_level_functions(source)
    assert "gen" in functions
    assert all(
        not yields_in(functions[name]) for name in ("gen", "inner", "leaf") if name in functions
    )
    gen_body = ast.unparse(functions["gen"])
    assert ("inner" in functions) == ("inner(" in gen_body)
    assert ("agen" in functions) == ("agen(" in gen_body)


@given(async_generator_programs())
def test_async_generator_programs_never_yield_in_finally(source: str) -> None:
    tree = ast.parse(source, feature_version=(3, 10))
    compile(tree, "<program>", "exec")
    gen = top_level_functions(source)["gen"]
    assert yields_in(gen)
    for node in own_scope(gen):
        if isinstance(node, ast.Try):
            assert not any(yields_in(statement) for statement in node.finalbody)
        if isinstance(node, ast.Return):
            assert node.value is None  # an async generator returns nothing


# a program may hold an inner coroutine unstarted and end (or be closed at its step bound)
# before awaiting it: Python then warns, natively too; that is the program's doing
@pytest.mark.filterwarnings("ignore:coroutine '.*' was never awaited:RuntimeWarning")
@settings(deadline=None)
@given(st.sampled_from(sorted(PROGRAMS)), st.integers(20, 200), st.data(), st.integers(-3, 9))
def test_programs_end_within_their_step_bound_and_repeat_exactly(
    kind: str, max_steps: int, data: st.DataObject, arg: int
) -> None:
    source = data.draw(PROGRAMS[kind](max_steps=max_steps), label="source")
    if kind == "coroutine":
        actions = data.draw(coroutine_actions(), label="actions")
        fill = data.draw(st.sampled_from([Send(None), None]), label="fill")
    else:
        actions = data.draw(driver_actions(), label="actions")
        fill = data.draw(st.sampled_from([FILL, Send(None), None]), label="fill")
    trace = native_trace(source, arg, actions, fill=fill, max_steps=1_000)
    assert trace[-1][0] in ("return", "raise", "closed"), trace[-1]
    assert sum(event[0] in ("await", "yield") for event in trace) <= max_steps
    assert native_trace(source, arg, actions, fill=fill, max_steps=1_000) == trace


def test_programs_use_the_advertised_forms() -> None:
    """Over a fixed sample, every form the docstrings promise shows up."""
    wanted = {
        "coroutine": [
            "await contsnap.checkpoint()\n", "log.append((", "max(", "] += await",
            ".attr -= await", "+= await inner(", "= await inner(", "await leaf(",
            "f'{", "else (await", ":= (await", "*mid, ", "async for ", "async with ACtx(",
            "with Ctx(", "break", "continue", "else:", "try:", "except ", "finally:",
            "match ", "while ", "return (", "raise ", "nonlocal c", "lambda", "True)",
            "% (Shown(", "= await held",
            "window[", "known(", 'table["grown"]', "CV.set(", "CV.get()",
        ],
        "async generator": [
            "yield\n", "= yield", "(yield", "yield (\"handling\"", "async for ", "async with ACtx(",
            "await inner(", "if (yield", "else (await", "return\n",
        ],
    }  # fmt: skip
    for kind, forms in wanted.items():
        assert set(forms) - forms_seen(PROGRAMS[kind](), forms) == set(), kind


def forms_seen(programs: st.SearchStrategy[str], forms: list[str]) -> set[str]:
    return sampling.forms_seen(
        programs,
        forms,
        lambda source: source.split("class ACtx:")[1].split("return self.suppress and")[-1],
    )


def test_mark_generators_marks_every_async_def_and_async_method() -> None:
    source = """import contsnap


class Manager:
    def plain(self):
        pass

    async def __aenter__(self):
        await contsnap.checkpoint()


async def coroutine():
    async def nested():
        pass
    await nested()


@staticmethod
async def agen():
    yield 1
"""
    marked = mark_generators(source)
    lines = marked.splitlines()
    assert lines.count("    @contsnap.checkpointable") == 1
    assert (
        lines[lines.index("    @contsnap.checkpointable") + 1] == "    async def __aenter__(self):"
    )
    assert lines.count("@contsnap.checkpointable") == 2
    assert "@contsnap.checkpointable\n@staticmethod\nasync def agen():" in marked
    assert "@contsnap.checkpointable\nasync def coroutine():" in marked
    compile(marked, "<marked>", "exec")


# --- the driver, on plain CPython -------------------------------------------


async def pinging(log: TraceLog) -> str:
    try:
        await contsnap.checkpoint()
        log.append("pinged")
        await contsnap.checkpoint()
    finally:
        log.append("cleanup")
    return "done"


async def counting(log: TraceLog) -> AsyncGenerator[int, int]:
    total = 0
    try:
        while total < 10:
            await contsnap.checkpoint()
            total += yield total
            log.append(("total", total))
    finally:
        log.append("counting: cleanup")
        await contsnap.checkpoint()


def test_coroutine_trace_records_each_checkpoint_and_the_result() -> None:
    assert run_async_trace(pinging, []) == {
        "native": [
            ("start",),
            ("await", None),
            ("send", None),
            ("log", "pinged"),
            ("await", None),
            ("send", None),
            ("log", "cleanup"),
            ("return", "done"),
        ]
    }
    thrown = run_async_trace(pinging, [Throw(KeyError, ("k",))])["native"]
    assert thrown[-3:] == [
        ("throw", "KeyError", ("k",)),
        ("log", "cleanup"),
        ("raise", "KeyError", ("k",)),
    ]
    closed = run_async_trace(pinging, [Close()])["native"]
    assert closed[-3:] == [("close",), ("log", "cleanup"), ("closed",)]


def test_async_generator_trace_records_steps_and_the_awaits_inside_them() -> None:
    trace = run_async_trace(counting, [4, Throw(ValueError, ("x",))])["native"]
    assert trace == [
        ("start",),
        ("await", None),  # priming: asend(None) passes a checkpoint, then yields
        ("yield", 0),
        ("send", 4),
        ("log", ("total", 4)),
        ("await", None),
        ("yield", 4),
        ("throw", "ValueError", ("x",)),
        ("log", "counting: cleanup"),
        ("await", None),  # the finally awaits, inside athrow()
        ("raise", "ValueError", ("x",)),
    ]
    ended = run_async_trace(counting, [], fill=Send(6))["native"]
    assert ended[-4:] == [
        ("log", ("total", 12)),
        ("log", "counting: cleanup"),
        ("await", None),
        ("return", None),
    ]
    closed = run_async_trace(counting, [Close()])["native"]
    assert closed[-4:] == [("close",), ("log", "counting: cleanup"), ("await", None), ("closed",)]


def test_an_async_generator_that_never_ends_is_closed_at_the_step_limit() -> None:
    async def forever(log: TraceLog) -> AsyncGenerator[int, None]:
        try:
            while True:
                yield 1
        finally:
            log.append("closed by the harness")

    trace = run_async_trace(forever, [], max_steps=3)["native"]
    assert trace[-4:] == [
        ("step limit", 3),
        ("close",),
        ("log", "closed by the harness"),
        ("closed",),
    ]


def test_asyncio_trace_runs_a_coroutine_and_iterates_an_async_generator() -> None:
    assert run_asyncio_trace(pinging) == {
        "asyncio": [("start",), ("log", "pinged"), ("log", "cleanup"), ("return", "done")]
    }
    iterated = run_asyncio_trace(counting)["asyncio"]
    assert iterated == [
        ("start",),
        ("log", ("got", 0)),
        ("log", "counting: cleanup"),  # async for sent None: total += None failed
        ("raise", "TypeError", ("unsupported operand type(s) for +=: 'int' and 'NoneType'",)),
    ]


# --- roundtrip and fork, with a replaying stand-in for contsnap -------------


class ReplayStep:
    """A step awaitable of a :class:`ReplayAsyncGen` that counts how often it was sent to."""

    def __init__(self, awaitable: Any, record: list[Any]) -> None:
        self.awaitable, self.record = awaitable, record

    def send(self, value: None) -> Any:
        self.record[2] += 1
        return self.awaitable.send(value)

    def close(self) -> None:
        self.awaitable.close()


class ReplayAsyncGen:
    """Wraps an async generator and remembers its steps and how far each got."""

    def __init__(self, make: Any, log: TraceLog, made: Any = None) -> None:
        self.make, self.log = make, log
        self.agen = make(log) if made is None else made
        self.history: list[list[Any]] = []  # [kind, argument, sends so far]
        self.current: ReplayStep | None = None
        self.pending: ReplayStep | None = None  # a rebuilt copy is in the middle of it

    def _step(self, kind: str, argument: Any, awaitable: Any) -> ReplayStep:
        self.history.append([kind, argument, 0])
        self.current = ReplayStep(awaitable, self.history[-1])
        return self.current

    def asend(self, value: object) -> ReplayStep:
        if self.pending is not None:  # the rest of a step cut by a snapshot
            assert value is None
            step, self.pending = self.pending, None
            return step
        return self._step("send", value, self.agen.asend(value))

    def athrow(self, exc: BaseException) -> ReplayStep:
        return self._step("throw", (type(exc), exc.args), self.agen.athrow(exc))

    def aclose(self) -> ReplayStep:
        return self._step("close", None, self.agen.aclose())

    @property
    def ag_frame(self) -> Any:
        return self.agen.ag_frame


class ReplayCoroutine:
    """Wraps a coroutine and remembers how it was driven."""

    def __init__(self, make: Any, log: TraceLog, made: Any = None) -> None:
        self.make, self.log = make, log
        self.coro = make(log) if made is None else made
        self.history: list[Action] = []

    def send(self, value: None) -> Any:
        self.history.append(Send(value))
        return self.coro.send(value)

    def throw(self, exc: BaseException) -> Any:
        self.history.append(Throw(type(exc), exc.args))
        return self.coro.throw(exc)

    def close(self) -> None:
        self.coro.close()

    @property
    def cr_frame(self) -> Any:
        return self.coro.cr_frame


Replayable = ReplayCoroutine | ReplayAsyncGen


class ReplayAsyncBackend:
    """Snapshots by replaying the history into a fresh copy, with the log muted.

    A copy rebuilt in the middle of a step keeps that step pending: its next
    ``asend(None)`` is the rest of it, as for a copy contsnap restores.
    ``honest_detach=False`` closes the old copy audibly, like a snapshot library
    that forgets to detach.
    """

    def __init__(self, *, honest_detach: bool = True) -> None:
        self.honest_detach = honest_detach

    def dumps(self, wrapper: Replayable) -> tuple[Any, ...]:
        history = [
            list(record) if isinstance(record, list) else record for record in wrapper.history
        ]
        return type(wrapper), wrapper.make, wrapper.log, history

    def loads(self, data: tuple[Any, ...]) -> Replayable:
        kind, make, log, history = data
        sink, log.sink = log.sink, []
        try:
            rebuilt = kind(make, log)
            if isinstance(rebuilt, ReplayCoroutine):
                for action in history:
                    resume = rebuilt.send if isinstance(action, Send) else rebuilt.throw
                    resume(
                        action.value if isinstance(action, Send) else action.exc_type(*action.args)
                    )
            else:
                for step_kind, argument, sends in history:
                    if step_kind == "send":
                        step = rebuilt.asend(argument)
                    elif step_kind == "throw":
                        step = rebuilt.athrow(argument[0](*argument[1]))
                    else:
                        step = rebuilt.aclose()
                    for _ in range(sends):
                        try:
                            step.send(None)
                        except BaseException:  # the step ended, as the original's did
                            break
                    else:
                        rebuilt.pending = step  # it was cut by the snapshot
        finally:
            log.sink = sink
        return rebuilt

    def detach(self, wrapper: Replayable) -> None:
        sink = wrapper.log.sink
        if self.honest_detach:
            wrapper.log.sink = []
        try:
            if isinstance(wrapper, ReplayCoroutine):
                while wrapper.cr_frame is not None:
                    try:
                        wrapper.close()
                    except Exception:
                        pass
                return
            if wrapper.current is not None:  # inside a step: end it from there
                try:
                    wrapper.current.awaitable.throw(GeneratorExit)
                    while True:
                        wrapper.current.awaitable.send(None)
                except BaseException:
                    pass
            for _ in range(3):
                if wrapper.ag_frame is None:
                    break
                closing = wrapper.agen.aclose()
                try:
                    while True:
                        closing.send(None)
                except BaseException:
                    pass
        finally:
            wrapper.log.sink = sink

    def fork(self, wrapper: Replayable) -> Replayable:
        return self.loads(self.dumps(wrapper))


def replayable(function: Any) -> Callable[[Any, TraceLog], Replayable]:
    def make(arg: Any, log: TraceLog) -> Replayable:
        probe = function(arg, log)
        wrapper = ReplayAsyncGen if inspect.isasyncgen(probe) else ReplayCoroutine
        return wrapper(lambda log: function(arg, log), log, probe)

    return make


@pytest.mark.xfail(
    strict=False,
    reason="harness: closing an async generator whose finally awaits makes CPython raise "
    "'async generator ignored GeneratorExit'; the replaying double records a plain close",
)
# a known harness failure: no shrinking and no example database (shrinking the failure
# took minutes in the first tox environment of a run)
@settings(
    deadline=None,
    max_examples=30,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
)
@given(st.data(), st.sampled_from(sorted(PROGRAMS)), st.integers(-3, 9), st.integers(0, 12))
def test_roundtrip_and_fork_plumbing_with_a_replaying_backend(
    data: st.DataObject, kind: str, arg: int, fork_at: int
) -> None:
    source = data.draw(PROGRAMS[kind](), label="source")
    actions = data.draw(coroutine_actions() if kind == "coroutine" else driver_actions())
    with load_program(source) as module:
        traces = check_coroutine_equivalence(
            module.gen,
            replayable(module.gen),
            (arg, LOG),
            actions,
            modes=("native", "roundtrip", "fork"),
            fork_at=fork_at,
            fill=Send(None) if kind == "coroutine" else FILL,
            backend=ReplayAsyncBackend(),
        )
    assert {"native", "roundtrip", "fork/original"} <= set(traces)


def test_fork_inside_a_step_drives_both_copies_to_the_end() -> None:
    traces = check_coroutine_equivalence(
        lambda arg, log: counting(log),
        replayable(lambda arg, log: counting(log)),
        (None, LOG),
        [3, 4],
        modes=("native", "fork"),
        fork_at=2,  # the checkpoint inside asend(3)
        fill=Send(5),
        backend=ReplayAsyncBackend(),
    )
    assert traces["fork/copy"] == traces["fork/original"] == traces["native"]
    assert traces["native"][3:6] == [("send", 3), ("log", ("total", 3)), ("await", None)]


def test_a_finally_run_twice_after_a_roundtrip_inside_a_step_is_reported() -> None:
    with pytest.raises(AssertionError) as failure:
        check_coroutine_equivalence(
            lambda arg, log: counting(log),
            replayable(lambda arg, log: counting(log)),
            (None, LOG),
            [1],
            modes=("native", "roundtrip"),
            backend=ReplayAsyncBackend(honest_detach=False),
        )
    message = str(failure.value)
    assert "roundtrip transcript differs from native at event 2" in message
    assert "+('log', 'counting: cleanup')\n ('yield', 0)" in message


# --- the real thing: native == transformed == roundtrip == fork == asyncio ---


@pytest.mark.parametrize("move", [False, True], ids=["unpaused", "moved"])
def test_the_asyncio_mode_pauses_the_task(move: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    paused: list[bytes] = []
    pause = contsnap.pause

    async def spy(task: asyncio.Task[Any], **options: Any) -> bytes:
        paused.append(await pause(task, **options))
        return paused[-1]

    monkeypatch.setattr(contsnap, "pause", spy)
    traces = check_coroutine_equivalence(
        pinging, contsnap.checkpointable(pinging), (LOG,), modes=("asyncio",), pause_at=0, move=move
    )
    assert len(paused) == 1
    assert traces["asyncio/moved" if move else "asyncio/paused"][-1] == ("return", "done")


def test_check_coroutine_equivalence_on_decorated_functions() -> None:
    check_coroutine_equivalence(pinging, contsnap.checkpointable(pinging), (LOG,), [], fork_at=1)
    check_coroutine_equivalence(
        counting,
        contsnap.checkpointable(counting),
        (LOG,),
        [2, Throw(KeyError, ("k",))],
        fork_at=1,
        inside_steps=False,
    )


# --- what the differential tests found in the core ---------------------------
#
# Each bug has its smallest program here, marked xfail until it is fixed; the
# property tests that run into these bugs are marked too (even one program in a
# few hundred fails a run now and then). They stop shrinking (the failure is
# known), so they cost little until the core is fixed; remove a mark when its
# bugs are fixed.

KNOWN_FAILURE = settings(
    deadline=None,
    report_multiple_bugs=False,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
)
# The differential tests draw a fixed sample (derandomized): the same programs
# on every run and interpreter, so a failure is reproducible, not flaky.
DIFFERENTIAL = settings(
    deadline=None,
    report_multiple_bugs=False,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
)

DETACH_INSIDE_A_STEP = (
    "core: detach() of an async generator paused at an await inside asend() raises "
    "RuntimeError: athrow(): asynchronous generator is already running"
)
THROW_INTO_RESTORED_COROUTINE = (
    "core: a restored coroutine is unstarted, so throw() and close() (and the cancellation "
    "of a task made from it, before its first step) skip its except and finally clauses"
)


@settings(DIFFERENTIAL, max_examples=20)
@given(coroutine_programs(), st.integers(-3, 9), st.integers(0, 12), st.integers(0, 5))
def test_generated_coroutines_behave_the_same_in_every_mode(
    source: str, arg: int, fork_at: int, pause_at: int
) -> None:
    assert_async_equivalent(source, arg=arg, fork_at=fork_at, pause_at=pause_at)


@settings(DIFFERENTIAL, max_examples=20)
@given(async_generator_programs(), driver_actions(), st.integers(-3, 9), st.integers(0, 12))
def test_generated_async_generators_behave_the_same_in_every_mode(
    source: str, actions: list[Action], arg: int, fork_at: int
) -> None:
    assert_async_equivalent(
        source,
        actions,
        arg=arg,
        fork_at=fork_at,
        fill=FILL,
        inside_steps=False,
        pause_at=fork_at % 5,
    )


@pytest.mark.xfail(strict=False, reason=DETACH_INSIDE_A_STEP)
@settings(KNOWN_FAILURE, max_examples=20)
@given(async_generator_programs(), driver_actions(), st.integers(-3, 9))
def test_async_generators_round_trip_at_every_await_inside_a_step(
    source: str, actions: list[Action], arg: int
) -> None:
    assert_async_equivalent(source, actions, arg=arg, modes=("native", "roundtrip"), fill=FILL)


@pytest.mark.xfail(strict=False, reason=THROW_INTO_RESTORED_COROUTINE)
@settings(KNOWN_FAILURE, max_examples=30)
@given(coroutine_programs(), coroutine_actions(), st.integers(-3, 9), st.integers(0, 12))
def test_coroutines_thrown_into_and_closed_at_checkpoints(
    source: str, actions: list[Action], arg: int, fork_at: int
) -> None:
    assert_async_equivalent(
        source, actions, arg=arg, fork_at=fork_at, modes=("native", "roundtrip", "fork")
    )


@settings(DIFFERENTIAL, max_examples=15)
@given(coroutine_programs(), st.integers(-3, 9), st.integers(0, 5))
def test_paused_tasks_move_to_their_snapshot(source: str, arg: int, pause_at: int) -> None:
    assert_async_equivalent(source, arg=arg, modes=("asyncio",), pause_at=pause_at, move=True)


@contsnap.checkpointable
async def ticks() -> AsyncGenerator[int, None]:
    await contsnap.checkpoint()
    yield 1


@pytest.mark.xfail(strict=False, reason=DETACH_INSIDE_A_STEP)
def test_detach_inside_an_async_generator_step() -> None:
    agen = ticks()
    assert agen.asend(None).send(None) is None  # paused at the checkpoint, inside asend()
    restored = contsnap.loads(contsnap.dumps(agen))
    contsnap.detach(agen)
    with pytest.raises(StopIteration) as done:
        restored.asend(None).send(None)  # the rest of the step
    assert done.value.value == 1


# A module-level log: a snapshot pickles the module-level name, not a copy.
EVENTS: list[str] = []


async def numbers() -> AsyncGenerator[int, None]:
    try:
        yield 1
        yield 2
    finally:
        EVENTS.append("numbers: finally")


@contsnap.checkpointable
async def consume() -> str:
    async for _ in numbers():
        await contsnap.checkpoint()
    return "done"


def test_detach_of_a_paused_task_ends_the_async_generators_it_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> str:
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0)  # consume() at its checkpoint, numbers() at `yield 1`
        snapshot = await contsnap.pause(task)
        contsnap.detach(task)
        return await contsnap.loads(snapshot)  # type: ignore[no-any-return]

    monkeypatch.setitem(globals(), "numbers", contsnap.checkpointable(numbers))
    EVENTS.clear()
    assert asyncio.run(scenario()) == "done"
    assert EVENTS == ["numbers: finally"]


async def stops_early(log: TraceLog) -> AsyncGenerator[int, None]:
    try:
        yield 1
        return
    finally:
        await contsnap.checkpoint()
        log.append("finally")


def test_return_in_an_async_generator_whose_finally_awaits() -> None:
    marked = contsnap.checkpointable(stops_early)
    check_coroutine_equivalence(stops_early, marked, (LOG,), [], inside_steps=False)


async def first_number() -> None:
    async for n in numbers():
        raise KeyError(n)


def first_item() -> Iterator[int]:
    for n in items():
        yield n
        raise KeyError(n)


def items() -> Iterator[int]:
    try:
        yield 1
        yield 2
    finally:
        EVENTS.append("numbers: finally")


@pytest.mark.parametrize("function", [first_number, first_item], ids=["async for", "for"])
def test_an_exception_leaving_a_loop_closes_the_loops_generator_on_the_way(
    function: Callable[[], Any],
) -> None:
    for variant in (function, contsnap.checkpointable(function)):
        EVENTS.clear()
        made = variant()
        try:
            if inspect.iscoroutine(made):
                made.send(None)
            else:
                next(made)
                next(made)
        except KeyError:
            EVENTS.append("KeyError reached the caller")
        assert EVENTS == ["numbers: finally", "KeyError reached the caller"], variant


@contsnap.checkpointable
async def recovering(log: list[str]) -> str:
    try:
        await contsnap.checkpoint()
    except ValueError:
        log.append("handled")
        return "recovered"
    finally:
        log.append("finally")
    return "not thrown into"


def moved(coro: Any) -> Any:
    restored = contsnap.loads(contsnap.dumps(coro))
    contsnap.detach(coro)
    return restored


@pytest.mark.xfail(strict=False, reason=THROW_INTO_RESTORED_COROUTINE)
def test_throw_and_close_reach_the_handlers_of_a_restored_coroutine() -> None:
    log: list[str] = []
    coro = recovering(log)
    coro.send(None)
    with pytest.raises(StopIteration) as done:
        moved(coro).throw(ValueError("x"))
    assert (done.value.value, log) == ("recovered", ["handled", "finally"])
    log.clear()
    coro = recovering(log)
    coro.send(None)
    moved(coro).close()
    assert log == ["finally"]


@contsnap.checkpointable
async def last_checkpoint() -> str:
    # a foreign await, no safe point: asked there, the task ends without parking (asked
    # while it waits at a checkpoint, it would park there as the wait ends)
    await asyncio.sleep(0)
    return "done"


def test_pause_gives_up_when_the_task_ends_first() -> None:
    async def scenario() -> str:
        task = asyncio.ensure_future(last_checkpoint())
        await asyncio.sleep(0)  # at its sleep; the pause request comes before it resumes
        pausing = asyncio.current_task()
        assert pausing is not None

        async def watchdog() -> None:
            for _ in range(20):  # turns of the loop: task ended long before
                await asyncio.sleep(0)
            pausing.cancel()

        guard = asyncio.ensure_future(watchdog())
        try:
            await contsnap.pause(task)
        except contsnap.CheckpointError:
            return "refused: the task has finished"
        except asyncio.CancelledError:
            return "still waiting"
        finally:
            guard.cancel()
        return "paused"

    assert asyncio.run(scenario()) == "refused: the task has finished"


class Releasing:
    @contsnap.checkpointable
    async def __aenter__(self) -> Releasing:
        return self

    @contsnap.checkpointable
    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        await contsnap.checkpoint()  # say, release something
        return True


@contsnap.checkpointable
async def swallowing() -> str:
    async with Releasing():
        raise KeyError("k")
    return "swallowed"


def test_an_aexit_that_awaits_while_handling_an_exception_can_be_dumped() -> None:
    coro = swallowing()
    coro.send(None)  # paused inside __aexit__, the KeyError passing through
    with pytest.raises(StopIteration) as done:
        moved(coro).send(None)
    assert done.value.value == "swallowed"


async def eleven(n: int) -> int:
    await contsnap.checkpoint()
    return 11


def yield_in_walrus() -> Generator[None, int, int]:
    b = 1
    return max(b, (b := (yield)))


async def await_after_walrus() -> int:
    b = 9
    return max(b, await eleven(b := 0) - 2)


@pytest.mark.parametrize(
    ("function", "expected"),
    [(yield_in_walrus, 1), (await_after_walrus, 9)],  # max(1, sent 0) and max(9, 11 - 2)
    ids=["yield", "await"],
)
def test_a_local_read_before_a_walrus_keeps_its_value(
    function: Callable[[], Any], expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(globals(), "eleven", contsnap.checkpointable(eleven))

    def result(made: Any) -> Any:
        made.send(None)
        with pytest.raises(StopIteration) as done:
            made.send(0)
        return done.value.value

    assert result(function()) == expected
    assert result(contsnap.checkpointable(function)()) == expected
