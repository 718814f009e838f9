"""The envelope: frames opaque snapshot bytes with metadata, compression and a signature.

This stage knows nothing about frames or pickle. It turns ``(payload, meta)`` into one
versioned, self-checking blob and back. Every blob says, in its signed part, what it is
(its *kind*: a generator snapshot, a job's checkpoint...) and, for jobs and systems, whose
it is (its *identity*). A blob that is damaged, of an unknown format, not signed by a key
in effect, or of another kind or identity than the caller asked for is refused before any
of it is inflated or parsed beyond the header. The byte layout and the security model are
in ``docs/format.md``; keep the two in step (the tests build blobs from that description).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import sys
import zlib
from collections.abc import Callable, Collection
from typing import Any

from ._errors import SnapshotCorruptError, SnapshotKindError, SnapshotSignatureError
from ._keys import KEY_ENV_VAR, KEY_ID_SIZE, KeyRing, key_id, mac, mac_end, mac_start
from ._version import __version__

__all__ = ["KINDS", "read_meta", "seal", "unseal"]

MAGIC = b"CSNP"
FORMAT_VERSION = 3
#: every format version this contsnap reads
READ_VERSIONS = (1, 2, 3)
FLAG_SIGNED = 0x01
FLAG_COMPRESSED = 0x02
_KNOWN_FLAGS = FLAG_SIGNED | FLAG_COMPRESSED

#: What a blob can be, as its signed ``kind`` says, and how messages name each.
KINDS = {
    "snapshot": "a generator snapshot (contsnap.dumps)",
    "job": "a durable job's checkpoint (contsnap.run)",
    "actor-system": "an actor system's checkpoint (actors.System.checkpoint)",
    "notebook": "a notebook session (%contsnap save)",
    "web-page": "a web conversation's page (contsnap.web)",
    "task": "a distributed job's checkpoint (contsnap.integrations)",
}

# magic, format version, flags, length of the contsnap version string that follows.
_PREAMBLE = struct.Struct("<4sBBB")
# Metadata JSON length (u32) and payload length (u64), both before compression.
_SIZES = struct.Struct("<IQ")
_DIGEST_SIZE = 16  # blake2b-128 of an unsigned blob: detects accidental damage only
_MAC_SIZE = 32  # HMAC-SHA256 of a signed blob: replaces the digest (format 2)
_SMALLEST_META = b"{}"

# A compressed body may not inflate past this, whatever its header declares: a small
# blob must not be able to make the reader allocate gigabytes (a "zip bomb").
MAX_INFLATED_BODY = 1 << 30
#: read_meta (no key, nothing verified) parses at most this much metadata JSON: enough
#: for any snapshot contsnap writes, and a bound on what a hostile file costs to describe.
MAX_UNVERIFIED_META = 1 << 20
# Deflate turns one input byte into at most 1032 output bytes (a 258-byte match costs at
# least 2 bits), so a header declaring more than this ratio is lying.
_MAX_DEFLATE_RATIO = 1032
# Below this many body bytes deflate rarely pays for itself, so it is not even tried.
_MIN_COMPRESSIBLE_BODY = 64
_COMPRESS_LEVEL = 6

#: the signed facts seal() adds to the metadata
_BOUND_KEYS = ("kind", "identity", "python")
_RESERVED_META_KEYS = frozenset(
    {
        *_BOUND_KEYS,
        "signed",
        "key_id",
        "format_version",
        "contsnap_version",
        "compressed",
        "payload_bytes",
        "total_bytes",
    }
)

_VERSION_BYTES = __version__.encode("ascii")
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
# The fixed start of every blob this contsnap writes, one per combination of flags.
_HEADERS = {
    flags: _PREAMBLE.pack(MAGIC, FORMAT_VERSION, flags, len(_VERSION_BYTES)) + _VERSION_BYTES
    for flags in range(_KNOWN_FLAGS + 1)
}

_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_C_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)


def _encode_json(value: Any) -> str:
    """``_JSON_ENCODER.encode(value)``, without its per-call Python set-up when the C
    encoder is there (a fresh circular-reference table each time, as it keeps)."""
    if _C_ENCODER is None:
        return _JSON_ENCODER.encode(value)
    encode = _C_ENCODER(
        {},
        _JSON_ENCODER.default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        False,
    )
    return "".join(encode(value, 0))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_JSON_DECODER = json.JSONDecoder(parse_constant=_no_constant)

_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
_JSON_KINDS[type(None)] = "null"

_RESTORE_INTACT = "restore from an intact copy of the snapshot"


def seal(
    payload: bytes,
    meta: dict[str, Any],
    *,
    key: bytes | None,
    kind: str,
    identity: str | None = None,
    compress: bool = False,
) -> bytes:
    """Wrap ``payload`` and the JSON-able ``meta`` in a checked blob, signed when ``key`` is set.

    ``kind`` (one of `KINDS`) and ``identity`` are written into the metadata, with
    the Python version, so that the signature covers what the bytes are for. With
    ``compress``, the body is deflated when a probe says it pays and the result is
    smaller (see `_worth_deflating`). ``meta`` may not use the names `read_meta` adds
    (``signed``, ``payload_bytes``, ...).
    """
    if not _RESERVED_META_KEYS.isdisjoint(meta):
        clash = sorted(_RESERVED_META_KEYS.intersection(meta))
        raise ValueError(
            f"snapshot metadata may not use the key(s) {clash}: the envelope reports its own "
            "facts under those names; rename them"
        )
    if kind not in KINDS:
        raise ValueError(f"unknown snapshot kind {kind!r}; one of {sorted(KINDS)}")
    if key is not None and not key:
        raise ValueError("seal() got an empty signing key; pass key=None for no signature")
    meta_json = _encode_json(_pack_meta(kind, identity, meta)).encode("utf-8")
    return _seal(payload, meta_json, key, compress)


def seal_frames(
    payload: bytes,
    *,
    key: bytes | None,
    kind: str,
    identity: str | None,
    created_at: float,
    functions_json: list[str],
    frames: list[tuple[int, int, int]],
    meta: dict[str, Any] | None,
    compress: bool,
) -> bytes:
    """`seal` for the codec's snapshots, with their metadata written straight out: the
    functions table as JSON already (one string per function, made once per function) and
    each frame as ``(function, line, state)``. Same bytes as seal() with that metadata."""
    rest = "{}"
    if meta:
        if not _RESERVED_META_KEYS.isdisjoint(meta) or not set(_PACKED).isdisjoint(meta):
            full = {"created_at": created_at, "portable": True, **meta}
            full["functions"] = [json.loads(entry) for entry in functions_json]
            full["frames"] = [list(frame) for frame in frames]
            return seal(payload, full, key=key, kind=kind, identity=identity, compress=compress)
        rest = _encode_json(meta)
    if kind not in KINDS:
        raise ValueError(f"unknown snapshot kind {kind!r}; one of {sorted(KINDS)}")
    if key is not None and not key:
        raise ValueError("seal() got an empty signing key; pass key=None for no signature")
    named = "null" if identity is None else _encode_json(identity)
    chain = ",".join([f"[{at},{line},{state}]" for at, line, state in frames])
    meta_json = (
        f'["{kind}","{PYTHON}",{named},{float.__repr__(created_at)},true,'
        f"[{','.join(functions_json)}],[{chain}],{rest}]"
    ).encode()
    return _seal(payload, meta_json, key, compress)


def _seal(payload: bytes, meta_json: bytes, key: bytes | None, compress: bool) -> bytes:
    meta_len = len(meta_json)
    payload_len = len(payload)
    body_len = meta_len + payload_len
    if meta_len > 0xFFFFFFFF:
        raise ValueError(f"snapshot metadata is {meta_len} bytes of JSON; the limit is 4 GiB")

    flags = 0 if key is None else FLAG_SIGNED
    body: tuple[bytes, ...] = (meta_json, payload)
    if compress and _worth_deflating(payload, body_len):
        deflater = _deflater(body_len)
        deflated = deflater.compress(meta_json) + deflater.compress(payload) + deflater.flush()
        if len(deflated) < body_len:
            flags |= FLAG_COMPRESSED
            body = (deflated,)

    header = _HEADERS[flags] + (b"" if key is None else key_id(key))
    header += _SIZES.pack(meta_len, payload_len)
    if key is not None and len(body) == 2 and payload_len < _JOIN_BEFORE_HASHING:
        # small: one join, hashed in one call
        unsigned = b"".join((header, meta_json, payload))
        return unsigned + mac(key, unsigned)
    # Hash the pieces in place rather than joining them first: one copy of a large
    # payload (the final join) instead of two. One pass: the MAC replaces the digest.
    if key is None:
        check: Any = hashlib.blake2b(header, digest_size=_DIGEST_SIZE)
    else:
        check = mac_start(key)
        check.update(header)
    for piece in body:
        check.update(piece)
    return b"".join((header, *body, check.digest() if key is None else mac_end(key, check)))


#: below this payload size, seal joins first and hashes the joined bytes in one call
_JOIN_BEFORE_HASHING = 1 << 16
#: bodies from this size are probed before they are deflated whole
_PROBE_FROM = 1 << 16
_PROBE_SIZE = 1 << 14


def _worth_deflating(payload: bytes, body_len: int) -> bool:
    """Does deflating pay here (when asked to compress)? Not below 64 bytes, and for a
    body of 64 KiB or more only when a 16 KiB sample from its middle deflates by a tenth:
    random or already compressed bytes are not deflated whole only to be thrown away."""
    if not _MIN_COMPRESSIBLE_BODY <= body_len <= MAX_INFLATED_BODY:
        return False
    if body_len < _PROBE_FROM:
        return True
    middle = max(0, len(payload) // 2 - _PROBE_SIZE // 2)
    sample = payload[middle : middle + _PROBE_SIZE]
    return len(zlib.compress(sample, 1)) < len(sample) * 0.9


# Format 3 writes the facts every blob has (and the codec's frame description) as a JSON
# array in a fixed order instead of an object with long names: a small snapshot's
# metadata is a third of its size. The readers expand it to the same dict as before.
_PACKED = ("kind", "python", "identity", "created_at", "portable", "functions", "frames")
_ABSENT = None


def _pack_meta(kind: str, identity: str | None, meta: dict[str, Any]) -> list[Any]:
    rest = {name: value for name, value in meta.items() if name not in _PACKED}
    frames = meta.get("frames")
    if isinstance(frames, list) and "functions" not in meta:
        functions: list[list[Any]] = []
        frames = pack_frames(frames, functions)
        meta = {**meta, "functions": functions}
    return [
        kind,
        PYTHON,
        identity,
        meta.get("created_at"),
        meta.get("portable"),
        meta.get("functions"),
        frames,
        rest,
    ]


#: how format 3 writes a frame's state
_STATES = ("created", "suspended", "closed")
_FRAME_FIELDS = ("module", "qualname", "fingerprint", "line", "state")


def pack_frames(frames: list[Any], functions: list[list[Any]]) -> list[Any]:
    """Frames described as dicts, as format 3 stores them: ``[function, line, state]``
    (plus a dict of any other fields), the function an index into ``functions``
    (``[module, qualname, fingerprint]``, then its file when known), to which new ones
    are appended."""
    index = {tuple(entry[:3]): at for at, entry in enumerate(functions)}
    packed: list[Any] = []
    for frame in frames:
        if not isinstance(frame, dict):
            packed.append(frame)
            continue
        name = [frame.get("module"), frame.get("qualname"), frame.get("fingerprint")]
        at = index.setdefault(tuple(name), len(functions))
        if at == len(functions):
            functions.append([*name, frame.get("file")])
        state = frame.get("state")
        entry = [at, frame.get("line"), _STATES.index(state) if state in _STATES else state]
        known = functions[at]
        extra = {
            k: v
            for k, v in frame.items()
            if k not in _FRAME_FIELDS and not (k == "file" and len(known) > 3 and v == known[3])
        }
        if extra:
            entry.append(extra)
        packed.append(entry)
    return packed


def _unpack_meta(packed: list[Any]) -> dict[str, Any]:
    """The dict a format-3 metadata array (`_parse_meta`) stands for (frames expanded as
    format 2 had them)."""
    kind, python, identity, created_at, portable, functions, frames, rest = packed
    meta: dict[str, Any] = {**rest, "kind": kind, "python": python, "identity": identity}
    if created_at is not _ABSENT:
        meta["created_at"] = created_at
    if portable is not _ABSENT:
        meta["portable"] = portable
    if functions is not _ABSENT:
        meta["functions"] = functions
    if frames is not _ABSENT:
        meta["frames"] = frames
        if type(frames) is list and type(functions) is list:
            meta["frames"] = _unpack_frames(frames, functions)
    return meta


def _unpack_frames(frames: list[Any], functions: list[Any]) -> list[Any]:
    if len(frames) <= 2:
        return [_unpack_frame(frame, functions) for frame in frames]
    # a deep chain repeats one function at one line: each repeat is a copy of the first
    made: dict[tuple[Any, ...], dict[str, Any]] = {}
    expanded: list[Any] = []
    for frame in frames:
        if type(frame) is list and len(frame) == 3:
            key: tuple[Any, ...] = (
                type(frame[0]),
                frame[0],
                type(frame[1]),
                frame[1],
                type(frame[2]),
                frame[2],
            )
            try:
                known = made.get(key)
            except TypeError:  # an unhashable member: malformed, described as it is
                known = None
                key = ()
            if known is not None:
                expanded.append(known.copy())
                continue
            one = _unpack_frame(frame, functions)
            if key and type(one) is dict:
                made[key] = one.copy()
            expanded.append(one)
        else:
            expanded.append(_unpack_frame(frame, functions))
    return expanded


def _unpack_frame(frame: Any, functions: list[Any]) -> Any:
    if not (type(frame) is list and 3 <= len(frame) <= 4 and type(frame[0]) is int):
        return frame  # malformed: the codec refuses it, inspect shows it as invalid
    at = frame[0]
    name = functions[at] if 0 <= at < len(functions) else None
    if not (type(name) is list and 3 <= len(name) <= 4):
        return frame
    state = frame[2]
    if type(state) is int and 0 <= state < 3:
        state = _STATES[state]
    expanded = {
        "module": name[0],
        "qualname": name[1],
        "fingerprint": name[2],
        "line": frame[1],
        "state": state,
    }
    if len(name) == 4 and name[3] is not None:
        expanded["file"] = name[3]
    if len(frame) == 4 and type(frame[3]) is dict:
        expanded.update(frame[3])
    return expanded


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


def kind_name(kind: str) -> str:
    return KINDS.get(kind, f"of unknown kind {kind!r}")


def unseal(
    blob: bytes,
    *,
    ring: KeyRing,
    kinds: Collection[str],
    identity: str | None = None,
    allow_unsigned: bool = False,
    view: bool = False,
    packed: bool = False,
) -> tuple[Any, Any]:
    """Check ``blob`` and return its ``(meta, payload)``; ``meta`` includes ``kind`` etc.

    With ``view``, an uncompressed payload of 64 KiB or more comes back as a read-only
    memoryview into the (immutable) blob instead of a copy: for a caller that only
    unpickles it, one large allocation fewer. With ``packed``, the metadata of a format-3
    blob comes back as a `Packed` (its dict made only when asked for).

    A signed blob must verify with a key of ``ring`` (found by the key id in its header); an
    unsigned one is refused unless ``allow_unsigned``. Its signed kind must be one of ``kinds`` and,
    when ``identity`` is given, its identity that one. Raises
    [`SnapshotCorruptError`][contsnap.SnapshotCorruptError],
    [`SnapshotSignatureError`][contsnap.SnapshotSignatureError] or
    [`SnapshotKindError`][contsnap.SnapshotKindError], nothing else.
    """
    data = _as_bytes(blob, "unseal()")
    head = _check_head(data)
    if head.signed:
        _verify_signature(data, head, ring)
    elif not allow_unsigned:
        raise SnapshotSignatureError(
            "unsigned snapshot refused: contsnap only restores bytes signed by a key in effect "
            f"(here: {ring.source}, key id {ring.ids()}), because unpickling bytes from "
            "anywhere else can run any code. If you wrote this snapshot yourself with "
            "signing turned off and trust where it has been, pass allow_unsigned=True (or "
            "call contsnap.configure(allow_unsigned=True))"
        )
    meta_len, payload_len, body_start = _read_sizes(data, head)
    payload: Any
    if head.compressed:
        inflater = zlib.decompressobj(-15)
        try:
            meta_json = inflater.decompress(memoryview(data)[body_start : head.end], meta_len)
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
        if view and head.end - payload_start >= _VIEW_FROM:
            payload = memoryview(data)[payload_start : head.end]
        else:
            payload = data[payload_start : head.end]
    if packed and head.version >= 3:
        found = Packed(_parse_meta(meta_json))
        _check_binding(found, kinds, identity)
        return found, payload
    meta = _decode_meta(meta_json, head.version)
    if head.version == 1:
        _infer_legacy_binding(meta)
    meta.setdefault("identity", None)
    _check_binding(meta, kinds, identity)
    return meta, payload


_VIEW_FROM = 1 << 16


def _verify_signature(data: bytes, head: _Head, ring: KeyRing) -> None:
    if head.version == 1:
        # format 1: no key id, HMAC over everything before it (its digest included)
        for key in ring.keys:
            expected = hmac.digest(key, memoryview(data)[: head.end + _DIGEST_SIZE], "sha256")
            if hmac.compare_digest(expected, data[head.end + _DIGEST_SIZE :]):
                return
        raise SnapshotSignatureError(
            "the signature of this format-1 snapshot matches none of the keys in effect "
            f"({ring.source}, key id {ring.ids()}): it was signed with another key or altered "
            "after signing; load it with the key it was signed with"
        )
    wanted = data[head.ids_at : head.ids_at + KEY_ID_SIZE]
    found = ring.find(wanted)
    if found is None:
        raise SnapshotSignatureError(
            f"snapshot signed with key id {wanted.hex()}, which is not among the keys in "
            f"effect ({ring.source}: key id {ring.ids()}). If it was made on another "
            f"machine or by another user, set the same key here ({KEY_ENV_VAR}, or copy the "
            "key file); if you rotated keys, list the old one (contsnap.configure(old_keys="
            "...) or CONTSNAP_OLD_KEYS). Do not restore it if you do not trust where it came "
            "from"
        )
    expected = mac(found, memoryview(data)[: head.end])
    if not hmac.compare_digest(expected, data[head.end :]):
        raise SnapshotSignatureError(
            f"snapshot signature (key id {wanted.hex()}) does not match its contents: it was "
            f"{_how_damaged(data, head)} after it was signed; {_RESTORE_INTACT}"
        )


def _infer_legacy_binding(meta: dict[str, Any]) -> None:
    """Format 1 did not sign a kind: infer it from what its (verified) metadata holds."""
    job, system = meta.get("job"), meta.get("actors")
    if isinstance(job, dict):
        meta.update(kind="job", identity=job.get("name"))
    elif isinstance(system, dict):
        meta.update(kind="actor-system", identity=system.get("system"))
    else:
        meta.update(kind="snapshot", identity=None)
    meta.setdefault("python", None)


def _check_binding(meta: Any, kinds: Collection[str], identity: str | None) -> None:
    kind = meta.get("kind")
    if kind not in kinds:
        wanted = " or ".join(kind_name(k) for k in kinds)
        raise SnapshotKindError(
            f"these bytes are {kind_name(str(kind))}, not {wanted}; nothing was unpickled. "
            "Load each kind with its own function"
        )
    if identity is not None and meta.get("identity") != identity:
        raise SnapshotKindError(
            f"these bytes are {kind_name(str(kind))} of {meta.get('identity')!r}, not of "
            f"{identity!r}; nothing was unpickled. Use that one's own checkpoint (or remove "
            "this one to start afresh)"
        )


def read_meta(blob: bytes) -> dict[str, Any]:
    """The metadata of ``blob`` plus the envelope's facts; needs no key and checks no signature.

    Added keys: ``signed``, ``key_id`` (hex, or None), ``format_version``,
    ``contsnap_version``, ``compressed``, ``payload_bytes`` (before compression) and
    ``total_bytes``. Since the signature is not checked, nothing here is authenticated:
    use it to describe a snapshot, never to trust it or act on it. At most
    `MAX_UNVERIFIED_META` bytes of metadata are parsed.
    """
    data = _as_bytes(blob, "read_meta()")
    head = _check_head(data)
    if not head.signed:
        _check_digest(data, head)
    meta_len, payload_len, body_start = _read_sizes(data, head)
    if meta_len > MAX_UNVERIFIED_META:
        raise SnapshotCorruptError(
            f"snapshot metadata is {meta_len} bytes, more than the {MAX_UNVERIFIED_META} "
            "contsnap parses without verifying a signature; not described"
        )
    if head.compressed:
        inflater = zlib.decompressobj(-15)
        try:
            meta_json = inflater.decompress(memoryview(data)[body_start : head.end], meta_len)
        except zlib.error as exc:
            raise _inflate_error(exc) from None
        if len(meta_json) != meta_len:
            raise _inflate_size_error(meta_len + payload_len)
    else:
        meta_json = data[body_start : body_start + meta_len]
    meta = _decode_meta(meta_json, head.version)
    if head.version == 1:
        _infer_legacy_binding(meta)
    meta.setdefault("identity", None)
    meta.update(
        signed=head.signed,
        key_id=data[head.ids_at : head.ids_at + KEY_ID_SIZE].hex()
        if head.signed and head.version > 1
        else None,
        format_version=head.version,
        contsnap_version=data[7 : 7 + data[6]].decode("ascii", "replace"),
        compressed=head.compressed,
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


class _Head:
    """What the fixed fields of a blob say, and where its parts are."""

    __slots__ = (
        "compressed",
        "end",
        "flags",
        "ids_at",
        "signed",
        "sizes_at",
        "smallest",
        "version",
    )

    def __init__(self, version: int, flags: int, version_len: int, size: int) -> None:
        self.version = version
        self.flags = flags
        self.signed = bool(flags & FLAG_SIGNED)
        self.compressed = bool(flags & FLAG_COMPRESSED)
        self.ids_at = _PREAMBLE.size + version_len
        keyed = self.signed and version > 1
        self.sizes_at = self.ids_at + (KEY_ID_SIZE if keyed else 0)
        if version == 1:
            trailer = _DIGEST_SIZE + (_MAC_SIZE if self.signed else 0)
        else:
            trailer = _MAC_SIZE if self.signed else _DIGEST_SIZE
        #: offset of the trailer (format 1: of the digest, the HMAC following it)
        self.end = size - trailer
        self.smallest = self.sizes_at + _SIZES.size + len(_SMALLEST_META) + trailer


def _check_head(data: bytes) -> _Head:
    """Check magic, format version, flags and length; nothing past them is interpreted."""
    size = len(data)
    if data[:4] != MAGIC[:size]:  # a blob shorter than the magic must still be a prefix of it
        raise SnapshotCorruptError(
            f"not a contsnap snapshot: it starts with {data[:4]!r}, not {MAGIC!r}; "
            "pass the bytes that contsnap's snapshot produced"
        )
    if size < _PREAMBLE.size:
        raise _truncated(size)
    _, version, flags, version_len = _PREAMBLE.unpack_from(data)
    if version not in READ_VERSIONS:
        advice = (
            "it was written by a newer contsnap (upgrade contsnap to restore it) or the "
            "bytes are damaged"
            if version > FORMAT_VERSION
            else "the bytes are damaged; " + _RESTORE_INTACT
        )
        raise SnapshotCorruptError(
            f"snapshot format version {version} is not supported: contsnap {__version__} "
            f"reads format versions 1 to {FORMAT_VERSION}; {advice}"
        )
    if flags & ~_KNOWN_FLAGS:
        raise SnapshotCorruptError(
            f"snapshot has unknown flag bits 0x{flags & ~_KNOWN_FLAGS:02x} (flags byte "
            f"0x{flags:02x}): it was written by a newer contsnap or is damaged; upgrade "
            f"contsnap, or {_RESTORE_INTACT}"
        )
    head = _Head(version, flags, version_len, size)
    if size < head.smallest:
        raise _truncated(size, head.smallest)
    if head.version == 1 or not head.signed:
        _check_digest(data, head)
    return head


def _check_digest(data: bytes, head: _Head) -> None:
    actual = hashlib.blake2b(memoryview(data)[: head.end], digest_size=_DIGEST_SIZE).digest()
    if not hmac.compare_digest(actual, data[head.end : head.end + _DIGEST_SIZE]):
        raise SnapshotCorruptError(
            "snapshot integrity check failed: its blake2b digest does not match its contents, "
            f"so it was {_how_damaged(data, head)} after it was sealed; " + _RESTORE_INTACT
        )


def _how_damaged(data: bytes, head: _Head) -> str:
    """Guess, for the error message only, whether damaged bytes were cut, extended or altered."""
    if head.compressed:
        return "truncated, extended or altered"
    meta_len, payload_len = _SIZES.unpack_from(data, head.sizes_at)
    declared = head.sizes_at + _SIZES.size + meta_len + payload_len + (len(data) - head.end)
    if declared > len(data):
        return f"truncated ({len(data)} of the {declared} bytes its header declares are present)"
    if declared < len(data):
        return f"extended ({len(data) - declared} bytes follow the {declared} its header declares)"
    return "altered"


def _read_sizes(data: bytes, head: _Head) -> tuple[int, int, int]:
    """Check the version string and length fields; return ``(meta_len, payload_len, body_start)``.

    The digest or signature has already matched, so a failure here means bytes crafted
    to look valid (read_meta of a signed blob: bytes nobody vouched for).
    """
    try:
        data[_PREAMBLE.size : head.ids_at].decode("ascii")
    except UnicodeDecodeError:
        raise SnapshotCorruptError(
            "snapshot header is malformed: the contsnap version it records is not ASCII; "
            + _RESTORE_INTACT
        ) from None
    body_start = head.sizes_at + _SIZES.size  # _check_head made sure it is before ``end``
    meta_len, payload_len = _SIZES.unpack_from(data, head.sizes_at)
    end = head.end
    if meta_len < len(_SMALLEST_META):
        raise _malformed(f"it declares {meta_len} bytes of metadata, too few for a JSON object")
    declared = meta_len + payload_len
    if head.compressed:
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


def _decode_meta(meta_json: bytes, version: int) -> dict[str, Any]:
    if version >= 3:
        return _unpack_meta(_parse_meta(meta_json))
    meta = _parse_json(meta_json)
    if not isinstance(meta, dict):
        raise SnapshotCorruptError(
            f"snapshot metadata is a JSON {_JSON_KINDS.get(type(meta), 'value')}, not an object; "
            + _RESTORE_INTACT
        )
    return meta


def _parse_json(meta_json: bytes) -> Any:
    try:
        text = meta_json.decode("utf-8")
        # the scanner alone: decode()'s whitespace regexes and raw_decode's wrapper are
        # not needed, seal never writes whitespace
        try:
            meta, end = _SCAN(text, 0)
        except StopIteration as stop:  # what raw_decode says then
            raise json.JSONDecodeError("Expecting value", text, stop.value) from None
        if end != len(text):
            raise ValueError(f"{len(text) - end} characters follow the JSON value")
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise SnapshotCorruptError(
            f"snapshot metadata is not valid JSON ({type(exc).__name__}: {exc}); " + _RESTORE_INTACT
        ) from None
    return meta


_SCAN: Callable[[str, int], tuple[Any, int]] = _JSON_DECODER.scan_once  # type: ignore[attr-defined]


def _parse_meta(meta_json: bytes) -> list[Any]:
    """A format-3 metadata array, its shape checked (see `_unpack_meta`)."""
    packed = _parse_json(meta_json)
    if not (type(packed) is list and len(packed) == len(_PACKED) + 1):
        raise SnapshotCorruptError(
            "snapshot metadata is malformed: a format-3 blob's metadata is an array of "
            f"{len(_PACKED) + 1} members; " + _RESTORE_INTACT
        )
    if type(packed[-1]) is not dict:
        raise SnapshotCorruptError(
            "snapshot metadata is malformed: its last member is not an object; " + _RESTORE_INTACT
        )
    return packed


class Packed:
    """The metadata of a format-3 blob as it was written (`_PACKED`, then the other keys):
    what a load needs is read from the array; the dict (`expand`) is made when asked for."""

    __slots__ = ("_expanded", "packed")

    def __init__(self, packed: list[Any]) -> None:
        self.packed = packed
        self._expanded: dict[str, Any] | None = None

    def get(self, name: str, default: Any = None) -> Any:
        at = _PACKED_AT.get(name)
        if at is not None and name != "frames":
            found = self.packed[at]
            if found is not _ABSENT or name == "identity":
                return found
        return self.expand().get(name, default)

    def frames(self) -> list[Any]:
        """The frames as format 2 described them (dicts)."""
        found = self.expand().get("frames", [])
        return found if type(found) is list else []

    def expand(self) -> dict[str, Any]:
        if self._expanded is None:
            meta = _unpack_meta(self.packed)
            meta.setdefault("identity", None)
            self._expanded = meta
        return self._expanded


_PACKED_AT = {name: at for at, name in enumerate(_PACKED)}


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
