"""The ``contsnap`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ._version import __version__


def _describe(path: str) -> int:
    from . import _envelope
    from ._errors import CheckpointError

    try:
        with open(path, "rb") as f:
            meta = _envelope.read_meta(f.read())
    except (OSError, CheckpointError) as exc:
        print(f"contsnap: {path}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(meta, indent=2, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="contsnap",
        description="Checkpointable generators: snapshot a paused computation and resume it.",
    )
    parser.add_argument("--version", action="version", version=f"contsnap {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    describe = commands.add_parser(
        "describe", help="print a snapshot's metadata (nothing is unpickled, no key needed)"
    )
    describe.add_argument("file")
    args = parser.parse_args(argv)
    if args.command == "describe":
        return _describe(args.file)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
