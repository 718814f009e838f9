"""The one object <-> bytes path every entry point uses.

``encode``: capture the frames, pickle, describe them in the metadata, seal (sign)
under a kind and identity. ``decode``: unseal (verify signature, kind and identity
before anything else), check that the saved code is unchanged, unpickle. Nothing
here unpickles bytes whose signature did not verify, unless the caller opted in to
unsigned bytes.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from . import _envelope, _keys
from ._errors import SnapshotCorruptError, SnapshotVersionError
from ._info import code_changed, live_info
from ._migrate import find as find_migration
from ._migrate import old_lines
from ._registry import STATE
from ._resources import Output, collect_outputs
from ._snapshot import FrameState, from_payload, function_json, to_indexed_payload

__all__ = ["Decoded", "decode", "encode", "encode_payload", "frames_of", "verify"]


@dataclass
class _Policy:
    allow_unsigned: bool = False
    #: deflate what is worth it (see _envelope._worth_deflating); off: the time it takes
    #: (several times the pickling) is worth more than the bytes it saves to most callers
    compress: bool = False


policy = _Policy()
STATE.add(__name__, "policy", "attributes")


def frames_of(obj: Any, captured: dict[int, FrameState]) -> list[dict[str, Any]]:
    """The delegation chain from ``obj`` down, as the metadata describes it.

    When ``obj`` only holds generators (a list, a web page), the chain starts at the
    first one captured that no other captured generator delegates to.
    """
    frames: list[dict[str, Any]] = []
    for state in _chain_states(obj, captured):
        info = state.info
        frames.append(
            {
                "qualname": info.qualname,
                "module": info.module,
                "file": info.filename,
                "line": info.line_of(state.label),
                "state": state.status,
                "fingerprint": info.fingerprint,
                "locals": {
                    name: type(value).__qualname__
                    for name, value in state.values.items()
                    if not name.startswith("_cs_")
                },
            }
        )
    return frames


def _chain_states(obj: Any, captured: dict[int, FrameState]) -> Iterator[FrameState]:
    """The captured frames of the delegation chain from ``obj`` down (at most 64): from the
    first one captured that no other delegates to when ``obj`` is not itself a generator."""
    if len(captured) == 1:  # the usual case: one frame, its own chain
        yield from captured.values()
        return
    current_id = id(obj)
    if current_id not in captured:
        delegated = {id(state.delegate) for state in captured.values()}
        current_id = next((key for key in captured if key not in delegated), current_id)
    for _ in range(64):
        state = captured.get(current_id)
        if state is None:
            return
        yield state
        current_id = id(state.delegate)


def chain_of(
    obj: Any, captured: dict[int, FrameState], index: dict[int, int], functions: list[str]
) -> list[tuple[int, int, int]]:
    """`frames_of` as format 3 writes it: ``(function, line, state)`` each, the function an
    index into ``functions`` (each ``[module, qualname, fingerprint, file]`` as JSON, found
    by id of its info in ``index``; extended here)."""
    frames: list[tuple[int, int, int]] = []
    for state in _chain_states(obj, captured):
        info = state.info
        at = index.get(id(info))
        if at is None:
            at = index[id(info)] = len(functions)
            functions.append(function_json(info))
        frames.append((at, state.line, _STATE_CODES[state.status]))
    return frames


_STATE_CODES = {"created": 0, "suspended": 1, "closed": 2}


def encode(
    obj: Any,
    *,
    kind: str,
    identity: str | None = None,
    meta: dict[str, Any] | None = None,
    key: _keys.KeyLike | None = None,
    sign: bool = True,
    compress: bool | None = None,
) -> bytes:
    """Snapshot ``obj`` (and every generator it holds) to signed bytes of ``kind``."""
    payload, captured, functions = to_indexed_payload(obj)
    if functions is None:  # the full pickler: every function named in the payload
        return encode_payload(
            payload,
            frames_of(obj, captured),
            kind=kind,
            identity=identity,
            meta=meta,
            key=key,
            sign=sign,
            compress=compress,
        )
    ring = _keys.resolve(key, sign=sign)
    index, table = functions
    frames = chain_of(obj, captured, index, table)
    # "portable" is written as true: the fast pickler carries no code by value
    return _envelope.seal_frames(
        payload,
        key=ring.signing_key,
        kind=kind,
        identity=identity,
        created_at=round(time.time(), 3),
        functions_json=table,
        frames=frames,
        meta=meta,
        compress=policy.compress if compress is None else compress,
    )


def encode_payload(
    payload: bytes,
    frames: list[dict[str, Any]],
    *,
    kind: str,
    identity: str | None = None,
    meta: dict[str, Any] | None = None,
    key: _keys.KeyLike | None = None,
    sign: bool = True,
    compress: bool | None = None,
) -> bytes:
    """Seal an already pickled payload with its frames' description.

    ``portable`` records whether the payload carries code by value (functions and
    classes defined in a script, a notebook or a function): bytecode is specific to
    one Python version, so only a portable snapshot loads on another one.
    """
    ring = _keys.resolve(key, sign=sign)
    full = {
        "created_at": round(time.time(), 3),
        "frames": frames,
        # cloudpickle rebuilds a code object through _builtin_type("CodeType"): a payload
        # without that name carries no bytecode (a stray user string only makes it stricter)
        "portable": _CODE_MARK not in payload,
        **(meta or {}),
    }
    return _envelope.seal(
        payload,
        full,
        key=ring.signing_key,
        kind=kind,
        identity=identity,
        compress=policy.compress if compress is None else compress,
    )


_CODE_MARK = b"CodeType"


def verify(
    data: bytes,
    *,
    kinds: Collection[str],
    identity: str | None = None,
    key: _keys.KeyLike | None = None,
    allow_unsigned: bool | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Check signature, kind and identity of ``data``: its ``(meta, payload)``; no unpickling."""
    meta, payload = _unsealed(data, kinds, identity, key, allow_unsigned, view=False, packed=False)
    return meta, payload


def _unsealed(
    data: bytes,
    kinds: Collection[str],
    identity: str | None,
    key: _keys.KeyLike | None,
    allow_unsigned: bool | None,
    *,
    view: bool,
    packed: bool,
) -> tuple[Any, Any]:
    """`verify` (``view``: a large payload as a memoryview into ``data``), with a format-3
    blob's metadata left `_envelope.Packed` if ``packed``."""
    ring = _keys.resolve(key)
    if allow_unsigned is None:
        allow_unsigned = policy.allow_unsigned
    meta, payload = _envelope.unseal(
        data,
        ring=ring,
        kinds=kinds,
        identity=identity,
        allow_unsigned=allow_unsigned,
        view=view,
        packed=packed,
    )
    _check_python(meta)
    if type(meta) is _envelope.Packed:
        well_formed = _packed_frames_ok(meta.packed)
    else:
        found = meta.get("frames", [])
        well_formed = isinstance(found, list) and all(isinstance(f, dict) for f in found)
    if not well_formed:
        raise SnapshotCorruptError(
            "snapshot metadata is malformed: 'frames' is not a list of objects; "
            "restore from an intact copy of the snapshot"
        )
    return meta, payload


def _packed_frames_ok(packed: list[Any]) -> bool:
    """Does every frame of a format-3 metadata array expand to an object (see
    `_envelope._unpack_frame`)?"""
    functions, frames = packed[5], packed[6]
    if frames is None:
        return True
    if type(frames) is not list:
        return False
    if not frames:
        return True
    if type(functions) is not list:
        return False
    count = len(functions)
    for frame in frames:
        if not (type(frame) is list and 3 <= len(frame) <= 4 and type(frame[0]) is int):
            return False
        at = frame[0]
        if not 0 <= at < count:
            return False
        entry = functions[at]
        if not (type(entry) is list and 3 <= len(entry) <= 4):
            return False
    return True


def _check_python(meta: Any) -> None:
    """Bytecode carried by value only runs on the Python version that made it."""
    saved = meta.get("python")
    if saved is None or saved == _envelope.PYTHON or meta.get("portable") is True:
        return
    raise SnapshotVersionError(
        f"this snapshot was taken on Python {saved} and carries code by value (functions "
        "or classes defined in a script, a notebook cell or another function), whose "
        f"bytecode Python {_envelope.PYTHON} cannot run: load it with Python {saved}, or "
        "define those functions in an importable module so that snapshots name them"
    )


class Decoded:
    """What `decode` gives back: the restored object, its (verified) metadata and the
    files the restored state writes to, with their checkpoint sizes (see truncate())."""

    __slots__ = ("_meta", "obj", "outputs")

    def __init__(self, obj: Any, meta: dict[str, Any] | _envelope.Packed, outputs: list[Output]):
        self.obj = obj
        self._meta = meta
        self.outputs = outputs

    @property
    def meta(self) -> dict[str, Any]:
        meta = self._meta
        if type(meta) is _envelope.Packed:  # a load that did not need it as a dict
            meta = self._meta = meta.expand()
        return meta  # type: ignore[return-value]


def decode(
    data: bytes,
    *,
    kinds: Collection[str],
    identity: str | None = None,
    key: _keys.KeyLike | None = None,
    allow_unsigned: bool | None = None,
) -> Decoded:
    """Verify ``data``, check that its code did not change, and rebuild what it holds."""
    # a large payload stays a view into ``data``: it is only unpickled, never kept
    meta, payload = _unsealed(data, kinds, identity, key, allow_unsigned, view=True, packed=True)
    if type(meta) is not _envelope.Packed:
        return restore(meta, payload)
    packed = meta.packed
    functions, frames = packed[5], packed[6]
    if frames:
        _check_names(_names_in(functions, frames))
    with old_lines(meta.frames), collect_outputs() as outputs:
        obj = from_payload(payload, functions=functions if type(functions) is list else [])
    return Decoded(obj, meta, outputs)


def _names_in(functions: list[Any], frames: list[Any]) -> Iterator[tuple[Any, Any, Any]]:
    """(module, qualname, fingerprint) of each function of a format-3 chain, once each."""
    if len(frames) == 1:
        entry = functions[frames[0][0]]
        yield entry[0], entry[1], entry[2]
        return
    seen: set[int] = set()
    for frame in frames:
        at = frame[0]
        if at not in seen:
            seen.add(at)
            entry = functions[at]
            yield entry[0], entry[1], entry[2]


def restore(meta: dict[str, Any], payload: bytes | memoryview) -> Decoded:
    """Rebuild what a payload holds, once `verify` has vouched for it and its ``meta``."""
    frames = meta["frames"]
    check_code(frames)
    functions = meta.get("functions")
    # formats 1 and 2 have no functions table, and may name modules since moved
    old_paths = not isinstance(functions, list)
    with old_lines(frames), collect_outputs() as outputs:
        obj = from_payload(payload, functions=[] if old_paths else functions, old_paths=old_paths)
    return Decoded(obj, meta, outputs)


def check_code(frames: list[Any]) -> None:
    """Name every function of the saved chain whose code changed (and has no migration)."""
    _check_names(
        (frame.get("module"), frame.get("qualname"), frame.get("fingerprint"))
        for frame in frames
        if isinstance(frame, dict)
    )


def _check_names(names: Iterator[tuple[Any, Any, Any]]) -> None:
    """`check_code` of the functions so named: ``(module, qualname, fingerprint)`` each."""
    changed: list[tuple[Any, str]] = []
    seen: set[tuple[Any, Any, Any]] = set()
    for name in names:
        module, qualname, fingerprint = name
        if not (type(module) is str and type(qualname) is str and type(fingerprint) is str):
            continue
        if name in seen:  # the same function at several depths: checked once
            continue
        seen.add(name)
        live = live_info(module, qualname)
        if live is None or live.fingerprint == fingerprint:
            continue
        unseen = all(live is not seen for seen, _ in changed)
        if unseen and find_migration(module, qualname, fingerprint) is None:
            changed.append((live, fingerprint))
    if changed:
        raise code_changed(changed)
