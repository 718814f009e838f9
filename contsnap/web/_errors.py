"""The web layer's errors: all are `contsnap.CheckpointError`s."""

from __future__ import annotations

from contsnap._errors import CheckpointError

__all__ = ["WebError"]


class WebError(CheckpointError):
    """A web conversation was declared or answered wrongly; the message says how to fix it."""

    __module__ = "contsnap.web"
