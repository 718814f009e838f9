"""Checkpoint files on disk: atomic writes, the last K generations, fallback on damage.

A checkpoint ``job.ckpt`` is written as a temporary file in the same
directory, flushed and fsynced, renamed over ``job.ckpt`` (older generations
move to ``job.ckpt.1``, ``job.ckpt.2``... first) and the directory is fsynced.
A process killed at any instant therefore leaves every complete generation
loadable; the newest one that is intact is the one resumed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import _envelope
from ._errors import SnapshotCorruptError

#: what an interrupted write leaves behind: removed by the next save
TEMP_MARK = ".contsnap-tmp-"


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint was damaged; an older generation was loaded instead."""

    __module__ = "contsnap"


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a crash leaves either the old or the new file.

    The file is created readable and writable by its owner only.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    temp = os.path.join(
        directory, f".{os.path.basename(target)}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    )
    try:
        # owner-only, like the state it holds (it may name files, hold tokens...)
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(directory)


@dataclass
class Loaded:
    """A checkpoint read back: the restored object, its metadata and the file it came from."""

    obj: Any
    meta: dict[str, Any]
    path: str


class CheckpointFiles:
    """The generations of one checkpoint path: ``path`` (newest), ``path.1``, ``path.2``..."""

    def __init__(self, path: str | os.PathLike[str], keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.path = os.path.abspath(os.fspath(path))
        self.keep = keep

    def generation(self, index: int) -> str:
        return self.path if index == 0 else f"{self.path}.{index}"

    def existing(self) -> list[str]:
        """The generations on disk, newest first (a gap left by a crash is skipped)."""
        found = []
        index = 0
        while index < max(self.keep, 1) + 8:  # older runs may have kept more
            candidate = self.generation(index)
            if os.path.exists(candidate):
                found.append(candidate)
            index += 1
        return found

    def save(self, data: bytes) -> None:
        """Write ``data`` as the newest generation, keeping ``keep`` in all."""
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        self._remove_leftovers()
        for index in range(self.keep - 1, 0, -1):
            older = self.generation(index - 1)
            if os.path.exists(older):
                os.replace(older, self.generation(index))
        write_atomic(self.path, data)
        for stale in self.existing():
            if stale != self.path and self._index_of(stale) >= self.keep:
                with contextlib.suppress(OSError):
                    os.unlink(stale)

    def _index_of(self, path: str) -> int:
        return 0 if path == self.path else int(path.rsplit(".", 1)[1])

    def _remove_leftovers(self) -> None:
        directory, base = os.path.split(self.path)
        prefix = f".{base}{TEMP_MARK}"
        with contextlib.suppress(OSError):
            for name in os.listdir(directory):
                if name.startswith(prefix):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(directory, name))

    def clear(self) -> None:
        """Remove every generation (the job has finished)."""
        self._remove_leftovers()
        for path in self.existing():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        _fsync_directory(os.path.dirname(self.path))

    def read(self) -> Iterator[tuple[str, bytes]]:
        for path in self.existing():
            try:
                with open(path, "rb") as f:
                    yield path, f.read()
            except OSError as exc:
                warnings.warn(
                    f"cannot read checkpoint {path}: {exc}", CheckpointFallbackWarning, stacklevel=3
                )

    def load(self, *, key: bytes | str | None = None) -> Loaded | None:
        """The newest intact generation restored, or None when there is none at all.

        A damaged (truncated, altered) generation is skipped with a
        :class:`CheckpointFallbackWarning`; if every generation is damaged, the
        newest one's error is raised. A signature that does not verify and code
        that changed are never skipped: they raise.
        """
        from ._api import loads

        first_error: SnapshotCorruptError | None = None
        for path, data in self.read():
            try:
                meta = _envelope.read_meta(data)
                obj = loads(data, key=key)
            except SnapshotCorruptError as exc:
                first_error = first_error or SnapshotCorruptError(f"{path}: {exc}")
                warnings.warn(
                    f"checkpoint {path} is damaged ({exc}); trying an older one",
                    CheckpointFallbackWarning,
                    stacklevel=2,
                )
                continue
            if first_error is not None:
                warnings.warn(
                    f"resuming from the older checkpoint {path}",
                    CheckpointFallbackWarning,
                    stacklevel=2,
                )
            return Loaded(obj, meta, path)
        if first_error is not None:
            raise first_error
        return None
