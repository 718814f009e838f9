"""Resume exactly (issue 18): each test shows a difference from native Python that once was.

Every copying way is tried where it applies: ``dumps``/``loads``, ``pickle``,
``copy.deepcopy`` and ``fork``; the differential tests compare with the same
function run natively.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import pytest

import contsnap

LOG: list[object] = []


@pytest.fixture(autouse=True)
def _clean_log() -> None:
    LOG.clear()


WAYS: dict[str, Callable[[Any], Any]] = {
    "dumps": lambda gen: contsnap.loads(contsnap.dumps(gen)),
    "pickle": lambda gen: pickle.loads(pickle.dumps(gen)),
    "deepcopy": copy.deepcopy,
    "fork": contsnap.fork,
}


# ---------------------------------------------------------------- a snapshot changes nothing


class Noisy:
    def __init__(self, name: str) -> None:
        self.name = name

    def __del__(self) -> None:
        LOG.append(("del", self.name))


@contsnap.checkpointable
def drops_a_local():
    held = Noisy("held")
    yield 1
    held = None  # noqa: F841 - dropping it is the point
    LOG.append("dropped")
    yield 2


@pytest.mark.parametrize("way", ["dumps", "pickle", "deepcopy", "fork"])
def test_a_snapshot_does_not_keep_the_original_locals_alive(way: str) -> None:
    gen = drops_a_local()
    next(gen)
    copied = WAYS[way](gen)
    copied.close()
    del copied
    LOG.clear()
    next(gen)
    assert LOG == [("del", "held"), "dropped"]  # as in a run never snapshotted


# ---------------------------------------------------------------- helper names stay hidden


def lists_its_scope(log):
    total = 0
    with open(__file__) as source:
        for n in range(3):
            got = yield sorted(locals())
            total += got or n
            log.append(sorted(vars()))
            log.append(dir())
    held = locals()
    yield sorted(held)
    log.append(sorted(k for k in (lambda: locals())()))
    log.append(total)
    yield [sorted(locals()) for _ in range(1)]


@pytest.mark.parametrize("actions", [[1, 2, 3, 4, 5, 6], [None] * 8])
def test_locals_vars_and_dir_show_the_user_names_only(actions: list[object]) -> None:
    from contsnap.testing import LOG as RUN_LOG
    from contsnap.testing import check_generator_equivalence

    marked = contsnap.checkpointable(lists_its_scope)
    traces = check_generator_equivalence(lists_its_scope, marked, (RUN_LOG,), actions)
    assert ("yield", ["log", "n", "source", "total"]) in traces["roundtrip"]


def test_a_locals_dict_held_across_a_snapshot_keeps_its_contents() -> None:
    @contsnap.checkpointable
    def holds_locals():
        a = 1
        seen = locals()
        yield 1
        yield dict(seen)

    for way in WAYS.values():
        if way is WAYS["pickle"]:
            continue  # a function local to a test is not picklable by reference
        gen = holds_locals()
        next(gen)
        copied = way(gen)
        assert next(copied) == {"a": 1}
        assert next(gen) == {"a": 1}
