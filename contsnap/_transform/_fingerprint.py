"""Fingerprint of a function's normalised source: what decides if a snapshot still fits."""

from __future__ import annotations

import ast
import hashlib

#: Bumped whenever the transform changes labels or live locals for the same source.
TRANSFORM_VERSION = "1"


def fingerprint(function_source: str) -> str:
    """Hash of the function's syntax tree: comments and formatting don't count, constants do."""
    tree = ast.parse(function_source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.decorator_list = []
            break
    dumped = ast.dump(tree, annotate_fields=False, include_attributes=False)
    digest = hashlib.sha256(f"{TRANSFORM_VERSION}\0{dumped}".encode()).hexdigest()
    return digest[:16]
