"""A script's functions and classes (``__main__``, saved by value) restored in the process
that saved them stay bound to the script's live globals and classes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import copy, pickle, sys, contsnap

COUNT = 0

class Counter:
    made = 0
    note = "defined"

    def __init__(self):
        Counter.made += 1

    def bump(self):
        global COUNT
        COUNT += 1
        return COUNT

def double(x):
    return x * 2 + COUNT

@contsnap.checkpointable
def job(counter, scale):
    assert isinstance(counter, Counter)  # the class is in the globals the function uses
    yield "ready"
    for _ in range(3):
        yield scale(counter.bump())

def saved_then_loaded(save, load):
    def copy_of(gen):
        blob = save(gen)
        Counter.note = "set between save and load"  # the live class keeps it
        return load(blob)
    return copy_of

COPIES = {
    "dumps": saved_then_loaded(contsnap.dumps, contsnap.loads),
    "fork": contsnap.fork,
    "pickle": saved_then_loaded(pickle.dumps, pickle.loads),
    "deepcopy": copy.deepcopy,
}

if __name__ == "__main__":
    if sys.argv[1] == "save":
        gen = job(Counter(), double)
        next(gen)
        sys.stdout.buffer.write(contsnap.dumps(gen))
        sys.exit()
    for how, copy_of in COPIES.items():
        COUNT = 0
        gen = job(Counter(), double)
        next(gen)
        restored = copy_of(gen)
        values = list(restored)
        # a class attribute changed after the save is not reset by the load
        print(how, values, COUNT, Counter.made, Counter.note)
        Counter.note = "defined"
"""

RESUME = """
import sys, contsnap
COUNT = 100  # this process's own __main__: the snapshot's functions keep their copy
print(list(contsnap.loads(sys.stdin.buffer.read())), COUNT)
"""


def _run(args: list[str], blob: bytes | None = None) -> bytes:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        out = subprocess.run(
            [sys.executable, *args], input=blob, capture_output=True, check=True, env=env
        )
    except subprocess.CalledProcessError as exc:
        pytest.fail(exc.stderr.decode())
    return out.stdout


def test_script_class_restored_in_the_same_process_writes_the_live_globals(
    tmp_path: Path,
) -> None:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    lines = _run([str(script), "same"]).decode().splitlines()
    # natively: three bumps of the live counter, each doubled plus the live COUNT
    expected = "[3, 6, 9] 3"
    kept = "set between save and load"
    assert lines == [
        f"dumps {expected} 1 {kept}",
        f"fork {expected} 2 defined",
        f"pickle {expected} 3 {kept}",
        f"deepcopy {expected} 4 defined",
    ]


def test_script_class_restored_in_another_process_keeps_its_own_copy(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    blob = _run([str(script), "save"])
    assert _run(["-c", RESUME], blob).decode().split() == ["[3,", "6,", "9]", "100"]
