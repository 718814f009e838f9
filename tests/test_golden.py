"""Golden tests: the transform of small functions compared with checked-in expected code.

A change to the generated code shows up as a reviewed diff of ``tests/golden/*.expected``.
Regenerate after an intended change with ``CONTSNAP_UPDATE_GOLDEN=1 pytest tests/test_golden.py``.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from pathlib import Path

import pytest

import contsnap

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.py"))


def _generator_functions(path: Path) -> list[object]:
    spec = importlib.util.spec_from_file_location(f"golden_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    found = []
    for obj in vars(module).values():
        members = vars(obj).values() if inspect.isclass(obj) else [obj]
        found.extend(m for m in members if _suspending(m))
    return found


def _suspending(obj: object) -> bool:
    return (
        inspect.isgeneratorfunction(obj)
        or inspect.isasyncgenfunction(obj)
        or inspect.iscoroutinefunction(obj)
    )


@pytest.mark.parametrize("case", CASES)
def test_transform_matches_golden(case: str) -> None:
    functions = _generator_functions(GOLDEN / f"{case}.py")
    assert functions, case
    text = "".join(
        f"# {fn.__qualname__}\n{contsnap.checkpointable(fn).__contsnap__.source}\n"  # type: ignore[attr-defined]
        for fn in functions
    )
    expected = GOLDEN / f"{case}.expected"
    if os.environ.get("CONTSNAP_UPDATE_GOLDEN"):
        expected.write_text(text)
    assert text == expected.read_text(), f"transform of {case} changed; see {expected}"


def test_there_are_a_dozen_golden_cases() -> None:
    assert len(CASES) >= 12
