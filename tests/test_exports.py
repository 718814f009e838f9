"""The public surface: everything in __all__ exists and is named by its public path."""

from __future__ import annotations

import pickle
import subprocess
import sys

import contsnap


def test_all_names_exist() -> None:
    for name in contsnap.__all__:
        assert hasattr(contsnap, name), name


def test_public_objects_report_public_module() -> None:
    for name in contsnap.__all__:
        obj = getattr(contsnap, name)
        if callable(obj):
            assert obj.__module__ == "contsnap", (name, obj.__module__)


def test_errors_subclass_checkpoint_error_and_pickle_by_public_path() -> None:
    for name in contsnap.__all__:
        obj = getattr(contsnap, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, contsnap.CheckpointError)
            assert pickle.loads(pickle.dumps(obj("x"))).args == ("x",)
            assert f"contsnap\n{name}".encode() in pickle.dumps(obj, protocol=0)


def test_version_is_a_string() -> None:
    assert contsnap.__version__.count(".") >= 2


def test_cli_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "contsnap", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"contsnap {contsnap.__version__}"
    out = subprocess.run(
        [sys.executable, "-m", "contsnap", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: contsnap" in out.stdout
