"""What the transform hands to the rest of contsnap without libcst: label records, names.

Kept apart from ``contsnap._transform`` (which imports libcst) so that a warm
start, whose transforms all come from the import hook's cache, never imports
libcst.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The name under which transformed code finds ``contsnap._runtime`` in its globals.
RT = "__contsnap_rt__"

#: The runtime helpers that every fresh variant calls (loops, ``with``, ``try``), each
#: bound under a global name of its own: ``__contsnap_live__()`` is one global load where
#: ``__contsnap_rt__.live()`` is a global and a method load (22 more bytes of bytecode
#: per call in 3.11, and a slower call).
HELPERS = (
    "for_iter",
    "iter",
    "type_of",
    "reread",
    "with_enter",
    "with_exit",
    "is_detach",
    "live",
    "yield_from_iter",
    "Detach",
    "builtin_iters",  # last: a namespace bound by an older version has the others only
)


def helper(name: str) -> str:
    """The global name transformed code calls runtime helper ``name`` by."""
    return f"__contsnap_{name}__"


#: The names transformed code reads from its globals: the user's code may not use them.
GLOBAL_NAMES = frozenset({RT, *(helper(name) for name in HELPERS)})


@dataclass
class LabelInfo:
    """What restore needs to know about one yield: where it is and what is live there."""

    line: int
    helpers: frozenset[str]
    delegate: str | None = None
    #: why a snapshot paused here must be refused (None: it can be taken)
    refuse: str | None = None
    #: "yield" (the caller is waiting for a value) or "await" (the event loop is)
    kind: str = "yield"
    #: for the step of a native ``async for`` (an await with no local of its own): the
    #: local holding the loop's iterator; the step awaited is read from the frame
    anext_of: str | None = None
