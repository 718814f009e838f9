"""What the transform hands to the rest of contsnap without libcst: label records, names.

Kept apart from ``contsnap._transform`` (which imports libcst) so that a warm
start, whose transforms all come from the import hook's cache, never imports
libcst.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The name under which transformed code finds ``contsnap._runtime`` in its globals.
RT = "__contsnap_rt__"


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
