"""Old snapshots keep loading when modules move: every module path a payload can name.

A payload names a class or function by ``(module, qualname)``. `PAYLOAD_NAMES` lists every
one of contsnap's that a payload can hold: the reconstructors its reducers return, the
extension codes' functions (see tests/test_blobs.py), and the classes of the records the
layers save (durable jobs, actors, web pages, Celery tasks). The tests check that each
resolves, that the reducers found in the source and the names real payloads use are all
listed (so a new one cannot be forgotten), and that every path a move left behind
(``contsnap._moved.MOVED``) still finds the names that went elsewhere.
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import importlib
import io
import itertools
import pickle
import pickletools
import pkgutil
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import contsnap
from contsnap import _moved, _snapshot

#: every (module, qualname) of contsnap that a payload can name
PAYLOAD_NAMES: frozenset[tuple[str, str]] = frozenset(
    {
        # the public API (contsnap's public objects say __module__ == "contsnap")
        ("contsnap", "Effect"),
        ("contsnap", "NotCheckpointableError"),
        ("contsnap", "Queue"),
        ("contsnap", "checkpoint"),
        # capture and restore of frames (several are also extension codes 240-253)
        ("contsnap._snapshot", "FrameState"),
        ("contsnap._snapshot", "range_iterator"),
        ("contsnap._snapshot", "rematch"),
        ("contsnap._snapshot", "function_at"),
        ("contsnap._snapshot", "generator_at"),
        ("contsnap._snapshot", "_Box"),
        ("contsnap._snapshot", "_Chain"),
        ("contsnap._snapshot", "_chain_parts"),
        ("contsnap._snapshot", "_dead_reference"),
        ("contsnap._snapshot", "_main_globals"),
        ("contsnap._snapshot", "_make_cell"),
        ("contsnap._snapshot", "_no_traceback"),
        ("contsnap._snapshot", "_session_globals"),
        ("contsnap._snapshot", "_set_cell"),
        ("contsnap._snapshot", "_weak_reference"),
        ("contsnap._snapshot", "bound_method"),
        ("contsnap._snapshot", "module_global"),
        ("contsnap._snapshot", "module_attribute"),
        ("contsnap._snapshot", "closed_generator"),
        ("contsnap._snapshot", "closed_generator_by_name"),
        ("contsnap._snapshot", "context_var"),
        ("contsnap._snapshot", "generator_by_name"),
        ("contsnap._snapshot", "generator_from_payload"),
        ("contsnap._snapshot", "new_generator"),
        ("contsnap._snapshot", "rebuild_exception"),
        ("contsnap._snapshot", "set_chain_state"),
        ("contsnap._snapshot", "set_exception_state"),
        ("contsnap._snapshot", "set_generator_state"),
        # state setters of functions saved by value, and in-process references
        ("contsnap._snapshot", "set_function_state"),
        ("contsnap._snapshot", "set_main_function_state"),
        ("contsnap._snapshot", "_local_ref"),
        # function records
        ("contsnap._info", "_InfoRef"),
        ("contsnap._info", "_info_by_name"),
        ("contsnap._info", "_info_by_value"),
        # objects that look into others
        ("contsnap._views", "SetIteration"),
        ("contsnap._views", "rebuild_dict_iterator"),
        ("contsnap._views", "rebuild_dict_view"),
        ("contsnap._views", "rebuild_groupby"),
        ("contsnap._views", "rebuild_memoryview"),
        ("contsnap._views", "rebuild_ndarray"),
        ("contsnap._views", "rebuild_set_iterator"),
        ("contsnap._views", "set_itertool_state"),
        # resources, and what generated code holds
        ("contsnap._resources", "restore_resource"),
        ("contsnap._resources", "Unrestored"),
        ("contsnap._runtime", "ANext"),
        ("contsnap._runtime", "AsyncIterator"),
        ("contsnap._runtime", "AwaitGenerator"),
        ("contsnap._runtime", "ContextManagerStep"),
        ("contsnap._runtime", "ContextManagerThrow"),
        ("contsnap._runtime", "coroutine_await"),
        ("contsnap._runtime", "resumed_await"),
        ("contsnap._runtime", "END"),
        ("contsnap._runtime", "ForIterator"),
        ("contsnap._runtime", "YieldFromIterator"),
        ("contsnap._runtime", "PRIME"),
        ("contsnap._runtime", "Reattach"),
        ("contsnap._runtime", "UNBOUND"),
        ("contsnap._aio", "QueueGet"),
        ("contsnap._aio", "Sleep"),
        # a by-value function of a hooked module holds mark_all's decorator
        ("contsnap._marking._plan", "mark"),
        # the layers' records
        ("contsnap.actors", "ActorRef"),
        ("contsnap.actors", "Crash"),
        ("contsnap.actors", "_mailbox"),
        ("contsnap.web._pages", "Page"),
        ("contsnap.web", "Answer"),
        ("contsnap.web", "Ask"),
        ("contsnap.web", "Field"),
        ("contsnap.web", "Form"),
        ("contsnap.web._forms", "_Choice"),
        ("contsnap.web._forms", "_AwaitAnswer"),
        ("contsnap.web._forms", "_Resumed"),
        ("contsnap.integrations.celery", "_Attempts"),
        # round-trip test mode (payloads that live only within one test process); its
        # _Driven is _runtime.AwaitGenerator now
        ("contsnap._roundtrip", "_Driven"),
        ("contsnap._roundtrip", "wrap"),
        ("contsnap.testing._log", "_find_log"),
        ("contsnap.testing", "Send"),
        ("contsnap.testing", "Throw"),
        ("contsnap.testing", "Close"),
    }
)

_OPTIONAL = {"contsnap.web", "contsnap.integrations"}  # need extras (celery, ...)


def _resolve(module: str, qualname: str) -> Any:
    unpickler = _moved.Unpickler(io.BytesIO(b""))
    return unpickler.find_class(module, qualname)


def test_every_name_a_payload_can_name_resolves() -> None:
    for module, qualname in sorted(PAYLOAD_NAMES):
        if module.startswith("contsnap.integrations"):
            pytest.importorskip("celery")
        obj = _resolve(module, qualname)
        assert obj is not None, (module, qualname)


def _contsnap_modules() -> Iterator[types.ModuleType]:
    for info in pkgutil.walk_packages(contsnap.__path__, "contsnap."):
        try:
            yield importlib.import_module(info.name)
        except ImportError:
            # an optional dependency is missing: that module's names are checked where it is
            assert any(info.name.startswith(p) for p in _OPTIONAL), info.name


def _reconstructors(module: types.ModuleType) -> Iterator[tuple[str, str]]:
    """What the reducers of ``module`` return as the callable (or global name) to load."""
    tree = ast.parse(Path(str(module.__file__)).read_text())
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        if not (
            fn.name in ("__reduce__", "__reduce_ex__", "reducer_override")
            or fn.name.startswith(("_reduce", "reduce_"))
        ):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, ast.Return) or node.value is None:
                continue
            value = node.value
            if isinstance(value, ast.Tuple) and value.elts:
                for element in value.elts[:1] + value.elts[5:6]:  # the callable, state setter
                    if isinstance(element, ast.Name) and element.id in vars(module):
                        obj = vars(module)[element.id]
                        yield obj.__module__, obj.__qualname__


def test_the_reconstructors_in_the_source_are_all_listed() -> None:
    found = {
        name
        for module in _contsnap_modules()
        for name in _reconstructors(module)
        if name[0].startswith("contsnap")
    }
    assert len(found) > 25  # the scan sees the reducers
    assert found - PAYLOAD_NAMES == set()


def _names_in(payload: bytes) -> set[tuple[str, str]]:
    """The globals a pickle names (memoised strings followed: a module named twice is
    pushed the second time from the memo)."""
    named: set[tuple[str, str]] = set()
    pushed: list[Any] = []
    memo: dict[int, Any] = {}
    for opcode, arg, _pos in pickletools.genops(payload):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            pushed.append(arg)
        elif opcode.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif opcode.name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif opcode.name == "STACK_GLOBAL":
            module, name = pushed[-2], pushed[-1]
            assert isinstance(module, str) and isinstance(name, str)
            named.add((module, name))
            pushed.append(None)
        elif opcode.name == "GLOBAL":
            module, _, name = arg.partition(" ")
            named.add((module, name))
            pushed.append(None)
        else:
            pushed.append(None)
    return {name for name in named if name[0].startswith("contsnap")}


_VAR: contextvars.ContextVar[int] = contextvars.ContextVar("_VAR", default=0)


@contsnap.checkpointable
def _sampler(limit: int) -> Any:
    counter = itertools.count()
    seen = {"a": 1, "b": 2}
    keys = iter(seen)
    next(keys)
    members = iter({1, 2, 3})
    view = memoryview(bytearray(b"abcd"))[1:3]
    groups = itertools.groupby("aabbc")
    target = _sampler
    ref = weakref.ref(target)
    var = _VAR
    total = 0

    def add(n: int) -> None:
        nonlocal total
        total += n

    try:
        raise ValueError("held")
    except ValueError as exc:
        while total < limit:
            add((yield (next(counter), exc, keys, members, view, groups, ref, var)) or 1)
    yield from _inner()


@contsnap.checkpointable
def _inner() -> Any:
    yield "inner"


@contsnap.checkpointable
async def _waiter(queue: contsnap.Queue) -> Any:
    await contsnap.checkpoint()
    await contsnap.sleep(0)
    return await queue.get()


def _sample_payloads() -> Iterator[bytes]:
    gen = _sampler(3)
    next(gen)
    yield _snapshot.to_payload(gen)[0]
    yield from (_snapshot.to_payload(g)[0] for g in (_sampler(2),))  # unstarted
    chained = _sampler(1)
    next(chained)
    chained.send(5)  # now in the yield from
    yield _snapshot.to_payload(chained)[0]
    done = _inner()
    list(done)
    yield _snapshot.to_payload(done)[0]
    coro = _waiter(contsnap.Queue([1]))
    coro.send(None)
    yield _snapshot.to_payload(coro)[0]
    coro.close()
    yield _snapshot.to_payload(contsnap.effect("mail", {"to": "x"}))[0]


def test_the_names_real_payloads_use_are_all_listed() -> None:
    used = set().union(*map(_names_in, _sample_payloads()))
    assert {("contsnap._views", "rebuild_memoryview"), ("contsnap", "Queue")} <= used
    assert used - PAYLOAD_NAMES == set()


def test_the_records_of_the_layers_name_only_listed_paths(tmp_path: Path) -> None:
    from contsnap import actors

    records: list[Any] = [
        actors.ActorRef("system", "worker"),
        actors.Mailbox("system", "worker", [1]),
        actors.Crash("worker", "fresh", "ValueError", 0.0),
    ]
    try:
        from contsnap.web import _forms, _pages

        records += [_pages.Page(None, _forms.Ask("<p>?</p>"), None)]
    except ImportError:  # pragma: no cover - web needs no extra today
        pass
    try:
        from contsnap.integrations import celery

        records.append(celery._Attempts(crashes=1, history=["x"]))
    except ImportError:
        pass
    for record in records:
        names = _names_in(_snapshot.to_payload(record)[0])
        assert names - PAYLOAD_NAMES == set(), record


def test_every_name_that_moved_loads_from_its_old_path() -> None:
    checked = 0
    for old, places in _moved.MOVED.items():
        for place in places:
            module = importlib.import_module(place)
            for name, obj in vars(module).items():
                if getattr(obj, "__module__", None) != place or name.startswith("__"):
                    continue
                if not isinstance(obj, (type, types.FunctionType)):
                    continue
                assert _resolve(old, name) is obj, (old, name, place)
                checked += 1
    assert checked > 100


def test_a_payload_naming_an_old_path_loads() -> None:
    from contsnap._checkpoints import _files
    from contsnap._marking import _plan

    for old, name, now in [
        ("contsnap._hook", "mark", _plan.mark),
        ("contsnap._files", "CheckpointFiles", _files.CheckpointFiles),
    ]:
        data = f"c{old}\n{name}\n.".encode()  # protocol 0: GLOBAL module name
        assert _snapshot.from_payload(data, old_paths=True) is now
        # a payload of the current format names only current paths: not mapped
        with pytest.raises(contsnap.CheckpointError, match=r"ModuleNotFoundError|AttributeError"):
            _snapshot.from_payload(data)
        with pytest.raises((AttributeError, ModuleNotFoundError)):
            pickle.loads(data)  # plain pickle does not know the move


def test_the_unpickler_leaves_names_that_did_not_move_alone() -> None:
    assert _moved.new_place("contsnap._snapshot", "new_generator") == (
        "contsnap._snapshot",
        "new_generator",
    )
    assert _resolve("asyncio", "sleep") is asyncio.sleep
