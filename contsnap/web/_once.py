"""``once``: a side effect that runs once per conversation, whichever page is resubmitted."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

from contsnap import _codec

from ._app import current_app
from ._pages import KIND

__all__ = ["once"]

T = TypeVar("T")


def once(name: str, action: Callable[[], T]) -> T:
    """Run ``action()`` the first time this conversation gets here; later, its saved result.

    A resubmitted page (back button, second tab, reload of a POST) runs the handler's
    code between two pages again; wrap what must not happen twice (charge a card, send
    a mail) in ``once``. The result is stored with the conversation's pages (same store,
    signed, expiring with them) under ``name`` and the conversation's id; a lease makes
    two tabs submitting at the same moment run it once.
    """
    app, request = current_app()
    digest = hashlib.sha256(f"{app.name}\0{request.conversation}\0{name}".encode()).hexdigest()
    key = f"once-{digest[:40]}"
    identity = f"{app.name}:once:{name}"
    store = app.store
    pages = app.pages
    lease = store.acquire(key + ".lock", ttl=60.0, wait=60.0)
    try:
        data = store.get(key)
        if data is not None:
            saved: T = _codec.decode(data, kinds=(KIND,), identity=identity, key=pages.key).obj
            return saved
        result = action()
        blob = _codec.encode(result, kind=KIND, identity=identity, key=pages.key)
        store.put(key, blob, ttl=pages.ttl)
        return result
    finally:
        store.release(lease)
