"""Source-to-source transform of one generator function (pure: no runtime imports).

``transform_function`` parses the function's source with libcst and returns the
pieces ``contsnap._compile`` assembles: the parameter list, the body of the
*fresh* variant (what a call runs), the body of the *resume* variant (what a
restore runs), the yield labels with the helper locals live at each, and the
fingerprint of the normalised source.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass

import libcst as cst

from .._fingerprint import TRANSFORM_VERSION, fingerprint, fingerprint_of
from .._labels import GLOBAL_NAMES, RT, LabelInfo
from . import _genexps
from ._lines import Line, Rendered, block, render
from ._positions import Positions
from ._scope import contains, forget, survey, suspends
from ._statements import BodyProcessor, UnsupportedSyntax

__all__ = [
    "RT",
    "TRANSFORM_VERSION",
    "LabelInfo",
    "Line",
    "Rendered",
    "TransformResult",
    "UnsupportedSyntax",
    "block",
    "render",
    "transform_function",
]


@dataclass
class TransformResult:
    name: str
    def_line: int
    params: str
    first_param: str | None
    fresh: list[Line]
    resume: list[Line]
    labels: dict[int, LabelInfo]
    fingerprint: str
    indent: str
    is_async: bool = False


class _Finder(cst.CSTVisitor):
    found: cst.FunctionDef | None = None

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        if self.found is None:
            self.found = node
        return False


def _find_function(module: cst.Module) -> cst.FunctionDef:
    first: cst.CSTNode | None = module.body[0] if module.body else None
    if isinstance(first, cst.If) and isinstance(first.body, cst.IndentedBlock):
        first = first.body.body[0] if first.body.body else None  # the `if 1:` of a method
    if isinstance(first, cst.FunctionDef):
        return first
    finder = _Finder()  # not the usual shape: the first def anywhere
    module.visit(finder)
    if finder.found is None:
        raise UnsupportedSyntax("no function definition found in the source", 0)
    return finder.found


def _params(params: cst.Parameters) -> tuple[str, str | None]:
    """Parameter names without defaults or annotations (those come from the function object)."""
    parts = [p.name.value for p in params.posonly_params]
    if params.posonly_params:
        parts.append("/")
    parts.extend(p.name.value for p in params.params)
    if isinstance(params.star_arg, cst.Param):
        parts.append("*" + params.star_arg.name.value)
    elif params.kwonly_params:
        parts.append("*")
    parts.extend(p.name.value for p in params.kwonly_params)
    if params.star_kwarg is not None:
        parts.append("**" + params.star_kwarg.name.value)
    positional = [*params.posonly_params, *params.params]
    return ", ".join(parts), positional[0].name.value if positional else None


def _function_fingerprint(
    module: cst.Module, func: cst.FunctionDef, tree: ast.Module | None
) -> str:
    """The function's fingerprint, from the ``ast`` tree of its source when there is one."""
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return fingerprint_of(node)
    return fingerprint(module.code_for_node(func.with_changes(decorators=(), leading_lines=())))


def transform_function(source: str, *, first_line: int) -> TransformResult:
    """Transform the generator function whose source (decorators included) starts at first_line."""
    try:
        return _transform(source, first_line)
    finally:
        forget()  # the scope answers remembered for this function's nodes


#: the calls that list the local scope by name; a transformed frame has helper locals too
_SCOPE_LISTINGS = ("locals", "vars", "dir")


def _hide_helper_locals(source: str) -> str:
    """``locals()``, ``vars()`` and ``dir()`` wrapped so that they list the user's names only.

    The transform's ``_cs_*`` helpers are locals of the frame (the snapshot
    reads them there), so the bare calls would show them. Rewritten on the
    tokens, so every copy of a statement (fresh and resume variants, copied
    text or regenerated) gets it; the wrapper leaves a value that is not a
    dict or list (a shadowing ``locals``) alone.
    """
    if not any(f"{name}(" in source for name in _SCOPE_LISTINGS):
        return source
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return source
    lines = source.splitlines(keepends=True)
    for i in range(len(tokens) - 3, 0, -1):  # from the end: earlier columns stay valid
        name, opening, closing = tokens[i : i + 3]
        if (
            name.type == tokenize.NAME
            and name.string in _SCOPE_LISTINGS
            and (opening.string, closing.string) == ("(", ")")
            and tokens[i - 1].string not in (".", "def", "class")
        ):
            (row, col), (end_row, end_col) = name.start, closing.end
            call = f"{RT}.own_names({name.string}())"
            if row == end_row:
                text = lines[row - 1]
                lines[row - 1] = text[:col] + call + text[end_col:]
    return "".join(lines)


class _VariableNames(cst.CSTVisitor):
    """The identifiers of a function that name variables: not the attribute of
    ``a.b``, nor the keyword of ``f(b=1)``."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Name(self, node: cst.Name) -> bool:
        self.names.add(node.value)
        return False

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)
        return False


def _variable_names(func: cst.FunctionDef) -> set[str]:
    visitor = _VariableNames()
    func.visit(visitor)
    return visitor.names


def _transform(source: str, first_line: int) -> TransformResult:
    offset = first_line - 1
    if source[:1].isspace():
        source = "if 1:\n" + source
        offset -= 1
    try:
        tree: ast.Module | None = ast.parse(source)
    except (SyntaxError, ValueError):
        tree = None
    original_tree = tree
    rewritten = _genexps.rewrite(source, tree) if tree is not None else source
    rewritten = _hide_helper_locals(rewritten)
    added_names: frozenset[str] = frozenset()
    if rewritten is not source:
        added_names = frozenset(n for n in (RT, *_genexps.ADDED_NAMES) if n not in source)
        source = rewritten
        tree = ast.parse(source) if tree is not None else None
    module = cst.parse_module(source)
    positions = Positions(module, source, tree)
    func = _find_function(module)
    found = positions.get(func)
    assert found is not None
    def_line = found[0] + offset  # the ``def`` line (not the first decorator's)
    used, unstable = survey(func)
    reserved = sorted(n for n in used - added_names if n.startswith("_cs_") or n in GLOBAL_NAMES)
    if reserved:
        # an attribute or a keyword argument spelled so (``obj._cs_x``, ``f(_cs_x=1)``) is
        # no variable of the frame: only names that are would clash
        reserved = [n for n in reserved if n in _variable_names(func)]
    if reserved:
        raise UnsupportedSyntax(
            f"the name {reserved[0]!r} is reserved for contsnap's generated code; rename it",
            def_line,
        )
    is_async = func.asynchronous is not None
    if not is_async and not suspends(func.body):
        raise UnsupportedSyntax("the function body contains no yield", def_line)
    processor = BodyProcessor(module, positions, offset)
    processor._line = def_line
    processor.unstable = unstable
    processor.bare_return = is_async and contains(func.body, (cst.Yield,))
    out = processor.body(func.body)
    processor.finish_labels()
    params, first = _params(func.params)
    return TransformResult(
        name=func.name.value,
        def_line=def_line,
        params=params,
        first_param=first,
        fresh=out.fresh,
        resume=out.resume,
        labels=processor.labels,
        fingerprint=_function_fingerprint(module, func, original_tree),
        indent=module.default_indent,
        is_async=is_async,
    )
