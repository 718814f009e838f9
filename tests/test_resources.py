"""Resources: open files, random generators and user handlers in snapshots; refusals."""

from __future__ import annotations

from pathlib import Path

import contsnap


@contsnap.checkpointable
def positions(path):
    with open(path) as f:
        for line in f:
            yield line, f.tell()
        for number, line in enumerate(f, 1):
            yield number


def test_tell_works_inside_a_for_loop_over_a_text_file(tmp_path: Path) -> None:
    path = tmp_path / "input.txt"
    path.write_text("a\nbb\nccc\n")
    assert list(positions(path)) == [("a\n", 2), ("bb\n", 5), ("ccc\n", 9)]
