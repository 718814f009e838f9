"""Where each statement of the parsed source starts: (line, column), 1-based line.

libcst's ``PositionProvider`` computes a range for every node by generating the
whole module's code once more; on a generator-heavy module it was 40% of the
transform. The transform asks for statements, except handlers, match cases and
decorators, and CPython's own parser gives those in a fraction of the time. So
the statements are read from `ast` by walking both trees side by side; any
other node, or a tree the walk does not understand, falls back to libcst's
provider, computed once and only when needed.

The same walk gives where each statement ends, so a statement copied as it is
can be taken from the source text (`Positions.statement_text`) instead
of being generated again by libcst.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Sequence
from typing import cast

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

Position = tuple[int, int]

#: Node kinds whose positions the side-by-side walk knows. A node of these kinds
#: missing from the table is one the transform made (it has no position at all).
STATEMENT_KINDS = (
    cst.BaseStatement,
    cst.BaseSmallStatement,
    cst.ExceptHandler,
    cst.ExceptStarHandler,
    cst.MatchCase,
    cst.Decorator,
)

#: libcst statement kind -> the ast kinds it parses to
_AST_KINDS: dict[type[cst.CSTNode], tuple[type[ast.AST], ...]] = {
    cst.If: (ast.If,),
    cst.For: (ast.For, ast.AsyncFor),
    cst.While: (ast.While,),
    cst.With: (ast.With, ast.AsyncWith),
    cst.FunctionDef: (ast.FunctionDef, ast.AsyncFunctionDef),
    cst.ClassDef: (ast.ClassDef,),
    cst.Try: (ast.Try,),
    cst.Match: (ast.Match,),
    cst.Expr: (ast.Expr,),
    cst.Assign: (ast.Assign,),
    cst.AugAssign: (ast.AugAssign,),
    cst.AnnAssign: (ast.AnnAssign,),
    cst.Return: (ast.Return,),
    cst.Raise: (ast.Raise,),
    cst.Assert: (ast.Assert,),
    cst.Del: (ast.Delete,),
    cst.Pass: (ast.Pass,),
    cst.Break: (ast.Break,),
    cst.Continue: (ast.Continue,),
    cst.Global: (ast.Global,),
    cst.Nonlocal: (ast.Nonlocal,),
    cst.Import: (ast.Import,),
    cst.ImportFrom: (ast.ImportFrom,),
}
if hasattr(ast, "TryStar"):
    _AST_KINDS[cst.TryStar] = (ast.TryStar,)


class _Mismatch(Exception):
    pass


class Positions:
    """Start positions of a parsed module's nodes, as libcst's PositionProvider gives them."""

    def __init__(self, module: cst.Module, source: str, tree: ast.Module | None = None) -> None:
        """``tree``, if given, is ``ast.parse(source)``."""
        self._module = module
        self._full: dict[cst.CSTNode, Position] | None = None
        self._lines = source.split("\n")
        self._table: dict[cst.CSTNode, Position] = {}
        #: statement -> its ast node (a simple statement line: its last statement's)
        self._trees: dict[cst.CSTNode, ast.stmt] = {}
        #: sliced text is only taken from plain "\n"-separated, space-or-tab indented source
        self._sliceable = "\r" not in source and "\f" not in source
        try:
            if tree is None:
                tree = ast.parse(source)
            self._suite(module.body, tree.body)
        except (_Mismatch, SyntaxError, ValueError, IndexError):
            self._table = self._full_table()

    def get(self, node: cst.CSTNode) -> Position | None:
        found = self._table.get(node)
        if found is None and not isinstance(node, STATEMENT_KINDS):
            found = self._full_table().get(node)
        return found

    def alias(self, new: cst.CSTNode, old: cst.CSTNode) -> None:
        """``new``, made by the transform from ``old``, is reported at ``old``'s place."""
        found = self.get(old)
        if found is not None:
            self._table[new] = found

    def _full_table(self) -> dict[cst.CSTNode, Position]:
        if self._full is None:
            wrapper = MetadataWrapper(self._module, unsafe_skip_copy=True)
            self._full = {
                node: (r.start.line, r.start.column)
                for node, r in wrapper.resolve(PositionProvider).items()
            }
        return self._full

    # --- the side-by-side walk

    def _at(self, line: int, col: int) -> Position:
        """ast columns count UTF-8 bytes, libcst's count characters."""
        text = self._lines[line - 1]
        if not text.isascii():
            col = len(text.encode("utf-8")[:col].decode("utf-8", "replace"))
        return line, col

    def _record(self, node: cst.CSTNode, tree: ast.stmt | ast.ExceptHandler) -> Position:
        found = self._at(tree.lineno, tree.col_offset)
        self._table[node] = found
        if isinstance(tree, ast.stmt):
            self._trees[node] = tree
        return found

    def _suite(self, nodes: Sequence[cst.CSTNode], trees: Sequence[ast.stmt]) -> None:
        at = 0
        for node in nodes:
            if isinstance(node, cst.SimpleStatementLine):
                if at >= len(trees):
                    raise _Mismatch
                self._table[node] = self._at(trees[at].lineno, trees[at].col_offset)
                for small in node.body:
                    self._statement(small, trees[at])
                    at += 1
                self._trees[node] = trees[at - 1]
            else:
                self._statement(node, trees[at])
                at += 1
        if at != len(trees):
            raise _Mismatch

    def _block(self, node: cst.BaseSuite, trees: Sequence[ast.stmt]) -> None:
        if isinstance(node, cst.SimpleStatementSuite):
            for small, tree in zip(node.body, trees, strict=True):
                self._statement(small, tree)
        else:
            self._suite(node.body, trees)

    def _statement(self, node: cst.CSTNode, tree: ast.stmt) -> None:
        kinds = _AST_KINDS.get(type(node))
        if kinds is None or not isinstance(tree, kinds):
            raise _Mismatch
        if isinstance(node, (cst.FunctionDef, cst.ClassDef)):
            assert isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            self._decorated(node, tree)
            self._block(node.body, tree.body)
            return
        self._record(node, tree)
        if isinstance(node, cst.If):
            assert isinstance(tree, ast.If)
            self._block(node.body, tree.body)
            self._orelse(node.orelse, tree.orelse)
        elif isinstance(node, (cst.For, cst.While)):
            assert isinstance(tree, (ast.For, ast.AsyncFor, ast.While))
            self._block(node.body, tree.body)
            self._orelse(node.orelse, tree.orelse)
        elif isinstance(node, cst.With):
            assert isinstance(tree, (ast.With, ast.AsyncWith))
            self._block(node.body, tree.body)
        elif isinstance(node, (cst.Try, cst.TryStar)):
            trying = cast(ast.Try, tree)  # ast.TryStar (3.11+) has the same fields
            self._block(node.body, trying.body)
            handlers: Sequence[cst.ExceptHandler | cst.ExceptStarHandler] = node.handlers
            for handler, tree_handler in zip(handlers, trying.handlers, strict=True):
                self._record(handler, tree_handler)
                self._block(handler.body, tree_handler.body)
            self._orelse(node.orelse, trying.orelse)
            if (node.finalbody is None) != (not trying.finalbody):
                raise _Mismatch
            if node.finalbody is not None:
                self._block(node.finalbody.body, trying.finalbody)
        elif isinstance(node, cst.Match):
            assert isinstance(tree, ast.Match)
            for case, tree_case in zip(node.cases, tree.cases, strict=True):
                self._case(case, tree_case)
                self._block(case.body, tree_case.body)

    def _orelse(self, node: cst.If | cst.Else | None, trees: Sequence[ast.stmt]) -> None:
        if node is None:
            if trees:
                raise _Mismatch
        elif isinstance(node, cst.If):  # elif
            if len(trees) != 1:
                raise _Mismatch
            self._statement(node, trees[0])
        else:
            self._block(node.body, trees)

    def _decorated(
        self,
        node: cst.FunctionDef | cst.ClassDef,
        tree: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
    ) -> None:
        """A decorator starts at its ``@``."""
        for deco, expr in zip(node.decorators, tree.decorator_list, strict=True):
            line, col = self._at(expr.lineno, expr.col_offset)
            text = self._lines[line - 1]
            at = text.rfind("@", 0, col)
            if at < 0 or text[at + 1 : col].strip():
                raise _Mismatch  # the expression is not on the @ line
            self._table[deco] = (line, at)
        self._record(node, tree)  # the ``def``/``class`` line, as libcst reports it too

    def _case(self, node: cst.MatchCase, tree: ast.match_case) -> None:
        """ast has no position for a case: find its ``case`` keyword before the pattern."""
        line, col = self._at(tree.pattern.lineno, tree.pattern.col_offset)
        text = self._lines[line - 1]
        head = text[:col].rstrip(" (\t")
        if not head.endswith("case") or head[:-4].strip():
            raise _Mismatch
        self._table[node] = (line, len(head) - 4)

    # --- statements as source text

    def statement_text(self, node: cst.CSTNode) -> tuple[str, frozenset[int]] | None:
        """The source of a statement, as ``_lines.verbatim`` takes it: text and string lines.

        The text is what libcst's ``code_for_node`` gives for the statement
        without its leading blank lines and comments (and, for a small
        statement, without its semicolon): from its first character (a
        decorator's ``@``) to the end of its last line, trailing comment lines
        of its last block included, each further line without the statement's
        indentation unless it lies inside a string. libcst keeps the whole
        indentation of a comment or continuation line indented less than the
        block it is in; this keeps only what is past the statement's column.
        None: not a statement this walk placed, or source this does not handle.
        """
        tree = self._trees.get(node)
        start = self._table.get(node)
        if tree is None or start is None or not self._sliceable:
            return None
        line, col = start
        if isinstance(node, (cst.FunctionDef, cst.ClassDef)) and node.decorators:
            found = self._table.get(node.decorators[0])
            if found is None:
                return None
            line, col = found
        lines = self._lines
        indent = lines[line - 1][:col]
        if indent.strip(" \t"):
            return None  # not the first statement on its line
        if isinstance(node, cst.If) and lines[line - 1].startswith("elif", col):
            return None  # libcst spells it as an `if` statement
        assert tree.end_lineno is not None and tree.end_col_offset is not None
        end = tree.end_lineno
        if isinstance(node, cst.BaseSmallStatement):
            end_col = self._at(end, tree.end_col_offset)[1]
            chunks = [*lines[line - 1 : end - 1], lines[end - 1][:end_col]]
        else:
            chunks = lines[line - 1 : end]
            if not isinstance(node, cst.SimpleStatementLine):
                chunks += self._footer(tree, end)
        chunks[0] = chunks[0][col:]
        if len(chunks) == 1:
            return chunks[0].rstrip(), frozenset()
        inside: set[int] = set()
        if any("'" in chunk or '"' in chunk for chunk in chunks):  # or no string at all
            try:
                inside = _string_rows(indent + "\n".join(chunks))
            except (tokenize.TokenError, SyntaxError):
                return None
        text = "\n".join(
            chunk[col:] if row not in inside and chunk.startswith(indent) else chunk
            for row, chunk in enumerate(chunks)
            if row
        )
        return (chunks[0] + "\n" + text).rstrip(), frozenset(inside)

    def _footer(self, tree: ast.stmt, end: int) -> list[str]:
        """Comment and blank lines after a compound statement that libcst counts as its own.

        Those are the lines up to the last one indented at least as far as the
        statement's last block (libcst's ``IndentedBlock.footer``, innermost first).
        """
        last = self._last_block(tree)
        if not last:
            return []
        block_line = self._lines[last[0].lineno - 1]
        block_indent = block_line[: self._at(last[0].lineno, last[0].col_offset)[1]]
        if block_indent.strip(" \t"):
            return []  # a block on its header's line (`else: pass`) has no footer
        taken = 0
        row = end
        lines = self._lines
        while row < len(lines):
            text = lines[row].strip(" \t")
            if text and not text.startswith("#"):
                break
            row += 1
            if lines[row - 1].startswith(block_indent):
                taken = row - end
        return lines[end : end + taken]

    def _last_block(self, tree: ast.stmt) -> list[ast.stmt]:
        """The statements of the last block of a compound statement (empty: not compound)."""
        if isinstance(tree, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            trying = cast(ast.Try, tree)
            if trying.finalbody:
                return trying.finalbody
            if trying.orelse:
                return trying.orelse
            return trying.handlers[-1].body if trying.handlers else trying.body
        if isinstance(tree, ast.Match):
            return tree.cases[-1].body
        orelse: list[ast.stmt] = getattr(tree, "orelse", [])
        if not orelse:
            body: list[ast.stmt] = getattr(tree, "body", [])
            return body
        elif_ = orelse[0]
        if isinstance(tree, ast.If) and isinstance(elif_, ast.If) and len(orelse) == 1:
            line, col = self._at(elif_.lineno, elif_.col_offset)
            if self._lines[line - 1].startswith("elif", col):
                return self._last_block(elif_)
        return orelse


def _string_rows(text: str) -> set[int]:
    """Rows (0-based) of ``text`` that start inside a string token."""
    inside: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text + "\n").readline):
        start, end = tok.start[0], tok.end[0]
        if end > start and tok.type not in (tokenize.NL, tokenize.NEWLINE):
            inside.update(range(start, end))  # rows start+1..end, 0-based: start..end-1
    return inside
