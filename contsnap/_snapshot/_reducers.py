"""The reducers and reconstructors the snapshot pickler uses for what plain pickle cannot
save: cells, exceptions, range iterators, context variables, weak references, the globals
of functions saved by value; and the probe that tells whether contsnap's pickler is needed.
"""

from __future__ import annotations

import contextvars
import importlib
import pickle
import re
import sys
import types
import uuid
import weakref
from collections.abc import Iterator
from typing import Any

from .. import _resources, _views
from .._errors import CheckpointError, NotCheckpointableError, SnapshotCorruptError
from .._info import FunctionInfo, adopt_function, current_session
from .._registry import STATE
from ._capture import _PREFIX, info_of
from ._restore import closed_generator, new_generator

_MATCH = type(re.match("", ""))


class _NeedsContsnap(Exception):
    pass


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


class _Probe(pickle.Pickler):
    """Walks what a plain pickle (``copying``: a plain deepcopy) of a frame's state would
    save, stopping at the first object that only contsnap's pickler saves right."""

    def __init__(self, file: Any, protocol: int, copying: bool = False) -> None:
        super().__init__(file, protocol=protocol)
        self.copying = copying

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if self.copying and (
            kind is types.ModuleType
            or (
                kind in (types.BuiltinMethodType, types.MethodWrapperType)
                and not isinstance(getattr(obj, "__self__", None), (types.ModuleType, type))
                and getattr(obj, "__self__", None) is not None
            )
        ):
            raise _NeedsContsnap
        if (
            kind in (types.BuiltinMethodType, types.MethodWrapperType)
            and reduce_bound_method(obj) is not NotImplemented
        ):
            raise _NeedsContsnap  # pickle's getattr would find another method
        if kind is object and reduce_sentinel(obj) is not NotImplemented:
            raise _NeedsContsnap  # a module's sentinel: pickle would copy it
        if kind in _PREFIX:
            if info_of(obj) is None:
                raise _NeedsContsnap  # a generator expression (or a refusal to name)
            return (int, ())  # pickled on its own terms when the real pickle meets it
        if (
            kind in _NEEDS_CONTSNAP
            or kind in _views.REDUCERS
            or isinstance(obj, BaseException)
            or _is_local_class(obj)
            or (kind is types.FunctionType and not _cp._should_pickle_by_reference(obj))
            or _resources.handler_for(kind) is not None
            or _views.is_ndarray_view(obj)
        ):
            raise _NeedsContsnap
        return NotImplemented


_NEEDS_CONTSNAP = frozenset(
    {types.CellType, weakref.ReferenceType, contextvars.ContextVar, types.TracebackType, _MATCH}
)


def _plainly_picklable(reduced: tuple[Any, ...], also: Any = ()) -> bool:
    try:
        _Probe(_Discard(), protocol=pickle.HIGHEST_PROTOCOL).dump((reduced[1:3], also))
    except RecursionError:
        return False
    except Exception:
        return False
    return True


def generator_by_name(*args: Any) -> Any:
    """`new_generator`, referenced by name in a plain pickle (see _reduce_generator)."""
    return new_generator(*args)


def closed_generator_by_name(info: FunctionInfo) -> Any:
    """`closed_generator`, referenced by name in a plain pickle."""
    return closed_generator(info)


def _make_cell() -> types.CellType:
    return types.CellType()


def _set_cell(cell: types.CellType, state: tuple[bool, Any]) -> None:
    full, value = state
    if full:
        cell.cell_contents = value


def _reduce_cell(cell: types.CellType) -> tuple[Any, ...]:
    try:
        state = (True, cell.cell_contents)
    except ValueError:
        state = (False, None)
    return (_make_cell, (), state, None, None, _set_cell)


def rebuild_exception(make: Any, args: tuple[Any, ...]) -> BaseException:
    """Rebuild a saved exception; one whose ``__init__`` needs more than its args still loads."""
    try:
        exc = make(*args)
    except Exception:
        if not (isinstance(make, type) and issubclass(make, BaseException)):
            raise
        exc = make.__new__(make, *args)
        exc.args = args
    if not isinstance(exc, BaseException):
        raise SnapshotCorruptError(f"a saved exception rebuilt as {type(exc).__name__}")
    return exc


def set_exception_state(exc: BaseException, state: tuple[Any, ...]) -> None:
    """Chaining and traceback are not pickled by Python; contsnap keeps them."""
    attributes, cause, context, suppress, traceback = state
    if attributes:
        if isinstance(attributes, tuple):  # (__dict__, slots)
            attributes, slots = attributes
            for name, value in (slots or {}).items():
                setattr(exc, name, value)
        if attributes:
            exc.__dict__.update(attributes)
    exc.__cause__ = cause
    exc.__context__ = context
    exc.__suppress_context__ = suppress
    if traceback is not None:
        exc.__traceback__ = traceback


_RANGE_ITERATOR = type(iter(range(0)))


def range_iterator(start: int, stop: int, step: int, position: int) -> Iterator[int]:
    """A ``range`` iterator that has produced ``position`` items (saved as four integers:
    stock pickle names ``iter`` and ``range`` and costs several times more)."""
    iterator = iter(range(start, stop, step))
    if position:
        iterator.__setstate__(position)  # type: ignore[attr-defined]
    return iterator


def _reduce_range_iterator(iterator: Any) -> tuple[Any, ...]:
    _iter, (whole,), position = iterator.__reduce__()
    # 3.12+ give the range still to go and no position; 3.10-3.11 the whole and where
    return (range_iterator, (whole.start, whole.stop, whole.step, position or 0))


def rematch(
    pattern: re.Pattern[Any], string: Any, pos: int, endpos: int, span: tuple[int, int]
) -> re.Match[Any]:
    """A regular expression's match, found again: the saved match at ``span``."""
    whole = span == (pos, endpos)
    found = (pattern.fullmatch if whole else pattern.search)(string, pos, endpos)
    if found is None or found.span() != span:
        raise SnapshotCorruptError(
            f"a saved match of {pattern.pattern!r} at {span} is not found again in its string"
        )
    return found


def _reduce_match(match: re.Match[Any]) -> tuple[Any, ...]:
    """A match as the search that finds it again from the same ``pos``: matching from a
    given position is deterministic, so the groups are the same (a ``match()`` at ``pos``
    is the search's first try there, a ``fullmatch()`` the one that spans ``pos:endpos``).
    A match that search would not find first (a later one of ``finditer``) is refused."""
    args = (match.re, match.string, match.pos, match.endpos, match.span())
    try:
        again = rematch(*args)
    except SnapshotCorruptError:
        again = None
    if again is None or again.regs != match.regs:
        raise TypeError(
            "cannot pickle 're.Match' object: a search from its pos would not find it again "
            "(a later match of finditer or a scanner)"
        )
    return (rematch, args)


def bound_method(owner_class: type, name: str, owner: Any) -> Any:
    """``owner_class``'s own built-in method ``name``, bound to ``owner``."""
    descriptor = owner_class.__dict__[name]
    if not isinstance(descriptor, _BUILTIN_DESCRIPTORS):
        raise SnapshotCorruptError(
            f"a saved built-in method names {owner_class.__qualname__}.{name}, "
            f"which is not a built-in method descriptor"
        )
    return descriptor.__get__(owner, type(owner))


_BUILTIN_DESCRIPTORS = (
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.ClassMethodDescriptorType,
)


def reduce_bound_method(method: Any) -> Any:
    """A built-in method bound to an object, saved as the class's method that it is.

    Pickle saves it as ``getattr(owner, name)``, which finds what the owner's class
    says now: for ``super().__getitem__`` of a ``dict`` subclass that overrides
    ``__getitem__``, the override (a restored frame then called another method).
    NotImplemented where that ``getattr`` finds this very method.
    """
    owner = method.__self__
    if owner is None or isinstance(owner, (types.ModuleType, type)):
        return NotImplemented
    name = method.__name__
    try:
        if getattr(owner, name, None) == method:
            return NotImplemented
    except Exception:  # an owner's __getattr__ or __eq__ that fails: look in its class
        pass
    for owner_class in type(owner).__mro__:
        descriptor = owner_class.__dict__.get(name)
        if isinstance(descriptor, _BUILTIN_DESCRIPTORS):
            try:
                found = descriptor.__get__(owner, type(owner)) == method
            except Exception:
                continue
            if found:
                return (bound_method, (owner_class, name, owner))
    return NotImplemented


def module_global(module: str, name: str) -> Any:
    """The module-level ``object()`` that a snapshot named (see `reduce_sentinel`)."""
    value = getattr(importlib.import_module(module), name, None)
    if type(value) is not object:
        raise SnapshotCorruptError(
            f"a saved sentinel names {module}.{name}, which is not a plain object() there"
        )
    return value


#: plain ``object()`` instances found among module globals: (object, module, name) by id
_SENTINELS: dict[int, tuple[object, str, str]] = {}
STATE.add(__name__, "_SENTINELS", "clear")  # module-level sentinels found so far
#: how many modules were loaded when `_SENTINELS` was last filled
_sentinels_scanned = 0
STATE.add(__name__, "_sentinels_scanned", "initial")


def reduce_sentinel(obj: object) -> Any:
    """A plain ``object()`` that is a module's global (``_marker = object()``): by name.

    Copied, it would be a new object, and the code that compares with it by
    ``is`` (more-itertools' ``zip_longest(..., fillvalue=_marker)``) would never
    find it again. NotImplemented for any other ``object()``.
    """
    found = _SENTINELS.get(id(obj))
    if (found is None or found[0] is not obj) and len(sys.modules) != _sentinels_scanned:
        _scan_sentinels()
        found = _SENTINELS.get(id(obj))
    if found is None or found[0] is not obj:
        return NotImplemented
    module = sys.modules.get(found[1])
    if getattr(module, "__dict__", {}).get(found[2]) is not obj:
        return NotImplemented  # rebound since
    return (module_global, found[1:])


def _scan_sentinels() -> None:
    global _sentinels_scanned
    _sentinels_scanned = len(sys.modules)
    for module_name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict) or module_name in ("__main__", "__mp_main__"):
            continue  # a script's module is another one where the snapshot loads
        for name, value in list(namespace.items()):
            if type(value) is object and id(value) not in _SENTINELS:
                _SENTINELS[id(value)] = (value, module_name, name)


_cp: Any = importlib.import_module("cloudpickle.cloudpickle")


def context_var_address(var: contextvars.ContextVar[Any]) -> tuple[str, str] | None:
    """``(module, name)`` of the module-level variable that is ``var``, if there is one."""
    modules = list(sys.modules.items())
    for module_name, module in modules:  # first where its own name says
        if getattr(module, "__dict__", {}).get(var.name) is var:
            return module_name, var.name
    for module_name, module in modules:
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for name, value in list(namespace.items()):
            if value is var and isinstance(name, str):
                return module_name, name
    if var is _decimal_context_var():
        return "decimal", "getcontext"
    return None


def _decimal_context_var() -> Any:
    """The variable behind ``decimal.getcontext()`` (no module names it)."""
    decimal = sys.modules.get("decimal")
    if decimal is None:
        return None
    probe = contextvars.Context()
    probe.run(decimal.getcontext)
    return next(iter(probe), None)


def context_var(module_name: str, name: str) -> contextvars.ContextVar[Any]:
    """The module-level context variable a snapshot names (imports its module)."""
    if (module_name, name) == ("decimal", "getcontext"):
        importlib.import_module("decimal")
        var = _decimal_context_var()
    else:
        var = getattr(importlib.import_module(module_name), name, None)
    if type(var) is not contextvars.ContextVar:
        raise CheckpointError(
            f"the snapshot holds the context variable {module_name}.{name}, which this "
            "process's module does not define"
        )
    return var


def _reduce_context_var(var: contextvars.ContextVar[Any]) -> tuple[Any, ...]:
    address = context_var_address(var)
    if address is None:
        raise NotCheckpointableError(
            f"the context variable {var.name!r} ({var!r}) cannot be saved: it is not a global "
            "of an imported module, so no other process could find it; define it at module "
            "level (name = contextvars.ContextVar(...)), or reset it before the snapshot"
        )
    return (context_var, address)


def _no_traceback() -> None:
    return None


class _LiveGlobals:
    """Stands for a module's globals in an in-process copy (pickled by reference)."""

    __slots__ = ("namespace",)

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace


class _SessionGlobals:
    """Stands for the namespace of the interactive session being saved (one per pickle)."""

    __slots__ = ()


_SESSION_GLOBALS = _SessionGlobals()


def _session_globals() -> dict[str, Any]:
    """The namespace a session snapshot is restored into (a fresh one outside a session)."""
    namespace = current_session()
    return namespace if namespace is not None else {}


#: this process, as a snapshot names it: a load in the process that saved binds the
#: functions of its script to the live ``__main__`` globals, not to a copy
_PROCESS = uuid.uuid4().hex


def _main_namespace() -> dict[str, Any] | None:
    main = sys.modules.get("__main__")
    return getattr(main, "__dict__", None)


class _MainGlobals:
    """Stands for the globals of ``__main__``: the live ones when loaded in the process that
    saved them, else ``fallback`` (the module attributes cloudpickle keeps) and a copy of
    the globals each function uses, as cloudpickle does."""

    __slots__ = ("fallback",)

    def __init__(self, fallback: dict[str, Any]) -> None:
        self.fallback = fallback


def _main_globals(process: str, fallback: dict[str, Any]) -> dict[str, Any]:
    namespace = _main_namespace()
    return namespace if process == _PROCESS and namespace is not None else fallback


def set_main_function_state(fn: types.FunctionType, state: Any) -> None:
    """The state of a function of ``__main__``: loaded in the process that saved it, its
    globals are the live ones, which the snapshot's copies never overwrite (they only fill
    names the script has deleted since)."""
    namespace = fn.__globals__
    if namespace is not _main_namespace():
        set_function_state(fn, state)
        return
    attributes, slots = state
    slots = dict(slots)
    for name, value in slots.pop("__globals__").items():
        namespace.setdefault(name, value)
    builtins = namespace.get("__builtins__")
    set_function_state(fn, (attributes, {**slots, "__globals__": {}}))
    namespace["__builtins__"] = builtins  # cloudpickle sets its own: keep the script's


def set_function_state(fn: types.FunctionType, state: Any) -> None:
    """cloudpickle's function state setter, then adopt a checkpointable function by value."""
    _cp._function_setstate(fn, state)
    adopt_function(fn)


def _dead_reference() -> weakref.ReferenceType[Any]:
    """A weak reference whose object is gone."""
    gone = _Referent()
    reference = weakref.ref(gone)
    del gone
    return reference


class _Referent:
    __slots__ = ("__weakref__",)


def _weak_reference(referent: Any, callback: Any = None) -> weakref.ReferenceType[Any]:
    """A weak reference to the restored object (dead when nothing else restored holds it)."""
    return weakref.ref(referent, callback)


def _reduce_weak_reference(reference: weakref.ReferenceType[Any]) -> tuple[Any, ...]:
    referent = reference()
    if referent is None:
        return (_dead_reference, ())
    callback = reference.__callback__
    return (_weak_reference, (referent,) if callback is None else (referent, callback))


def _is_local_class(cls: Any) -> bool:
    """A class a function defines (each call makes a new one): a copy gets its own."""
    return (
        isinstance(cls, type)
        and type(cls) is type
        and "<locals>" in getattr(cls, "__qualname__", "")
        and not _cp._should_pickle_by_reference(cls)
    )
