"""Where the modules of earlier releases went: old module paths in a snapshot still load.

A payload names a class or function by ``(module, qualname)``: a reducer (`contsnap._snapshot`,
`contsnap._views`), a record class of a layer (durable jobs, actors, web pages, Celery
tasks), a by-value function's globals (``__contsnap_mark__`` of a hooked module). When a
module moves, a snapshot written before still names its old path. `Unpickler.find_class`
looks such a path up here: an old module maps to the modules its names went to (a module
split by concern maps to several), and the name is taken from the first that has it.

An entry is never removed: snapshots live longer than releases. Extension codes (240-250,
see `contsnap._snapshot`) need no entry: a snapshot carries the code, and the code is
registered under the function's current path. ``tests/test_moved.py`` lists every module
path a payload can name and checks that each, old or new, still resolves.

This module imports nothing of contsnap: `contsnap._snapshot` (and `contsnap._info`) unpickle
through it.
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import Any

#: old module path -> the modules its names are in now, in the order they are searched
MOVED: dict[str, tuple[str, ...]] = {
    # issue 17: the decorator, the import hook and its cache became contsnap._marking
    "contsnap._decorator": ("contsnap._marking._decorator",),
    "contsnap._marking": ("contsnap._marking._marking",),
    "contsnap._cache": ("contsnap._marking._cache", "contsnap._marking._cache_key"),
    "contsnap._hook": (
        "contsnap._marking._hook",
        "contsnap._marking._plan",
        "contsnap._marking._hooked",
        "contsnap._marking._prebuilt",
        "contsnap._marking._show",
    ),
    # issue 17: durable jobs became contsnap._durable, where their checkpoints live
    # contsnap._checkpoints (shared with the actors)
    "contsnap._durable": (
        "contsnap._durable._run",
        "contsnap._durable._plan",
        "contsnap._durable._progress",
    ),
    "contsnap._signals": ("contsnap._durable._signals",),
    "contsnap._cli_jobs": ("contsnap._durable._cli",),
    "contsnap._files": ("contsnap._checkpoints._files",),
    "contsnap._store_checkpoints": ("contsnap._checkpoints._stores",),
    # issue 17: contsnap.testing became a package split by concern; its public names stay
    "contsnap.testing": (
        "contsnap.testing",
        "contsnap.testing._log",
        "contsnap.testing._actions",
        "contsnap.testing._driver",
        "contsnap.testing._async_driver",
    ),
}


def new_place(module: str, qualname: str) -> tuple[str, str]:
    """Where ``module.qualname`` of an earlier release is now (itself, if it did not move)."""
    places = MOVED.get(module)
    if places is None:
        return module, qualname
    head = qualname.partition(".")[0]
    for place in places:
        try:
            found = importlib.import_module(place)
        except ImportError:
            continue
        if head in vars(found):
            return place, qualname
    return places[0], qualname


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that finds moved classes and functions at their new path."""

    def find_class(self, module: str, name: str, /) -> Any:
        if module in MOVED:
            module, name = new_place(module, name)
        return super().find_class(module, name)


def loads(data: bytes | memoryview) -> Any:
    """``pickle.loads`` with moved names mapped (see `Unpickler`)."""
    return Unpickler(io.BytesIO(data)).load()
