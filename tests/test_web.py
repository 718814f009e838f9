"""contsnap.web over real HTTP: uvicorn serving tests/web_apps.py, driven with httpx.

Every behaviour a browser relies on: POST/redirect/GET, the back button and a second
tab forking the conversation, expiry (410), unknown and tampered ids (404/400),
session binding, CSRF, the per-session bound, a restart, two processes sharing
Redis, a code change between two pages, key rotation; the same conversation on
SQLite, Redis and PostgreSQL; the WSGI app and the Flask/Starlette mounts; HEAD;
client-side pages (the signed page in its URL); handlers saved by value.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from web_server import KEY, ROOT, WebServer  # noqa: E402

import contsnap  # noqa: E402
from contsnap import _codec  # noqa: E402
from contsnap.stores import open_store  # noqa: E402

sys.path.insert(0, str(ROOT / "examples"))


# --- helpers: a browser's worth of HTTP ----------------------------------------------------


def client(server: WebServer) -> Any:
    return httpx.Client(base_url=server.url, follow_redirects=True, timeout=20)


def action(page: Any) -> str:
    found = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert found, page.text
    return html.unescape(found.group(1))


def submit(browser: Any, page: Any, data: dict[str, Any] | list[tuple[str, str]]) -> Any:
    """Post ``data`` to the form of ``page`` (with its CSRF field), as a browser would."""
    csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    pairs = list(data.items()) if isinstance(data, dict) else list(data)
    fields: dict[str, list[str]] = {}
    for name, value in [*pairs, ("_csrf", csrf.group(1))]:
        fields.setdefault(name, []).append(value)
    return browser.post(action(page), data=fields)


def sum_of(browser: Any, page: Any, *numbers: int) -> Any:
    for n in numbers:
        page = submit(browser, page, {"n": str(n)})
        assert page.status_code == 200, page.text
    return page


def page_id(url: str) -> str:
    return url.rsplit("/-/", 1)[1].split(".")[0]


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/pages.db"
    server = request.getfixturevalue(f"{request.param}_server")
    return str(server.url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/pages.db"


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Iterator[WebServer]:
    running = WebServer(sqlite_url, WEB_TEST_EFFECTS=str(tmp_path / "effects.log"))
    yield running
    running.stop()


# --- the conversation, on every store -------------------------------------------------------


def test_sum_post_redirect_get_and_forks_on_every_store(store_url: str) -> None:
    server = WebServer(store_url)
    try:
        with client(server) as browser:
            page1 = browser.get("/sum")
            assert page1.history[0].status_code == 303  # the start redirects to page 1's URL
            assert "Number 1? (so far 0)" in page1.text
            page2 = submit(browser, page1, {"n": "4"})
            assert page2.history[0].status_code == 303 and "Number 2? (so far 4)" in page2.text
            assert browser.get(page2.url).text == page2.text  # reload: same page, no resubmit
            # back to page 1, another answer: a second branch, the first one untouched
            other = submit(browser, page1, {"n": "10"})
            assert "Number 2? (so far 10)" in other.text and other.url != page2.url
            assert "The sum is 15" in sum_of(browser, page2, 5, 6).text
            assert "The sum is 21" in sum_of(browser, other, 5, 6).text
            # the same answer to the same page again gives the same next page
            again = submit(browser, page1, {"n": "4"})
            assert (
                again.text.split("</form>")[0].split(">", 2)[2]
                == (page2.text.split("</form>")[0].split(">", 2)[2])
            )
            final = sum_of(browser, page1, 1, 1, 1)
            assert browser.get(final.url).text == "<p>The sum is 3</p>"  # the final page reloads
    finally:
        server.stop()


def test_second_tab_finishes_independently(server: WebServer) -> None:
    with client(server) as browser:
        page1 = browser.get("/sum")
        tab1 = submit(browser, page1, {"n": "1"})
        tab2 = browser.get(page1.url)  # the first page opened again in another tab
        tab2 = submit(browser, tab2, {"n": "100"})
        tab1 = submit(browser, tab1, {"n": "2"})
        tab2 = submit(browser, tab2, {"n": "200"})
        assert "The sum is 6" in submit(browser, tab1, {"n": "3"}).text
        assert "The sum is 600" in submit(browser, tab2, {"n": "300"}).text


# --- refusals: unknown, tampered, leaked, forged, expired -----------------------------------


def test_unknown_and_tampered_ids_are_refused_without_reading_state(
    server: WebServer, sqlite_url: str
) -> None:
    with client(server) as browser:
        page1 = browser.get("/sum")
        url = str(page1.url)
        token = url.rsplit("/-/", 1)[1]
        flipped_id = ("A" if token[0] != "A" else "B") + token[1:]
        flipped_tag = token[:-1] + ("A" if token[-1] != "A" else "B")
        for bad in (flipped_id, flipped_tag, "x" * 49, "nonsense", token + "x"):
            refused = browser.get(f"/sum/-/{bad}")
            assert refused.status_code == 404, bad
            assert "does not exist" in refused.text
        # a good id from another conversation of the app is not this one's
        assert browser.get(f"/checkout/-/{token}").status_code == 404
        # the stored page itself damaged: the signature check refuses it, nothing unpickled
        store = open_store(sqlite_url)
        key = page_id(url)
        data = bytearray(store.get(key) or b"")
        data[-40] ^= 0x01
        store.put(key, bytes(data))
        damaged = browser.get(url)
        assert damaged.status_code == 400 and "damaged" in damaged.text
        store.close()


def test_leaked_url_does_not_continue_in_another_session(server: WebServer) -> None:
    with client(server) as alice, client(server) as mallory:
        page1 = alice.get("/sum")
        stolen = mallory.get(page1.url)
        assert stolen.status_code == 404 and "another browser session" in stolen.text
        assert "Number 2" in submit(alice, page1, {"n": "1"}).text
        cookie = page1.history[0].headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie


def test_post_without_the_csrf_token_is_forbidden(server: WebServer) -> None:
    with client(server) as browser:
        page1 = browser.get("/sum")
        for data in ({"n": "1"}, {"n": "1", "_csrf": "0" * 32}):
            forged = browser.post(action(page1), data=data)
            assert forged.status_code == 403 and "not sent from its page" in forged.text
        assert "Number 2? (so far 1)" in submit(browser, page1, {"n": "1"}).text


def test_expired_page_says_start_again(sqlite_url: str) -> None:
    server = WebServer(sqlite_url, WEB_TEST_IDLE="0.5")
    try:
        with client(server) as browser:
            page1 = browser.get("/sum")
            time.sleep(0.8)
            expired = browser.get(page1.url)
            assert expired.status_code == 410
            assert "This page has expired \u2014 start again." in expired.text
            assert 'href="/sum"' in expired.text
            assert submit(browser, page1, {"n": "1"}).status_code == 410
    finally:
        server.stop()


def test_each_session_keeps_its_most_recently_used_pages(sqlite_url: str) -> None:
    server = WebServer(sqlite_url, WEB_TEST_PER_SESSION="3")
    try:
        with client(server) as browser, client(server) as other:
            elsewhere = other.get("/many")
            pages = [browser.get("/many")]
            for _ in range(4):
                pages.append(submit(browser, pages[-1], [("v", "a"), ("v", "b")]))
            assert "seen [['a', 'b'], ['a', 'b']" in pages[-1].text  # repeated fields kept
            assert browser.get(pages[0].url).status_code == 410  # evicted: oldest first
            assert browser.get(pages[-1].url).status_code == 200
            assert other.get(elsewhere.url).status_code == 200  # another session untouched
    finally:
        server.stop()


# --- forms, side effects, async -------------------------------------------------------------


def test_checkout_validates_and_goes_back_to_edit_the_address(server: WebServer) -> None:
    with client(server) as browser:
        basket = browser.get("/checkout")
        wrong = submit(browser, basket, {"apple": "many", "pear": "0"})
        assert wrong.url == basket.url and wrong.history == []  # same page, no step taken
        assert "invalid literal" in wrong.text and "between 1 and 99" in wrong.text
        assert 'value="many"' in wrong.text  # what was typed is kept
        address = submit(browser, wrong, {"apple": "2", "pear": "1"})
        bad = submit(browser, address, {"name": "Ada", "street": "1 Loop", "postcode": "12"})
        assert "five digits" in bad.text
        confirm = submit(browser, bad, {"name": "Ada", "street": "1 Loop", "postcode": "12345"})
        assert "2 apples, 1 pears: 10 EUR, to Ada, 1 Loop, 12345" in confirm.text
        edit = submit(browser, confirm, {"_button": "Edit address"})
        assert 'value="Ada"' in edit.text and 'value="12345"' in edit.text  # prefilled
        confirm = submit(browser, edit, {"name": "Ada", "street": "2 Loop", "postcode": "54321"})
        done = submit(browser, confirm, {"_button": "Place order"})
        assert "Your order is order-1: 10 EUR" in done.text
        # the confirmation submitted again (back button): the order is not placed twice
        assert "Your order is order-1" in submit(browser, confirm, {"_button": "Place order"}).text


def test_side_effects_rerun_on_resubmission_but_once_runs_once(
    server: WebServer, tmp_path: Path
) -> None:
    with client(server) as browser:
        page = browser.get("/effects")
        first = submit(browser, page, {"x": "a"})
        second = submit(browser, page, {"x": "b"})
        assert "receipt: once a" in first.text and "receipt: once a" in second.text
    lines = (tmp_path / "effects.log").read_text().splitlines()
    assert lines == ["every time a", "once a", "every time b"]


def test_async_handler_under_asgi(server: WebServer) -> None:
    with client(server) as browser:
        page1 = browser.get("/async")
        page2 = submit(browser, page1, {"n": "2"})
        assert "Second" in page2.text
        assert "async sum 5" in submit(browser, page2, {"n": "3"}).text
        assert "async sum 12" in submit(browser, page2, {"n": "10"}).text  # back: a fork


# --- restarts, several processes, code changes, key rotation -------------------------------


def test_conversation_survives_a_server_restart(server: WebServer) -> None:
    with client(server) as browser:
        page2 = submit(browser, browser.get("/sum"), {"n": "7"})
        server.restart()
        page3 = submit(browser, browser.get(page2.url), {"n": "8"})
        assert "Number 3? (so far 15)" in page3.text


def test_two_processes_share_a_redis_store_with_requests_alternating(
    redis_server: Any,
) -> None:
    first, second = WebServer(redis_server.url), WebServer(redis_server.url)
    try:
        with client(first) as a:
            page = a.get("/sum")
            for n, target in zip((1, 2, 3), (second, first, second)):
                moved = a.get(
                    str(page.url).replace(first.url, target.url).replace(second.url, target.url)
                )
                a.cookies = a.cookies  # the session cookie goes to both (same host)
                page = submit(a, moved, {"n": str(n)})
            assert page.text == "<p>The sum is 6</p>"
    finally:
        first.stop()
        second.stop()


def test_load_two_processes_many_conversations_none_lost_or_mixed(redis_server: Any) -> None:
    """Bounded: 60 conversations x 10 pages, 6 at a time, alternating between processes."""
    from concurrent.futures import ThreadPoolExecutor

    servers_ = [WebServer(redis_server.url, WEB_TEST_PER_SESSION="5") for _ in range(2)]
    prefix = "/many/-/"

    def conversation(number: int) -> list[str]:
        hosts = [s.url for s in servers_]
        with httpx.Client(timeout=30) as browser:
            page = browser.get(hosts[number % 2] + "/many", follow_redirects=True)
            seen: list[list[str]] = []
            pages = [str(page.url).split(prefix)[1].split(".")[0]]
            for step in range(10):
                csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
                assert csrf, page.text
                data = {"v": f"c{number}s{step}", "_csrf": csrf.group(1)}
                path = prefix + str(page.url).split(prefix)[1]
                answered = browser.post(hosts[(number + step + 1) % 2] + path, data=data)
                page = browser.get(hosts[(number + step) % 2] + answered.headers["location"])
                seen.append([f"c{number}s{step}"])
                assert f"step {step + 1} seen {seen}" in page.text, (number, step, page.text)
                pages.append(str(page.url).split(prefix)[1].split(".")[0])
            return pages

    try:
        with ThreadPoolExecutor(6) as pool:
            made = list(pool.map(conversation, range(60)))
        store = open_store(redis_server.url)
        live = set(store.keys())
        store.close()
        for pages in made:  # each session keeps its 5 most recent pages, no more
            assert set(pages[-5:]) <= live and not set(pages[:-5]) & live
    finally:
        for server in servers_:
            server.stop()


CHANGING = """
from contsnap import web


def changing(request):
    first = yield web.ask(lambda k: f'<form method="post" action="{k}"><input name="n"></form>')
    second = yield web.ask(lambda k: f'<form method="post" action="{k}"><input name="n"></form>')
    return f"<p>{SIGN}{first['n']} {second['n']}</p>"


def register(app):
    app.conversation("/changing")(changing)
"""


def test_code_changed_between_two_pages_says_the_application_was_updated(
    server: WebServer, tmp_path: Path
) -> None:
    module = tmp_path / "mods" / "changing_app.py"
    module.parent.mkdir()
    module.write_text(CHANGING.replace("{SIGN}", "old "))
    server.restart(WEB_TEST_MODULE="changing_app", WEB_TEST_PYTHONPATH=str(module.parent))
    with client(server) as browser:
        page2 = submit(browser, browser.get("/changing"), {"n": "1"})
        module.write_text(CHANGING.replace("{SIGN}", "renewed "))  # another size: no stale .pyc
        server.restart()
        updated = browser.get(page2.url)
        assert updated.status_code == 409
        assert "The application was updated; start again." in updated.text
        assert "The application was updated" in submit(browser, page2, {"n": "2"}).text


MIGRATION = """

import contsnap


@contsnap.migration("changing_app:changing")
def same_places(old):
    # the new code pauses on the same lines with the same variables
    return contsnap.Resume(line=old.line, locals=old.locals)
"""


def test_code_changed_with_a_migration_registered_continues(
    server: WebServer, tmp_path: Path
) -> None:
    module = tmp_path / "mods" / "changing_app.py"
    module.parent.mkdir()
    module.write_text(CHANGING.replace("{SIGN}", "old "))
    server.restart(WEB_TEST_MODULE="changing_app", WEB_TEST_PYTHONPATH=str(module.parent))
    with client(server) as browser:
        page2 = submit(browser, browser.get("/changing"), {"n": "1"})
        module.write_text(CHANGING.replace("{SIGN}", "migrated ") + MIGRATION)
        server.restart()
        assert submit(browser, browser.get(page2.url), {"n": "2"}).text == "<p>migrated 1 2</p>"


def test_key_rotation_keeps_open_conversations(sqlite_url: str) -> None:
    server = WebServer(sqlite_url)
    try:
        with client(server) as browser:
            page2 = submit(browser, browser.get("/sum"), {"n": "1"})
            server.restart(CONTSNAP_KEY="new-" + KEY, CONTSNAP_OLD_KEYS=KEY)
            page3 = submit(browser, browser.get(page2.url), {"n": "2"})
            assert "so far 3" in page3.text
            server.restart(CONTSNAP_OLD_KEYS="")  # the old key retired: its pages are gone
            assert browser.get(page2.url).status_code == 404
            assert browser.get(page3.url).status_code == 200  # signed with the new key
    finally:
        server.stop()


# --- in-process (WSGI): the sweeper and the global bound ----------------------------------


def _wsgi_client(app: Any) -> Any:
    transport = httpx.WSGITransport(app=app.wsgi)
    return httpx.Client(transport=transport, base_url="http://t", follow_redirects=True)


def test_sweeper_deletes_expired_pages_and_the_store_stays_within_max_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import web_sum

    from contsnap import web

    monkeypatch.setenv("CONTSNAP_KEY", KEY)
    app = web.App("swept", store=f"sqlite:///{tmp_path}/p.db", idle=0.3, sweep_every=0.0)
    app.conversation("/sum")(web_sum.add_three)
    with _wsgi_client(app) as browser:
        submit(browser, browser.get("/sum"), {"n": "1"})
    assert len(app.store.keys()) == 2
    time.sleep(0.5)
    assert app.sweep() == 2 and app.store.keys() == []

    small = web.App("small", store=f"sqlite:///{tmp_path}/s.db", max_bytes=20_000)
    small.conversation("/sum")(web_sum.add_three)
    browsers = [_wsgi_client(small) for _ in range(20)]  # 20 sessions, 2 pages each
    pages = [submit(b, b.get("/sum"), {"n": "1"}) for b in browsers]
    names = small.store.keys()
    sizes = [len(small.store.get(name) or b"") for name in names]
    assert sum(sizes) <= 20_000 and len(sizes) < 40
    assert browsers[0].get(pages[0].url).status_code == 410  # the oldest went first
    assert "so far 1" in browsers[-1].get(pages[-1].url).text
    for b in browsers:
        b.close()


def test_absolute_ttl_expires_a_page_however_often_it_is_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import web_sum

    from contsnap import web

    monkeypatch.setenv("CONTSNAP_KEY", KEY)
    app = web.App("ttl", store=f"sqlite:///{tmp_path}/p.db", idle=60, ttl=0.8)
    app.conversation("/sum")(web_sum.add_three)
    with _wsgi_client(app) as browser:
        page = browser.get("/sum")
        for _ in range(3):
            time.sleep(0.2)
            assert browser.get(page.url).status_code == 200  # in use: the idle timer restarts
        time.sleep(0.4)
        assert browser.get(page.url).status_code == 410  # 8 h (here 0.8 s) after it was made


def test_pages_never_store_the_browsers_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import web_sum

    from contsnap import web

    monkeypatch.setenv("CONTSNAP_KEY", KEY)
    app = web.App("creds", store=f"sqlite:///{tmp_path}/p.db")
    app.conversation("/sum")(web_sum.add_three)
    with _wsgi_client(app) as browser:
        page = browser.get("/sum", headers={"Authorization": "Bearer s3cret-token"})
        submit(browser, page, {"n": "1"})
        session = browser.cookies["contsnap_session"]
    stored = b""
    for name in app.store.keys():  # noqa: SIM118 - a store, not a dict
        meta, payload = _codec.verify(
            app.store.get(name) or b"", kinds=("web-page",), identity="creds:/sum", key=KEY
        )
        stored += payload + repr(meta).encode()
    assert b"s3cret-token" not in stored and session.encode() not in stored
    assert b"/sum" in stored  # the pages are read in the clear: the check above means something


# --- the public surface ------------------------------------------------------------------


def test_public_names_report_contsnap_web_and_errors_are_checkpoint_errors() -> None:
    from contsnap import web

    for name in web.__all__:
        assert getattr(web, name).__module__ == "contsnap.web", name
    assert issubclass(web.WebError, contsnap.CheckpointError)
    with pytest.raises(web.WebError, match="neither a generator function"):
        web.App("x").conversation("/plain")(lambda request: "<p>no pages</p>")
    with pytest.raises(web.WebError, match="a path starts with '/'"):
        web.App("x").conversation("no-slash")


# --- WSGI, and the mounts in Flask and Starlette --------------------------------------------


def _mount_conversation(browser: Any) -> None:
    basket = browser.get("/shop/checkout")
    assert basket.status_code == 200 and "/shop/checkout/-/" in str(basket.url)
    cookie = basket.history[0].headers["set-cookie"]
    assert "Path=/shop" in cookie
    address = submit(browser, basket, {"apple": "1", "pear": "1"})
    confirm = submit(browser, address, {"name": "Bo", "street": "S", "postcode": "11111"})
    assert "7 EUR" in confirm.text


def test_flask_mount_over_wsgi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("flask")
    monkeypatch.setenv("CONTSNAP_KEY", KEY)
    import web_mounts

    web_mounts.checkout.pages._given = f"sqlite:///{tmp_path}/flask.db"
    web_mounts.checkout.pages._opened = None
    transport = httpx.WSGITransport(app=web_mounts.flask_app)
    with httpx.Client(transport=transport, base_url="http://t", follow_redirects=True) as b:
        assert "Shop" in b.get("/").text
        _mount_conversation(b)


def test_starlette_mount_over_asgi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("starlette")
    monkeypatch.setenv("CONTSNAP_KEY", KEY)
    import web_mounts

    web_mounts.checkout.pages._given = f"sqlite:///{tmp_path}/starlette.db"
    web_mounts.checkout.pages._opened = None

    async def run() -> None:
        transport = httpx.ASGITransport(app=web_mounts.starlette_app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", follow_redirects=True
        ) as b:
            assert "Shop" in (await b.get("/")).text
            sync = _AsyncAsSync(b)
            await sync.run(_mount_conversation)

    asyncio.run(run())


class _AsyncAsSync:
    """Runs the synchronous conversation helper against an async client (in a thread)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def run(self, steps: Any) -> None:
        loop = asyncio.get_running_loop()
        outer = self

        class Browser:
            def get(self, url: Any) -> Any:
                return asyncio.run_coroutine_threadsafe(outer.client.get(url), loop).result()

            def post(self, url: Any, data: Any) -> Any:
                coro = outer.client.post(url, data=data)
                return asyncio.run_coroutine_threadsafe(coro, loop).result()

        await asyncio.to_thread(steps, Browser())


def test_codec_is_the_only_path_page_bytes_are_signed_web_pages(sqlite_url: str) -> None:
    server = WebServer(sqlite_url)
    try:
        with client(server) as browser:
            url = str(browser.get("/sum").url)
        store = open_store(sqlite_url)
        meta, _payload = _codec.verify(
            store.get(page_id(url)) or b"", kinds=("web-page",), identity="web-test:/sum", key=KEY
        )
        assert meta["kind"] == "web-page" and meta["identity"] == "web-test:/sum"
        with pytest.raises(contsnap.SnapshotKindError):  # bound to its conversation
            _codec.verify(
                store.get(page_id(url)) or b"",
                kinds=("web-page",),
                identity="web-test:/checkout",
                key=KEY,
            )
        store.close()
    finally:
        server.stop()


# --- HEAD ------------------------------------------------------------------------------------


def test_head_answers_status_and_headers_without_a_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import web_sum

    from contsnap import web

    monkeypatch.setenv("CONTSNAP_KEY", KEY)
    app = web.App("head", store=f"sqlite:///{tmp_path}/p.db")
    app.conversation("/sum")(web_sum.add_three)
    with _wsgi_client(app) as browser:
        page = browser.get("/sum")
        expired_url = str(page.url).replace("/-/", "/-/A", 1)[:-1]
        for url, status in ((page.url, 200), ("/nowhere", 404), (expired_url, 404)):
            got, head = browser.get(url), browser.head(url)
            assert (head.status_code, got.status_code) == (status, status)
            assert head.content == b"" and got.content != b""
            assert head.headers["content-length"] == str(len(got.content))
        start = browser.head("/sum", follow_redirects=False)
        assert start.status_code == 303 and "/sum/-/" in start.headers["location"]

    async def over_asgi() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as b:
            b.cookies = browser.cookies
            got, head = await b.get(page.url), await b.head(page.url)
            assert got.status_code == head.status_code == 200
            assert head.content == b"" and len(got.content) > 0
            assert head.headers["content-length"] == str(len(got.content))

    asyncio.run(over_asgi())


# --- client-side pages: the signed snapshot travels in the URL ----------------------------


def _client_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> Any:
    import web_checkout
    import web_sum

    from contsnap import web

    monkeypatch.setenv("CONTSNAP_KEY", KEY)
    options.setdefault("client_side", 1500)
    app = web.App("client", store=f"sqlite:///{tmp_path}/p.db", **options)
    app.conversation("/sum")(web_sum.add_three)
    app.conversation("/checkout")(web_checkout.checkout)
    return app


def test_client_side_pages_travel_in_the_url_and_fork_like_stored_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _client_app(tmp_path, monkeypatch)
    with _wsgi_client(app) as browser:
        page1 = browser.get("/sum")
        assert "/sum/-/~" in str(page1.url) and len(str(page1.url)) < 2100
        page2 = submit(browser, page1, {"n": "4"})
        assert "Number 2? (so far 4)" in page2.text and "/-/~" in str(page2.url)
        assert browser.get(page2.url).text == page2.text  # reload
        other = submit(browser, page1, {"n": "10"})  # the back button: a branch of its own
        assert "so far 10" in other.text
        assert "The sum is 15" in sum_of(browser, page2, 5, 6).text
        assert "The sum is 21" in sum_of(browser, other, 5, 6).text
        forged = browser.post(action(page2), data={"n": "1", "_csrf": "0" * 32})
        assert forged.status_code == 403
        # a form re-asked with its errors, then the checkout's pages
        basket = browser.get("/checkout")
        wrong = submit(browser, basket, {"apple": "many", "pear": "1"})
        assert wrong.url == basket.url and "invalid literal" in wrong.text
        address = submit(browser, wrong, {"apple": "1", "pear": "1"})
        assert "Delivery address" in address.text and "/-/~" in str(address.url)
    assert app.store.keys() == []  # no page was stored


def test_client_side_page_too_big_for_the_url_falls_back_to_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _client_app(tmp_path, monkeypatch, client_side=400)
    with _wsgi_client(app) as browser:
        page1 = browser.get("/sum")
        assert "/-/~" not in str(page1.url) and len(app.store.keys()) == 1
        assert "so far 4" in submit(browser, page1, {"n": "4"}).text


def test_client_side_pages_are_verified_before_anything_is_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    from contsnap.web import _pages

    app = _client_app(tmp_path, monkeypatch)
    restored: list[str] = []
    real_restore = _codec.restore

    def spy(meta: Any, payload: bytes) -> Any:
        restored.append(meta["identity"])
        return real_restore(meta, payload)

    monkeypatch.setattr(_pages._codec, "restore", spy)
    with _wsgi_client(app) as browser:
        page1 = browser.get("/sum")
        token = str(page1.url).rsplit("/-/", 1)[1]
        data = base64.urlsafe_b64decode(token[1:] + "=" * (-len(token[1:]) % 4))
        flipped = bytearray(data)
        flipped[-30] ^= 0x01
        tampered = "~" + base64.urlsafe_b64encode(bytes(flipped)).decode().rstrip("=")
        restored.clear()
        for bad in (tampered, "~" + "A" * 40, "~not*base64", "~" + "A" * 3000):
            refused = browser.get(f"/sum/-/{bad}")
            assert refused.status_code == 400 and "damaged or not ours" in refused.text, bad
        posted = browser.post(f"/sum/-/{tampered}", data={"n": "1"})
        assert posted.status_code == 400
        # a good page of another conversation of the app is not this one's
        assert browser.get(f"/checkout/-/{token}").status_code == 400
        assert restored == []  # nothing was unpickled
        # a stored page's bytes carried in a URL are not a client-side page
        stored = _client_app(tmp_path, monkeypatch, client_side=0)
        with _wsgi_client(stored) as other:
            url = str(other.get("/sum").url)
            blob = stored.store.get(page_id(url)) or b""
            carried = "~" + base64.urlsafe_b64encode(blob).decode().rstrip("=")
            assert browser.get(f"/sum/-/{carried}").status_code == 400
        assert restored == []
        # another browser session's page: as for a stored page, 404
        with _wsgi_client(app) as mallory:
            assert mallory.get(page1.url).status_code == 404
        assert restored == []
        assert browser.get(page1.url).status_code == 200 and restored == ["client:/sum"]


def test_client_side_pages_expire_by_their_signed_creation_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _client_app(tmp_path, monkeypatch, idle=0.5)
    with _wsgi_client(app) as browser:
        page1 = browser.get("/sum")
        assert browser.get(page1.url).status_code == 200
        time.sleep(0.7)
        expired = browser.get(page1.url)
        assert expired.status_code == 410 and "This page has expired" in expired.text
        assert submit(browser, page1, {"n": "1"}).status_code == 410


def test_client_side_limit_must_be_a_byte_count() -> None:
    from contsnap import web

    for wrong in (-1, 1.5, True, "1k"):
        with pytest.raises(web.WebError, match="the largest page to keep in its URL"):
            web.App("x", client_side=wrong)


# --- handlers saved by value: defined in a script (__main__) or inside a function ---------

BY_VALUE = """
import json, os, re, sys

import httpx

from contsnap import web

app = web.App("by-value", store=os.environ["STORE"])


def build(app):
    @app.conversation("/inner")
    def inner(request):
        a = yield web.ask(lambda k: f'<form method="post" action="{k}"><input name="n"></form>')
        b = yield web.ask(lambda k: f'<form method="post" action="{k}"><input name="n"></form>')
        return f"<p>inner SIGN {int(a['n']) + int(b['n'])}</p>"


build(app)


@app.conversation("/main")
def main_handler(request):
    a = yield web.ask(lambda k: f'<form method="post" action="{k}"><input name="n"></form>')
    b = yield web.ask(lambda k: f'<form method="post" action="{k}"><input name="n"></form>')
    return f"<p>main SIGN {int(a['n']) + int(b['n'])}</p>"


def submit(client, text, **fields):
    action = re.search(r'action="([^"]+)"', text).group(1)
    csrf = re.search(r'name="_csrf" value="([^"]+)"', text).group(1)
    return client.post(action, data={**fields, "_csrf": csrf})


transport = httpx.WSGITransport(app=app.wsgi)
with httpx.Client(transport=transport, base_url="http://t", follow_redirects=True) as c:
    if sys.argv[1] == "start":
        saved = {}
        for path in ("/inner", "/main"):
            page = submit(c, c.get(path).text, n="1")
            saved[path] = [page.text, str(page.url)]
        print(json.dumps([saved, dict(c.cookies)]))
    else:
        saved, cookies = json.loads(sys.stdin.read())
        c.cookies.update(cookies)
        for path, (text, url) in saved.items():
            page = submit(c, text, n="2")
            print(path, c.get(url).status_code, page.status_code, page.text[-22:])
"""


def test_handlers_saved_by_value_continue_in_a_new_process_and_refuse_changed_code(
    tmp_path: Path,
) -> None:
    import os
    import subprocess

    script = tmp_path / "by_value_app.py"
    script.write_text(BY_VALUE)
    env = dict(os.environ, CONTSNAP_KEY=KEY, STORE=f"sqlite:///{tmp_path}/p.db")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)

    def run(*args: str, given: str = "") -> str:
        done = subprocess.run(
            [sys.executable, str(script), *args],
            input=given,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    state = run("start")
    assert run("go", given=state).splitlines() == [
        "/inner 200 200 <p>inner SIGN 3</p>",
        "/main 200 200 <p>main SIGN 3</p>",
    ]
    script.write_text(BY_VALUE.replace("SIGN", "CHANGED"))  # another size: no stale .pyc
    lines = run("go", given=state).splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["/inner", "409", "409"],
        ["/main", "409", "409"],
    ]


@hypothesis.given(hypothesis.strategies.text(alphabet="ab=&%+2F é;", max_size=30))
def test_form_bodies_parse_as_parse_qsl_does(body: str) -> None:
    from urllib.parse import parse_qsl

    from contsnap.web._app import _form_fields

    assert _form_fields(body.encode(), "") == parse_qsl(body, keep_blank_values=True)
    form = "application/x-www-form-urlencoded; charset=utf-8"
    assert _form_fields(body.encode(), form) == parse_qsl(body, keep_blank_values=True)


def test_a_multipart_form_answers_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A form sent as multipart/form-data (its enctype, or JavaScript's FormData) answers the
    page as a urlencoded one does; it was read as urlencoded, so its CSRF field was never
    found and every such form answered 403 "not sent from its page"."""
    app = _client_app(tmp_path, monkeypatch, client_side=0)
    with _wsgi_client(app) as browser:
        page1 = browser.get("/sum")
        csrf = re.search(r'name="_csrf" value="([^"]+)"', page1.text)
        assert csrf is not None
        fields = {"n": (None, "4"), "_csrf": (None, csrf.group(1))}
        page2 = browser.post(action(page1), files=fields)  # httpx sends multipart/form-data
        assert page2.status_code == 200 and "Number 2? (so far 4)" in page2.text, page2.text
        as_file = {"n": ("n.txt", b"5", "text/plain"), "_csrf": (None, csrf.group(1))}
        assert "so far 5" in browser.post(action(page1), files=as_file).text
        for body in (b"--x\r\nContent-Disposition: form-data\r\n\r\n4\r\n--x--", b"\xff" * 40):
            damaged = browser.post(
                action(page1),
                content=body,
                headers={"content-type": "multipart/form-data; boundary=x"},
            )
            assert damaged.status_code == 403, damaged.text


def test_page_macs_are_hmac_sha256_under_each_key() -> None:
    # the MAC of page ids, CSRF tokens and every signed snapshot (the envelope's)
    import hashlib
    import hmac

    from contsnap._keys import mac

    for secret in (b"k" * 32, b"other key", b"k" * 32, bytes(range(64)) * 2):
        for message in (b"", b"contsnap web page\0app:/sum\0s\0id", b"x" * 200):
            assert mac(secret, message) == hmac.digest(secret, message, hashlib.sha256)


def test_a_server_killed_at_random_instants_loses_no_page_it_answered(sqlite_url: str) -> None:
    """uvicorn SIGKILLed six times at random instants while a browser goes through sums:
    after each restart, every page whose URL the browser was sent still shows, and the
    conversations interrupted by a kill finish from their last page with the right sum."""
    import random
    import threading

    seed = int(os.environ.get("CONTSNAP_KILL_SEED", 1207))
    rng = random.Random(seed)
    server = WebServer(sqlite_url)
    received: list[str] = []  # every page URL the server redirected the browser to
    try:
        with httpx.Client(base_url=server.url, timeout=20) as browser:

            def go(response: Any) -> Any:
                while response.status_code == 303:
                    received.append(response.headers["location"])
                    response = browser.get(response.headers["location"])
                return response

            for kill in range(6):
                process = server.process
                assert process is not None
                timer = threading.Timer(rng.uniform(0.0, 0.6), process.kill)
                timer.start()
                try:
                    while True:  # conversations until the kill lands
                        page = go(browser.get("/sum"))
                        for n in (1, 2, 3):
                            page = go(submit(browser, page, {"n": str(n)}))
                        assert "The sum is 6" in page.text, (seed, page.text)
                except httpx.TransportError:
                    pass
                timer.join()
                process.wait(10)
                server.start()
                # none lost, none damaged (the session keeps its 45 most recently used)
                for url in received[-40:]:
                    shown = browser.get(url)
                    assert shown.status_code == 200, (seed, kill, url, shown.text)
                # the last page the browser had, answered to the end
                last = browser.get(received[-1])
                while "The sum is" not in last.text:
                    last = go(submit(browser, last, {"n": "1"}))
                assert re.search(r"The sum is \d+", last.text), (seed, last.text)
    finally:
        server.stop()


def test_a_page_moved_to_another_id_in_the_store_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone who can write the store, but has no key, copies one session's page over
    another's: genuine bytes, but of another page. It was shown, and continued, in the
    other session (its answers so far with it); the signed id refuses it (400)."""
    app = _client_app(tmp_path, monkeypatch, client_side=0)
    with _wsgi_client(app) as alice, _wsgi_client(app) as bob:
        secret = submit(alice, alice.get("/sum"), {"n": "1000"})
        mine = submit(bob, bob.get("/sum"), {"n": "1"})
        assert "so far 1000" in secret.text and "so far 1" in mine.text
        store = app.store
        alices, bobs = page_id(str(secret.url)), page_id(str(mine.url))
        store.put(bobs, store.get(alices) or b"")
        shown = bob.get(mine.url)
        assert shown.status_code == 400 and "so far 1000" not in shown.text, shown.text
        csrf = re.search(r'name="_csrf" value="([^"]+)"', mine.text)
        assert csrf is not None
        posted = bob.post(str(mine.url), data={"n": "2", "_csrf": csrf.group(1)})
        assert posted.status_code == 400 and "1002" not in posted.text, posted.text
        assert "Number 3? (so far 3000)" in submit(alice, secret, {"n": "2000"}).text
