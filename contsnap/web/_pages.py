"""Continuation storage: ids, browser sessions, signed page snapshots in a bounded store.

A page is stored under a random id (``secrets.token_urlsafe(24)``, 192 bits) as a
signed snapshot of kind ``web-page`` bound to the app and the conversation. The id
travels with a short *tag*: an HMAC, under the app's keys, of the conversation, the
browser session and the id. A URL whose tag does not verify (made up, edited, or
leaked from another session) is answered 404 without touching the store; a URL with a
good tag whose page is gone was ours and has expired (410). Pages are grouped by
session, so the store's ``max_per_group`` bounds each session (least recently used
first) and ``idle=``/``ttl=`` expire them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from contsnap import _codec, _keys
from contsnap._keys import mac
from contsnap.stores import SQLiteStore, Store, open_store

__all__ = ["PageStore", "default_data_dir", "new_session"]

_TAG_BYTES = 12
_ID_BYTES = 24
_ID_CHARS = 32  # len(token_urlsafe(24))
_TAG_CHARS = 16
KIND = "web-page"
CLIENT_META = "web_client"  # in a client-side page's signed meta: the session it belongs to
CLIENT_PREFIX = "~"  # a continuation token that is the page itself
_TOUCHED_MAX = 10_000
_B64 = re.compile(r"[A-Za-z0-9_\-]*")
HTML_META = "web_html"
#: in a stored page's signed meta: the id it is stored under (bytes moved to another id
#: in the store, e.g. another session's page, are refused)
PAGE_META = "web_page"


def new_session() -> str:
    """A fresh browser-session id (192 random bits)."""
    return secrets.token_urlsafe(_ID_BYTES)


def default_data_dir() -> str:
    """Where an App keeps its SQLite store by default: ``$XDG_DATA_HOME/contsnap/web``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "contsnap", "web")


@dataclass
class Page:
    """What one stored page holds: the paused handler and what it asked, or a final page.

    ``request`` is the request that started the conversation (the handler's argument),
    kept here so that answering the page needs no search of the handler's locals.
    """

    handler: Any
    ask: Any
    final: str | None = None
    request: Any = None


class PageStore:
    """Pages of one App in a store, keyed by continuation id, grouped by browser session."""

    def __init__(
        self,
        store: Store | str | None,
        *,
        name: str,
        key: _keys.KeyLike | None,
        data_dir: str | None,
        per_session: int,
        max_bytes: int | None,
        idle: float,
        ttl: float,
        bind_session: bool,
        client_side: int = 0,
    ) -> None:
        if isinstance(client_side, bool) or not isinstance(client_side, int) or client_side < 0:
            from ._errors import WebError

            raise WebError(
                f"web.App(client_side={client_side!r}): the largest page to keep in its URL, "
                "in bytes (0: every page in the store)"
            )
        self.client_side = client_side
        self._bounds: dict[str, Any] = {"max_per_group": per_session, "max_bytes": max_bytes}
        # a SQL store evicts a session's pages a tenth of the bound at a time: its per-page
        # write is then an insert, not an insert and a delete (docs/stores.md)
        self._slack = per_session // 10 if isinstance(per_session, int) else 0
        self._given = store
        self._opened: Store | None = None
        self._name = name
        self._data_dir = data_dir
        self.key = key
        self.idle = idle
        self.ttl = ttl
        self.bind_session = bind_session
        self._last_sweep = time.monotonic()
        # pages this process touched (or made) lately: id -> time.monotonic()
        self._touched: dict[str, float] = {}
        self.touch_every = min(idle / 20, ttl / 20, 60.0)

    @property
    def store(self) -> Store:
        """The store, opened on first use (an app module can be imported without side effects)."""
        if self._opened is None:
            given = self._given
            opened: Store
            if given is None:
                directory = self._data_dir or default_data_dir()
                os.makedirs(directory, exist_ok=True)
                path = os.path.join(directory, f"{self._name}.sqlite")
                opened = SQLiteStore(path, **self._bounds, group_slack=self._slack)
            elif isinstance(given, str):
                sql = given.lower().startswith(("sqlite:", "postgresql:", "postgres:"))
                slack = {"group_slack": self._slack} if sql else {}
                opened = cast(Store, open_store(given, **self._bounds, **slack))
            else:
                opened = given
            self._opened = opened
            return opened
        return self._opened

    # --- ids -------------------------------------------------------------------------------

    def ring(self) -> _keys.KeyRing:
        """The keys in effect, resolved once per request (tags and CSRF tokens use it)."""
        return _keys.resolve(self.key)

    def _tag(self, secret: bytes, identity: str, session: str, page_id: str) -> str:
        bound = session if self.bind_session else ""
        message = f"contsnap web page\0{identity}\0{bound}\0{page_id}".encode()
        digest = mac(secret, message)[:_TAG_BYTES]
        return base64.urlsafe_b64encode(digest).decode()

    def new_id(self, ring: _keys.KeyRing, identity: str, session: str) -> str:
        """A fresh continuation id with its tag: ``<random>.<tag>``."""
        page_id = secrets.token_urlsafe(_ID_BYTES)
        assert ring.signing_key is not None
        return f"{page_id}.{self._tag(ring.signing_key, identity, session, page_id)}"

    def check_id(self, ring: _keys.KeyRing, identity: str, session: str, token: str) -> str | None:
        """The store key of ``token`` if its tag verifies under any key of the ring, else None."""
        page_id, dot, tag = token.partition(".")
        if not dot or len(page_id) != _ID_CHARS or len(tag) != _TAG_CHARS:
            return None
        found = False
        for secret in ring.keys:
            found |= hmac.compare_digest(self._tag(secret, identity, session, page_id), tag)
        return page_id if found else None

    def csrf(self, ring: _keys.KeyRing, session: str, token: str) -> str:
        """The CSRF token the forms of page ``token`` carry in this session."""
        assert ring.signing_key is not None
        message = f"contsnap web csrf\0{session}\0{token}".encode()
        return mac(ring.signing_key, message).hex()[:32]

    def check_csrf(self, ring: _keys.KeyRing, session: str, token: str, given: str) -> bool:
        ok = False
        message = f"contsnap web csrf\0{session}\0{token}".encode()
        for secret in ring.keys:
            expected = mac(secret, message).hex()[:32]
            ok |= hmac.compare_digest(expected, given)
        return ok

    # --- pages -----------------------------------------------------------------------------

    def save(
        self,
        ring: _keys.KeyRing,
        identity: str,
        session: str,
        page: Page,
        render: Callable[[str], str],
        root: str,
    ) -> str:
        """Snapshot ``page`` (signed, bound to ``identity``) under a fresh id; the id.

        ``render(id)`` is the page's HTML (for the app mounted at ``root``), saved in
        the signed metadata too, so that showing the page again (a GET, a reload)
        verifies it but unpickles nothing.
        """
        token = self.new_id(ring, identity, session)
        page_id = token.partition(".")[0]
        meta = {HTML_META: [root, render(token)], PAGE_META: page_id}
        data = _codec.encode(page, kind=KIND, identity=identity, key=self.key, meta=meta)
        self.store.put(page_id, data, idle=self.idle, ttl=self.ttl, group=_group(session))
        self._used(page_id, time.monotonic())  # a put starts its idle timer: no touch needed
        return token

    # --- client-side pages: the signed snapshot is the continuation token ------------------

    def save_client(self, identity: str, session: str, page: Page) -> str | None:
        """``page`` as a URL token (``~`` and its signed snapshot, base64) if small enough.

        The snapshot is signed and bound to the app and conversation (``identity``) as a
        stored page is, and its signed metadata names the browser session (a hash of it)
        so that a leaked URL does not continue elsewhere; ``created_at``, signed too,
        lets `check_client` enforce the expiry. ``None``: larger than ``client_side``.
        """
        meta = {CLIENT_META: self._bound(session)}
        # compressed (where the probe says it pays): the URL carries every byte, thrice a page
        data = _codec.encode(
            page, kind=KIND, identity=identity, key=self.key, meta=meta, compress=True
        )
        if len(data) > self.client_side:
            return None
        return CLIENT_PREFIX + base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def client_bytes(self, token: str) -> bytes | None:
        """The snapshot a client-side token carries, unverified (None: not base64 at all)."""
        text = token[len(CLIENT_PREFIX) :]
        if len(text) > 4 * self.client_side // 3 + 4 or not _B64.fullmatch(text):
            return None
        try:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except ValueError:
            return None

    def check_client(self, meta: dict[str, Any], token: str, session: str) -> str | None:
        """After the signature verified: why a client-side page is refused, or None.

        ``"bad"`` (a stored page's bytes in a URL, or the mode is off), ``"session"``
        (another browser session's page), ``"expired"`` (``idle`` seconds after it was
        made, since nothing records its later use; never beyond ``ttl``).
        """
        if not (self.client_side and token.startswith(CLIENT_PREFIX) and CLIENT_META in meta):
            return "bad"
        if meta.get(CLIENT_META) != self._bound(session):
            return "session"
        made = meta.get("created_at")
        if not isinstance(made, (int, float)) or time.time() - made > min(self.idle, self.ttl):
            return "expired"
        return None

    @staticmethod
    def stored_as(meta: dict[str, Any], page_id: str) -> bool:
        """Were these verified bytes stored under ``page_id`` (not moved from another id)?

        Pages stored before the id was signed in (contsnap 0.1.0 before this check) have
        none, and are taken as they were until they expire.
        """
        saved = meta.get(PAGE_META)
        return saved is None or saved == page_id

    def _bound(self, session: str) -> str:
        return _group(session) if self.bind_session else ""

    def load_bytes(self, page_id: str) -> bytes | None:
        """The stored bytes of a page (None: expired or evicted); restarts its idle timer.

        The timer is restarted (a write to the store) at most once every
        ``touch_every`` seconds per page and process: a page shown and then answered a
        moment later, or shown right after it was made, costs one read, not two writes.
        """
        data = self.store.get(page_id)
        if data is not None:
            now = time.monotonic()
            last = self._touched.get(page_id)
            if last is None or now - last >= self.touch_every:
                self.store.touch(page_id)
                self._used(page_id, now)
        return data

    def _used(self, page_id: str, now: float) -> None:
        touched = self._touched
        if len(touched) >= _TOUCHED_MAX:  # forget stale ones, then the oldest: it stays bounded
            for name, last in list(touched.items()):  # (threads may share it: pop, not del)
                if now - last >= self.touch_every or len(touched) >= _TOUCHED_MAX // 2:
                    touched.pop(name, None)
        touched[page_id] = now

    def verify(self, identity: str, data: bytes) -> tuple[dict[str, Any], bytes]:
        """Signature, kind, identity and the saved code checked: ``(meta, payload)``.

        Nothing is unpickled; `html` and `restore` then use what this returned.
        """
        meta, payload = _codec.verify(data, kinds=(KIND,), identity=identity, key=self.key)
        _codec.check_code(meta["frames"])
        return meta, payload

    @staticmethod
    def html(meta: dict[str, Any], root: str) -> str | None:
        """The saved HTML of a verified page, if it was saved for mount ``root``."""
        saved = meta.get(HTML_META)
        if isinstance(saved, list) and len(saved) == 2 and saved[0] == root:
            return saved[1] if isinstance(saved[1], str) else None
        return None

    @staticmethod
    def restore(identity: str, meta: dict[str, Any], payload: bytes) -> Page:
        """Rebuild a page that `verify` vouched for."""
        page = _codec.restore(meta, payload).obj
        if not isinstance(page, Page):
            from ._errors import WebError

            raise WebError(f"the stored page of {identity} is not a page; start again")
        return page

    def maybe_sweep(self, every: float) -> None:
        """Delete expired pages if ``every`` seconds passed since the last sweep."""
        now = time.monotonic()
        if now - self._last_sweep >= every:
            self._last_sweep = now
            self.store.sweep()


def _group(session: str) -> str:
    # the store's group name: the session id itself is a bearer secret, so not stored raw
    return "s-" + hashlib.sha256(session.encode()).hexdigest()[:32]
