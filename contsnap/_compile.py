"""Assemble and compile the two variants of a transformed generator function.

Each variant is compiled from generated source under the user's real
filename, with every line number mapped back to the user's source, so
tracebacks, ``linecache`` and debuggers show the original file and line.
Each variant is wrapped in a factory function so that the original's free
variables (and, for the resume variant, its cell variables too) are *free*
variables of the compiled code: a restore then hands the saved cell objects in
as the closure, and closures made before the snapshot share them.
"""

from __future__ import annotations

import ast
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

from ._registry import STATE

if TYPE_CHECKING:
    from ._transform import LabelInfo, Line, Rendered, TransformResult

# ``._transform`` (libcst) is imported by the functions that build code from a transform
# only: a warm start compiles a cached resume variant's source (ResumeSource) without it.

FRESH_FACTORY = "__contsnap_fresh__"
RESUME_FACTORY = "__contsnap_resume__"
# The name the function is compiled under: the user's own name, defined in the
# factory, would turn the function's references to itself into a closure.
DEF_NAME = "__contsnap_fn__"


@dataclass
class Compiled:
    """Everything built from one generator function's source."""

    fresh_code: types.CodeType
    #: the resume variant, compiled on first need (a snapshot or a restore)
    resume: ResumeSource
    labels: dict[int, LabelInfo]
    fingerprint: str
    #: the user's own locals (saved whenever bound)
    user_names: tuple[str, ...]
    #: cell and free variables (a snapshot's cells come in this order)
    cell_names: tuple[str, ...]
    cellvars: tuple[str, ...]
    first_param: str | None
    source: str


@dataclass(frozen=True)
class ResumeSource:
    """The resume variant's generated source: compiled only when a snapshot or a restore
    first needs it (most functions are only ever called), and what the import hook's
    cache stores instead of the compiled code."""

    text: str
    line_map: dict[int, tuple[int, int | None]]
    filename: str
    #: the factory qualnames the code gets rid of, the user's qualname and name
    prefixes: tuple[str, ...]
    qualname: str
    name: str

    def compile(self) -> types.CodeType:
        compiled = _find(_compile(self.text, self.line_map, self.filename), RESUME_FACTORY)
        return _requalify(compiled, self.prefixes, self.qualname).replace(co_name=self.name)


def _enclosing_class(qualname: str) -> str | None:
    """The innermost class around the function: it decides private-name mangling."""
    parts = qualname.split(".")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] != "<locals>" and parts[i + 1] != "<locals>":
            return parts[i]
    return None


def _factory(
    factory: str,
    result: TransformResult,
    class_name: str | None,
    factory_locals: list[str],
    signature: str,
    body: list[Line],
    first_line: int,
    class_global: bool,
) -> Line:
    from ._transform import Line, block

    src = result.def_line
    inner: list[Line] = []
    names = [n for n in factory_locals if not (class_name and n == "__class__")]
    if class_global:
        # the class statement below (there for private-name mangling) binds its name in
        # the factory: the method's own reads of that name (``isinstance(x, Node)`` in
        # a method of ``Node``) must still find the module's global, as natively
        inner.append(Line(f"global {class_name}", src))
    if names:
        inner.append(Line(" = ".join(names) + " = None", src))
    # the def line maps to the original's co_firstlineno (its first decorator)
    keyword = "async def" if result.is_async else "def"
    func = block(f"{keyword} {DEF_NAME}({signature}):", first_line, body)
    if class_name is not None:
        inner.append(block(f"class {class_name}:", src, [func]))
    else:
        inner.append(func)
    return block(f"def {factory}():", src, inner)


def _global_class(class_name: str | None, cell_names: tuple[str, ...]) -> bool:
    """Is the factory's class statement declared ``global``: is its name not one of the
    function's free or cell variables (which the factory binds, as the enclosing code did)?
    """
    return class_name is not None and class_name not in cell_names


def _cellref(cell_names: tuple[str, ...], src: int) -> list[Line]:
    if not cell_names:
        return []
    from ._transform import Line

    return [Line(f"_cs_cellref = lambda: ({', '.join(cell_names)},)", src)]


LineMap = dict[int, tuple[int, "int | None"]]
#: a position in the user's file: line, end line, column, end column (-1: none)
Location = tuple[int, int, int, int]
#: a position as ``co_positions()`` gives it
Position = tuple["int | None", "int | None", "int | None", "int | None"]


def _is_docstring(line: Line) -> bool:
    if line.body is not None or line.text[:1] not in "\"'rRuUbBfF":
        return False
    try:
        tree = ast.parse(line.text)
    except SyntaxError:
        return False
    first = tree.body[0] if len(tree.body) == 1 else None
    return (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )


def _unannotate_cells(rendered: Rendered, cellvars: tuple[str, ...]) -> Rendered:
    """Drop the annotations of closure cells the resume variant declares ``nonlocal``.

    ``x: T = v`` with ``x`` nonlocal is a SyntaxError; a local's annotation is never
    evaluated (PEP 526), so ``x = v`` (``...`` for a bare ``x: T``) is the same code.
    The text keeps its length on each line, so positions do not move.
    """
    if not cellvars or ":" not in rendered.text:
        return rendered
    found: list[ast.AnnAssign] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            target = child.target if isinstance(child, ast.AnnAssign) else None
            if isinstance(target, ast.Name) and target.id in cellvars:
                found.append(child)  # type: ignore[arg-type]
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child)

    tree = ast.parse(rendered.text)
    for factory in tree.body:
        for inner in getattr(factory, "body", []):
            if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(inner)
    if not found:
        return rendered
    lines = rendered.text.split("\n")
    for node in found:
        row = node.lineno - 1
        end = node.end_col_offset or 0
        if node.end_lineno != node.lineno:
            continue  # an annotation over several lines: left as it is (rare)
        text = lines[row]
        if node.value is None:
            span = end - node.col_offset
            lines[row] = text[: node.col_offset] + "...".ljust(span) + text[end:]
        else:
            start = node.target.end_col_offset or 0
            equals = text.index("=", node.annotation.end_col_offset or 0)
            lines[row] = text[:start] + " " * (equals - start) + text[equals:]
    from ._transform import Rendered

    return Rendered("\n".join(lines), rendered.line_map)


def _compile(text: str, line_map: LineMap, filename: str) -> types.CodeType:
    """Compile generated source; the code's positions are the user's lines and columns."""
    if sys.version_info >= (3, 11):
        # The generated text compiles as it is and its location table is then
        # rewritten: a third of the cost of parsing to ast, moving every node
        # and compiling the tree.
        code = compile(text, filename, "exec", dont_inherit=True)
        return _relocated(code, line_map)
    tree = ast.parse(text, filename)
    _relocate_tree(tree, line_map)
    return compile(tree, filename, "exec", dont_inherit=True)


def _located(
    line_map: LineMap,
    line: int | None,
    end_line: int | None,
    col: int | None,
    end_col: int | None,
) -> Location:
    """Where a generated position (from ast or from a code's table) is in the user's file."""
    assert line is not None
    found = line_map.get(line)
    if found is None:  # a line the compiler made up (a module starts on line 0)
        return (
            line,
            line if end_line is None else end_line,
            -1 if col is None else col,
            -1 if end_col is None else end_col,
        )
    start, shift = found
    end, end_shift = line_map.get(line if end_line is None else end_line, (start, None))
    end = max(start, end)
    if col == 0 and end_col == 0 and end_line == line:
        return start, end, 0, 0  # the compiler's own (a function's RESUME), not a node's
    if shift is None or end_shift is None or col is None or end_col is None:
        return start, end, -1, -1
    col += shift
    end_col += end_shift
    if start == end and end_col < col:
        return start, end, -1, -1
    return start, end, col, end_col


def _relocated(code: types.CodeType, line_map: LineMap) -> types.CodeType:
    """``code`` and the codes it holds, with every position mapped by ``line_map``."""
    consts = tuple(
        _relocated(const, line_map) if isinstance(const, types.CodeType) else const
        for const in code.co_consts
    )
    first = line_map.get(code.co_firstlineno, (code.co_firstlineno, None))[0]
    table = _LocationTable(first)
    run: Position = (None, None, None, None)
    size = 0
    for position in chain(code.co_positions(), [None]):  # type: ignore[attr-defined]  # 3.11+
        if position == run and size < 8:
            size += 1
            continue
        if size:
            line, end_line, col = run[0], run[1], run[2]
            found = None if line is None else line_map.get(line)
            if line is None:
                table.add(None, size)
            elif found is not None and found[1] is None and end_line == line and col != 0:
                # most positions: on one generated line that is not the user's own text
                table.add_line(found[0], size)
            else:
                table.add(_located(line_map, *run), size)
        if position is not None:
            run, size = position, 1
    return code.replace(co_consts=consts, co_firstlineno=first, co_linetable=bytes(table.data))


class _LocationTable:
    """A code's ``co_linetable`` (3.11+), written as CPython's compiler writes it.

    Each entry covers 1-8 code units: a byte ``1kkkkSSS`` (kind, size - 1), then
    the kind's fields; lines are deltas from the previous entry's line. See
    ``Objects/locations.md`` in CPython.
    """

    def __init__(self, first_line: int) -> None:
        self.data = bytearray()
        self.line = first_line

    def add(self, where: Location | None, size: int) -> None:
        data = self.data
        if where is None:
            data.append(0x80 | 15 << 3 | (size - 1))  # no location
            return
        line, end_line, col, end_col = where
        delta = line - self.line
        if col < 0 or end_col < 0:
            if end_line == line:
                self.add_line(line, size)
                return
        elif end_line == line:
            if delta == 0 and col < 80 and 0 <= end_col - col < 16:
                data.append(0x80 | (col >> 3) << 3 | (size - 1))  # short form
                data.append((col & 7) << 4 | (end_col - col))
                return
            if 0 <= delta < 3 and col < 128 and end_col < 128:
                data.append(0x80 | (10 + delta) << 3 | (size - 1))  # one line
                data.append(col)
                data.append(end_col)
                self.line = line
                return
        data.append(0x80 | 14 << 3 | (size - 1))  # long form
        self._signed(delta)
        self._unsigned(end_line - line)
        self._unsigned(col + 1)
        self._unsigned(end_col + 1)
        self.line = line

    def add_line(self, line: int, size: int) -> None:
        """An entry with a line and no columns (most of them)."""
        delta = line - self.line
        self.data.append(0x80 | 13 << 3 | (size - 1))
        if -32 < delta < 32:
            self.data.append(-delta << 1 | 1 if delta < 0 else delta << 1)  # a one-byte varint
        else:
            self._signed(delta)
        self.line = line

    def _unsigned(self, value: int) -> None:
        while value >= 64:
            self.data.append(0x40 | value & 63)
            value >>= 6
        self.data.append(value)

    def _signed(self, value: int) -> None:
        self._unsigned(-value << 1 | 1 if value < 0 else value << 1)


#: per node class: does it have a position, and its fields
_NODE_KINDS: dict[type[ast.AST], tuple[bool, tuple[str, ...]]] = {}
STATE.add(__name__, "_NODE_KINDS")


def _relocate_tree(tree: ast.Module, line_map: LineMap) -> None:
    """Move every node of ``tree`` to its place in the user's file (3.10)."""
    # ast.walk() is generators all the way down; this loop, the same walk, costs half
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        kind = _NODE_KINDS.get(type(node))
        if kind is None:
            kind = _NODE_KINDS[type(node)] = ("lineno" in node._attributes, node._fields)
        located, fields = kind
        for name in fields:
            value = getattr(node, name, None)
            if type(value) is list:
                stack.extend(item for item in value if isinstance(item, ast.AST))
            elif isinstance(value, ast.AST):
                stack.append(value)
        if located:
            moved: Any = node
            moved.lineno, moved.end_lineno, moved.col_offset, moved.end_col_offset = _located(
                line_map, moved.lineno, moved.end_lineno, moved.col_offset, moved.end_col_offset
            )


def _walk_codes(code: types.CodeType) -> Iterator[types.CodeType]:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield const
            yield from _walk_codes(const)


def _find(module_code: types.CodeType, factory: str) -> types.CodeType:
    for code in _walk_codes(module_code):
        if code.co_name == factory:
            for inner in _walk_codes(code):
                if inner.co_name == DEF_NAME:
                    return inner
    raise AssertionError(f"compiled {factory} has no {DEF_NAME}")


def _requalify(code: types.CodeType, prefixes: tuple[str, ...], qualname: str) -> types.CodeType:
    """Give the compiled function and everything defined in it the user's qualnames.

    Either factory's prefix is rewritten wherever it appears; class bodies (and
    3.10's MAKE_FUNCTION) carry qualnames as string constants.
    """

    def fix(text: str) -> str:
        for old in prefixes:
            if text == old:
                return qualname
            if text.startswith(old + "."):
                return qualname + text[len(old) :]
        return text

    consts = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            const = _requalify(const, prefixes, qualname)
        elif isinstance(const, str) and (const.startswith("__contsnap_") or DEF_NAME in const):
            # a nested function's (3.10) or class's qualname: the factory's prefix, or a
            # global class's name and DEF_NAME (see _global_class)
            const = fix(const)
        consts.append(const)
    changes: dict[str, object] = {"co_consts": tuple(consts)}
    if sys.version_info >= (3, 11):
        changes["co_qualname"] = fix(code.co_qualname)
    return code.replace(**changes)  # type: ignore[arg-type]


def compile_function(
    result: TransformResult,
    *,
    filename: str,
    qualname: str,
    freevars: tuple[str, ...],
    cellvars: tuple[str, ...],
    first_line: int,
) -> Compiled:
    """Compile the fresh variant of a transformed function; render the resume variant."""
    from ._transform import Line, block, render

    class_name = _enclosing_class(qualname)
    cell_names = (*cellvars, *freevars)
    src = result.def_line

    # a docstring stays the first statement (the function's __doc__, and the fresh code
    # can then stand in for the plain one in the hook's cached module code)
    doc = result.fresh[:1] if result.fresh and _is_docstring(result.fresh[0]) else []
    fresh_body = [*doc, *_cellref(cell_names, src), *result.fresh[len(doc) :]]
    class_global = _global_class(class_name, cell_names)
    fresh_factory = _factory(
        FRESH_FACTORY,
        result,
        class_name,
        list(freevars),
        result.params,
        fresh_body,
        first_line,
        class_global,
    )
    # compiled alone: its local names decide the resume variant's prologue
    fresh_rendered = render([fresh_factory])
    fresh_compiled = _find(
        _compile(fresh_rendered.text, fresh_rendered.line_map, filename), FRESH_FACTORY
    )
    varnames = [n for n in fresh_compiled.co_varnames if n not in cellvars]
    user_names = tuple(n for n in varnames if not n.startswith("_cs_"))
    restorable = [n for n in varnames if n not in ("_cs_label", "_cs_cellref")]
    # an await's ``_cs_aw_n``: the fresh code has no such local (a snapshot reads the
    # awaitable from the frame), the resume variant awaits it again
    for spec in result.labels.values():
        if spec.delegate is not None and spec.delegate not in restorable:
            restorable.append(spec.delegate)

    # The first positional parameter stays the first parameter of the resume
    # variant so that zero-argument super() finds it; restore passes a
    # placeholder and the prologue rebinds it from the saved values.
    first = result.first_param
    signature = "_cs_box"
    if first is not None:
        signature = f"{'_cs_p0' if first in cellvars else first}, _cs_box"
    prologue: list[Line] = []
    if cellvars:
        prologue.append(Line(f"nonlocal {', '.join(cellvars)}", src))
    prologue += [
        Line("_cs_label = _cs_box.label", src),
        Line("_cs_resuming = _cs_label != 0", src),
        Line("_cs_v = _cs_box.values", src),
    ]
    for name in restorable:
        prologue.append(
            block(f"if {name!r} in _cs_v:", src, [Line(f"{name} = _cs_v[{name!r}]", src)])
        )
    if first is not None and first not in cellvars:
        prologue.append(
            block(f"if {first} is __contsnap_rt__.UNBOUND:", src, [Line(f"del {first}", src)])
        )
    # the box lets go of the locals: a value the frame drops is then freed as natively
    prologue.append(Line("_cs_box.values = _cs_v = _cs_box = None", src))
    resume_body = [*prologue, *_cellref(cell_names, src), *result.resume]
    resume_factory = _factory(
        RESUME_FACTORY,
        result,
        class_name,
        [*freevars, *cellvars],
        signature,
        resume_body,
        first_line,
        class_global,
    )
    resume_rendered = _unannotate_cells(render([resume_factory]), cellvars)
    inner = f"{class_name}.{DEF_NAME}" if class_name else DEF_NAME
    # a class declared global is qualified by its name alone
    prefixes = (
        (inner,)
        if class_global
        else tuple(f"{factory}.<locals>.{inner}" for factory in (FRESH_FACTORY, RESUME_FACTORY))
    )
    fresh_code = _requalify(fresh_compiled, prefixes, qualname).replace(co_name=result.name)
    return Compiled(
        fresh_code=fresh_code,
        resume=ResumeSource(
            resume_rendered.text,
            resume_rendered.line_map,
            filename,
            prefixes,
            qualname,
            result.name,
        ),
        labels=result.labels,
        fingerprint=result.fingerprint,
        user_names=user_names,
        cell_names=cell_names,
        cellvars=cellvars,
        first_param=first,
        source=fresh_rendered.text + resume_rendered.text,
    )
