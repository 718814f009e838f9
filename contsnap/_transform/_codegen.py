"""``Module.code_for_node`` without its per-node bookkeeping.

libcst's code generation wraps the output of nearly every node in
``CodegenState.record_syntactic_position``, a ``contextlib.contextmanager`` that
only a position-computing state uses: a plain ``code_for_node`` still builds and
runs a generator-based context manager per node, a quarter of its time. The
state here hands back one shared ``nullcontext`` instead; the text is the same.
"""

from __future__ import annotations

import contextlib
from typing import Any

import libcst as cst
from libcst._nodes.internal import CodegenState

_NOTHING = contextlib.nullcontext()


class _State(CodegenState):
    def record_syntactic_position(  # type: ignore[override]
        self, node: cst.CSTNode, *, start_node: Any = None, end_node: Any = None
    ) -> contextlib.nullcontext[None]:
        return _NOTHING


def code_for_node(module: cst.Module, node: cst.CSTNode) -> str:
    """``module.code_for_node(node)``, faster."""
    state = _State(default_indent=module.default_indent, default_newline=module.default_newline)
    node._codegen(state)
    return "".join(state.tokens)
