"""A paginated "fetch and process" loop that survives SIGTERM and SIGKILL.

Run:  python examples/paginated_fetch.py

The demo runs the job, stops it with SIGTERM (it saves and rolls out), kills it
with SIGKILL (the last autosave survives), lets it finish, and checks that the
result equals an uninterrupted run's. ``python examples/paginated_fetch.py job
FILE`` runs the job itself, as a deployment would.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time

import contsnap

PAGES = 40


def fetch_page(cursor: int) -> tuple[list[dict[str, object]], int | None]:
    """A stand-in for an HTTP API: 25 records a page, a cursor to the next page."""
    time.sleep(0.05)  # the network
    records = []
    for i in range(25):
        n = cursor * 25 + i
        digest = hashlib.sha256(str(n).encode()).digest()
        records.append({"id": n, "region": "nesw"[digest[0] % 4], "amount": digest[1]})
    return records, (cursor + 1 if cursor + 1 < PAGES else None)


@contsnap.checkpointable
def sync_all():
    """Fetch every page and total the amounts per region; each page is a safe point."""
    totals = {}
    seen = 0
    cursor = 0
    while cursor is not None:
        records, cursor = fetch_page(cursor)
        for record in records:
            totals[record["region"]] = totals.get(record["region"], 0) + record["amount"]
            seen += 1
        yield seen  # a safe point: autosave and roll-out happen here
    return seen, dict(sorted(totals.items()))


def uninterrupted() -> object:
    gen = sync_all()
    try:
        while True:
            next(gen)
    except StopIteration as done:
        return done.value


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "job":
        print(repr(contsnap.run(sync_all, checkpoint=sys.argv[2], every=0.2)))
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _killdemo import demo

        with tempfile.TemporaryDirectory() as tmp:
            demo(__file__, os.path.join(tmp, "sync.ckpt"), uninterrupted)
