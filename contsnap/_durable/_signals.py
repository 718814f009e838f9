"""Signals that arrive before a durable job drives its generator.

``contsnap run`` and ``contsnap resume`` install these handlers first thing, before
any import of the user's code, so that a SIGTERM sent while the script is still
starting is not lost: the job rolls out at its first safe point instead. This
module imports nothing of contsnap but its registry of process-wide state (which imports
nothing), so installing it costs next to nothing.
"""

from __future__ import annotations

import os
import signal
import types

from .._registry import STATE

NAMES = ("SIGTERM", "SIGINT", "SIGHUP")

#: the first signal received before a job took over the handlers (None: none yet)
received: list[int] = []
STATE.add(__name__, "received")


def _record(number: int, frame: types.FrameType | None) -> None:
    if received:  # a second signal while starting: give up at once, as a job would
        os._exit(128 + number)
    received.append(number)


def install_early() -> None:
    """Record SIGTERM/SIGINT/SIGHUP until a job installs its own handlers."""
    for name in NAMES:
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, _record)


def take() -> int | None:
    """The signal recorded so far, if any; it is then the job's to act on."""
    return received.pop() if received else None


def deliver_unhandled() -> None:
    """No job took the recorded signal: act on it as the default handler would."""
    number = take()
    for name in NAMES:
        found = getattr(signal, name, None)
        if found is not None:
            signal.signal(found, signal.SIG_DFL if name != "SIGINT" else signal.default_int_handler)
    if number is not None:
        os.kill(os.getpid(), number)
