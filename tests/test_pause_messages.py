"""pause() says why a task could not be paused (issue 18)."""

from __future__ import annotations

import asyncio

import pytest

import contsnap


async def short() -> None:
    await asyncio.sleep(0)


@contsnap.checkpointable
async def gathers():
    await asyncio.gather(short(), short())
    return 1


def test_a_task_that_ends_inside_a_short_gather_is_named_with_what_it_awaited() -> None:
    async def scenario() -> tuple[str, object]:
        task = asyncio.ensure_future(gathers())
        await asyncio.sleep(0)
        with pytest.raises(contsnap.CheckpointError) as refused:
            await contsnap.pause(task)
        return str(refused.value), await task

    message, result = asyncio.run(scenario())
    assert result == 1
    assert "finished without reaching a safe point" in message
    assert "when pause() was asked" in message
    assert "gathers" in message and "_GatheringFuture" in message
    assert "test_pause_messages.py:" in message
