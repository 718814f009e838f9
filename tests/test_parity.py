"""pickle, cloudpickle and copy.deepcopy of a generator save what contsnap.dumps saves
(issue 18): resources through their handlers, exceptions with their chaining, local
functions and classes by value, and the same error naming the variable."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import copy_ways
import pytest

import contsnap

WAYS: dict[str, Callable[[Any], Any]] = {
    **copy_ways.WAYS,
    "cloudpickle": lambda gen: cloudpickle.loads(cloudpickle.dumps(gen)),
}


@contsnap.checkpointable
def reads_a_file(path):
    with open(path) as lines:
        first = lines.readline()
        yield first
        yield lines.readline()


@contsnap.checkpointable
def keeps_an_exception():
    try:
        try:
            raise KeyError("first")
        except KeyError as inner:
            raise ValueError("second") from inner
    except ValueError as exc:
        caught = exc
    yield 1
    yield type(caught.__cause__).__name__, str(caught), caught.__suppress_context__


@contsnap.checkpointable
def holds_a_lock():
    lock = threading.Lock()
    yield 1
    yield lock.locked()


@contsnap.checkpointable
def holds_local_code():
    step = 3
    scale = lambda value: value * step  # noqa: E731

    class Box:
        def __init__(self, value):
            self.value = value

    yield 1
    yield scale(Box(2).value), type(Box(1)).__name__


@pytest.mark.parametrize("way", list(WAYS))
def test_an_open_file_is_saved_through_its_handler(way: str, tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("one\ntwo\n")
    gen = reads_a_file(str(path))
    assert next(gen) == "one\n"
    copied = WAYS[way](gen)
    assert next(copied) == "two\n"
    copied.close()
    gen.close()


@pytest.mark.parametrize("way", list(WAYS))
def test_an_exception_keeps_its_chaining(way: str) -> None:
    gen = keeps_an_exception()
    next(gen)
    assert next(WAYS[way](gen)) == ("KeyError", "second", True)


@pytest.mark.parametrize("way", list(WAYS))
def test_local_functions_and_classes_travel_by_value(way: str) -> None:
    gen = holds_local_code()
    next(gen)
    assert next(WAYS[way](gen)) == (6, "Box")


def test_every_way_refuses_with_the_message_of_dumps() -> None:
    messages = set()
    for way in WAYS.values():
        gen = holds_a_lock()
        next(gen)
        with pytest.raises(contsnap.NotCheckpointableError) as refused:
            way(gen)
        messages.add(str(refused.value))
    assert len(messages) == 1
    (message,) = messages
    assert "holds_a_lock" in message and "'lock'" in message and "test_parity.py:" in message


def test_a_cycle_through_the_generator_stays_a_cycle_in_plain_pickle() -> None:
    class_holder = Holder()
    next(class_holder.job)
    again = pickle.loads(pickle.dumps(class_holder))
    again.job.send("y")
    assert again.log == ["y"]


class Holder:
    def __init__(self) -> None:
        self.log: list[object] = []
        self.job = self.work()

    @contsnap.checkpointable
    def work(self):
        while True:
            self.log.append((yield len(self.log)))
