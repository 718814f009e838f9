"""The one object <-> bytes path every entry point uses.

``encode``: capture the frames, pickle, describe them in the metadata, seal (sign)
under a kind and identity. ``decode``: unseal (verify signature, kind and identity
before anything else), check that the saved code is unchanged, unpickle. Nothing
here unpickles bytes whose signature did not verify, unless the caller opted in to
unsigned bytes.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from . import _envelope, _keys
from ._errors import SnapshotCorruptError, SnapshotVersionError
from ._info import code_changed, live_info
from ._migrate import find as find_migration
from ._migrate import old_lines
from ._registry import STATE
from ._resources import Output, collect_outputs
from ._snapshot import FrameState, from_payload, to_payload

__all__ = ["Decoded", "decode", "encode", "encode_payload", "frames_of", "verify"]


@dataclass
class _Policy:
    allow_unsigned: bool = False


policy = _Policy()
STATE.add(__name__, "policy", "attributes")


def frames_of(obj: Any, captured: dict[int, FrameState]) -> list[dict[str, Any]]:
    """The delegation chain from ``obj`` down, as the metadata describes it.

    When ``obj`` only holds generators (a list, a web page), the chain starts at the
    first one captured that no other captured generator delegates to.
    """
    frames: list[dict[str, Any]] = []
    current_id = id(obj)
    if current_id not in captured:
        delegated = {id(state.delegate) for state in captured.values()}
        current_id = next((key for key in captured if key not in delegated), current_id)
    while current_id in captured and len(frames) < 64:
        state = captured[current_id]
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
        current_id = id(state.delegate)
    return frames


def encode(
    obj: Any,
    *,
    kind: str,
    identity: str | None = None,
    meta: dict[str, Any] | None = None,
    key: _keys.KeyLike | None = None,
    sign: bool = True,
) -> bytes:
    """Snapshot ``obj`` (and every generator it holds) to signed bytes of ``kind``."""
    payload, captured, _refs = to_payload(obj)
    return encode_payload(
        payload,
        frames_of(obj, captured),
        kind=kind,
        identity=identity,
        meta=meta,
        key=key,
        sign=sign,
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
    return _envelope.seal(payload, full, key=ring.signing_key, kind=kind, identity=identity)


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
    ring = _keys.resolve(key)
    if allow_unsigned is None:
        allow_unsigned = policy.allow_unsigned
    meta, payload = _envelope.unseal(
        data, ring=ring, kinds=kinds, identity=identity, allow_unsigned=allow_unsigned
    )
    _check_python(meta)
    found = meta.get("frames", [])
    if not isinstance(found, list) or not all(isinstance(f, dict) for f in found):
        raise SnapshotCorruptError(
            "snapshot metadata is malformed: 'frames' is not a list of objects; "
            "restore from an intact copy of the snapshot"
        )
    return meta, payload


def _check_python(meta: dict[str, Any]) -> None:
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


@dataclass
class Decoded:
    """What `decode` gives back: the restored object and its (verified) metadata."""

    obj: Any
    meta: dict[str, Any]
    #: files the restored state writes to, with their checkpoint sizes (see truncate())
    outputs: list[Output]


def decode(
    data: bytes,
    *,
    kinds: Collection[str],
    identity: str | None = None,
    key: _keys.KeyLike | None = None,
    allow_unsigned: bool | None = None,
) -> Decoded:
    """Verify ``data``, check that its code did not change, and rebuild what it holds."""
    meta, payload = verify(
        data, kinds=kinds, identity=identity, key=key, allow_unsigned=allow_unsigned
    )
    return restore(meta, payload)


def restore(meta: dict[str, Any], payload: bytes) -> Decoded:
    """Rebuild what a payload holds, once `verify` has vouched for it and its ``meta``."""
    frames = meta["frames"]
    check_code(frames)
    with old_lines(frames), collect_outputs() as outputs:
        obj = from_payload(payload)
    return Decoded(obj, meta, outputs)


def check_code(frames: list[Any]) -> None:
    """Name every function of the saved chain whose code changed (and has no migration)."""
    changed: list[tuple[Any, str]] = []
    for frame in frames:
        if not isinstance(frame, dict):
            continue
        module, qualname = frame.get("module"), frame.get("qualname")
        fingerprint = frame.get("fingerprint")
        if not (isinstance(module, str) and isinstance(qualname, str)):
            continue
        if not isinstance(fingerprint, str):
            continue
        live = live_info(module, qualname)
        if live is None or live.fingerprint == fingerprint:
            continue
        unseen = all(live is not seen for seen, _ in changed)
        if unseen and find_migration(module, qualname, fingerprint) is None:
            changed.append((live, fingerprint))
    if changed:
        raise code_changed(changed)
