"""Shared by the durable-job examples: run a job, kill it, run it again, compare.

Not an example itself: the plumbing that plays "the machine was restarted".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable


def _wait_for(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"the job never saved a checkpoint at {path}")
        time.sleep(0.02)


def run_job(script: str, checkpoint: str, *, kill: signal.Signals | None, after: float) -> int:
    """Run ``script job CHECKPOINT`` once; with ``kill``, send it ``after`` its first save."""
    proc = subprocess.Popen([sys.executable, script, "job", checkpoint])
    if kill is not None:
        _wait_for(checkpoint)
        time.sleep(after)
        print(f"--- demo: sending {kill.name} to the job (pid {proc.pid})", flush=True)
        proc.send_signal(kill)
    code = proc.wait()
    print(f"--- demo: the job exited with status {code}", flush=True)
    return code


def demo(script: str, checkpoint: str, uninterrupted: Callable[[], object]) -> None:
    """Kill the job with SIGTERM, then SIGKILL, then let it finish; check the result."""
    for stale in (checkpoint, f"{checkpoint}.1", f"{checkpoint}.2"):
        if os.path.exists(stale):
            os.unlink(stale)
    run_job(script, checkpoint, kill=signal.SIGTERM, after=0.5)
    run_job(script, checkpoint, kill=signal.SIGKILL, after=0.8)
    if run_job(script, checkpoint, kill=None, after=0) != 0:
        raise SystemExit("the resumed job failed")
    result = subprocess.run(
        [sys.executable, script, "job", checkpoint], capture_output=True, text=True, check=True
    ).stdout.strip()
    expected = repr(uninterrupted())
    print(f"--- demo: resumed result   {result}")
    print(f"--- demo: one-run result   {expected}")
    if result != expected:
        raise SystemExit("MISMATCH: the interrupted job did not end like an uninterrupted one")
    print("--- demo: same result, nothing lost, nothing done twice")
