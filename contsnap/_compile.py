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

from ._transform import LabelInfo, Line, Rendered, TransformResult, block, render

FRESH_FACTORY = "__contsnap_fresh__"
RESUME_FACTORY = "__contsnap_resume__"
# The name the function is compiled under: the user's own name, defined in the
# factory, would turn the function's references to itself into a closure.
DEF_NAME = "__contsnap_fn__"


@dataclass
class Compiled:
    """Everything built from one generator function's source."""

    fresh_code: types.CodeType
    resume_code: types.CodeType
    labels: dict[int, LabelInfo]
    fingerprint: str
    #: the user's own locals (saved whenever bound)
    user_names: tuple[str, ...]
    #: cell and free variables (a snapshot's cells come in this order)
    cell_names: tuple[str, ...]
    cellvars: tuple[str, ...]
    first_param: str | None
    source: str


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
) -> Line:
    src = result.def_line
    inner: list[Line] = []
    names = [n for n in factory_locals if not (class_name and n == "__class__")]
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


def _cellref(cell_names: tuple[str, ...], src: int) -> list[Line]:
    if not cell_names:
        return []
    return [Line(f"_cs_cellref = lambda: ({', '.join(cell_names)},)", src)]


#: per node class: does it have a position, and its fields
_NODE_KINDS: dict[type[ast.AST], tuple[bool, tuple[str, ...]]] = {}


def _compile(rendered: Rendered, filename: str) -> types.CodeType:
    tree = ast.parse(rendered.text, filename)
    line_map = rendered.line_map
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
        if not located:
            continue
        lineno = node.lineno  # type: ignore[attr-defined]
        start, shift = line_map.get(lineno, (1, None))
        end_lineno = node.end_lineno or lineno  # type: ignore[attr-defined]
        end, end_shift = line_map.get(end_lineno, (start, None))
        node.lineno = start  # type: ignore[attr-defined]
        node.end_lineno = max(start, end)  # type: ignore[attr-defined]
        col = node.col_offset  # type: ignore[attr-defined]
        end_col = node.end_col_offset  # type: ignore[attr-defined]
        if shift is None or end_shift is None or col is None or end_col is None:
            node.col_offset = node.end_col_offset = -1  # type: ignore[attr-defined]
        else:
            node.col_offset = col + shift  # type: ignore[attr-defined]
            node.end_col_offset = end_col + end_shift  # type: ignore[attr-defined]
            if start >= end and node.end_col_offset < node.col_offset:  # type: ignore[attr-defined]
                node.col_offset = node.end_col_offset = -1  # type: ignore[attr-defined]
    return compile(tree, filename, "exec", dont_inherit=True)


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
        elif isinstance(const, str) and const.startswith("__contsnap_"):
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
    """Compile the fresh and resume variants of a transformed function."""
    class_name = _enclosing_class(qualname)
    cell_names = (*cellvars, *freevars)
    src = result.def_line

    fresh_body = [*_cellref(cell_names, src), *result.fresh]
    fresh_factory = _factory(
        FRESH_FACTORY, result, class_name, list(freevars), result.params, fresh_body, first_line
    )
    # compiled alone: its local names decide the resume variant's prologue
    fresh_rendered = render([fresh_factory])
    fresh_compiled = _find(_compile(fresh_rendered, filename), FRESH_FACTORY)
    varnames = [n for n in fresh_compiled.co_varnames if n not in cellvars]
    user_names = tuple(n for n in varnames if not n.startswith("_cs_"))
    restorable = [n for n in varnames if n not in ("_cs_label", "_cs_cellref")]

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
    prologue.append(Line("_cs_v = _cs_box = None", src))
    resume_body = [*prologue, *_cellref(cell_names, src), *result.resume]
    resume_factory = _factory(
        RESUME_FACTORY,
        result,
        class_name,
        [*freevars, *cellvars],
        signature,
        resume_body,
        first_line,
    )
    resume_rendered = render([resume_factory])
    resume_compiled = _find(_compile(resume_rendered, filename), RESUME_FACTORY)
    inner = f"{class_name}.{DEF_NAME}" if class_name else DEF_NAME
    prefixes = tuple(f"{factory}.<locals>.{inner}" for factory in (FRESH_FACTORY, RESUME_FACTORY))
    fresh_code, resume_code = (
        _requalify(code, prefixes, qualname).replace(co_name=result.name)
        for code in (fresh_compiled, resume_compiled)
    )
    return Compiled(
        fresh_code=fresh_code,
        resume_code=resume_code,
        labels=result.labels,
        fingerprint=result.fingerprint,
        user_names=user_names,
        cell_names=cell_names,
        cellvars=cellvars,
        first_param=first,
        source=fresh_rendered.text + resume_rendered.text,
    )
