"""Process-wide state: every module-level mutable object of contsnap, in one place.

Each module registers its state on the line after its definition::

    _REFUSED: dict[int, types.CodeType] = {}
    STATE.add(__name__, "_REFUSED")

saying how it is reset: ``"clear"`` (a cache, a table of overrides or counts: emptied),
``"initial"`` (a module global that is rebound: set back to the value it had when
registered), ``"attributes"`` (a ``threading.local`` or an object of settings: its own
attributes dropped, in the calling thread, so the class's defaults apply again), a function
of the module, or ``None`` with the reason it is kept
(records that live objects need: the infos of marked functions, the weak maps of restored
generators; registrations made when a module is imported; counters whose values must stay
unique). `Registry.reset` resets every piece that can be reset; `Registry.fresh` empties
the pieces it is given (kept ones too) for the length of a ``with`` block and puts them
back, which is what a test means by "as in a new process". ``tests/test_registry.py``
checks that every module-level mutable of contsnap is registered.

This module imports nothing of contsnap: any module may register here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

Reset = Callable[[], None]


@dataclass(frozen=True)
class Piece:
    """One piece of process-wide state: ``module.attribute`` and how it is reset."""

    module: str
    attribute: str
    #: "clear", "initial", "attributes", a function of no arguments, or None (kept: ``why``)
    reset: str | Reset | None
    why: str
    initial: Any

    @property
    def name(self) -> str:
        return f"{self.module}.{self.attribute}"

    def get(self) -> Any:
        """The object now (a rebound global is read anew)."""
        return getattr(sys.modules[self.module], self.attribute)

    def do_reset(self) -> None:
        if self.reset is None:
            raise ValueError(f"{self.name} is not reset: {self.why}")
        if self.reset == "clear":
            self.get().clear()
        elif self.reset == "initial":
            setattr(sys.modules[self.module], self.attribute, self.initial)
        elif self.reset == "attributes":
            vars(self.get()).clear()
        elif callable(self.reset):
            self.reset()
        else:
            raise ValueError(f"{self.name}: unknown reset {self.reset!r}")


def _holds_state(obj: Any) -> bool:
    """A container, or an object with attributes of its own (else: a rebound value)."""
    return hasattr(obj, "clear") or (hasattr(obj, "__dict__") and not callable(obj))


def _save(obj: Any) -> Any:
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, set) or (hasattr(obj, "add") and hasattr(obj, "discard")):
        return set(obj)
    if hasattr(obj, "items"):
        return dict(obj.items())
    return vars(obj).copy()  # threading.local, or an object of settings


def _put_back(obj: Any, saved: Any) -> None:
    if isinstance(obj, list):
        obj[:] = saved
    elif hasattr(obj, "items") or isinstance(saved, set):
        obj.clear()
        obj.update(saved)
    else:
        vars(obj).clear()
        vars(obj).update(saved)


def _empty(obj: Any) -> None:
    if hasattr(obj, "clear"):
        obj.clear()
    else:
        vars(obj).clear()


class Registry:
    """Every piece of contsnap's process-wide state (see the module docstring)."""

    def __init__(self) -> None:
        self._pieces: dict[str, Piece] = {}

    def add(
        self, module: str, attribute: str, reset: str | Reset | None = "clear", why: str = ""
    ) -> None:
        """Register ``module.attribute``, defined just before this call."""
        if reset is None and not why:
            raise ValueError(f"{module}.{attribute}: say why it is kept (why=...)")
        initial = getattr(sys.modules[module], attribute)
        piece = Piece(module, attribute, reset, why, initial)
        self._pieces[piece.name] = piece

    def __iter__(self) -> Iterator[Piece]:
        return iter(list(self._pieces.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._pieces

    def select(self, names: tuple[str, ...]) -> list[Piece]:
        """The pieces named, or in the modules named (a prefix of a name); all when none."""
        if not names:
            return list(self)
        chosen = [p for p in self if any(p.name == n or p.name.startswith(n + ".") for n in names)]
        unknown = [n for n in names if not any(p.name.startswith(n) for p in chosen)]
        if unknown:
            raise KeyError(f"no process-wide state registered as {', '.join(unknown)}")
        return chosen

    def reset(self, *names: str) -> None:
        """Reset the pieces named (all, when none) that can be reset; kept ones are left."""
        for piece in self.select(names):
            if piece.reset is not None:
                piece.do_reset()

    @contextmanager
    def fresh(self, *names: str) -> Iterator[None]:
        """The pieces named (every resettable one, when none) start empty, as in a new
        process, and are put back as they were after the block."""
        pieces = [p for p in self.select(names) if names or p.reset is not None]
        saved: list[tuple[Piece, Any, bool]] = []  # (piece, what it held, rebound?)
        for piece in pieces:
            obj = piece.get()
            rebound = piece.reset == "initial" or not _holds_state(obj)
            saved.append((piece, obj if rebound else _save(obj), rebound))
            if piece.reset is None or piece.reset == "attributes":
                _empty(obj)
            else:
                piece.do_reset()
        try:
            yield
        finally:
            for piece, value, rebound in reversed(saved):
                if rebound:
                    setattr(sys.modules[piece.module], piece.attribute, value)
                else:
                    _put_back(piece.get(), value)


#: the one registry of contsnap's process-wide state
STATE = Registry()
