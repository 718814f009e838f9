"""A snapshot from another Python version: it loads when it names its functions by import
path (no bytecode inside), and is refused, naming both versions, when it carries code by
value. The version is in the signed metadata, so it cannot be edited without the key.

The other version is simulated by sealing with another ``python`` stamp: the suite runs
one interpreter at a time.
"""

from __future__ import annotations

import sys
from typing import Any

import blob_programs as bp
import pytest

import contsnap
from contsnap import _envelope

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"
OTHERS = [v for v in ("3.10", "3.11", "3.12", "3.13") if v != HERE]


@contsnap.checkpointable
def holds_a_lambda():
    step = lambda x: x + 1  # noqa: E731 - a local function travels by value
    yield step(1)
    yield step(2)


def _sealed_on(version: str, gen: Any, monkeypatch: pytest.MonkeyPatch) -> bytes:
    with monkeypatch.context() as patch:
        patch.setattr(_envelope, "PYTHON", version)
        return contsnap.dumps(gen)


@pytest.mark.parametrize("other", OTHERS)
def test_a_snapshot_naming_its_functions_loads_on_another_version(
    other: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = bp.running_total(5)
    next(gen)
    data = _sealed_on(other, gen, monkeypatch)
    meta = contsnap.describe(data)
    assert meta["python"] == other and meta["portable"] is True
    assert contsnap.loads(data).send(4) == 4


@pytest.mark.parametrize("other", OTHERS)
def test_a_snapshot_with_code_by_value_is_refused_on_another_version(
    other: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = holds_a_lambda()
    next(gen)
    data = _sealed_on(other, gen, monkeypatch)
    assert contsnap.describe(data)["portable"] is False
    with pytest.raises(contsnap.SnapshotVersionError) as caught:
        contsnap.loads(data)
    assert f"taken on Python {other}" in str(caught.value)
    assert f"Python {HERE} cannot run" in str(caught.value)
    # the same snapshot on the version that made it
    here = contsnap.dumps(gen)
    assert contsnap.loads(here).send(None) == 3


@pytest.mark.parametrize("library", ["pickle", "cloudpickle"])
def test_a_process_that_never_imported_contsnap_unpickles_a_generator(library: str) -> None:
    """The stream names contsnap's reconstructor in full before any extension code, so
    unpickling imports contsnap (which registers the codes) instead of failing with
    "unregistered extension code 240"."""
    import subprocess
    from pathlib import Path

    pickler = __import__(library)
    gen = bp.running_total(5)
    next(gen)
    gen.send(2)
    data = pickler.dumps(gen)
    tests = str(Path(__file__).parent)
    code = (
        "import pickle, sys; sys.path.insert(0, sys.argv[1]); "
        "assert 'contsnap' not in sys.modules; "
        "g = pickle.loads(sys.stdin.buffer.read()); print(g.send(3))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, tests], input=data, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "5"


FINGERPRINTS = """
import ast, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("fp", sys.argv[1])
fp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fp)
tree = ast.parse(open(sys.argv[2]).read())
print(json.dumps({
    node.name: fp.fingerprint_of(node)
    for node in ast.walk(tree)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
}))
"""


def _other_interpreters() -> list[str]:
    import glob
    import os

    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = []
    for minor in ("10", "11", "12", "13"):
        if f"3.{minor}" == HERE:
            continue
        matches = sorted(glob.glob(f"{root}/versions/3.{minor}.*/bin/python3.{minor}"))
        if matches:
            found.append(matches[-1])
    return found


def test_the_same_source_has_the_same_fingerprint_on_every_python() -> None:
    """A snapshot names its functions by fingerprint: 3.12's ``type_params`` and 3.13's
    shorter ``ast.dump`` must not make the same code look changed on another version."""
    import json
    import subprocess
    from pathlib import Path

    others = _other_interpreters()
    if not others:
        pytest.skip("no other CPython 3.10-3.13 found under pyenv")
    fingerprint_module = str(Path(contsnap.__file__).parent / "_fingerprint.py")
    programs = str(Path(__file__).parent / "test_exactness.py")

    def fingerprints(python: str) -> dict[str, str]:
        out = subprocess.run(
            [python, "-c", FINGERPRINTS, fingerprint_module, programs],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return dict(json.loads(out.stdout))

    here = fingerprints(sys.executable)
    assert len(here) > 20
    for python in others:
        assert fingerprints(python) == here, python
