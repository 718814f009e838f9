"""Resources: live objects a snapshot cannot copy, saved and rebuilt by handlers.

A handler registered for a type ([`register_resource`][contsnap.register_resource]) turns an
instance into picklable state when a snapshot is taken and builds a live object from that state when
it is loaded: an open file becomes path + mode + offset and is reopened there. The snapshot pickler
asks `handler_for` about every object it meets (the most specific class in the MRO wins). Types no
snapshot can carry (sockets, locks, child processes, database connections) are refused with a
message that names them and says how to register a handler.
"""

from __future__ import annotations

import _thread
import contextlib
import contextvars
import gc
import io
import os
import random
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ._errors import CheckpointError, NotCheckpointableError, ResourceChangedError
from ._registry import STATE

__all__ = [
    "Output",
    "ResourceHandler",
    "collect_outputs",
    "handler_for",
    "register_resource",
    "restore_resource",
    "truncate",
]


class ResourceHandler:
    """One registration of [`register_resource`][contsnap.register_resource]; `unregister` takes it
    back."""

    __slots__ = ("kind", "restore", "save")

    def __init__(
        self, kind: type, save: Callable[[Any], Any], restore: Callable[[Any], Any]
    ) -> None:
        self.kind = kind
        self.save = save
        self.restore = restore

    def __repr__(self) -> str:
        return f"<contsnap resource handler for {type_name(self.kind)}>"

    def unregister(self) -> None:
        """Remove this handler; an earlier one for the same type (if any) applies again."""
        stack = _REGISTERED.get(self.kind, [])
        if self in stack:
            stack.remove(self)
            if not stack:
                del _REGISTERED[self.kind]
            _refresh()


class _Refusal:
    """Stands in the lookup table for a type that no snapshot can carry."""

    __slots__ = ("kind", "reopened", "what")

    def __init__(self, kind: type, what: str, reopened: bool) -> None:
        self.kind = kind
        self.what = what
        #: a connection to something outside (reopen it) rather than a process-local object
        self.reopened = reopened


class ResourceRefused(NotCheckpointableError):
    """A resource that cannot be saved; carries the pieces ``_diagnose`` words its message from."""

    def __init__(self, kind: type, reason: str, advice: str = "") -> None:
        super().__init__(f"{reason}; {advice}" if advice else reason)
        self.kind = kind
        self.reason = reason
        self.advice = advice

    def __reduce__(self) -> tuple[Any, ...]:
        return (NotCheckpointableError, (str(self),))


#: registered handlers per type, the last registration on top
_REGISTERED: dict[type, list[ResourceHandler]] = {}
STATE.add(__name__, "_REGISTERED", None, "contsnap's handlers and register_resource's")
#: types known to be unsaveable, resolved once their module has been imported
_REFUSED: dict[type, _Refusal] = {}
STATE.add(__name__, "_REFUSED", None, "types no snapshot can carry, found as imported")
#: what the pickler consults: the top handler per type, over the refusals
_ACTIVE: dict[type, ResourceHandler | _Refusal] = {}
STATE.add(__name__, "_ACTIVE", None, "what the pickler consults: kept with those two")


def generation() -> int:
    """Changes whenever the handlers or refusals in effect change."""
    return _GENERATION[0]


_GENERATION = [0]
STATE.add(__name__, "_GENERATION", None, "only increases: caches compare against it")


def _refresh() -> None:
    _GENERATION[0] += 1
    _ACTIVE.clear()
    _ACTIVE.update(_REFUSED)
    _ACTIVE.update((kind, stack[-1]) for kind, stack in _REGISTERED.items())


def register_resource(
    kind: type, save: Callable[[Any], Any], restore: Callable[[Any], Any]
) -> ResourceHandler:
    """Save instances of ``kind`` (and its subclasses) in snapshots as ``save(obj)``.

    ``save`` returns any picklable state; ``restore(state)`` builds the live
    object again when the snapshot is loaded (for a connection: reconnect).
    The most specific registered class in an object's MRO wins; registering
    the same type again replaces the earlier handler until the returned
    handle's ``unregister()`` is called. The process that loads the snapshot
    must have registered the handler too.
    """
    if not isinstance(kind, type):
        raise TypeError(f"register_resource() needs a class, got {kind!r}")
    if not callable(save) or not callable(restore):
        raise TypeError("register_resource() needs callable save and restore functions")
    handler = ResourceHandler(kind, save, restore)
    _REGISTERED.setdefault(kind, []).append(handler)
    _refresh()
    return handler


def handler_for(kind: type) -> ResourceHandler | _Refusal | None:
    """The handler (or refusal) for objects of type ``kind``: the first match along its MRO."""
    for klass in kind.__mro__:
        found = _ACTIVE.get(klass)
        if found is not None:
            return found
    return None


def type_name(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def importable_name(kind: type) -> str:
    """How a user's code can name ``kind`` after an ``import`` (for the advice we print).

    ``_thread.lock`` is the type's name, but no module spells it so on
    3.10-3.12 (``threading.Lock`` is a factory there): ``type(threading.Lock())``
    works on every version.
    """
    factories = {_thread.LockType: "threading.Lock", _thread.RLock: "threading.RLock"}
    if kind in factories:
        return f"type({factories[kind]}())"
    return type_name(kind)


def reduce_resource(obj: Any, entry: ResourceHandler | _Refusal) -> tuple[Any, ...]:
    """How a resource pickles: its handler's state, rebuilt by `restore_resource`."""
    name = type_name(type(obj))
    if isinstance(entry, _Refusal):
        registration = f"contsnap.register_resource({importable_name(entry.kind)}, save, restore)"
        if entry.reopened:
            advice = (
                "close it before the yield and open it again after, or register a resource "
                f"handler that saves how to reach it and reconnects on restore: {registration}"
            )
        else:
            advice = (
                "make a new one after the yield (or keep it out of the generator, in a global), "
                f"or register a resource handler that makes a new one on restore: {registration}"
            )
        raise ResourceRefused(
            type(obj), f"a {name} object ({entry.what}), which no snapshot can carry", advice
        )
    try:
        state = entry.save(obj)
    except CheckpointError as exc:
        raise ResourceRefused(type(obj), f"a {name} object, which cannot be saved: {exc}") from None
    except Exception as exc:
        raise ResourceRefused(
            type(obj),
            f"a {name} object, whose resource handler failed to save it "
            f"({type(exc).__name__}: {exc})",
            f"fix the save function registered for {type_name(entry.kind)}",
        ) from exc
    return (restore_resource, (entry.kind, state))


def restore_resource(kind: Any, state: Any) -> Any:
    """Rebuild a resource at load time with the handler this process has for ``kind``.

    Inside `salvaging`, a resource that cannot be rebuilt becomes an
    `Unrestored` placeholder instead of failing the whole load.
    """
    try:
        return _restore_resource(kind, state)
    except CheckpointError as exc:
        lost = _SALVAGE.get()
        if lost is None:
            raise
        return Unrestored(kind, exc, lost)


def _restore_resource(kind: Any, state: Any) -> Any:
    handler = handler_for(kind) if isinstance(kind, type) else None
    if not isinstance(handler, ResourceHandler):
        raise CheckpointError(
            f"the snapshot holds a {type_name(kind) if isinstance(kind, type) else kind!r} "
            "saved by a resource handler, but no handler for that type is registered in this "
            "process; call contsnap.register_resource() for it before loading"
        )
    try:
        return handler.restore(state)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"cannot restore the {type_name(kind)} saved in the snapshot: its resource "
            f"handler's restore raised {type(exc).__name__}: {exc}"
        ) from exc


class Unrestored:
    """Stands, in a partial load, for a resource that could not be rebuilt, and says why.

    The rest of the snapshot may name its attributes (``iter(f.readline, "")``
    is how a ``for`` loop over a file is saved): those stand in too, so the
    load completes and the caller can leave out what reaches one of them.
    Using one raises the error.
    """

    __slots__ = ("error", "kind", "lost")

    def __init__(self, kind: Any, error: CheckpointError, lost: list[Unrestored]) -> None:
        self.kind = kind
        self.error = error
        self.lost = lost
        lost.append(self)

    def __getattr__(self, name: str) -> Unrestored:
        if name.startswith("__"):
            raise AttributeError(name)
        return Unrestored(self.kind, self.error, self.lost)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error

    def __repr__(self) -> str:
        return f"<unrestored {type_name(self.kind) if isinstance(self.kind, type) else self.kind}>"


_SALVAGE: contextvars.ContextVar[list[Unrestored] | None] = contextvars.ContextVar(
    "contsnap_salvage", default=None
)


@contextlib.contextmanager
def salvaging() -> Iterator[list[Unrestored]]:
    """Loads inside keep going past resources that cannot be rebuilt; lists them."""
    lost: list[Unrestored] = []
    token = _SALVAGE.set(lost)
    try:
        yield lost
    finally:
        _SALVAGE.reset(token)


# ---------------------------------------------------------------- refusals

_THREADS = "which belongs to this process's threads"
#: (module, class, what it is, whether it is reopened or made anew): refused
#: only once its module is imported (no instance can exist before)
_KNOWN_UNSAVEABLE = (
    ("socket", "socket", "an open network connection", True),
    ("_thread", "LockType", f"a lock, {_THREADS}", False),
    ("_thread", "RLock", f"a lock, {_THREADS}", False),
    ("threading", "_RLock", f"a lock, {_THREADS}", False),
    ("threading", "Condition", f"a condition variable, {_THREADS}", False),
    ("threading", "Semaphore", f"a semaphore, {_THREADS}", False),
    ("threading", "Event", f"an event, {_THREADS}", False),
    ("threading", "Barrier", f"a barrier, {_THREADS}", False),
    ("threading", "Thread", "a thread of this process", False),
    ("subprocess", "Popen", "a running child process", True),
    ("sqlite3", "Connection", "an open database connection", True),
    ("sqlite3", "Cursor", "a cursor of an open database connection", True),
    ("selectors", "BaseSelector", "a selector watching this process's file descriptors", False),
    ("asyncio.transports", "BaseTransport", "a connection owned by a running event loop", True),
    ("asyncio.events", "AbstractEventLoop", "an event loop of this process", False),
    ("multiprocessing.process", "BaseProcess", "a child process", True),
    ("mmap", "mmap", "a memory map of a file", True),
)
_UNRESOLVED = {entry[0] for entry in _KNOWN_UNSAVEABLE}
STATE.add(__name__, "_UNRESOLVED", None, "modules of refused types not imported yet")


def resolve_refusals(*, force: bool = False) -> None:
    """Add the refusals of modules imported since last time (cheap: a set test per module;
    unless ``force``, only when the number of imported modules changed since)."""
    count = len(sys.modules)
    if not force and count == _MODULES_SEEN[0]:
        return
    _MODULES_SEEN[0] = count
    if not _UNRESOLVED.intersection(sys.modules):
        return
    for module_name, path, what, reopened in _KNOWN_UNSAVEABLE:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        _UNRESOLVED.discard(module_name)
        kind = getattr(module, path, None)
        if isinstance(kind, type):
            _REFUSED.setdefault(kind, _Refusal(kind, what, reopened))
    _refresh()


_MODULES_SEEN = [-1]
STATE.add(__name__, "_MODULES_SEEN", lambda: _MODULES_SEEN.__setitem__(0, -1))


# ---------------------------------------------------------------- files

_STD_STREAMS = ("stdin", "stdout", "stderr")
_NEWLINES = ("", "\n", "\r", "\r\n")
_NO_CREATE = ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)


def _std_stream(obj: Any) -> str | None:
    """``stdout``, ``__stdout__``... when ``obj`` is one of the interpreter's streams."""
    for name in _STD_STREAMS:
        for attr in (name, f"__{name}__"):
            stream = getattr(sys, attr, None)
            if stream is None:
                continue
            if obj is stream:
                return attr
            if obj is getattr(stream, "buffer", None):
                return f"{attr}.buffer"
    return None


def _restore_std_stream(attr: str) -> Any:
    name, _, buffer = attr.partition(".")
    stream = getattr(sys, name)
    return stream.buffer if buffer else stream


def _raw_of(obj: Any) -> io.FileIO:
    """The FileIO under a text or buffered file; refuses in-memory and wrapped streams."""
    raw = obj
    if isinstance(raw, io.TextIOWrapper):
        raw = raw.buffer
    if isinstance(raw, (io.BufferedReader, io.BufferedWriter, io.BufferedRandom)):
        raw = raw.raw
    if not isinstance(raw, io.FileIO):
        raise NotCheckpointableError(
            f"it is a stream over a {type_name(type(raw))}, not over a file on disk"
        )
    return raw


def _path_of(raw: io.FileIO) -> str:
    """The absolute path of an open file, checked to still name that file."""
    name = raw.name
    if isinstance(name, int):
        raise NotCheckpointableError(
            f"it was opened from file descriptor {name}, not from a path, so it cannot be "
            "opened again"
        )
    path = os.path.abspath(os.fsdecode(name))
    if raw.closed:
        return path
    opened = os.fstat(raw.fileno())
    try:
        if os.path.samestat(opened, os.stat(path)):
            return path
    except OSError:
        pass
    try:  # the working directory changed since it was opened (Linux knows the real path)
        real = os.readlink(f"/proc/self/fd/{raw.fileno()}")
        if os.path.samestat(opened, os.stat(real)):
            return real
    except OSError:
        pass
    raise NotCheckpointableError(
        f"the file {path!r} it was opened as has been renamed or deleted since, so it "
        "cannot be opened again"
    )


def _newline_of(text: io.TextIOWrapper) -> str | None:
    """The ``newline`` argument of an open text file.

    CPython has no getter for it. The wrapper refers to it as a string
    (``readnl``, visited by the GC before the other strings that can look
    like one: the decoded read-ahead and pending writes, which the caller has
    flushed). ``None`` and ``""`` read through an IncrementalNewlineDecoder,
    the other three do not, which rules out read-ahead posing as ``readnl``.
    """
    refs = gc.get_referents(text)
    found = [ref for ref in refs if type(ref) is str and ref in _NEWLINES]
    if any(type(ref) is io.IncrementalNewlineDecoder for ref in refs):
        return "" if found[:1] == [""] else None
    return found[0] if found else None


def _save_file(obj: Any) -> Any:
    std = _std_stream(obj)
    if std is not None:
        return ("std", std)
    raw = _raw_of(obj)
    if not raw.closed and not raw.seekable():
        raise NotCheckpointableError(
            f"{raw.name!r} is not seekable (a pipe, socket or terminal), so it cannot be "
            "opened again at the same place"
        )
    if not obj.closed and obj.writable():
        obj.flush()
        os.fsync(raw.fileno())
    text = isinstance(obj, io.TextIOWrapper)
    state: dict[str, Any] = {
        "layer": "text" if text else "raw" if obj is raw else "buffered",
        "path": _path_of(raw),
        "mode": raw.mode,
        "closed": obj.closed,
    }
    if text:
        state.update(
            encoding=obj.encoding,
            errors=obj.errors,
            newline=_newline_of(obj),
            line_buffering=obj.line_buffering,
            write_through=obj.write_through,
            text_mode=getattr(obj, "mode", None),
        )
    if obj.closed:
        return ("file", state)
    try:
        position = obj.tell()
    except OSError as exc:
        raise NotCheckpointableError(
            f"its position in {state['path']!r} is unknown ({exc}): a text file read with "
            "next() hides it; read it with a for loop inside the checkpointable function, or "
            "with readline()"
        ) from None
    stat = os.fstat(raw.fileno())
    state.update(position=position, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return ("file", state)


def _open_again(path: str, state: dict[str, Any]) -> Any:
    """Open ``path`` as the saved file was, but never create or truncate it."""
    mode = state["mode"]
    layer = state["layer"]

    def opener(name: str, flags: int) -> int:
        return os.open(name, flags & _NO_CREATE)

    if layer == "raw":
        return io.FileIO(path, mode, opener=opener)
    if layer == "buffered":
        return open(path, mode, opener=opener)
    stream = open(  # noqa: SIM115 - the restored generator owns it
        path,
        mode.replace("b", ""),
        buffering=1 if state["line_buffering"] else -1,
        encoding=state["encoding"],
        errors=state["errors"],
        newline=state["newline"],
        opener=opener,
    )
    if state["write_through"]:
        stream.reconfigure(write_through=True)
    if state["text_mode"] is not None:
        stream.mode = state["text_mode"]
    return stream


def _closed_file(state: dict[str, Any]) -> Any:
    """A closed file object that names the saved path (the file itself is not touched)."""
    stream = _open_again(os.devnull, state)
    raw = _raw_of(stream)
    raw.name = state["path"]
    stream.close()
    return stream


def _restore_file(saved: Any) -> Any:
    kind, state = saved
    if kind == "std":
        return _restore_std_stream(state)
    path = state["path"]
    if state["closed"]:
        return _closed_file(state)
    writing = any(c in state["mode"] for c in "wax+")
    try:
        current = os.stat(path)
    except OSError as exc:
        raise ResourceChangedError(
            f"cannot reopen {path!r}, which the snapshot had open: {exc.strerror}"
        ) from None
    if writing:
        if current.st_size < state["size"]:
            raise ResourceChangedError(
                f"{path!r} is shorter ({current.st_size} bytes) than when the snapshot was "
                f"taken ({state['size']} bytes): it was changed by someone else, so writing "
                "cannot go on where it was"
            )
    elif (current.st_size, current.st_mtime_ns) != (state["size"], state["mtime_ns"]):
        raise ResourceChangedError(
            f"{path!r} has changed since the snapshot was taken (size {state['size']} -> "
            f"{current.st_size} bytes, modified {state['mtime_ns']} -> {current.st_mtime_ns} ns); "
            "reading cannot go on where it was"
        )
    stream = _open_again(path, state)
    try:
        stream.seek(state["position"])
    except BaseException:
        stream.close()
        raise
    if writing and current.st_size > state["size"]:
        # What was written after the checkpoint will be written again, so the file is cut
        # back, but not here: loading has no effect outside the process. The caller that
        # resumes the computation does it (truncate(), e.g. through loads(truncate_outputs=)).
        outputs = getattr(_collecting, "outputs", None)
        if outputs is not None:
            outputs.append(Output(stream, path, state["size"]))
    return stream


class Output:
    """A file a restored computation writes, and the size it had at the checkpoint."""

    __slots__ = ("path", "size", "stream")

    def __init__(self, stream: Any, path: str, size: int) -> None:
        self.stream = stream
        self.path = path
        self.size = size


_collecting = threading.local()
STATE.add(__name__, "_collecting", "attributes")


class collect_outputs:
    """Gather the written-to files that the restores inside the block reopen."""

    __slots__ = ("found", "outer")

    def __enter__(self) -> list[Output]:
        self.outer = getattr(_collecting, "outputs", None)
        self.found: list[Output] = []
        _collecting.outputs = self.found
        return self.found

    def __exit__(self, *exc: object) -> None:
        _collecting.outputs = self.outer
        if self.outer is not None:
            self.outer.extend(self.found)


def truncate(outputs: list[Output]) -> list[str]:
    """Cut each file back to its checkpoint size (for a computation about to resume)."""
    cut = []
    for output in outputs:
        raw = _raw_of(output.stream)
        if raw.closed:
            continue
        if os.fstat(raw.fileno()).st_size > output.size:
            os.truncate(raw.fileno(), output.size)
            cut.append(output.path)
    return cut


# ---------------------------------------------------------------- random


def _save_random(obj: random.Random) -> Any:
    extra = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
    state = None if isinstance(obj, random.SystemRandom) else obj.getstate()
    return (type(obj), state, extra)


def _restore_random(saved: Any) -> random.Random:
    cls, state, extra = saved
    obj: random.Random = cls.__new__(cls)
    random.Random.__init__(obj)
    if state is not None:
        obj.setstate(state)
    vars(obj).update(extra)
    return obj


for _kind in (io.TextIOWrapper, io.BufferedReader, io.BufferedWriter, io.BufferedRandom, io.FileIO):
    register_resource(_kind, _save_file, _restore_file)
register_resource(random.Random, _save_random, _restore_random)
del _kind
