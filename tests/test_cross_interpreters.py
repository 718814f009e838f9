"""Snapshots moved between real interpreters (issue 18): each of CPython 3.10-3.13 writes
snapshots, every other one loads them. One that names its functions by import path
resumes; one that carries code by value is refused with SnapshotVersionError naming
both versions.

Each interpreter runs from a throwaway venv with libcst and cloudpickle (cached in the
temporary directory between runs) and the repository on PYTHONPATH.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

VERSIONS = ("3.10", "3.11", "3.12", "3.13")
ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

WRITE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import contsnap, blob_programs as bp

@contsnap.checkpointable
def holds_a_lambda():
    step = lambda x: x + 1
    yield step(1)
    yield step(2)

by_name = bp.running_total(5)
next(by_name)
by_name.send(2)
by_value = holds_a_lambda()
next(by_value)
out = sys.argv[2]
open(out + ".by_name", "wb").write(contsnap.dumps(by_name))
open(out + ".by_value", "wb").write(contsnap.dumps(by_value))
"""

READ = """
import json, sys
sys.path.insert(0, sys.argv[1])
import contsnap
found = {}
for path in sys.argv[2:]:
    data = open(path, "rb").read()
    try:
        found[path] = ["resumed", contsnap.loads(data).send(4)]
    except contsnap.SnapshotVersionError as exc:
        found[path] = ["refused", str(exc)]
    except Exception as exc:
        found[path] = ["error", f"{type(exc).__name__}: {exc}"]
print(json.dumps(found))
"""


def _interpreter(version: str) -> str | None:
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    matches = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    return matches[-1] if matches else None


def _venv(version: str, python: str) -> str:
    """A venv of ``python`` with contsnap's dependencies, made once per machine."""
    home = Path(tempfile.gettempdir()) / f"contsnap-xver-{version}"
    ready = home / "ready"
    target = str(home / "bin" / "python")
    if not ready.exists():
        subprocess.run([python, "-m", "venv", "--clear", str(home)], check=True, timeout=300)
        subprocess.run(
            [target, "-m", "pip", "install", "-q", "libcst", "cloudpickle"],
            check=True,
            timeout=600,
            capture_output=True,
        )
        ready.write_text("ok")
    return target


@pytest.fixture(scope="module")
def pythons() -> dict[str, str]:
    found = {v: _interpreter(v) for v in VERSIONS}
    missing = [v for v, path in found.items() if path is None]
    if missing:
        pytest.skip(f"no CPython {', '.join(missing)} under pyenv")
    return {v: _venv(v, path) for v, path in found.items() if path is not None}


def _run(python: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([python, *args], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_snapshots_move_between_every_pair_of_interpreters(
    pythons: dict[str, str], tmp_path: Path
) -> None:
    writer_script = tmp_path / "write_snapshots.py"
    writer_script.write_text(WRITE)
    for version, python in pythons.items():
        _run(python, str(writer_script), str(TESTS), str(tmp_path / version))
    for reader, python in pythons.items():
        paths = [
            str(tmp_path / f"{writer}.{kind}")
            for writer in pythons
            if writer != reader
            for kind in ("by_name", "by_value")
        ]
        found = json.loads(_run(python, "-c", READ, str(TESTS), *paths))
        for writer in pythons:
            if writer == reader:
                continue
            by_name = found[str(tmp_path / f"{writer}.by_name")]
            assert by_name == ["resumed", 6], (writer, reader, by_name)
            outcome, message = found[str(tmp_path / f"{writer}.by_value")]
            assert outcome == "refused", (writer, reader, message)
            assert f"Python {writer}" in message and f"Python {reader}" in message


def test_this_interpreter_is_one_of_them() -> None:
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in VERSIONS
