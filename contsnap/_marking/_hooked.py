"""The hook's record of one hooked source file: its source as compiled, its plan, its cache
entry (`contsnap._marking._cache`).

``@checkpointable`` asks it for a function's source (the text that was really compiled, not
whatever the file says now), and a warm import finds every marked function compiled in.
"""

from __future__ import annotations

import ast
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from .. import _info, _lambdas
from .._errors import NotCheckpointableError
from .._info import Details, FunctionInfo
from .._registry import STATE
from . import _cache, _cache_key, _marking
from ._plan import Plan, _decode, _first_line
from ._prebuilt import _function_named, _merge_constants, _replace_codes, prebuilt

_local = threading.local()
STATE.add(__name__, "_local", "attributes")


@contextmanager
def _building() -> Iterator[None]:
    """While contsnap transforms code in this thread, the hook claims no import."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


_MODULES: dict[str, HookedModule] = {}
STATE.add(__name__, "_MODULES", None, "hooked modules' records: function records come from them")


def forget_module(module: str) -> None:
    """Let go of the records of a module imported under that name (a throwaway module)."""
    for path in [path for path, record in _MODULES.items() if record.module == module]:
        del _MODULES[path]


def _look(path: str) -> tuple[os.stat_result | None, int]:
    """``os.stat`` of a source file, and the time just before: bytes read from it after
    this are stamped with both (see ``_cache_key.Stamp``)."""
    read_ns = time.time_ns()  # first: a write from now on gives the file a newer ctime
    try:
        return os.stat(path), read_ns
    except OSError:
        return None, read_ns


def read_source(path: str, read: Callable[[str], bytes]) -> tuple[bytes, _cache_key.Stamp]:
    """A source file's bytes, and how the file looked when they were read."""
    st, read_ns = _look(path)
    return read(path), _cache_key.Stamp.of(st, read_ns)


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
        stamp: _cache_key.Stamp | None = None,
    ) -> None:
        """``data`` is the source as compiled, with ``stamp`` saying how the file looked
        when it was read. None: not read yet (see `load_warm`)."""
        self.filename = filename
        self._data = data
        self.stamp = stamp or _cache_key.NO_STAMP
        self.mark_all = mark_all
        #: round-trip mode wraps every marked function: its module code keeps every mark
        self.mode = ("all-rt" if _marking.roundtrip_mode() else "all") if mark_all else ""
        #: the module's name and globals, when the import system runs it
        self.module = module
        self.namespace = namespace
        #: the module code as compiled here, every marked def with its mark call
        self._marked_code: types.CodeType | None = None
        self.key = _cache_key.cache_key(data, self.mode)
        self.cache_path = _cache_key.cache_path(filename, self.mode)
        self.entry = _cache.Entry()
        #: set while the module executes under exec_module: writes wait for its end
        self.deferred = False
        self._dirty = False
        self._restamp = False
        self._lines: list[str] | None = None
        self._plan: Plan | None = None
        #: the module's syntax tree as compiled, kept from load() to the first flush(), where
        #: _prebuild takes the marks back out of it instead of parsing the source again
        self._tree: ast.Module | None = None
        self._lock = threading.Lock()

    @property
    def data(self) -> bytes | None:
        """The source the module was compiled from; None if the file changed since."""
        if self._data is None:
            try:
                data = _read_file(self.filename)
            except OSError:
                return None
            if _cache_key.source_hash(data) != self.key[-1]:
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
                self._plan.apply(tree, keep=self.mode == "all")
                code = compile(tree, self.filename, "exec", dont_inherit=True)
                self._tree = tree
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
        if cached.has_prebuilt():
            self._await_first_use(cached)
        return cached.module_code

    def _await_first_use(self, cached: _cache.Entry) -> None:
        """The cached module code makes the entry's prebuilt functions with their fresh
        code and no mark call: their infos are built when first asked for (a snapshot, a
        restore, a load by name, ``checkpointable(fn)``); which functions they are is
        looked up then too."""
        _info.add_pending(self.module or self.filename, _cache.Prebuilt(cached), self._first_use)

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
        if not (self._dirty or self._restamp or self._tree is not None or self._plan is not None):
            return  # a warm import: nothing to write, nothing kept to let go of
        with self._lock:
            tree, self._tree = self._tree, None  # the module has run: nothing more to apply
            try:
                self._flush(tree)
            finally:
                if self._plan is not None:
                    self._plan.let_go()  # and the nodes kept for take_back go with the tree

    def _flush(self, tree: ast.Module | None) -> None:
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
            self._prebuild(tree)
        _cache.write(self.cache_path, self.key, self.entry, self.filename, self.stamp)

    def _prebuild(self, tree: ast.Module | None) -> None:
        """The module code to cache: each def whose fresh code can stand in for its plain
        code (see `prebuilt`) compiled with that code and without its mark call.

        ``tree`` is the one load() compiled, if it is still here: its marks are taken
        back out instead of parsing the source again.
        """
        assert self._marked_code is not None
        plan = self.plan
        ready = prebuilt(self._marked_code, self.entry.functions, plan.marked_lines)
        if [key for key, _ in ready] == [key for key, _ in self.entry.prebuilt]:
            return
        if tree is None or not plan.take_back(tree):
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


# the functions of the modules this hook loaded are built from the source it compiled
_marking.source_providers.append(hooked_module)
_marking.forgetters.append(forget_module)
