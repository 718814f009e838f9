"""contsnap: snapshot paused generators to bytes and resume them anywhere.

Mark a generator function with :func:`checkpointable`; its paused generators
can then be saved with :func:`dumps` (or ``pickle``/``copy.deepcopy``),
restored with :func:`loads`, copied with :func:`fork` and moved with
:func:`detach`.
"""

from __future__ import annotations

from ._aio import Queue, checkpoint, pause, sleep, unpause
from ._api import configure, describe, detach, dumps, fork, loads
from ._decorator import checkpointable
from ._errors import (
    CheckpointError,
    CodeChangedError,
    NotCheckpointableError,
    ResourceChangedError,
    SnapshotCorruptError,
    SnapshotSignatureError,
)
from ._hook import install_import_hook
from ._resources import register_resource
from ._version import __version__

__all__ = [
    "CheckpointError",
    "CodeChangedError",
    "NotCheckpointableError",
    "Queue",
    "ResourceChangedError",
    "SnapshotCorruptError",
    "SnapshotSignatureError",
    "__version__",
    "checkpoint",
    "checkpointable",
    "configure",
    "describe",
    "detach",
    "dumps",
    "fork",
    "install_import_hook",
    "loads",
    "pause",
    "register_resource",
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
