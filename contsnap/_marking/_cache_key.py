"""The key of a hook cache file: what the file is valid for, and what a source looked like.

A file is used only when its key matches exactly: the format number, contsnap's version, a
stamp of contsnap's own source files (so an editable install that changes the transform
never reuses stale output), the record fields, the interpreter's bytecode magic and
optimisation level, the hook mode and the hash of the module's source. `Stamp` is how a
warm import knows that hash without reading the source (see `contsnap._marking._cache`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from typing import Any, NamedTuple

from .. import _info
from .._registry import STATE
from .._version import __version__

FORMAT = 8

#: How long before the moment it was read a source file must have last changed for its
#: stamp to vouch for its bytes. Any later change then gives it a newer ctime, even on
#: file systems with coarse clocks or 2-second timestamps (the "racy git" rule).
TRUST_MARGIN_NS = 3_000_000_000


class Stamp(NamedTuple):
    """What a source file looked like when its bytes were read (all zero: unknown)."""

    size: int = 0
    mtime_ns: int = 0
    #: the inode's change time: set to "now" by any write and by any ``os.utime``, so a
    #: copy that keeps the mtime (``shutil.copy2``) or an mtime put back is noticed
    ctime_ns: int = 0
    read_ns: int = 0

    @classmethod
    def of(cls, st: os.stat_result | None, read_ns: int) -> Stamp:
        """The stamp of bytes read at ``read_ns`` from a file that ``os.stat`` gave ``st``
        just before."""
        if st is None:
            return cls()
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, read_ns)

    @property
    def trusted(self) -> bool:
        """Had the file last changed long enough before it was read that any later change
        gives it another ctime?"""
        return self.read_ns > 0 and self.ctime_ns + TRUST_MARGIN_NS < self.read_ns

    def _state(self) -> tuple[int, int, int]:
        return self[:3]

    def vouches_for(self, st: os.stat_result) -> bool:
        """Are the file's bytes now those that were read? (Else they are hashed.)"""
        size, mtime_ns, ctime_ns, read_ns = self  # trusted and _state, inlined: every import asks
        return (
            read_ns > 0
            and ctime_ns + TRUST_MARGIN_NS < read_ns
            and st.st_size == size
            and st.st_mtime_ns == mtime_ns
            and st.st_ctime_ns == ctime_ns
        )

    def same_as(self, other: Stamp) -> bool:
        """Both trusted, of the same file state?"""
        return self.trusted and other.trusted and self._state() == other._state()


#: the stamp of nothing read yet (shared: a NamedTuple is built by a call into Python)
NO_STAMP = Stamp()


def source_hash(data: bytes) -> str:
    """The hash hash-based ``.pyc`` files use (SipHash, in C: 5x faster than blake2b)."""
    return importlib.util.source_hash(data).hex()


_stamp: str | None = None
STATE.add(__name__, "_stamp", "initial")


def contsnap_stamp() -> str:
    """For a source checkout or editable install: changes whenever a contsnap file changes.

    A release changes the version, which is in the key anyway; an installed copy
    (under site-packages) is not stat'ed at all. A checkout's files are, so that
    a changed transform never reuses output of the old one.
    """
    global _stamp
    if _stamp is None:
        # the package's folder, wherever in it this module is
        root = os.path.dirname(
            os.path.abspath(sys.modules[__name__.partition(".")[0]].__file__ or "")
        )
        parts = []
        if os.path.basename(os.path.dirname(root)) not in ("site-packages", "dist-packages"):
            # every module of the package, whatever folder it moves to
            for folder, dirs, files in os.walk(root):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                for name in files:
                    if name.endswith(".py"):
                        path = os.path.join(folder, name)
                        try:
                            st = os.stat(path)
                        except OSError:
                            parts.append(f"{path}:-")
                            continue
                        parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
        parts.sort()
        _stamp = hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()
    return _stamp


def cache_key(data: bytes | None, mode: str) -> tuple[Any, ...]:
    """The key of a file for this source (``data=None``: source not read, hash unknown)."""
    return (
        FORMAT,
        __version__,
        contsnap_stamp(),
        _info.RECORD_FIELDS,
        _info.LABEL_FIELDS,
        importlib.util.MAGIC_NUMBER,
        sys.flags.optimize,
        mode,
        None if data is None else source_hash(data),
    )


#: cache_path's answers: every import of a hooked module asks (a warm import is ~300 us)
_PATHS: dict[tuple[str, str, str | None], str | None] = {}
STATE.add(__name__, "_PATHS")


def cache_path(source_path: str, mode: str) -> str | None:
    """``__pycache__/name.cpython-3XY.contsnap-VERSION[-mode].cache`` (None: no cache here)."""
    memo = (source_path, mode, sys.pycache_prefix)
    found = _PATHS.get(memo, ...)
    if found is ...:
        found = _PATHS[memo] = _cache_path(source_path, mode)
    return found


def _cache_path(source_path: str, mode: str) -> str | None:
    try:
        pyc = importlib.util.cache_from_source(source_path)
    except (NotImplementedError, ValueError):
        return None
    base = pyc[: -len(".pyc")] if pyc.endswith(".pyc") else pyc
    suffix = f"-{mode}" if mode else ""
    return f"{base}.contsnap-{__version__}{suffix}.cache"


#: the parts of a cache key, as a miss is explained
_KEY_PARTS = (
    "cache format",
    "contsnap version",
    "contsnap's own code (the transform changed)",
    "function record fields",
    "label record fields",
    "Python bytecode magic number",
    "optimisation level (-O)",
    "mode (mark_all or not)",
    "source (the file changed)",
)


def _key_difference(stored: Any, wanted: tuple[Any, ...]) -> str:
    if not isinstance(stored, tuple) or len(stored) != len(wanted):
        return "written for another key layout"
    changed = [part for part, a, b in zip(_KEY_PARTS, stored, wanted) if a != b]
    return "stale: " + (", ".join(changed) or "key") + " differs"
