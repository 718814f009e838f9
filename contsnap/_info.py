"""What contsnap knows about each checkpointable function, and how a snapshot names it.

A snapshot refers to its function's `FunctionInfo`. Functions a fresh
process can import (module level, methods) are named by import path and
fingerprint; others (nested functions, ``__main__``, notebook cells) travel by
value through cloudpickle, and on load the live function of the same name and
fingerprint is preferred when the process has it.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import io
import pickle
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import cloudpickle

from . import _moved
from ._errors import (
    CheckpointError,
    CodeChangedError,
    NotCheckpointableError,
    SnapshotCorruptError,
)
from ._labels import LabelInfo
from ._registry import STATE

# Keyed by id(): code objects compare by value, so two modules holding the same
# function would otherwise share one entry (and one module's globals).
_BY_CODE: dict[int, FunctionInfo] = {}
STATE.add(__name__, "_BY_CODE", None, "the records of marked functions: their code needs them")
_BY_NAME: dict[tuple[str, str], FunctionInfo] = {}
STATE.add(__name__, "_BY_NAME", None, "the records of marked functions, by name")
# By where the fresh code starts: finds the info of a code object that a decorator
# such as ``types.coroutine`` replaced by a copy with other flags.
_BY_PLACE: dict[tuple[str, int], list[FunctionInfo]] = {}
STATE.add(__name__, "_BY_PLACE", None, "the records of marked functions, by place")

# Functions the import hook made from its cached module code whose FunctionInfo is
# built on first need (a warm import does no work per function): by id() of their
# fresh code, and by (module, qualname). See contsnap._marking._hooked.HookedModule.
_UNBUILT: dict[int, Pending] = {}
STATE.add(__name__, "_UNBUILT", None, "hooked functions whose records are built on first need")
_UNBUILT_BY_NAME: dict[tuple[str, str], Pending] = {}
STATE.add(__name__, "_UNBUILT_BY_NAME", None, "functions the hook made, by name")


class Pending(NamedTuple):
    """A function whose info is not built yet, and how to build it."""

    code: types.CodeType  # held, so that its id() stays its own
    module: str
    qualname: str
    #: builds and registers the info: given (code, qualname, the function or None,
    #: the globals it runs in or None)
    build: Callable[[types.CodeType, str, Any, dict[str, Any] | None], FunctionInfo | None]


_UNBUILT_OF_MODULE: dict[str, list[Pending]] = {}
STATE.add(__name__, "_UNBUILT_OF_MODULE", None, "functions the hook made, by module")
#: (module, entries, build) of imports whose pending functions are not in the tables
#: yet: indexed on the first lookup that misses, so that an import costs no work per
#: function
_UNINDEXED: list[tuple[str, Sequence[tuple[Any, types.CodeType]], Callable[..., Any]]] = []
STATE.add(__name__, "_UNINDEXED", None, "imports whose functions are indexed on the first miss")


def add_pending(
    module: str,
    entries: Sequence[tuple[Any, types.CodeType]],
    build: Callable[[types.CodeType, str, Any, dict[str, Any] | None], FunctionInfo | None],
) -> None:
    """Functions of ``module`` whose infos wait for their first use, as (key, fresh code)
    pairs whose key starts with the qualname (a sequence read on the first lookup). Those
    of an earlier import of the module (a reload) stay findable by their code: their
    generators may still be alive."""
    _UNINDEXED.append((module, entries, build))


def _index_pending() -> bool:
    """Move the imports added since the last lookup into the tables (False: none)."""
    if not _UNINDEXED:
        return False
    with _BUILD_LOCK:
        while _UNINDEXED:
            module, entries, build = _UNINDEXED.pop(0)
            made = [Pending(code, module, key[0], build) for key, code in entries]
            _UNBUILT_OF_MODULE.setdefault(module, []).extend(made)
            _UNBUILT.update({id(p.code): p for p in made})
            _UNBUILT_BY_NAME.update({(module, p.qualname): p for p in made})
    return True


def _drop_pending(pending: Pending) -> None:
    if _UNBUILT.get(id(pending.code)) is pending:
        del _UNBUILT[id(pending.code)]
    if _UNBUILT_BY_NAME.get((pending.module, pending.qualname)) is pending:
        del _UNBUILT_BY_NAME[(pending.module, pending.qualname)]


def _resolve(
    pending: Pending | None, fn: Any = None, namespace: dict[str, Any] | None = None
) -> FunctionInfo | None:
    if pending is None:
        return None
    with _BUILD_LOCK:
        info = pending.build(pending.code, pending.qualname, fn, namespace)
        _drop_pending(pending)  # built (and registered), or refused: asked once
    return info


def _pending_for(code: types.CodeType, index: bool = True) -> Pending | None:
    """What waits for ``code``, the fresh code of a function made by the hook's cached
    module code (None: nothing; with ``index`` False, imports not indexed yet are not
    looked at)."""
    if index:
        _index_pending()
    pending = _UNBUILT.get(id(code))
    return pending if pending is not None and pending.code is code else None


def is_pending(code: types.CodeType) -> bool:
    """Is ``code`` the fresh code of a function whose info waits for its first use?"""
    return _pending_for(code) is not None


def pending_info(fn: types.FunctionType) -> FunctionInfo | None:
    """The info of a function made from the hook's cached code, built now (None: not one)."""
    return _resolve(_pending_for(fn.__code__), fn)


# The namespace of an interactive session (a notebook's user namespace) while it is
# saved or restored as a whole: functions defined in it are rebuilt with it as
# their globals, so that restored code and the restored variables stay linked.
_SESSION: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "contsnap_session", default=None
)

#: the flag ``types.coroutine`` sets on a generator function's code
CO_ITERABLE_COROUTINE = inspect.CO_ITERABLE_COROUTINE
_BUILD_LOCK = threading.RLock()


@dataclass(frozen=True)
class Details:
    """The parts of a FunctionInfo that only a snapshot or a restore needs."""

    labels: dict[int, LabelInfo]
    resume_code: types.CodeType
    source: str = ""


@dataclass(eq=False)
class FunctionInfo:
    """A transformed generator function: its two code objects and its resume labels.

    ``details`` (labels, resume variant, generated source) may be a function that
    produces them: the import hook's cache loads them on first use, since a plain
    call of the function needs none of them.
    """

    module: str
    qualname: str
    name: str
    filename: str
    def_line: int
    fingerprint: str
    user_names: tuple[str, ...]
    cell_names: tuple[str, ...]
    cellvars: tuple[str, ...]
    first_param: str | None
    fresh_code: types.CodeType | None
    globals: dict[str, Any]
    details: Details | Callable[[], Details]
    _registered: bool = field(default=False, init=False, repr=False)
    _label_of_line: dict[int, int] | None = field(default=None, init=False, repr=False)
    # The rest is state of this process, never part of a record of the function:
    #: the latest function made from ``fresh_code`` (a decorator may change its code)
    live_function: Any = field(default=None, init=False, repr=False, compare=False)
    #: code objects equal to ours but for flags, or copies of our function's code (a
    #: function saved by value is copied at each load), by id, each for as long as it lives
    aliases: dict[int, weakref.ref[types.CodeType]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    flagged_resume_code: types.CodeType | None = field(
        default=None, init=False, repr=False, compare=False
    )
    #: per label: the names a snapshot saves there, cells left out (see saved_names)
    _saved_by_label: dict[int, frozenset[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _details(self) -> Details:
        details = self.details
        if not isinstance(details, Details):
            with _BUILD_LOCK:
                details = self.details
                if not isinstance(details, Details):
                    details = self.details = details()
                    if self._registered:
                        _BY_CODE[id(details.resume_code)] = self
        return details

    @property
    def labels(self) -> dict[int, LabelInfo]:
        return self._details().labels

    @property
    def resume_code(self) -> types.CodeType:
        return self._details().resume_code

    @property
    def source(self) -> str:
        return self._details().source

    @property
    def label_of_line(self) -> dict[int, int]:
        """Lines holding exactly one yield: the paused line is the label."""
        if self._label_of_line is None:
            lines: dict[int, list[int]] = {}
            for label, spec in self.labels.items():
                lines.setdefault(spec.line, []).append(label)
            self._label_of_line = {
                line: found[0] for line, found in lines.items() if len(found) == 1
            }
        return self._label_of_line

    def line_of(self, label: int) -> int:
        info = self.labels.get(label)
        return info.line if info is not None else self.def_line

    def where(self, label: int) -> str:
        return f"{self.qualname} at {self.filename}:{self.line_of(label)}"

    def saved_names(self, label: int) -> frozenset[str]:
        """Names captured at ``label``: the user's locals plus the helpers live there."""
        helpers = self.labels[label].helpers if label in self.labels else frozenset()
        return frozenset(self.user_names) | helpers

    def allowed_names(self, label: int) -> frozenset[str]:
        """The locals a snapshot at ``label`` may hold (label 0: not started, the
        arguments), remembered per label."""
        key = -1 - label  # shares the cache with saved_names_without_cells
        found = self._saved_by_label.get(key)
        if found is None:
            found = self.saved_names(label) if label else frozenset(self.user_names)
            self._saved_by_label[key] = found
        return found

    def saved_names_without_cells(self, label: int) -> frozenset[str]:
        """`saved_names` less the cell variables (saved as cells), remembered per label."""
        found = self._saved_by_label.get(label)
        if found is None:
            found = self._saved_by_label[label] = self.saved_names(label) - set(self.cell_names)
        return found

    def register(self) -> None:
        if self.fresh_code is not None:
            _BY_CODE[id(self.fresh_code)] = self
            if _UNBUILT:
                pending = _pending_for(self.fresh_code, index=False)
                if pending is not None:
                    _drop_pending(pending)
            place = (self.fresh_code.co_filename, self.fresh_code.co_firstlineno)
            known = _BY_PLACE.setdefault(place, [])
            if not any(other is self for other in known):
                # a module imported again replaces its functions: keep the newest
                known[:] = [
                    other
                    for other in known
                    if (other.module, other.qualname) != (self.module, self.qualname)
                ][-7:]
                known.append(self)
        self._registered = True
        if isinstance(self.details, Details):  # else registered when loaded
            _BY_CODE[id(self.details.resume_code)] = self
        _BY_NAME[(self.module, self.qualname)] = self

    def alias(self, code: types.CodeType) -> None:
        # remembered while the code lives, however many copies are alive at once (a
        # copied lexer's rules hold hundreds of copies of one callback; a bound on them
        # forgot copies still in use, and their generators were "not checkpointable")
        key = id(code)
        aliases = self.aliases

        def forget(ref: weakref.ref[types.CodeType]) -> None:
            if aliases.get(key) is ref:
                del aliases[key]
                if _BY_CODE.get(key) is self:
                    del _BY_CODE[key]

        aliases[key] = weakref.ref(code, forget)
        _BY_CODE[key] = self

    def resume_code_for_restore(self) -> types.CodeType:
        """The resume code, with the flags the live function's code carries.

        ``@types.coroutine`` above ``@checkpointable`` replaces the function's code by
        a copy flagged as an iterable coroutine; a restored generator must be
        awaitable in the same way.
        """
        live = self.live_function.__code__ if self.live_function is not None else None
        if live is None or not live.co_flags & CO_ITERABLE_COROUTINE:
            return self.resume_code
        if self.flagged_resume_code is None:
            self.flagged_resume_code = self.resume_code.replace(
                co_flags=self.resume_code.co_flags | CO_ITERABLE_COROUTINE
            )
            self.alias(self.flagged_resume_code)
        return self.flagged_resume_code

    def importable(self) -> bool:
        """Can a fresh process find this function by import path?"""
        return (
            _by_name(self.qualname)
            and self.module not in ("__main__", "")
            and sys.modules.get(self.module) is not None
            and _BY_NAME.get((self.module, self.qualname)) is self
        )

    def __reduce__(self) -> tuple[Any, ...]:
        if self.importable():
            return (_info_by_name, (self.module, self.qualname, self.fingerprint))
        return (_info_by_value, (_pickle_by_value(self),))


def _by_name(qualname: str) -> bool:
    """Does a qualname name one function of its module? Not a nested function's (one per
    call of the enclosing function), nor a lambda's (several can share one)."""
    return "<locals>" not in qualname and "<lambda>" not in qualname


# ---------------------------------------------------------------- the record of a function
#
# One encoding of a FunctionInfo, made of tuples, dicts, strings, ints and code objects
# (marshal and pickle hold it alike): the import hook's cache stores it, and a snapshot
# that carries its function by value stores it too. Every field is written from the
# dataclasses' own field lists, so a field added to FunctionInfo or LabelInfo travels
# both ways without being named here.

#: FunctionInfo fields a record leaves out: the function in hand gives its module, names,
#: file and globals; the details (labels, resume code, source) are encoded apart.
LIVE_FIELDS = frozenset({"module", "qualname", "name", "filename", "globals", "details"})
RECORD_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(FunctionInfo) if f.init and f.name not in LIVE_FIELDS
)
LABEL_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LabelInfo))
FRESH_CODE_AT = RECORD_FIELDS.index("fresh_code")


def encode_record(info: FunctionInfo) -> tuple[Any, ...]:
    """The fields of ``info`` that a record stores, in :data:`RECORD_FIELDS` order."""
    return tuple(getattr(info, name) for name in RECORD_FIELDS)


def encode_labels(labels: dict[int, LabelInfo]) -> dict[int, tuple[Any, ...]]:
    """Each label as the tuple of its :data:`LABEL_FIELDS`."""
    return {k: tuple(getattr(v, f) for f in LABEL_FIELDS) for k, v in labels.items()}


def decode_labels(stored: dict[int, tuple[Any, ...]]) -> dict[int, LabelInfo]:
    """The labels :func:`encode_labels` encoded (raises on a malformed record)."""
    labels = {}
    for k, v in stored.items():
        # a record written before a field was added (each new field comes last, with a
        # default meaning what the older code did) has fewer: ``anext_of`` is the sixth
        if not _OLDEST_LABEL_FIELDS <= len(v) <= len(LABEL_FIELDS):
            raise ValueError(
                f"label {k} has {len(v)} fields, not {_OLDEST_LABEL_FIELDS} to {len(LABEL_FIELDS)}"
            )
        labels[int(k)] = LabelInfo(*v)
    return labels


#: the fields of a label record of the oldest contsnap that wrote them by value (before
#: ``anext_of``)
_OLDEST_LABEL_FIELDS = 5


def _positional_order() -> bool:
    """Do FunctionInfo's parameters run: module, qualname, name, filename, the record
    fields up to fresh_code, globals, details, the rest of the record? Then
    :func:`decode_record` passes them by position."""
    names = [f.name for f in fields(FunctionInfo) if f.init]
    cut = FRESH_CODE_AT + 1
    expected = ["module", "qualname", "name", "filename", *RECORD_FIELDS[:cut], "globals"]
    return names == [*expected, "details", *RECORD_FIELDS[cut:]]


_POSITIONAL = _positional_order()
_CUT = FRESH_CODE_AT + 1


def decode_record(
    record: tuple[Any, ...],
    module: str,
    qualname: str,
    name: str,
    filename: str,
    namespace: dict[str, Any],
    details: Details | Callable[[], Details],
) -> FunctionInfo:
    """The FunctionInfo of ``record`` (as :func:`encode_record` made it), for the function
    of that module, names, file and globals. Raises on a malformed record."""
    if len(record) != len(RECORD_FIELDS):
        raise ValueError(f"the record has {len(record)} fields, not {len(RECORD_FIELDS)}")
    if _POSITIONAL:  # once per marked function at every warm import: keep it cheap
        return FunctionInfo(  # type: ignore[call-arg]  # checked by _positional_order
            module,
            qualname,
            name,
            filename,
            *record[:_CUT],
            namespace,
            details,
            *record[_CUT:],
        )
    return FunctionInfo(
        module=module,
        qualname=qualname,
        name=name,
        filename=filename,
        globals=namespace,
        details=details,
        **dict(zip(RECORD_FIELDS, record)),
    )


def forget_module(module: str) -> None:
    """Drop what is registered for ``module`` (a throwaway module, such as a test program).

    Registered functions are kept for the life of the process, so snapshots of
    them can always be named; a program that loads many short-lived modules
    releases them with this.
    """
    for name in [k for k in _BY_NAME if k[0] == module]:
        del _BY_NAME[name]
    for code_id in [k for k, info in _BY_CODE.items() if info.module == module]:
        del _BY_CODE[code_id]
    for place, infos in list(_BY_PLACE.items()):
        infos[:] = [info for info in infos if info.module != module]
        if not infos:
            del _BY_PLACE[place]
    _UNINDEXED[:] = [waiting for waiting in _UNINDEXED if waiting[0] != module]
    for pending in _UNBUILT_OF_MODULE.pop(module, ()):
        _drop_pending(pending)


@contextlib.contextmanager
def session_namespace(namespace: dict[str, Any]) -> Iterator[None]:
    """Save or restore with ``namespace`` standing for the globals of code defined in it."""
    token = _SESSION.set(namespace)
    try:
        yield
    finally:
        _SESSION.reset(token)


def current_session() -> dict[str, Any] | None:
    return _SESSION.get()


def adopt_function(fn: types.FunctionType) -> None:
    """Make a checkpointable function rebuilt by value the live one of its info.

    A by-value info arrives with only its resume code; the function that
    carried it brings the fresh code, so that the generators it makes after
    the load can be captured too.
    """
    info = fn.__dict__.get("__contsnap__")
    if not isinstance(info, FunctionInfo):
        return
    if fn.__code__.co_filename != info.filename:  # cloudpickle says "<dynamic-code>"
        fn.__code__ = fn.__code__.replace(co_filename=info.filename)
    if info.fresh_code is None:
        info.fresh_code = fn.__code__
        info.live_function = fn
        info.register()
    elif fn.__code__ is not info.fresh_code and fn.__code__ == info.fresh_code:
        # the live function's info, met again in a copy of its function (a class
        # saved by value): generators made by the copy are the info's too
        info.alias(fn.__code__)


def _is_alias(info: FunctionInfo, code: types.CodeType) -> bool:
    ref = info.aliases.get(id(code))
    return ref is not None and ref() is code


def info_for_code(
    code: types.CodeType, namespace: dict[str, Any] | None = None
) -> FunctionInfo | None:
    """The info of a function's code; ``namespace``, the globals the code runs in, helps
    build one the import hook left pending."""
    info = _BY_CODE.get(id(code))
    if info is not None and (
        code is info.fresh_code
        or (isinstance(info.details, Details) and code is info.details.resume_code)
        or _is_alias(info, code)
    ):
        return info
    pending = _pending_for(code)
    if pending is not None:
        return _resolve(pending, namespace=namespace)
    if code.co_flags & CO_ITERABLE_COROUTINE:
        plain = code.replace(co_flags=code.co_flags & ~CO_ITERABLE_COROUTINE)
        for waiting in [p for p in _UNBUILT.values() if p.code == plain]:
            _resolve(waiting, namespace=namespace)
        for candidate in _BY_PLACE.get((code.co_filename, code.co_firstlineno), ()):
            if plain == candidate.fresh_code:
                candidate.alias(code)
                return candidate
    return None


def _registered(module: str, qualname: str) -> FunctionInfo | None:
    """The registered function of that name, or the pending one, built now."""
    known = _BY_NAME.get((module, qualname))
    if known is None:
        _index_pending()
        known = _resolve(_UNBUILT_BY_NAME.get((module, qualname)))
    return known


def _info_by_name(module: str, qualname: str, fingerprint: str) -> FunctionInfo:
    known = _registered(module, qualname)
    if known is not None and known.fingerprint == fingerprint:
        return known
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):  # not found, not broken
            raise CheckpointError(
                f"cannot import module {module!r} to resume {qualname}: no module named "
                f"{exc.name!r} on sys.path. Is it on sys.path? Run from the directory the "
                "snapshot was taken in, or add that directory to sys.path (PYTHONPATH)"
            ) from exc
        raise CodeChangedError(
            f"cannot import module {module!r} to resume {qualname}: {type(exc).__name__}: {exc}"
        ) from exc
    except Exception as exc:  # the module itself failed: a changed or missing program
        raise CodeChangedError(
            f"cannot import module {module!r} to resume {qualname}: {type(exc).__name__}: {exc}"
        ) from exc
    info = _registered(module, qualname)
    if info is None:
        raise CodeChangedError(
            f"{module}.{qualname} is no longer a @checkpointable generator function; "
            "the snapshot was taken from code that has changed (or the function was "
            "marked by an import hook: install the same hook before loading)"
        )
    if info.fingerprint != fingerprint:
        return _changed(info, fingerprint)  # type: ignore[no-any-return]
    return info


def live_info(module: str, qualname: str) -> FunctionInfo | None:
    """The registered function of that name (its module imported if need be), or None."""
    if "<lambda>" in qualname:  # several lambdas share a qualname: none is "the" one
        return None
    known = _registered(module, qualname)
    if known is not None or "<locals>" in qualname:
        return known
    if module not in sys.modules and module != "__main__":
        try:
            importlib.import_module(module)
        except Exception:  # loading reports it, with the whole story
            return None
    return _registered(module, qualname)


#: ``finder(info, old_fingerprint)``: how to resume a frame of that older code, or None
#: (``_migrate`` registers the migrations' finder when it is imported)
migration_finders: list[Callable[[FunctionInfo, str], Any]] = []
STATE.add(__name__, "migration_finders", None, "registered by _migrate when it is imported")


def _changed(info: FunctionInfo, old_fingerprint: str) -> Any:
    """A migration for the old version of ``info``'s function, or CodeChangedError."""
    for finder in migration_finders:
        migrating = finder(info, old_fingerprint)
        if migrating is not None:
            return migrating
    raise code_changed([(info, old_fingerprint)])


def function_info(fn: Any) -> FunctionInfo | None:
    """The info of a function returned by @checkpointable (None for anything else)."""
    info = getattr(fn, "__contsnap__", None)
    while info is None and isinstance(fn, types.FunctionType):
        # made by the import hook from its cached code (maybe behind functools.wraps)
        info = pending_info(fn)
        fn = getattr(fn, "__wrapped__", None)
    return info if isinstance(info, FunctionInfo) else None


def code_changed(changed: list[tuple[FunctionInfo, str]]) -> CodeChangedError:
    """The error for functions whose code changed since the snapshot: each one is named."""
    named = [
        f"{info.module}.{info.qualname} ({info.filename}:{info.def_line}, fingerprint "
        f"{old} -> {info.fingerprint})"
        for info, old in changed
    ]
    what = named[0] if len(named) == 1 else f"{len(named)} functions: {'; '.join(named)}"
    return CodeChangedError(
        f"{what} changed since the snapshot was taken; resuming old state into new code is "
        "refused. Finish the old run with the old code, or register a migration "
        "(@contsnap.migration) for each changed function."
    )


# A by-value record carries the globals its resume code uses; for a function that calls
# itself (or a partner that calls it back) they hold the function, whose ``__contsnap__``
# is the record being written. That reference is saved as an _InfoRef to the record's
# key, and set to the info once the load has built it.

#: infos being pickled by value, innermost last
_SAVING_BY_VALUE: contextvars.ContextVar[tuple[FunctionInfo, ...]] = contextvars.ContextVar(
    "contsnap_saving_by_value", default=()
)
#: functions rebuilt by the by-value loads in progress whose info is still being built
_WAITING_FOR_INFO: contextvars.ContextVar[list[tuple[_InfoRef, types.FunctionType]] | None] = (
    contextvars.ContextVar("contsnap_waiting_for_info", default=None)
)


_cp: Any = importlib.import_module("cloudpickle.cloudpickle")


#: classes a load found alive in this process (cloudpickle tracks a class saved by value
#: and hands back the one it knows): their state is not set again
_LIVE_CLASSES: weakref.WeakSet[type] = weakref.WeakSet()
STATE.add(__name__, "_LIVE_CLASSES", None, "classes of this process that a load found alive")
#: classes a load made: not the program's own (a snapshot loaded in another process
#: carries a class in each pickle that needs it, the by-value records included; each
#: one sets its state, as cloudpickle does, the last one winning)
_MADE_BY_LOAD: weakref.WeakSet[type] = weakref.WeakSet()
STATE.add(__name__, "_MADE_BY_LOAD", None, "classes a load made: their state is set by each load")


def by_value_class(reduced: tuple[Any, ...]) -> tuple[Any, ...]:
    """cloudpickle's reduction of a class saved by value (a class of a script, or one
    defined in a function), made to leave a class the loading process has alone."""
    return (_make_class, (reduced[0], reduced[1]), *reduced[2:-1], _set_class_state)


def _make_class(make: Callable[..., type], args: tuple[Any, ...]) -> type:
    """cloudpickle's class skeleton, noting a class the program itself made (not a load)
    that this process already has (both of cloudpickle's skeleton makers take the
    class's tracker id second to last)."""
    tracker = args[-2] if len(args) >= 2 else None
    known = _cp._DYNAMIC_CLASS_TRACKER_BY_ID.get(tracker) if isinstance(tracker, str) else None
    cls = make(*args)
    if known is None:
        _MADE_BY_LOAD.add(cls)
    elif cls is known and cls not in _MADE_BY_LOAD:
        _LIVE_CLASSES.add(cls)
    return cls


def _set_class_state(cls: type, state: Any) -> None:
    """cloudpickle's class state, except for a class that lives here already: resetting it
    would put the snapshot's copies of its methods and attributes in place of the live
    ones (a class of a script, restored in the process that saved it)."""
    if cls in _LIVE_CLASSES:
        _LIVE_CLASSES.discard(cls)
        return
    _cp._class_setstate(cls, state)


class _InfoRef:
    """Stands for a by-value info inside its own record (a recursive function)."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[str, str, str]) -> None:
        self.key = key


def _key(info: FunctionInfo) -> tuple[str, str, str]:
    return (info.module, info.qualname, info.fingerprint)


class _CarrierPickler(cloudpickle.Pickler):  # type: ignore[misc,unused-ignore]
    """cloudpickle for a by-value record: a reference back to a record being written is
    an _InfoRef, and a rebuilt function that holds one waits for its info."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is FunctionInfo and any(obj is saving for saving in _SAVING_BY_VALUE.get()):
            return (_InfoRef, (_key(obj),))
        if type(obj) is contextvars.ContextVar:
            saving = _SAVING_BY_VALUE.get()
            where = saving[-1].module if saving else "a module"
            raise NotCheckpointableError(
                f"the context variable {obj.name!r}, a global of {where}, cannot be carried "
                "by value with the function's code (another process would have a variable "
                "of its own): define it in a module the resuming process imports"
            )
        reduced = super().reducer_override(obj)
        if isinstance(reduced, tuple) and reduced[-1] is _cp._class_setstate:
            return by_value_class(reduced)
        return reduced

    def _dynamic_function_reduce(self, func: types.FunctionType) -> Any:
        reduced = super()._dynamic_function_reduce(func)
        if "__contsnap__" in func.__dict__:
            return (*reduced[:5], _set_carried_function_state)
        return reduced


def _set_carried_function_state(fn: types.FunctionType, state: Any) -> None:
    _cp._function_setstate(fn, state)
    ref = fn.__dict__.get("__contsnap__")
    waiting = _WAITING_FOR_INFO.get()
    if isinstance(ref, _InfoRef) and waiting is not None:
        waiting.append((ref, fn))


def _pickle_by_value(info: FunctionInfo) -> bytes:
    """The record of ``info`` with its resume code in a carrier function, which cloudpickle
    saves with the globals it uses. The fresh code is left out: the function that carries
    the info by value brings it (see :func:`adopt_function`)."""
    closure = tuple(types.CellType() for _ in info.resume_code.co_freevars)
    carrier = types.FunctionType(info.resume_code, info.globals, info.name, None, closure)
    carrier.__module__ = info.module
    carrier.__qualname__ = info.qualname
    record = list(encode_record(info))
    record[FRESH_CODE_AT] = None
    names = (info.module, info.qualname, info.name, info.filename)
    buffer = io.BytesIO()
    token = _SAVING_BY_VALUE.set((*_SAVING_BY_VALUE.get(), info))
    try:
        pickler = _CarrierPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dump((names, tuple(record), encode_labels(info.labels), carrier))
    finally:
        _SAVING_BY_VALUE.reset(token)
    return buffer.getvalue()


def _info_by_value(data: bytes) -> FunctionInfo:
    waiting = _WAITING_FOR_INFO.get()
    if waiting is not None:
        return _info_by_value_in(data, waiting)
    waiting = []
    token = _WAITING_FOR_INFO.set(waiting)
    try:
        return _info_by_value_in(data, waiting)
    finally:
        _WAITING_FOR_INFO.reset(token)


def _resolve_waiting(
    info: FunctionInfo, waiting: list[tuple[_InfoRef, types.FunctionType]]
) -> None:
    """Give the functions rebuilt with an _InfoRef to ``info`` the info itself."""
    key = _key(info)
    for ref, fn in [pair for pair in waiting if pair[0].key == key]:
        waiting.remove((ref, fn))
        fn.__dict__["__contsnap__"] = info
        adopt_function(fn)


def _info_by_value_in(
    data: bytes, waiting: list[tuple[_InfoRef, types.FunctionType]]
) -> FunctionInfo:
    try:
        names, record, labels, carrier = _moved.loads(data)
        module, qualname, name, filename = names
        fingerprint = record[RECORD_FIELDS.index("fingerprint")]
        details = Details(labels=decode_labels(labels), resume_code=carrier.__code__)
    except CodeChangedError:
        raise
    except Exception as exc:
        raise SnapshotCorruptError(
            f"the by-value function in the snapshot cannot be rebuilt: {type(exc).__name__}: {exc}"
        ) from exc
    live = _BY_NAME.get((module, qualname))
    if live is not None and live.fingerprint == fingerprint:
        _resolve_waiting(live, waiting)
        return live
    if live is not None and _by_name(qualname) and _SESSION.get() is None:
        # the script (``__main__``) defines it again, differently: its code changed
        return _changed(live, fingerprint)  # type: ignore[no-any-return]
    namespace = _SESSION.get()
    code_globals = carrier.__globals__
    if namespace is not None and module == namespace.get("__name__"):
        # defined in the session being restored: run in its namespace, where the
        # restored variables go (the carrier's copies only fill names it lacks)
        for key, value in code_globals.items():
            namespace.setdefault(key, value)
        code_globals = namespace
    try:
        info = decode_record(record, module, qualname, name, filename, code_globals, details)
    except Exception as exc:
        raise SnapshotCorruptError(
            f"the by-value record of {qualname} in the snapshot cannot be read: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    _BY_CODE[id(info.resume_code)] = info
    _resolve_waiting(info, waiting)
    return info
