"""The envelope: round trips, keys, the documented byte layout, and refusal of bad bytes.

Blobs the envelope must refuse after its integrity check passes can only come from
someone who forged the digest, so ``craft`` builds them from the layout in
docs/format.md, written out independently of the module under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import re
import struct
import sys
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contsnap import _envelope, _keys
from contsnap._envelope import read_meta
from contsnap._errors import (
    CheckpointError,
    SnapshotCorruptError,
    SnapshotKindError,
    SnapshotSignatureError,
)
from contsnap._keys import KeyRing
from contsnap._registry import STATE
from contsnap._version import __version__

KEY = b"0123456789abcdef0123456789abcdef"
OTHER_KEY = b"fedcba9876543210fedcba9876543210"
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
META = {
    "function": "examples.counter:count_up",
    "code_hash": "9f2c1a7be0d34c55",
    "label": 3,
    "created": 1732487000,
}
ENVELOPE_FACTS = {
    "kind",
    "identity",
    "python",
    "signed",
    "key_id",
    "format_version",
    "contsnap_version",
    "compressed",
    "payload_bytes",
    "total_bytes",
}
OUR_ERRORS = (SnapshotCorruptError, SnapshotSignatureError, SnapshotKindError)


def bound(meta: dict[str, Any], kind: str = "snapshot", identity: str | None = None) -> dict:
    """``meta`` as unseal gives it back: with the signed kind, identity and Python version."""
    return {"kind": kind, "python": PYTHON, "identity": identity, **meta}


def seal(
    payload: bytes,
    meta: dict[str, Any],
    *,
    key: bytes | None,
    kind: str = "snapshot",
    identity: str | None = None,
    compress: bool = False,
) -> bytes:
    return _envelope.seal(payload, meta, key=key, kind=kind, identity=identity, compress=compress)


def unseal(
    blob: Any,
    *,
    key: bytes | None,
    kinds: tuple[str, ...] = ("snapshot",),
    identity: str | None = None,
    allow_unsigned: bool | None = None,
) -> tuple[dict[str, Any], bytes]:
    """unseal with ``key`` as the only key in effect; ``key=None``: a key that signed
    nothing here, and unsigned blobs allowed (unless ``allow_unsigned`` says otherwise)."""
    ring = KeyRing((key or b"a key that signed nothing here",), "the test's key")
    if allow_unsigned is None:
        allow_unsigned = key is None
    return _envelope.unseal(
        blob, ring=ring, kinds=kinds, identity=identity, allow_unsigned=allow_unsigned
    )


def small_payload() -> bytes:
    """About what pickling a paused counter generator's state gives: 150 bytes."""
    state = {"i": 3, "n": 10, "acc": [1, 2, 3], "name": "counter"}
    return (pickle.dumps(state, protocol=5) * 3)[:150]


def key_id(key: bytes) -> bytes:
    """docs/format.md: the first 8 bytes of HMAC-SHA256(key, "contsnap key id v1")."""
    return hmac.digest(key, b"contsnap key id v1", "sha256")[:8]


def craft(
    body: bytes,
    *,
    meta_len: int,
    payload_len: int,
    flags: int = 0,
    version: int = 2,
    contsnap_version: bytes = __version__.encode(),
    key: bytes | None = None,
) -> bytes:
    """A blob laid out as docs/format.md says (formats 2 and 3), with a correct digest or HMAC."""
    head = struct.pack("<4sBBB", b"CSNP", version, flags, len(contsnap_version))
    head += contsnap_version
    if flags & 1:
        assert key is not None
        head += key_id(key)
    unsigned = head + struct.pack("<IQ", meta_len, payload_len) + body
    if flags & 1:
        return unsigned + hmac.digest(key, unsigned, "sha256")  # type: ignore[arg-type]
    return unsigned + hashlib.blake2b(unsigned, digest_size=16).digest()


def craft_v1(body: bytes, *, meta_len: int, payload_len: int, key: bytes | None = None) -> bytes:
    """A format-1 blob (docs/format.md, "Format 1"): digest always, HMAC after it if signed."""
    flags = 0 if key is None else 1
    head = struct.pack("<4sBBB", b"CSNP", 1, flags, len(__version__)) + __version__.encode()
    unsigned = head + struct.pack("<IQ", meta_len, payload_len) + body
    blob = unsigned + hashlib.blake2b(unsigned, digest_size=16).digest()
    return blob if key is None else blob + hmac.digest(key, blob, "sha256")


def deflate(data: bytes) -> bytes:
    """A raw deflate stream (zlib.compress only takes wbits from Python 3.11 on)."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    return deflater.compress(data) + deflater.flush()


@pytest.fixture(autouse=True)
def _own_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    monkeypatch.delenv("CONTSNAP_KEY", raising=False)
    monkeypatch.delenv("CONTSNAP_OLD_KEYS", raising=False)
    monkeypatch.setenv("CONTSNAP_KEY_FILE", str(tmp_path / "keys" / "key"))
    STATE.reset("contsnap._keys")
    yield
    STATE.reset("contsnap._keys")


# --- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
def test_round_trip(key: bytes | None) -> None:
    payload = small_payload()
    assert unseal(seal(payload, META, key=key), key=key) == (bound(META), payload)


@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
def test_large_compressible_payload_is_compressed_on_request_and_round_trips(
    key: bytes | None,
) -> None:
    payload = b"generator state " * 10_000
    blob = seal(payload, META, key=key, compress=True)
    assert len(blob) < len(payload) // 2
    assert read_meta(blob)["compressed"] is True
    assert unseal(blob, key=key) == (bound(META), payload)


def test_nothing_is_compressed_unless_asked() -> None:
    payload = b"generator state " * 10_000
    blob = seal(payload, META, key=KEY)
    assert read_meta(blob)["compressed"] is False
    assert payload in blob
    assert unseal(blob, key=KEY) == (bound(META), payload)


@pytest.mark.parametrize("size", [4000, 200_000])
def test_incompressible_payload_is_stored_as_is(size: int) -> None:
    payload = os.urandom(size)
    blob = seal(payload, {}, key=None, compress=True)
    assert read_meta(blob)["compressed"] is False
    assert payload in blob
    assert unseal(blob, key=None) == (bound({}), payload)


def test_a_large_body_is_probed_before_it_is_deflated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random bytes of 1 MiB are not deflated whole only to be thrown away: a 16 KiB
    sample from the middle says they would not shrink."""
    deflated: list[int] = []
    real = zlib.compressobj

    def counting(*args: Any) -> Any:
        deflated.append(1)
        return real(*args)

    monkeypatch.setattr(zlib, "compressobj", counting)
    payload = os.urandom(1 << 20)
    assert read_meta(seal(payload, {}, key=None, compress=True))["compressed"] is False
    assert deflated == []
    compressible = b"abc" * 400_000
    assert read_meta(seal(compressible, {}, key=None, compress=True))["compressed"] is True
    assert deflated == [1]


def test_tiny_body_is_not_compressed() -> None:
    blob = seal(b"\0" * 5, {}, key=None, compress=True)  # with the bound facts, under 64 bytes
    assert read_meta(blob)["compressed"] is False


@pytest.mark.parametrize("size", [0, 1, 63, 64, 511, 512, 513, 70_000])
def test_round_trip_at_compression_boundaries(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    for compress in (False, True):
        blob = seal(payload, {}, key=None, compress=compress)
        assert unseal(blob, key=None) == (bound({}), payload)


def test_small_snapshot_stays_within_300_bytes_signed() -> None:
    assert len(seal(small_payload(), {"created_at": 1732487000.125}, key=KEY)) <= 300
    assert len(seal(small_payload(), META, key=KEY, compress=True)) <= 300


def test_metadata_round_trips_json_values() -> None:
    meta = {"text": "naïve ☃ \x00", "nested": {"list": [1, 2.5, None, True]}, "big": 10**30}
    assert unseal(seal(b"p", meta, key=None), key=None)[0] == bound(meta)


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_accepts_other_byte_buffers(kind: type) -> None:
    blob = seal(b"payload", META, key=None)
    assert unseal(kind(blob), key=None) == (bound(META), b"payload")
    assert read_meta(kind(blob))["payload_bytes"] == 7


def test_accepts_memoryview_of_wider_items() -> None:
    payload = next(b"x" * n for n in range(4) if len(seal(b"x" * n, {}, key=None)) % 4 == 0)
    words = memoryview(seal(payload, {}, key=None)).cast("I")  # len() counts 4-byte items
    assert unseal(words, key=None) == (bound({}), payload)  # type: ignore[arg-type]


@pytest.mark.parametrize("call", [unseal, read_meta])
def test_text_is_a_type_error(call: Any) -> None:
    with pytest.raises(TypeError, match=r"takes the snapshot as bytes, .* not str$"):
        call("CSNP", key=None) if call is unseal else call("CSNP")  # type: ignore[arg-type]


# --- the byte layout ---------------------------------------------------------------


BOUND_A = b'["snapshot","%s",null,null,null,null,null,{"a":1}]' % PYTHON.encode()


def test_uncompressed_layout_is_as_documented() -> None:
    assert seal(b"payload", {"a": 1}, key=None) == craft(
        BOUND_A + b"payload", meta_len=len(BOUND_A), payload_len=7, version=3
    )


def test_signed_layout_is_as_documented() -> None:
    blob = seal(b"payload", {"a": 1}, key=KEY)
    assert blob == craft(
        BOUND_A + b"payload", meta_len=len(BOUND_A), payload_len=7, flags=1, key=KEY, version=3
    )
    assert blob[12:20] == key_id(KEY)  # right after the version string
    assert KEY not in blob


def test_compressed_body_is_raw_deflate_of_meta_then_payload() -> None:
    payload = b"abc" * 1000
    blob = seal(payload, {"a": 1}, key=None, compress=True)
    assert blob[5] == 0b10
    body_start = 7 + len(__version__) + 12
    assert struct.unpack_from("<IQ", blob, body_start - 12) == (len(BOUND_A), 3000)
    assert zlib.decompress(blob[body_start:-16], -15) == BOUND_A + payload


# --- keys --------------------------------------------------------------------------


def test_keys_in_effect_explicit_then_configured_then_environment_then_key_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from_file = _keys.resolve()
    assert from_file.source == f"the key file {tmp_path / 'keys' / 'key'}"
    assert len(from_file.keys[0]) == 32
    monkeypatch.setenv("CONTSNAP_KEY", "from-env")
    assert _keys.resolve().keys == (b"from-env",)
    _keys.configure_keys("configured")
    assert _keys.resolve().keys == (b"configured",)
    assert _keys.resolve(b"explicit").keys == (b"explicit",)
    assert _keys.resolve("ключ").keys == ("ключ".encode(),)
    _keys.configure_keys(None)
    assert _keys.resolve().keys == (b"from-env",)
    monkeypatch.delenv("CONTSNAP_KEY")
    assert _keys.resolve().keys == from_file.keys  # the same file, the same key


def test_environment_key_is_read_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTSNAP_KEY", "one")
    assert _keys.resolve().keys == (b"one",)
    monkeypatch.setenv("CONTSNAP_KEY", "two")
    assert _keys.resolve().keys == (b"two",)


@pytest.mark.parametrize("empty", ["", "   ", "\t\n"])
def test_an_empty_environment_key_is_an_error_never_no_key(
    monkeypatch: pytest.MonkeyPatch, empty: str
) -> None:
    monkeypatch.setenv("CONTSNAP_KEY", empty)
    with pytest.raises(_keys.SigningKeyError, match=r"CONTSNAP_KEY is set but empty"):
        _keys.resolve()


@pytest.mark.parametrize("empty", [b"", "", " "])
def test_an_empty_key_is_refused(empty: bytes | str) -> None:
    with pytest.raises(_keys.SigningKeyError, match=r"empty key, which would make signatures"):
        _keys.configure_keys(empty)
    with pytest.raises(_keys.SigningKeyError, match=r"empty key"):
        _keys.resolve(empty)


def test_key_may_be_a_byte_buffer() -> None:
    assert _keys.resolve(bytearray(b"key")).keys == (b"key",)  # type: ignore[arg-type]
    assert _keys.resolve(memoryview(b"key")).keys == (b"key",)  # type: ignore[arg-type]


def test_key_of_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^key= takes a key \(bytes or str\) or a list"):
        _keys.configure_keys(42)  # type: ignore[arg-type]


def test_the_key_file_is_made_on_first_use_private_and_kept(tmp_path: Any) -> None:
    path = tmp_path / "keys" / "key"
    assert not path.exists()
    ring = _keys.resolve()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.read_bytes() == ring.keys[0] and len(ring.keys[0]) == 32
    STATE.reset("contsnap._keys")  # another process: reads the same file
    assert _keys.resolve().keys == ring.keys


@pytest.mark.parametrize("mode", [0o644, 0o660, 0o604])
def test_a_key_file_others_can_read_is_refused(tmp_path: Any, mode: int) -> None:
    path = tmp_path / "keys" / "key"
    _keys.resolve()
    path.chmod(mode)
    STATE.reset("contsnap._keys")
    with pytest.raises(_keys.SigningKeyError, match=r"can be read or written by others"):
        _keys.resolve()


def test_a_key_file_that_cannot_be_made_says_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("CONTSNAP_KEY_FILE", str(blocker / "key"))
    with pytest.raises(
        _keys.SigningKeyError, match=r"per-user signing key .* set CONTSNAP_KEY_FILE"
    ):
        _keys.resolve()


def test_rotation_signs_with_the_first_key_and_verifies_with_any(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = seal(b"p", META, key=OTHER_KEY)
    _keys.configure_keys(KEY, old_keys=[OTHER_KEY])
    ring = _keys.resolve()
    assert ring.signing_key == KEY
    new = seal(b"p", META, key=ring.signing_key)
    for blob in (old, new):
        assert _envelope.unseal(blob, ring=ring, kinds=("snapshot",))[1] == b"p"
    _keys.configure_keys(None)
    monkeypatch.setenv("CONTSNAP_KEY", KEY.decode())
    monkeypatch.setenv("CONTSNAP_OLD_KEYS", f"unrelated,{OTHER_KEY.decode()}")
    assert _envelope.unseal(old, ring=_keys.resolve(), kinds=("snapshot",))[1] == b"p"


def test_unsigned_snapshot_refused_unless_allowed() -> None:
    blob = seal(b"p", META, key=None)
    with pytest.raises(SnapshotSignatureError) as caught:
        unseal(blob, key=KEY)
    message = str(caught.value)
    assert message.startswith("unsigned snapshot refused: contsnap only restores bytes signed")
    assert "allow_unsigned=True" in message and key_id(KEY).hex() in message
    assert unseal(blob, key=KEY, allow_unsigned=True) == (bound(META), b"p")


def test_a_foreign_key_is_named_with_the_keys_in_effect() -> None:
    blob = seal(b"p", META, key=OTHER_KEY)
    with pytest.raises(SnapshotSignatureError) as caught:
        unseal(blob, key=KEY, allow_unsigned=True)
    message = str(caught.value)
    assert message.startswith(f"snapshot signed with key id {key_id(OTHER_KEY).hex()}, which")
    assert f"key id {key_id(KEY).hex()}" in message
    assert "set the same key here" in message


def test_forged_blob_with_valid_layout_but_another_key_is_refused() -> None:
    # A forger without the key can sign with their own; the key id then names theirs.
    forged = craft(b'{"kind":"snapshot"}evil', meta_len=19, payload_len=4, flags=1, key=OTHER_KEY)
    with pytest.raises(SnapshotSignatureError, match=r"not among the keys in effect"):
        unseal(forged, key=KEY)
    # ...and one that copies our key id but cannot compute our HMAC:
    stolen_id = forged[:12] + key_id(KEY) + forged[20:]
    with pytest.raises(SnapshotSignatureError, match=r"does not match its contents"):
        unseal(stolen_id, key=KEY)


def test_signature_errors_are_checkpoint_errors() -> None:
    with pytest.raises(CheckpointError):
        unseal(seal(b"p", META, key=KEY), key=OTHER_KEY)


# --- purpose binding ---------------------------------------------------------------


def test_kind_and_identity_are_signed_and_checked() -> None:
    blob = seal(b"p", {}, key=KEY, kind="job", identity="mod:main")
    meta, _ = unseal(blob, key=KEY, kinds=("job",), identity="mod:main")
    assert (meta["kind"], meta["identity"]) == ("job", "mod:main")
    with pytest.raises(SnapshotKindError, match=r"a durable job's checkpoint .*, not a generator"):
        unseal(blob, key=KEY)
    with pytest.raises(SnapshotKindError, match=r"of 'mod:main', not of 'other:main'"):
        unseal(blob, key=KEY, kinds=("job",), identity="other:main")
    with pytest.raises(ValueError, match="unknown snapshot kind"):
        seal(b"p", {}, key=KEY, kind="mystery")


def test_the_kind_cannot_be_edited_without_the_key() -> None:
    blob = seal(b"p", {}, key=KEY, kind="job", identity="a:main")
    edited = blob.replace(b'"a:main"', b'"b:main"')
    assert edited != blob
    with pytest.raises(SnapshotSignatureError, match="does not match its contents"):
        unseal(edited, key=KEY, kinds=("job",), identity="b:main")


# --- format 1 ----------------------------------------------------------------------


def test_format_1_signed_blobs_load_with_their_key_and_an_inferred_kind() -> None:
    meta = b'{"job":{"name":"m:main"},"x":1}'
    blob = craft_v1(meta + b"payload", meta_len=len(meta), payload_len=7, key=KEY)
    found, payload = unseal(blob, key=KEY, kinds=("job",), identity="m:main")
    assert payload == b"payload" and found["kind"] == "job" and found["x"] == 1
    with pytest.raises(SnapshotSignatureError, match="format-1 snapshot matches none"):
        unseal(blob, key=OTHER_KEY)
    assert read_meta(blob)["format_version"] == 1


def test_format_1_unsigned_blobs_load_only_when_allowed() -> None:
    blob = craft_v1(b'{"a":1}payload', meta_len=7, payload_len=7)
    with pytest.raises(SnapshotSignatureError, match="unsigned snapshot refused"):
        unseal(blob, key=KEY)
    meta, payload = unseal(blob, key=KEY, allow_unsigned=True)
    assert (meta["kind"], meta["a"], payload) == ("snapshot", 1, b"payload")


# --- read_meta ---------------------------------------------------------------------


def test_read_meta_of_signed_blob_needs_no_key() -> None:
    payload = small_payload()
    blob = seal(payload, META, key=KEY)
    assert read_meta(blob) == {
        **META,
        "kind": "snapshot",
        "identity": None,
        "python": PYTHON,
        "signed": True,
        "key_id": key_id(KEY).hex(),
        "format_version": 3,
        "contsnap_version": __version__,
        "compressed": False,
        "payload_bytes": len(payload),
        "total_bytes": len(blob),
    }


def test_read_meta_of_unsigned_uncompressed_blob() -> None:
    blob = seal(b"payload", {"a": 1}, key=None)
    facts = read_meta(blob)
    assert facts["signed"] is False
    assert facts["compressed"] is False
    assert facts["payload_bytes"] == 7


def test_read_meta_checks_integrity() -> None:
    blob = bytearray(seal(b"payload", {"a": 1}, key=None))
    blob[-20] ^= 1
    with pytest.raises(SnapshotCorruptError, match="integrity check failed"):
        read_meta(bytes(blob))


def test_metadata_may_not_use_envelope_fact_names() -> None:
    with pytest.raises(ValueError, match=r"may not use the key\(s\) \['signed'\]"):
        seal(b"p", {"signed": "by me"}, key=None)


def test_metadata_must_be_json() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        seal(b"p", {"when": object()}, key=None)
    with pytest.raises(ValueError, match="Out of range float"):
        seal(b"p", {"x": float("nan")}, key=None)


# --- refusal of bad bytes, message by message --------------------------------------


def corrupt_message(blob: bytes, key: bytes | None = None) -> str:
    """The message unseal refuses ``blob`` with, after checking read_meta refuses it alike."""
    with pytest.raises(SnapshotCorruptError) as caught:
        unseal(blob, key=key)
    with pytest.raises(SnapshotCorruptError) as caught_by_read_meta:
        read_meta(blob)
    assert str(caught_by_read_meta.value) == str(caught.value)
    return str(caught.value)


def payload_corrupt_message(blob: bytes) -> str:
    """The message unseal refuses ``blob`` with; read_meta, which inflates only the
    metadata, still describes it."""
    with pytest.raises(SnapshotCorruptError) as caught:
        unseal(blob, key=None)
    assert read_meta(blob)["compressed"] is True
    return str(caught.value)


def test_wrong_magic() -> None:
    assert corrupt_message(b"PK\x03\x04 and a zip file") == (
        "not a contsnap snapshot: it starts with b'PK\\x03\\x04', not b'CSNP'; "
        "pass the bytes that contsnap's snapshot produced"
    )


@pytest.mark.parametrize("blob", [b"", b"CS", b"CSNP\x01"])
def test_too_short(blob: bytes) -> None:
    assert re.fullmatch(
        rf"snapshot is truncated: it is {len(blob)} bytes, but even an empty one with its "
        r"header takes 7; pass the complete bytes that seal produced, or restore from an "
        r"intact copy of the snapshot",
        corrupt_message(blob),
    )


def test_truncated_after_the_preamble() -> None:
    blob = seal(b"payload", {"a": 1}, key=KEY)[:40]
    assert corrupt_message(blob, KEY).startswith(
        "snapshot is truncated: it is 40 bytes, but even an empty one with its header takes 66;"
    )  # 7 + 5 (version) + 8 (key id) + 12 (sizes) + 2 ("{}") + 32 (HMAC)


def test_newer_format_version() -> None:
    blob = craft(b'{"a":1}', meta_len=7, payload_len=0, version=4)
    assert corrupt_message(blob) == (
        "snapshot format version 4 is not supported: contsnap "
        f"{__version__} reads format versions 1 to 3; it was written by a newer contsnap "
        "(upgrade contsnap to restore it) or the bytes are damaged"
    )


def test_format_version_zero() -> None:
    blob = craft(b'{"a":1}', meta_len=7, payload_len=0, version=0)
    assert corrupt_message(blob).endswith(
        "reads format versions 1 to 3; the bytes are damaged; restore from an intact copy "
        "of the snapshot"
    )


def test_unknown_flag_bits() -> None:
    blob = craft(b'{"a":1}', meta_len=7, payload_len=0, flags=0x84)
    assert corrupt_message(blob) == (
        "snapshot has unknown flag bits 0x84 (flags byte 0x84): it was written by a newer "
        "contsnap or is damaged; upgrade contsnap, or restore from an intact copy of the "
        "snapshot"
    )


def test_altered_byte() -> None:
    blob = bytearray(seal(b"payload", {"a": 1}, key=None))
    blob[-18] ^= 0x20
    assert corrupt_message(bytes(blob)) == (
        "snapshot integrity check failed: its blake2b digest does not match its contents, "
        "so it was altered after it was sealed; restore from an intact copy of the snapshot"
    )


def test_truncated_body() -> None:
    blob = seal(b"payload", {}, key=None)
    message = corrupt_message(blob[:-5])
    assert re.search(
        rf"so it was truncated \({len(blob) - 5} of the {len(blob)} bytes its header declares "
        r"are present\) after it was sealed;",
        message,
    ), message


def test_trailing_garbage() -> None:
    blob = seal(b"payload", {"a": 1}, key=None)
    assert f"so it was extended (3 bytes follow the {len(blob)} its header declares)" in (
        corrupt_message(blob + b"xyz")
    )


def test_damaged_compressed_blob() -> None:
    blob = seal(b"abc" * 1000, {}, key=None, compress=True)
    assert "so it was truncated, extended or altered after it was sealed" in corrupt_message(
        blob[:-1]
    )


def test_declared_body_longer_than_present() -> None:
    blob = craft(b'{"a":1}payload', meta_len=7, payload_len=8)
    assert corrupt_message(blob) == (
        "snapshot header is malformed: it declares a 15-byte body but 14 bytes are present; "
        "restore from an intact copy of the snapshot"
    )


def test_declared_metadata_too_short() -> None:
    blob = craft(b"{payload", meta_len=1, payload_len=7)
    assert corrupt_message(blob).startswith(
        "snapshot header is malformed: it declares 1 bytes of metadata, too few for a JSON object;"
    )


def test_non_ascii_version_string() -> None:
    blob = craft(b"{}", meta_len=2, payload_len=0, contsnap_version=b"\xff")
    assert corrupt_message(blob).startswith(
        "snapshot header is malformed: the contsnap version it records is not ASCII;"
    )


def test_compressed_body_declaring_more_than_deflate_can_produce() -> None:
    body = deflate(b"{}")
    blob = craft(body, meta_len=2, payload_len=2**40, flags=0b10)
    assert corrupt_message(blob) == (
        f"snapshot header is malformed: its {len(body)}-byte compressed body declares "
        f"{2**40 + 2} bytes, more than deflate can produce or contsnap will inflate "
        f"({1 << 30}); restore from an intact copy of the snapshot"
    )


def test_zip_bomb_is_cut_off_at_the_declared_size() -> None:
    body = deflate(b"{}" + b"\0" * 10_000_000)  # ~10 KB that inflate to 10 MB
    blob = craft(body, meta_len=2, payload_len=1000, flags=0b10)
    assert payload_corrupt_message(blob) == (
        "snapshot body does not decompress to the 1002 bytes its header declares; "
        "restore from an intact copy of the snapshot"
    )


def test_inflation_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_envelope, "MAX_INFLATED_BODY", 10_000)
    body = deflate(b"{}" + b"\0" * 20_000)
    blob = craft(body, meta_len=2, payload_len=20_000, flags=0b10)
    assert "more than deflate can produce or contsnap will inflate (10000)" in (
        corrupt_message(blob)
    )


def test_invalid_deflate_stream() -> None:
    blob = craft(b"\xff" * 20, meta_len=10, payload_len=10, flags=0b10)
    assert re.fullmatch(
        r"snapshot body does not decompress \(zlib: Error -3 while decompressing data: .*\); "
        r"restore from an intact copy of the snapshot",
        corrupt_message(blob),
    )


def test_deflate_stream_shorter_than_declared() -> None:
    blob = craft(deflate(b'{"a":1}pay'), meta_len=7, payload_len=7, flags=0b10)
    assert payload_corrupt_message(blob).startswith(
        "snapshot body does not decompress to the 14 bytes its header declares;"
    )


def test_deflate_stream_followed_by_garbage() -> None:
    blob = craft(deflate(b'{"a":1}payload') + b"junk", meta_len=7, payload_len=7, flags=0b10)
    assert "does not decompress to the 14 bytes" in payload_corrupt_message(blob)


@pytest.mark.parametrize(
    ("meta_json", "detail"),
    [
        (b'{"a":', r"JSONDecodeError: Expecting value: line 1 column 6 \(char 5\)"),
        (b'{"a":1} ', r"ValueError: 1 characters follow the JSON value"),
        (b'\xff{"a":1}', r"UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff .*"),
        (b" {}", r"JSONDecodeError: Expecting value: .*"),
        (b"[" * 100_000 + b"]" * 100_000, r"RecursionError: .*"),
    ],
    ids=["cut", "trailing", "not-utf8", "leading-space", "deep"],
)
def test_metadata_not_json(meta_json: bytes, detail: str) -> None:
    blob = craft(meta_json + b"p", meta_len=len(meta_json), payload_len=1)
    assert re.fullmatch(
        rf"snapshot metadata is not valid JSON \({detail}\); restore from an intact copy of "
        r"the snapshot",
        corrupt_message(blob),
    )


@pytest.mark.parametrize(
    ("meta_json", "kind"),
    [(b"[1]", "array"), (b'"s"', "string"), (b"12", "number"), (b"null", "null")],
)
def test_metadata_not_an_object(meta_json: bytes, kind: str) -> None:
    blob = craft(meta_json, meta_len=len(meta_json), payload_len=0)
    assert corrupt_message(blob) == (
        f"snapshot metadata is a JSON {kind}, not an object; "
        "restore from an intact copy of the snapshot"
    )


# --- no other exception, whatever the bytes -----------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
metas = st.dictionaries(
    st.text(max_size=12).filter(lambda name: name not in ENVELOPE_FACTS), json_values, max_size=6
)
payloads = st.binary(max_size=600) | st.integers(0, 3000).map(lambda n: b"ab" * n)
keys = st.none() | st.just(KEY)


def damage(data: st.DataObject, blob: bytes) -> bytes:
    """Flip, cut, extend, insert into or delete from ``blob``: always a different blob."""
    how = data.draw(st.sampled_from(["flip", "truncate", "extend", "insert", "delete"]))
    if how == "flip":
        at = data.draw(st.integers(0, len(blob) - 1))
        mask = data.draw(st.integers(1, 255))
        return blob[:at] + bytes([blob[at] ^ mask]) + blob[at + 1 :]
    if how == "truncate":
        return blob[: data.draw(st.integers(0, len(blob) - 1))]
    if how == "extend":
        return blob + data.draw(st.binary(min_size=1, max_size=40))
    at = data.draw(st.integers(0, len(blob) - 1))
    if how == "insert":
        return blob[:at] + data.draw(st.binary(min_size=1, max_size=8)) + blob[at:]
    return blob[:at] + blob[at + data.draw(st.integers(1, 8)) :]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads, meta=metas, key=keys, data=st.data())
def test_damaged_blobs_only_raise_our_errors(
    payload: bytes, meta: dict[str, Any], key: bytes | None, data: st.DataObject
) -> None:
    blob = seal(payload, meta, key=key)
    assert unseal(blob, key=key) == (bound(meta), payload)
    assert read_meta(blob)["payload_bytes"] == len(payload)
    damaged = damage(data, blob)
    for try_key in (key, None, OTHER_KEY):
        with pytest.raises(OUR_ERRORS):
            unseal(damaged, key=try_key)
    try:
        facts = read_meta(damaged)
    except OUR_ERRORS:
        return
    # read_meta checks no signature: a damaged signed blob may still be described (that is
    # why it is only for describing); an unsigned one has its digest checked.
    assert key is not None
    assert isinstance(facts, dict)


@settings(max_examples=200, deadline=None)
@given(
    flags=st.integers(0, 3),
    meta_len=st.integers(0, 40) | st.integers(0, 2**32 - 1),
    payload_len=st.integers(0, 40) | st.integers(0, 2**64 - 1),
    body=st.binary(max_size=80)
    | st.builds(
        lambda meta, tail: deflate(json.dumps(meta).encode() + tail),
        json_values,
        st.binary(max_size=40),
    ),
    version=st.sampled_from([b"", b"0.1.0", b"\x80"]),
)
def test_forged_headers_only_raise_our_errors(
    flags: int, meta_len: int, payload_len: int, body: bytes, version: bytes
) -> None:
    # A forger can always make the unkeyed digest match, so everything after it is
    # attack surface when no key is in effect.
    blob = craft(
        body,
        meta_len=meta_len,
        payload_len=payload_len,
        flags=flags,
        contsnap_version=version,
        key=KEY if flags & 1 else None,
    )
    for call in (lambda: unseal(blob, key=KEY if flags & 1 else None), lambda: read_meta(blob)):
        try:
            result = call()
        except OUR_ERRORS:
            continue
        meta = result[0] if isinstance(result, tuple) else result
        assert isinstance(meta, dict)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100).map(lambda tail: b"CSNP\x01" + tail) | st.binary(max_size=100))
def test_random_bytes_only_raise_our_errors(blob: bytes) -> None:
    with pytest.raises(OUR_ERRORS):
        unseal(blob, key=None)
    with pytest.raises(OUR_ERRORS):
        read_meta(blob)
