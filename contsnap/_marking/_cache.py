"""The import hook's on-disk cache: one file per hooked module in its ``__pycache__``.

A cache file holds what is expensive to rebuild for one source file: the
module's code (with the hook's marks compiled in) and, per transformed
function, the fields of its `contsnap._info.FunctionInfo` or the reason
the transform refused it. It has three sections, each plain data for
`marshal` behind its own CRC-32 checksum, so a damaged file is noticed
before any code object in it is built (a file still bearing the mtime it was
written with has not been written to since: see `_replace`, the first
section's checksum is then skipped). An import reads the first: the key, the
module's code (which makes most marked functions with their fresh code
already) and the list of functions it makes so. The second (each function's
FunctionInfo fields, or its refusal) is read when a function needs its info
built: a mark call, a snapshot, ``checkpointable(fn)``. The third (resume
variants, labels, generated source) is read when a snapshot or a restore
first asks for it: most imports read neither. The checksums of the later
sections are part of the first, so a file replaced meanwhile by another
process is noticed (and the function transformed again) instead of mixing two
files.

The format is private. A file is used only when its key matches exactly: the
format number, contsnap's version, a stamp of contsnap's own source files (so
an editable install that changes the transform never reuses stale output),
the interpreter's bytecode magic and optimisation level, the hook mode and the
hash of the module's source. Anything else (missing, stale, truncated,
corrupt, written by another version) reads as "no cache": it is rebuilt and
overwritten, never an error. Files are written to a temporary name and
renamed with `os.replace`, so concurrent writers and readers only ever
see whole files; the last writer wins.

The source's hash is what a file is keyed by, but a warm import need not read
the source to know it: the file also records the source's size, mtime and
ctime when the hashed bytes were read, and when that was. If the source had
then not changed for `TRUST_MARGIN_NS` and all three are the same now,
its bytes are those hashed (any write or ``os.utime`` since would have given
it a newer ctime), and the import reads nothing but the cache file.
Otherwise the source is read and hashed as before; a match with a stamp too
young to vouch is stamped anew once the source is old enough, so the next
import takes the short way.
"""

from __future__ import annotations

import marshal
import os
import stat
import struct
import sys
import tempfile
import time
import types
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from .. import _info
from .._info import Details, FunctionInfo
from ._cache_key import NO_STAMP, Stamp, _key_difference
from ._marking import PendingDetails

_MAGIC = b"contsnap-cache\n"
_DIGEST_SIZE = 4
#: After the magic number and the checksum: the first section's size, the mtime (ns) the
#: file was given when written, and the source's stamp (see Stamp).
_META = struct.Struct("<IqQqqQ")
_HEAD = len(_MAGIC) + _DIGEST_SIZE + _META.size

#: A function's key inside its module's file: qualname, first line, code name.
FunctionKey = tuple[str, int, str]


class Uncacheable(Exception):
    """A value that the cache format cannot hold (the function is then simply not cached)."""


def _checksum(body: bytes, start: bytes = b"") -> bytes:
    """Catches truncated and damaged files (not tampering: __pycache__ is trusted like .pyc).

    Of ``start + body``, without joining them."""
    return zlib.crc32(body, zlib.crc32(start)).to_bytes(4, "little")


#: Where a section of a file not read yet is: (path, offset, size or -1 for "to the end",
#: checksum).
Section = tuple[str, int, int, bytes]


class Entry:
    """What one cache file holds.

    ``functions`` and ``details`` are the file's second and third sections: they
    are read when first needed. An import that makes every function with its
    fresh code (see ``_prebuilt.prebuilt``) reads neither.
    """

    def __init__(
        self,
        module_code: types.CodeType | None = None,
        functions: dict[FunctionKey, tuple[str, Any]] | None = None,
        notes: tuple[str, ...] = (),
        details: dict[FunctionKey, Any] | None = None,
        prebuilt: tuple[tuple[FunctionKey, types.CodeType], ...] = (),
        *,
        prebuilt_codes: tuple[types.CodeType, ...] = (),
        key: tuple[Any, ...] | None = None,
        stamp: Stamp | None = None,
        digest: bytes | None = None,
        sections: tuple[Section, Section] | None = None,
    ) -> None:
        self.module_code = module_code
        self._functions = functions if functions is not None else {}
        #: warnings the hook issues each time the module is loaded
        self.notes = notes
        #: per function: its encoded Details (labels, resume code, source), once decoded
        self.details = details if details is not None else {}
        self._prebuilt = prebuilt
        #: as read from the file: the codes of `prebuilt`, whose keys are found when needed
        self._prebuilt_codes = prebuilt_codes
        #: as read from the file: its whole key, its source stamp and its first section's digest
        self.key = key
        self.stamp = stamp or NO_STAMP
        self.digest = digest
        pending: tuple[Section | None, Section | None] = sections or (None, None)
        self._pending_functions, self._pending_details = pending

    @property
    def prebuilt(self) -> tuple[tuple[FunctionKey, types.CodeType], ...]:
        """The functions whose fresh code module_code holds, with no mark call: (key, code).

        The file stores the codes only (references to those in the module code): their
        keys are found in the module code when first asked for, not on every import.
        """
        if self._prebuilt_codes:
            codes, self._prebuilt_codes = self._prebuilt_codes, ()
            if self.module_code is not None:
                self._prebuilt = _keyed(self.module_code, {id(code) for code in codes})
        return self._prebuilt

    @prebuilt.setter
    def prebuilt(self, value: tuple[tuple[FunctionKey, types.CodeType], ...]) -> None:
        self._prebuilt, self._prebuilt_codes = value, ()

    def has_prebuilt(self) -> bool:
        """Does the module code make any function with its fresh code? (Nothing looked up.)"""
        return bool(self._prebuilt_codes or self._prebuilt)

    @property
    def functions(self) -> dict[FunctionKey, tuple[str, Any]]:
        """Per function: ("ok", encoded FunctionInfo fields) or ("refused", message)."""
        if self._pending_functions is not None:
            section, self._pending_functions = self._pending_functions, None
            stored = _read_section(section)
            if isinstance(stored, dict):
                fresh = dict(self.prebuilt)
                for key, value in stored.items():
                    value = _with_fresh_code(value, fresh.get(key))
                    if value is not None:
                        self._functions.setdefault(key, value)
        return self._functions

    def details_of(self, key: FunctionKey) -> Any:
        """The encoded Details stored for ``key`` (None: not stored, or damaged)."""
        if key not in self.details:
            self._decode()
        return self.details.get(key)

    def _decode(self) -> None:
        """Read whatever is still on disk only."""
        self.functions  # noqa: B018  # read on access
        if self._pending_details is None:
            return
        section, self._pending_details = self._pending_details, None
        stored = _read_section(section)
        if isinstance(stored, dict):
            for key, value in stored.items():
                self.details.setdefault(key, value)


class Prebuilt(Sequence[tuple[FunctionKey, types.CodeType]]):
    """An entry's ``prebuilt``, looked up only when first read (an import only hands it on)."""

    def __init__(self, entry: Entry) -> None:
        self._entry = entry

    def __getitem__(self, at: Any) -> Any:
        return self._entry.prebuilt[at]

    def __len__(self) -> int:
        return len(self._entry.prebuilt)


def _keyed(
    code: types.CodeType, wanted: set[int], prefix: str = ""
) -> tuple[tuple[FunctionKey, types.CodeType], ...]:
    """The functions of module or class bodies in ``code`` whose code is one of ``wanted``
    (ids), with their keys: qualname, first line, name (see ``_prebuilt.prebuilt``)."""
    found: list[tuple[FunctionKey, types.CodeType]] = []
    for const in code.co_consts:
        if not isinstance(const, types.CodeType) or const.co_name.startswith("<"):
            continue
        qualname = prefix + const.co_name
        if not const.co_flags & _CO_NEWLOCALS:  # a class body
            found += _keyed(const, wanted, qualname + ".")
        elif id(const) in wanted:
            found.append(((qualname, const.co_firstlineno, const.co_name), const))
    return tuple(found)


_CO_NEWLOCALS = 0x02  # inspect.CO_NEWLOCALS, without importing inspect


def _read_section(section: Section) -> Any:
    """A later section's data; None if unreadable, damaged, or the file was replaced since
    its first section was read (the checksum is part of the first section)."""
    path, offset, size, digest = section
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            body = f.read(size)
    except OSError:
        return None
    if (size >= 0 and len(body) != size) or _checksum(body) != digest:
        return None
    try:
        return marshal.loads(body)
    except Exception:
        return None


def _fresh_code_index() -> int:
    return INFO_FIELDS.index("fresh_code")


def _with_fresh_code(value: Any, code: types.CodeType | None) -> tuple[str, Any] | None:
    """A stored function as the second section holds it, with the fresh code that the
    module code holds put back in (written as None: the module code has it)."""
    try:
        kind, data = value
        if kind != "ok" or data[_fresh_code_index()] is not None:
            return (kind, data)
    except Exception:  # damaged in a way the checksum missed: transformed again
        return None
    return None if code is None else with_fresh_code(value, code)


def with_fresh_code(value: tuple[str, Any], code: types.CodeType | None) -> tuple[str, Any]:
    """A stored ("ok", fields) with another fresh code (an equal one: see _hook; None:
    the module code holds it)."""
    kind, data = value
    at = _fresh_code_index()
    return (kind, (*data[:at], code, *data[at + 1 :]))


def _without_fresh_code(
    functions: dict[FunctionKey, tuple[str, Any]],
    prebuilt: tuple[tuple[FunctionKey, types.CodeType], ...],
) -> dict[FunctionKey, tuple[str, Any]]:
    """``functions`` as the second section stores them: a prebuilt function's fresh code
    is the module code's, stored once there."""
    fresh = dict(prebuilt)
    at = _fresh_code_index()
    out = {}
    for key, value in functions.items():
        code = fresh.get(key)
        kind, data = value
        out[key] = (
            with_fresh_code(value, None)
            if kind == "ok" and code is not None and data[at] is code
            else value
        )
    return out


def read(
    path: str | None, key: tuple[Any, ...], source: os.stat_result | None = None
) -> Entry | None:
    """The entry stored at ``path`` for ``key``; None when missing, stale or damaged.

    A ``key`` whose source hash is None (the source was not read) matches only a
    file whose stamp vouches that the source, now ``os.stat`` gives ``source``,
    holds the bytes the stored hash was taken of.
    """
    if path is None:
        return None
    try:
        # no buffered file object; a FIFO in its place must not block the import
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        return _miss(path, f"no cache file ({exc.strerror})")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _miss(path, "not a regular file")
        start = os.read(fd, _HEAD)
        head = _parse_head(start)
        if head is None:
            return _miss(path, "not a cache file of this format")
        digest, size, pinned, stamp = head
        if key[-1] is None and (source is None or not stamp.vouches_for(source)):
            _trace(f"{path}: the source is too young for its stamp to vouch for it: hashing it")
            return None
        if size > st.st_size - _HEAD:  # a damaged size: never allocate what is not there
            return _miss(path, "damaged (its size field is past the end)")
        # untouched since written (see _replace): the checksum can only agree
        untouched = st.st_mtime_ns == pinned
        body = _read_exactly(fd, size)
    except OSError as exc:
        return _miss(path, f"unreadable ({exc.strerror})")
    finally:
        os.close(fd)
    if len(body) != size or (not untouched and _checksum(body, start[-_META.size :]) != digest):
        return _miss(path, "damaged (checksum)")
    try:
        stored_key, module_code, notes, prebuilt, (functions_size, functions_digest), later = (
            marshal.loads(body)
        )
    except Exception:  # a file from another format that happens to digest right
        return _miss(path, "not a cache file of this format")
    if stored_key != key and (key[-1] is not None or stored_key[:-1] != key[:-1]):
        return _miss(path, _key_difference(stored_key, key))
    if not (
        (module_code is None or isinstance(module_code, types.CodeType))
        and isinstance(notes, tuple)
        and isinstance(prebuilt, tuple)  # of codes: anything else matches no function
        and isinstance(functions_size, int)
        and isinstance(functions_digest, bytes)
        and isinstance(later, bytes)
    ):
        return _miss(path, "malformed contents")
    offset = _HEAD + size
    return Entry(
        module_code,
        notes=notes,
        prebuilt_codes=prebuilt,
        key=stored_key,
        stamp=stamp,
        digest=digest,
        sections=(
            (path, offset, functions_size, functions_digest),
            (path, offset + functions_size, -1, later),
        ),
    )


#: how read() opens a file (O_BINARY: Windows; a missing flag looked up per import costs an
#: AttributeError)
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)


def _miss(path: str, reason: str) -> Entry | None:
    """No entry: a cache miss, said on stderr when ``CONTSNAP_TRACE`` is set."""
    _trace(f"miss {path}: {reason}")
    return None


def _trace(what: str) -> None:
    """What the cache did, on stderr when ``CONTSNAP_TRACE`` is set (as PYTEST_DEBUG does)."""
    if os.environ.get("CONTSNAP_TRACE"):
        sys.stderr.write(f"contsnap: cache {what}\n")


def _read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd`` (fewer only at the end of the file)."""
    data = os.read(fd, size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.read(fd, size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def write(
    path: str | None, key: tuple[Any, ...], entry: Entry, mode_of: str, stamp: Stamp | None = None
) -> bool:
    """Store ``entry`` atomically; False (and nothing written) when that is not possible.

    ``mode_of`` is the source file whose permission bits the cache file takes;
    ``stamp`` says what it looked like when the bytes hashed into ``key`` were read.
    """
    if path is None or sys.dont_write_bytecode:
        return False
    entry._decode()
    try:
        functions = marshal.dumps(_without_fresh_code(entry.functions, entry.prebuilt))
        later = marshal.dumps(entry.details)
        body = marshal.dumps(
            (
                key,
                entry.module_code,
                entry.notes,
                tuple(code for _, code in entry.prebuilt),
                (len(functions), _checksum(functions)),
                _checksum(later),
            )
        )
    except ValueError:  # an unmarshallable value slipped in: better no cache than a bad one
        return False
    pinned = _pinned_mtime()
    blob = _head(stamp or Stamp(), body, pinned) + body + functions + later
    return _replace(path, blob, mode_of, pinned)


def _parse_head(start: bytes) -> tuple[bytes, int, int, Stamp] | None:
    """A file's first ``_HEAD`` bytes as (checksum, first section's size, pinned mtime,
    source stamp); None if they are not a cache file's."""
    if len(start) < _HEAD or not start.startswith(_MAGIC):
        return None
    size, pinned, *fields = _META.unpack_from(start, _HEAD - _META.size)
    return start[len(_MAGIC) : len(_MAGIC) + _DIGEST_SIZE], size, pinned, Stamp(*fields)


def _pinned_mtime() -> int:
    """The mtime a cache file is given when written: whole even seconds (exact on any file
    system), in the past, so that no later write of the file can give it that mtime."""
    return (time.time_ns() // 2_000_000_000 - 2) * 2_000_000_000


def _head(stamp: Stamp, body: bytes, pinned: int) -> bytes:
    try:
        meta = _META.pack(len(body), pinned, *stamp._state(), stamp.read_ns)
    except struct.error:  # a clock or a size out of range: an unknown stamp
        meta = _META.pack(len(body), pinned, 0, 0, 0, 0)
    return _MAGIC + _checksum(body, meta) + meta


def restamp(path: str | None, entry: Entry, stamp: Stamp, mode_of: str) -> bool:
    """Give the file ``entry`` was read from a new source stamp (the rest byte for byte).

    Nothing is written if the file changed since it was read.
    """
    if path is None or sys.dont_write_bytecode or entry.digest is None:
        return False
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        return False
    head = _parse_head(blob[:_HEAD])
    if head is None:
        return False
    digest, size = head[:2]
    body = blob[_HEAD : _HEAD + size]
    if digest != entry.digest or _checksum(body, blob[_HEAD - _META.size : _HEAD]) != digest:
        return False
    pinned = _pinned_mtime()
    return _replace(path, _head(stamp, body, pinned) + blob[_HEAD:], mode_of, pinned)


def _replace(path: str, blob: bytes, mode_of: str, pinned: int) -> bool:
    """Write ``blob`` to ``path`` through a temporary file and a rename.

    The file is given the mtime ``pinned`` that its header records: while it
    still has it, nothing has written to it since, and a read skips the first
    section's checksum. Any write (a damaged or truncated copy) gives it the
    current time, and the checksum is checked.
    """
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
        try:
            os.utime(tmp, ns=(pinned, pinned))
        except OSError:  # then the checksum is checked on every read
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


#: The FunctionInfo fields a cache entry stores, and LabelInfo's (both part of the key):
#: the record of :mod:`contsnap._info`, which a by-value snapshot stores too.
INFO_FIELDS, LABEL_FIELDS = _info.RECORD_FIELDS, _info.LABEL_FIELDS


def encode_info(info: FunctionInfo) -> tuple[tuple[str, Any], Any]:
    """A FunctionInfo as cache data: the first section's part and the second's.

    Raises Uncacheable for values marshal cannot hold.
    """
    encoded = _info.encode_record(info)
    pending = info.details
    if isinstance(pending, PendingDetails):  # the resume variant's source, not compiled yet
        r = pending.resume
        source = ("source", r.text, r.line_map, r.filename, r.prefixes, r.qualname, r.name)
        details: Any = (_info.encode_labels(pending.labels), source, pending.source)
    else:
        details = (_info.encode_labels(info.labels), info.resume_code, info.source)
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
        if isinstance(resume_code, tuple) and resume_code[:1] == ("source",):
            # first need: compiled now (contsnap._compile is imported then, not by an import)
            from .._compile import ResumeSource

            resume_code = ResumeSource(*resume_code[1:]).compile()
        if not (isinstance(resume_code, types.CodeType) and isinstance(source, str)):
            return None
        return Details(_info.decode_labels(labels), resume_code, source)
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
        if kind != "ok":
            return None
        return _info.decode_record(
            data,
            fn.__module__ or "",
            fn.__qualname__,
            fn.__name__,
            fn.__code__.co_filename,
            fn.__globals__,
            details,
        )
    except Exception:  # damaged in a way the checksum missed: rebuild instead
        return None
