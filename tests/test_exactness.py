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
    held = None
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
