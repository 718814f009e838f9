"""The import hook: transform the generator functions of named modules as they are imported.

[`install_import_hook`][contsnap.install_import_hook] puts a finder first in ``sys.meta_path``. It
claims only the modules it was given (a name also claims its submodules) that
are plain ``.py`` sources, and loads them with `HookLoader`, a
``SourceFileLoader`` whose ``get_code`` returns the module's code with, under
``mark_all``, every generator function decorated by `mark`. The extra
decorator is added to the syntax tree at the ``def``'s own line, so no line
number moves. Each hooked file gets a `HookedModule` record that
``@checkpointable`` asks for the function's source (the text that was really
compiled, not whatever the file says now) and that caches every transformed
function on disk (`contsnap._cache`): a warm import runs no libcst at all.
"""

from __future__ import annotations

import ast
import dis
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import io
import os
import sys
import threading
import time
import tokenize
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from . import _cache, _info, _lambdas, _marking, _runtime
from ._errors import NotCheckpointableError
from ._info import Details, FunctionInfo
from ._labels import HELPERS, RT, helper

#: The name mark_all's decorator has in a hooked module (never mangled: it ends in ``__``).
MARK_NAME = "__contsnap_mark__"

_local = threading.local()


@contextmanager
def _building() -> Iterator[None]:
    """While contsnap transforms code in this thread, the hook claims no import."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def _busy() -> bool:
    return getattr(_local, "depth", 0) > 0


# --- which functions mark_all marks -------------------------------------------------------


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
        self._visit(tree, [])
        if mark_all:
            self._mark_lambdas(tree)

    def _visit(self, node: ast.AST, outer: list[ast.FunctionDef | ast.AsyncFunctionDef]) -> None:
        for child in ast.iter_child_nodes(node):
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
        marked = self._mark_all and not explicit and _marks(node)
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

    def apply(self, tree: ast.Module, runtime: bool = False) -> None:
        """Decorate the marked functions, innermost, at their own ``def`` line, and wrap
        the generator lambdas in their mark.

        The import that brings the marks also binds contsnap's runtime under the name
        transformed code reads it by; ``runtime`` asks for it with no mark left (the
        module code holds transformed functions that no mark call will set it up for).
        """
        if not (self.marked or self.lambdas or runtime):
            return
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
        for located in [imp, *aliases, imp_helpers, *helpers]:
            ast.copy_location(located, where)
            located.end_lineno = where.lineno  # type: ignore[attr-defined]
            located.col_offset = located.end_col_offset = 0  # type: ignore[attr-defined]
        body[at:at] = [imp, imp_helpers]
        self.marked.clear()  # the record keeps the plan, not the tree


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


# --- the record of one hooked file --------------------------------------------------------

_MODULES: dict[str, HookedModule] = {}


def forget_module(module: str) -> None:
    """Let go of the records of a module imported under that name (a throwaway module)."""
    for path in [path for path, record in _MODULES.items() if record.module == module]:
        del _MODULES[path]


def _look(path: str) -> tuple[os.stat_result | None, int]:
    """``os.stat`` of a source file, and the time just before: bytes read from it after
    this are stamped with both (see ``_cache.Stamp``)."""
    read_ns = time.time_ns()  # first: a write from now on gives the file a newer ctime
    try:
        return os.stat(path), read_ns
    except OSError:
        return None, read_ns


def read_source(path: str, read: Callable[[str], bytes]) -> tuple[bytes, _cache.Stamp]:
    """A source file's bytes, and how the file looked when they were read."""
    st, read_ns = _look(path)
    return read(path), _cache.Stamp.of(st, read_ns)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def hooked_module(filename: str) -> HookedModule | None:
    """The hook's record of the file a function comes from (None: not a hooked module)."""
    return _MODULES.get(filename)


class HookedModule:
    """One hooked source file: its source as compiled, its plan and its cache entry."""

    def __init__(
        self,
        filename: str,
        data: bytes | None,
        mark_all: bool,
        module: str = "",
        namespace: dict[str, Any] | None = None,
        stamp: _cache.Stamp | None = None,
    ) -> None:
        """``data`` is the source as compiled, with ``stamp`` saying how the file looked
        when it was read. None: not read yet (see `load_warm`)."""
        self.filename = filename
        self._data = data
        self.stamp = stamp or _cache.Stamp()
        self.mark_all = mark_all
        #: round-trip mode wraps every marked function: its module code keeps every mark
        self.mode = ("all-rt" if _marking.roundtrip_mode() else "all") if mark_all else ""
        #: the module's name and globals, when the import system runs it
        self.module = module
        self.namespace = namespace
        #: the module code as compiled here, every marked def with its mark call
        self._marked_code: types.CodeType | None = None
        self.key = _cache.cache_key(data, self.mode)
        self.cache_path = _cache.cache_path(filename, self.mode)
        self.entry = _cache.Entry()
        #: set while the module executes under exec_module: writes wait for its end
        self.deferred = False
        self._dirty = False
        self._restamp = False
        self._lines: list[str] | None = None
        self._plan: Plan | None = None
        self._lock = threading.Lock()

    @property
    def data(self) -> bytes | None:
        """The source the module was compiled from; None if the file changed since."""
        if self._data is None:
            try:
                data = _read_file(self.filename)
            except OSError:
                return None
            if _cache.source_hash(data) != self.key[-1]:
                return None
            self._data = data
        return self._data

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            data = self.data
            self._lines = _decode(data).split("\n") if data is not None else []
        return self._lines

    @property
    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = Plan(self._parse(), self.lines, self.filename, self.mark_all)
            self._plan.marked.clear()  # only apply() needs the nodes: let the tree go
        return self._plan

    def _parse(self) -> ast.Module:
        data = self.data
        return ast.parse(data if data is not None else b"", self.filename)

    def load_warm(self, source: os.stat_result) -> types.CodeType | None:
        """The module's code from a cache file whose stamp vouches for the source
        (``os.stat`` gives ``source`` now): nothing else is read. None: no such file."""
        cached = _cache.read(self.cache_path, self.key, source)
        if cached is None or cached.module_code is None or cached.key is None:
            return None
        self.key = cached.key
        self.stamp = cached.stamp
        return self._loaded(cached)

    def load(self) -> types.CodeType:
        """The module's code: from the cache when it fits, else compiled (and stored)."""
        cached = _cache.read(self.cache_path, self.key)
        if cached is not None and cached.module_code is not None:
            code = self._loaded(cached)  # first: the restamp rewrites the file it was read from
            if self.stamp.trusted and not cached.stamp.same_as(self.stamp):
                self._restamp = True  # the next import need not read the source
                if not self.deferred:
                    self.flush()
            return code
        data = self.data
        assert data is not None
        with _building():
            if self.mark_all:
                tree = self._parse()
                self._plan = Plan(tree, self.lines, self.filename, self.mark_all)
                self._plan.apply(tree)
                code = compile(tree, self.filename, "exec", dont_inherit=True)
                self.entry.notes = tuple(f"{message}\0{line}" for message, line in self._plan.notes)
                self._marked_code = code
            else:
                code = compile(data, self.filename, "exec", dont_inherit=True)
        self.entry.module_code = code
        self._dirty = True
        if not self.deferred:
            self.flush()
        return code

    def _loaded(self, cached: _cache.Entry) -> types.CodeType:
        assert cached.module_code is not None
        self.entry = cached
        if cached.prebuilt:
            self._await_first_use(cached.prebuilt)
        return cached.module_code

    def _await_first_use(
        self, prebuilt: tuple[tuple[_cache.FunctionKey, types.CodeType], ...]
    ) -> None:
        """The cached module code makes these functions with their fresh code and no mark
        call: their infos are built when first asked for (a snapshot, a restore, a load
        by name, ``checkpointable(fn)``)."""
        _info.add_pending(self.module or self.filename, prebuilt, self._first_use)

    def _first_use(
        self,
        code: types.CodeType,
        qualname: str,
        fn: types.FunctionType | None,
        namespace: dict[str, Any] | None,
    ) -> FunctionInfo | None:
        """Build the info of a function made from the cached module code."""
        if fn is None:
            if namespace is None:
                namespace = self.namespace
            if namespace is None:
                module = sys.modules.get(self.module)
                namespace = getattr(module, "__dict__", None)
            if namespace is None:
                return None
            fn = _function_named(namespace, qualname, code)
            if fn is None:  # renamed or replaced: a stand-in carries the info
                cells = tuple(types.CellType() for _ in code.co_freevars)
                fn = types.FunctionType(code, namespace, code.co_name, None, cells or None)
                fn.__qualname__ = qualname
        try:
            _marking.make_checkpointable(fn)
        except NotCheckpointableError:
            return None
        return cast("FunctionInfo | None", fn.__dict__.get("__contsnap__"))

    def notes(self) -> Iterator[tuple[str, int]]:
        for note in self.entry.notes:
            message, _, line = note.rpartition("\0")
            yield message, int(line or 0)

    def function_source(
        self, code: types.CodeType, lambda_number: int | None = None
    ) -> tuple[str, int] | None:
        """The source of the function compiled as ``code``, as the transform should read it."""
        plan = self.plan
        if lambda_number is not None:
            return plan.lambda_defs.get(lambda_number)
        if code.co_name == _lambdas.LAMBDA_NAME:  # decorated by hand: read from its line
            return None
        span = plan.spans.get(code.co_firstlineno)
        if span is None:
            return None
        start, end = span
        lines = self.lines
        if end > len(lines):
            return None
        text = [plan.overrides.get(n, lines[n - 1]) for n in range(start, end + 1)]
        # the function's own override line (if it starts there) is its decorator: keep it
        return "\n".join(text) + "\n", start

    def _located(self, fn: types.FunctionType, lambda_number: int | None) -> tuple[str, int] | None:
        """`function_source`, refusing when the source the module was compiled from
        is gone: the file as it is now may define something else under that name."""
        if self.data is None:
            raise NotCheckpointableError(
                f"the import hook cannot transform {fn.__qualname__}: {self.filename} changed "
                "since it was imported and the hook's cache does not hold this function. "
                "Import the module again."
            )
        return self.function_source(fn.__code__, lambda_number)

    def build(
        self,
        fn: types.FunctionType,
        transform: Callable[[types.FunctionType, str, int], FunctionInfo],
        source_of: Callable[[types.FunctionType], tuple[str, int]],
        lambda_number: int | None = None,
    ) -> FunctionInfo:
        """``fn``'s FunctionInfo: from the cache, or transformed from the hooked source.

        ``lambda_number`` tells a generator lambda marked by mark_all (see
        `contsnap._lambdas`): several can share a line and a qualname.
        """
        code = fn.__code__
        name = code.co_name if lambda_number is None else f"{code.co_name}{lambda_number}"
        key = (fn.__qualname__, code.co_firstlineno, name)
        stored = self.entry.functions.get(key)
        if stored is not None:
            found = _cache.decode_info(
                stored, fn, lambda: self._details(key, fn, transform, source_of, lambda_number)
            )
            if isinstance(found, str):
                raise NotCheckpointableError(found)
            if found is not None:
                return found
        with _building():
            located = self._located(fn, lambda_number)
            if located is None:  # not from this file's text (exec, a stale code object)
                return transform(fn, *source_of(fn))
            try:
                info = transform(fn, *located)
            except NotCheckpointableError as exc:
                self._store(key, _cache.encode_refusal(str(exc)))
                raise
        try:
            self._store(key, *_cache.encode_info(info))
        except _cache.Uncacheable:
            pass
        return info

    def _details(
        self,
        key: _cache.FunctionKey,
        fn: types.FunctionType,
        transform: Callable[[types.FunctionType, str, int], FunctionInfo],
        source_of: Callable[[types.FunctionType], tuple[str, int]],
        lambda_number: int | None,
    ) -> Details:
        """The cached function's labels and resume variant, read on first use."""
        found = _cache.decode_details(self.entry.details_of(key))
        if found is not None:
            return found
        with _building():  # that part of the file is damaged: transform once more
            located = self._located(fn, lambda_number)
            info = transform(fn, *(located or source_of(fn)))
        try:
            self._store(key, *_cache.encode_info(info))  # and write the file whole again
        except _cache.Uncacheable:
            pass
        return Details(info.labels, info.resume_code, info.source)

    def _store(self, key: _cache.FunctionKey, value: tuple[str, Any], details: Any = None) -> None:
        with self._lock:
            self.entry.functions[key] = value
            if details is not None:
                self.entry.details[key] = details
            self._dirty = True
        if not self.deferred:
            self.flush()

    def flush(self) -> None:
        """Write the entry if it changed, keeping functions another process cached meanwhile."""
        with self._lock:
            if self._restamp and not self._dirty:
                self._restamp = False
                _cache.restamp(self.cache_path, self.entry, self.stamp, self.filename)
                return
            if not self._dirty:
                return
            self._dirty = self._restamp = False
            if self.cache_path is None or sys.dont_write_bytecode:
                return  # nothing would be written
            on_disk = _cache.read(self.cache_path, self.key)
            if on_disk is not None:
                for key, value in on_disk.functions.items():
                    if key not in self.entry.functions:
                        self.entry.functions[key] = value
                        details = on_disk.details_of(key)
                        if details is not None:
                            self.entry.details[key] = details
            if self.mode == "all" and self._marked_code is not None:
                self._prebuild()
            _cache.write(self.cache_path, self.key, self.entry, self.filename, self.stamp)

    def _prebuild(self) -> None:
        """The module code to cache: each def whose fresh code can stand in for its plain
        code (see `prebuilt`) compiled with that code and without its mark call."""
        assert self._marked_code is not None
        ready = prebuilt(self._marked_code, self.entry.functions, self.plan.marked_lines)
        if [key for key, _ in ready] == [key for key, _ in self.entry.prebuilt]:
            return
        tree = self._parse()
        plan = Plan(tree, self.lines, self.filename, self.mark_all)
        lines = {key[1] for key, _ in ready}
        plan.marked = [node for node in plan.marked if _first_line(node) not in lines]
        plan.apply(tree, runtime=bool(ready))
        code = compile(tree, self.filename, "exec", dont_inherit=True)
        merged: dict[int, types.CodeType] = {}
        self.entry.module_code = _merge_constants(_replace_codes(code, dict(ready)), {}, merged)
        self.entry.prebuilt = tuple((key, merged.get(id(fresh), fresh)) for key, fresh in ready)
        functions = self.entry.functions
        for key, fresh in self.entry.prebuilt:
            functions[key] = _cache.with_fresh_code(functions[key], fresh)


# --- the cached module code: marked functions compiled in ---------------------------------

_ARG_FLAGS = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS | _FUNCTION_FLAGS


def _doc(code: types.CodeType) -> Any:
    """The ``__doc__`` that MAKE_FUNCTION gives a function of this code."""
    cells = tuple(types.CellType() for _ in code.co_freevars)
    return types.FunctionType(code, {}, None, None, cells or None).__doc__


def _interchangeable(plain: types.CodeType, fresh: types.CodeType) -> bool:
    """Can ``fresh`` stand in for ``plain`` in MAKE_FUNCTION, with no visible difference?

    Same name, qualname and first line (the cache key and tracebacks), same
    parameters (``inspect.signature`` reads them from the code), same free
    variables in the same order (the closure the enclosing code builds), same
    cell variables (so that transforming the function again from this code gives
    what it gave from the plain code) and the same docstring.
    """
    count = plain.co_argcount + plain.co_kwonlyargcount
    count += bool(plain.co_flags & inspect.CO_VARARGS) + bool(
        plain.co_flags & inspect.CO_VARKEYWORDS
    )
    return (
        fresh.co_name == plain.co_name
        and getattr(fresh, "co_qualname", None) == getattr(plain, "co_qualname", None)
        and fresh.co_firstlineno == plain.co_firstlineno
        and fresh.co_filename == plain.co_filename
        and fresh.co_argcount == plain.co_argcount
        and fresh.co_posonlyargcount == plain.co_posonlyargcount
        and fresh.co_kwonlyargcount == plain.co_kwonlyargcount
        and fresh.co_flags & _ARG_FLAGS == plain.co_flags & _ARG_FLAGS
        and fresh.co_varnames[:count] == plain.co_varnames[:count]
        and fresh.co_freevars == plain.co_freevars
        and fresh.co_cellvars == plain.co_cellvars
        and _doc(fresh) == _doc(plain)
    )


def prebuilt(
    code: types.CodeType,
    functions: dict[_cache.FunctionKey, tuple[str, Any]],
    marked: set[int],
    prefix: str = "",
) -> list[tuple[_cache.FunctionKey, types.CodeType]]:
    """The marked functions of ``code`` that can be made with their cached fresh code.

    Only functions that module and class bodies define (once per import, not per
    call of an enclosing function) and whose fresh code passes
    `_interchangeable`: MAKE_FUNCTION then builds the transformed function
    directly, with no mark call, and its info is built on first use (marshal
    stores the shared code object once).
    """
    found: list[tuple[_cache.FunctionKey, types.CodeType]] = []
    for const in code.co_consts:
        if not isinstance(const, types.CodeType) or const.co_name.startswith("<"):
            continue
        qualname = prefix + const.co_name
        if not const.co_flags & inspect.CO_NEWLOCALS:  # a class body
            found += prebuilt(const, functions, marked, qualname + ".")
            continue
        if const.co_firstlineno not in marked:
            continue
        key = (qualname, const.co_firstlineno, const.co_name)
        fresh = _cache.stored_fresh_code(functions.get(key))
        if fresh is None or fresh is const or not _interchangeable(const, fresh):
            continue
        found.append((key, fresh))
    return found


def _replace_codes(
    code: types.CodeType, fresh: dict[_cache.FunctionKey, types.CodeType], prefix: str = ""
) -> types.CodeType:
    """``code`` with the functions named in ``fresh`` made with their fresh code."""
    consts = list(code.co_consts)
    for at, const in enumerate(consts):
        if not isinstance(const, types.CodeType) or const.co_name.startswith("<"):
            continue
        qualname = prefix + const.co_name
        if not const.co_flags & inspect.CO_NEWLOCALS:  # a class body
            consts[at] = _replace_codes(const, fresh, qualname + ".")
        else:
            consts[at] = fresh.get((qualname, const.co_firstlineno, const.co_name), const)
    return code.replace(co_consts=tuple(consts))


def _merge_constants(
    code: types.CodeType, memo: dict[Any, Any], merged: dict[int, types.CodeType]
) -> types.CodeType:
    """``code`` with equal constants, name tuples and location and exception tables shared
    by all its code objects, as CPython's compiler shares them within a module.

    The fresh codes, compiled one by one, share nothing with each other or with the
    module code; sharing makes the cache smaller and its unmarshalling faster (much
    for a module of similar functions, little for most). ``merged`` maps the id of
    each code object rebuilt to its new one.
    """
    if id(code) in merged:  # met before: stays one object
        return merged[id(code)]
    consts = tuple(
        _merge_constants(c, memo, merged) if isinstance(c, types.CodeType) else _shared(c, memo)[0]
        for c in code.co_consts
    )
    tables = {"co_linetable": _shared(code.co_linetable, memo)[0]}
    if sys.version_info >= (3, 11):
        table = code.co_exceptiontable  # type: ignore[attr-defined,unused-ignore]
        tables["co_exceptiontable"] = _shared(table, memo)[0]
    new = code.replace(co_consts=consts, co_names=_shared(code.co_names, memo)[0], **tables)
    merged[id(code)] = new
    return new


def _shared(value: Any, memo: dict[Any, Any]) -> tuple[Any, Any]:
    """The first value met so far that is the same constant, and its key: str, bytes,
    int, bool, None and tuples of those by value (``(1,)`` and ``(True,)`` apart),
    anything else by identity."""
    kind = type(value)
    if kind is tuple:
        pairs = [_shared(item, memo) for item in value]
        key: Any = (tuple, tuple(k for _, k in pairs))
        value = tuple(v for v, _ in pairs)
    elif kind in (str, bytes, int, bool) or value is None:
        key = (kind, value)
    else:
        key = ("id", id(value))
    return memo.setdefault(key, value), key


def _function_named(
    namespace: dict[str, Any], qualname: str, code: types.CodeType
) -> types.FunctionType | None:
    """The function of that qualname in a module namespace, if it still runs ``code``."""
    found: Any = namespace.get(qualname.partition(".")[0])
    for part in qualname.split(".")[1:]:
        found = inspect.getattr_static(found, part, None)
    if isinstance(found, (staticmethod, classmethod)):
        found = found.__func__
    try:
        found = inspect.unwrap(found) if found is not None else None
    except ValueError:
        return None
    if (
        isinstance(found, types.FunctionType)
        and found.__code__.replace(co_flags=code.co_flags) == code
    ):
        return found
    return None


# --- mark_all's decorator -----------------------------------------------------------------

#: Codes mark_all gave up on, by identity: equal code objects of other files (code
#: equality ignores the file) or of a later import are tried on their own.
_REFUSED: dict[int, types.CodeType] = {}


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


# --- finder and loader --------------------------------------------------------------------


_STDLIB: frozenset[str] = frozenset(getattr(sys, "stdlib_module_names", ()))
#: third-party modules the transform imports (libcst and what it imports)
_TRANSFORM_DEPENDENCIES = frozenset({"libcst", "yaml", "typing_extensions"})


class HookLoader(importlib.machinery.SourceFileLoader):
    """A source loader whose code is the hook's: marks compiled in, cached beside the .pyc."""

    def __init__(self, fullname: str, path: str, mark_all: bool) -> None:
        super().__init__(fullname, path)
        self.mark_all = mark_all
        self._executing = 0
        self._namespace: dict[str, Any] | None = None

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        namespace, self._namespace = self._namespace, None
        record = HookedModule(path, None, self.mark_all, fullname, namespace)
        record.deferred = self._executing > 0
        st, read_ns = _look(path)
        code = record.load_warm(st) if st is not None else None
        if code is None:  # no cache file that vouches for the source: read it
            data, stamp = self.get_data(path), _cache.Stamp.of(st, read_ns)
            if not (_may_mark(data) if self.mark_all else b"checkpointable" in data):
                _MODULES.pop(path, None)
                plain = super().get_code(fullname)  # nothing to do: the ordinary .pyc
                assert plain is not None
                return plain
            record = HookedModule(path, data, self.mark_all, fullname, namespace, stamp)
            record.deferred = self._executing > 0
            code = record.load()
        _MODULES[path] = record
        for message, line in record.notes():
            warnings.warn_explicit(message, RuntimeWarning, path, line)
        return code

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        # Still outside sys.modules: if the transform (imported on first use) needs this
        # very module (tokenize, for one), it must get the real one, not the half-made
        # module the hook is about to run.
        top = spec.name.partition(".")[0]
        if "contsnap._transform" not in sys.modules and (
            top in _STDLIB or top in _TRANSFORM_DEPENDENCIES
        ):
            with _building():  # what the transform imports is not hooked
                importlib.import_module("contsnap._transform")
                importlib.import_module("contsnap._compile")
        return super().create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._namespace = module.__dict__  # for the get_code that super() calls
        self._executing += 1
        try:
            super().exec_module(module)
        finally:
            self._executing -= 1
            record = _MODULES.get(self.path)
            if record is not None and record.deferred:
                record.deferred = False
                record.flush()


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, hook: ImportHook) -> None:
        self._hook = hook

    def find_spec(
        self,
        fullname: str,
        path: Any = None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not self._hook.matches(fullname) or _busy():
            return None
        _local.depth = getattr(_local, "depth", 0) + 1  # _building(), without its generator
        try:
            spec = self._source_spec(fullname, path, target)
        finally:
            _local.depth -= 1
        if spec is None or spec.origin is None:
            return None
        spec.loader = HookLoader(fullname, spec.origin, self._hook.mark_all)
        return spec

    def _source_spec(
        self, fullname: str, path: Any, target: types.ModuleType | None
    ) -> importlib.machinery.ModuleSpec | None:
        """The spec the rest of sys.meta_path finds, if it loads a .py file."""
        spec = None
        for finder in sys.meta_path:
            if isinstance(finder, _Finder):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = cast("importlib.machinery.ModuleSpec | None", find(fullname, path, target))
            if spec is not None:
                break
        if spec is None:
            return None
        if type(spec.loader) is importlib.machinery.SourceFileLoader:
            return spec
        origin = spec.origin
        if spec.has_location and origin and origin.endswith(".py") and os.path.isfile(origin):
            return spec  # another source loader (pytest's assertion rewriter, ...)
        if spec.origin == "frozen" or spec.loader is cast(Any, importlib.machinery.FrozenImporter):
            # a frozen stdlib module: its source file, when the installation has it
            found = importlib.machinery.PathFinder.find_spec(fullname, path)
            if found is not None and type(found.loader) is importlib.machinery.SourceFileLoader:
                return found
        return None  # built-in, extension, bytecode-only, zip: left alone


class ImportHook:
    """An installed import hook; ``uninstall()`` (or leaving the ``with`` block) removes it.

    Modules imported while it was installed stay transformed.
    """

    def __init__(self, modules: tuple[str, ...], mark_all: bool) -> None:
        self.modules = modules
        self.mark_all = mark_all
        self._finder = _Finder(self)

    def matches(self, fullname: str) -> bool:
        if fullname == "contsnap" or fullname.startswith("contsnap."):
            return False
        return any(fullname == m or fullname.startswith(m + ".") for m in self.modules)

    @property
    def installed(self) -> bool:
        return self._finder in sys.meta_path

    def install(self) -> ImportHook:
        if not self.installed:
            sys.meta_path.insert(0, self._finder)
        return self

    def uninstall(self) -> None:
        while self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)

    def __enter__(self) -> ImportHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def __repr__(self) -> str:
        state = "installed" if self.installed else "uninstalled"
        extra = ", mark_all=True" if self.mark_all else ""
        return f"<contsnap import hook {list(self.modules)!r}{extra} ({state})>"


def install_import_hook(modules: str | Iterable[str], *, mark_all: bool = False) -> ImportHook:
    """Transform the named modules (and their submodules) when they are imported from now on.

    In those modules ``@checkpointable`` reads the source the module was compiled
    from and its transforms are cached in ``__pycache__``; with ``mark_all=True``
    every generator, coroutine and async generator function (generator lambdas
    included) is made checkpointable as if decorated (a function
    the transform refuses stays as it is, with a ``RuntimeWarning``). Returns a
    handle: call ``.uninstall()``, or use it as a context manager.
    """
    names = (modules,) if isinstance(modules, str) else tuple(modules)
    cleaned = []
    for name in names:
        if not isinstance(name, str) or not name.strip(". "):
            raise ValueError(f"install_import_hook: not a module name: {name!r}")
        cleaned.append(name.strip(". "))
    hook = ImportHook(tuple(cleaned), mark_all)
    _warn_if_late(hook)
    return hook.install()


def _warn_if_late(hook: ImportHook) -> None:
    """Modules the hook covers that were imported before it: they stay as they are."""
    late = sorted(
        name
        for name, module in list(sys.modules.items())
        if hook.matches(name)
        and getattr(module, "__file__", None)
        and not isinstance(getattr(module, "__loader__", None), HookLoader)
    )
    if late:
        shown = ", ".join(late[:5]) + (f" and {len(late) - 5} more" if len(late) > 5 else "")
        warnings.warn(
            f"install_import_hook: {shown} {'was' if len(late) == 1 else 'were'} imported "
            "before the hook was installed and will not be transformed; install the hook "
            "before the first import of those modules (at the top of the program, or in "
            "conftest.py)",
            RuntimeWarning,
            stacklevel=3,
        )


# --- for ``contsnap show`` ----------------------------------------------------------------


def _qualnames(code: types.CodeType, prefix: str) -> Iterator[tuple[str, types.CodeType]]:
    for const in code.co_consts:
        if not isinstance(const, types.CodeType) or const.co_name.startswith("<"):
            continue
        qualname = f"{prefix}{const.co_name}"
        yield qualname, const
        is_function = bool(const.co_flags & inspect.CO_NEWLOCALS)
        yield from _qualnames(const, qualname + (".<locals>." if is_function else "."))


def transformed_functions(
    filename: str, module: str = "__main__"
) -> Iterator[tuple[str, int, FunctionInfo | str]]:
    """(qualname, line, info or refusal) of each function mark_all would transform in a file.

    Nothing of the module runs: the functions are rebuilt from the compiled module's
    code objects, and the hook's disk cache is used and filled as on import.
    """
    data, stamp = read_source(filename, _read_file)
    record = HookedModule(filename, data, mark_all=True, stamp=stamp)
    cached = _cache.read(record.cache_path, record.key)
    if cached is not None:
        record.entry = cached
    record.deferred = True
    module_code = compile(data, filename, "exec", dont_inherit=True)
    plan = record.plan
    names = {"__name__": module}
    try:
        for qualname, code in _qualnames(module_code, ""):
            if code.co_firstlineno not in plan.transformed:
                continue
            if not code.co_flags & _FUNCTION_FLAGS:
                continue
            closure = tuple(types.CellType() for _ in code.co_freevars)
            fn = types.FunctionType(code, names, code.co_name, None, closure or None)
            fn.__qualname__ = qualname
            line = code.co_firstlineno
            try:
                info = record.build(fn, _marking._transform, _marking._source_of)
            except NotCheckpointableError as exc:
                yield qualname, line, str(exc)
            else:
                yield qualname, line, info
        for number, qualname, code in _lambda_codes(record, data):
            closure = tuple(types.CellType() for _ in code.co_freevars)
            fn = types.FunctionType(code, names, code.co_name, None, closure or None)
            fn.__qualname__ = qualname
            line = record.plan.lambda_defs[number][1]
            try:
                info = record.build(fn, _marking._transform, _marking._source_of, number)
            except NotCheckpointableError as exc:
                yield qualname, line, str(exc)
            else:
                yield qualname, line, info
    finally:
        record.deferred = False
        record.flush()


def _lambda_codes(record: HookedModule, data: bytes) -> list[tuple[int, str, types.CodeType]]:
    """(number, qualname, code) of each generator lambda mark_all marks in the module.

    Read from the module compiled with the lambdas wrapped in their numbered mark
    calls, as an import compiles it: each lambda's code is the constant made into a
    function just before its number is loaded.
    """
    if not record.plan.lambda_defs:
        return []
    tree = ast.parse(data, record.filename)
    Plan(tree, record.lines, record.filename, mark_all=True).apply(tree)
    code = compile(tree, record.filename, "exec", dont_inherit=True)
    found: list[tuple[int, str, types.CodeType]] = []
    _find_lambdas(code, "", found)
    return sorted(
        (number, qualname, code)
        for number, qualname, code in found
        if number in record.plan.lambda_defs
    )


def _find_lambdas(
    code: types.CodeType, prefix: str, found: list[tuple[int, str, types.CodeType]]
) -> None:
    instructions = list(dis.get_instructions(code))
    for at, ins in enumerate(instructions):
        made = ins.argval
        if ins.opname != "LOAD_CONST" or not isinstance(made, types.CodeType):
            continue
        qualname = prefix + made.co_name
        if made.co_name == _lambdas.LAMBDA_NAME:
            # 3.10 loads the qualname first; 3.13 sets the closure and defaults after
            rest = instructions[at + 1 : at + 8]
            while rest and rest[0].opname == "LOAD_CONST" and isinstance(rest[0].argval, str):
                rest.pop(0)
            while rest and rest[0].opname in ("MAKE_FUNCTION", "SET_FUNCTION_ATTRIBUTE"):
                rest.pop(0)
            if rest and rest[0].opname == "LOAD_CONST" and type(rest[0].argval) is int:
                found.append((rest[0].argval, qualname, made))
        inner = ".<locals>." if made.co_flags & inspect.CO_NEWLOCALS else "."
        _find_lambdas(made, qualname + inner, found)


# the functions of the modules this hook loaded are built from the source it compiled
_marking.source_providers.append(hooked_module)
_marking.forgetters.append(forget_module)
