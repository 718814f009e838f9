"""The import hook: transform the generator functions of named modules as they are imported.

[`install_import_hook`][contsnap.install_import_hook] puts a finder first in ``sys.meta_path``. It
claims only the modules it was given (a name also claims its submodules) that
are plain ``.py`` sources, and loads them with `HookLoader`, a
``SourceFileLoader`` whose ``get_code`` returns the module's code with, under
``mark_all``, every generator function decorated by `contsnap._marking._plan.mark`
(the plan is in `_plan`). The extra decorator is added to the syntax tree at the
``def``'s own line, so no line number moves. Each hooked file gets a `HookedModule`
record (`_hooked`) that ``@checkpointable`` asks for the function's source (the text
that was really compiled, not whatever the file says now) and that caches every
transformed function on disk (`contsnap._marking._cache`): a warm import runs no
libcst at all.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
import warnings
from collections.abc import Iterable
from typing import Any, cast

from . import _cache_key
from ._hooked import _MODULES, HookedModule, _building, _local, _look
from ._plan import MARK_NAME, _may_mark, bind

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
        # get_filename(fullname), without its name check's wrapper when the name is ours
        path = self.path if fullname == self.name else self.get_filename(fullname)
        namespace, self._namespace = self._namespace, None
        record = HookedModule(path, None, self.mark_all, fullname, namespace)
        record.deferred = self._executing > 0
        st, read_ns = _look(path)
        code = record.load_warm(st) if st is not None else None
        if code is None:  # no cache file that vouches for the source: read it
            data, stamp = self.get_data(path), _cache_key.Stamp.of(st, read_ns)
            if not (_may_mark(data) if self.mark_all else b"checkpointable" in data):
                _MODULES.pop(path, None)
                plain = super().get_code(fullname)  # nothing to do: the ordinary .pyc
                assert plain is not None
                return plain
            record = HookedModule(path, data, self.mark_all, fullname, namespace, stamp)
            record.deferred = self._executing > 0
            code = record.load()
        _MODULES[path] = record
        if namespace is not None and MARK_NAME in code.co_names:  # see Plan.apply
            bind(namespace)
        if record.entry.notes:
            for message, line in record.notes():
                warnings.warn_explicit(message, RuntimeWarning, path, line)
        return code

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        # Still outside sys.modules: if the transform (imported on first use) needs this
        # very module (tokenize, for one), it must get the real one, not the half-made
        # module the hook is about to run.
        if "contsnap._transform" not in sys.modules:
            top = spec.name.partition(".")[0]
            if top in _STDLIB or top in _TRANSFORM_DEPENDENCIES:
                with _building():  # what the transform imports is not hooked
                    importlib.import_module("contsnap._transform")
                    importlib.import_module("contsnap._compile")
        return None  # the default module, as SourceFileLoader's (a warm import counts calls)

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
        if not self._hook.matches(fullname):
            return None
        depth = getattr(_local, "depth", 0)
        if depth:  # contsnap is transforming code in this thread (see _building)
            return None
        _local.depth = depth + 1  # _building(), without its generator
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
        spec: importlib.machinery.ModuleSpec | None = None
        for finder in sys.meta_path:
            if type(finder) is _Finder:  # not isinstance: an ABC's is a call into Python
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
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
        #: what matches() compares a module's name with (every import asks)
        self._names = frozenset(modules)
        self._prefixes = tuple(f"{m}." for m in modules)
        self._finder = _Finder(self)

    def matches(self, fullname: str) -> bool:
        if fullname == "contsnap" or fullname.startswith("contsnap."):
            return False
        return fullname in self._names or fullname.startswith(self._prefixes)

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
