"""The App as a WSGI application: ``app.wsgi`` (any WSGI server, a Flask or Django mount)."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from ._incoming import Incoming

if TYPE_CHECKING:
    from ._app import App

__all__ = ["serve"]

_MAX_BODY = 1 << 20


def serve(app: App, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Answer one WSGI request."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > _MAX_BODY:
        return _reply(start_response, 413, [], b"request body too large")
    body = environ["wsgi.input"].read(length) if length else b""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):  # not an HTTP_ variable in WSGI
        headers["content-type"] = environ["CONTENT_TYPE"]
    request = Incoming(
        environ["REQUEST_METHOD"],
        environ.get("PATH_INFO", "") or "/",
        environ.get("QUERY_STRING", ""),
        headers,
        body,
        environ.get("SCRIPT_NAME", "").rstrip("/"),
    )
    response = app.handle(request)
    head = request.method == "HEAD"
    return _reply(start_response, response.status, response.headers, response.encoded(), head)


def _reply(
    start_response: Any,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    head: bool = False,
) -> list[bytes]:
    """The response; for a HEAD request its status and headers only (the GET's length)."""
    line = f"{status} {HTTPStatus(status).phrase}"
    start_response(
        line,
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-store"),
            *headers,
            ("Content-Length", str(len(body))),
        ],
    )
    return [b"" if head else body]
