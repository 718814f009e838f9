"""The app the web tests serve with uvicorn, configured by environment variables.

``WEB_TEST_STORE`` (a store URL), ``WEB_TEST_IDLE`` (seconds), ``WEB_TEST_PER_SESSION``,
``WEB_TEST_CLIENT_SIDE`` (the app's ``client_side=`` bytes) and ``WEB_TEST_MODULE`` (an extra module of conversations to import, for the
code-change test). It serves the examples' handlers and a few test conversations.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from typing import Any

import web_checkout
import web_sum

from contsnap import web

app = web.App(
    "web-test",
    store=os.environ["WEB_TEST_STORE"],
    idle=float(os.environ.get("WEB_TEST_IDLE", "1800")),
    per_session=int(os.environ.get("WEB_TEST_PER_SESSION", "50")),
    client_side=int(os.environ.get("WEB_TEST_CLIENT_SIDE", "0")),
)
app.conversation("/sum")(web_sum.add_three)
app.conversation("/checkout")(web_checkout.checkout)


@app.conversation("/async")
async def async_sum(request: web.Request) -> str:
    first = await web.ask(web.form(web.field("n", "First", parse=int)))
    await asyncio.sleep(0.01)  # a real await between pages is driven by the loop
    second = await web.ask(web.form(web.field("n", "Second", parse=int)))
    return f"<p>async sum {first['n'] + second['n']}</p>"


def _log(line: str) -> str:
    with open(os.environ["WEB_TEST_EFFECTS"], "a") as out:
        out.write(line + "\n")
    return line


@app.conversation("/effects")
def effects(request: web.Request):  # type: ignore[no-untyped-def]
    answer = yield web.ask(lambda k: f'<form method="post" action="{k}"><input name="x"></form>')
    _log(f"every time {answer['x']}")
    receipt = web.once("mail", lambda: _log(f"once {answer['x']}"))
    return f"<p>receipt: {receipt}</p>"


@app.conversation("/many")
def many(request: web.Request):  # type: ignore[no-untyped-def]
    """Twenty pages, for the per-session bound; the answer is a repeated field."""
    seen: list[Any] = []
    for step in range(20):
        answer = yield web.ask(
            lambda k: (
                f'<form method="post" action="{k}"><p>step {step} seen {seen}</p>'  # noqa: B023
                '<input name="v"><input name="v"></form>'
            )
        )
        seen.append(answer.getall("v"))
    return f"<p>done {seen}</p>"


if os.environ.get("WEB_TEST_MODULE"):
    importlib.import_module(os.environ["WEB_TEST_MODULE"]).register(app)
