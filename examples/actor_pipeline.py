"""A producer -> workers -> aggregator pipeline, checkpointed mid-run and restored elsewhere.

Run:  python examples/actor_pipeline.py

The first process starts the pipeline, lets it run for a moment, and rolls it
out (`system.stop(rollout=...)`): every actor is stopped at its next safe
point — workers in the middle of a computation too — and the whole set, with
its mailboxes, is one checkpoint. A second process restores it and runs it to
the end; the result equals an uninterrupted run's.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile

import contsnap
from contsnap import actors


@contsnap.checkpointable
async def producer(n, workers):
    for i in range(n):
        workers[i % len(workers)].send(i)
        await contsnap.checkpoint()
    for worker_ref in workers:
        worker_ref.send(None)


@contsnap.checkpointable
async def worker(aggregator):
    while True:
        number = await actors.receive()
        if number is None:
            aggregator.send(("done", None))
            return
        total = 0
        for k in range(1, 200):  # a long computation, with safe points inside
            total += number * k % 7
            if k % 50 == 0:
                await contsnap.checkpoint()
        aggregator.send(("result", (number, total)))


@contsnap.checkpointable
async def aggregator(n_workers):
    results = {}
    finished = 0
    while finished < n_workers:
        kind, value = await actors.receive()
        if kind == "done":
            finished += 1
        else:
            results[value[0]] = value[1]
    return len(results), sum(results.values())


def start(n: int) -> actors.System:
    system = actors.System("pipeline")
    sink = system.spawn(aggregator, 4, name="aggregator")
    workers = [system.spawn(worker, sink, name=f"worker-{i}") for i in range(4)]
    system.spawn(producer, n, workers, name="producer")
    return system


async def uninterrupted(n: int) -> object:
    return (await start(n).join())["aggregator"]


async def first_process(path: str, n: int) -> None:
    system = start(n)
    for _ in range(300):
        await asyncio.sleep(0)
    await system.stop(rollout=path)
    with open(path, "rb") as saved:
        meta = contsnap.describe(saved.read())
    print(f"process 1: rolled out {meta['actors']['count']} actors to {path}", flush=True)


async def second_process(path: str) -> None:
    system = await actors.System.restore(path)
    print(f"process 2 (pid {os.getpid()}): restored {len(system.actors)} actors")
    results = await system.join()
    print(f"process 2: aggregator result {results['aggregator']}")


if __name__ == "__main__":
    N = 400
    if len(sys.argv) == 3 and sys.argv[1] == "--restore":
        asyncio.run(second_process(sys.argv[2]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "pipeline.ckpt")
            asyncio.run(first_process(path, N))
            subprocess.run([sys.executable, __file__, "--restore", path], check=True)
        print(f"uninterrupted run:         {asyncio.run(uninterrupted(N))}")
