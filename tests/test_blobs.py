"""Snapshots written by earlier releases and formats still load (tests/blobs/).

``format1-*`` were written by contsnap before signing by default (envelope format 1),
``format2-*`` and ``format3-*`` by the releases that introduced those formats. Each is a
generator of tests/blob_programs.py paused mid-way; loaded, it must go on exactly as a
fresh one advanced the same way. Signed ones need the key they were signed with; unsigned
ones load only with allow_unsigned=True.

A new format's blobs are written once, by the release that introduces it, and checked in:

    PYTHONPATH=. python tests/test_blobs.py format3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import blob_programs as bp
import pytest

import contsnap

BLOBS = Path(__file__).parent / "blobs"
KEY = b"contsnap's key for the checked-in test blobs"


def _advanced(name: str) -> Any:
    if name == "running_total":
        gen = bp.running_total(10)
        next(gen)
        gen.send(5)
        gen.send(7)
        return gen
    gen = bp.nested(["a", "b", "a"])
    next(gen)
    gen.send(3)
    return gen


def _rest(gen: Any) -> list[Any]:
    out = []
    try:
        while True:
            out.append(gen.send(1))
    except StopIteration as done:
        out.append(("returned", done.value))
    return out


FORMATS = ["format1", "format2", "format3"]
NAMES = ["running_total", "nested"]


def write_blobs(fmt: str) -> list[Path]:
    """Write this contsnap's blobs of every program, signed and unsigned, as ``fmt``."""
    from contsnap import _envelope

    if fmt != f"format{_envelope.FORMAT_VERSION}":
        raise SystemExit(f"this contsnap writes format{_envelope.FORMAT_VERSION}, not {fmt}")
    written = []
    for name in NAMES:
        for signed in (True, False):
            data = contsnap.dumps(_advanced(name), key=KEY, sign=signed)
            path = BLOBS / f"{fmt}-{name}-{'signed' if signed else 'unsigned'}.snap"
            path.write_bytes(data)
            written.append(path)
    return written


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", NAMES)
def test_a_signed_blob_of_each_format_loads_and_goes_on_exactly(fmt: str, name: str) -> None:
    data = (BLOBS / f"{fmt}-{name}-signed.snap").read_bytes()
    assert contsnap.describe(data)["format_version"] == int(fmt[-1])
    restored = contsnap.loads(data, key=KEY)
    assert _rest(restored) == _rest(_advanced(name))
    with pytest.raises(contsnap.SnapshotSignatureError):
        contsnap.loads(data)  # not with another key


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", NAMES)
def test_an_unsigned_blob_loads_only_when_allowed(fmt: str, name: str) -> None:
    data = (BLOBS / f"{fmt}-{name}-unsigned.snap").read_bytes()
    assert contsnap.describe(data)["signed"] is False
    with pytest.raises(contsnap.SnapshotSignatureError, match="unsigned snapshot refused"):
        contsnap.loads(data)
    restored = contsnap.loads(data, allow_unsigned=True)
    assert _rest(restored) == _rest(_advanced(name))


#: the extension codes a payload uses for contsnap's reconstructors (copyreg's private range),
#: and what each names. A snapshot carries only the code, so a code must keep its meaning
#: forever: a moved function gets registered under its new path with the same code.
EXTENSION_CODES = {
    240: ("contsnap._snapshot", "new_generator"),
    241: ("contsnap._snapshot", "set_generator_state"),
    242: ("contsnap._snapshot", "closed_generator"),
    243: ("contsnap._snapshot", "_make_cell"),
    244: ("contsnap._snapshot", "_set_cell"),
    245: ("contsnap._info", "_info_by_name"),
    246: ("contsnap._info", "_info_by_value"),
    247: ("contsnap._snapshot", "rebuild_exception"),
    248: ("contsnap._snapshot", "set_exception_state"),
    249: ("contsnap._snapshot", "_chain_parts"),
    250: ("contsnap._snapshot", "set_chain_state"),
    251: ("contsnap._snapshot", "range_iterator"),
    252: ("contsnap._snapshot", "function_at"),
}


def test_the_extension_codes_keep_their_meaning() -> None:
    import copyreg
    import importlib

    registered = {
        code: where for code, where in copyreg._inverted_registry.items() if 240 <= code <= 255
    }
    for code, (module, name) in EXTENSION_CODES.items():
        assert registered.get(code) == (module, name), code
        assert callable(getattr(importlib.import_module(module), name))


def test_every_module_path_a_payload_names_exists() -> None:
    """The globals the checked-in payloads reference by module path still resolve: a module
    that moves must keep (or map) the names old snapshots carry."""
    import importlib
    import pickletools
    import zlib

    from contsnap import _envelope

    named = set()
    for path in sorted(BLOBS.glob("*.snap")):
        data = path.read_bytes()
        meta = _envelope.read_meta(data)
        # the payload is the tail of the (inflated) body
        head = 7 + data[6] + (8 if meta["signed"] and meta["format_version"] >= 2 else 0)
        body_start = head + 12
        trailer = (
            (32 if meta["signed"] else 16)
            if meta["format_version"] >= 2
            else (16 + (32 if meta["signed"] else 0))
        )
        body = data[body_start : len(data) - trailer]
        if meta["compressed"]:
            body = zlib.decompress(body, -15)
        payload = body[-meta["payload_bytes"] :]
        strings: list[str] = []
        for opcode, arg, _pos in pickletools.genops(payload):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(arg)
            elif opcode.name == "STACK_GLOBAL":
                named.add((strings[-2], strings[-1]))
            elif opcode.name == "GLOBAL":
                named.add(tuple(arg.split(" ", 1)))
            elif opcode.name in ("EXT1", "EXT2", "EXT4"):
                assert arg in EXTENSION_CODES, f"{path.name} uses extension code {arg}"
    contsnap_names = {(m, q) for m, q in named if m.startswith("contsnap")}
    for module, qualname in sorted(contsnap_names):
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        assert obj is not None, (module, qualname)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    for written in write_blobs(sys.argv[1]):
        print(written)
