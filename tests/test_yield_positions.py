"""Yield positions the docs once listed as refused, now supported: each behaves as natively,
transformed and restored at every suspension (a differential test per position)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import contsnap
from contsnap.testing import Send, check_generator_equivalence

SOURCE = """
def in_a_match_guard(x):
    match x:
        case int() if (yield x):
            yield "guarded int"
        case _:
            yield "other"


def in_a_nested_default():
    def inner(a=(yield 1)):
        return a
    yield inner()


def in_a_nested_decorator():
    @(yield 1)
    def inner():
        return "decorated"
    yield inner()


def in_nested_class_bases():
    class C((yield 1)):
        pass
    yield C.__mro__[1].__name__


def identity(function):
    return function
"""


@pytest.fixture(scope="module")
def positions(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root: Path = tmp_path_factory.mktemp("positions")
    (root / "yield_positions_mod.py").write_text(textwrap.dedent(SOURCE))
    sys.path.insert(0, str(root))
    try:
        import yield_positions_mod

        yield yield_positions_mod
    finally:
        sys.path.remove(str(root))


CASES = {
    "in_a_match_guard": ((5,), [Send(True), Send(None)]),
    "in_a_nested_default": ((), [Send(7)]),
    "in_a_nested_decorator": ((), ["identity"]),
    "in_nested_class_bases": ((), [Send(dict)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_yield_position_behaves_as_natively_at_every_suspension(
    positions: Any, name: str
) -> None:
    native = getattr(positions, name)
    args, actions = CASES[name]
    actions = [Send(positions.identity) if a == "identity" else a for a in actions]
    check_generator_equivalence(native, contsnap.checkpointable(native), args, actions)
