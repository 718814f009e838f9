"""The envelope: frames opaque snapshot bytes with metadata, compression and a signature.

This stage knows nothing about frames or pickle. It turns ``(payload, meta)`` into one
versioned, self-checking blob and back. A blob that is damaged, of an unknown format or,
with a key in effect, not signed with that key is refused before any of it is inflated or
parsed. The byte layout and the security model are in ``docs/format.md``; keep the two in
step (the tests build blobs from that description).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import zlib
from typing import Any

from contsnap._errors import SnapshotCorruptError, SnapshotSignatureError
from contsnap._version import __version__

__all__ = ["configure_key", "effective_key", "read_meta", "seal", "unseal"]

MAGIC = b"CSNP"
FORMAT_VERSION = 1
FLAG_SIGNED = 0x01
FLAG_COMPRESSED = 0x02
_KNOWN_FLAGS = FLAG_SIGNED | FLAG_COMPRESSED

KEY_ENV_VAR = "CONTSNAP_KEY"

# magic, format version, flags, length of the contsnap version string that follows.
_PREAMBLE = struct.Struct("<4sBBB")
# Metadata JSON length (u32) and payload length (u64), both before compression.
_SIZES = struct.Struct("<IQ")
_DIGEST_SIZE = 16  # blake2b-128: detects accidental damage, no secret involved
_MAC_SIZE = 32  # HMAC-SHA256, present only in signed blobs
_SMALLEST_META = b"{}"

# A compressed body may not inflate past this, whatever its header declares: a small
# blob must not be able to make the reader allocate gigabytes (a "zip bomb").
MAX_INFLATED_BODY = 1 << 30
# Deflate turns one input byte into at most 1032 output bytes (a 258-byte match costs at
# least 2 bits), so a header declaring more than this ratio is lying.
_MAX_DEFLATE_RATIO = 1032
# Below this many body bytes deflate rarely pays for itself, so it is not even tried.
_MIN_COMPRESSIBLE_BODY = 64
_COMPRESS_LEVEL = 6

_RESERVED_META_KEYS = frozenset(
    {"signed", "format_version", "contsnap_version", "compressed", "payload_bytes", "total_bytes"}
)

_VERSION_BYTES = __version__.encode("ascii")
# The fixed start of every blob this contsnap writes, one per combination of flags.
_HEADERS = {
    flags: _PREAMBLE.pack(MAGIC, FORMAT_VERSION, flags, len(_VERSION_BYTES)) + _VERSION_BYTES
    for flags in range(_KNOWN_FLAGS + 1)
}

_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_JSON_DECODER = json.JSONDecoder()

_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
_JSON_KINDS[type(None)] = "null"

_configured_key: bytes | None = None

_RESTORE_INTACT = "restore from an intact copy of the snapshot"


def configure_key(key: bytes | str | None) -> None:
    """Set (or clear, with ``None``) the process-wide key used to sign and verify snapshots.

    A ``str`` key is UTF-8 encoded. The key takes precedence over ``$CONTSNAP_KEY``.
    """
    global _configured_key
    _configured_key = None if key is None else _key_bytes(key)


def effective_key(key: bytes | str | None) -> bytes | None:
    """The key in effect: ``key`` if given, else the configured key, else ``$CONTSNAP_KEY``.

    The environment variable is read on every call, so changing it takes effect at once;
    an empty ``CONTSNAP_KEY`` counts as unset.
    """
    if key is not None:
        return _key_bytes(key)
    if _configured_key is not None:
        return _configured_key
    from_env = os.environ.get(KEY_ENV_VAR)
    if not from_env:
        return None
    # surrogateescape gives back the raw bytes of a variable that is not valid UTF-8.
    return from_env.encode("utf-8", "surrogateescape")


def _key_bytes(key: bytes | str) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    elif isinstance(key, (bytearray, memoryview)):
        key = bytes(key)
    elif not isinstance(key, bytes):
        raise TypeError(f"the signing key must be bytes or str (or None), not {type(key).__name__}")
    if not key:
        raise ValueError(
            "the signing key is empty, which would make signatures worthless; "
            "use a secret of at least 32 random bytes, or None for no key"
        )
    return key


def seal(payload: bytes, meta: dict[str, Any], *, key: bytes | None) -> bytes:
    """Wrap ``payload`` and the JSON-able ``meta`` in a checked blob, signed when ``key`` is set.

    The body is deflated only when that makes the blob smaller. ``meta`` may not use the
    names :func:`read_meta` adds (``signed``, ``payload_bytes``, ...).
    """
    if not _RESERVED_META_KEYS.isdisjoint(meta):
        clash = sorted(_RESERVED_META_KEYS.intersection(meta))
        raise ValueError(
            f"snapshot metadata may not use the key(s) {clash}: read_meta() reports the "
            "envelope's own facts under those names; rename them"
        )
    if key is not None and not key:
        raise ValueError("seal() got an empty signing key; pass key=None for no signature")
    meta_json = _JSON_ENCODER.encode(meta).encode("utf-8")
    meta_len = len(meta_json)
    payload_len = len(payload)
    body_len = meta_len + payload_len
    if meta_len > 0xFFFFFFFF:
        raise ValueError(f"snapshot metadata is {meta_len} bytes of JSON; the limit is 4 GiB")

    flags = 0 if key is None else FLAG_SIGNED
    body: tuple[bytes, ...] = (meta_json, payload)
    if _MIN_COMPRESSIBLE_BODY <= body_len <= MAX_INFLATED_BODY:
        deflater = _deflater(body_len)
        deflated = deflater.compress(meta_json) + deflater.compress(payload) + deflater.flush()
        if len(deflated) < body_len:
            flags |= FLAG_COMPRESSED
            body = (deflated,)

    header = _HEADERS[flags] + _SIZES.pack(meta_len, payload_len)
    # Hash the pieces in place rather than joining them first: one copy of a large
    # payload (the final join) instead of two.
    digest = hashlib.blake2b(header, digest_size=_DIGEST_SIZE)
    for piece in body:
        digest.update(piece)
    parts = [header, *body, digest.digest()]
    if key is not None:
        mac = hmac.new(key, digestmod="sha256")
        for piece in parts:
            mac.update(piece)
        parts.append(mac.digest())
    return b"".join(parts)


def _deflater(body_len: int) -> zlib._Compress:
    """A raw-deflate compressor sized for ``body_len`` bytes (any of them inflates with -15).

    zlib's default 256 KiB of state costs ~45 us to set up, several times the work of
    deflating a small snapshot, so small bodies get a 4 KiB window. The tiniest also get
    the fixed Huffman code: the same size at that scale, and twice as fast to inflate.
    Large ones get the fastest level, so that compressing never dominates a save.
    """
    if body_len <= 512:
        return zlib.compressobj(_COMPRESS_LEVEL, zlib.DEFLATED, -12, 4, zlib.Z_FIXED)
    if body_len <= 1 << 16:
        return zlib.compressobj(_COMPRESS_LEVEL, zlib.DEFLATED, -12, 4)
    # large bodies: level 1 is ~10x faster than 6 and, on pickles, within 1% of its size
    return zlib.compressobj(1, zlib.DEFLATED, -15, 8)


def unseal(blob: bytes, *, key: bytes | None) -> tuple[dict[str, Any], bytes]:
    """Check ``blob`` and return its ``(meta, payload)``.

    With a key the blob must carry a matching signature; without one it must be unsigned.
    Raises :class:`SnapshotCorruptError` or :class:`SnapshotSignatureError`, nothing else.
    """
    if key is not None and not key:
        raise ValueError("unseal() got an empty signing key; pass key=None for no key")
    data = _as_bytes(blob, "unseal()")
    flags, end = _check_integrity(data)
    signed = bool(flags & FLAG_SIGNED)
    if key is None:
        if signed:
            raise SnapshotSignatureError(
                "snapshot is signed but no key is available to verify it: pass key=, call "
                f"contsnap.configure(key=...), or set {KEY_ENV_VAR} to the key it was signed with"
            )
    elif not signed:
        raise SnapshotSignatureError(
            "unsigned snapshot refused: a key is configured (key=, contsnap.configure() or "
            f"{KEY_ENV_VAR}), so only snapshots signed with it are accepted; take the "
            "snapshot with the same key in effect, or restore it with no key in effect "
            "if you trust where it came from"
        )
    else:
        mac_start = end + _DIGEST_SIZE
        expected = hmac.digest(key, memoryview(data)[:mac_start], "sha256")
        if not hmac.compare_digest(expected, data[mac_start:]):
            raise SnapshotSignatureError(
                "snapshot signature does not match the key: it was signed with a different "
                "key or altered after signing; use the key it was signed with, and do not "
                "restore it if you do not trust where it came from"
            )
    meta_len, payload_len, body_start = _read_sizes(data, flags, end)
    if flags & FLAG_COMPRESSED:
        inflater = zlib.decompressobj(-15)
        try:
            meta_json = inflater.decompress(memoryview(data)[body_start:end], meta_len)
            payload = b""
            if not inflater.eof:
                payload = inflater.decompress(inflater.unconsumed_tail, payload_len + 1)
        except zlib.error as exc:
            raise _inflate_error(exc) from None
        if (
            len(meta_json) != meta_len
            or len(payload) != payload_len
            or not inflater.eof
            or inflater.unused_data
            or inflater.unconsumed_tail
        ):
            raise _inflate_size_error(meta_len + payload_len)
    else:
        payload_start = body_start + meta_len
        meta_json = data[body_start:payload_start]
        payload = data[payload_start:end]
    return _decode_meta(meta_json), payload


def read_meta(blob: bytes) -> dict[str, Any]:
    """The metadata of ``blob`` plus the envelope's facts; needs no key and checks no signature.

    Added keys: ``signed``, ``format_version``, ``contsnap_version``, ``compressed``,
    ``payload_bytes`` (before compression) and ``total_bytes``. Since the signature is not
    checked, nothing here is authenticated: use it to describe a snapshot, not to trust it.
    """
    data = _as_bytes(blob, "read_meta()")
    flags, end = _check_integrity(data)
    meta_len, payload_len, body_start = _read_sizes(data, flags, end)
    if flags & FLAG_COMPRESSED:
        inflater = zlib.decompressobj(-15)
        try:
            meta_json = inflater.decompress(memoryview(data)[body_start:end], meta_len)
        except zlib.error as exc:
            raise _inflate_error(exc) from None
        if len(meta_json) != meta_len:
            raise _inflate_size_error(meta_len + payload_len)
    else:
        meta_json = data[body_start : body_start + meta_len]
    meta = _decode_meta(meta_json)
    meta.update(
        signed=bool(flags & FLAG_SIGNED),
        format_version=data[4],
        contsnap_version=data[7 : 7 + data[6]].decode("ascii"),
        compressed=bool(flags & FLAG_COMPRESSED),
        payload_bytes=payload_len,
        total_bytes=len(data),
    )
    return meta


def _as_bytes(blob: object, where: str) -> bytes:
    if type(blob) is bytes:
        return blob
    try:
        view = memoryview(blob)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{where} takes the snapshot as bytes, bytearray or memoryview, "
            f"not {type(blob).__name__}"
        ) from None
    # Copy: a mutable buffer could change between the checks and the decoding.
    return view.tobytes()


def _check_integrity(data: bytes) -> tuple[int, int]:
    """Check magic, format version, flags and digest; return ``(flags, digest_offset)``."""
    size = len(data)
    if data[:4] != MAGIC[:size]:  # a blob shorter than the magic must still be a prefix of it
        raise SnapshotCorruptError(
            f"not a contsnap snapshot: it starts with {data[:4]!r}, not {MAGIC!r}; "
            "pass the bytes that contsnap's snapshot produced"
        )
    if size < _PREAMBLE.size:
        raise _truncated(size)
    _, version, flags, version_len = _PREAMBLE.unpack_from(data)
    if version != FORMAT_VERSION:
        advice = (
            "it was written by a newer contsnap; upgrade contsnap to restore it"
            if version > FORMAT_VERSION
            else "the bytes are damaged; " + _RESTORE_INTACT
        )
        raise SnapshotCorruptError(
            f"snapshot format version {version} is not supported: contsnap {__version__} "
            f"reads format version {FORMAT_VERSION}; {advice}"
        )
    if flags & ~_KNOWN_FLAGS:
        raise SnapshotCorruptError(
            f"snapshot has unknown flag bits 0x{flags & ~_KNOWN_FLAGS:02x} (flags byte "
            f"0x{flags:02x}): it was written by a newer contsnap or is damaged; upgrade "
            f"contsnap, or {_RESTORE_INTACT}"
        )
    trailer = _DIGEST_SIZE + (_MAC_SIZE if flags & FLAG_SIGNED else 0)
    smallest = _PREAMBLE.size + version_len + _SIZES.size + len(_SMALLEST_META) + trailer
    if size < smallest:
        raise _truncated(size, smallest)
    end = size - trailer
    actual = hashlib.blake2b(memoryview(data)[:end], digest_size=_DIGEST_SIZE).digest()
    if not hmac.compare_digest(actual, data[end : end + _DIGEST_SIZE]):
        raise SnapshotCorruptError(
            "snapshot integrity check failed: its blake2b digest does not match its contents, "
            f"so it was {_how_damaged(data, flags, end)} after it was sealed; " + _RESTORE_INTACT
        )
    return flags, end


def _how_damaged(data: bytes, flags: int, end: int) -> str:
    """Guess, for the error message only, whether damaged bytes were cut, extended or altered."""
    if flags & FLAG_COMPRESSED:
        return "truncated, extended or altered"
    sizes_at = _PREAMBLE.size + data[6]  # _check_integrity made sure the sizes are there
    meta_len, payload_len = _SIZES.unpack_from(data, sizes_at)
    declared = sizes_at + _SIZES.size + meta_len + payload_len + (len(data) - end)
    if declared > len(data):
        return f"truncated ({len(data)} of the {declared} bytes its header declares are present)"
    if declared < len(data):
        return f"extended ({len(data) - declared} bytes follow the {declared} its header declares)"
    return "altered"


def _read_sizes(data: bytes, flags: int, end: int) -> tuple[int, int, int]:
    """Check the version string and length fields; return ``(meta_len, payload_len, body_start)``.

    The digest has already matched, so a failure here means bytes crafted to look valid.
    """
    sizes_at = _PREAMBLE.size + data[6]
    try:
        data[_PREAMBLE.size : sizes_at].decode("ascii")
    except UnicodeDecodeError:
        raise SnapshotCorruptError(
            "snapshot header is malformed: the contsnap version it records is not ASCII; "
            + _RESTORE_INTACT
        ) from None
    body_start = sizes_at + _SIZES.size  # _check_integrity made sure it is before ``end``
    meta_len, payload_len = _SIZES.unpack_from(data, sizes_at)
    if meta_len < len(_SMALLEST_META):
        raise _malformed(f"it declares {meta_len} bytes of metadata, too few for a JSON object")
    declared = meta_len + payload_len
    if flags & FLAG_COMPRESSED:
        if declared > min(MAX_INFLATED_BODY, (end - body_start) * _MAX_DEFLATE_RATIO):
            raise _malformed(
                f"its {end - body_start}-byte compressed body declares {declared} bytes, more "
                f"than deflate can produce or contsnap will inflate ({MAX_INFLATED_BODY})"
            )
    elif body_start + declared != end:
        raise _malformed(
            f"it declares a {declared}-byte body but {end - body_start} bytes are present"
        )
    return meta_len, payload_len, body_start


def _decode_meta(meta_json: bytes) -> dict[str, Any]:
    try:
        text = meta_json.decode("utf-8")
        # raw_decode skips decode()'s two whitespace regexes; seal never writes whitespace.
        meta, end = _JSON_DECODER.raw_decode(text)
        if end != len(text):
            raise ValueError(f"{len(text) - end} characters follow the JSON value")
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise SnapshotCorruptError(
            f"snapshot metadata is not valid JSON ({type(exc).__name__}: {exc}); " + _RESTORE_INTACT
        ) from None
    if not isinstance(meta, dict):
        raise SnapshotCorruptError(
            f"snapshot metadata is a JSON {_JSON_KINDS.get(type(meta), 'value')}, not an object; "
            + _RESTORE_INTACT
        )
    return meta


def _truncated(size: int, smallest: int = _PREAMBLE.size) -> SnapshotCorruptError:
    return SnapshotCorruptError(
        f"snapshot is truncated: it is {size} bytes, but even an empty one with its header "
        f"takes {smallest}; pass the complete bytes that seal produced, or " + _RESTORE_INTACT
    )


def _malformed(what: str) -> SnapshotCorruptError:
    return SnapshotCorruptError(f"snapshot header is malformed: {what}; {_RESTORE_INTACT}")


def _inflate_error(exc: zlib.error) -> SnapshotCorruptError:
    return SnapshotCorruptError(
        f"snapshot body does not decompress (zlib: {exc}); {_RESTORE_INTACT}"
    )


def _inflate_size_error(declared: int) -> SnapshotCorruptError:
    return SnapshotCorruptError(
        "snapshot body does not decompress to the "
        f"{declared} bytes its header declares; {_RESTORE_INTACT}"
    )
