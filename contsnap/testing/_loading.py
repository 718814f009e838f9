"""Loading program text as real modules (``inspect.getsource`` must work on them), and
comparing a program's generators natively and marked."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import itertools
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import cast

from .._lambdas import own_scope_yields
from .._registry import STATE
from ._actions import MODES, Action, Mode, Send, Trace
from ._compare import _check, _context
from ._driver import SnapshotBackend
from ._log import LOG


def _is_generator_function(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether ``yield`` occurs in the function's own scope (not in nested ones)."""
    return own_scope_yields(node.body)


def _makes_a_context_manager(decorator: ast.expr) -> bool:
    name = decorator.attr if isinstance(decorator, ast.Attribute) else getattr(decorator, "id", "")
    return name in ("contextmanager", "asynccontextmanager")


def mark_generators(source: str) -> str:
    """Return ``source`` with every top-level generator function, coroutine function
    and async generator function, and every such method of a top-level class,
    decorated by ``@contsnap.checkpointable`` (outermost; innermost under a
    ``@contextmanager``/``@asynccontextmanager``, which makes a plain function of it);
    ``import contsnap`` is added."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    methods = [
        member
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        for member in node.body
        if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    decorate = [
        node
        for node in [*tree.body, *methods]
        if isinstance(node, ast.AsyncFunctionDef)
        or (isinstance(node, ast.FunctionDef) and _is_generator_function(node))
    ]
    for function in sorted(decorate, key=lambda function: function.lineno, reverse=True):
        first = function.decorator_list[0] if function.decorator_list else function
        if any(_makes_a_context_manager(d) for d in function.decorator_list):
            first = function  # the `def` line: below every decorator
        indent = " " * function.col_offset
        lines.insert(first.lineno - 1, indent + "@contsnap.checkpointable\n")
    # The import goes after the docstring and any `from __future__` import.
    first_plain = 0
    for node in tree.body:
        is_docstring = (
            node is tree.body[0]
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        )
        if not (is_docstring or (isinstance(node, ast.ImportFrom) and node.module == "__future__")):
            break
        first_plain = cast(int, node.end_lineno)
    lines.insert(first_plain, "import contsnap\n")
    return "".join(lines)


_module_serial = itertools.count()
STATE.add(__name__, "_module_serial", None, "a counter: module names stay unique")
_nonces = itertools.count(1)
STATE.add(__name__, "_nonces", None, "a counter: nonces stay unique")


@contextlib.contextmanager
def load_program(source: str, *, marked: bool = False) -> Iterator[ModuleType]:
    """Import ``source`` from a real file in a temporary directory, for the ``with`` block.

    A real file lets ``inspect.getsource`` (and so ``@checkpointable``) read the functions; the
    module is in ``sys.modules`` while the block runs, so that pickle can refer to its functions and
    classes by name. With ``marked``, the generator functions are decorated first
    ([`mark_generators`][contsnap.testing.mark_generators]).
    """
    text = mark_generators(source) if marked else source
    name = f"_contsnap_program_{next(_module_serial)}"
    with tempfile.TemporaryDirectory(prefix="contsnap-program-") as directory:
        path = Path(directory) / f"{name}.py"
        path.write_text(text, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
            yield module
        finally:
            sys.modules.pop(name, None)
            from contsnap._marking._decorator import forget_module

            forget_module(name)  # thousands of programs must not pile up in memory


@contextlib.contextmanager
def _native_and_marked(
    source: str, modes: Sequence[str], actions: Sequence[object]
) -> Iterator[tuple[ModuleType, ModuleType]]:
    """Import ``source`` as is and, if a mode needs it, marked; set ``NONCE`` in both."""
    with contextlib.ExitStack() as stack:
        native = stack.enter_context(load_program(source))
        marked = native
        if any(mode != "native" for mode in modes):
            try:
                marked = stack.enter_context(load_program(source, marked=True))
            except Exception as exc:
                raise AssertionError(
                    f"importing the program marked @contsnap.checkpointable failed:"
                    f" {type(exc).__name__}: {exc}\n{_context(source, actions)}"
                ) from exc
        nonce = next(_nonces)
        for module in {native, marked}:
            if hasattr(module, "NONCE"):
                setattr(module, "NONCE", nonce)  # noqa: B010
        yield native, marked


def assert_equivalent(
    source_or_module: str | ModuleType,
    sends: Sequence[object],
    *,
    arg: object = 0,
    entry: str = "gen",
    modes: Sequence[Mode] = MODES,
    fork_at: int | None = None,
    fill: Action | None = Send(None),
    max_steps: int = 10_000,
    backend: SnapshotBackend | None = None,
) -> dict[str, Trace]:
    """Assert that ``entry(arg, log)`` of a program module gives the same transcript
    natively, transformed, round-tripped at every suspension, and forked.

    ``source_or_module`` is module source text (as
    [`generator_programs`][contsnap.testing.generator_programs] draws) or an imported module, whose
    source is re-imported twice: as is, and with its generator functions marked
    ``@contsnap.checkpointable``. ``sends`` are the driver actions, as for
    [`run_trace`][contsnap.testing.run_trace]. On a difference, the ``AssertionError`` shows the
    numbered program, the actions and a diff.

    ``backend`` is as for [`run_trace`][contsnap.testing.run_trace] (default: contsnap).

    A global ``NONCE`` in the module is set to a fresh number in both copies,
    so that a generator restored into the globals of another module (say, an
    earlier copy of the same program) logs a different one.
    """
    source = (
        source_or_module
        if isinstance(source_or_module, str)
        else inspect.getsource(source_or_module)
    )
    with _native_and_marked(source, modes, sends) as (native, marked):
        return _check(
            getattr(native, entry),
            getattr(marked, entry),
            (arg, LOG),
            sends,
            subject=source,
            modes=modes,
            fork_at=fork_at,
            fill=fill,
            max_steps=max_steps,
            backend=backend,
        )
