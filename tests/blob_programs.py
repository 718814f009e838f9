"""The functions of the checked-in snapshots in tests/blobs/ (test_blobs.py).

DO NOT EDIT: a snapshot names each function by module, qualname and a
fingerprint of its source, so any change here makes the checked-in blobs
refuse to load (CodeChangedError). Add new functions at the end instead.
"""

from __future__ import annotations

import contsnap


@contsnap.checkpointable
def running_total(limit):
    total = 0
    for i in range(limit):
        total += yield total
    return total


@contsnap.checkpointable
def nested(words):
    seen = {}
    for word in words:
        seen[word] = seen.get(word, 0) + 1
        yield from running_total(2)
    return seen
