"""The public snapshot functions: frames -> payload -> envelope, and back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import _envelope
from ._aio import detach_task
from ._errors import CheckpointError
from ._info import code_changed, live_info
from ._migrate import find as find_migration
from ._migrate import old_lines
from ._snapshot import FrameState, copy_generator, from_payload, to_payload
from ._snapshot import detach as _detach


def configure(*, key: bytes | str | None = None) -> None:
    """Set the process-wide signing key (``None`` clears it; ``CONTSNAP_KEY`` is the fallback).

    Once a key is in effect, [`dumps`][contsnap.dumps] signs with it and [`loads`][contsnap.loads]
    refuses snapshots that are unsigned or signed with another key.
    """
    _envelope.configure_key(key)


def _frames(obj: Any, captured: dict[int, FrameState]) -> list[dict[str, Any]]:
    """The delegation chain from ``obj`` down, as describe() reports it."""
    frames: list[dict[str, Any]] = []
    current = obj
    while id(current) in captured and len(frames) < 64:
        state = captured[id(current)]
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
        current = state.delegate
    return frames


def dumps(obj: Any, *, key: bytes | str | None = None) -> bytes:
    """Snapshot a paused checkpointable generator (or any object holding some) to bytes.

    The generator is not changed: the snapshot is a copy. The bytes carry an
    integrity hash and, with a key (argument, [`configure`][contsnap.configure] or
    ``CONTSNAP_KEY``), an HMAC-SHA256 signature.
    """
    payload, captured, _refs = to_payload(obj)
    meta = {"created_at": round(time.time(), 3), "frames": _frames(obj, captured)}
    return _envelope.seal(payload, meta, key=_envelope.effective_key(key))


def loads(data: bytes, *, key: bytes | str | None = None) -> Any:
    """Rebuild what [`dumps`][contsnap.dumps] saved: a generator paused where the original was.

    If the code of saved functions changed, [`CodeChangedError`][contsnap.CodeChangedError] names
    every changed function of the saved chain, unless a migration is registered for it (see
    [`contsnap.migration`][contsnap.migration]).
    """
    meta, payload = _envelope.unseal(data, key=_envelope.effective_key(key))
    found = meta.get("frames")
    frames: list[Any] = found if isinstance(found, list) else []
    _check_code(frames)
    with old_lines(frames):
        return from_payload(payload)


def _check_code(frames: list[Any]) -> None:
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


def describe(data: bytes) -> dict[str, Any]:
    """The metadata of a snapshot, read without a key and without unpickling anything."""
    return _envelope.read_meta(data)


def fork(gen: Any) -> Any:
    """A second live continuation of ``gen``, with its own copy of every local."""
    return copy_generator(gen)


def detach(gen: Any) -> None:
    """End ``gen`` without running its ``finally`` blocks: its continuation lives elsewhere.

    ``gen`` is a checkpointable generator, coroutine or async generator, or an
    asyncio task parked by [`contsnap.pause`][contsnap.pause].
    """
    if isinstance(gen, asyncio.Task):
        detach_task(gen)
        return
    _detach(gen)


__all__ = ["CheckpointError", "configure", "describe", "detach", "dumps", "fork", "loads"]
