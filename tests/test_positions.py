"""The transform reads statement positions from ast: they must be the ones libcst reports."""

from __future__ import annotations

import contextlib
import difflib
import tokenize
from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper, PositionProvider

from contsnap._transform._positions import STATEMENT_KINDS, Positions

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize(
    "path",
    [
        *sorted(GOLDEN.glob("*.py")),
        *(Path(difflib.__file__), Path(tokenize.__file__), Path(contextlib.__file__)),
    ],
    ids=lambda p: p.name,
)
def test_statement_positions_match_libcst(path: Path) -> None:
    """The transform reads statement positions from ast; they must be libcst's own."""
    source = path.read_text(encoding="utf-8")
    module = cst.parse_module(source)
    full = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    positions = Positions(module, source)
    checked = 0
    for node, where in full.items():
        if isinstance(node, STATEMENT_KINDS):
            assert positions._table.get(node) == (where.start.line, where.start.column), node
            checked += 1
    assert positions._full is None and checked > 0


TRICKY = """
@ deco
@other(1,
       2)
async def f(x):
    s = "é€"; t = 1
    if x: pass
    elif x > 1:
        async for i in x: yield i
    else:
        async with x as y, x: pass
    match x:
        case (1 |
              2):
            pass
        case _ if x: pass
    try: pass
    except* ValueError: pass
    while x: break
    else: pass
"""


def test_tricky_statement_positions_and_expressions_fall_back() -> None:
    source = (
        TRICKY if hasattr(__import__("ast"), "TryStar") else TRICKY.replace("except*", "except")
    )
    module = cst.parse_module(source)
    full = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    positions = Positions(module, source)
    for node, where in full.items():
        if isinstance(node, STATEMENT_KINDS):
            assert positions.get(node) == (where.start.line, where.start.column), node
    assert positions._full is None
    name = next(n for n in full if isinstance(n, cst.Name) and n.value == "t")
    assert positions.get(name) == (6, 14)  # an expression: from libcst's own provider
