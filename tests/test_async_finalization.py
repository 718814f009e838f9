"""A restored coroutine lets go of what its frame drops, as natively (issue 18): a
``return`` inside ``async for`` frees the async generator before the caller's
``finally`` runs, so its own ``finally`` logs first, after a round trip too."""

from __future__ import annotations

from typing import Any

import pytest

import contsnap

LOG: list[str] = []


@contsnap.checkpointable
async def numbers():
    try:
        yield 1
        await contsnap.checkpoint()
        yield 2
    finally:
        LOG.append("numbers: finally")


@contsnap.checkpointable
async def first():
    try:
        async for n in numbers():
            await contsnap.checkpoint()
            return n
    finally:
        LOG.append("first: finally")


def _drive(coro: Any, roundtrip: bool) -> Any:
    while True:
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value
        if roundtrip:
            restored = contsnap.loads(contsnap.dumps(coro))
            contsnap.detach(coro)
            coro = restored


@pytest.mark.parametrize("roundtrip", [False, True], ids=["transformed", "roundtrip"])
def test_return_inside_async_for_finalises_the_generator_first(roundtrip: bool) -> None:
    LOG.clear()
    assert _drive(first(), roundtrip) == 1
    assert LOG == ["numbers: finally", "first: finally"]  # as natively
