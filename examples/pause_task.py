"""Pause a running asyncio task at its next safe point, save it, and finish it in another process.

Run:  python examples/pause_task.py
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile

import contsnap


@contsnap.checkpointable
async def crunch(numbers):
    """A long computation with safe points; its state is all in locals."""
    total = 0
    for index, number in enumerate(numbers):
        total += number * number
        await contsnap.checkpoint()  # a point where a pause may stop it
        if index % 25 == 0:
            await contsnap.sleep(0.001)  # also a safe point; keeps its deadline
    return total


async def first_process(path: str) -> None:
    task = asyncio.ensure_future(crunch(range(1, 5001)))
    await asyncio.sleep(0.05)
    blob = await contsnap.pause(task)  # the task stops at its next safe point
    contsnap.detach(task)  # its continuation moves to the file
    with open(path, "wb") as f:
        f.write(blob)
    frame = contsnap.describe(blob)["frames"][0]
    print(f"process 1: paused {frame['qualname']} at line {frame['line']}, {len(blob)} bytes saved")
    subprocess.run([sys.executable, __file__, "--resume", path], check=True)


def second_process(path: str) -> None:
    with open(path, "rb") as f:
        coro = contsnap.loads(f.read())
    total = asyncio.run(coro)
    assert total == sum(n * n for n in range(1, 5001))
    print(f"process 2 (pid {os.getpid()}): finished, total = {total}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--resume":
        second_process(sys.argv[2])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(first_process(os.path.join(tmp, "crunch.ckpt")))
