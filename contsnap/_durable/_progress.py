"""The status line of a durable job on a terminal, and where its generator is paused."""

from __future__ import annotations

import os
import sys
from typing import Any

from .._errors import CheckpointError
from .._snapshot import capture, info_of


class _Progress:
    """A status line on a terminal; nothing when stderr is not a TTY.

    Drawn with rich when it is installed (``contsnap[progress]``), else as a plain
    line rewritten in place.
    """

    INTERVAL = 0.2

    def __init__(self, name: str, enabled: bool | None) -> None:
        if enabled is None:
            enabled = sys.stderr.isatty() and not os.environ.get("CONTSNAP_QUIET")
        self.name = name
        self.enabled = enabled
        self.live: Any = None
        self.shown = 0  # width of the plain status line on screen
        self.next_update = 0.0
        if enabled:
            try:
                from rich.console import Console
                from rich.live import Live
            except ImportError:
                return
            self.live = Live("", console=Console(stderr=True), refresh_per_second=5, transient=True)

    def __enter__(self) -> _Progress:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
        self._clear()

    def update(self, steps: int, last_save: float | None, value: Any, now: float) -> None:
        if not self.enabled or now < self.next_update:
            return
        self.next_update = now + self.INTERVAL
        saved = "not saved yet" if last_save is None else f"saved {now - last_save:.0f} s ago"
        shown = repr(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        if self.live is not None:
            self.live.update(f"[bold]{self.name}[/bold]  {steps:,} steps  ·  {saved}  ·  {shown}")
            return
        line = f"{self.name}  {steps:,} steps  ·  {saved}  ·  {shown}"
        sys.stderr.write("\r" + line.ljust(self.shown))
        sys.stderr.flush()
        self.shown = len(line)

    def _clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * self.shown + "\r")
            self.shown = 0

    def say(self, message: str) -> None:
        if self.live is not None:
            self.live.console.print(message)
        else:
            self._clear()
            print(message, file=sys.stderr, flush=True)


def _where(gen: Any) -> str:
    info = info_of(gen)
    if info is None:
        return "?"
    try:
        state = capture(gen)
    except CheckpointError:
        return info.qualname
    line = info.line_of(state.label)
    return f"{info.qualname} at {info.filename}:{line}"
