"""What a driver does to a paused generator (send, throw, close): plain data, so that every
mode replays the very same steps."""

from __future__ import annotations

import dataclasses
from typing import Final, Literal

from hypothesis import strategies as st


@dataclasses.dataclass(frozen=True)
class Send:
    """Resume the generator with ``gen.send(value)`` (``Send(None)`` is ``next(gen)``)."""

    value: object = None


@dataclasses.dataclass(frozen=True, init=False)
class Throw:
    """Resume the generator by raising ``exc_type(*args)`` at the paused ``yield``.

    ``Throw(KeyError("k"))`` is ``Throw(KeyError, ("k",))``: every mode throws an
    exception of its own, rebuilt from the type and the arguments, so the
    instance given must be one that its type and ``args`` rebuild.
    """

    exc_type: type[BaseException]
    args: tuple[object, ...]

    def __init__(
        self,
        exc_type: type[BaseException] | BaseException = ValueError,
        args: tuple[object, ...] = ("thrown",),
    ) -> None:
        if isinstance(exc_type, BaseException):
            instance = exc_type
            exc_type, args = type(instance), tuple(instance.args)
            _check_rebuilds(instance)
        elif not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
            raise TypeError(
                f"Throw takes an exception class and its arguments, e.g. "
                f"Throw(KeyError, ('k',)), or an exception, e.g. Throw(KeyError('k')); "
                f"got {exc_type!r}"
            )
        if not isinstance(args, tuple):
            raise TypeError(
                f"Throw's args is a tuple of the exception's arguments, e.g. "
                f"Throw({exc_type.__name__}, ('k',)); got {args!r}"
            )
        object.__setattr__(self, "exc_type", exc_type)
        object.__setattr__(self, "args", args)


def _check_rebuilds(instance: BaseException) -> None:
    """``type(instance)(*instance.args)`` must be an equal exception: every mode throws one."""
    kind = type(instance)
    try:
        rebuilt = kind(*instance.args)
    except Exception as exc:
        problem = f"{kind.__name__}(*{instance.args!r}) raises {type(exc).__name__}: {exc}"
    else:
        if rebuilt.args == instance.args and vars(rebuilt) == vars(instance):
            return
        problem = (
            f"{kind.__name__}(*{instance.args!r}) has the attributes {vars(rebuilt)!r}, "
            f"not {vars(instance)!r}"
        )
    raise TypeError(
        f"Throw({instance!r}): each mode throws a new exception built from the type and its "
        f"args, but {problem}; pass Throw(SomeError, args) with args that build it"
    )


@dataclasses.dataclass(frozen=True)
class Close:
    """Call ``gen.close()``: the generator runs its ``finally`` blocks and ends."""


Action = Send | Throw | Close
"""One step of the driver; a bare value in an action list stands for ``Send(value)``."""

Event = tuple[object, ...]
"""One entry of a transcript, e.g. ``("yield", 3)`` or ``("raise", "KeyError", ("k",))``."""

Trace = list[Event]

Mode = Literal["native", "transformed", "roundtrip", "fork"]
MODES: Final[tuple[Mode, ...]] = ("native", "transformed", "roundtrip", "fork")


def sent_values() -> st.SearchStrategy[int | None]:
    """Values to send into a generator: small ints mostly (programs compute with them).

    ``None`` comes up about one time in eight: it is what ``next()`` sends, and it
    makes arithmetic on the received value raise ``TypeError``, which is one more
    exception path to compare.
    """
    return st.integers(-3, 12).map(lambda n: None if n > 10 else n)


@st.composite
def driver_actions(draw: st.DrawFn, max_size: int = 12) -> list[Action]:
    """Lists of driver actions: mostly sends, sometimes a thrown ``ValueError``/``KeyError``,
    rarely a ``close()``. Shrinks towards plain sends."""
    actions: list[Action] = []
    for _ in range(draw(st.integers(0, max_size))):
        roll = draw(st.integers(0, 39))
        if roll < 36:
            actions.append(Send(draw(sent_values())))
        elif roll < 38:
            actions.append(Throw(ValueError, ("thrown", len(actions))))
        elif roll < 39:
            actions.append(Throw(KeyError, ("thrown",)))
        else:
            actions.append(Close())
    return actions


def _as_action(step: object) -> Action:
    return step if isinstance(step, (Send, Throw, Close)) else Send(step)
