"""What format 3 changed: the fast pickler and its fallback, functions named by index,
range iterators saved as integers, compression on request, the metadata array."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from typing import Any

import pytest

import contsnap
from contsnap import _codec, _envelope, _keys, _snapshot


@contsnap.checkpointable
def stepped(start, stop, step):
    total = 0
    for i in range(start, stop, step):
        total += yield i
    return total


@contsnap.checkpointable
def holds(value, n):
    for i in range(n):
        yield value, i


@contsnap.checkpointable
def tower(depth):
    if depth == 0:
        yield "bottom"
        yield "again"
        return 0
    return (yield from tower(depth - 1)) + 1


class Plain:
    """An instance of an importable class: the fast pickler saves it as pickle does."""

    def __init__(self, items: list[int]) -> None:
        self.items = items

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plain) and other.items == self.items


def _rest(gen: Iterator[Any]) -> list[Any]:
    out: list[Any] = []
    try:
        while True:
            out.append(gen.send(1))
    except StopIteration as done:
        out.append(("returned", done.value))
    return out


def _uses_the_fast_pickler(obj: Any) -> bool:
    return _snapshot.to_indexed_payload(obj)[2] is not None


@pytest.mark.parametrize(
    ("start", "stop", "step", "taken"),
    [(0, 10, 1, 1), (0, 10, 1, 10), (5, -7, -3, 2), (0, 10**20, 10**18, 3), (3, 4, 1, 1)],
)
def test_a_range_loop_resumes_at_its_position(start: int, stop: int, step: int, taken: int) -> None:
    gen = stepped(start, stop, step)
    next(gen)
    for _ in range(taken - 1):
        gen.send(2)
    blob = contsnap.dumps(gen)
    if stop < 2**63:  # (past that, a longrange_iterator: stock pickling, full pickler)
        assert _uses_the_fast_pickler(gen)
        assert b"builtins" not in blob  # four integers, not iter() of a pickled range
    assert _rest(contsnap.loads(blob)) == _rest(gen)


def test_range_iterators_round_trip_through_plain_pickle_too() -> None:
    iterator = iter(range(2, 50, 7))
    next(iterator)
    next(iterator)
    payload = _snapshot.to_payload(iterator)[0]
    assert list(pickle.loads(payload)) == list(iterator)


@pytest.mark.parametrize(
    "value",
    [
        Plain([1, 2]),
        {"nested": [frozenset({1, 2}), b"bytes", 2.5, None]},
        lambda x: x + 1,  # a lambda: by value, so the full pickler
        json.JSONDecodeError("msg", "doc", 1),  # exceptions: the full pickler
    ],
    ids=["importable-class", "builtins", "lambda", "exception"],
)
def test_either_pickler_resumes_exactly(value: Any) -> None:
    gen = holds(value, 3)
    next(gen)
    restored = contsnap.loads(contsnap.dumps(gen))
    held, i = next(restored)
    assert i == 1
    if callable(value) and not isinstance(value, Plain):
        assert held(1) == 2
    elif isinstance(value, BaseException):
        assert type(held) is type(value) and held.args == value.args
    else:
        assert held == value


def test_the_fast_pickler_gives_up_on_what_only_the_full_one_saves() -> None:
    simple = holds([1, 2], 2)
    by_value = holds(lambda: 1, 2)
    for gen in (simple, by_value):
        next(gen)
    assert _uses_the_fast_pickler(simple)
    assert not _uses_the_fast_pickler(by_value)
    # the full pickler's snapshot names its function in the payload, with no table
    meta = contsnap.describe(contsnap.dumps(by_value))
    assert meta["frames"][0]["qualname"] == "holds"
    assert meta["portable"] is False


def test_a_resource_handler_registered_later_is_used() -> None:
    """The fast pickler remembers which types it may save as pickle does; registering a
    handler for one of them must take effect on the next snapshot."""
    gen = holds(Plain([7]), 2)
    next(gen)
    contsnap.dumps(gen)  # Plain is now known as plain
    handle = contsnap.register_resource(Plain, lambda p: list(p.items) + [99], Plain)
    try:
        assert not _uses_the_fast_pickler(gen)
        held, _i = next(contsnap.loads(contsnap.dumps(gen)))
        assert held.items == [7, 99]
    finally:
        handle.unregister()
    assert _uses_the_fast_pickler(gen)


def test_a_deep_chain_goes_through_the_fast_pickler_and_resumes() -> None:
    gen = tower(120)
    assert next(gen) == "bottom"
    assert _uses_the_fast_pickler(gen)
    blob = contsnap.dumps(gen)
    meta = contsnap.describe(blob)
    assert len(meta["functions"]) == 1  # one function, named once
    assert len(meta["frames"]) == 64  # the description stops there
    assert all(frame["qualname"] == "tower" for frame in meta["frames"])
    assert _rest(contsnap.loads(blob)) == _rest(gen)


def _signed_with_table(functions: list[Any]) -> bytes:
    """A snapshot of ``stepped`` whose functions table is replaced, signed with the key in
    effect (bytes made by hand by a key holder)."""
    gen = stepped(0, 5, 1)
    next(gen)
    blob = contsnap.dumps(gen)
    meta, payload = _codec.verify(blob, kinds=("snapshot",))
    frames = [[0, frame["line"], 1] for frame in meta["frames"]]
    fields = {"created_at": 1.0, "portable": True, "functions": functions, "frames": frames}
    key = _keys.resolve().signing_key
    return _envelope.seal(payload, fields, key=key, kind="snapshot")


@pytest.mark.parametrize(
    "functions",
    [[], [["test_snapshot_format3", "stepped"]], [[1, 2, 3, None]]],
    ids=["empty", "short", "not-names"],
)
def test_a_payload_naming_a_missing_table_entry_is_refused(functions: list[Any]) -> None:
    with pytest.raises(contsnap.SnapshotCorruptError, match="functions|table|malformed"):
        contsnap.loads(_signed_with_table(functions))


def test_a_function_named_by_index_is_checked_by_its_fingerprint() -> None:
    entry = ["test_snapshot_format3", "stepped", "0000000000000000", __file__]
    with pytest.raises(contsnap.CodeChangedError):
        contsnap.loads(_signed_with_table([entry]))


def test_compression_is_opt_in() -> None:
    gen = holds("generator state " * 5_000, 2)
    next(gen)
    plain = contsnap.dumps(gen)
    assert contsnap.describe(plain)["compressed"] is False
    contsnap.configure(compress=True)
    try:
        packed = contsnap.dumps(gen)
    finally:
        contsnap.configure(compress=False)
    assert contsnap.describe(packed)["compressed"] is True
    assert len(packed) < len(plain) // 10
    assert next(contsnap.loads(packed)) == next(contsnap.loads(plain))


def test_the_metadata_of_a_small_snapshot_is_compact() -> None:
    gen = stepped(0, 10, 1)
    next(gen)
    blob = contsnap.dumps(gen)
    head = 7 + blob[6] + 8
    meta_len = int.from_bytes(blob[head : head + 4], "little")
    packed = json.loads(blob[head + 12 : head + 12 + meta_len])
    assert packed[:3] == ["snapshot", _envelope.PYTHON, None]
    assert packed[5] == [["test_snapshot_format3", "stepped", packed[5][0][2], __file__]]
    assert packed[6] == [[0, stepped.__code__.co_firstlineno + 4, 1]]
    assert packed[7] == {}


def test_seal_frames_writes_what_seal_would() -> None:
    entry = ["m", "q", "0123456789abcdef", "/f.py"]
    fast = _envelope.seal_frames(
        b"payload",
        key=b"k" * 32,
        kind="job",
        identity='a "quoted" name',
        created_at=1796584973.25,
        functions_json=[json.dumps(entry, separators=(",", ":"))],
        frames=[(0, 3, 1), (0, 9, 0)],
        meta={"job": {"steps": 3}},
        compress=False,
    )
    fields = {
        "created_at": 1796584973.25,
        "portable": True,
        "functions": [entry],
        "frames": [[0, 3, 1], [0, 9, 0]],
        "job": {"steps": 3},
    }
    slow = _envelope.seal(b"payload", fields, key=b"k" * 32, kind="job", identity='a "quoted" name')
    assert fast == slow


def test_frames_described_as_dicts_keep_every_field() -> None:
    """Callers that describe frames themselves (durable jobs, actor systems) get back what
    they gave, files and the types of locals included."""
    frames = [
        {"module": "m", "qualname": "f", "fingerprint": "1", "file": "/m.py", "line": 3},
        {
            "module": "m",
            "qualname": "f",
            "fingerprint": "1",
            "file": "/m.py",
            "line": 9,
            "state": "suspended",
            "locals": {"x": "int"},
        },
        {"module": "m", "qualname": "g", "fingerprint": "2", "line": 1, "state": "closed"},
    ]
    blob = _envelope.seal(b"p", {"frames": frames}, key=None, kind="snapshot")
    ring = _keys.KeyRing((b"unused key",), "test")
    meta, _payload = _envelope.unseal(blob, ring=ring, kinds=("snapshot",), allow_unsigned=True)
    assert meta["frames"] == [{"state": None, **frames[0]}, frames[1], frames[2]]
    assert [entry[:2] for entry in meta["functions"]] == [["m", "f"], ["m", "g"]]


@pytest.mark.parametrize(
    ("meta_json", "message"),
    [
        (b'{"kind":"snapshot"}', "array of 8 members"),
        (b'["snapshot","3.11",null]', "array of 8 members"),
        (b'["snapshot","3.11",null,null,null,null,null,[]]', "last member is not an object"),
    ],
)
def test_a_malformed_format_3_metadata_is_refused(meta_json: bytes, message: str) -> None:
    import hashlib
    import struct

    from contsnap._version import __version__

    version = __version__.encode()
    head = struct.pack("<4sBBB", b"CSNP", 3, 0, len(version)) + version
    unsigned = head + struct.pack("<IQ", len(meta_json), 0) + meta_json
    blob = unsigned + hashlib.blake2b(unsigned, digest_size=16).digest()
    with pytest.raises(contsnap.SnapshotCorruptError, match=message):
        contsnap.describe(blob)


def test_a_large_payload_is_unpickled_from_the_blob_itself() -> None:
    """decode() unpickles a large payload through a view into the verified blob (no copy);
    verify() still hands out bytes."""
    state = bytes(range(256)) * 1000
    gen = holds(state, 2)
    next(gen)
    blob = contsnap.dumps(gen)
    ring = _keys.resolve()
    _meta, viewed = _envelope.unseal(blob, ring=ring, kinds=("snapshot",), view=True)
    assert isinstance(viewed, memoryview) and viewed.readonly
    _meta, copied = _codec.verify(blob, kinds=("snapshot",))
    assert type(copied) is bytes and copied == viewed
    held, i = next(contsnap.loads(blob))
    assert (held, i) == (state, 1) and type(held) is bytes
