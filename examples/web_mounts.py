"""The checkout app mounted under ``/shop`` in Starlette (ASGI) and in Flask (WSGI).

``uvicorn web_mounts:starlette_app`` or ``flask --app web_mounts:flask_app run``
from this directory; the checkout is then at ``/shop/checkout``. The conversation's
URLs and its session cookie stay under the mount's prefix.
"""

from __future__ import annotations

from flask import Flask
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from web_checkout import app as checkout
from werkzeug.middleware.dispatcher import DispatcherMiddleware


async def home(request: object) -> HTMLResponse:
    return HTMLResponse('<a href="/shop/checkout">Shop</a>')


starlette_app = Starlette(routes=[Route("/", home), Mount("/shop", app=checkout)])

flask_app = Flask(__name__)


@flask_app.route("/")
def flask_home() -> str:
    return '<a href="/shop/checkout">Shop</a>'


flask_app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
    flask_app.wsgi_app, {"/shop": checkout.wsgi}
)
