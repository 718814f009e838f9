"""dispatch-py's side of the benchmarks: the workloads under its ``@durable``.

Imported only by a worker of dispatch-py's own virtual environment (see
``peers.py``): dispatch-py 0.8.0, with ``http-message-signatures==0.5.0``; it has
CPython 3.11 and 3.12 wheels, builds from source on 3.10 and not on 3.13. It makes
generators picklable by copying CPython frames at C level; a durable generator is a
Python wrapper around the native one.
dispatch-py keys its registry by qualified name, so each wrapped function keeps
its own name.
"""

from __future__ import annotations

from dispatch.experimental.durable import durable  # type: ignore[import-not-found]
from states import LOOPS, holding, ten_locals

dispatch_ten_locals = durable(ten_locals)
dispatch_holding = durable(holding)
DURABLE_LOOPS = {
    name: durable(fn) for name, (fn, _) in LOOPS.items() if not name.startswith("async")
}


@durable
def dispatch_deep(depth, n):
    """states.deep under @durable: its recursive call must reach the durable function."""
    label, scale, seen = f"frame-{depth}", depth * 0.5, [depth]
    if depth == 0:
        for i in range(n):
            yield i + len(seen) + len(label) + int(scale)
    else:
        return (yield from dispatch_deep(depth - 1, n))
