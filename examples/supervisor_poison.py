"""A supervisor restores a crashed actor from its last checkpoint, and spots poisoned state.

Run:  python examples/supervisor_poison.py

1. A poison message crashes the `ledger` actor; its supervisor restores it
   from the last checkpoint, after a short backoff, and the message that
   crashed it is not delivered again.
2. A bad update corrupts the ledger's state and is checkpointed before
   anybody notices; every restore of that state crashes again. After two such
   crashes the state is declared poisoned, kept on disk for inspection, and
   the supervisor falls back to the checkpoint before it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import warnings

import contsnap
from contsnap import actors


@contsnap.checkpointable
async def ledger(balance):
    while True:
        entry = await actors.receive()
        if entry == "close":
            return balance
        if balance < 0:
            raise RuntimeError(f"corrupt ledger: balance {balance}")
        balance += entry  # a str entry is a poison message: TypeError


async def main(poison_dir: str) -> None:
    system = actors.System("bank")
    system.supervisor(
        "root", restart="restore", max_restarts=5, poison_after=2, poison_dir=poison_dir
    )
    ref = system.spawn(ledger, 100, name="ledger", supervisor="root")

    ref.send(50)
    await asyncio.sleep(0.01)
    await system.checkpoint()  # checkpoint 1: balance 150
    ref.send("fifty")  # the poison message
    await asyncio.sleep(0.1)
    print("after a poison message:", [(c.actor, c.origin, c.error) for c in system.crashes])

    ref.send(-500)  # a bad update: balance -350 ...
    await asyncio.sleep(0.01)
    await system.checkpoint()  # ... is saved as checkpoint 2
    for _ in range(4):  # every number crashes it, until the state from before is back
        ref.send(10)
        await asyncio.sleep(0.1)
    print("crashes, each with the state it ran from:")
    for crash in system.crashes:
        print(f"  {crash.actor} from {crash.origin}: {crash.error}")
    ref.send("close")
    result = await system.join()
    print("final balance:", result["ledger"], "(checkpoint 1's 150, then 10 after the fallback)")
    print("kept for inspection:", os.listdir(poison_dir))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args: print(f"warning: {message}")
        asyncio.run(main(tmp))
