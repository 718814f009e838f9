"""Fingerprint of a function's normalised source: what decides if a snapshot still fits."""

from __future__ import annotations

import ast
import copy
import hashlib

#: Bumped whenever the transform changes labels or live locals for the same source.
TRANSFORM_VERSION = "1"


def fingerprint(function_source: str) -> str:
    """Hash of the function's syntax tree: comments and formatting don't count, constants do."""
    tree = ast.parse(function_source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return fingerprint_of(node)
    return _digest(tree)


def fingerprint_of(func: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """`fingerprint` of the source of ``func``, from a tree already parsed."""
    bare = copy.copy(func)
    bare.decorator_list = []
    return _digest(ast.Module(body=[bare], type_ignores=[]))


def _digest(tree: ast.Module) -> str:
    dumped = _dump(tree)
    version = TRANSFORM_VERSION
    if _yields_in_clause_types_or_targets(tree):
        # labelled since: a snapshot of the earlier transform numbered its yields otherwise
        version += "+yielding clause types and targets"
    digest = hashlib.sha256(f"{version}\0{dumped}".encode()).hexdigest()
    return digest[:16]


def _yields_in_clause_types_or_targets(tree: ast.Module) -> bool:
    """Has the function a yield in an ``except`` clause's type or in a ``for`` target?"""
    for node in ast.walk(tree):
        part = None
        if isinstance(node, ast.ExceptHandler):
            part = node.type
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            part = node.target
        if part is not None and any(
            isinstance(inner, (ast.Yield, ast.YieldFrom, ast.Await)) for inner in ast.walk(part)
        ):
            return True
    return False


#: fields Python added to nodes after 3.11, left out while empty (as on 3.10 and 3.11)
_NEWER_FIELDS = frozenset({"type_params"})


def _dump(node: object) -> str:
    """``ast.dump(node, annotate_fields=False, include_attributes=False)`` as Python 3.11
    writes it, on every version: the same source gets the same fingerprint on 3.10-3.13.

    (3.12 adds ``type_params=[]`` to every def and class; 3.13's ``ast.dump`` leaves out
    empty lists. Either would make a snapshot look like changed code on another Python.)
    """
    if isinstance(node, ast.AST):
        kind = type(node)
        parts = []
        keywords = False
        for name in node._fields:
            try:
                value = getattr(node, name)
            except AttributeError:
                keywords = True
                continue
            if name in _NEWER_FIELDS and not value:
                continue
            if value is None and getattr(kind, name, ...) is None:
                keywords = True  # an optional field left out: name the ones after it
                continue
            text = _dump(value)
            parts.append(f"{name}={text}" if keywords else text)
        return f"{kind.__name__}({', '.join(parts)})"
    if isinstance(node, list):
        return "[" + ", ".join(_dump(item) for item in node) + "]"
    return repr(node)
