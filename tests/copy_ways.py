"""The ways the differential tests copy a paused generator, and their harness backends."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import contsnap


class PickleAndDeepcopy:
    """The harness's snapshot backend through plain pickle (round trips) and deepcopy (fork)."""

    dumps = staticmethod(pickle.dumps)
    loads = staticmethod(pickle.loads)
    detach = staticmethod(contsnap.detach)
    fork = staticmethod(copy.deepcopy)


#: backends of the differential tests: contsnap's own, and plain pickle + deepcopy
BACKENDS = {"contsnap": None, "pickle+deepcopy": PickleAndDeepcopy()}

#: a paused generator copied each way: restored from contsnap's bytes, plain pickle,
#: deepcopy, contsnap.fork
WAYS: dict[str, Callable[[Any], Any]] = {
    "dumps": lambda gen: contsnap.loads(contsnap.dumps(gen)),
    "pickle": lambda gen: pickle.loads(pickle.dumps(gen)),
    "deepcopy": copy.deepcopy,
    "fork": contsnap.fork,
}
