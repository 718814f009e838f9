"""The IPython extension: ``%contsnap save`` in one kernel, ``%contsnap load`` in a fresh one.

Each kernel is IPython's own ``InteractiveShell`` in a subprocess, so that the
second one shares nothing with the first (two shells in one process share the
singleton and the registered functions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from contsnap._checkpoints._files import write_atomic

pytest.importorskip("IPython")

KERNEL = textwrap.dedent(
    """
    import json, sys
    from traitlets.config import Config
    from IPython.core.interactiveshell import InteractiveShell

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.colors = "nocolor"
    shell = InteractiveShell.instance(config=config)
    results = []
    for cell in json.loads(sys.argv[1]):
        print(f"### {cell}", flush=True)
        outcome = shell.run_cell(cell)
        sys.stdout.flush(); sys.stderr.flush()
        results.append(outcome.success)
    print("### results " + json.dumps(results))
    """
)


def kernel(tmp_path: Path, *cells: str, key: str | None = None) -> tuple[list[bool], str]:
    """Run ``cells`` in a fresh InteractiveShell; each cell's success, and everything shown."""
    env = {k: v for k, v in os.environ.items() if k != "CONTSNAP_KEY"}
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    if key is not None:
        env["CONTSNAP_KEY"] = key
    out = subprocess.run(
        [sys.executable, "-c", KERNEL, json.dumps(["%load_ext contsnap", *cells])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    shown = out.stdout + out.stderr
    marker = "### results "
    results = json.loads(shown[shown.index(marker) + len(marker) :].splitlines()[0])
    assert results[0], shown  # %load_ext contsnap
    return results[1:], shown


def row(shown: str, name: str) -> list[str]:
    """The report line about variable ``name``, split into words."""
    rows = [line.split() for line in shown.splitlines() if line.startswith("  ")]
    return next(words for words in rows if words[0] == name)


DEFINE = """
import contsnap

totals = []

@contsnap.checkpointable
def running_total(limit):
    total = 0
    for i in range(limit):
        total += i
        totals.append(total)
        yield total

g = running_total(10)
print("values", next(g), next(g), next(g))
shared = {"gen": g, "totals": totals}
"""


def test_a_paused_generator_continues_in_a_fresh_kernel(tmp_path: Path) -> None:
    ok, shown = kernel(tmp_path, DEFINE, "%contsnap save session.snap")
    assert all(ok), shown
    assert "values 0 1 3" in shown
    assert "contsnap: saved 4 variables to session.snap" in shown
    assert row(shown, "g") == ["g", "generator", "running_total,", "paused", "at", "line", "11"]

    ok, shown = kernel(
        tmp_path,
        "%contsnap load session.snap",
        "print('next', next(g), totals)",
        # one snapshot: the dict and the generator still share the same objects
        "print('shared', shared['gen'] is g, shared['totals'] is totals)",
        # the restored function runs in the notebook's namespace, not in a copy of it
        "totals.append('mine'); print('after', next(g), totals[-2:])",
        # and makes generators that can be saved again
        "import contsnap; h = running_total(3); next(h); next(h); print('again', list(contsnap.loads(contsnap.dumps(h))))",
    )
    assert all(ok), shown
    assert "contsnap: loaded 4 variables from session.snap" in shown
    assert "next 6 [0, 1, 3, 6]" in shown
    assert "shared True True" in shown
    assert "after 10 ['mine', 10]" in shown
    assert "again [3]" in shown


def test_async_generators_and_coroutines_are_saved_too(tmp_path: Path) -> None:
    define = """
import asyncio, contsnap

@contsnap.checkpointable
async def ticks(n):
    for i in range(n):
        await contsnap.checkpoint()
        yield i

@contsnap.checkpointable
async def total(n):
    return sum([i async for i in ticks(n)])

ag = ticks(5)
print("first", asyncio.run(ag.__anext__()), asyncio.run(ag.__anext__()))
co = total(4)
"""
    ok, shown = kernel(tmp_path, define, "%contsnap save s.snap")
    assert all(ok), shown
    ok, shown = kernel(
        tmp_path,
        "%contsnap load s.snap",
        "import asyncio; print('later', asyncio.run(ag.__anext__()), asyncio.run(co))",
    )
    assert all(ok), shown
    assert "later 2 6" in shown


def test_what_cannot_be_saved_is_listed_and_the_rest_is_saved(tmp_path: Path) -> None:
    define = """
import socket, threading, contsnap

@contsnap.checkpointable
def numbers():
    yield 1
    yield 2

def unmarked():
    yield 1

lock = threading.Lock()
sock = socket.socket()
plain = unmarked(); next(plain)
square = lambda x: x * x
g = numbers(); next(g)
"""
    ok, shown = kernel(tmp_path, define, "%contsnap save s.snap", "sock.close()")
    assert all(ok), shown
    refused = shown[shown.index("not saved (3):") :].splitlines()
    assert refused[1].split()[:2] == ["lock", "_thread.lock"]
    assert "register_resource" in refused[1]
    assert refused[2].split()[:2] == ["plain", "generator"]
    assert "is not checkpointable: mark its function" in refused[2]
    assert refused[3].split()[:2] == ["sock", "socket.socket"]
    assert (
        "modules are not saved; import them again after loading: contsnap, socket, threading"
        in shown
    )

    ok, shown = kernel(
        tmp_path,
        "%contsnap load s.snap",
        "print('loaded', square(7), next(g))",
        "print('absent', [name in dir() for name in ('lock', 'sock', 'plain', 'socket')])",
    )
    assert all(ok), shown
    assert "contsnap: loaded 4 variables from s.snap" in shown
    assert [row(shown, name)[:2] for name in ("g", "numbers", "square", "unmarked")] == [
        ["g", "generator"],
        ["numbers", "function"],
        ["square", "function"],
        ["unmarked", "function"],
    ]
    assert "loaded 49 2" in shown
    assert "absent [False, False, False, False]" in shown


def test_ipython_names_are_not_saved(tmp_path: Path) -> None:
    ok, shown = kernel(tmp_path, "x = 1", "x + 1", "_ + 1", "%contsnap save s.snap")
    assert all(ok), shown
    assert "contsnap: saved 1 variable to s.snap" in shown
    assert row(shown, "x") == ["x", "int"]
    assert "not saved" not in shown


def test_a_signed_session_is_refused_with_the_wrong_key(tmp_path: Path) -> None:
    ok, shown = kernel(tmp_path, "x = [1, 2]", "%contsnap save s.snap", key="right key")
    assert all(ok), shown
    assert " bytes, signed)" in shown

    ok, shown = kernel(tmp_path, "%contsnap load s.snap", key="wrong key")
    assert ok == [False]
    assert "contsnap: cannot load s.snap: snapshot signed with key id" in shown
    assert "not among the keys in effect" in shown
    assert "Traceback" not in shown

    ok, shown = kernel(tmp_path, "%contsnap load s.snap", "print('x is', x)", key="right key")
    assert all(ok), shown
    assert "x is [1, 2]" in shown


def test_a_damaged_or_missing_file_gives_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "junk.snap").write_bytes(b"not a snapshot at all")
    ok, shown = kernel(tmp_path, "%contsnap load junk.snap", "%contsnap load missing.snap")
    assert ok == [False, False]
    assert "contsnap: cannot load junk.snap: not a contsnap snapshot" in shown
    assert "contsnap: cannot read missing.snap: [Errno 2]" in shown
    assert "Traceback" not in shown


def test_usage(tmp_path: Path) -> None:
    ok, shown = kernel(
        tmp_path,
        "%contsnap",
        "%contsnap help",
        "%contsnap frobnicate x",
        "%contsnap save",
        "%contsnap load a b",
        "%contsnap save 'unclosed",
        "%unload_ext contsnap",
        "%contsnap help",
    )
    assert ok == [True, True, False, False, False, False, True, False]
    assert shown.count("usage: %contsnap save FILE") == 6
    assert "UsageError: %contsnap: unknown command 'frobnicate'" in shown
    assert "UsageError: %contsnap save: expected one FILE, got 0 arguments" in shown
    assert "UsageError: %contsnap load: expected one FILE, got 2 arguments" in shown
    assert "UsageError: %contsnap: No closing quotation" in shown
    assert "Line magic function `%contsnap` not found" in shown


def test_saving_replaces_the_file_atomically(tmp_path: Path, monkeypatch: Any) -> None:
    target = tmp_path / "s.snap"
    write_atomic(str(target), b"first")
    write_atomic(str(target), b"second")
    assert target.read_bytes() == b"second"

    def crash(src: str, dst: str) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk went away"):
        write_atomic(str(target), b"third")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.snap"]


def test_import_contsnap_does_not_import_ipython() -> None:
    program = (
        "import sys, contsnap; print('IPython' in sys.modules, contsnap.load_ipython_extension)"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("False <function load_ipython_extension")


def test_a_failed_load_leaves_the_namespace_as_it_was(tmp_path: Path) -> None:
    module = tmp_path / "jobs.py"
    module.write_text(
        "import contsnap\n\n@contsnap.checkpointable\ndef steps():\n    yield 1\n    yield 2\n"
    )
    define = "y = 5\ndef f():\n    return y\nimport jobs\ng = jobs.steps(); next(g)"
    ok, shown = kernel(tmp_path, define, "%contsnap save s.snap")
    assert all(ok), shown
    module.unlink()

    ok, shown = kernel(
        tmp_path, "y = 'mine'", "%contsnap load s.snap", "print('kept', y, 'f' in dir())"
    )
    assert ok == [True, False, True], shown
    assert "contsnap: cannot load s.snap: cannot import module 'jobs'" in shown
    assert "kept mine False" in shown


def test_a_changed_file_behind_one_variable_skips_only_what_needs_it(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("one\ntwo\nthree\n")
    (tmp_path / "other.txt").write_text("a\nb\nc\n")
    define = """
import contsnap

@contsnap.checkpointable
def lines(handle):
    for line in handle:
        yield line.strip()

data = open("data.txt")
first = data.readline()
reader = lines(data); next(reader)
holder = {"file": data, "n": 1}
other = lines(open("other.txt")); next(other)
x = [1, 2]
"""
    ok, shown = kernel(tmp_path, define, "%contsnap save s.snap")
    assert all(ok), shown
    (tmp_path / "data.txt").write_text("ONE\nTWO\nTHREE\nFOUR\n")  # changed since the save

    ok, shown = kernel(
        tmp_path,
        "%contsnap load s.snap",
        "print('loaded', x, first.strip(), next(other), next(other))",
        "print('absent', [name in dir() for name in ('data', 'reader', 'holder')])",
    )
    assert all(ok), shown
    assert "contsnap: loaded 4 variables from s.snap" in shown
    assert [row(shown, name)[:2] for name in ("first", "lines", "other", "x")] == [
        ["first", "str"],
        ["lines", "function"],
        ["other", "generator"],
        ["x", "list"],
    ]
    skipped = shown[shown.index("not loaded (3):") :].splitlines()[1:4]
    assert [line.split()[:2] for line in skipped] == [
        ["data", "_io.TextIOWrapper"],
        ["holder", "dict"],
        ["reader", "generator"],
    ]
    for line in skipped:  # one line each: what changed, and no word of generators
        assert "/data.txt' has changed since the snapshot was taken" in line
        reason = line.split(None, 2)[2]
        assert "reading cannot go on where it was" in reason and "generator" not in reason
    assert "loaded [1, 2] one b c" in shown
    assert "absent [False, False, False]" in shown
    assert "Traceback" not in shown
