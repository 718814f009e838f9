"""The 10-locals workload under dispatch-py's ``@durable`` (optional: ImportError when absent).

dispatch-py (``pip install dispatch-py http-message-signatures==0.5.0``, CPython
3.11/3.12 wheels) makes generators picklable by copying CPython frames at C level.
"""

from __future__ import annotations

from dispatch.experimental.durable import durable  # type: ignore[import-not-found]


@durable
def dispatch_ten_locals(n):
    a, b, c, d, e = 1, 2.5, "three", None, True
    f, g, h = [1, 2], (3, 4), {"k": 5}
    for i in range(n):
        yield a + i


@durable
def dispatch_only_yields(n):
    for i in range(n):
        yield i
