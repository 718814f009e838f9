"""Functions that travel by value (defined in a script or a notebook cell): the record
of the function carries everything restore needs, in another process too."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import contsnap
from contsnap import _info
from contsnap._registry import STATE

SCRIPT = """
import asyncio, sys, contsnap

@contsnap.checkpointable
async def countdown(n, log):
    while n:
        log.append(n)
        await contsnap.checkpoint()
        n -= 1
    return log

@contsnap.checkpointable
async def ticks(n):
    for i in range(n):
        await contsnap.checkpoint()
        yield i * i

@contsnap.checkpointable
async def consume(n):
    seen = []
    async for value in ticks(n):
        seen.append(value)
    return seen

def run_until(coro, steps):
    for _ in range(steps):
        coro.send(None)
    return coro

if __name__ == "__main__":
    which = sys.argv[1]
    if which == "native":
        print(asyncio.run(countdown(4, [])), asyncio.run(consume(4)))
    else:
        coros = [run_until(countdown(4, []), 2), run_until(consume(4), 3)]
        sys.stdout.buffer.write(contsnap.dumps(coros))
"""

RESUME = """
import asyncio, sys, contsnap

async def finish(coro):
    return await coro

coros = contsnap.loads(sys.stdin.buffer.read())
print(*(asyncio.run(finish(coro)) for coro in coros))
"""


def _run(args: list[str], blob: bytes | None = None) -> bytes:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, *args], input=blob, capture_output=True, check=True, env=env
    ).stdout


def test_script_coroutines_restore_in_another_process(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    native = _run([str(script), "native"])
    blob = _run([str(script), "save"])
    try:
        resumed = _run(["-c", RESUME], blob)
    except subprocess.CalledProcessError as exc:
        pytest.fail(exc.stderr.decode())
    assert native.split() and resumed == native


def _nested_functions() -> list[Any]:
    @contsnap.checkpointable
    async def waits(n):
        await contsnap.checkpoint()
        return n

    @contsnap.checkpointable
    async def agen(n):
        for i in range(n):
            await contsnap.checkpoint()
            yield i

    @contsnap.checkpointable
    def gen(n):
        total = yield n
        yield from range(total)

    return [waits, agen, gen]


@pytest.mark.parametrize("fn", _nested_functions(), ids=lambda fn: fn.__name__)
def test_by_value_record_keeps_every_field(fn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    info = fn.__contsnap__
    with STATE.fresh("contsnap._info._BY_NAME"):  # as in a process that lacks the function
        copy = _info._info_by_value(_info._pickle_by_value(info))
    assert copy is not info
    fresh = _info.FRESH_CODE_AT
    assert _info.encode_record(copy)[:fresh] == _info.encode_record(info)[:fresh]
    assert _info.encode_record(copy)[fresh + 1 :] == _info.encode_record(info)[fresh + 1 :]
    assert copy.labels == info.labels
    assert {spec.kind for spec in copy.labels.values()} == (
        {"yield"}
        if fn.__name__ == "gen"
        else {"await", "yield"}
        if "agen" in fn.__name__
        else {"await"}
    )
    assert copy.resume_code == info.resume_code


def test_a_record_written_before_anext_of_still_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    # by-value records of contsnap before the native async for wrote five fields a label
    waits = _nested_functions()[0]
    info = waits.__contsnap__
    encode = _info.encode_labels
    monkeypatch.setattr(
        _info, "encode_labels", lambda labels: {k: v[:5] for k, v in encode(labels).items()}
    )
    old = _info._pickle_by_value(info)
    monkeypatch.undo()
    with STATE.fresh("contsnap._info._BY_NAME"):
        copy = _info._info_by_value(old)
    assert copy.labels == info.labels
    assert all(spec.anext_of is None for spec in copy.labels.values())
    with pytest.raises(ValueError, match="fields"):
        _info.decode_labels({1: (3,)})


RECURSIVE = """
import sys, contsnap

@contsnap.checkpointable
def walk(tree):
    if isinstance(tree, int):
        yield tree
        return
    for child in tree:
        yield from walk(child)

@contsnap.checkpointable
def ping(n):
    yield ("ping", n)
    if n:
        yield from pong(n - 1)

@contsnap.checkpointable
def pong(n):
    yield ("pong", n)
    if n:
        yield from ping(n - 1)

def deep(n):
    tree = 0
    for i in range(n):
        tree = (i, tree)
    return tree

def both():
    return [walk(deep(300)), ping(7)]

if __name__ == "__main__":
    if sys.argv[1] == "native":
        print([list(gen) for gen in both()])
        sys.exit()
    gens = both()
    firsts = [next(gen) for gen in gens]
    for _ in range(150):
        next(gens[0])
    if sys.argv[1] == "same":
        copies = contsnap.loads(contsnap.dumps(gens))
        print([[first, *gen] for first, gen in zip(firsts, copies)])
    else:
        sys.stdout.buffer.write(contsnap.dumps((firsts, gens)))
"""

RESUME_LISTS = """
import sys, contsnap
firsts, gens = contsnap.loads(sys.stdin.buffer.read())
print([[first, *gen] for first, gen in zip(firsts, gens)])
"""


def test_recursive_script_generators_travel_by_value(tmp_path: Path) -> None:
    """A function of a script that calls itself (or its partner) is in its own by-value
    record's globals: saving it must not recurse for ever."""
    script = tmp_path / "walk.py"
    script.write_text(RECURSIVE)
    native = _run([str(script), "native"]).decode()
    same = _run([str(script), "same"]).decode()
    blob = _run([str(script), "save"])
    other = _run(["-c", RESUME_LISTS], blob).decode()
    assert same == other
    walked, pinged = ast.literal_eval(same)
    native_walked, native_pinged = ast.literal_eval(native)
    assert walked == [native_walked[0], *native_walked[151:]]
    assert pinged == native_pinged


def test_a_script_generator_using_a_context_variable_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    """A ContextVar global of a script cannot travel with the code carried by value: the
    refusal names it (it was cloudpickle's bare "cannot pickle 'ContextVar' object")."""
    script = tmp_path / "script.py"
    script.write_text(
        "import contextvars, contsnap\n"
        "CV = contextvars.ContextVar('request_id', default=0)\n"
        "@contsnap.checkpointable\n"
        "def g():\n"
        "    CV.set(5)\n"
        "    yield CV.get()\n"
        "    yield CV.get()\n"
        "x = g()\n"
        "next(x)\n"
        "try:\n"
        "    contsnap.dumps(x)\n"
        "except contsnap.NotCheckpointableError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "the context variable 'request_id', a global of __main__, cannot be carried" in out
