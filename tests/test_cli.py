"""``contsnap show`` and ``contsnap run``."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

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
    from contsnap._decorator import function_info
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
