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
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contsnap import _envelope
from contsnap._envelope import configure_key, effective_key, read_meta, seal, unseal
from contsnap._errors import CheckpointError, SnapshotCorruptError, SnapshotSignatureError
from contsnap._version import __version__

KEY = b"0123456789abcdef0123456789abcdef"
OTHER_KEY = b"fedcba9876543210fedcba9876543210"
META = {
    "function": "examples.counter:count_up",
    "code_hash": "9f2c1a7be0d34c55",
    "label": 3,
    "python": "3.11",
    "created": 1732487000,
}
ENVELOPE_FACTS = {
    "signed",
    "format_version",
    "contsnap_version",
    "compressed",
    "payload_bytes",
    "total_bytes",
}
OUR_ERRORS = (SnapshotCorruptError, SnapshotSignatureError)


def small_payload() -> bytes:
    """About what pickling a paused counter generator's state gives: 150 bytes."""
    state = {"i": 3, "n": 10, "acc": [1, 2, 3], "name": "counter"}
    return (pickle.dumps(state, protocol=5) * 3)[:150]


def craft(
    body: bytes,
    *,
    meta_len: int,
    payload_len: int,
    flags: int = 0,
    version: int = 1,
    contsnap_version: bytes = __version__.encode(),
    key: bytes | None = None,
) -> bytes:
    """A blob laid out as docs/format.md says, with a correct digest (and HMAC with ``key``)."""
    head = struct.pack("<4sBBB", b"CSNP", version, flags, len(contsnap_version))
    unsigned = head + contsnap_version + struct.pack("<IQ", meta_len, payload_len) + body
    blob = unsigned + hashlib.blake2b(unsigned, digest_size=16).digest()
    if key is not None:
        blob += hmac.digest(key, blob, "sha256")
    return blob


def deflate(data: bytes) -> bytes:
    """A raw deflate stream (zlib.compress only takes wbits from Python 3.11 on)."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    return deflater.compress(data) + deflater.flush()


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("CONTSNAP_KEY", raising=False)
    configure_key(None)
    yield
    configure_key(None)


# --- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
def test_round_trip(key: bytes | None) -> None:
    payload = small_payload()
    assert unseal(seal(payload, META, key=key), key=key) == (META, payload)


@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
def test_large_compressible_payload_is_compressed_and_round_trips(key: bytes | None) -> None:
    payload = b"generator state " * 10_000
    blob = seal(payload, META, key=key)
    assert len(blob) < len(payload) // 2
    assert read_meta(blob)["compressed"] is True
    assert unseal(blob, key=key) == (META, payload)


def test_incompressible_payload_is_stored_as_is() -> None:
    payload = os.urandom(4000)
    blob = seal(payload, {}, key=None)
    assert read_meta(blob)["compressed"] is False
    assert payload in blob
    assert unseal(blob, key=None) == ({}, payload)


def test_tiny_body_is_not_compressed() -> None:
    blob = seal(b"\0" * 20, {"a": 1}, key=None)
    assert read_meta(blob)["compressed"] is False


@pytest.mark.parametrize("size", [0, 1, 63, 64, 511, 512, 513, 70_000])
def test_round_trip_at_compression_boundaries(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert unseal(seal(payload, {}, key=None), key=None) == ({}, payload)


def test_small_snapshot_stays_within_250_bytes() -> None:
    blob = seal(small_payload(), META, key=None)
    assert len(blob) <= 250


def test_metadata_round_trips_json_values() -> None:
    meta = {"text": "naïve ☃ \x00", "nested": {"list": [1, 2.5, None, True]}, "big": 10**30}
    assert unseal(seal(b"p", meta, key=None), key=None)[0] == meta


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_accepts_other_byte_buffers(kind: type) -> None:
    blob = seal(b"payload", META, key=None)
    assert unseal(kind(blob), key=None) == (META, b"payload")
    assert read_meta(kind(blob))["payload_bytes"] == 7


def test_accepts_memoryview_of_wider_items() -> None:
    payload = next(b"x" * n for n in range(4) if len(seal(b"x" * n, {}, key=None)) % 4 == 0)
    words = memoryview(seal(payload, {}, key=None)).cast("I")  # len() counts 4-byte items
    assert unseal(words, key=None) == ({}, payload)  # type: ignore[arg-type]


@pytest.mark.parametrize("call", [unseal, read_meta])
def test_text_is_a_type_error(call: Any) -> None:
    with pytest.raises(TypeError, match=r"takes the snapshot as bytes, .* not str$"):
        call("CSNP", key=None) if call is unseal else call("CSNP")  # type: ignore[arg-type]


# --- the byte layout ---------------------------------------------------------------


def test_uncompressed_layout_is_as_documented() -> None:
    assert seal(b"payload", {"a": 1}, key=None) == craft(
        b'{"a":1}payload', meta_len=7, payload_len=7
    )


def test_signed_layout_is_as_documented() -> None:
    assert seal(b"payload", {"a": 1}, key=KEY) == craft(
        b'{"a":1}payload', meta_len=7, payload_len=7, flags=1, key=KEY
    )


def test_compressed_body_is_raw_deflate_of_meta_then_payload() -> None:
    payload = b"abc" * 1000
    blob = seal(payload, {"a": 1}, key=None)
    assert blob[5] == 0b10
    body_start = 7 + len(__version__) + 12
    assert struct.unpack_from("<IQ", blob, body_start - 12) == (7, 3000)
    assert zlib.decompress(blob[body_start:-16], -15) == b'{"a":1}' + payload


# --- keys --------------------------------------------------------------------------


def test_effective_key_prefers_explicit_then_configured_then_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert effective_key(None) is None
    monkeypatch.setenv("CONTSNAP_KEY", "from-env")
    assert effective_key(None) == b"from-env"
    configure_key("configured")
    assert effective_key(None) == b"configured"
    assert effective_key(b"explicit") == b"explicit"
    assert effective_key("ключ") == "ключ".encode()
    configure_key(None)
    assert effective_key(None) == b"from-env"


def test_environment_key_is_read_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTSNAP_KEY", "one")
    assert effective_key(None) == b"one"
    monkeypatch.setenv("CONTSNAP_KEY", "two")
    assert effective_key(None) == b"two"
    monkeypatch.setenv("CONTSNAP_KEY", "")
    assert effective_key(None) is None
    monkeypatch.delenv("CONTSNAP_KEY")
    assert effective_key(None) is None


def test_environment_key_signs_and_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTSNAP_KEY", "shared secret")
    blob = seal(b"p", META, key=effective_key(None))
    assert read_meta(blob)["signed"] is True
    assert unseal(blob, key=effective_key(None)) == (META, b"p")


def test_configured_key_signs_and_verifies() -> None:
    configure_key(KEY)
    blob = seal(b"p", META, key=effective_key(None))
    assert unseal(blob, key=effective_key(None)) == (META, b"p")
    configure_key(None)
    with pytest.raises(SnapshotSignatureError):
        unseal(blob, key=effective_key(None))


@pytest.mark.parametrize("empty", [b"", ""])
def test_empty_key_is_refused(empty: bytes | str) -> None:
    with pytest.raises(ValueError, match=r"^the signing key is empty, which would make"):
        configure_key(empty)
    with pytest.raises(ValueError, match=r"^the signing key is empty, which would make"):
        effective_key(empty)


def test_empty_key_is_refused_by_seal_and_unseal() -> None:
    with pytest.raises(ValueError, match=r"^seal\(\) got an empty signing key"):
        seal(b"p", META, key=b"")
    with pytest.raises(ValueError, match=r"^unseal\(\) got an empty signing key"):
        unseal(seal(b"p", META, key=KEY), key=b"")


def test_key_may_be_a_byte_buffer() -> None:
    assert effective_key(bytearray(b"key")) == b"key"  # type: ignore[arg-type]
    assert effective_key(memoryview(b"key")) == b"key"  # type: ignore[arg-type]


def test_key_of_wrong_type_is_refused() -> None:
    with pytest.raises(
        TypeError, match=r"^the signing key must be bytes or str \(or None\), not int$"
    ):
        configure_key(42)  # type: ignore[arg-type]


def test_unsigned_snapshot_refused_when_a_key_is_in_effect() -> None:
    blob = seal(b"p", META, key=None)
    with pytest.raises(SnapshotSignatureError) as caught:
        unseal(blob, key=KEY)
    assert str(caught.value).startswith(
        "unsigned snapshot refused: a key is configured (key=, contsnap.configure() or "
        "CONTSNAP_KEY), so only snapshots signed with it are accepted;"
    )


def test_signed_snapshot_refused_without_a_key() -> None:
    blob = seal(b"p", META, key=KEY)
    with pytest.raises(SnapshotSignatureError) as caught:
        unseal(blob, key=None)
    assert str(caught.value) == (
        "snapshot is signed but no key is available to verify it: pass key=, call "
        "contsnap.configure(key=...), or set CONTSNAP_KEY to the key it was signed with"
    )


def test_wrong_key_is_refused() -> None:
    blob = seal(b"p", META, key=KEY)
    with pytest.raises(SnapshotSignatureError, match=r"^snapshot signature does not match the key"):
        unseal(blob, key=OTHER_KEY)


def test_forged_blob_with_valid_digest_but_no_key_is_refused() -> None:
    # An attacker can always recompute the unkeyed digest; only the HMAC stops them.
    forged = craft(b'{"a":1}evil', meta_len=7, payload_len=4, flags=1, key=OTHER_KEY)
    with pytest.raises(SnapshotSignatureError, match=r"^snapshot signature does not match"):
        unseal(forged, key=KEY)


def test_signature_errors_are_checkpoint_errors() -> None:
    with pytest.raises(CheckpointError):
        unseal(seal(b"p", META, key=KEY), key=None)


# --- read_meta ---------------------------------------------------------------------


def test_read_meta_of_signed_blob_needs_no_key() -> None:
    payload = small_payload()
    blob = seal(payload, META, key=KEY)
    assert read_meta(blob) == {
        **META,
        "signed": True,
        "format_version": 1,
        "contsnap_version": __version__,
        "compressed": True,
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
        "snapshot is truncated: it is 40 bytes, but even an empty one with its header takes 74;"
    )


def test_newer_format_version() -> None:
    blob = craft(b'{"a":1}', meta_len=7, payload_len=0, version=2)
    assert corrupt_message(blob) == (
        "snapshot format version 2 is not supported: contsnap "
        f"{__version__} reads format version 1; it was written by a newer contsnap; "
        "upgrade contsnap to restore it"
    )


def test_format_version_zero() -> None:
    blob = craft(b'{"a":1}', meta_len=7, payload_len=0, version=0)
    assert corrupt_message(blob).endswith(
        "reads format version 1; the bytes are damaged; restore from an intact copy of the snapshot"
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
    blob = seal(b"abc" * 1000, {}, key=None)
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
    assert unseal(blob, key=key) == (meta, payload)
    assert read_meta(blob)["payload_bytes"] == len(payload)
    damaged = damage(data, blob)
    for try_key in (key, None, OTHER_KEY):
        with pytest.raises(OUR_ERRORS):
            unseal(damaged, key=try_key)
    try:
        facts = read_meta(damaged)
    except OUR_ERRORS:
        return
    # read_meta checks no signature, so damage confined to the HMAC goes unnoticed there;
    # the digest still guarantees that what it reports is what was sealed.
    assert key is not None
    assert facts == read_meta(blob)


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
