"""Objects that look into other objects: saved as a window onto the saved original.

Plain pickle copies what a view shows: a ``memoryview`` over a ``bytearray``
comes back as read-only bytes of its own, a numpy view loses its base. A
snapshot holds the exporter too, so a view is saved as *exporter + where it
looks* and rebuilt over the restored exporter: writes through it reach the
exporter, as before. What cannot be rebuilt exactly is refused, naming it.

Each reducer first rebuilds the view over the live exporter and compares it
with the original (a dry run), so a view is either restored exactly or refused
when the snapshot is taken, never at load time.
"""

from __future__ import annotations

import copy
import functools
import gc
import importlib
import itertools
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from ._errors import NotCheckpointableError, SnapshotCorruptError
from ._resources import ResourceRefused

__all__ = ["rebuild_memoryview", "rebuild_ndarray", "reduce_memoryview", "reduce_ndarray"]


@functools.cache
def _buffer_api() -> tuple[Any, Any, Any, Any]:
    """``Py_buffer`` (stable ABI) and the calls that fill and release one; ctypes is
    imported on the first memoryview saved, not with contsnap."""
    import ctypes

    class PyBuffer(ctypes.Structure):
        _fields_ = (
            ("buf", ctypes.c_void_p),
            ("obj", ctypes.py_object),
            ("len", ctypes.c_ssize_t),
            ("itemsize", ctypes.c_ssize_t),
            ("readonly", ctypes.c_int),
            ("ndim", ctypes.c_int),
            ("format", ctypes.c_char_p),
            ("shape", ctypes.c_void_p),
            ("strides", ctypes.c_void_p),
            ("suboffsets", ctypes.c_void_p),
            ("internal", ctypes.c_void_p),
        )

    get_buffer = ctypes.pythonapi.PyObject_GetBuffer
    get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(PyBuffer), ctypes.c_int)
    get_buffer.restype = ctypes.c_int
    release_buffer = ctypes.pythonapi.PyBuffer_Release
    release_buffer.argtypes = (ctypes.POINTER(PyBuffer),)
    release_buffer.restype = None
    return PyBuffer, get_buffer, release_buffer, ctypes.byref


_PyBUF_FULL_RO = 0x100 | 0x10 | 0x08 | 0x04  # INDIRECT | STRIDES | ND | FORMAT


def _address(exporter: Any) -> int:
    """Where the first item of ``exporter``'s buffer is in memory (read only)."""
    buffer_type, get_buffer, release_buffer, byref = _buffer_api()
    view = buffer_type()
    if get_buffer(exporter, byref(view), _PyBUF_FULL_RO) != 0:
        raise TypeError(f"a {type(exporter).__name__} object exports no buffer")
    try:
        return int(view.buf or 0)
    finally:
        release_buffer(byref(view))


def _contiguous_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    step = itemsize
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    return tuple(reversed(strides))


# ---------------------------------------------------------------- memoryview


def _window(
    exporter: Any,
    offset: int,
    fmt: str,
    itemsize: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
) -> Any:
    base: Any = memoryview(exporter)  # cast() is typed for literal formats only
    if not base.c_contiguous:
        raise ValueError("its exporter's memory is not contiguous")
    if base.format != "B" or base.ndim != 1:
        base = base.cast("B")
    count = 1
    for extent in shape:
        count *= extent
    if count == 0:
        empty = base[offset:offset]
        return empty if (fmt, shape) == ("B", (0,)) else empty.cast(fmt, shape)
    if strides == _contiguous_strides(shape, itemsize):
        window = base[offset : offset + count * itemsize]
        return window if (fmt, shape) == ("B", (count,)) else window.cast(fmt, shape)
    if len(shape) == 1 and strides[0] % itemsize == 0:
        (stride,), (length,) = strides, shape
        low = offset + min(0, (length - 1) * stride)
        high = offset + max(0, (length - 1) * stride) + itemsize
        items = base[low:high] if fmt == "B" else base[low:high].cast(fmt)
        return items[:: stride // itemsize]
    raise ValueError("it is a strided view with more than one dimension")


def rebuild_memoryview(
    exporter: Any,
    offset: int,
    fmt: str,
    itemsize: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    readonly: bool,
) -> memoryview:
    """A memoryview over the restored ``exporter``, looking where the saved one looked."""
    if exporter is None:  # a released view
        released = memoryview(b"")
        released.release()
        return released
    try:
        view: memoryview = _window(exporter, offset, fmt, itemsize, shape, strides)
    except (TypeError, ValueError) as exc:
        raise SnapshotCorruptError(
            f"a saved memoryview cannot be rebuilt over its {type(exporter).__name__}: {exc}"
        ) from None
    if readonly and not view.readonly:
        view = view.toreadonly()
    return view


def _memoryview_args(view: memoryview) -> tuple[Any, ...]:
    try:
        exporter = view.obj
    except ValueError:  # released
        return (None, 0, "B", 1, (), (), True)
    shape = tuple(view.shape or ())
    strides = tuple(view.strides or ())
    offset = _address(view) - _address(exporter)
    args = (exporter, offset, view.format, view.itemsize, shape, strides, view.readonly)
    what = f"a memoryview over a {type(exporter).__name__} (format {view.format!r}, shape {shape})"
    try:
        again = rebuild_memoryview(*args)
    except SnapshotCorruptError as exc:
        raise NotCheckpointableError(
            f"{what} cannot be saved: {str(exc).rsplit(': ', 1)[-1]}; keep the exporter "
            "in the local instead and make the view again after the yield"
        ) from None
    same = (
        _address(again) == _address(view)
        and again.format == view.format
        and tuple(again.shape or ()) == shape
        and tuple(again.strides or ()) == strides
        and again.readonly == view.readonly
    )
    again.release()
    if not same:
        raise NotCheckpointableError(
            f"{what} cannot be saved exactly; keep the exporter in the local instead and "
            "make the view again after the yield"
        )
    return args


def reduce_memoryview(view: memoryview) -> tuple[Any, ...]:
    """Pickle a memoryview as its exporter (pickled with the snapshot) + where it looks."""
    return (rebuild_memoryview, _memoryview_args(view))


def _deepcopy_memoryview(view: memoryview, memo: dict[int, Any]) -> memoryview:
    exporter, *where = _memoryview_args(view)
    return rebuild_memoryview(copy.deepcopy(exporter, memo), *where)


# ---------------------------------------------------------------- numpy views


def is_ndarray_view(obj: Any) -> bool:
    """A numpy array that looks into another object (numpy is never imported here)."""
    kind = type(obj)
    return kind.__name__ == "ndarray" and kind.__module__ == "numpy" and obj.base is not None


def rebuild_ndarray(
    base: Any, offset: int, shape: tuple[int, ...], dtype: Any, strides: Any, writeable: bool
) -> Any:
    """A numpy array over the restored ``base``, as the saved view was."""
    numpy: Any = importlib.import_module("numpy")
    array = numpy.ndarray(shape, dtype, buffer=base, offset=offset, strides=strides)
    if not writeable:
        array.flags.writeable = False
    return array


def _ndarray_args(array: Any) -> tuple[Any, ...]:
    base = array.base
    what = f"a numpy view (shape {array.shape}) of a {type(base).__name__}"
    try:
        offset = array.__array_interface__["data"][0] - _address(base)
        args = (base, offset, array.shape, array.dtype, array.strides, bool(array.flags.writeable))
        again = rebuild_ndarray(*args)
    except (TypeError, ValueError, BufferError) as exc:
        raise NotCheckpointableError(
            f"{what} cannot be saved as a view of it ({type(exc).__name__}: {exc}); keep the "
            "base array in the local and make the view again after the yield"
        ) from None
    if again.__array_interface__ != array.__array_interface__:
        raise NotCheckpointableError(f"{what} cannot be saved exactly as a view of it")
    return args


def reduce_ndarray(array: Any) -> tuple[Any, ...]:
    """Pickle a numpy view as its base (pickled with the snapshot) + where it looks."""
    return (rebuild_ndarray, _ndarray_args(array))


def _deepcopy_ndarray(array: Any, memo: dict[int, Any]) -> Any:
    if not is_ndarray_view(array):
        return array.__deepcopy__(memo)
    base, *where = _ndarray_args(array)
    return rebuild_ndarray(copy.deepcopy(base, memo), *where)


def copy_numpy_views() -> None:
    """Once numpy is imported: ``deepcopy`` keeps a numpy view a view of its copied base."""
    numpy = sys.modules.get("numpy")
    ndarray = getattr(numpy, "ndarray", None)
    if isinstance(ndarray, type):
        copy._deepcopy_dispatch.setdefault(ndarray, _deepcopy_ndarray)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- dict and set iteration

_VIEWS: dict[str, Any] = {"keys": dict.keys, "values": dict.values, "items": dict.items}
#: each dict iterator type -> (view, reversed)
_DICT_ITERATORS: dict[type, tuple[str, bool]] = {
    type(make(_VIEWS[view]({}))): (view, backwards)
    for view in _VIEWS
    for backwards, make in ((False, iter), (True, reversed))
}
_DICT_VIEWS: dict[type, str] = {type(_VIEWS[view]({})): view for view in _VIEWS}
_SET_ITERATOR: type = type(iter(set[Any]()))


def _referents(obj: Any) -> list[Any]:
    found = gc.get_referents(obj)
    if found and found[0] is type(obj):  # a heap type (3.13) lists its type first
        found = found[1:]
    return found


def _iterate(mapping: dict[Any, Any], view: str, backwards: bool) -> Iterator[Any]:
    seen = _VIEWS[view](mapping)
    return reversed(seen) if backwards else iter(seen)


def rebuild_dict_iterator(mapping: Any, view: str, backwards: bool, position: int) -> Iterator[Any]:
    """An iterator over the restored ``mapping`` at ``position`` (-1: its size has changed).

    A position of -1 rebuilds an iterator that has seen its dict change size: its
    next step raises ``RuntimeError`` as the saved one's would have.
    """
    if mapping is None:  # exhausted
        finished = _iterate({}, view, backwards)
        next(finished, None)
        return finished
    if not isinstance(mapping, dict) or view not in _VIEWS:
        raise SnapshotCorruptError("a saved dict iterator does not name a dict")
    if position < 0:
        marker = object()
        dict.__setitem__(mapping, marker, None)
        iterator = _iterate(mapping, view, backwards)
        dict.__delitem__(mapping, marker)
        return iterator
    iterator = _iterate(mapping, view, backwards)
    for _ in range(position):
        next(iterator)
    return iterator


def _same_items(left: list[Any], right: list[Any]) -> bool:
    def parts(item: Any) -> tuple[Any, ...]:
        return item if type(item) is tuple else (item,)

    return len(left) == len(right) and all(
        len(parts(a)) == len(parts(b)) and all(x is y for x, y in zip(parts(a), parts(b)))
        for a, b in zip(left, right)
    )


def _dict_iterator_args(iterator: Any) -> tuple[Any, ...]:
    view, backwards = _DICT_ITERATORS[type(iterator)]
    mapping = next((ref for ref in _referents(iterator) if isinstance(ref, dict)), None)
    if mapping is None:
        return (None, view, backwards, 0)
    try:
        remaining = list(iterator.__reduce__()[1][0])
    except RuntimeError as exc:
        if "changed size" in str(exc):  # the next step raises that
            return (mapping, view, backwards, -1)
    else:
        position = len(mapping) - len(remaining)
        if iterator.__length_hint__() == len(remaining) and position >= 0:
            again = rebuild_dict_iterator(mapping, view, backwards, position)
            if _same_items(list(again), remaining):
                return (mapping, view, backwards, position)
    raise ResourceRefused(
        type(iterator),
        f"an iterator over a dict's {view} whose keys were changed while it iterated (its "
        "next step raises RuntimeError), which cannot be rebuilt",
        "finish or drop the loop before the yield",
    )


def reduce_dict_iterator(iterator: Any) -> tuple[Any, ...]:
    """Pickle a dict iterator as its dict (pickled with the snapshot) + its position."""
    return (rebuild_dict_iterator, _dict_iterator_args(iterator))


def _deepcopy_dict_iterator(iterator: Any, memo: dict[int, Any]) -> Any:
    mapping, *where = _dict_iterator_args(iterator)
    return rebuild_dict_iterator(copy.deepcopy(mapping, memo), *where)


def rebuild_dict_view(mapping: Any, view: str) -> Any:
    """``keys()``, ``values()`` or ``items()`` of the restored dict: a live view again."""
    if not isinstance(mapping, dict) or view not in _VIEWS:
        raise SnapshotCorruptError("a saved dict view does not name a dict")
    return _VIEWS[view](mapping)


def _dict_view_args(seen: Any) -> tuple[Any, str]:
    view = _DICT_VIEWS[type(seen)]
    mapping = next(ref for ref in _referents(seen) if isinstance(ref, dict))
    return (mapping, view)


def reduce_dict_view(seen: Any) -> tuple[Any, ...]:
    """Pickle a dict view as its dict (pickled with the snapshot): it stays live."""
    return (rebuild_dict_view, _dict_view_args(seen))


def _deepcopy_dict_view(seen: Any, memo: dict[int, Any]) -> Any:
    mapping, view = _dict_view_args(seen)
    return rebuild_dict_view(copy.deepcopy(mapping, memo), view)


class SetIteration:
    """The rest of a set's iteration, when the restored set does not iterate in the same
    order: the saved remaining items, with the set's "changed size" check."""

    __slots__ = ("remaining", "size", "target")

    def __init__(self, target: Any, remaining: list[Any], size: int) -> None:
        self.target = target
        self.remaining = remaining
        self.size = size

    def __iter__(self) -> SetIteration:
        return self

    def __next__(self) -> Any:
        if self.target is None or not self.remaining:
            self.target = None
            raise StopIteration
        if self.size != len(self.target):
            self.size = -1  # sticky, as CPython's
            raise RuntimeError("Set changed size during iteration")
        return self.remaining.pop(0)

    def __length_hint__(self) -> int:
        return len(self.remaining) if self.target is not None else 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (SetIteration, (self.target, self.remaining, self.size))


def rebuild_set_iterator(target: Any, remaining: list[Any] | None) -> Any:
    """An iterator over the restored set yielding ``remaining`` (None: its size changed)."""
    if target is None:
        finished = iter(set[Any]())
        next(finished, None)
        return finished
    if not isinstance(target, (set, frozenset)):
        raise SnapshotCorruptError("a saved set iterator does not name a set")
    if remaining is None:
        return SetIteration(target, [None], -1)
    iterator = iter(target)
    order = list(target)
    skip = len(order) - len(remaining)
    if skip >= 0 and all(a is b for a, b in zip(order[skip:], remaining)):
        for _ in range(skip):
            next(iterator)
        return iterator
    return SetIteration(target, list(remaining), len(target))


def _set_iterator_args(iterator: Any) -> tuple[Any, ...]:
    target = next((ref for ref in _referents(iterator) if isinstance(ref, (set, frozenset))), None)
    if target is None:
        return (None, None)
    try:
        remaining = list(iterator.__reduce__()[1][0])
    except RuntimeError:
        return (target, None)
    return (target, remaining)


def reduce_set_iterator(iterator: Any) -> tuple[Any, ...]:
    """Pickle a set iterator as its set (pickled with the snapshot) + what it has left."""
    return (rebuild_set_iterator, _set_iterator_args(iterator))


def _deepcopy_set_iterator(iterator: Any, memo: dict[int, Any]) -> Any:
    target, remaining = _set_iterator_args(iterator)
    return rebuild_set_iterator(copy.deepcopy(target, memo), copy.deepcopy(remaining, memo))


# ---------------------------------------------------------------- itertools.groupby

_GROUPBY: Any = itertools.groupby


def rebuild_groupby(source: Any, key: Any, state: tuple[Any, ...]) -> Any:
    """A ``groupby`` over the restored iterator, in the saved state (no user code runs)."""
    grouping: Any = _GROUPBY(source, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: pickle support goes
        if len(state) == 3:  # (current key, current value, key of the current group)
            grouping.__setstate__(state)
        elif len(state) == 1:  # in a group whose current value was taken
            (target,) = state
            # take a stand-in value through a throwaway group: the keys compare by
            # identity, so no __eq__ runs; the same state is left as the saved one
            grouping.__setstate__((target, None, target))
            next(_GROUPER(grouping, target))
        elif state:
            raise SnapshotCorruptError("a saved itertools.groupby has a malformed state")
    return grouping


def _groupby_args(grouping: Any) -> tuple[Any, ...]:
    source, key, *state = _referents(grouping)
    if len(state) == 2:
        raise NotCheckpointableError(
            "an itertools.groupby stopped inside a step (its key function raised) cannot be "
            "saved; drop it before the yield"
        )
    if len(state) == 3:
        target, current_key, current_value = state
        return (source, key, (current_key, current_value, target))
    return (source, key, tuple(state))


def reduce_groupby(grouping: Any) -> tuple[Any, ...]:
    """Pickle a groupby with all of its state (plain pickle drops the group key at times)."""
    return (rebuild_groupby, _groupby_args(grouping))


def _deepcopy_groupby(grouping: Any, memo: dict[int, Any]) -> Any:
    return rebuild_groupby(*copy.deepcopy(_groupby_args(grouping), memo))


_GROUPER: Any = type(next(_GROUPBY([0]))[1])


def reduce_grouper(group: Any) -> Any:
    """A group of a groupby: CPython's own reduce (live if current), without 3.12's warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return group.__reduce__()


def _deepcopy_grouper(group: Any, memo: dict[int, Any]) -> Any:
    make, args = reduce_grouper(group)[:2]
    return make(*copy.deepcopy(args, memo))


# ---------------------------------------------------------------- itertools on 3.12, 3.13


def reduce_itertool(obj: Any) -> Any:
    """An itertools object by CPython's own reduce, without the DeprecationWarning 3.12
    and 3.13 give (pickle support goes in 3.14): a loop over ``itertools.count()``
    then snapshots silently, and under ``-W error`` at all. Its state is set back by
    `set_itertool_state`, silent too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reduced = obj.__reduce__()
    if len(reduced) < 3 or reduced[2] is None:
        return reduced
    return (reduced[0], reduced[1], reduced[2], None, None, set_itertool_state)


def set_itertool_state(obj: Any, state: Any) -> None:
    """``obj.__setstate__(state)`` without 3.12's DeprecationWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        obj.__setstate__(state)


#: the itertools types whose pickling warns (3.12, 3.13); groupby has its own reducer
_WARNING_ITERTOOLS: tuple[type, ...] = (
    tuple(
        getattr(itertools, name)
        for name in (
            "accumulate",
            "chain",
            "combinations",
            "combinations_with_replacement",
            "compress",
            "count",
            "cycle",
            "dropwhile",
            "filterfalse",
            "islice",
            "permutations",
            "product",
            "repeat",
            "starmap",
            "takewhile",
            "zip_longest",
            "_tee",
            "_tee_dataobject",
        )
    )
    if sys.version_info >= (3, 12)
    else ()
)

#: the reducer of each type this module saves as a view (the snapshot pickler asks first;
#: nothing is registered with copyreg or copy: pickle and deepcopy of these objects outside
#: a snapshot behave as without contsnap, and a generator holding one is saved by the
#: snapshot pickler, see _snapshot._reduce_generator)
REDUCERS: dict[type, Any] = {
    memoryview: reduce_memoryview,
    **dict.fromkeys(_DICT_ITERATORS, reduce_dict_iterator),
    **dict.fromkeys(_DICT_VIEWS, reduce_dict_view),
    _SET_ITERATOR: reduce_set_iterator,
    _GROUPBY: reduce_groupby,
    _GROUPER: reduce_grouper,
    **dict.fromkeys(_WARNING_ITERTOOLS, reduce_itertool),
}
