"""The exceptions contsnap raises; every one subclasses
[`CheckpointError`][contsnap.CheckpointError]."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CodeChangedError",
    "NotCheckpointableError",
    "ResourceChangedError",
    "SigningKeyError",
    "SnapshotCorruptError",
    "SnapshotKindError",
    "SnapshotSignatureError",
    "SnapshotVersionError",
]


class CheckpointError(Exception):
    """Base class of every error contsnap raises about capturing or restoring state."""

    __module__ = "contsnap"


class NotCheckpointableError(CheckpointError, TypeError):
    """A live value or a frame cannot be captured (names variable, type, function, file:line).

    Also a ``TypeError``: pickling a plain generator raises ``TypeError`` without
    contsnap, and code that catches that keeps working with contsnap imported.
    """

    __module__ = "contsnap"


class CodeChangedError(CheckpointError):
    """The snapshot was taken from code that has changed since; resuming it would be a guess."""

    __module__ = "contsnap"


class ResourceChangedError(CheckpointError):
    """A file (or other resource) the snapshot had open changed: it was modified, or it shrank.

    Resuming would read other data than the original run, or leave a hole in
    the output; start the run again instead.
    """

    __module__ = "contsnap"


class SnapshotCorruptError(CheckpointError):
    """The snapshot bytes are truncated, altered or not a contsnap snapshot at all."""

    __module__ = "contsnap"


class SnapshotSignatureError(CheckpointError):
    """The snapshot's HMAC signature is missing, wrong, or cannot be checked."""

    __module__ = "contsnap"


class SnapshotKindError(CheckpointError):
    """Genuine bytes used for another purpose: a job's checkpoint loaded as another job's,
    an actor system's as a generator snapshot, and so on. Nothing was unpickled."""

    __module__ = "contsnap"


class SigningKeyError(CheckpointError):
    """No usable signing key: an empty ``CONTSNAP_KEY``, or a key file that is unsafe or
    cannot be created."""

    __module__ = "contsnap"


class SnapshotVersionError(CheckpointError):
    """The snapshot was taken on another Python version and carries bytecode by value."""

    __module__ = "contsnap"
