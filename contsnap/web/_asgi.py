"""The App as a pure ASGI application (HTTP and lifespan; no framework needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._incoming import Incoming

if TYPE_CHECKING:
    from ._app import App

__all__ = ["serve"]

_MAX_BODY = 1 << 20


async def serve(app: App, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer one ASGI connection scope."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > _MAX_BODY:
            await _send(send, 413, [], b"request body too large")
            return
    root = scope.get("root_path", "")
    path = scope["path"]
    if root and path.startswith(root):  # servers differ on whether path includes root_path
        path = path[len(root) :] or "/"
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    request = Incoming(
        scope["method"], path, scope.get("query_string", b"").decode("latin-1"), headers, body, root
    )
    response = await app.handle_async(request)
    body = response.encoded()
    await _send(send, response.status, response.headers, body, scope["method"] == "HEAD")


async def _send(
    send: Any, status: int, headers: list[tuple[str, str]], body: bytes, head: bool = False
) -> None:
    """The response; for a HEAD request its status and headers only (the GET's length)."""
    raw = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else body})
