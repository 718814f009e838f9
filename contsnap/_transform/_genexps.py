"""Generator expressions made checkpointable: each is built through a factory the snapshot can name.

A generator expression has no function to mark, and its closure cells are not
reachable from the generator on 3.11+. Inside a transformed function each one
is therefore written as a call that hands its outermost iterable and a factory
lambda to the runtime::

    (f(x) for x in xs if x)
    ->  (__contsnap_rt__.genexp(xs, lambda _cs_gx: (f(x) for x in _cs_gx if x)))

The result is still the native generator expression, built from the same
iterator at the same moment (``iter(xs)`` is called when it is made); the
runtime remembers its factory, whose closure holds the cells the expression
reads. A generator expression with a single ``for`` paused at its yield has no
state but that iterator (the loop variable is bound again before it is read),
so a snapshot saves the factory and the iterator and a restore calls the
factory again. Several ``for`` clauses are nested into one ``for`` over a
chain of single-``for`` expressions, so that every iterator is reachable.

The text is rewritten in place before the transform parses it: no line moves
(a rewrite that would move one is left out, and such an expression is refused
by the snapshot as before).
"""

from __future__ import annotations

import ast
from collections.abc import Callable

from .._labels import RT

#: the factory lambda's parameter (the iterator the expression loops over)
PARAM = "_cs_gx"
#: names the rewrite may add to the function's text
ADDED_NAMES = frozenset({PARAM, PARAM + "v", RT})

#: calls that consume a generator expression argument at once: it cannot outlive them
_CONSUMERS = frozenset(
    {"sum", "any", "all", "min", "max", "list", "tuple", "set", "frozenset", "sorted", "dict"}
    | {"bytes", "bytearray", "next", "join", "update", "extend"}
)


def _consumed(node: ast.GeneratorExp, parents: dict[int, ast.AST]) -> bool:
    parent = parents.get(id(node))
    if not isinstance(parent, ast.Call) or parent.args != [node] or parent.keywords:
        return False
    func = parent.func
    name = (
        func.id
        if isinstance(func, ast.Name)
        else func.attr
        if isinstance(func, ast.Attribute)
        else None
    )
    return name in _CONSUMERS


class _Text:
    """The source as one string, addressed by ``ast`` positions (UTF-8 byte columns)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.starts = [0]
        for line in source.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))
        self.lines = source.splitlines(keepends=True)

    def offset(self, line: int, byte_col: int) -> int:
        text = self.lines[line - 1]
        return self.starts[line - 1] + len(
            text.encode("utf-8")[:byte_col].decode("utf-8", "replace")
        )

    def span(self, node: ast.AST) -> tuple[int, int]:
        assert isinstance(node, (ast.expr, ast.comprehension))
        if isinstance(node, ast.comprehension):
            node = node.target
        end_line, end_col = node.end_lineno, node.end_col_offset
        assert end_line is not None and end_col is not None
        return self.offset(node.lineno, node.col_offset), self.offset(end_line, end_col)


def _suspends(node: ast.AST) -> bool:
    return any(isinstance(n, (ast.Yield, ast.YieldFrom, ast.Await)) for n in ast.walk(node))


def _rewritable(node: ast.GeneratorExp, text: _Text) -> bool:
    """In place without moving a line, its text the parenthesised expression, and no
    walrus (which binds in the enclosing function, that the factory would become)."""
    start, end = text.span(node)
    if text.source[start] != "(" or text.source[end - 1] != ")":
        return False
    if any(isinstance(n, ast.NamedExpr) for n in ast.walk(node)):
        return False
    first = node.generators[0].iter
    if len(node.generators) > 1:
        # nested into a chain of single-for expressions: written on one line, and not
        # asynchronous (a chain of async generators is no iterator)
        return (
            node.lineno == node.end_lineno
            and not any(c.is_async for c in node.generators)
            and not any(isinstance(n, ast.Await) for n in ast.walk(node))
        )
    if first.lineno != first.end_lineno:
        return False  # moved ahead of the expression, its lines would move
    return first.lineno == node.lineno or not _suspends(first)


def _clauses(node: ast.GeneratorExp, render: Callable[[ast.AST], str]) -> str:
    """The one-line text of ``node``, each clause after the first nested in the last."""
    return _nest(render(node.elt), node.generators, render)


def _nest(elt: str, clauses: list[ast.comprehension], render: Callable[[ast.AST], str]) -> str:
    first, rest = clauses[0], clauses[1:]
    inner = elt if not rest else _nest(elt, rest, render)
    # each part in parentheses: ast spans leave out a part's own (yield 1), (a if b else c)
    conditions = "".join(f" if ({render(c)})" for c in first.ifs)
    loop = "async for" if first.is_async else "for"
    made = (
        f"{RT}.genexp(({render(first.iter)}), lambda {PARAM}: "
        f"(({inner}) {loop} {render(first.target)} in {PARAM}{conditions}))"
    )
    if not rest:
        return made
    flat = f"lambda {PARAM}: ({PARAM}v for {PARAM}v in {PARAM})"
    return f"{RT}.genexp({RT}.chain_genexps({made}), {flat})"


def rewrite(source: str, tree: ast.Module) -> str:
    """``source`` with the generator expressions of the first function's body made through
    ``RT.genexp`` (the same text when there is none)."""
    func = next(
        (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))),
        None,
    )
    if func is None or "for" not in source:
        return source
    parents: dict[int, ast.AST] = {}
    found: list[ast.GeneratorExp] = []
    stack: list[ast.AST] = list(func.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.JoinedStr):
            continue  # positions inside f-strings are not reliable before 3.12
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
            stack.append(child)
        if isinstance(node, ast.GeneratorExp):
            found.append(node)
    if not found:
        return source
    text = _Text(source)
    chosen = [n for n in found if not _consumed(n, parents) and _rewritable(n, text)]
    if not chosen:
        return source
    spans = {text.span(n): n for n in chosen}

    def render(start: int, end: int) -> str:
        """The text between two offsets, with each chosen expression inside rewritten."""
        out: list[str] = []
        at = start
        for (g_start, g_end), node in sorted(spans.items()):
            if g_start < at or g_end > end:
                continue
            out.append(text.source[at:g_start])
            if len(node.generators) > 1:
                out.append(f"({_clauses(node, render_node)})")
            else:
                first_start, first_end = text.span(node.generators[0].iter)
                out.append(
                    f"({RT}.genexp(({render(first_start, first_end)}), lambda {PARAM}: "
                    f"{render(g_start, first_start)}{PARAM}{render(first_end, g_end)}))"
                )
            at = g_end
        out.append(text.source[at:end])
        return "".join(out)

    def render_node(node: ast.AST) -> str:
        return render(*text.span(node))

    return render(0, len(source))
