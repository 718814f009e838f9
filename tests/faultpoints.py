"""Kill this process at a chosen point of its input/output: imported by a child under test.

The kill harness (``tests/killing.py``) starts a job with ``CONTSNAP_FAULT`` set and a
``sitecustomize`` that imports this module, so the child SIGKILLs itself at the N-th
*fault point* of its run. The fault points are the instants a crash is interesting:

- every ``open`` for writing and every rename, unlink and truncate under the job's
  directory (``CONTSNAP_FAULT_DIR``), seen by an audit hook *before* it happens;
- before and after every ``os.fsync``;
- before and after every call of a store's ``put``, ``put_many``, ``get``,
  ``acquire``, ``renew``, ``release`` and ``delete`` (any backend);

``CONTSNAP_FAULT=N`` kills at the N-th point; ``CONTSNAP_FAULT=N:during`` kills from
a timer thread between 0 and 3 ms after the N-th point is reached, so that the kill
lands *inside* the write that follows (an SQLite transaction, a Redis script, a
PostgreSQL round trip, a file being written). ``CONTSNAP_FAULT_COUNT=FILE`` makes an
uninterrupted run write how many points it passed, so that the harness can pick N.

``CONTSNAP_FAULT_ARM=FILE`` is for several processes (Celery workers and their pool
children): nothing happens until the harness writes ``ID N`` or ``ID N:during`` to
``FILE``; then the first process to pass N more points claims the file (renames it to
``FILE.fired``) and dies, and the others go on.
"""

from __future__ import annotations

import atexit
import os
import random
import signal
import sys
import threading
from typing import Any

_SPEC = os.environ.get("CONTSNAP_FAULT", "")
_COUNT_FILE = os.environ.get("CONTSNAP_FAULT_COUNT")
_DIRECTORY = os.path.realpath(os.environ.get("CONTSNAP_FAULT_DIR", os.getcwd()))
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

_target = int(_SPEC.split(":")[0]) if _SPEC else 0
_during = _SPEC.endswith(":during")
_seen = [0]
_lock = threading.Lock()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


_ARM = os.environ.get("CONTSNAP_FAULT_ARM")
_armed: dict[str, int] = {}  # the arming seen last: its id, and the points passed since


def _armed_hit() -> tuple[bool, bool, int]:
    """With ``CONTSNAP_FAULT_ARM``: is this point the armed one, and does it win the claim?"""
    assert _ARM is not None
    try:
        with open(_ARM) as armed:
            ident, spec = armed.read().split()
    except (FileNotFoundError, ValueError):
        return False, False, 0
    with _lock:
        passed = _armed[ident] = _armed.get(ident, 0) + 1
    target = int(spec.split(":")[0])
    if passed != target:
        return False, False, 0
    try:
        os.rename(_ARM, _ARM + ".fired")  # one process wins
    except FileNotFoundError:
        return False, False, 0
    return True, spec.endswith(":during"), target


def point(what: str) -> None:
    """One fault point passed: the N-th one kills the process (at once, or a moment later)."""
    global _during, _target
    if _ARM is not None:
        hit, _during, _target = _armed_hit()
    else:
        with _lock:
            _seen[0] += 1
            hit = _seen[0] == _target
    if not hit:
        return
    if os.environ.get("CONTSNAP_FAULT_SAY"):
        os.write(2, f"faultpoints: kill at point {_target} ({what})\n".encode())
    if _during:
        delay = random.Random(_target).uniform(0.0, 0.003)
        threading.Timer(delay, _die).start()
    else:
        _die()


def _ours(path: Any) -> bool:
    try:
        name = os.fsdecode(path) if not isinstance(path, int) else ""
    except TypeError:
        return False
    return bool(name) and os.path.realpath(name).startswith(_DIRECTORY + os.sep)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writing and _ours(path):
            point(f"open {path}")
    elif event in ("os.rename", "os.remove", "os.truncate") and _ours(args[0]):
        point(f"{event} {args[0]}")


def _wrap_fsync() -> None:
    real = os.fsync

    def fsync(fd: Any) -> None:
        point("before fsync")
        real(fd)
        point("after fsync")

    os.fsync = fsync


_STORE_METHODS = ("put", "put_many", "get", "acquire", "renew", "release", "delete")


def _wrap_stores() -> None:
    from contsnap import stores

    for cls in (stores.FileStore, stores.SQLiteStore, stores.RedisStore, stores.PostgresStore):
        for name in _STORE_METHODS:
            real = getattr(cls, name, None)  # its own, or its base class's (the SQL stores)
            if real is None:
                continue

            def method(
                self: Any, *args: Any, _real: Any = real, _name: str = name, **kw: Any
            ) -> Any:
                point(f"before {type(self).__name__}.{_name}")
                result = _real(self, *args, **kw)
                point(f"after {type(self).__name__}.{_name}")
                return result

            setattr(cls, name, method)


def _write_count() -> None:
    if _COUNT_FILE:
        with open(_COUNT_FILE + ".tmp", "w") as out:
            out.write(str(_seen[0]))
        os.replace(_COUNT_FILE + ".tmp", _COUNT_FILE)


def install() -> None:
    if not (_SPEC or _COUNT_FILE or _ARM):
        return
    sys.addaudithook(_audit)
    _wrap_fsync()
    _wrap_stores()
    atexit.register(_write_count)


install()
