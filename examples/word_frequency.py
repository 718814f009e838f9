"""Word frequencies over a large text file, surviving SIGTERM and SIGKILL.

Run:  python examples/word_frequency.py

The job reads the file with ``for line in f`` and writes a progress report as
it goes; both files are open across its safe points. A checkpoint saves them
as path and offset: on resume the text file is read on from the next line and
the report is cut back to where the checkpoint was, so lines written after it
are written again, not twice. The demo stops the job with SIGTERM, kills it
with SIGKILL, lets it finish and compares with an uninterrupted run.
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import sys
import tempfile
import time

import contsnap

LINES = 60_000
VOCABULARY = [f"w{n:03d}" for n in range(400)]


def make_text(path: str) -> None:
    """A deterministic text of LINES lines (about 3 MB), written once."""
    if os.path.exists(path):
        return
    rng = random.Random(42)
    weights = [1 / (rank + 1) for rank in range(len(VOCABULARY))]  # Zipf-like
    with open(path + ".part", "w", encoding="utf-8") as out:
        for _ in range(LINES):
            out.write(" ".join(rng.choices(VOCABULARY, weights, k=8)) + "\n")
    os.replace(path + ".part", path)


@contsnap.checkpointable
def count_words(text_path, report_path):
    counts = collections.Counter()
    with (
        open(text_path, encoding="utf-8") as text,
        open(report_path, "w", encoding="utf-8") as report,
    ):
        for number, line in enumerate(text, 1):
            counts.update(line.split())
            if number % 5_000 == 0:
                top, n = counts.most_common(1)[0]
                report.write(f"{number} lines: {sum(counts.values())} words, top {top} x{n}\n")
            if number % 200 == 0:
                time.sleep(0.01)  # stands for slower work: the demo needs time to kill it
                yield number  # a safe point
    with open(report_path, "rb") as done:
        report_digest = hashlib.sha256(done.read()).hexdigest()[:16]
    return sum(counts.values()), counts.most_common(3), report_digest


def paths(checkpoint: str) -> tuple[str, str]:
    directory = os.path.dirname(os.path.abspath(checkpoint))
    return os.path.join(directory, "words.txt"), os.path.join(directory, "report.txt")


def uninterrupted(checkpoint: str) -> object:
    text, report = paths(checkpoint)
    gen = count_words(text, report + ".one-run")
    try:
        while True:
            next(gen)
    except StopIteration as done:
        return done.value


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "job":
        text_path, report_path = paths(sys.argv[2])
        make_text(text_path)
        checkpoint = sys.argv[2]
        result = contsnap.run(count_words, text_path, report_path, checkpoint=checkpoint, every=0.1)
        print(repr(result))
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _killdemo import demo

        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = os.path.join(tmp, "words.ckpt")
            make_text(paths(checkpoint)[0])
            demo(__file__, checkpoint, lambda: uninterrupted(checkpoint))
