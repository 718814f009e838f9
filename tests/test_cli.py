"""``contsnap show`` and ``contsnap run``."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contsnap.__main__ import main

_names = itertools.count()

MODULE = """\
    def counter(n):
        total = 0
        for i in range(n):
            total += yield i
        return total


    class Box:
        def items(self, k):
            yield k


    def plain():
        return 1


    def refused():
        _cs_mine = 1
        yield _cs_mine
    """


@pytest.fixture
def pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package on sys.path with ``mod`` (MODULE) and ``use`` importing it; forgotten after."""
    name = f"cli_{os.getpid()}_{next(_names)}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "mod.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    meta_path = list(sys.meta_path)
    yield name
    sys.meta_path[:] = meta_path
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def test_show_prints_both_variants_under_the_real_name(
    pkg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", f"{pkg}/mod.py"]) == 0
    out = capsys.readouterr().out
    assert "# mod.counter (" in out and "mod.py:1)" in out
    assert "def counter(n):" in out and "def counter(n, _cs_box):" in out
    assert "def items(self, k):" in out
    assert "# -- fresh variant" in out and "# -- resume variant" in out
    assert "__contsnap_fn__" not in out and "__contsnap_fresh__" not in out
    assert "plain" not in out
    assert "mod.refused" in out and "not transformed" in out and "reserved" in out


def test_show_one_function_of_a_module_by_name(
    pkg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", f"{pkg}.mod:Box.items", "--variant", "fresh"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {pkg}.mod.Box.items (")
    assert "def items(self, k):\n    yield k\n" in out
    assert "counter" not in out and "_cs_box" not in out and "variant" not in out
    # a class name selects its methods
    assert main(["show", f"{pkg}.mod:Box", "--variant", "resume"]) == 0
    assert "def items(self, _cs_box):" in capsys.readouterr().out


def test_show_lists_the_generator_lambdas_mark_all_marks(
    pkg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(f"{pkg}/lams.py")
    path.write_text(
        "pair = [lambda: (yield 1), lambda a=2: (yield a)]\n"
        "square = lambda n: n * n\n"
        "def outer(q):\n"
        "    return lambda: (yield q)\n"
        "class K:\n"
        "    f = lambda self: (yield self)\n"
    )
    assert main(["show", str(path), "--variant", "fresh"]) == 0
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if line.startswith("# ")]
    assert [h.split(" (")[0] for h in heads] == [
        "# lams.<lambda>",
        "# lams.<lambda>",
        "# lams.outer.<locals>.<lambda>",
        "# lams.K.<lambda>",
    ]
    assert "lams.py:1)" in heads[0] and "lams.py:1)" in heads[1] and "lams.py:4)" in heads[2]
    assert "(yield 1)" in out and "(yield a)" in out and "(yield q)" in out
    assert "n * n" not in out  # not a generator
    assert main(["show", f"{path}:K", "--variant", "fresh"]) == 0
    assert "(yield self)" in capsys.readouterr().out


def test_show_does_not_run_the_module(pkg: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(f"{pkg}/boom.py")
    path.write_text("open('ran.txt', 'w').close()\n\ndef g():\n    yield 1\n")
    assert main(["show", str(path)]) == 0
    assert "def g():" in capsys.readouterr().out
    assert not Path("ran.txt").exists()


def test_show_reports_what_it_cannot_find(pkg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", f"{pkg}/mod.py:nothing"]) == 1
    assert "no generator function named 'nothing'" in capsys.readouterr().err
    assert main(["show", "no/such/file.py"]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["show", f"{pkg}.missing"]) == 1
    assert "missing" in capsys.readouterr().err


SCRIPT = """\
    import sys
    from {pkg} import mod
    print("args", sys.argv[1:])
    from contsnap._marking._decorator import function_info
    print("marked", function_info(mod.counter) is not None)
    print("name", __name__)
    """


@pytest.mark.filterwarnings("ignore:contsnap:RuntimeWarning")
def test_run_runs_a_script_with_the_hook(pkg: str, capsys: pytest.CaptureFixture[str]) -> None:
    Path("script.py").write_text(textwrap.dedent(SCRIPT.format(pkg=pkg)))
    argv, meta_path = sys.argv[:], list(sys.meta_path)
    assert main(["run", "--hook", f"other,{pkg}", "--mark-all", "script.py", "-x", "1"]) == 0
    out = capsys.readouterr().out
    assert "args ['-x', '1']" in out and "marked True" in out and "name __main__" in out
    assert sys.argv == argv and sys.meta_path == meta_path  # the hook is gone again


def test_run_without_mark_all_leaves_undecorated_functions(
    pkg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("script.py").write_text(textwrap.dedent(SCRIPT.format(pkg=pkg)))
    assert main(["run", "--hook", pkg, "script.py"]) == 0
    assert "marked False" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:contsnap:RuntimeWarning")
def test_run_a_module(pkg: str, capsys: pytest.CaptureFixture[str]) -> None:
    Path(pkg, "main.py").write_text(textwrap.dedent(SCRIPT.format(pkg=pkg)))
    assert main(["run", "--hook", pkg, "--mark-all", "-m", f"{pkg}.main", "a"]) == 0
    out = capsys.readouterr().out
    assert "args ['a']" in out and "marked True" in out and "name __main__" in out


def test_show_keeps_the_signature_as_written(pkg: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(f"{pkg}/sig.py")
    path.write_text(
        "import contsnap\n"
        "@contsnap.checkpointable\n"
        "def count(limit=3, *, step: int = 1, label='x'):\n"
        "    yield limit\n"
        "class Box:\n"
        "    async def items(self, n: int = 2, /, *rest: str, **kw) -> None:\n"
        "        yield n\n"
    )
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "def count(limit=3, *, step: int=1, label='x'):\n    yield limit\n" in out
    assert "async def items(self, n: int=2, /, *rest: str, **kw) -> None:\n    yield n\n" in out
    # the resume variant's signature is its own: what a restore calls
    assert "def count(limit, _cs_box):" in out and "async def items(self, _cs_box):" in out
    assert "__contsnap_fn__" not in out and "__contsnap_fresh__" not in out


def _contsnap(
    *args: str, cwd: Path, stdout: Any = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contsnap", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_show_into_a_closed_pipe_stops_quietly(pkg: str, tmp_path: Path) -> None:
    # `contsnap show ... | head`: the reader is gone before contsnap writes
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = _contsnap("show", f"{pkg}/mod.py", cwd=tmp_path, stdout=writer)
    finally:
        os.close(writer)
    assert done.stderr == ""
    assert done.returncode == 141


def test_a_user_error_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = _contsnap("run", "no_such_script.py", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "contsnap run: no_such_script.py: no such file (give the path of a Python script, "
        "or -m MODULE to run a module)"
    ]
    done = _contsnap("run", "-m", "no_such_module_here", cwd=tmp_path)
    assert done.stderr.splitlines() == [
        "contsnap run: no module named 'no_such_module_here' (run from the directory that "
        "holds it, or put it on PYTHONPATH)"
    ]
    # a contsnap error raised deep inside: one line, or its traceback with --debug
    (tmp_path / "bad.ckpt").write_bytes(b"CSNP" + b"\0" * 40)
    done = _contsnap("inspect", "bad.ckpt", cwd=tmp_path)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("contsnap inspect: bad.ckpt: ")


CHANGING_JOB = """\
import os, signal
import contsnap

@contsnap.checkpointable
def work():
    total = 0
    for i in range(5):
        total += i
        if i == 2 and not os.path.exists("stopped-once"):
            open("stopped-once", "w").close()
            os.kill(os.getpid(), signal.SIGTERM)
        yield i
    return total

if __name__ == "__main__":
    print(contsnap.run(work, checkpoint="job.ckpt"))
"""


def test_resume_into_changed_code_is_one_line_with_the_fix(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(CHANGING_JOB)
    assert _contsnap("run", "job.py", cwd=tmp_path).returncode == 75
    script.write_text(CHANGING_JOB.replace("total += i\n", "total += 2 * i\n"))
    done = _contsnap("resume", "job.ckpt", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("contsnap resume: __main__.work (")
    assert "changed since the snapshot was taken" in lines[0]
    assert "register a migration (@contsnap.migration)" in lines[0]
    debug = _contsnap("--debug", "resume", "job.ckpt", cwd=tmp_path)
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert debug.stderr.splitlines()[-1].startswith("contsnap.CodeChangedError: __main__.work")
    # after the command name too
    assert _contsnap("resume", "--debug", "job.ckpt", cwd=tmp_path).stderr.startswith("Traceback")


def test_resume_with_the_wrong_key_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "job.py").write_text(CHANGING_JOB)
    monkeypatch.setenv("CONTSNAP_KEY", "the key it was saved with")
    assert _contsnap("run", "job.py", cwd=tmp_path).returncode == 75
    monkeypatch.setenv("CONTSNAP_KEY", "another key")
    done = _contsnap("resume", "job.ckpt", cwd=tmp_path)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("contsnap resume: ") and "Traceback" not in done.stderr


def test_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    for command, words in (
        ("show", ["MODULE_OR_FILE", "--variant", "resume variant"]),
        ("run", ["--hook", "--mark-all", "script.py"]),
    ):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        for word in words:
            assert word in out, (command, word)


def test_run_from_the_command_line(pkg: str, tmp_path: Path) -> None:
    Path("script.py").write_text(textwrap.dedent(SCRIPT.format(pkg=pkg)))
    out = subprocess.run(
        [sys.executable, "-m", "contsnap", "run", "--hook", pkg, "--mark-all", "script.py", "z"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "args ['z']" in out.stdout and "marked True" in out.stdout


def test_inspect_reads_code_without_importing_libcst(tmp_path: Path) -> None:
    import blob_programs

    import contsnap

    gen = blob_programs.running_total(3)
    next(gen)
    (tmp_path / "g.snap").write_bytes(contsnap.dumps(gen))
    code = (
        "import sys; from contsnap._durable import _cli; "
        f"_cli.inspect_file({str(tmp_path / 'g.snap')!r}); "
        "print('libcst imported' if 'libcst' in sys.modules else 'no libcst')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "code matches" in out.stdout
    assert out.stdout.strip().endswith("no libcst")


CONDITIONAL = """\
    import contsnap

    FAST = {fast}

    if FAST:

        @contsnap.checkpointable
        def steps(n):
            for i in range(n):
                yield i

    else:

        @contsnap.checkpointable
        def steps(n):
            for i in range(n):
                yield i * 2
    """


@pytest.mark.parametrize("fast", [True, False])
def test_inspect_finds_a_function_defined_under_if(
    pkg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: bool
) -> None:
    """Either version of a function defined under if/else is the module's own: code matches."""
    import importlib

    import contsnap

    (tmp_path / pkg / "cond.py").write_text(textwrap.dedent(CONDITIONAL.format(fast=fast)))
    gen = importlib.import_module(f"{pkg}.cond").steps(3)
    next(gen)
    (tmp_path / "g.snap").write_bytes(contsnap.dumps(gen))
    assert main(["inspect", str(tmp_path / "g.snap")]) == 0
    assert "code matches" in capsys.readouterr().out
    (tmp_path / pkg / "cond.py").write_text(
        textwrap.dedent(CONDITIONAL.format(fast=fast)).replace("i * 2", "i * 3")
    )
    assert main(["inspect", str(tmp_path / "g.snap")]) == 0
    assert ("code matches" in capsys.readouterr().out) is fast


def test_ls_and_inspect_of_a_store_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store given by its directory: ``ls`` lists its checkpoints, ``inspect`` shows the lease."""
    import contsnap
    from contsnap.stores import FileStore

    @contsnap.checkpointable
    def count(n):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i

    store = FileStore(tmp_path / "jobs")
    gen = count(3)
    next(gen)
    store.put("job-a", contsnap.dumps(gen))
    store.put("plain", b"not a snapshot")
    lease = store.acquire("job-a", 30, owner="runner-7")
    assert main(["ls", str(tmp_path / "jobs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("job-a ")  # "plain" is no checkpoint
    assert " running " in lines[1] and f"runner-7 #{lease.token} " in lines[1]
    assert main(["inspect", f"file://{tmp_path / 'jobs'}", "job-a"]) == 0
    shown = capsys.readouterr().out
    assert f"lease     held by runner-7 (pid {os.getpid()}, host " in shown
    assert f"fencing token {lease.token}, " in shown and "state     running" in shown
    store.release(lease)
    assert main(["inspect", str(tmp_path / "jobs"), "job-a"]) == 0
    assert "state     saved" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "jobs"), "missing"]) == 1
    assert "no key 'missing'" in capsys.readouterr().err
