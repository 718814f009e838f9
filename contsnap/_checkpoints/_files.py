"""Checkpoint files on disk: atomic writes, the last K generations, fallback on damage.

A checkpoint ``job.ckpt`` is written as a temporary file in the same
directory, flushed and fsynced; the older generations move to ``job.ckpt.1``,
``job.ckpt.2``... and the temporary file is renamed over ``job.ckpt`` (so
``job.ckpt`` is missing only between two renames), then the directory is fsynced.
A process killed at any instant therefore leaves every complete generation
loadable. Only the ``keep`` generations a checkpoint writes are ever read, only
files owned by the current user and not writable by others, and only the newest
one whose signature verifies is resumed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import socket
import stat
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import _codec
from .._errors import CheckpointError, SnapshotCorruptError, SnapshotSignatureError
from .._resources import Output
from ..stores import LeaseHeldError

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
    temp = _written_temp(target, data)
    try:
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(os.path.dirname(os.path.abspath(target)))


def _written_temp(target: str, data: bytes) -> str:
    """A temporary file beside ``target`` holding ``data``, flushed and fsynced."""
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
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return temp


@dataclass
class Loaded:
    """A checkpoint read back: the restored object, its verified metadata, its file."""

    obj: Any
    meta: dict[str, Any]
    path: str
    #: files the restored state writes to (cut back with _resources.truncate on resume)
    outputs: list[Output] = field(default_factory=list)


@dataclass
class Verified:
    """A generation whose signature, kind and identity checked out; nothing unpickled yet."""

    path: str
    data: bytes
    meta: dict[str, Any]
    payload: bytes


#: a checkpoint file larger than this is not read (a hostile file must not exhaust memory)
MAX_CHECKPOINT_BYTES = 1 << 31


def check_writable(path: str) -> None:
    """Find out at start, not at the first save, that checkpoints cannot be written there."""
    directory = os.path.dirname(os.path.abspath(path))
    name = f".{os.path.basename(path)}{TEMP_MARK}probe-{os.getpid()}-{secrets.token_hex(4)}"
    probe = os.path.join(directory, name)
    try:
        os.makedirs(directory, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise CheckpointError(
            f"cannot write checkpoints to {directory}: {exc.strerror or exc}; make it "
            "writable or pass another checkpoint= path"
        ) from None


def read_trusted(path: str) -> bytes:
    """The bytes of checkpoint ``path``, if it is safe to trust it at all.

    Refused, with no fallback: a file that is not a regular file, not owned by the
    current user, or writable by group or others (as ssh's StrictModes treats keys) —
    someone else could have planted or replaced it. FileNotFoundError passes through.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        problem = ""
        if not stat.S_ISREG(info.st_mode):
            problem = "is not a regular file"
        elif hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            problem = f"belongs to user id {info.st_uid}, not to you (user id {os.geteuid()})"
        elif info.st_mode & 0o022:
            problem = (
                f"can be written by others (mode {stat.S_IMODE(info.st_mode):03o}), so "
                "someone else could have replaced it"
            )
        elif info.st_size > MAX_CHECKPOINT_BYTES:
            problem = f"is {info.st_size} bytes, more than contsnap reads"
        if problem:
            raise CheckpointError(
                f"checkpoint {path} {problem}; contsnap does not load it, and does not fall "
                "back to another generation. Remove it if you did not make it; if you did, "
                f"make it yours and private (chmod 600 {path})"
            )
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class Generations:
    """What the places a job's checkpoints live in share: find the newest generation that
    verifies (``verified``, their own), and restore it."""

    def verified(
        self,
        *,
        kinds: Collection[str],
        identity: str | None = None,
        key: Any = None,
        allow_unsigned: bool | None = None,
    ) -> Verified | None:
        raise NotImplementedError

    def binding(self) -> dict[str, Any]:
        """Fields of the signed job record that bind a checkpoint to where it is kept."""
        return {}

    def load(
        self,
        *,
        kinds: Collection[str],
        identity: str | None = None,
        key: Any = None,
        allow_unsigned: bool | None = None,
    ) -> Loaded | None:
        """The newest generation that verifies, restored (see `verified`)."""
        found = self.verified(
            kinds=kinds, identity=identity, key=key, allow_unsigned=allow_unsigned
        )
        return load_verified(found)


class CheckpointFiles(Generations):
    """The generations of one checkpoint path: ``path`` (newest), ``path.1``, ``path.2``..."""

    def __init__(self, path: str | os.PathLike[str], keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.path = os.path.abspath(os.fspath(path))
        self.keep = keep
        self._stale_removed = False

    def generation(self, index: int) -> str:
        return self.path if index == 0 else f"{self.path}.{index}"

    def existing(self) -> list[str]:
        """The generations this checkpoint keeps that are on disk, newest first."""
        return [p for p in map(self.generation, range(self.keep)) if os.path.lexists(p)]

    def save(self, data: bytes) -> None:
        """Write ``data`` as the newest generation, keeping ``keep`` in all."""
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        self._remove_leftovers()
        # written first, so the newest generation is missing only between two renames
        # (a hard link would keep it, but a kill after the link left it there twice)
        temp = _written_temp(self.path, data)
        try:
            for index in range(self.keep - 1, 0, -1):
                older = self.generation(index - 1)
                if os.path.exists(older):
                    os.replace(older, self.generation(index))
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _fsync_directory(directory)
        if not self._stale_removed:  # left by a run that kept more: once is enough
            self._stale_removed = True
            for index in range(self.keep, self.keep + 8):
                with contextlib.suppress(OSError):
                    os.unlink(self.generation(index))

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

    def verified(
        self,
        *,
        kinds: Collection[str],
        identity: str | None = None,
        key: Any = None,
        allow_unsigned: bool | None = None,
    ) -> Verified | None:
        """The newest generation that verifies, or None when there is no generation at all.

        See `newest_verified`. A file someone else could have written raises at
        once (`read_trusted`), with no fallback.
        """
        candidates = ((path, functools.partial(read_trusted, path)) for path in self.existing())
        return newest_verified(
            candidates, kinds=kinds, identity=identity, key=key, allow_unsigned=allow_unsigned
        )

    @contextlib.contextmanager
    def hold(self, *, wait: float = 0.0, ttl: float = 0.0) -> Iterator[None]:
        """Run the block as the only process running this job (an ``fcntl`` lock).

        Another holder makes it raise `LeaseHeldError` naming the holder's
        pid and host, or, with ``wait``, retry for that many seconds first. The lock
        goes with the process: a killed holder frees it at once. ``ttl`` is unused
        (the store-backed checkpoints' lease takes it).
        """
        import fcntl

        lock_path = self.path + ".lock"
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(lock_path, flags, 0o600)
        try:
            info = os.fstat(fd)
            if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
                raise CheckpointError(
                    f"the lock file {lock_path} belongs to user id {info.st_uid}, not to you: "
                    "someone else made it; remove it or use another checkpoint= path"
                )
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise _held_error(self.path, os.pread(fd, 512, 0)) from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(
                fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0
            )
            yield
        finally:
            os.close(fd)  # releases the lock

    def heartbeat(self) -> None:
        """Nothing to renew: the lock lasts as long as the process."""


def _held_error(path: str, record: bytes) -> LeaseHeldError:
    try:
        holder = json.loads(record)
        pid, host = int(holder["pid"]), str(holder["host"])
    except (ValueError, KeyError, TypeError):
        pid, host = None, None
    error = LeaseHeldError(
        f"the job of {path} is already running (pid {pid} on host {host}); two runs of one "
        "job would both do its work: wait for it to end, stop it, or pass wait=SECONDS to "
        "wait for it"
    )
    error.pid, error.host = pid, host
    return error


def newest_verified(
    candidates: Iterable[tuple[str, Callable[[], bytes | None]]],
    *,
    kinds: Collection[str],
    identity: str | None = None,
    key: Any = None,
    allow_unsigned: bool | None = None,
) -> Verified | None:
    """The newest of ``candidates`` (``(name, read)``, newest first) that verifies.

    One that is damaged or does not verify is skipped with a
    [`CheckpointFallbackWarning`][contsnap.CheckpointFallbackWarning] naming it, and a second
    warning names the generation resumed (a rollback: the work after it is done again); if none
    verifies, the newest one's error is raised. Bytes of another kind or identity, and a read that
    refuses (a file someone else could have written), raise at once. Nothing is unpickled.
    """
    failed: list[CheckpointError] = []
    for path, read in candidates:
        try:
            data = read()
        except FileNotFoundError:
            continue  # removed by a concurrent save
        except OSError as exc:
            failed.append(CheckpointError(f"cannot read checkpoint {path}: {exc}"))
            continue
        if data is None:
            continue
        try:
            meta, payload = _codec.verify(
                data, kinds=kinds, identity=identity, key=key, allow_unsigned=allow_unsigned
            )
        except (SnapshotCorruptError, SnapshotSignatureError) as exc:
            failed.append(type(exc)(f"{path}: {exc}"))
            continue
        for error in failed:
            warnings.warn(
                f"checkpoint skipped, it does not verify: {error}",
                CheckpointFallbackWarning,
                stacklevel=4,
            )
        if failed:
            warnings.warn(
                f"rolled back: resuming from the older checkpoint {path}"
                f"{_generation_note(meta)}, the newest one that verifies; the work done "
                "after it will be done again",
                CheckpointFallbackWarning,
                stacklevel=4,
            )
        return Verified(path, data, meta, payload)
    if failed:
        raise failed[0]
    return None


def load_verified(found: Verified | None) -> Loaded | None:
    """Restore what `newest_verified` found (None stays None); it is not verified again."""
    if found is None:
        return None
    decoded = _codec.restore(found.meta, found.payload)
    return Loaded(decoded.obj, decoded.meta, found.path, decoded.outputs)


def _generation_note(meta: dict[str, Any]) -> str:
    job = meta.get("job")
    number = job.get("generation") if isinstance(job, dict) else None
    return f" (generation {number})" if isinstance(number, int) else ""
