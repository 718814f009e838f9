"""The App: conversations by path, and the one request handler ASGI and WSGI both call.

A conversation starts with a GET of its path: the handler runs to its first ``ask``,
the paused handler is stored as a page, and the browser is redirected to the page's
continuation URL ``<path>/-/<id>``. A GET of that URL shows the page; a POST restores
the page's snapshot (never a live generator), sends it the answer, stores the next
page under a new id and redirects there (POST/redirect/GET). The back button and a
second tab therefore fork the conversation: every page can be answered again.
"""

from __future__ import annotations

import asyncio
import contextvars
import html
import inspect
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from contsnap import _keys
from contsnap._api import detach
from contsnap._errors import CheckpointError, CodeChangedError, SnapshotKindError
from contsnap._marking._decorator import checkpointable

from . import _pages
from ._errors import WebError
from ._forms import CSRF_FIELD, RESUMED, Answer, Ask, Shown
from ._incoming import Incoming

__all__ = ["App", "Request", "Response", "current_app"]

_MODULE = "contsnap.web"
_log = logging.getLogger("contsnap.web")
_SESSION = re.compile(r"[A-Za-z0-9_\-]{32}")
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{32}\.[A-Za-z0-9_\-=]{16}")
# saved with every page, so never the browser's credentials
_SECRET_HEADERS = frozenset({"cookie", "authorization", "proxy-authorization"})


@dataclass
class Request:
    """What a handler is called with: the request that started the conversation.

    It is saved with every page, so it carries no cookies, credentials or session id.
    ``conversation`` is a random id of this conversation (shared by its forks).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    conversation: str
    __module__ = _MODULE


@dataclass
class Response:
    """An HTTP response; a handler may ``return`` one (its body becomes the final page)."""

    body: str | bytes = ""
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    __module__ = _MODULE

    def encoded(self) -> bytes:
        return self.body.encode() if isinstance(self.body, str) else self.body


@dataclass
class _Conversation:
    path: str
    func: Callable[..., Any]
    identity: str
    is_async: bool


@dataclass
class _Pending:
    """An async handler to drive to its next ask, and what saves the page it reaches."""

    handler: Any
    value: Any
    started: Request | None
    resume: Callable[[Any, Any], Response]


_current: contextvars.ContextVar[tuple[App, Request] | None] = contextvars.ContextVar(
    "contsnap_web_current", default=None
)


def current_app() -> tuple[App, Request]:
    """The app and request of the conversation step running now (for `once`)."""
    found = _current.get()
    if found is None:
        raise WebError("web.once() works only inside a conversation handler, while it runs")
    return found


def _page(title: str, message: str, root: str, start: str | None) -> str:
    link = f'<p><a href="{html.escape(root + start)}">Start again</a></p>' if start else ""
    return (
        f"<!doctype html><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>{link}"
    )


class App:
    """A set of web conversations, served as an ASGI app (``app``) and a WSGI app (``app.wsgi``).

    ``store``: a `contsnap.stores` store or its URL (default: SQLite in
    ``data_dir``, ``$XDG_DATA_HOME/contsnap/web``); ``key``: the signing key(s), first
    signs, all verify (default: contsnap's key in effect). Each browser session keeps
    at most ``per_session`` pages (least recently used go first; a SQL store evicts a
    tenth of them at a time) and the store at most
    ``max_bytes``; a page expires ``idle`` seconds after its last use and ``ttl``
    seconds after it was made. With ``client_side=N``, a page whose signed snapshot
    is at most ``N`` bytes travels in its URL instead of the store (see docs/web.md).
    """

    __module__ = _MODULE

    def __init__(
        self,
        name: str = "contsnap-web",
        *,
        store: Any = None,
        key: Any = None,
        data_dir: str | None = None,
        per_session: int = 50,
        max_bytes: int | None = 256 * 1024 * 1024,
        idle: float = 30 * 60,
        ttl: float = 8 * 3600,
        bind_session: bool = True,
        cookie: str = "contsnap_session",
        secure_cookie: bool = False,
        sweep_every: float = 60.0,
        client_side: int = 0,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise WebError(f"web.App: name {name!r} must be letters, digits, '_', '.' or '-'")
        self.name = name
        self.pages = _pages.PageStore(
            store,
            name=name,
            key=key,
            data_dir=data_dir,
            per_session=per_session,
            max_bytes=max_bytes,
            idle=idle,
            ttl=ttl,
            bind_session=bind_session,
            client_side=client_side,
        )
        self.cookie = cookie
        self.secure_cookie = secure_cookie
        self.sweep_every = sweep_every
        self.conversations: dict[str, _Conversation] = {}

    @property
    def store(self) -> Any:
        """The store the pages are kept in."""
        return self.pages.store

    def conversation(self, path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Serve the decorated generator (or async) function at ``path`` as a conversation."""
        if not re.fullmatch(r"/[A-Za-z0-9_.~/\-]*", path) or "/-/" in path + "/":
            raise WebError(
                f"app.conversation({path!r}): a path starts with '/' and holds letters, digits, "
                "'_', '.', '~', '-' and '/' (and no '/-/' segment, which continuation URLs use)"
            )

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            is_async = inspect.iscoroutinefunction(func)
            if not (is_async or inspect.isgeneratorfunction(func)):
                raise WebError(
                    f"app.conversation({path!r}): {func.__qualname__} "
                    f"({func.__code__.co_filename}:{func.__code__.co_firstlineno}) is neither a "
                    "generator function (with 'yield web.ask(...)') nor an async function (with "
                    "'await web.ask(...)'); make it one"
                )
            marked = func if hasattr(func, "__contsnap_info__") else checkpointable(func)
            key = path.rstrip("/") or "/"
            self.conversations[key] = _Conversation(key, marked, f"{self.name}:{key}", is_async)
            return marked

        return register

    def sweep(self) -> int:
        """Delete expired pages now; how many."""
        return self.pages.store.sweep()

    # --- the request path ------------------------------------------------------------------

    def _route(self, path: str) -> tuple[_Conversation | None, str | None]:
        base, sep, token = path.partition("/-/")
        conv = self.conversations.get(base.rstrip("/") or "/")
        return conv, (token if sep else None)

    def handle(self, request: Incoming) -> Response:
        """Answer one request (an async handler is driven on a loop of its own)."""
        conv, token = self._route(request.path)
        if conv is not None and conv.is_async:
            return asyncio.run(self.handle_async(request))
        outcome = self._respond(request, conv, token)
        assert isinstance(outcome, Response)
        return outcome

    async def handle_async(self, request: Incoming) -> Response:
        """Answer one request; store work runs in a thread, an async handler on this loop."""
        conv, token = self._route(request.path)
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(None, self._respond, request, conv, token)
        if isinstance(outcome, Response):
            return outcome
        reset = _current.set((self, outcome.started) if outcome.started is not None else None)
        try:
            asked, returned = await _drive(outcome.handler, outcome.value)
        finally:
            _current.reset(reset)
        return await loop.run_in_executor(None, outcome.resume, asked, returned)

    def _respond(
        self,
        request: Incoming,
        conv: _Conversation | None,
        token: str | None,
    ) -> Response | _Pending:
        root = request.root
        if conv is None:
            return Response(_page("Not found", "There is no page here.", root, None), 404)
        self.pages.maybe_sweep(self.sweep_every)
        session, set_cookie = self._session(request)
        if token is None:
            if request.method not in ("GET", "HEAD"):
                return Response(
                    _page("Method not allowed", "Open this page with GET.", root, None), 405
                )
            started = Request(
                request.method,
                request.path,
                dict(parse_qsl(request.query)),
                {k: v for k, v in request.headers.items() if k not in _SECRET_HEADERS},
                secrets.token_urlsafe(12),
            )
            handler = conv.func(started)
            return self._step(request, conv, session, set_cookie, started, handler, None)
        return self._continue(request, conv, session, set_cookie, token)

    def _continue(
        self,
        request: Incoming,
        conv: _Conversation,
        session: str,
        set_cookie: list[tuple[str, str]],
        token: str,
    ) -> Response | _Pending:
        root = request.root
        ring = self.pages.ring()

        def unknown() -> Response:
            return Response(
                _page(
                    "Unknown page",
                    "This page does not exist, or belongs to another browser session.",
                    root,
                    conv.path,
                ),
                404,
                set_cookie,
            )

        def expired() -> Response:
            return Response(
                _page("Page expired", "This page has expired \u2014 start again.", root, conv.path),
                410,
                set_cookie,
            )

        def bad() -> Response:
            return Response(
                _page(
                    "Bad page", "This page's saved state is damaged or not ours.", root, conv.path
                ),
                400,
                set_cookie,
            )

        page_id: str | None = None
        if token.startswith(_pages.CLIENT_PREFIX):  # the page travels in its URL
            data = self.pages.client_bytes(token)
            if data is None:
                return bad()
        else:
            page_id = (
                self.pages.check_id(ring, conv.identity, session, token)
                if _TOKEN.fullmatch(token)
                else None
            )
            if page_id is None:
                return unknown()
            data = self.pages.load_bytes(page_id)
            if data is None:
                return expired()
        k = f"{root}{conv.path.rstrip('/')}/-/{token}"
        showing = request.method in ("GET", "HEAD")
        try:
            meta, payload = self.pages.verify(conv.identity, data)
            if _pages.CLIENT_META in meta or token.startswith(_pages.CLIENT_PREFIX):
                problem = self.pages.check_client(meta, token, session)
                if problem is not None:
                    return {"session": unknown, "expired": expired}.get(problem, bad)()
            elif page_id is not None and not self.pages.stored_as(meta, page_id):
                _log.warning("refused the page %s of %s: its bytes are another page's", page_id,
                             conv.identity)  # fmt: skip
                return bad()
            if showing:
                shown = self.pages.html(meta, root)
                if shown is not None:
                    return Response(shown, 200, set_cookie)
            elif request.method != "POST":
                return Response(_page("Method not allowed", "Use GET or POST.", root, None), 405)
            page = self.pages.restore(conv.identity, meta, payload)
        except CodeChangedError as exc:
            _log.warning("the stored page of %s is from older code: %s", conv.identity, exc)
            return Response(
                _page(
                    "Application updated",
                    "The application was updated; start again.",
                    root,
                    conv.path,
                ),
                409,
                set_cookie,
            )
        except (SnapshotKindError, CheckpointError) as exc:
            _log.warning("refused the stored page of %s: %s", conv.identity, exc)
            return bad()
        if showing:  # saved for another mount path: render it here
            _detach(page.handler)
            if page.final is not None:
                return Response(page.final, 200, set_cookie)
            csrf = self.pages.csrf(ring, session, token)
            return Response(page.ask.render(k, csrf), 200, set_cookie)
        submitted = Answer(_form_fields(request.body, request.headers.get("content-type", "")))
        if page.final is not None or not self.pages.check_csrf(
            ring, session, token, submitted.get(CSRF_FIELD, "")
        ):
            _detach(page.handler)
            return Response(
                _page("Forbidden", "This form was not sent from its page.", root, conv.path),
                403,
                set_cookie,
            )
        clean = Answer([(n, v) for n in submitted if n != CSRF_FIELD for v in submitted.getall(n)])
        value, errors = page.ask.answer(clean)
        if errors:
            _detach(page.handler)
            again = page.ask.with_errors(clean, errors)
            csrf = self.pages.csrf(ring, session, token)
            return Response(again.render(k, csrf), 200, set_cookie)
        started = page.request if page.request is not None else _find_request(page)
        if conv.is_async and page.handler.send(None) is not RESUMED:
            _detach(page.handler)
            raise WebError(f"the restored page of {conv.identity} did not stop at its web.ask")
        return self._step(request, conv, session, set_cookie, started, page.handler, value, ring)

    def _step(
        self,
        request: Incoming,
        conv: _Conversation,
        session: str,
        set_cookie: list[tuple[str, str]],
        started: Request | None,
        handler: Any,
        value: Any,
        ring: _keys.KeyRing | None = None,
    ) -> Response | _Pending:
        base = f"{request.root}{conv.path.rstrip('/')}/-/"

        def resume(asked: Any, returned: Any) -> Response:
            if asked is None:
                page = _pages.Page(None, None, _final(returned, conv))
            else:
                page = _pages.Page(handler, asked, None, started)

            keys = ring if ring is not None else self.pages.ring()
            token: str | None = None
            if self.pages.client_side:
                if type(page.ask) is Ask:  # shown at a marker URL, put in place when rendered
                    page.ask = Shown.of(page.ask, base + "~" + secrets.token_urlsafe(12))
                try:
                    token = self.pages.save_client(conv.identity, session, page)
                except BaseException:
                    _detach(handler)
                    raise

            def render(token: str) -> str:
                if page.final is not None:
                    return page.final
                if type(page.ask) is Ask:  # its callable is not saved, only what it showed
                    page.ask = Shown.of(page.ask, base + token)
                return str(page.ask.render(base + token, self.pages.csrf(keys, session, token)))

            try:
                if token is None:  # too big to travel in the URL (or not asked to): stored
                    token = self.pages.save(
                        keys, conv.identity, session, page, render, request.root
                    )
            finally:
                _detach(handler)
            return Response("", 303, [("location", base + token), *set_cookie])

        if conv.is_async:  # handle_async drives it on its loop, then calls resume
            return _Pending(handler, value, started, resume)
        reset = _current.set((self, started) if started is not None else None)
        try:
            asked = handler.send(value)
        except StopIteration as stop:
            return resume(None, stop.value)
        finally:
            _current.reset(reset)
        if not isinstance(asked, Ask):
            _detach(handler)
            raise WebError(
                f"{conv.func.__qualname__} yielded {type(asked).__name__}, not web.ask(...); "
                "a conversation handler yields only pages"
            )
        return resume(asked, None)

    def _session(self, request: Incoming) -> tuple[str, list[tuple[str, str]]]:
        for part in request.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie and _SESSION.fullmatch(value):
                return value, []
        session = _pages.new_session()
        attrs = f"{self.cookie}={session}; Path={request.root or '/'}; HttpOnly; SameSite=Lax"
        if self.secure_cookie:
            attrs += "; Secure"
        return session, [("set-cookie", attrs)]

    # --- adapters --------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from ._asgi import serve

        await serve(self, scope, receive, send)

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """The same app as a WSGI application."""
        from ._wsgi import serve

        return serve(self, environ, start_response)


def _final(returned: Any, conv: _Conversation) -> str:
    if isinstance(returned, Response):
        return returned.encoded().decode("utf-8", "replace")
    if isinstance(returned, str):
        return returned
    raise WebError(
        f"{conv.func.__qualname__} returned {type(returned).__name__}; a conversation ends by "
        "returning its final page's HTML (a str) or a web.Response"
    )


def _form_fields(raw: bytes, content_type: str) -> list[tuple[str, str]]:
    """The fields of a form body, repeated and blank ones kept (as `parse_qsl`).

    A ``multipart/form-data`` body (a form with that ``enctype``, or JavaScript's
    ``FormData``) is read part by part: a file's field holds its content as text. Any
    other body is read as ``application/x-www-form-urlencoded``, a browser's default.
    """
    if content_type.split(";", 1)[0].strip().lower() == "multipart/form-data":
        return _multipart_fields(raw, content_type)
    body = raw.decode("utf-8", "replace")
    if "%" in body or "+" in body:
        return parse_qsl(body, keep_blank_values=True)
    # nothing escaped (digits, plain words): the split parse_qsl would make, without unquoting
    return [(name, value) for name, _, value in (p.partition("=") for p in body.split("&") if p)]


def _multipart_fields(raw: bytes, content_type: str) -> list[tuple[str, str]]:
    """The fields of a ``multipart/form-data`` body; none if it is malformed."""
    import email.parser
    import email.policy

    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    try:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        if not message.is_multipart():
            return []
        fields = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str):
                continue
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            charset = part.get_content_charset() or "utf-8"
            try:
                fields.append((name, data.decode(charset, "replace")))
            except LookupError:  # a charset Python does not know
                fields.append((name, data.decode("utf-8", "replace")))
        return fields
    except (ValueError, TypeError, IndexError, LookupError):
        return []


def _find_request(page: _pages.Page) -> Request | None:
    frame = getattr(page.handler, "gi_frame", None) or getattr(page.handler, "cr_frame", None)
    if frame is None:
        return None
    for value in dict(frame.f_locals).values():
        if isinstance(value, Request):
            return value
    return None


def _detach(handler: Any) -> None:
    """End a handler whose continuation lives in the store, without running its finally."""
    if handler is None:
        return
    try:
        detach(handler)
    except CheckpointError:
        pass


async def _drive(handler: Any, value: Any) -> tuple[Ask | None, Any]:
    """Run an async handler to its next ``web.ask``: ``(that Ask, None)``, or ``(None, result)``.

    Other awaits (asyncio futures, sleeps) are awaited here on the running loop.
    """
    while True:
        try:
            yielded = handler.send(value)
        except StopIteration as stop:
            return None, stop.value
        if isinstance(yielded, Ask):
            return yielded, None
        if yielded is None:
            await asyncio.sleep(0)
            value = None
            continue
        if isinstance(yielded, asyncio.Future):
            yielded._asyncio_future_blocking = False
            await yielded
            value = None
            continue
        raise WebError(
            f"an async conversation awaited {yielded!r}, which contsnap.web cannot drive"
        )
