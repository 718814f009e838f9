"""What ``contsnap show`` prints: the transformed functions of a source file, as the hook
would compile them.
"""

from __future__ import annotations

import ast
import dis
import inspect
import types
from collections.abc import Iterator

from .. import _lambdas
from .._errors import NotCheckpointableError
from .._info import FunctionInfo
from . import _cache, _marking
from ._hooked import HookedModule, _read_file, read_source
from ._plan import _FUNCTION_FLAGS, Plan


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
