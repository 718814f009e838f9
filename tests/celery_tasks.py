"""The Celery app of tests/test_celery.py, imported by the test and by its workers.

Configured by the environment the test gives the workers: the broker (a Redis
database), the store the jobs keep their checkpoints in, where the test's
bookkeeping goes (step runs, effects, pids), and which version of the job's code
this worker runs (``CONTSNAP_CELERY_CODE=changed`` or ``migrated`` for the code-change
scenarios).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery

import contsnap
from contsnap.integrations.celery import configure, durable_task, step_key
from contsnap.stores import open_store

if os.environ.get("CONTSNAP_FAULT_ARM"):
    import faultpoints  # noqa: F401  (kills at a store call when the test arms it)

BROKER = os.environ.get("CONTSNAP_CELERY_BROKER", "redis://127.0.0.1:6379/0")
STORE = os.environ.get("CONTSNAP_CELERY_STORE", "redis://127.0.0.1:6379/1")
NOTES = os.environ.get("CONTSNAP_CELERY_NOTES", "redis://127.0.0.1:6379/2")
LEASE = float(os.environ.get("CONTSNAP_CELERY_LEASE", "1.5"))
VISIBILITY = float(os.environ.get("CONTSNAP_CELERY_VISIBILITY", "3"))
EVERY = float(os.environ.get("CONTSNAP_CELERY_EVERY", "0.5"))

app = Celery("celery_tasks", broker=BROKER, backend=BROKER.rsplit("/", 1)[0] + "/3")
configure(app, visibility_timeout=VISIBILITY, restore_interval=0.5, drain_timeout=2)
app.conf.broker_connection_retry_on_startup = True


def store() -> Any:
    """Opened in each process: a PostgreSQL connection must not cross a fork."""
    return open_store(STORE)


notes = redis.Redis.from_url(NOTES)


def note_step(tag: str, i: int) -> None:
    """What the test watches: one more step run, by this process; a poisoned step dies."""
    notes.incr(f"runs:{tag}")
    notes.hsetnx(f"calls:{tag}", step_key("call"), i)  # a direct call, idempotent on its key
    notes.rpush(f"steps:{tag}", f"{i}:{os.getpid()}:{time.time():.3f}")
    notes.set(f"pid:{tag}", os.getpid())
    notes.set(f"ppid:{tag}", os.getppid())
    poison = notes.get(f"poison:{tag}")
    if poison is not None and int(poison) == i:
        os._exit(3)  # the worker's pool child dies, as with a segfault or the OOM killer


def record(payload: Any, key: str) -> None:
    """The effect handler: idempotent on the key, so a second delivery changes nothing."""
    notes.incr(f"deliveries:{payload['tag']}")
    notes.hsetnx(f"effects:{payload['tag']}", key, json.dumps(payload))


durable = durable_task(
    app, store=store, every=EVERY, keep=3, lease=LEASE, effects={"record": record}, max_crashes=2
)

if os.environ.get("CONTSNAP_CELERY_CODE") == "changed":

    @durable
    @contsnap.checkpointable
    def squares(tag: str, n: int, delay: float):  # type: ignore[no-untyped-def]
        total = 0
        for i in range(n):
            note_step(tag, i)
            time.sleep(delay)
            total += i * i * 2  # the deploy changed the arithmetic
            yield contsnap.effect("record", {"tag": tag, "i": i, "square": i * i})
        return total

elif os.environ.get("CONTSNAP_CELERY_CODE") == "migrated":

    @durable
    @contsnap.checkpointable
    def squares(tag: str, n: int, delay: float):  # type: ignore[no-untyped-def]
        acc = 0  # the deploy renamed total, and registered a migration for old checkpoints
        for i in range(n):
            note_step(tag, i)
            time.sleep(delay)
            acc += i * i
            yield contsnap.effect("record", {"tag": tag, "i": i, "square": i * i})  # resumes here
        return acc

    _RESUME_LINE = next(
        number
        for number, line in enumerate(Path(__file__).read_text().splitlines(), 1)
        if line.endswith("# resumes here")
    )

    @contsnap.migration("celery_tasks:squares")
    def _rename_total(old: contsnap.OldFrame) -> contsnap.Resume:
        kept = {name: value for name, value in old.locals.items() if name != "total"}
        return contsnap.Resume(line=_RESUME_LINE, locals={**kept, "acc": old.locals["total"]})

else:

    @durable
    @contsnap.checkpointable
    def squares(tag: str, n: int, delay: float):  # type: ignore[no-untyped-def]
        total = 0
        for i in range(n):
            note_step(tag, i)
            time.sleep(delay)
            total += i * i
            yield contsnap.effect("record", {"tag": tag, "i": i, "square": i * i})
        return total
