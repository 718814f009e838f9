"""Marking: transform a generator function from its source, once per code object.

What ``@checkpointable`` (``_decorator``) and the import hook (``_hook``) both use;
neither imports the other. Where a function's source comes from is asked of the
*source providers* the layers above register (the import hook registers the
modules it loaded), and round-trip test mode registers its wrapper from above too.
"""

from __future__ import annotations

import dataclasses
import inspect
import linecache
import os
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .. import _lambdas, _runtime
from .._errors import NotCheckpointableError
from .._info import Details, FunctionInfo
from .._info import forget_module as forget_registered
from .._registry import STATE

if TYPE_CHECKING:
    from .._compile import ResumeSource

F = TypeVar("F")

# One transform per definition: keyed by the module namespace and the code object
# (code objects compare by value, so the namespace keeps equal functions of two
# modules apart).
_CACHE: dict[tuple[int, types.CodeType], FunctionInfo] = {}
STATE.add(__name__, "_CACHE", None, "the records of marked functions, one per definition")


#: ``provider(filename)``: an object whose ``build(fn, transform, source_of, number)``
#: makes the info of a function of that file, or None (the import hook registers one)
source_providers: list[Callable[[str], Any]] = []
STATE.add(__name__, "source_providers", None, "registered by the import hook when it is imported")
#: called with a module name by forget_module (the import hook drops its records)
forgetters: list[Callable[[str], None]] = []
STATE.add(__name__, "forgetters", None, "registered by the import hook when it is imported")
#: round-trip test mode's wrapper of every marked function (registered by _roundtrip)
roundtrip_wrappers: list[Callable[[Any], Any]] = []
STATE.add(__name__, "roundtrip_wrappers", None, "registered by round-trip mode when it is imported")


def make_checkpointable(fn: F, lambda_number: int | None = None) -> F:
    """[`checkpointable`][contsnap.checkpointable]; ``lambda_number`` is the import hook's number
    for a generator lambda of a hooked module (see `contsnap._lambdas`)."""
    if isinstance(fn, (staticmethod, classmethod)):
        return type(fn)(make_checkpointable(fn.__func__))
    if not isinstance(fn, types.FunctionType):
        raise TypeError(
            f"@checkpointable needs a generator function, a coroutine function or an async "
            f"generator function, got {type(fn).__name__} {fn!r}"
        )
    if getattr(fn, "__contsnap__", None) is not None:
        return fn
    flags = fn.__code__.co_flags
    if not flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR):
        raise TypeError(
            f"@checkpointable needs a generator function, a coroutine function or an async "
            f"generator function; {fn.__qualname__} is a plain function"
        )
    key = (id(fn.__globals__), fn.__code__)
    info = _CACHE.get(key)
    if (
        info is None
        or info.globals is not fn.__globals__
        # made with a copy of the fresh code (a module code from the hook's cache, loaded
        # again): it needs an info of its own code
        or (fn.__code__ is not info.fresh_code and fn.__code__ == info.fresh_code)
    ):
        info = _build(fn, lambda_number)
        _CACHE[key] = info
    return _instantiate(fn, info)  # type: ignore[return-value]


def _source_of(fn: types.FunctionType) -> tuple[str, int]:
    if fn.__code__.co_name == _lambdas.LAMBDA_NAME:
        return _lambda_source_of(fn)
    try:
        lines, first = inspect.getsourcelines(fn)
    except (OSError, TypeError) as exc:
        raise NotCheckpointableError(
            f"@checkpointable cannot read the source of {fn.__qualname__} "
            f"({fn.__code__.co_filename}:{fn.__code__.co_firstlineno}): {exc}. "
            "It needs the function's source: define it in a .py file, or in a notebook or "
            "REPL cell that inspect.getsource can read."
        ) from exc
    return "".join(lines), max(first, 1)


def _lambda_source_of(fn: types.FunctionType) -> tuple[str, int]:
    """A generator lambda's source, as the ``def`` the transform reads."""
    code = fn.__code__
    lines = linecache.getlines(code.co_filename, fn.__globals__)
    found = (
        _lambdas.source_for("".join(lines), code.co_firstlineno)
        if lines
        else "its source cannot be read"
    )
    if isinstance(found, str):
        raise NotCheckpointableError(
            f"@checkpointable cannot transform the generator lambda {fn.__qualname__} "
            f"({code.co_filename}:{code.co_firstlineno}): {found}"
        )
    return found


def _build(fn: types.FunctionType, lambda_number: int | None = None) -> FunctionInfo:
    for provider in source_providers:
        hooked = provider(fn.__code__.co_filename)
        if hooked is not None:  # the import hook has the source as compiled, and a disk cache
            return hooked.build(fn, _transform, _source_of, lambda_number)  # type: ignore[no-any-return]
    return _transform(fn, *_source_of(fn))


def _transform(fn: types.FunctionType, source: str, first: int) -> FunctionInfo:
    # imported here: libcst takes ~100 ms to import, and a warm start never transforms
    from .._compile import compile_function
    from .._transform import UnsupportedSyntax, transform_function

    code = fn.__code__
    try:
        result = transform_function(source, first_line=first)
    except UnsupportedSyntax as exc:
        raise NotCheckpointableError(
            f"@checkpointable cannot transform {fn.__qualname__} "
            f"({code.co_filename}:{exc.line or code.co_firstlineno}): {exc}"
        ) from None
    if code.co_name == _lambdas.LAMBDA_NAME and result.name == _lambdas.DEF_NAME:
        result = dataclasses.replace(result, name=code.co_name)
    if result.name != code.co_name and getattr(fn, "__wrapped__", None) is not None:
        raise NotCheckpointableError(
            f"@checkpointable got {fn.__qualname__}, a wrapper made by functools.wraps "
            f"(its code is {code.co_name}() at {code.co_filename}:{code.co_firstlineno}), "
            f"not the generator function {result.name}() itself: put @checkpointable "
            "below that decorator, on the function it wraps (or mark the wrapper's own def)"
        )
    if result.name != code.co_name:
        raise NotCheckpointableError(
            f"@checkpointable: the source found for {fn.__qualname__} defines "
            f"{result.name!r} instead ({code.co_filename}:{first}); was the file edited "
            "after it was imported?"
        )
    try:
        compiled = compile_function(
            result,
            filename=code.co_filename,
            qualname=fn.__qualname__,
            freevars=code.co_freevars,
            cellvars=code.co_cellvars,
            first_line=code.co_firstlineno,
        )
    except (SyntaxError, RecursionError, MemoryError) as exc:
        # the source compiled natively: only a limit of the compiler can refuse the
        # transformed code, which nests a `try` more around every loop that yields
        detail = exc.msg if isinstance(exc, SyntaxError) else f"{type(exc).__name__}: {exc}"
        hint = (
            " (CPython allows 20 nested blocks, and the transformed code adds a `try` "
            "around each loop and `with` whose body yields): move the inner loops into "
            "a function of their own"
            if "nested blocks" in detail
            else ""
        )
        raise NotCheckpointableError(
            f"@checkpointable cannot transform {fn.__qualname__} "
            f"({code.co_filename}:{result.def_line}): its transformed code does not "
            f"compile: {detail}{hint}"
        ) from None
    return FunctionInfo(
        module=fn.__module__ or "",
        qualname=fn.__qualname__,
        name=fn.__name__,
        filename=code.co_filename,
        def_line=result.def_line,
        fingerprint=compiled.fingerprint,
        user_names=compiled.user_names,
        cell_names=compiled.cell_names,
        cellvars=compiled.cellvars,
        first_param=compiled.first_param,
        fresh_code=compiled.fresh_code,
        globals=fn.__globals__,
        details=PendingDetails(compiled.labels, compiled.resume, compiled.source),
    )


class PendingDetails:
    """A transformed function's Details before its resume variant is compiled: that is done
    on first need (a snapshot or a restore), and the hook's cache stores the source."""

    __slots__ = ("labels", "resume", "source")

    def __init__(self, labels: dict[int, Any], resume: ResumeSource, source: str) -> None:
        self.labels = labels
        self.resume = resume
        self.source = source

    def __call__(self) -> Details:
        try:
            code = self.resume.compile()
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            # the fresh variant compiled: only a limit of the compiler (nesting, size)
            # can refuse its twin, and a call of the function never needs it
            raise NotCheckpointableError(
                f"contsnap cannot snapshot or restore {self.resume.qualname} "
                f"({self.resume.filename}): its resume variant does not compile: {exc}"
            ) from None
        return Details(self.labels, code, self.source)


def _instantiate(fn: types.FunctionType, info: FunctionInfo) -> types.FunctionType:
    assert info.fresh_code is not None
    _runtime.bind(fn.__globals__)
    if (
        fn.__code__ is not info.fresh_code
        and info.live_function is None
        and fn.__code__ == info.fresh_code
    ):
        # made with the fresh code by the hook's cached module code, while the info
        # came from another copy of it (transformed again, or stored apart)
        info.fresh_code = fn.__code__
    if fn.__code__ is info.fresh_code:
        # the import hook's cached module code made it with the fresh code already
        # (see _prebuilt.prebuilt): no second function, and no plain one for __wrapped__
        return _adopt(fn, info, fn.__module__)
    code = info.fresh_code
    if fn.__code__.co_flags & ~code.co_flags & inspect.CO_ITERABLE_COROUTINE:
        # @checkpointable above @types.coroutine, which flagged the generator function's own
        # code: the transformed code must be awaitable too (resume_code_for_restore reads the
        # flag from this function's code)
        code = code.replace(co_flags=code.co_flags | inspect.CO_ITERABLE_COROUTINE)
        info.alias(code)
    closure = None
    if code.co_freevars:
        cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
        closure = tuple(cells[name] for name in code.co_freevars) or None
    new = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, closure)
    # only what differs from what FunctionType gave ``new`` is copied
    if fn.__kwdefaults__ is not None:
        new.__kwdefaults__ = fn.__kwdefaults__
    new.__annotations__ = fn.__annotations__
    if fn.__dict__:
        new.__dict__.update(fn.__dict__)
    if new.__doc__ is not fn.__doc__:
        new.__doc__ = fn.__doc__
    if new.__module__ is not fn.__module__:
        new.__module__ = fn.__module__
    if new.__qualname__ != fn.__qualname__:
        new.__qualname__ = fn.__qualname__
    new.__wrapped__ = fn  # type: ignore[attr-defined]
    if sys.version_info >= (3, 12) and fn.__type_params__:
        new.__type_params__ = fn.__type_params__
    return _adopt(new, info, fn.__module__)


def _adopt(new: types.FunctionType, info: FunctionInfo, module: str | None) -> types.FunctionType:
    """Make ``new`` (running ``info``'s fresh code) the live function of ``info``."""
    new.__contsnap__ = info  # type: ignore[attr-defined]
    info.live_function = new
    info.register()
    if _ROUNDTRIP and module != "contsnap._roundtrip" and roundtrip_wrappers:
        return roundtrip_wrappers[-1](new)  # type: ignore[no-any-return]
    return new


def _roundtrip_mode() -> bool:
    return (os.environ.get("CONTSNAP_ROUNDTRIP") or "").strip().lower() not in (
        "",
        "0",
        "off",
        "no",
        "false",
    )


#: Round-trip mode, read from the environment when contsnap is imported (not per function).
_ROUNDTRIP = _roundtrip_mode()


def roundtrip_mode() -> bool:
    """Is round-trip mode on (as last read from the environment)?"""
    return _ROUNDTRIP


def refresh_roundtrip_mode() -> None:
    """Read ``CONTSNAP_ROUNDTRIP`` again (the pytest plugin sets it after contsnap is imported)."""
    global _ROUNDTRIP
    _ROUNDTRIP = _roundtrip_mode()


STATE.add(__name__, "_ROUNDTRIP", refresh_roundtrip_mode)  # reset: read again


def forget_module(module: str) -> None:
    """Release the transforms and registrations of a throwaway module."""
    forget_registered(module)
    for key in [k for k, info in _CACHE.items() if info.module == module]:
        del _CACHE[key]
    for forget in forgetters:
        forget(module)
