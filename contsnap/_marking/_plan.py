"""Which functions mark_all marks in a hooked module, and the decorator it marks them with.

The plan is made from the module's syntax tree before it is compiled: every generator
function, coroutine function and async generator function (and generator lambda) gets
`mark` added as its innermost decorator, at the ``def``'s own line, so no line number
moves.
"""

from __future__ import annotations

import ast
import inspect
import io
import tokenize
import types
import warnings
from typing import Any

from .. import _lambdas, _runtime
from .._errors import NotCheckpointableError
from .._labels import HELPERS, RT, helper
from .._registry import STATE
from . import _marking

#: The name mark_all's decorator has in a hooked module (never mangled: it ends in ``__``).
MARK_NAME = "__contsnap_mark__"


def _yields(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return _lambdas.own_scope_yields(func.body)


#: The kinds of ``def`` that mark_all marks: generator functions, coroutine functions
#: and async generator functions (generator lambdas: see `contsnap._lambdas`).
MARKED_KINDS: tuple[type[ast.AST], ...] = (ast.FunctionDef, ast.AsyncFunctionDef)
_FUNCTION_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _marks(node: ast.AST) -> bool:
    """Does mark_all mark this node? Generator functions, and whatever MARKED_KINDS adds."""
    if not isinstance(node, MARKED_KINDS):
        return False
    return isinstance(node, ast.AsyncFunctionDef) or (
        isinstance(node, ast.FunctionDef) and _yields(node)
    )


def _may_mark(data: bytes) -> bool:
    """Cheap test on a module's bytes: could it hold a function that mark_all marks?"""
    return b"yield" in data or (ast.AsyncFunctionDef in MARKED_KINDS and b"async" in data)


def _explicit(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Already decorated with ``@checkpointable`` or ``@contsnap.checkpointable``."""
    for deco in node.decorator_list:
        if isinstance(deco, ast.Name) and deco.id == "checkpointable":
            return True
        if isinstance(deco, ast.Attribute) and deco.attr == "checkpointable":
            return True
    return False


def _first_line(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Where the function's source starts (its first decorator): its ``co_firstlineno``."""
    return min([node.lineno, *(d.lineno for d in node.decorator_list)])


def _is_future_import(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"


def _decode(data: bytes) -> str:
    """``importlib.util.decode_source``, without its ``import tokenize``: hooking tokenize
    itself re-imports it, and that import would find the half-made hooked module."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return io.IncrementalNewlineDecoder(None, True).decode(data.decode(encoding))


class Plan:
    """What the hook does to one module's source, worked out from its syntax tree.

    ``spans`` maps every possible ``co_firstlineno`` of a function to the lines of
    its source. ``overrides`` replace, in the text handed to the transform only,
    the blank or comment line above a generator function nested in another
    transformed function by an ``@__contsnap_mark__`` line: the outer function is
    compiled from that text, so this is the only way its inner functions get
    marked without moving a line.
    """

    def __init__(self, tree: ast.Module, lines: list[str], filename: str, mark_all: bool) -> None:
        self.marked: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
        #: first lines of the functions mark_all decorates (kept after apply())
        self.marked_lines: set[int] = set()
        #: first lines of every function that will be transformed (marked or explicit)
        self.transformed: dict[int, str] = {}
        self.spans: dict[int, tuple[int, int]] = {}
        self.overrides: dict[int, str] = {}
        self.notes: list[tuple[str, int]] = []
        #: mark_all's generator lambdas, numbered by position (nodes: until apply())
        self.lambdas: list[ast.Lambda] = []
        #: each generator lambda's source as the def the transform reads, and its line
        self.lambda_defs: dict[int, tuple[str, int]] = {}
        self._lines = lines
        self._filename = filename
        self._mark_all = mark_all
        #: what apply() added to the tree, for take_back(): the marked nodes and where the
        #: imports went (None: nothing to take back)
        self._applied: tuple[list[ast.FunctionDef | ast.AsyncFunctionDef], int] | None = None
        self._visit(tree, [])
        if mark_all:
            self._mark_lambdas(tree)

    def _visit(self, node: ast.AST, outer: list[ast.FunctionDef | ast.AsyncFunctionDef]) -> None:
        # a def is a statement: only the statement lists are walked (expressions hold
        # none), in the order ast.iter_child_nodes gives them
        for field in _STATEMENT_FIELDS:
            for child in getattr(node, field, ()):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self._function(child, outer)
                    self._visit(child, [*outer, child])
                else:
                    self._visit(child, outer)

    def _mark_lambdas(self, tree: ast.Module) -> None:
        """Number the generator lambdas; the transform reads them wrapped in their mark."""
        if not any("lambda" in line for line in self._lines):
            return
        self.lambdas = _lambdas.generator_lambdas(tree)
        if not self.lambdas:
            return
        wrapped = _lambdas.wrap_lines(self._lines, self.lambdas)
        self.overrides.update(wrapped)
        lines = [wrapped.get(n, line) for n, line in enumerate(self._lines, 1)]
        text = "\n".join(lines)
        for number, node in _lambdas.marked_lambdas(ast.parse(text, self._filename)).items():
            self.lambda_defs[number] = _lambdas.as_def(node, text)

    def _function(
        self,
        node: ast.FunctionDef | ast.AsyncFunctionDef,
        outer: list[ast.FunctionDef | ast.AsyncFunctionDef],
    ) -> None:
        first = _first_line(node)
        end = node.end_lineno or node.lineno
        self.spans[first] = (first, end)
        # a decorated def nested in transformed code starts at its def line there
        self.spans.setdefault(node.lineno, (first, end))
        explicit = _explicit(node)
        marked = (
            self._mark_all
            and not explicit
            # the walk of _marks only where the text can hold a yield
            and (not isinstance(node, ast.FunctionDef) or self._spells_yield(node.lineno, end))
            and _marks(node)
        )
        if not (marked or explicit):
            return
        self.transformed[first] = node.name
        if not marked:
            return
        self.marked.append(node)
        self.marked_lines.add(first)
        host = next((f for f in outer if self.transformed.get(_first_line(f)) == f.name), None)
        if host is None:
            return
        free = first - 1
        above = self._lines[free - 1] if free >= 1 else "#"
        before = self._lines[free - 2] if free >= 2 else ""
        if (not above.strip() or above.lstrip().startswith("#")) and not before.endswith("\\"):
            line = self._lines[first - 1]
            self.overrides[free] = line[: len(line) - len(line.lstrip())] + "@" + MARK_NAME
            self.spans[free] = (free, end)
        else:
            self.notes.append(
                (
                    f"contsnap: {node.name} ({self._filename}:{node.lineno}) is nested in the "
                    f"transformed generator function {host.name} and stays a plain generator "
                    f"there: leave a blank or comment line above it, or decorate it with "
                    f"@contsnap.checkpointable",
                    node.lineno,
                )
            )

    def _spells_yield(self, first: int, end: int) -> bool:
        return any("yield" in line for line in self._lines[first - 1 : end])

    def apply(self, tree: ast.Module, runtime: bool = False, keep: bool = False) -> None:
        """Decorate the marked functions, innermost, at their own ``def`` line, and wrap
        the generator lambdas in their mark.

        The import that brings the marks also binds contsnap's runtime under the name
        transformed code reads it by; ``runtime`` asks for it with no mark left (the
        module code holds transformed functions that no mark call will set it up for).
        The import runs only if the module's namespace lacks the marks: the hook's loader
        binds them before the module runs (see `bind`), so a hooked import does no import
        statement, which costs more than the rest of a warm import's own work; the code run
        any other way (``runpy``, ``loader.get_code``) imports them.
        ``keep``: remember what was added, so that `take_back` can undo it.
        """
        self._applied = None
        if not (self.marked or self.lambdas or runtime):
            return
        wrapped = bool(self.lambdas)
        if self.lambdas:
            _LambdaMarker(self.lambdas).visit(tree)
            self.lambdas = []
        for node in self.marked:
            mark = ast.Name(MARK_NAME, ast.Load())
            ast.copy_location(mark, node)
            mark.end_lineno, mark.end_col_offset = node.lineno, node.col_offset
            node.decorator_list.append(mark)
        body = tree.body
        at = 0
        first = body[0] if body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            at = 1 if isinstance(first.value.value, str) else 0
        while at < len(body) and _is_future_import(body[at]):
            at += 1
        where = body[at] if at < len(body) else body[-1]
        aliases = [
            ast.alias(name="mark", asname=MARK_NAME),
            ast.alias(name="mark", asname=_lambdas.MARK_LAMBDA_NAME),  # mark(fn, number)
            ast.alias(name=_runtime.__name__.rpartition(".")[2], asname=RT),
        ]
        helpers = [ast.alias(name=name, asname=helper(name)) for name in HELPERS]
        imp = ast.ImportFrom(module=__name__, names=aliases, level=0)
        imp_helpers = ast.ImportFrom(module=_runtime.__name__, names=helpers, level=0)
        # try: __contsnap_mark__ / except NameError: <the two imports>
        probe = ast.Expr(ast.Name(MARK_NAME, ast.Load()))
        name_error = ast.Name("NameError", ast.Load())
        fallback = ast.ExceptHandler(name_error, None, [imp, imp_helpers])
        guard = ast.Try([probe], [fallback], [], [])
        located_nodes: list[ast.AST] = [guard, probe, probe.value, fallback, name_error]
        for located in [*located_nodes, imp, *aliases, imp_helpers, *helpers]:
            ast.copy_location(located, where)
            located.end_lineno = where.lineno  # type: ignore[attr-defined]
            located.col_offset = located.end_col_offset = 0  # type: ignore[attr-defined]
        body[at:at] = [guard]
        if keep and not wrapped:  # a wrapped lambda cannot be unwrapped: parse again
            self._applied = (list(self.marked), at)
        self.marked.clear()  # the record keeps the plan, not the tree

    def take_back(self, tree: ast.Module) -> bool:
        """Undo ``apply(tree, keep=True)``: the tree as parsed again, its marked nodes in
        ``marked``, for another apply(). False (tree untouched) when it cannot."""
        applied, self._applied = self._applied, None
        if applied is None:
            return False
        nodes, at = applied
        for node in nodes:
            node.decorator_list.pop()
        del tree.body[at]
        self.marked = nodes
        return True

    def let_go(self) -> None:
        """Forget what apply() added (the tree it was applied to is not taken back)."""
        self._applied = None


#: the fields that hold statements (or handlers and match cases, which hold statements),
#: in the order of the node classes' ``_fields``
_STATEMENT_FIELDS = ("body", "handlers", "cases", "orelse", "finalbody")


class _LambdaMarker(ast.NodeTransformer):
    """Wraps each given lambda in ``__contsnap_mark_lambda__(lambda, number)``, in place."""

    def __init__(self, lambdas: list[ast.Lambda]) -> None:
        self._numbers = {id(node): number for number, node in enumerate(lambdas)}

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        self.generic_visit(node)
        number = self._numbers.get(id(node))
        if number is None:
            return node
        func = ast.Name(_lambdas.MARK_LAMBDA_NAME, ast.Load())
        constant = ast.Constant(number)
        call = ast.Call(func, [node, constant], [])
        for located in (call, func, constant):
            ast.copy_location(located, node)
        func.end_lineno, func.end_col_offset = node.lineno, node.col_offset
        return call


# --- mark_all's decorator -----------------------------------------------------------------

#: Codes mark_all gave up on, by identity: equal code objects of other files (code
#: equality ignores the file) or of a later import are tried on their own.
_REFUSED: dict[int, types.CodeType] = {}
STATE.add(__name__, "_REFUSED")


def mark(fn: Any, lambda_number: int | None = None) -> Any:
    """``@checkpointable`` as mark_all applies it: a refusal warns and keeps the function.

    A generator lambda is marked by ``mark(lambda ..., number)``, its number in the
    module (see `contsnap._lambdas`).
    """
    if not isinstance(fn, types.FunctionType):
        return fn
    code = fn.__code__
    if not code.co_flags & _FUNCTION_FLAGS or _REFUSED.get(id(code)) is code:
        return fn
    try:
        return _marking.make_checkpointable(fn, lambda_number)
    except Exception as exc:
        _REFUSED[id(code)] = code
        if isinstance(exc, NotCheckpointableError):
            reason = str(exc)
        else:
            reason = f"contsnap failed, please report it: {type(exc).__name__}: {exc}"
        warnings.warn(
            f"contsnap: {fn.__qualname__} ({code.co_filename}:{code.co_firstlineno}) stays "
            f"a plain generator function: {reason}",
            RuntimeWarning,
            stacklevel=2,
        )
        return fn


#: What the import that `Plan.apply` adds binds, as (name, value) pairs.
_BINDINGS = (
    (MARK_NAME, mark),
    (_lambdas.MARK_LAMBDA_NAME, mark),
    (RT, _runtime),
    *((helper(name), getattr(_runtime, name)) for name in HELPERS),
)


def bind(namespace: dict[str, Any]) -> None:
    """Bind in a hooked module's namespace, before its code runs, what the import that
    `Plan.apply` adds binds: the code then skips that import."""
    namespace.update(_BINDINGS)
