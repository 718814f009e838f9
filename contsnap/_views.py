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
import copyreg
import ctypes
import importlib
from typing import Any

from ._errors import NotCheckpointableError, SnapshotCorruptError

__all__ = ["rebuild_memoryview", "rebuild_ndarray", "reduce_memoryview", "reduce_ndarray"]


class _PyBuffer(ctypes.Structure):
    """``Py_buffer`` (stable ABI): read for the address a buffer starts at."""

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


_PyBUF_FULL_RO = 0x100 | 0x10 | 0x08 | 0x04  # INDIRECT | STRIDES | ND | FORMAT
_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = (ctypes.POINTER(_PyBuffer),)
_release_buffer.restype = None


def _address(exporter: Any) -> int:
    """Where the first item of ``exporter``'s buffer is in memory (read only)."""
    view = _PyBuffer()
    if _get_buffer(exporter, ctypes.byref(view), _PyBUF_FULL_RO) != 0:
        raise TypeError(f"a {type(exporter).__name__} object exports no buffer")
    try:
        return int(view.buf or 0)
    finally:
        _release_buffer(ctypes.byref(view))


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


copy._deepcopy_dispatch[memoryview] = _deepcopy_memoryview  # type: ignore[attr-defined]
copyreg.pickle(memoryview, reduce_memoryview)  # plain pickle of a snapshot too
