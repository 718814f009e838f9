"""Store operations per second on each backend, one process, 1 KB values (not a timed test).

Starts its own redis-server and PostgreSQL (as ``tests/test_stores.py`` does)
and prints, per backend, the median latency and throughput of ``put``,
``get``, a fenced ``put(..., lease=)`` and ``cas``::

    python benchmarks/bench_stores.py [--n 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import servers

from contsnap.stores import open_store


def measure(n: int, operation: Callable[[int], object]) -> tuple[float, float]:
    """(median microseconds per call, calls per second) over ``n`` calls."""
    times = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        operation(i)
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return statistics.median(times) * 1e6, n / total


def bench(name: str, url: str, n: int) -> None:
    store = open_store(url)
    value = b"x" * 1024
    lease = store.acquire("bench-job", 600)
    rows = {
        "put": measure(n, lambda i: store.put(f"k{i}", value)),
        "get": measure(n, lambda i: store.get(f"k{i}")),
        "put lease=": measure(n, lambda i: store.put(f"k{i}", value, lease=lease)),
        "cas": measure(n, lambda i: store.cas(f"k{i}", value, 2)),
    }
    store.close()
    cells = "  ".join(f"{op:>10} {p50:7.0f} us {rate:7.0f}/s" for op, (p50, rate) in rows.items())
    print(f"{name:<9}{cells}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="calls per operation")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="contsnap-bench-stores-"))
    bench("files", f"file://{tmp}/files", args.n)
    bench("sqlite", f"sqlite:///{tmp}/store.db", args.n)
    redis_binary, initdb = servers.find_binary("redis-server"), servers.find_binary("initdb")
    if redis_binary:
        redis = servers.RedisServer(redis_binary)
        try:
            bench("redis", redis.url, args.n)
        finally:
            redis.stop()
    if initdb:
        postgres = servers.PostgresServer(str(Path(initdb).resolve().parent))
        try:
            bench("postgres", postgres.url, args.n)
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
