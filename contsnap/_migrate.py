"""Migrations: resume state saved by older code in the new code of a changed function.

Like Erlang/OTP's ``code_change``: the user maps the old frame (where it was
paused, its locals) to a suspension point of the new function and the locals
it should have there::

    @contsnap.migration(process, from_fingerprint="3f2a...")
    def add_counter(old):
        return contsnap.Resume(line=old.line + 1, locals={**old.locals, "seen": 0})

Without a migration, loading a snapshot of a function whose code changed
raises [`CodeChangedError`][contsnap.CodeChangedError], naming every changed function.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _info
from ._errors import CheckpointError, CodeChangedError
from ._info import function_info
from ._registry import STATE

__all__ = ["OldFrame", "Resume", "migration"]


@dataclass(frozen=True)
class OldFrame:
    """A frame saved by the old code, as a migration sees it."""

    module: str
    qualname: str
    #: the old code's fingerprint (``contsnap inspect`` shows it)
    fingerprint: str
    #: the line of the old source where it was paused (None when the snapshot does not say)
    line: int | None
    #: the old code's resume point number
    label: int
    #: the user's local variables (closure cells included, by name when known)
    locals: dict[str, Any]
    #: contsnap's own bookkeeping values (``_cs_...``: loop iterators and the like)
    helpers: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Resume:
    """Where the new code resumes: the line of one of its ``yield``/``await`` points."""

    line: int
    locals: dict[str, Any]
    #: contsnap's bookkeeping values; by default the old ones the new point uses
    helpers: dict[str, Any] | None = None


Migration = Callable[[OldFrame], Resume]

_REGISTRY: dict[tuple[str, str], list[tuple[str | None, Migration]]] = {}
STATE.add(__name__, "_REGISTRY", None, "registered by @migration, mostly at import")

# the frames of the envelope's metadata being loaded: the old line of each function
_OLD_LINES: contextvars.ContextVar[Any] = contextvars.ContextVar("contsnap_old_lines", default=None)


def _target_name(target: Any) -> tuple[str, str]:
    if isinstance(target, str):
        module, sep, qualname = target.partition(":")
        if not sep or not module or not qualname:
            raise ValueError(f"a migration target is 'module:qualname', not {target!r}")
        return module, qualname
    info = function_info(target)
    if info is None:
        info = function_info(getattr(target, "__func__", None))  # staticmethod / classmethod
    if info is None:
        raise TypeError(
            f"a migration target is a @checkpointable function or 'module:qualname', not {target!r}"
        )
    return info.module, info.qualname


def migration(
    target: Any, *, from_fingerprint: str | None = None
) -> Callable[[Migration], Migration]:
    """Register ``fn(old: OldFrame) -> Resume`` for snapshots of an older ``target``.

    ``target`` is the (new) checkpointable function or ``"module:qualname"``.
    With ``from_fingerprint``, only snapshots of that old version are
    migrated (a prefix of the fingerprint is enough); without, any older
    version is. A more specific registration wins over a general one.
    """
    key = _target_name(target)

    def register(fn: Migration) -> Migration:
        if not callable(fn):
            raise TypeError(f"a migration is a function of the old frame, not {fn!r}")
        _REGISTRY.setdefault(key, []).append((from_fingerprint, fn))
        return fn

    return register


def find(module: str, qualname: str, fingerprint: str) -> Migration | None:
    """The migration for this old version of the function, if one is registered."""
    found = _REGISTRY.get((module, qualname), [])
    for wanted, fn in reversed(found):
        if wanted is not None and fingerprint.startswith(wanted):
            return fn
    for wanted, fn in reversed(found):
        if wanted is None:
            return fn
    return None


class old_lines:
    """Make the lines the metadata records for each frame known to migrations (worked out
    only when a migration asks: most loads have none). ``frames``: the metadata's frames,
    or a function that describes them when called."""

    __slots__ = ("frames", "token")

    def __init__(self, frames: list[Any] | Callable[[], list[Any]]) -> None:
        self.frames = frames

    def __enter__(self) -> None:
        self.token = _OLD_LINES.set(self.frames)

    def __exit__(self, *exc: object) -> None:
        _OLD_LINES.reset(self.token)


def _lines_of(frames: list[Any]) -> dict[tuple[str, str, str], int | None]:
    lines: dict[tuple[str, str, str], int | None] = {}
    for frame in frames:
        if not isinstance(frame, dict):
            continue
        key = (str(frame.get("module")), str(frame.get("qualname")), str(frame.get("fingerprint")))
        line = frame.get("line")
        # a function twice in one chain at different lines: the line is not known
        lines[key] = line if key not in lines or lines[key] == line else None
    return lines


def old_line(module: str, qualname: str, fingerprint: str) -> int | None:
    frames = _OLD_LINES.get()
    if frames is None:
        return None
    if callable(frames):  # the frames, described when first asked for
        frames = frames()
    return _lines_of(frames).get((module, qualname, fingerprint))


class Migrating:
    """Stands for the function's info while a snapshot of its old code is loaded."""

    def __init__(self, info: Any, migrate: Migration, old_fingerprint: str) -> None:
        self.info = info
        self.migrate = migrate
        self.old_fingerprint = old_fingerprint

    def apply(
        self, label: int, values: dict[str, Any], cells: tuple[Any, ...]
    ) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """(new label, new values, new cell values by name) for the saved old frame."""
        info = self.info
        user = {k: v for k, v in values.items() if not k.startswith("_cs_")}
        helpers = {k: v for k, v in values.items() if k.startswith("_cs_")}
        cell_values = [_cell_value(c) for c in cells]
        if len(cells) == len(info.cell_names):  # same closure shape: by position
            for name, (bound, value) in zip(info.cell_names, cell_values):
                if bound:
                    user.setdefault(name, value)
        old = OldFrame(
            module=info.module,
            qualname=info.qualname,
            fingerprint=self.old_fingerprint,
            line=old_line(info.module, info.qualname, self.old_fingerprint),
            label=label,
            locals=user,
            helpers=helpers,
        )
        try:
            resume = self.migrate(old)
        except CheckpointError:
            raise
        except Exception as exc:
            raise CodeChangedError(
                f"the migration of {info.qualname} from {self.old_fingerprint} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(resume, Resume):
            raise CodeChangedError(
                f"the migration of {info.qualname} returned {resume!r}, not a contsnap.Resume"
            )
        new_label = info.label_of_line.get(resume.line)
        if new_label is None:
            lines = sorted({spec.line for spec in info.labels.values()})
            raise CodeChangedError(
                f"the migration of {info.qualname} resumes at line {resume.line}, which is not "
                f"one suspension point of the new code (those are at lines "
                f"{', '.join(map(str, lines)) or 'none'})"
            )
        wanted = info.saved_names(new_label)
        carried = (
            {k: v for k, v in helpers.items() if k in wanted}
            if resume.helpers is None
            else dict(resume.helpers)
        )
        new_cells = {k: v for k, v in resume.locals.items() if k in info.cell_names}
        new_values = {
            **carried,
            **{k: v for k, v in resume.locals.items() if k not in info.cell_names},
        }
        unknown = set(new_values) - set(wanted)
        if unknown:
            raise CodeChangedError(
                f"the migration of {info.qualname} gives locals the new code does not have at "
                f"line {resume.line}: {', '.join(sorted(unknown))}"
            )
        missing = {h for h in info.labels[new_label].helpers if h not in new_values}
        if missing:
            raise CodeChangedError(
                f"the migration of {info.qualname} to line {resume.line} needs contsnap's "
                f"{', '.join(sorted(missing))} (a loop iterator?), which the old frame did not "
                "have there: pass Resume(helpers=...)"
            )
        return new_label, new_values, new_cells


def _cell_value(cell: Any) -> tuple[bool, Any]:
    try:
        return True, cell.cell_contents
    except ValueError:
        return False, None


def _migrating(info: Any, old_fingerprint: str) -> Migrating | None:
    """How a frame of ``info``'s older code resumes, if a migration is registered for it."""
    migrate = find(info.module, info.qualname, old_fingerprint)
    return None if migrate is None else Migrating(info, migrate, old_fingerprint)


_info.migration_finders.append(_migrating)
