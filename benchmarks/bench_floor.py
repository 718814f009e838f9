"""How fast can a signed snapshot of the small state be in pure Python? A floor to set
contsnap's figures against (issue 19: dumps and loads faster than dispatch-py).

Usage: ``PYTHONPATH=. python benchmarks/bench_floor.py [--rounds N]``

The *floor* is a snapshot stripped to the work no design can skip: read the frame's
locals (contsnap's capture of the generator), pickle them with the C pickler and a
dispatch table (no per-object Python override: no resource handlers, no code by value,
no chains, no refusals), write a JSON line naming the function, sign it with
HMAC-SHA256 and join; loading checks the signature, parses the JSON, unpickles and
rebuilds the generator through the function's resume variant, primed. It keeps none of
contsnap's checks (kind, Python version, code changes, helper locals), so it is a bound
from below, not a design. Both run interleaved in one process (floor, contsnap, ...);
each figure is the median of per-round times with the 25-75% spread.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from core_workloads import marked_ten_locals

import contsnap
from contsnap import _keys
from contsnap._envelope import _parse_json
from contsnap._snapshot import _capture, _reducers, _restore
from contsnap._snapshot._functions import function_json

_TAG = 32


def floor_dumps(gen: Any, key: bytes) -> bytes:
    state = _capture.capture(gen)
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _TABLE
    pickler.dump((state.label, state.values))
    meta = f'["snapshot",[{function_json(state.info)}],{state.line}]'.encode()
    body = b"".join((len(meta).to_bytes(4, "little"), meta, buffer.getvalue()))
    return body + _keys.mac(key, body)


def floor_loads(blob: bytes, key: bytes, fn: Any) -> Any:
    body, tag = blob[:-_TAG], blob[-_TAG:]
    if _keys.mac(key, body) != tag:
        raise ValueError("signature")
    size = int.from_bytes(body[:4], "little")
    _parse_json(body[4 : 4 + size])
    label, values = pickle.loads(body[4 + size :])
    info = _capture.info_of(fn)
    with _restore._load_context():
        gen = _restore.new_generator(info, label, ())
        _restore.set_generator_state(gen, values)
    return gen


_TABLE = {_reducers._RANGE_ITERATOR: _reducers._reduce_range_iterator}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    gen = marked_ten_locals(100)
    next(gen)
    key = _keys.resolve(None).signing_key
    assert key is not None
    blob, floor_blob = contsnap.dumps(gen), floor_dumps(gen, key)
    restored = floor_loads(floor_blob, key, gen)
    assert list(zip(range(5), restored)) == list(zip(range(5), contsnap.loads(blob)))
    sides: dict[str, Callable[[], Any]] = {
        "floor dumps": lambda: floor_dumps(gen, key),
        "contsnap dumps": lambda: contsnap.dumps(gen),
        "floor loads": lambda: floor_loads(floor_blob, key, gen),
        "contsnap loads": lambda: contsnap.loads(blob),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, side in sides.items():
            side()
            start = time.thread_time()
            for _ in range(2000):
                side()
            times[name].append((time.thread_time() - start) / 2000)
    print(f"Python {sys.version.split()[0]}, {args.rounds} rounds of 2000 calls each")
    for name, values in times.items():
        q = statistics.quantiles(values, n=4)
        median = statistics.median(values)
        print(f"  {name:15s} {median * 1e6:6.1f} us  ({q[0] * 1e6:.1f}-{q[2] * 1e6:.1f})")
    print(f"  sizes: floor {len(floor_blob)} B, contsnap {len(blob)} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
