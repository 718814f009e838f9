"""``%load_ext contsnap``: save a notebook session's paused generators and data, and load them.

``%contsnap save FILE`` writes every variable of the user namespace that can
be serialised (paused checkpointable generators included) into one snapshot,
so objects shared between them stay shared; ``%contsnap load FILE`` brings
them back, in this kernel or a fresh one. IPython is imported only when a
magic runs; this module talks to the shell through the object IPython hands
to `load_ipython_extension`.
"""

from __future__ import annotations

import gc
import importlib
import os
import re
import shlex
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _codec
from ._checkpoints._files import write_atomic
from ._errors import CheckpointError
from ._info import session_namespace
from ._resources import Unrestored, salvaging, type_name
from ._snapshot import SUSPENDABLE, to_payload

USAGE = """\
usage: %contsnap save FILE    save the paused generators and variables of this session
       %contsnap load FILE    load them back (in this kernel or a fresh one); a variable
                              holding what cannot be rebuilt (a file that changed) is
                              listed, the others are loaded
       %contsnap help         show this message

A session is signed with the key in effect (contsnap.configure(key=...), CONTSNAP_KEY,
else the per-user key file); loading refuses one signed with another key, or unsigned."""

#: marks the payload of a session snapshot, so another snapshot is not mistaken for one
SESSION_MARK = "contsnap-session/1"

# IPython's history and output caches: _, __, ___, _i, _ii, _iii, _i7, _7, _ih, _oh, _dh
_IPYTHON_NAME = re.compile(r"_{1,3}|_i{1,3}|_i?\d+|_ih|_oh|_dh|In|Out|exit|quit|get_ipython")


class SessionError(CheckpointError):
    """A session snapshot cannot be saved or loaded; IPython shows only the message."""

    def _render_traceback_(self) -> list[str]:
        return [f"contsnap: {self}"]


@dataclass
class SaveReport:
    """What ``%contsnap save`` wrote, and what it left out and why."""

    saved: list[str] = field(default_factory=list)
    #: (name, type, reason) of every variable that could not be serialised
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    size: int = 0


def _hidden_names(shell: Any) -> set[str]:
    return set(getattr(shell, "user_ns_hidden", {}) or {})


def session_variables(
    namespace: dict[str, Any], hidden: set[str]
) -> tuple[dict[str, Any], list[str]]:
    """The user's variables, and the names of the modules among them (not saved)."""
    chosen: dict[str, Any] = {}
    modules: list[str] = []
    for name, value in namespace.items():
        if name in hidden or _IPYTHON_NAME.fullmatch(name) or name.startswith("__"):
            continue
        if isinstance(value, types.ModuleType):
            modules.append(name)
            continue
        chosen[name] = value
    return chosen, sorted(modules)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.removeprefix("cannot serialise the snapshot: ")


def save_session(
    namespace: dict[str, Any], path: str, *, hidden: set[str], key: bytes | str | None = None
) -> SaveReport:
    """Write the session's serialisable variables as one snapshot, atomically."""
    chosen, modules = session_variables(namespace, hidden)
    report = SaveReport(modules=modules)
    with session_namespace(namespace):
        try:
            data = _codec.encode({SESSION_MARK: chosen}, kind="notebook", key=key)
        except CheckpointError:
            # find the culprits one by one, then save the others together
            for name in sorted(chosen):
                try:
                    to_payload(chosen[name])
                except Exception as exc:
                    report.refused.append((name, _type_name(chosen[name]), _reason(exc)))
            for name, _type, _why in report.refused:
                del chosen[name]
            data = _codec.encode({SESSION_MARK: chosen}, kind="notebook", key=key)
    write_atomic(path, data)
    report.saved = sorted(chosen)
    report.size = len(data)
    return report


@dataclass
class LoadReport:
    """What ``%contsnap load`` restored, and what it could not and why."""

    restored: dict[str, Any] = field(default_factory=dict)
    #: (name, what it holds, why) of every variable that could not be restored
    skipped: list[tuple[str, str, str]] = field(default_factory=list)


def load_session(
    namespace: dict[str, Any], path: str, *, key: bytes | str | None = None
) -> LoadReport:
    """Read a session snapshot; its functions run in ``namespace`` (the caller binds the names).

    A variable that holds a resource which cannot be rebuilt here (a file that
    changed, a handler that is not registered) is skipped and reported; the
    others are restored. Everything else that fails the load fails all of it.
    """
    with open(path, "rb") as file:
        data = file.read()
    before = dict(namespace)
    try:
        with session_namespace(namespace), salvaging() as lost:
            # format 1 had no kinds: a session was written as a plain snapshot
            legacy = data[4:5] == b"\x01"
            kinds = ("snapshot",) if legacy else ("notebook",)
            loaded = _codec.decode(data, kinds=kinds, key=key).obj
        if not isinstance(loaded, dict) or not isinstance(loaded.get(SESSION_MARK), dict):
            raise SessionError(
                f"it holds a contsnap snapshot of {_type_name(loaded)}, not a session saved "
                "by %contsnap save; load it with contsnap.loads"
            )
    except BaseException:
        # rebuilding functions writes their globals into the namespace: undo that
        namespace.clear()
        namespace.update(before)
        raise
    report = LoadReport()
    variables: dict[str, Any] = loaded[SESSION_MARK]
    for name, value in variables.items():
        found = _unrestored_in(value, namespace, {id(p) for p in lost}) if lost else None
        if found is None:
            report.restored[name] = value
        else:
            kind = found.kind if value is found else type(value)
            what = type_name(kind) if isinstance(kind, type) else str(kind)
            report.skipped.append((name, what, str(found.error)))
    report.skipped.sort()
    return report


def _unrestored_in(value: Any, namespace: dict[str, Any], lost: set[int]) -> Unrestored | None:
    """The first placeholder of a resource that was not rebuilt which ``value`` reaches."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if id(obj) in lost:
            found: Unrestored = obj
            return found
        if obj is namespace or isinstance(obj, (type, types.ModuleType, str, bytes, int, float)):
            continue
        if isinstance(obj, types.FunctionType):
            # not its globals: the session's namespace and whatever modules hold
            stack.extend((obj.__closure__ or ()) + (obj.__defaults__ or ()))
            stack.extend((obj.__kwdefaults__ or {}).values())
            continue
        if isinstance(obj, types.FrameType):
            stack.extend(dict(obj.f_locals).values())
            continue
        stack.extend(gc.get_referents(obj))
    return None


def _type_name(value: Any) -> str:
    kind = type(value)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _describe_value(value: Any) -> str:
    if isinstance(value, SUSPENDABLE):
        prefix = {"generator": "gi", "coroutine": "cr", "async_generator": "ag"}[
            type(value).__name__
        ]
        frame = getattr(value, f"{prefix}_frame")
        where = f"paused at line {frame.f_lineno}" if frame is not None else "finished"
        return f"{type(value).__name__} {value.__qualname__}, {where}"
    return _type_name(value)


def _count(names: Sequence[str] | dict[str, Any]) -> str:
    return f"{len(names)} variable{'' if len(names) == 1 else 's'}"


def _print_table(rows: Sequence[tuple[str, ...]], indent: str = "  ") -> None:
    width = max(len(row[0]) for row in rows)
    for row in rows:
        print(f"{indent}{row[0]:<{width}}  " + "  ".join(row[1:]))


def _usage_error(message: str) -> Exception:
    """IPython's UsageError: shown as one message, without a traceback."""
    error: Any = importlib.import_module("IPython.core.error")
    usage: Exception = error.UsageError(f"{message}\n{USAGE}")
    return usage


def contsnap_magic(shell: Any, line: str) -> None:
    """The ``%contsnap`` line magic."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise _usage_error(f"%contsnap: {exc}") from None
    if not words or words[0] in ("help", "-h", "--help"):
        print(USAGE)
        return
    command, args = words[0], words[1:]
    if command not in ("save", "load"):
        raise _usage_error(f"%contsnap: unknown command {command!r}")
    if len(args) != 1:
        raise _usage_error(f"%contsnap {command}: expected one FILE, got {len(args)} arguments")
    path = os.path.expanduser(args[0])
    if command == "save":
        _save(shell, path)
    else:
        _load(shell, path)


def _save(shell: Any, path: str) -> None:
    try:
        report = save_session(shell.user_ns, path, hidden=_hidden_names(shell))
    except CheckpointError as exc:
        raise SessionError(f"cannot save to {path}: {exc}") from None
    except OSError as exc:
        raise SessionError(f"cannot write {path}: {exc}") from None
    print(f"contsnap: saved {_count(report.saved)} to {path} ({report.size} bytes, signed)")
    if report.saved:
        _print_table([(name, _describe_value(shell.user_ns[name])) for name in report.saved])
    if report.refused:
        print(f"not saved ({len(report.refused)}):")
        _print_table(report.refused)
    if report.modules:
        print(
            "modules are not saved; import them again after loading: " + ", ".join(report.modules)
        )


def _load(shell: Any, path: str) -> None:
    try:
        report = load_session(shell.user_ns, path)
    except CheckpointError as exc:
        raise SessionError(f"cannot load {path}: {exc}") from None
    except OSError as exc:
        raise SessionError(f"cannot read {path}: {exc}") from None
    restored = report.restored
    shell.push(restored)
    print(f"contsnap: loaded {_count(restored)} from {path}")
    if restored:
        _print_table([(name, _describe_value(value)) for name, value in sorted(restored.items())])
    if report.skipped:
        print(f"not loaded ({len(report.skipped)}):")
        _print_table(report.skipped)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext contsnap``: register the ``%contsnap`` line magic."""

    def contsnap(line: str) -> None:
        contsnap_magic(ipython, line)

    contsnap.__doc__ = USAGE
    ipython.register_magic_function(contsnap, "line", "contsnap")


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext contsnap``: remove the ``%contsnap`` magic."""
    ipython.magics_manager.magics["line"].pop("contsnap", None)


__all__ = ["load_ipython_extension", "unload_ipython_extension"]
