"""contsnap: snapshot paused generators to bytes and resume them anywhere.

Mark a generator function with [`checkpointable`][contsnap.checkpointable]; its paused generators
can then be saved with [`dumps`][contsnap.dumps] (or ``pickle``/``copy.deepcopy``),
restored with [`loads`][contsnap.loads], copied with [`fork`][contsnap.fork] and moved with
[`detach`][contsnap.detach].
"""

from __future__ import annotations

from typing import Any

from ._aio import Queue, checkpoint, pause, sleep, unpause
from ._api import configure, describe, detach, dumps, fork, loads
from ._checkpoints._files import CheckpointFallbackWarning
from ._checkpoints._stores import TakenOverError
from ._durable._run import ROLLED_OUT, RolledOut, run
from ._effects import Effect, effect
from ._errors import (
    CheckpointError,
    CodeChangedError,
    NotCheckpointableError,
    ResourceChangedError,
    SigningKeyError,
    SnapshotCorruptError,
    SnapshotKindError,
    SnapshotSignatureError,
    SnapshotVersionError,
)
from ._marking import _marking
from ._marking._decorator import checkpointable
from ._marking._hook import install_import_hook
from ._migrate import OldFrame, Resume, migration
from ._resources import register_resource
from ._version import __version__

if _marking.roundtrip_mode():  # CONTSNAP_ROUNDTRIP=1: round-trip mode registers its wrapper
    from . import _roundtrip  # noqa: F401


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext contsnap`` in IPython/Jupyter: adds the ``%contsnap save|load FILE`` magic."""
    from ._ipython import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext contsnap``: removes the ``%contsnap`` magic."""
    from ._ipython import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "ROLLED_OUT",
    "CheckpointError",
    "CheckpointFallbackWarning",
    "CodeChangedError",
    "Effect",
    "NotCheckpointableError",
    "OldFrame",
    "Queue",
    "ResourceChangedError",
    "Resume",
    "RolledOut",
    "SigningKeyError",
    "SnapshotCorruptError",
    "SnapshotKindError",
    "SnapshotSignatureError",
    "SnapshotVersionError",
    "TakenOverError",
    "__version__",
    "checkpoint",
    "checkpointable",
    "configure",
    "describe",
    "detach",
    "dumps",
    "effect",
    "fork",
    "install_import_hook",
    "loads",
    "migration",
    "pause",
    "register_resource",
    "run",
    "sleep",
    "unpause",
]

for _name in __all__:
    _obj = globals()[_name]
    if callable(_obj) and getattr(_obj, "__module__", None) != __name__:
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
