"""Pause of a whole-system checkpoint (quiesce -> snapshot -> resume) as actors grow.

Run:  python benchmarks/bench_actors.py [--quick]

Each actor holds ~1 KB of live state and waits in ``receive()``. The pause is
the time the actors are stopped: from the start of ``System.checkpoint()``
(every actor parked, the whole set pickled, every actor released) until the
event loop can run them again (``System.last_pause``); the call returns a little
later, once the snapshot is signed in a thread while the actors go on. The best
of a few runs is reported, with the call's time and the snapshot's size.
Targets (issue 19): <= 40 ms at 1,000 actors, <= 500 ms at 10,000; ``run.py``'s
*actors* section measures the same pause for its table. Whole-process
checkpointers pause for seconds (DMTCP reports ~2 s for 128 processes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from actor_workloads import holder

from contsnap import actors


async def measure(count: int, repeat: int) -> tuple[float, float, int]:
    system = actors.System(f"bench-{count}")
    refs = [system.spawn(holder, i, name=f"a{i}") for i in range(count)]
    for ref in refs:
        ref.send(1)
    await asyncio.sleep(0.05)
    best = call = float("inf")
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        data = await system.checkpoint()
        call = min(call, time.perf_counter() - started)
        best = min(best, system.last_pause or call)
        size = len(data)
        await asyncio.sleep(0.01)
    await system.stop()
    return best, call, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10, 100 and 1,000 actors only")
    args = parser.parse_args(argv)
    counts = [10, 100, 1_000] if args.quick else [10, 100, 1_000, 10_000]
    print(
        f"{'actors':>8}  {'pause (ms)':>10}  {'per actor (µs)':>14}  {'call (ms)':>9}  "
        f"{'snapshot':>10}"
    )
    for count in counts:
        pause, call, size = asyncio.run(measure(count, 3 if count >= 10_000 else 5))
        print(
            f"{count:>8,}  {pause * 1000:>10.1f}  {pause / count * 1e6:>14.0f}  "
            f"{call * 1000:>9.1f}  {size / 1024:>8.0f} KB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
