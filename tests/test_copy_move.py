"""Copy, move and fork: finally blocks and __exit__ run once per live continuation."""

from __future__ import annotations

import gc

import pytest

import contsnap

LOG: list[object] = []


class Resource:
    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Resource:
        LOG.append(("enter", self.name))
        return self

    def __exit__(self, kind: object, value: object, tb: object) -> bool:
        LOG.append(("exit", self.name, getattr(kind, "__name__", None)))
        return False


@contsnap.checkpointable
def guarded(n):
    try:
        with Resource("r") as res:
            for i in range(n):
                try:
                    yield (res.name, i)
                finally:
                    LOG.append(("step-finally", i))
    finally:
        LOG.append("outer-finally")


@contsnap.checkpointable
def swallow_everything():
    while True:
        try:
            yield "tick"
        except BaseException as exc:
            LOG.append(("caught", type(exc).__name__))
            return


@pytest.fixture(autouse=True)
def _clean_log() -> None:
    LOG.clear()


def test_snapshot_is_a_copy_and_runs_nothing() -> None:
    g = guarded(3)
    next(g)
    LOG.clear()
    contsnap.dumps(g)
    contsnap.fork(g).close()
    LOG.clear()
    contsnap.dumps(g)
    assert LOG == []
    assert g.send(None) == ("r", 1)


def test_dropped_original_still_runs_its_finally() -> None:
    g = guarded(3)
    next(g)
    contsnap.dumps(g)
    LOG.clear()
    del g
    gc.collect()
    assert LOG == [("step-finally", 0), ("exit", "r", "GeneratorExit"), "outer-finally"]


def test_detach_runs_no_finally_and_no_exit() -> None:
    g = guarded(3)
    next(g)
    blob = contsnap.dumps(g)
    LOG.clear()
    contsnap.detach(g)
    assert LOG == []
    with pytest.raises(StopIteration):
        next(g)  # a detached generator behaves as exhausted
    del g
    gc.collect()
    assert LOG == []
    moved = contsnap.loads(blob)
    assert list(moved) == [("r", 1), ("r", 2)]
    assert LOG == [
        ("step-finally", 0),
        ("step-finally", 1),
        ("step-finally", 2),
        ("exit", "r", None),
        "outer-finally",
    ]


def test_user_except_baseexception_does_not_see_detach() -> None:
    g = swallow_everything()
    next(g)
    contsnap.detach(g)
    assert LOG == []
    g = swallow_everything()
    next(g)
    g.close()
    assert LOG == [("caught", "GeneratorExit")]


def test_fork_gives_two_live_continuations_each_cleaning_up() -> None:
    g = guarded(2)
    next(g)
    LOG.clear()
    twin = contsnap.fork(g)
    assert list(g) == [("r", 1)]
    assert list(twin) == [("r", 1)]
    expected = [("step-finally", 0), ("step-finally", 1), ("exit", "r", None), "outer-finally"]
    assert expected + expected == LOG


def test_round_trip_at_every_step_cleans_up_exactly_once() -> None:
    g = guarded(3)
    seen = [next(g)]
    while True:
        moved = contsnap.loads(contsnap.dumps(g))
        contsnap.detach(g)
        g = moved
        try:
            seen.append(next(g))
        except StopIteration:
            break
    assert seen == [("r", 0), ("r", 1), ("r", 2)]
    assert LOG == [
        ("enter", "r"),
        ("step-finally", 0),
        ("step-finally", 1),
        ("step-finally", 2),
        ("exit", "r", None),
        "outer-finally",
    ]


def test_close_and_throw_on_a_restored_copy_behave_natively() -> None:
    g = guarded(3)
    next(g)
    restored = contsnap.loads(contsnap.dumps(g))
    contsnap.detach(g)
    LOG.clear()
    with pytest.raises(KeyError):
        restored.throw(KeyError("k"))
    assert LOG == [("step-finally", 0), ("exit", "r", "KeyError"), "outer-finally"]
    g = guarded(3)
    next(g)
    restored = contsnap.fork(g)
    LOG.clear()
    restored.close()
    assert LOG == [("step-finally", 0), ("exit", "r", "GeneratorExit"), "outer-finally"]


def test_detach_of_unstarted_and_finished_generators() -> None:
    g = guarded(1)
    contsnap.detach(g)
    assert LOG == []
    g = guarded(1)
    list(g)
    contsnap.detach(g)
    with pytest.raises(TypeError, match="checkpointable generator"):
        contsnap.detach([])  # type: ignore[arg-type]
