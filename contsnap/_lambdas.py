"""Generator lambdas: found in a module's syntax tree, marked, and read as a ``def``.

``lambda: (yield x)`` makes a generator function like any ``def``, but the
transform reads ``def`` statements. A generator lambda's source is therefore
handed to it as the one-line ``def`` it stands for::

    lambda a, b=1: (yield a)   ->   def __contsnap_lambda__(a, b=None): return ((yield a))

(the body's value is what the generator returns, as with a lambda). Only the
parameters' names and kinds matter there: defaults are evaluated by the
lambda expression itself, in the user's code. The ``def`` is placed on the
line where the lambda's body starts, so every line number maps back to the
user's file.

Under ``mark_all`` the import hook wraps each generator lambda in a call that
marks it, ``__contsnap_mark_lambda__(lambda ...: ..., N)``, ``N`` numbering the
module's generator lambdas in source order: in the module's syntax tree (no
column moves) and, for code that the transform copies (a generator lambda
inside a transformed function), in the text that the transform reads.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterable

#: The name of mark_all's lambda marker in a hooked module.
MARK_LAMBDA_NAME = "__contsnap_mark_lambda__"
#: The name a generator lambda's ``def`` has while it is transformed.
DEF_NAME = "__contsnap_lambda__"
LAMBDA_NAME = "<lambda>"


def own_scope_yields(nodes: Iterable[ast.AST]) -> bool:
    """Does code made of ``nodes`` yield in its own scope? Nested functions, lambdas
    and classes are cut off (their decorators, defaults and bases still belong to it).
    What makes a ``def`` or a lambda a generator function."""
    stack: list[ast.AST] = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            if not isinstance(node, ast.Lambda):
                stack.extend(node.decorator_list)
            stack.extend(node.args.defaults)
            stack.extend(d for d in node.args.kw_defaults if d is not None)
        elif isinstance(node, ast.ClassDef):
            stack.extend(node.decorator_list)
            stack.extend(node.bases)
            stack.extend(k.value for k in node.keywords)
        else:
            stack.extend(ast.iter_child_nodes(node))
    return False


def generator_lambdas(tree: ast.AST) -> list[ast.Lambda]:
    """The generator lambdas of a tree, in source order.

    Those inside f-strings are left out: before 3.12 the positions of an
    f-string's expressions are not reliable enough to mark them in the text.
    """
    found: list[ast.Lambda] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.JoinedStr):
                continue
            if isinstance(child, ast.Lambda) and own_scope_yields([child.body]):
                found.append(child)
            visit(child)

    visit(tree)
    found.sort(key=lambda n: (n.lineno, n.col_offset))
    return found


def _char_col(line: str, byte_col: int) -> int:
    """``ast`` columns count UTF-8 bytes; str indexes count characters."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", "replace"))


def wrap_lines(lines: list[str], found: list[ast.Lambda]) -> dict[int, str]:
    """The lines (1-based) that change when each lambda of ``found`` is wrapped in its mark.

    ``found[n]`` gets the number ``n``. An inner lambda's closing text comes
    before its outer one's where the two end together.
    """
    edits: dict[int, list[tuple[int, int, str]]] = {}
    for number, node in enumerate(found):
        end_line = node.end_lineno or node.lineno
        end_col = node.end_col_offset if node.end_col_offset is not None else node.col_offset
        # at one position: closings before openings, inner closings (later numbers) first
        edits.setdefault(node.lineno, []).append((node.col_offset, 1, f"{MARK_LAMBDA_NAME}("))
        edits.setdefault(end_line, []).append((end_col, 0, f", {number})"))
    changed: dict[int, str] = {}
    for lineno, line_edits in edits.items():
        line = lines[lineno - 1]
        # applied right to left; at one column, the text applied last comes first
        for col, _, text in sorted(line_edits, key=lambda e: (e[0], e[1]), reverse=True):
            at = _char_col(line, col)
            line = line[:at] + text + line[at:]
        changed[lineno] = line
    return changed


def marked_lambdas(tree: ast.AST) -> dict[int, ast.Lambda]:
    """The lambdas that `wrap_lines` marked, by number, in a tree of the wrapped text."""
    found: dict[int, ast.Lambda] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == MARK_LAMBDA_NAME
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Lambda)
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, int)
        ):
            found[node.args[1].value] = node.args[0]
    return found


def as_def(node: ast.Lambda, text: str) -> tuple[str, int]:
    """The one-line ``def`` that the transform reads for ``node`` (found in ``text``).

    Returns the source and the line it stands on (where the lambda's body starts).
    """
    args = copy.copy(node.args)
    args.defaults = [ast.Constant(None) for _ in args.defaults]
    args.kw_defaults = [None if d is None else ast.Constant(None) for d in args.kw_defaults]
    body = ast.get_source_segment(text, node.body)
    if body is None:
        raise ValueError("the lambda's body has no position")
    return f"def {DEF_NAME}({ast.unparse(args)}): return ({body})\n", node.body.lineno


def source_for(text: str, line: int) -> tuple[str, int] | str:
    """The ``def`` source of the one generator lambda at ``line`` of a whole file's ``text``.

    Returns an explanation instead when there is no such lambda or more than one.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        return f"its file does not parse ({exc.msg}, line {exc.lineno})"
    on_line = [n for n in generator_lambdas(tree) if n.lineno == line]
    if len(on_line) != 1:
        count = "no" if not on_line else str(len(on_line))
        return (
            f"line {line} holds {count} generator lambdas; make it a generator function "
            "with def, or import the module through contsnap.install_import_hook(..., "
            "mark_all=True)"
        )
    return as_def(on_line[0], text)
