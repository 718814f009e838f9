"""Web conversations, Seaside style: a multi-page interaction written as one generator.

``answer = yield web.ask(page)`` shows a page and waits; every page is a signed
snapshot in a store, so the back button and a second tab resume earlier states, a
restart loses nothing and several server processes share the conversations. The
``App`` is an ASGI application, and ``app.wsgi`` the same app for WSGI. See
``docs/web.md``.
"""

from __future__ import annotations

from contsnap.web._app import App, Request, Response
from contsnap.web._errors import WebError
from contsnap.web._forms import Answer, Ask, Field, Form, ask, choose, field, form
from contsnap.web._once import once

__all__ = [
    "Answer",
    "App",
    "Ask",
    "Field",
    "Form",
    "Request",
    "Response",
    "WebError",
    "ask",
    "choose",
    "field",
    "form",
    "once",
]

for _function in (ask, choose, field, form, once):
    _function.__module__ = __name__
del _function
