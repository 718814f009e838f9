"""The public snapshot functions: frames -> payload -> envelope, and back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from . import _codec, _envelope, _keys
from ._aio import detach_task
from ._errors import CheckpointError
from ._resources import truncate
from ._snapshot import copy_generator
from ._snapshot import detach as _detach

_UNCHANGED: Any = object()


def configure(
    *,
    key: bytes | str | None = _UNCHANGED,
    old_keys: Sequence[bytes | str] = (),
    allow_unsigned: bool = _UNCHANGED,
    compress: bool = _UNCHANGED,
) -> None:
    """Set the process-wide signing keys, the unsigned-bytes policy and compression.

    ``key`` signs every snapshot written from now on and verifies what is loaded;
    ``old_keys`` are still accepted when loading (key rotation); ``key=None`` goes back
    to ``CONTSNAP_KEY`` or the per-user key file. ``allow_unsigned=True`` lets
    [`loads`][contsnap.loads] and the other loaders accept unsigned bytes (format 1, or written with
    ``sign=False``): only for bytes from a source you trust. ``compress=True`` deflates what
    contsnap writes when that pays (smaller bytes, slower saves: see docs/format.md); it is
    off by default. Arguments not given keep their setting.
    """
    if key is not _UNCHANGED:
        _keys.configure_keys(key, old_keys)
    elif old_keys:
        raise ValueError("old_keys= goes with key=: name the key that signs from now on")
    if allow_unsigned is not _UNCHANGED:
        _codec.policy.allow_unsigned = bool(allow_unsigned)
    if compress is not _UNCHANGED:
        _codec.policy.compress = bool(compress)


def dumps(obj: Any, *, key: bytes | str | None = None, sign: bool = True) -> bytes:
    """Snapshot a paused checkpointable generator (or any object holding some) to bytes.

    The generator is not changed: the snapshot is a copy. The bytes are signed with HMAC-SHA256
    under the key in effect (``key``, [`configure`][contsnap.configure], ``CONTSNAP_KEY``, else the
    per-user key file); ``sign=False`` writes them unsigned, which [`loads`][contsnap.loads] then
    accepts only with ``allow_unsigned=True``.
    """
    return _codec.encode(obj, kind="snapshot", key=key, sign=sign)


def loads(
    data: bytes,
    *,
    key: bytes | str | None = None,
    allow_unsigned: bool | None = None,
    truncate_outputs: bool = False,
) -> Any:
    """Rebuild what [`dumps`][contsnap.dumps] saved: a generator paused where the original was.

    The signature is verified first (with ``key`` or the keys in effect); unsigned bytes are refused
    unless ``allow_unsigned`` (or [`configure`][contsnap.configure]'s). Bytes of another kind (a
    job's or an actor system's checkpoint) are refused before anything is unpickled. If the code of
    saved functions changed, [`CodeChangedError`][contsnap.CodeChangedError] names every changed
    function of the saved chain, unless a migration is registered for it (see
    [`contsnap.migration`][contsnap.migration]).

    Loading has no effect outside the process. A file the generator had open for writing is reopened
    at its checkpoint offset; what was written to it after the checkpoint is cut off only with
    ``truncate_outputs=True``, for a load that will resume the computation (as
    [`contsnap.run`][contsnap.run] does), so that it is not written twice.
    """
    decoded = _codec.decode(data, kinds=("snapshot",), key=key, allow_unsigned=allow_unsigned)
    if truncate_outputs:
        truncate(decoded.outputs)
    return decoded.obj


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
