"""The sum of three numbers, one page each: a web conversation written as one generator.

Run it with ``python examples/web_sum.py`` (uvicorn on http://127.0.0.1:8000/sum), or
``uvicorn web_sum:app`` from this directory. Press back, type another number: that
earlier page continues on its own; open page 1 in a second tab: both finish apart.
Pages are kept in SQLite in ``~/.local/share/contsnap/web`` unless
``CONTSNAP_WEB_STORE`` names a store URL (``redis://...`` for several processes).
"""

from __future__ import annotations

import os

from contsnap import web

app = web.App("web-sum", store=os.environ.get("CONTSNAP_WEB_STORE"))


@app.conversation("/sum")
def add_three(request: web.Request):  # type: ignore[no-untyped-def]
    total = 0
    for i in range(3):
        # The page is rendered while the handler waits at this yield (and again from
        # the page's snapshot), so it always sees this page's i and total.
        answer = yield web.ask(
            lambda k: (
                f'<form method="post" action="{k}">'
                f"<p>Number {i + 1}? (so far {total})</p>"  # noqa: B023
                f'<input name="n" autofocus><button>Next</button></form>'
            )
        )
        total += int(answer["n"])
    return f"<p>The sum is {total}</p>"


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
