"""The transform's speed-ups give what libcst itself gives (contsnap._transform)."""

from __future__ import annotations

import inspect
import threading

import libcst as cst
import pytest

from contsnap import _transform
from contsnap._transform import _codegen, transform_function

SOURCE = '''\
@decorated(1)
def walk(node, depth=0, *rest, key: int = 2, **extra) -> "Iterator[int]":
    """Docstring."""
    if node is None:  # a comment
        return
    with open(node) as f, lock:
        for i, line in enumerate(f, 1):
            try:
                yield (depth, [x.strip() for x in line.split(",") if x], {**extra})
            except* ValueError as exc:
                raise RuntimeError(f"{i=} {exc!r:>10}") from exc
    match node:
        case [first, *others] if first:
            value = yield from walk(first, depth + 1)
        case {"k": 1, **kw}:
            lambda a, /, b=2: (a, b)
    return (yield)
'''


def _validates() -> bool:
    try:
        cst.Name("not a name")
    except cst.CSTValidationError:
        return True
    return False


def test_the_unchecked_parse_builds_the_tree_libcst_builds() -> None:
    fast = _transform._parse_valid(SOURCE)
    assert fast.deep_equals(cst.parse_module(SOURCE))
    assert fast.code == SOURCE
    assert _validates()  # switched back on


def test_libcst_validates_again_after_transforms_in_many_threads() -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                transform_function(SOURCE.replace("except*", "except"), first_line=1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _transform._parsing == [0]
    assert _validates()


def test_the_unchecked_parse_switches_validation_back_on_after_a_syntax_error() -> None:
    with pytest.raises(cst.ParserSyntaxError):
        _transform._parse_valid("def f(:\n")
    assert _validates()


def test_code_for_node_gives_libcst_text_for_every_node() -> None:
    module = cst.parse_module(SOURCE + inspect.getsource(_codegen))
    nodes: list[cst.CSTNode] = []

    class Every(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            nodes.append(node)
            return True

    module.visit(Every())
    assert len(nodes) > 500
    generated = 0
    for node in nodes:
        try:
            expected = module.code_for_node(node)
        except Exception as exc:  # some nodes need their parent's context: the same error
            with pytest.raises(type(exc)):
                _codegen.code_for_node(module, node)
            continue
        assert _codegen.code_for_node(module, node) == expected
        generated += 1
    assert generated > 500
