"""contsnap.web in a real browser: Playwright driving Debian's Chromium against uvicorn.

What the HTTP tests check, as a user does it: the back button then another answer,
a second tab from page 1, reload, an expired page, a tampered id, a server restart
between two pages, and two server processes sharing Redis with the pages alternating;
the back button and a second tab on each store (SQLite, Redis, PostgreSQL) and with
client-side pages (the page in its URL).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("uvicorn")

from web_server import WebServer  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} not found: apt-get install chromium (tests/system-deps.sh does)",
)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def tab(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context()
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebServer]:
    running = WebServer(f"sqlite:///{tmp_path}/pages.db")
    yield running
    running.stop()


def answer(page: Any, n: int) -> None:
    page.fill('input[name="n"]', str(n))
    with page.expect_navigation():
        page.click("button")


def text(page: Any) -> str:
    return str(page.inner_text("body"))


def test_back_button_then_another_answer(tab: Any, server: WebServer) -> None:
    tab.goto(server.url + "/sum")
    answer(tab, 1)
    assert "Number 2? (so far 1)" in text(tab)
    page2 = tab.url
    tab.go_back()
    assert "Number 1? (so far 0)" in text(tab)
    answer(tab, 10)  # another answer to page 1: a branch of its own
    assert "Number 2? (so far 10)" in text(tab)
    answer(tab, 20)
    answer(tab, 30)
    assert "The sum is 60" in text(tab)
    tab.goto(page2)  # the first branch is still there
    answer(tab, 2)
    answer(tab, 3)
    assert "The sum is 6" in text(tab)


def test_second_tab_from_page_one_finishes_independently(tab: Any, server: WebServer) -> None:
    tab.goto(server.url + "/sum")
    page1 = tab.url
    answer(tab, 1)
    other = tab.context.new_page()  # same browser session, its own tab
    other.goto(page1)
    answer(other, 100)
    answer(tab, 2)
    answer(other, 200)
    answer(tab, 3)
    answer(other, 300)
    assert "The sum is 6" in text(tab)
    assert "The sum is 600" in text(other)


def test_reload_shows_the_same_page_without_resubmitting(tab: Any, server: WebServer) -> None:
    tab.goto(server.url + "/sum")
    answer(tab, 5)
    url = tab.url
    tab.reload()
    assert tab.url == url and "Number 2? (so far 5)" in text(tab)
    answer(tab, 1)
    answer(tab, 1)
    tab.reload()
    assert "The sum is 7" in text(tab)


def _expired_then_start_again(tab: Any) -> None:
    """The expired page says so, and its link starts the conversation again."""
    assert "This page has expired \u2014 start again." in text(tab)
    with tab.expect_navigation():
        tab.click('a:has-text("Start again")')
    assert "Number 1? (so far 0)" in text(tab)


def test_expired_page(tab: Any, tmp_path: Path) -> None:
    server = WebServer(f"sqlite:///{tmp_path}/pages.db", WEB_TEST_IDLE="0.5")
    try:
        tab.goto(server.url + "/sum")
        time.sleep(0.8)
        response = tab.reload()
        assert response.status == 410
        _expired_then_start_again(tab)
    finally:
        server.stop()


def test_tampered_id(tab: Any, server: WebServer) -> None:
    tab.goto(server.url + "/sum")
    url = tab.url
    tampered = url[:-1] + ("A" if url[-1] != "A" else "B")
    response = tab.goto(tampered)
    assert response.status == 404 and "does not exist" in text(tab)
    tab.goto(url)
    answer(tab, 4)
    assert "so far 4" in text(tab)


def test_server_restart_between_two_pages(tab: Any, server: WebServer) -> None:
    tab.goto(server.url + "/sum")
    answer(tab, 7)
    server.restart()
    answer(tab, 8)  # the form of the page shown before the restart
    assert "Number 3? (so far 15)" in text(tab)


def test_two_servers_sharing_redis_alternately(tab: Any, redis_server: Any) -> None:
    first, second = WebServer(redis_server.url), WebServer(redis_server.url)
    try:
        tab.goto(first.url + "/sum")
        for n, (here, there) in enumerate([(first, second), (second, first), (first, second)]):
            tab.goto(tab.url.replace(here.url, there.url))  # the next request: other process
            answer(tab, n + 1)
        assert "The sum is 6" in text(tab)
    finally:
        first.stop()
        second.stop()


@pytest.fixture(params=["sqlite", "redis", "postgres", "client-side"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebServer]:
    options: dict[str, str] = {}
    if request.param in ("sqlite", "client-side"):
        url = f"sqlite:///{tmp_path}/pages.db"
        if request.param == "client-side":
            options["WEB_TEST_CLIENT_SIDE"] = "1500"
    else:
        url = str(request.getfixturevalue(f"{request.param}_server").url)
    running = WebServer(url, **options)
    yield running
    running.stop()


def test_back_button_and_a_second_tab_on_every_store(tab: Any, any_store: WebServer) -> None:
    client_side = any_store.env.get("WEB_TEST_CLIENT_SIDE")
    tab.goto(any_store.url + "/sum")
    page1 = tab.url
    assert ("/sum/-/~" in page1) == bool(client_side)
    answer(tab, 1)
    page2 = tab.url
    tab.go_back()
    assert tab.url == page1 and "Number 1? (so far 0)" in text(tab)
    answer(tab, 10)  # another answer to page 1
    other = tab.context.new_page()  # and page 2 of the first branch in a second tab
    other.goto(page2)
    answer(other, 2)
    answer(tab, 20)
    answer(other, 3)
    answer(tab, 30)
    assert "The sum is 6" in text(other)
    assert "The sum is 60" in text(tab)
    tab.reload()
    assert "The sum is 60" in text(tab)


def test_client_side_page_tampered_in_the_url(tab: Any, tmp_path: Path) -> None:
    server = WebServer(f"sqlite:///{tmp_path}/pages.db", WEB_TEST_CLIENT_SIDE="1500")
    try:
        tab.goto(server.url + "/sum")
        answer(tab, 4)
        url = tab.url
        at = len(url) - 30
        tampered = url[:at] + ("A" if url[at] != "A" else "B") + url[at + 1 :]
        response = tab.goto(tampered)
        assert response.status == 400 and "damaged or not ours" in text(tab)
        tab.goto(url)
        answer(tab, 5)
        assert "Number 3? (so far 9)" in text(tab)
    finally:
        server.stop()


def test_double_submit_shows_the_next_page_and_once_runs_once(tab: Any, tmp_path: Path) -> None:
    """A double click on the button, and a form submitted twice before the first answer
    came back: the browser shows the right next page, and ``web.once`` ran once."""
    log = tmp_path / "effects.log"
    server = WebServer(f"sqlite:///{tmp_path}/pages.db", WEB_TEST_EFFECTS=str(log))
    try:
        tab.goto(server.url + "/sum")
        tab.fill('input[name="n"]', "4")
        with tab.expect_navigation():
            tab.dblclick("button")
        tab.wait_for_load_state()
        assert "Number 2? (so far 4)" in text(tab)
        answer(tab, 5)
        answer(tab, 6)
        assert "The sum is 15" in text(tab)

        tab.goto(server.url + "/effects")
        tab.fill('input[name="x"]', "tea")
        with tab.expect_navigation(url="**/effects/-/*"):
            tab.evaluate(
                "() => { const f = document.forms[0]; f.requestSubmit(); f.requestSubmit(); }"
            )
        tab.wait_for_function("document.body && document.body.innerText.includes('receipt')")
        assert "receipt: once tea" in text(tab)
        lines = log.read_text().splitlines()
        assert lines.count("once tea") == 1, lines
        assert 1 <= lines.count("every time tea") <= 2, lines

        # two POSTs of one page at the same moment, from the page itself (its cookie, its
        # CSRF field): both answers are the receipt of the one order
        tab.goto(server.url + "/effects")
        tab.fill('input[name="x"]', "milk")
        bodies = tab.evaluate(
            """async () => {
                const f = document.forms[0];
                const send = () => fetch(f.action, {method: "POST", body: new FormData(f)})
                    .then(r => r.text());
                return await Promise.all([send(), send()]);
            }"""
        )
        assert all("receipt: once milk" in body for body in bodies), bodies
        lines = log.read_text().splitlines()
        assert lines.count("once milk") == 1 and lines.count("every time milk") == 2, lines
    finally:
        server.stop()


def test_a_form_sent_after_its_page_expired_says_start_again(tab: Any, tmp_path: Path) -> None:
    server = WebServer(f"sqlite:///{tmp_path}/pages.db", WEB_TEST_IDLE="0.5")
    try:
        tab.goto(server.url + "/sum")
        time.sleep(0.8)  # the page's idle time passes (a clock, not an event: nothing to wait on)
        tab.fill('input[name="n"]', "3")
        with tab.expect_navigation() as sent:
            tab.click("button")
        assert sent.value.status == 410
        _expired_then_start_again(tab)
    finally:
        server.stop()


def test_a_browser_that_lost_its_session_cookie_cannot_continue(
    tab: Any, server: WebServer
) -> None:
    tab.goto(server.url + "/sum")
    answer(tab, 2)
    page2 = tab.url
    tab.context.clear_cookies()  # the session ended (cookies cleared, another browser)
    response = tab.reload()
    assert response.status == 404 and "does not exist" in text(tab)
    tab.goto(server.url + "/sum")  # a new conversation in the new session works
    answer(tab, 7)
    assert "Number 2? (so far 7)" in text(tab) and tab.url != page2
