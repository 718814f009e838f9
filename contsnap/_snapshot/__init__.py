"""Capture the frame of a suspended transformed generator, and rebuild it.

Capture reads ``gi_frame.f_locals`` of a paused generator: the resume label,
the locals live there and the cell objects (through the ``_cs_cellref``
closure the transform plants). Rebuild calls the *resume variant* with that
state and primes it once, so the new generator is paused at the same yield.

A ``copyreg`` reducer for the generator type makes ``pickle``, ``cloudpickle``
and ``copy.deepcopy`` work on checkpointable generators; the generator object
is created first and its state set afterwards, so an object that holds the
generator which holds the object (``self.job = self.run()``) pickles fine.

One concern a module, each importing only those below it (the import-linter contract
in pyproject.toml):

* `_capture`: the frame state of a paused generator, and which function it runs;
* `_restore`: a generator rebuilt from its state, primed; a load's context;
* `_detach`: a paused generator taken off what it runs, and where it waits;
* `_chain`: a delegation chain saved flat; a generator's frame state reduced;
* `_reducers`: reducers and reconstructors of what plain pickle cannot save;
* `_functions`: the functions table, functions by index and the fast pickler;
* `_pickler`: the snapshot pickler and the payload functions (object <-> bytes);
* `_copying`: what ``import contsnap`` registers for ``pickle`` and ``copy``;
* `_batch`: many payloads made in one go, each loading alone (an actor system's states).

A payload names its reconstructors ``contsnap._snapshot.<name>`` (several by the extension
codes 240-253 below): they are re-exported here and say ``__module__ == "contsnap._snapshot"``,
wherever in the package they are written, so snapshots of every version name the same paths.
"""

from __future__ import annotations

import copyreg

from ._batch import Batch, prelude_bytes
from ._capture import SUSPENDABLE, FrameState, _Box, capture, info_of
from ._chain import TASK_CONTEXT, _Chain, _chain_parts, set_chain_state
from ._copying import copy_generator, generator_from_payload
from ._detach import delegation_chain, detach, detach_obstacle, owned_generators, waiting_point
from ._functions import function_at, function_json, generator_at
from ._pickler import _local_ref, from_payload, to_indexed_payload, to_payload
from ._reducers import (
    _dead_reference,
    _main_globals,
    _make_cell,
    _no_traceback,
    _session_globals,
    _set_cell,
    _weak_reference,
    bound_method,
    closed_generator_by_name,
    context_var,
    context_var_address,
    generator_by_name,
    module_global,
    range_iterator,
    rebuild_exception,
    rematch,
    set_exception_state,
    set_function_state,
    set_main_function_state,
)
from ._restore import (
    _load_context,
    closed_generator,
    module_attribute,
    new_generator,
    set_generator_state,
)

__all__ = [
    "SUSPENDABLE",
    "TASK_CONTEXT",
    "Batch",
    "FrameState",
    "_Box",
    "_Chain",
    "_chain_parts",
    "_dead_reference",
    "_load_context",
    "_local_ref",
    "_main_globals",
    "_make_cell",
    "_no_traceback",
    "_session_globals",
    "_set_cell",
    "_weak_reference",
    "bound_method",
    "capture",
    "closed_generator",
    "closed_generator_by_name",
    "context_var",
    "context_var_address",
    "copy_generator",
    "delegation_chain",
    "detach",
    "detach_obstacle",
    "from_payload",
    "function_at",
    "function_json",
    "generator_at",
    "generator_by_name",
    "generator_from_payload",
    "info_of",
    "module_global",
    "new_generator",
    "owned_generators",
    "prelude_bytes",
    "range_iterator",
    "rebuild_exception",
    "rematch",
    "set_chain_state",
    "set_exception_state",
    "set_function_state",
    "set_generator_state",
    "set_main_function_state",
    "to_indexed_payload",
    "to_payload",
    "waiting_point",
]

#: what a payload can name (tests/test_moved.py): pickled as contsnap._snapshot.<name>
_PAYLOAD_NAMES = (
    _Box,
    _Chain,
    _chain_parts,
    _dead_reference,
    _local_ref,
    _main_globals,
    _make_cell,
    _no_traceback,
    _session_globals,
    _set_cell,
    _weak_reference,
    bound_method,
    closed_generator,
    closed_generator_by_name,
    context_var,
    FrameState,
    function_at,
    generator_at,
    generator_by_name,
    generator_from_payload,
    module_attribute,
    module_global,
    new_generator,
    range_iterator,
    rebuild_exception,
    rematch,
    set_chain_state,
    set_exception_state,
    set_function_state,
    set_generator_state,
    set_main_function_state,
)
for _obj in _PAYLOAD_NAMES:
    _obj.__module__ = __name__
del _obj

# One-byte pickle opcodes for the reconstructors every snapshot names (codes in
# the range copyreg reserves for private use), keeping small snapshots small.
for _code, _func in enumerate(
    ("new_generator", "set_generator_state", "closed_generator", "_make_cell", "_set_cell"),
    start=240,
):
    copyreg.add_extension(__name__, _func, _code)
copyreg.add_extension("contsnap._info", "_info_by_name", 245)
copyreg.add_extension("contsnap._info", "_info_by_value", 246)
copyreg.add_extension(__name__, "rebuild_exception", 247)
copyreg.add_extension(__name__, "set_exception_state", 248)
copyreg.add_extension(__name__, "_chain_parts", 249)
copyreg.add_extension(__name__, "set_chain_state", 250)
copyreg.add_extension(__name__, "range_iterator", 251)
copyreg.add_extension(__name__, "function_at", 252)
copyreg.add_extension(__name__, "generator_at", 253)
