"""Many payloads made in one go (contsnap._snapshot.Batch, an actor system's states): each
loads alone behind the prelude it was made with, and names what the prelude holds by memo
index."""

from __future__ import annotations

import pickle
import pickletools
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

import contsnap
from contsnap._snapshot import Batch, from_payload, prelude_bytes


@contsnap.checkpointable
def tally(start: int) -> Iterator[int]:
    total = start
    while True:
        total += yield total


def _load(batch: Batch, payload: bytes, used: int) -> Any:
    return from_payload(
        prelude_bytes(batch.prelude_names[:used]) + payload, functions=batch.functions.entries
    )


def _names_globals(payload: bytes) -> bool:
    named = {"GLOBAL", "STACK_GLOBAL", "EXT1", "EXT2", "EXT4"}
    return any(op.name in named for op, _arg, _pos in pickletools.genops(payload))


def test_each_payload_loads_alone_behind_its_prelude() -> None:
    gens = []
    for start in range(5):
        gen = tally(start)
        next(gen)
        gen.send(10)
        gens.append(gen)
    objs: list[Any] = [*gens, {"f": pickle.dumps, "t": ValueError, "n": 3}, [sys.getsizeof]]
    batch = Batch()
    made = list(batch.dump_each(objs))
    assert made[0][2] == 0  # the first one teaches the prelude
    assert all(used > 0 for _, _, used in made[1:5])
    assert _names_globals(made[0][0]) and not _names_globals(made[1][0])  # by memo index
    for start, (payload, captured, used) in enumerate(made[:5]):
        assert len(captured) == 1
        restored = _load(batch, payload, used)
        assert restored.send(1) == start + 11
    assert _load(batch, *made[5][::2]) == {"f": pickle.dumps, "t": ValueError, "n": 3}
    assert _load(batch, *made[6][::2]) == [sys.getsizeof]
    again = list(batch.dump_each(gens[:1]))  # a later batch: the prelude from the start
    assert again[0][2] == len(batch.prelude_names) > 0
    assert _load(batch, again[0][0], again[0][2]).send(1) == 11


def test_without_prelude_a_payload_loads_alone() -> None:
    batch = Batch()
    list(batch.dump_each([[pickle.dumps], [pickle.dumps]]))  # learnt
    payload, _captured, used = next(batch.dump_each([[pickle.dumps]], prelude=False))
    assert used == 0
    assert pickle.loads(payload) == [pickle.dumps]


def test_a_global_rebound_since_it_was_learnt_is_not_named_by_the_prelude(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A module reloaded (here: a function rebound): the old function is no longer what its
    name finds, so the prelude is learnt again and the old one is saved by value."""
    module = types.ModuleType("contsnap_batch_reloaded")
    exec("def twice(x):\n    return 2 * x\n", module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    old = module.twice
    batch = Batch()
    list(batch.dump_each([[old], [old]]))
    assert [module.__name__, "twice"] in batch.prelude_names
    exec("def twice(x):\n    return 3 * x\n", module.__dict__)  # rebound
    payload, _captured, used = next(batch.dump_each([[old]]))
    assert [module.__name__, "twice"] not in batch.prelude_names[:used]
    (restored,) = _load(batch, payload, used)
    assert restored(5) == 10
