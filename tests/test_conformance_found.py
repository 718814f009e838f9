"""Found by running other projects' test suites through the hook (tests/conformance/run_stdlib.py).

Each test is the smallest reproduction of a difference from native behaviour that one of
those suites showed, named after the suite and the test that showed it.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from copy_ways import WAYS

import contsnap


@pytest.fixture
def hooked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Import a throwaway module made of ``source`` through the hook with mark_all."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made: list[str] = []

    def load(source: str) -> Any:
        name = f"found_{os.getpid()}_{len(made)}"
        made.append(name)
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        with contsnap.install_import_hook(name, mark_all=True), warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a function left plain fails
            return importlib.import_module(name)

    yield load
    for name in made:
        sys.modules.pop(name, None)


class Node:
    @contsnap.checkpointable
    def children(self, items: list[Any]) -> Iterator[Any]:
        for item in items:
            if isinstance(item, Node):
                yield item


# jinja2 (hooked, every test): Node.iter_child_nodes reads the global name of its own
# class (``isinstance(item, Node)``); the transform compiled the method inside a class
# statement of that name, which made the name a free variable of the method, and the hook
# left the method plain ("contsnap failed, please report it: KeyError: 'Node'")


@pytest.mark.parametrize("way", WAYS)
def test_a_method_reading_its_own_class_by_name_is_transformed(way: str) -> None:
    node, leaf = Node(), Node()
    gen = node.children([1, leaf, "x", node])
    assert next(gen) is leaf
    copy = WAYS[way](gen)
    assert [type(n) for n in copy] == [Node]
    assert list(gen) == [node]


def test_a_method_reading_its_own_class_by_name_is_marked_by_the_hook(hooked: Any) -> None:
    module = hooked(
        """
        class Node:
            def children(self, items):
                for item in items:
                    if isinstance(item, Node):
                        yield item


        def outer():
            class Leaf:
                def children(self, items):
                    for item in items:
                        if isinstance(item, Leaf):
                            yield item

            return Leaf
        """
    )
    assert module.Node.children.__contsnap__ is not None
    node = module.Node()
    gen = node.children([node, 2])
    assert contsnap.loads(contsnap.dumps(gen)).__next__() is not node  # a copy
    assert list(gen) == [node]
    leaf_class = module.outer()  # the class name is the enclosing function's local there
    leaf = leaf_class()
    assert list(leaf.children([1, leaf])) == [leaf]


@contsnap.checkpointable
async def items_of(source: list[int]) -> Any:
    for item in source:
        yield item


# aioitertools (copying round trip, test_batched looped for ever): ``batched`` holds an
# async generator the test made, ``ait.iter([...])``; once that was exhausted, each move
# copied it as an unstarted async generator (its aclose() awaitable was closed, never
# run), which yielded None where the original raised StopAsyncIteration


@pytest.mark.parametrize("way", WAYS)
def test_an_exhausted_async_generator_copies_exhausted(way: str) -> None:
    async def run() -> list[Any]:
        agen = items_of([1])
        seen: list[Any] = [await agen.__anext__()]
        with pytest.raises(StopAsyncIteration):
            await agen.__anext__()
        copy = WAYS[way](agen)
        assert copy.ag_frame is None
        with pytest.raises(StopAsyncIteration):
            seen.append(await copy.__anext__())
        return seen

    assert asyncio.run(run()) == [1]


@contsnap.checkpointable
def lexed(source: str, regex: re.Pattern[str]) -> Iterator[Any]:
    pos = 0
    while pos < len(source):
        m = regex.match(source, pos)
        if m is None:
            return
        yield m.group()
        yield m.lastgroup, m.groupdict(), m.regs, m.pos, m.endpos, m.re is regex
        pos = m.end()


# jinja2 (copying round trip, 741 of its 909 tests): Lexer.tokeniter holds the re.Match of
# its token regex across its yields, and every move was refused ("cannot pickle 're.Match'
# object"); boltons' iter_splitlines the same. A match is saved as the search that finds it
# again (pattern, string, pos, endpos, span)


@pytest.mark.parametrize("way", WAYS)
def test_a_regular_expression_match_held_across_a_yield_is_copied(way: str) -> None:
    regex = re.compile(r"(?P<word>[a-z]+)|(?P<number>\d+)|(?P<all>.+$)")
    gen = lexed("ab12cd!", regex)
    assert next(gen) == "ab"
    copy = WAYS[way](gen)
    assert list(copy) == list(gen)


def test_a_match_a_search_would_not_find_again_is_refused_by_name() -> None:
    @contsnap.checkpointable
    def holding(m: re.Match[str]) -> Iterator[str]:
        yield m.group()
        yield m.group()

    first, second = re.finditer(r"\d", "a1b2")  # the second one's pos is 0, as the first's
    for m, copyable in ((first, True), (second, False)):
        gen = holding(m)
        next(gen)
        if copyable:
            assert list(contsnap.loads(contsnap.dumps(gen))) == ["1"]
        else:
            with pytest.raises(contsnap.NotCheckpointableError, match="re.Match.*finditer"):
                contsnap.dumps(gen)


def test_a_forged_match_is_refused_on_load() -> None:
    from contsnap._snapshot._reducers import rematch

    with pytest.raises(contsnap.SnapshotCorruptError, match="not found again"):
        rematch(re.compile("a"), "bab", 0, 3, (0, 1))


class Outer:
    @contsnap.checkpointable
    def made(self) -> Iterator[Any]:
        def helper() -> Outer:
            return self

        class Local:
            pass

        yield helper.__qualname__, Local.__qualname__, (lambda: 0).__qualname__
        yield helper() is self and isinstance(self, Outer)


def test_what_a_method_of_a_global_class_defines_keeps_its_qualname() -> None:
    # the factory's class is declared global there: the qualnames it gives (3.10 reads a
    # nested function's from a constant) are mapped back to the method's
    gen = Outer().made()
    assert next(gen) == (
        "Outer.made.<locals>.helper",
        "Outer.made.<locals>.Local",
        "Outer.made.<locals>.<lambda>",
    )
    assert next(contsnap.loads(contsnap.dumps(gen))) is True


def _callback_of(k: int) -> Any:
    @contsnap.checkpointable
    def callback() -> Iterator[int]:
        yield k
        yield k + 1

    return callback


@contsnap.checkpointable
def dispatching(callbacks: list[Any]) -> Iterator[Any]:
    yield len(callbacks)
    for callback in callbacks:
        inner = callback()
        yield next(inner)
        yield inner


# pygments (copying round trip, 100 of its 836 snippets): a lexer's rules hold many
# closures of one nested function (bygroups' and using's callbacks), each copied by value
# with its own copy of the code; only the 32 newest copies of a code were remembered, so a
# generator made by an older copy still in use was "not checkpointable"


@pytest.mark.parametrize("way", ["dumps", "pickle"])
def test_every_live_copy_of_a_nested_function_makes_checkpointable_generators(
    way: str,
) -> None:
    gen = dispatching([_callback_of(k * 10) for k in range(60)])
    assert next(gen) == 60
    copy = WAYS[way](gen)
    seen = []
    for _ in range(60):
        seen.append(next(copy))
        inner = next(copy)
        assert list(WAYS[way](inner)) == [seen[-1] + 1]  # made by a copied callback
    assert seen == [k * 10 for k in range(60)]
