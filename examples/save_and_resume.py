"""Pause a generator, save it to a file, and resume it in a second process.

Run:  python examples/save_and_resume.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import contsnap


@contsnap.checkpointable
def word_counter(words):
    """Count words one at a time; the caller can send a bonus to add to the count."""
    counts = {}
    total = 0
    for word in words:
        bonus = yield f"{word!r} seen, {total} words so far"
        counts[word] = counts.get(word, 0) + 1
        total += 1 + (bonus or 0)
    return counts, total


WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "the", "end"]


def first_process(path: str) -> None:
    job = word_counter(WORDS)
    print("process 1:", next(job))
    for _ in range(4):
        print("process 1:", job.send(None))
    with open(path, "wb") as f:
        f.write(contsnap.dumps(job))
    contsnap.detach(job)  # the continuation moves to the file
    print(f"process 1: saved to {path} ({os.path.getsize(path)} bytes), exiting")
    subprocess.run([sys.executable, __file__, "--resume", path], check=True)


def second_process(path: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    frame = contsnap.describe(data)["frames"][0]
    print(f"process 2 (pid {os.getpid()}): resuming {frame['qualname']} at line {frame['line']}")
    job = contsnap.loads(data)
    print("process 2:", job.send(10))  # a bonus of 10
    try:
        while True:
            print("process 2:", job.send(None))
    except StopIteration as done:
        counts, total = done.value
        print(f"process 2: finished: {total} (with bonus), 'the' x{counts['the']}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--resume":
        second_process(sys.argv[2])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            first_process(os.path.join(tmp, "word_counter.ckpt"))
