"""The cached module code: a hooked module's code object with its marked functions'
transformed code compiled in, so a warm import runs neither libcst nor the decorator's
compile.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

from . import _cache
from ._plan import _FUNCTION_FLAGS

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
