"""The transform reads statement positions from ast: they must be the ones libcst reports."""

from __future__ import annotations

import contextlib
import difflib
import tokenize
from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper, PositionProvider

from contsnap._transform._lines import verbatim
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


COPIED = '''
class Box:
    @staticmethod
    # a comment between decorator and def
    def f(x, y):  # trailing
        s = """one
  two
    three"""; t = f"{x!r}"
        if x:
            call(1,
                 2)  # note
            # footer of the if body
        elif y:
            pass
        else:
            for i in x:
                yield i
                    # deeper footer
              # less indented: the else body's
            # the else body's too
        # the function body's, not the if's
        try:
            pass
        except (ValueError,
                TypeError) as exc:
            raise

        finally:
            x = [
                1,
            ]
        return s
'''


def _libcst_text(module: cst.Module, node: cst.CSTNode) -> str:
    if isinstance(node, cst.BaseSmallStatement):
        node = node.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)
    else:
        node = node.with_changes(leading_lines=())
    return module.code_for_node(node).rstrip("\n").rstrip()


@pytest.mark.parametrize(
    "path",
    [None, *sorted(GOLDEN.glob("*.py")), Path(difflib.__file__), Path(contextlib.__file__)],
    ids=lambda p: "copied" if p is None else p.name,
)
def test_statement_text_is_libcsts_text(path: Path | None) -> None:
    """A statement copied as it is comes from the source: the text libcst would generate."""
    source = COPIED if path is None else path.read_text(encoding="utf-8")
    module = cst.parse_module(source)
    positions = Positions(module, source)
    checked = 0
    for node in list(positions._table):
        found = positions.statement_text(node)
        if found is None:
            continue
        text, keep = found
        expected = _libcst_text(module, node)
        if "\\\n" in expected:
            # libcst keeps the whole indentation of a line after a backslash; the slice
            # drops the statement's own, as for every other line (so columns map right)
            continue
        assert text == expected, node
        assert keep == verbatim(expected, 1, 0).keep, node  # the lines inside strings
        checked += 1
    assert checked > (20 if path is None else 0)
    if path is None:  # the string's own lines keep their indentation
        line = next(n for n in positions._table if isinstance(n, cst.SimpleStatementLine))
        assert positions.statement_text(line) == (
            's = """one\n  two\n    three"""; t = f"{x!r}"',
            frozenset({1, 2}),
        )
