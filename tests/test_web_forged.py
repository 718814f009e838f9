"""Forged and damaged requests to contsnap.web: every one ends in a 4xx page, never a 5xx.

Hypothesis edits what a browser sends - the continuation token in the URL (a stored
page's id or a client-side page's signed snapshot), the session cookie, the CSRF field
and the form's fields - starting from genuine pages of three apps: one that stores its
pages, one that sends them in the URL, and one with the same name and conversations but
another key. Whatever the edit, the answer is a page (never a server error), a changed
token or cookie never continues the conversation, and nothing is unpickled that the
app's key did not sign.
``CONTSNAP_FUZZ_EXAMPLES=3000`` is the long mode.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

httpx = pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

KEY, OTHER_KEY = "forged-tests-key-" + "a" * 24, "another-apps-key-" + "b" * 24
COOKIE = "contsnap_session"


@cache
def _apps() -> dict[str, Any]:
    import web_checkout
    import web_sum

    from contsnap import web

    directory = tempfile.mkdtemp(prefix="contsnap-forged-")
    apps = {
        "stored": web.App("forged", store=f"sqlite:///{directory}/a.db", key=KEY),
        "client": web.App(
            "forged-c", store=f"sqlite:///{directory}/c.db", key=KEY, client_side=3000
        ),
        "other": web.App("forged", store=f"sqlite:///{directory}/o.db", key=OTHER_KEY),
    }
    for app in apps.values():
        app.conversation("/sum")(web_sum.add_three)
        app.conversation("/checkout")(web_checkout.checkout)
    return apps


def _client(app: Any) -> Any:
    return httpx.Client(transport=httpx.WSGITransport(app=app.wsgi), base_url="http://shop")


@cache
def _genuine() -> dict[str, dict[str, str]]:
    """For each app: a page of the checkout, its token, session cookie and CSRF field."""
    found = {}
    for name, app in _apps().items():
        with _client(app) as browser:
            started = browser.get("/checkout")
            assert started.status_code == 303, started.text
            url = started.headers["location"]
            page = browser.get(url)
            assert page.status_code == 200, page.text
            csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            found[name] = {
                "url": url,
                "token": url.rsplit("/-/", 1)[1],
                "cookie": browser.cookies[COOKIE],
                "csrf": csrf.group(1),
            }
    return found


_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_~.%/=+"


@st.composite
def _edited(draw: Any, original: str, others: list[str]) -> str:
    """``original`` edited: a character changed, cut, grown, another's, or anything."""
    how = draw(st.sampled_from(["flip", "cut", "grow", "other", "anything", *["keep"] * 6]))
    if how == "keep" or not original:
        return original
    if how == "flip":
        at = draw(st.integers(0, len(original) - 1))
        char = draw(st.sampled_from(_ALPHABET).filter(lambda c: c != original[at]))
        return original[:at] + char + original[at + 1 :]
    if how == "cut":
        return original[: draw(st.integers(0, len(original) - 1))]
    if how == "grow":
        return original + draw(st.text(_ALPHABET, min_size=1, max_size=20))
    if how == "other":
        return str(draw(st.sampled_from(others)))
    return str(draw(st.text(_ALPHABET, max_size=300)))


_FIELDS = st.lists(
    st.tuples(
        st.sampled_from(["apple", "pear", "_button", "name", "street", "postcode", "x", ""]),
        st.one_of(st.text(max_size=40), st.sampled_from(["1", "2", "99", "Next"])),
    ),
    max_size=6,
)


#: ``CONTSNAP_FUZZ_EXAMPLES=N`` runs N random examples instead of the fixed 300
_LONG = int(os.environ.get("CONTSNAP_FUZZ_EXAMPLES", "0"))


@settings(
    max_examples=_LONG or 300,
    deadline=None,
    derandomize=not _LONG,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_forged_requests_get_a_page_never_a_server_error(data: Any) -> None:
    genuine = _genuine()
    target = data.draw(st.sampled_from(sorted(genuine)), label="app")
    mine = genuine[target]
    others = [g for name, g in genuine.items() if name != target]
    token = data.draw(_edited(mine["token"], [g["token"] for g in others]), label="token")
    cookie = data.draw(_edited(mine["cookie"], [g["cookie"] for g in others]), label="cookie")
    csrf = data.draw(_edited(mine["csrf"], [g["csrf"] for g in others]), label="csrf")
    if data.draw(st.integers(0, 9), label="drop") == 0:  # no cookie, or no CSRF field
        cookie, csrf = (None, csrf) if data.draw(st.booleans()) else (cookie, None)
    method = data.draw(st.sampled_from(["GET", "POST", "HEAD"]), label="method")
    fields = data.draw(_FIELDS, label="fields")
    if csrf is not None:
        fields = [*fields, ("_csrf", csrf)]
    headers = {} if cookie is None else {"cookie": f"{COOKIE}={cookie}"}
    url = mine["url"].rsplit("/-/", 1)[0] + "/-/" + token
    with _client(_apps()[target]) as browser:
        try:
            answer = browser.request(
                method,
                url,
                headers=headers,
                data=dict(fields) if method == "POST" else None,
            )
        except httpx.InvalidURL:
            return  # httpx itself refuses to send it
    event(f"{method} {answer.status_code}")
    assert answer.status_code < 500, (answer.status_code, answer.text[:2000])
    assert "Traceback" not in answer.text
    changed = token != mine["token"] or cookie != mine["cookie"]
    if changed and token != mine["token"] and not token.startswith("~"):
        # a stored page's id with another tag, or in another session: never continued
        assert answer.status_code in (400, 403, 404, 405, 410), (token, answer.status_code)
    if cookie != mine["cookie"] and token == mine["token"]:
        assert answer.status_code in (400, 403, 404, 405, 410), (cookie, answer.status_code)
    if method == "POST" and csrf != mine["csrf"]:
        assert answer.status_code >= 400, (csrf, answer.status_code)


def test_a_page_of_another_app_with_another_key_is_not_found() -> None:
    genuine = _genuine()
    theirs = genuine["other"]
    with _client(_apps()["stored"]) as browser:
        shown = browser.get(theirs["url"], headers={"cookie": f"{COOKIE}={theirs['cookie']}"})
        assert shown.status_code == 404, shown.text
        posted = browser.post(
            theirs["url"],
            headers={"cookie": f"{COOKIE}={theirs['cookie']}"},
            data={"apple": "1", "pear": "1", "_csrf": theirs["csrf"]},
        )
        assert posted.status_code in (403, 404), posted.text
