"""The import hook's on-disk cache: one file per hooked module in its ``__pycache__``.

A cache file holds what is expensive to rebuild for one source file: the
module's code (with the hook's marks compiled in) and, per transformed
function, the fields of its :class:`~contsnap._info.FunctionInfo` or the reason
the transform refused it. It has two sections, each plain data for
:mod:`marshal` behind its own Adler-32 checksum, so a damaged file is noticed
before any code object in it is built. An import reads the first: the key, the
module's code and what a call of each function needs (its fresh code). The
second (resume variants, labels, generated source) is read and unmarshalled
when a snapshot or a restore first asks for it: most imports never do. Its
checksum is part of the first section, so a file replaced meanwhile by another
process is noticed (and the function transformed again) instead of mixing two
files.

The format is private. A file is used only when its key matches exactly: the
format number, contsnap's version, a stamp of contsnap's own source files (so
an editable install that changes the transform never reuses stale output),
the interpreter's bytecode magic and optimisation level, the hook mode and the
hash of the module's source. Anything else (missing, stale, truncated,
corrupt, written by another version) reads as "no cache": it is rebuilt and
overwritten, never an error. Files are written to a temporary name and
renamed with :func:`os.replace`, so concurrent writers and readers only ever
see whole files; the last writer wins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import marshal
import os
import sys
import tempfile
import types
import zlib
from collections.abc import Callable
from typing import Any

from ._info import Details, FunctionInfo
from ._labels import LabelInfo
from ._version import __version__

FORMAT = 4
_MAGIC = b"contsnap-cache\n"
_DIGEST_SIZE = 4
#: FunctionInfo fields taken from the live function or loaded later, not from the first section.
_LIVE_FIELDS = frozenset({"module", "qualname", "name", "filename", "globals", "details"})

#: A function's key inside its module's file: qualname, first line, code name.
FunctionKey = tuple[str, int, str]


class Uncacheable(Exception):
    """A value that the cache format cannot hold (the function is then simply not cached)."""


def _checksum(body: bytes) -> bytes:
    """Catches truncated and damaged files (not tampering: __pycache__ is trusted like .pyc)."""
    return zlib.adler32(body).to_bytes(4, "little")


def source_hash(data: bytes) -> str:
    """The hash hash-based ``.pyc`` files use (SipHash, in C: 5x faster than blake2b)."""
    return importlib.util.source_hash(data).hex()


_stamp: str | None = None


def contsnap_stamp() -> str:
    """For a source checkout or editable install: changes whenever a contsnap file changes.

    A release changes the version, which is in the key anyway; an installed copy
    (under site-packages) is not stat'ed at all. A checkout's files are, so that
    a changed transform never reuses output of the old one.
    """
    global _stamp
    if _stamp is None:
        root = os.path.dirname(os.path.abspath(__file__))
        parts = []
        if os.path.basename(os.path.dirname(root)) not in ("site-packages", "dist-packages"):
            for folder in (root, os.path.join(root, "_transform")):
                try:
                    with os.scandir(folder) as entries:
                        for entry in entries:
                            if entry.name.endswith(".py"):
                                st = entry.stat()
                                parts.append(f"{entry.path}:{st.st_size}:{st.st_mtime_ns}")
                except OSError:
                    parts.append(f"{folder}:-")
        parts.sort()
        _stamp = hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()
    return _stamp


def cache_key(data: bytes, mode: str) -> tuple[Any, ...]:
    return (
        FORMAT,
        __version__,
        contsnap_stamp(),
        INFO_FIELDS,
        LABEL_FIELDS,
        importlib.util.MAGIC_NUMBER,
        sys.flags.optimize,
        mode,
        source_hash(data),
    )


def cache_path(source_path: str, mode: str) -> str | None:
    """``__pycache__/name.cpython-3XY.contsnap-VERSION[-mode].cache`` (None: no cache here)."""
    try:
        pyc = importlib.util.cache_from_source(source_path)
    except (NotImplementedError, ValueError):
        return None
    base = pyc[: -len(".pyc")] if pyc.endswith(".pyc") else pyc
    suffix = f"-{mode}" if mode else ""
    return f"{base}.contsnap-{__version__}{suffix}.cache"


@dataclasses.dataclass
class Entry:
    """What one cache file holds."""

    module_code: types.CodeType | None = None
    #: per function: ("ok", encoded FunctionInfo fields) or ("refused", message)
    functions: dict[FunctionKey, tuple[str, Any]] = dataclasses.field(default_factory=dict)
    #: warnings the hook issues each time the module is loaded
    notes: tuple[str, ...] = ()
    #: per function: its encoded Details (labels, resume code, source), once decoded
    details: dict[FunctionKey, Any] = dataclasses.field(default_factory=dict)
    #: where the file's second section is, not read yet: (path, offset, checksum)
    pending: tuple[str, int, bytes] | None = None
    #: the functions whose fresh code module_code holds, with no mark call: (key, code)
    prebuilt: tuple[tuple[FunctionKey, types.CodeType], ...] = ()

    def details_of(self, key: FunctionKey) -> Any:
        """The encoded Details stored for ``key`` (None: not stored, or damaged)."""
        if key not in self.details and self.pending:
            self._decode()
        return self.details.get(key)

    def _decode(self) -> None:
        if self.pending is None:
            return
        (path, offset, digest), self.pending = self.pending, None
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                body = f.read()
        except OSError:
            return
        if _checksum(body) != digest:  # damaged, or replaced since the first section was read
            return
        try:
            stored = marshal.loads(body)
        except Exception:
            return
        if isinstance(stored, dict):
            for key, value in stored.items():
                self.details.setdefault(key, value)


def read(path: str | None, key: tuple[Any, ...]) -> Entry | None:
    """The entry stored at ``path`` for ``key``; None when missing, stale or damaged."""
    if path is None:
        return None
    head = len(_MAGIC) + _DIGEST_SIZE + 4
    try:
        with open(path, "rb") as f:
            start = f.read(head)
            if len(start) < head or not start.startswith(_MAGIC):
                return None
            size = int.from_bytes(start[head - 4 :], "little")
            body = f.read(size)
    except OSError:
        return None
    if len(body) != size or _checksum(body) != start[len(_MAGIC) : len(_MAGIC) + _DIGEST_SIZE]:
        return None
    try:
        stored_key, module_code, functions, notes, later_digest, prebuilt = marshal.loads(body)
    except Exception:  # a file from another format that happens to digest right
        return None
    if stored_key != key:
        return None
    if not (
        (module_code is None or isinstance(module_code, types.CodeType))
        and isinstance(functions, dict)
        and isinstance(notes, tuple)
        and isinstance(later_digest, bytes)
        and isinstance(prebuilt, tuple)
    ):
        return None
    return Entry(
        module_code, functions, notes, pending=(path, head + size, later_digest), prebuilt=prebuilt
    )


def write(path: str | None, key: tuple[Any, ...], entry: Entry, mode_of: str) -> bool:
    """Store ``entry`` atomically; False (and nothing written) when that is not possible.

    ``mode_of`` is the source file whose permission bits the cache file takes.
    """
    if path is None or sys.dont_write_bytecode:
        return False
    if entry.pending:
        entry._decode()
    try:
        later = marshal.dumps(entry.details)
        body = marshal.dumps(
            (key, entry.module_code, entry.functions, entry.notes, _checksum(later), entry.prebuilt)
        )
    except ValueError:  # an unmarshallable value slipped in: better no cache than a bad one
        return False
    blob = _MAGIC + _checksum(body) + len(body).to_bytes(4, "little") + body + later
    folder = os.path.dirname(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        try:
            os.chmod(tmp, os.stat(mode_of).st_mode & 0o666)
        except OSError:
            pass
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False
    return True


def _field_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The FunctionInfo fields a cache entry stores, and LabelInfo's (both part of the key)."""
    info = tuple(
        f.name for f in dataclasses.fields(FunctionInfo) if f.init and f.name not in _LIVE_FIELDS
    )
    return info, tuple(f.name for f in dataclasses.fields(LabelInfo))


INFO_FIELDS, LABEL_FIELDS = _field_names()


def encode_info(info: FunctionInfo) -> tuple[tuple[str, Any], Any]:
    """A FunctionInfo as cache data: the first section's part and the second's.

    Raises Uncacheable for values marshal cannot hold.
    """
    encoded = tuple(getattr(info, name) for name in INFO_FIELDS)
    labels = {k: tuple(getattr(v, f) for f in LABEL_FIELDS) for k, v in info.labels.items()}
    details = (labels, info.resume_code, info.source)
    try:
        marshal.dumps((encoded, details))
    except ValueError as exc:
        raise Uncacheable(str(exc)) from None
    return ("ok", encoded), details


def encode_refusal(message: str) -> tuple[str, Any]:
    return ("refused", message)


def decode_details(stored: Any) -> Details | None:
    """The Details stored by encode_info (None if unusable)."""
    try:
        labels, resume_code, source = stored
        if not (isinstance(resume_code, types.CodeType) and isinstance(source, str)):
            return None
        return Details({k: LabelInfo(*v) for k, v in labels.items()}, resume_code, source)
    except Exception:  # damaged in a way the checksum missed: rebuild instead
        return None


def stored_fresh_code(stored: tuple[str, Any] | None) -> types.CodeType | None:
    """The fresh code in what encode_info stored (None: a refusal, or not usable)."""
    try:
        kind, data = stored  # type: ignore[misc]
        if kind != "ok" or len(data) != len(INFO_FIELDS):
            return None
        code = data[INFO_FIELDS.index("fresh_code")]
    except Exception:
        return None
    return code if isinstance(code, types.CodeType) else None


def _positional_order() -> bool:
    """Do FunctionInfo's parameters run: live fields, INFO_FIELDS up to fresh_code,
    globals and details, the rest of INFO_FIELDS? Then decode_info passes them by position."""
    names = [f.name for f in dataclasses.fields(FunctionInfo) if f.init]
    cut = INFO_FIELDS.index("fresh_code") + 1 if "fresh_code" in INFO_FIELDS else 0
    expected = ["module", "qualname", "name", "filename", *INFO_FIELDS[:cut], "globals"]
    return cut > 0 and names == [*expected, "details", *INFO_FIELDS[cut:]]


_POSITIONAL = _positional_order()
_CUT = INFO_FIELDS.index("fresh_code") + 1 if _POSITIONAL else 0


def decode_info(
    stored: tuple[str, Any], fn: types.FunctionType, details: Callable[[], Details]
) -> FunctionInfo | str | None:
    """The cached FunctionInfo for ``fn``, the refusal message, or None if unusable.

    ``details`` loads the rest on first use.
    """
    try:
        kind, data = stored
        if kind == "refused" and isinstance(data, str):
            return data
        if kind != "ok" or len(data) != len(INFO_FIELDS):
            return None
        if _POSITIONAL:  # one call per marked function at every import: keep it cheap
            return FunctionInfo(  # type: ignore[call-arg]  # checked by _positional_order
                fn.__module__ or "",
                fn.__qualname__,
                fn.__name__,
                fn.__code__.co_filename,
                *data[:_CUT],
                fn.__globals__,
                details,
                *data[_CUT:],
            )
        return FunctionInfo(
            module=fn.__module__ or "",
            qualname=fn.__qualname__,
            name=fn.__name__,
            filename=fn.__code__.co_filename,
            globals=fn.__globals__,
            details=details,
            **dict(zip(INFO_FIELDS, data)),
        )
    except Exception:  # damaged in a way the checksum missed: rebuild instead
        return None
