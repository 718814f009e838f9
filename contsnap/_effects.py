"""Effects: what a durable job asks the world to do, committed with its next checkpoint.

A job yields ``contsnap.effect(name, payload)`` instead of calling the outside
world directly. The runner keeps the effect in an outbox that is written in the
same atomic store write as the job's next checkpoint, and delivers it after that
write, at least once, under the idempotency key ``JOB_ID/SEQUENCE``: an effect
is never delivered for a state that was not saved, and a resumed job numbers
its effects as the saved run did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Effect:
    """An effect a durable job yields: handled by the handler registered for ``name``."""

    name: str
    payload: Any = None

    __module__ = "contsnap"


def effect(name: str, payload: Any = None) -> Effect:
    """An effect for the runner to deliver once the job's state that yielded it is saved."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"contsnap.effect() needs a handler name (a non-empty str), not {name!r}")
    return Effect(name, payload)
