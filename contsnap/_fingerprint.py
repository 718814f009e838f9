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
    dumped = ast.dump(tree, annotate_fields=False, include_attributes=False)
    digest = hashlib.sha256(f"{TRANSFORM_VERSION}\0{dumped}".encode()).hexdigest()
    return digest[:16]
