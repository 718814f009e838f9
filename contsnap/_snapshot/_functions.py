"""Functions by index: the snapshot's functions table, and the fast pickler that names
marked functions and generators by their index in it.
"""

from __future__ import annotations

import contextvars
import copyreg
import io
import json
import pickle
import sys
import types
from collections.abc import Callable
from typing import Any

from .. import _resources, _views
from .._errors import SnapshotCorruptError
from .._info import FunctionInfo, _info_by_name
from .._registry import STATE
from ._capture import CLOSED, SUSPENDABLE, FrameState, capture
from ._chain import _Chain, _chain_below, _with_context, set_chain_state
from ._reducers import (
    _MATCH,
    _RANGE_ITERATOR,
    _cp,
    _LiveGlobals,
    _MainGlobals,
    _reduce_cell,
    _reduce_match,
    _reduce_range_iterator,
    _SessionGlobals,
    reduce_bound_method,
    reduce_sentinel,
)
from ._restore import closed_generator, globals_by_name, new_generator, set_generator_state

#: the functions table of the snapshot being loaded (its verified metadata's
#: ``functions``: [module, qualname, fingerprint]) and the infos resolved from it so far
_FUNCTIONS: contextvars.ContextVar[tuple[list[Any], dict[int, Any]] | None] = (
    contextvars.ContextVar("contsnap_functions", default=None)
)


def function_at(index: int) -> Any:
    """The info of entry ``index`` of the functions table the snapshot's metadata lists
    (format 3 names each importable function once, there, not again in the payload)."""
    table = _FUNCTIONS.get()
    if table is None:
        raise SnapshotCorruptError(
            "the snapshot names its functions by their place in a table of its metadata, "
            "which this load does not have; load it with contsnap.loads"
        )
    entries, resolved = table
    found = resolved.get(index)
    if found is not None:
        return found
    entry = entries[index] if type(index) is int and 0 <= index < len(entries) else None
    if not (
        type(entry) is list
        and 3 <= len(entry) <= 4
        and type(entry[0]) is str
        and type(entry[1]) is str
        and type(entry[2]) is str
    ):
        raise SnapshotCorruptError(
            f"the snapshot names function {index!r} of its metadata's table, which has no "
            "such entry; restore from an intact copy of the snapshot"
        )
    found = resolved[index] = _info_by_name(*entry[:3])
    return found


def generator_at(
    index: int,
    label: int,
    cells: tuple[types.CellType, ...],
    names: tuple[str, str] | None = None,
) -> Any:
    """`new_generator` of the function at ``index`` of the functions table (`function_at`):
    the payload of a format-3 snapshot names its generators' functions so."""
    return new_generator(function_at(index), label, cells, names)


class _NotFast(Exception):
    """The fast pickler met something only the full one saves as contsnap must."""


class _FastPickler(pickle.Pickler):
    """The C pickler, for the snapshots most programs take: every function and class named
    by import path. It answers the types a snapshot always holds first (generators, their
    function infos, cells, ``range`` iterators), lets plain pickle save every type whose
    saving contsnap and cloudpickle do not change, and gives up (`_NotFast`) on anything
    else: `to_payload` then pickles the whole object again with the full `_Pickler`. Its
    function infos are entries of `functions`, a table the codec writes in the metadata.
    """

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.buffer = file
        self.captured: dict[int, FrameState] = {}
        #: [module, qualname, fingerprint, file] of every function named, in order of first
        #: use, as JSON (see function_json), and their places in it by id of their info
        self.functions: list[str] = []
        self.function_index: dict[int, int] = {}
        #: the generators of chains being pickled, to pickle without their state (a
        #: _Chain carries it), by id, with that state
        self.shallow: dict[int, tuple[Any, FrameState]] = {}

    def reset(self) -> None:
        """Ready for the next snapshot (a pickler is made once and used again)."""
        self.clear_memo()
        self.buffer.seek(0)
        self.buffer.truncate()
        self.captured = {}
        self.functions = []
        self.function_index = {}
        self.shallow = {}

    def forget(self) -> None:
        """After a failed dump: nothing it saw stays referenced."""
        self.shallow.clear()
        self.captured.clear()
        self.clear_memo()

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        fast = _FAST_REDUCERS.get(kind)
        if fast is not None:
            return fast(self, obj)
        plain = _PLAIN.get(kind)
        if plain is None:
            plain = _PLAIN[kind] = _is_plain_type(kind)
        if plain:
            return reduce_inline(obj, kind)
        if kind is types.FunctionType or isinstance(obj, type):
            known = _BY_PATH.get(id(obj))
            if known is None or known[0] is not obj:
                if len(_BY_PATH) >= 512:
                    _BY_PATH.clear()
                known = _BY_PATH[id(obj)] = (obj, _named_by_path(obj))
            if known[1]:
                return NotImplemented
        raise _NotFast

    def index_of(self, info: FunctionInfo) -> int:
        found = self.function_index.get(id(info))
        if found is None:
            found = self.function_index[id(info)] = len(self.functions)
            self.functions.append(function_json(info))
        return found


def function_json(info: FunctionInfo) -> str:
    """The functions-table entry of ``info`` in a format-3 snapshot's metadata, as JSON:
    ``[module, qualname, fingerprint, file]`` (made once per function)."""
    known = _FUNCTION_JSON.get(id(info))
    if known is not None and known[0] is info:
        return known[1]
    entry = json.dumps(
        [info.module, info.qualname, info.fingerprint, info.filename],
        separators=(",", ":"),
        allow_nan=False,
    )
    if len(_FUNCTION_JSON) >= 4096:
        _FUNCTION_JSON.clear()
    _FUNCTION_JSON[id(info)] = (info, entry)
    return entry


#: function_json by id of the info, with the info (so that the id stays its own)
_FUNCTION_JSON: dict[int, tuple[FunctionInfo, str]] = {}
STATE.add(__name__, "_FUNCTION_JSON", "clear")  # functions-table entries by function


def _fast_generator(pickler: _FastPickler, gen: Any) -> Any:
    if pickler.shallow:
        entry = pickler.shallow.pop(id(gen), None)
        if entry is not None and entry[0] is gen:  # a _Chain being pickled carries its state
            pickler.captured[id(gen)] = entry[1]
            return (generator_at, _fast_args(pickler, entry[1]))
    state = capture(gen)
    pickler.captured[id(gen)] = state
    if state.status == CLOSED:
        return (closed_generator, (state.info,))
    args = _fast_args(pickler, state)
    saved = pickler.captured.__contains__
    chain = _chain_below(state, lambda member: saved(id(member)))
    if chain:
        whole = _Chain(state, chain, register=False)
        for member, member_state in chain:
            pickler.shallow[id(member)] = (member, member_state)
        reduced: tuple[Any, ...] = (generator_at, args, whole, None, None, set_chain_state)
    else:
        values = globals_by_name(state)
        reduced = (generator_at, args, values, None, None, set_generator_state)
    return _with_context(gen, reduced)


def _fast_args(pickler: _FastPickler, state: FrameState) -> tuple[Any, ...]:
    """`_args` with the function as its index in the pickler's functions table."""
    info = state.info
    at = pickler.function_index.get(id(info))
    if at is None:
        if not info.importable():
            raise _NotFast  # saved by value: cloudpickle
        at = pickler.index_of(info)
    args: tuple[Any, ...] = (at, state.label, state.cells)
    if state.names is not None:
        args += (state.names,)
    return args


def _fast_info(pickler: _FastPickler, info: FunctionInfo) -> Any:
    if not info.importable():
        raise _NotFast  # saved by value: cloudpickle
    return (function_at, (pickler.index_of(info),))


#: fast picklers ready for use (one per snapshot in progress at a time)
_FAST_PICKLERS: list[_FastPickler] = []
STATE.add(__name__, "_FAST_PICKLERS", "clear")  # a pool of picklers to reuse

_FAST_REDUCERS: dict[type, Callable[[_FastPickler, Any], Any]] = {
    kind: _fast_generator for kind in SUSPENDABLE
}
_FAST_REDUCERS[FunctionInfo] = _fast_info
_FAST_REDUCERS[types.CellType] = lambda _pickler, cell: _reduce_cell(cell)
_FAST_REDUCERS[_RANGE_ITERATOR] = lambda _pickler, it: _reduce_range_iterator(it)
_FAST_REDUCERS[_MATCH] = lambda _pickler, match: _reduce_match(match)
_FAST_REDUCERS[types.BuiltinMethodType] = lambda _pickler, method: reduce_bound_method(method)
_FAST_REDUCERS[types.MethodWrapperType] = lambda _pickler, method: reduce_bound_method(method)
_FAST_REDUCERS[object] = lambda _pickler, obj: reduce_sentinel(obj)

#: types whose instances plain pickle saves as the full pickler would (see _is_plain_type),
#: valid while the resource handlers are those of `_resources.generation`
_PLAIN: dict[type, bool] = {}
STATE.add(__name__, "_PLAIN", "clear")  # which types the fast pickler saves as they are
_PLAIN_FOR = [-1]
STATE.add(
    __name__, "_PLAIN_FOR", lambda: _PLAIN_FOR.__setitem__(0, -1)
)  # _PLAIN is for this generation of resource handlers


def ready_for_handlers() -> None:
    """Before a fast pickler runs: forget the per-type answers (`_PLAIN`, `_INLINE`) given
    under other resource handlers, and take in the refusals of modules imported since."""
    if _PLAIN_FOR[0] != _resources.generation():
        _PLAIN.clear()
        _INLINE.clear()
        _PLAIN_FOR[0] = _resources.generation()
    _resources.resolve_refusals()


def _is_plain_type(kind: type) -> bool:
    """Does plain pickle save instances of ``kind`` as the full pickler would?"""
    return not (
        issubclass(kind, (BaseException, type, types.FunctionType, types.TracebackType))
        or kind in _cp.Pickler._dispatch_table
        or kind in _views.REDUCERS
        or kind in (contextvars.ContextVar, _LiveGlobals, _SessionGlobals, _MainGlobals)
        or kind.__module__.split(".", 1)[0] in ("numpy", "cloudpickle")
        or _resources.handler_for(kind) is not None
        or "<locals>" in kind.__qualname__
        or not _named_by_path(kind)
    )


#: Py_TPFLAGS_MANAGED_DICT (3.11+): instances keep their attributes in the object itself
_MANAGED_DICT = 1 << 4


class _Plain:
    pass


#: the size of an instance of a class with no __slots__ and no built-in base but object
_PLAIN_SIZE = _Plain.__basicsize__
_UNKNOWN: Any = object()
#: per class: the names its instances' attributes must avoid to be set back one by one
#: (see _inline_attributes), or None to pickle them as pickle does
_INLINE: dict[type, frozenset[str] | None] = {}
STATE.add(__name__, "_INLINE", "clear")  # which classes restore attributes one by one


def _inline_attributes(kind: type) -> frozenset[str] | None:
    """Can an instance of ``kind`` be rebuilt with its attributes set one by one?

    Since 3.11 an instance of a plain class keeps its attributes in the object
    itself; pickle restores them into its ``__dict__``, which the object then
    keeps for good, and every attribute access is slower (a restored loop over
    an iterator object ran 1.5x native on 3.11, 1.35x on 3.12). Setting them one
    by one (pickle's "slot state", ``setattr`` in C) rebuilds the object as its
    class made it. Only for classes that pickle their ``__dict__`` as it is and
    whose ``setattr`` is object's; the answer is the data descriptors of the
    class, whose names an instance's attributes must avoid (None: not such a class).
    """
    if sys.version_info < (3, 11) or not kind.__flags__ & _MANAGED_DICT:
        return None
    if kind in _cp.Pickler._dispatch_table:
        return None  # cloudpickle's own reducer (a dataclass field's _FIELD sentinel: by name)
    if kind.__basicsize__ != _PLAIN_SIZE:
        return None
    defaults = ("__reduce_ex__", "__reduce__", "__getstate__", "__setattr__")
    if any(getattr(kind, name) is not getattr(object, name) for name in defaults):
        return None
    if any(hasattr(kind, name) for name in ("__setstate__", "__getnewargs_ex__", "__getnewargs__")):
        return None
    return frozenset(
        name
        for klass in kind.__mro__
        for name, value in vars(klass).items()
        if hasattr(type(value), "__set__") or hasattr(type(value), "__delete__")
    )


def reduce_inline(obj: Any, kind: type) -> Any:
    """``obj`` as pickle saves it, its attributes as slot state where `_inline_attributes`
    allows it (else NotImplemented: as pickle saves it)."""
    avoid = _INLINE.get(kind, _UNKNOWN)
    if avoid is _UNKNOWN:
        avoid = _INLINE[kind] = _inline_attributes(kind)
    if avoid is None or kind in copyreg.dispatch_table:  # (a reducer registered since)
        return NotImplemented
    state = obj.__dict__
    if not state or not avoid.isdisjoint(state):
        return NotImplemented
    try:
        "".join(state)  # every name a str (setattr takes nothing else), checked in C
    except TypeError:
        return NotImplemented
    return (copyreg.__newobj__, (kind,), (None, state))  # type: ignore[attr-defined]


def _named_by_path(obj: Any) -> bool:
    """Does pickle name ``obj`` (a function or class) by import path, as cloudpickle
    would? Not when it lives in ``__main__``, a notebook or a function (by value)."""
    try:
        return bool(_cp._should_pickle_by_reference(obj)) and obj.__module__ not in _OWN_BY_VALUE
    except Exception:
        return False


_OWN_BY_VALUE = frozenset({"__main__", "__mp_main__"})
#: functions and classes seen by the fast pickler: (the object, named by path?), by id
_BY_PATH: dict[int, tuple[Any, bool]] = {}
STATE.add(__name__, "_BY_PATH", "clear")  # code reachable by path, by code object
