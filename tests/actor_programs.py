"""Actors used by tests/test_actors.py (importable by name from a subprocess too)."""

from __future__ import annotations

import asyncio
import gc
import sys

import contsnap
from contsnap import actors

LOG: list[object] = []


@contsnap.checkpointable
async def producer(n, workers):
    for i in range(n):
        workers[i % len(workers)].send(i)
        await contsnap.checkpoint()
    for w in workers:
        w.send(None)
    return n


@contsnap.checkpointable
async def worker(agg, pace=0.0):
    done = 0
    try:
        while True:
            msg = await actors.receive()
            if msg is None:
                agg.send(("done", None))
                return done
            acc = 0
            for k in range(30):  # a long computation with safe points inside
                acc += msg * k
                if k % 10 == 0:
                    await contsnap.checkpoint()
            if pace:
                await contsnap.sleep(pace)
            agg.send(("item", msg, acc))
            done += 1
    finally:
        LOG.append(("worker finally", actors.self_ref().name))


@contsnap.checkpointable
async def aggregator(n_workers):
    total = 0
    seen = []
    finished = 0
    while finished < n_workers:
        message = await actors.receive()
        if message[0] == "done":
            finished += 1
        else:
            total += message[2]
            seen.append(message[1])
    return total, sorted(seen)


def start_pipeline(name: str, n: int, workers: int = 3, pace: float = 0.0) -> actors.System:
    system = actors.System(name)
    agg = system.spawn(aggregator, workers, name="agg")
    refs = [system.spawn(worker, agg, pace, name=f"w{i}") for i in range(workers)]
    system.spawn(producer, n, refs, name="producer")
    return system


def expected_pipeline(n: int) -> tuple[int, list[int]]:
    return sum(i * k for i in range(n) for k in range(30)), list(range(n))


@contsnap.checkpointable
async def counter(start):
    """Adds what it receives; 'boom' crashes it; a negative total is a poisoned state."""
    total = start
    while True:
        message = await actors.receive()
        if message == "stop":
            return total
        if message == "boom":
            raise ValueError("boom")
        if total < 0:
            raise RuntimeError(f"corrupt total {total}")
        total += message


@contsnap.checkpointable
async def mover(total):
    """Gives tokens to a peer and takes them: between a pair of movers tokens only move."""
    while True:
        message = await actors.receive()
        if message == "stop":
            return total
        kind, amount, peer = message
        if kind == "give":
            total -= amount
            peer.send(("take", amount, None))
        else:
            total += amount
        LOG.append((actors.self_ref().name, kind, amount))


class Probe:
    """Notes whether the cyclic garbage collector is on when it is pickled."""

    def __reduce__(self):
        LOG.append(("pickled", gc.isenabled()))
        return (Probe, ())


@contsnap.checkpointable
async def spinner(probe):
    """Busy: runs on from one checkpoint() to the next, noting if the collector is on."""
    while True:
        LOG.append(("running", gc.isenabled()))
        await contsnap.checkpoint()


@contsnap.checkpointable
async def sleeper():
    await asyncio.sleep(30)  # not a safe point


async def _pipeline_main(mode: str, path: str, n: int) -> None:
    if mode == "run":
        system = start_pipeline("pipe", n, pace=0.003)
        system.autosave(path, every=0.05)
        print(repr(await system.join()))
    elif mode == "resume":
        system = await actors.System.restore(path)
        system.autosave(path, every=0.05)
        print(repr(await system.join()))


if __name__ == "__main__":
    asyncio.run(_pipeline_main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
