"""contsnap.web: per-request continuation overhead, bytes per page, a load test (not timed tests).

1. **Overhead** (HTTP excluded: the app's request handler called in-process, SQLite
   store): one step of a conversation is a POST (load the page, verify, restore,
   send the answer, snapshot, sign, store) and the GET of the next page (load,
   verify, restore, render). The same pages served *without* continuations (a
   stateless handler that keeps its state in hidden fields) give the floor; the
   difference is the continuation's cost per request.
2. **Bytes per page** as a conversation grows to 20 pages (each page keeps all
   answers so far).
3. **Load** (``--load``): N conversations x P pages against two uvicorn processes
   sharing a Redis store, requests alternating between them; p50/p99 latency, every
   conversation's pages checked, the store's size against its bound (5 pages per
   browser session); bounded in count and in time (``--time-limit``)::

    python benchmarks/bench_web.py [--steps 300] [--by-value] [--breakdown]
        [--load --conversations 1000 --pages 10 --workers 8 --time-limit 900]

4. **Compare** (``--compare TREE``): the same POST/GET steps in two processes, this
   checkout and TREE (another checkout, e.g. ``git worktree add /tmp/base main``),
   taking turns round by round so that both see the same load; the medians and the
   median of the per-round ratios. ``--cpu`` counts the request thread's CPU time
   instead of the wall clock (a busy machine then shifts both less)::

    python benchmarks/bench_web.py --compare /tmp/base --rounds 30 [--cpu]
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "examples")]
os.environ.setdefault("CONTSNAP_KEY", "bench-web-key-" + "0" * 40)

from contsnap import web  # noqa: E402
from contsnap.web._app import Incoming  # noqa: E402

PAGES = 20


def counter(request: web.Request):  # type: ignore[no-untyped-def]
    """The conversation: PAGES numbers, each page showing every answer so far."""
    seen: list[int] = []
    for step in range(PAGES):
        answer = yield web.ask(
            lambda k: (
                f'<form method="post" action="{k}"><p>step {step}: {seen}</p>'  # noqa: B023
                '<input name="n"><button>Next</button></form>'
            )
        )
        seen.append(int(answer["n"]))
    return f"<p>total {sum(seen)}</p>"


def stateless(request: Incoming) -> str:
    """The same pages without continuations: the state travels in hidden fields."""
    form = dict(parse_qsl(request.body.decode()))
    seen = [int(v) for v in form.get("seen", "").split(",") if v] + (
        [int(form["n"])] if "n" in form else []
    )
    if len(seen) == PAGES:
        return f"<p>total {sum(seen)}</p>"
    state = html.escape(",".join(map(str, seen)))
    return (
        f'<form method="post" action="/plain"><p>step {len(seen)}: {seen}</p>'
        f'<input type="hidden" name="seen" value="{state}">'
        '<input name="n"><button>Next</button></form>'
    )


def _csrf(body: str) -> str:
    found = re.search(r'name="_csrf" value="([^"]+)"', body)
    assert found, body
    return found.group(1)


def overhead(steps: int, by_value: bool = False) -> None:
    directory = tempfile.mkdtemp()
    app = web.App("bench", store=f"sqlite:///{directory}/pages.db")  # 50 pages per session
    if by_value:  # this script's own function: __main__, saved by value with its code
        app.conversation("/count")(counter)
    else:  # imported from a module, as a served app's handlers are: saved by reference
        import bench_web

        app.conversation("/count")(bench_web.counter)
    cookie = ""
    post_times: list[float] = []
    get_times: list[float] = []
    sizes: list[int] = []
    done = 0
    while done < steps:
        start = app.handle(Incoming("GET", "/count", "", {"cookie": cookie}, b""))
        cookie = cookie or start.headers[-1][1].split(";")[0]
        location = dict(start.headers)["location"]
        for n in range(PAGES):
            t0 = time.perf_counter()
            page = app.handle(Incoming("GET", location, "", {"cookie": cookie}, b""))
            t1 = time.perf_counter()
            body = f"n={n}&_csrf={_csrf(page.encoded().decode())}".encode()
            answered = app.handle(Incoming("POST", location, "", {"cookie": cookie}, body))
            t2 = time.perf_counter()
            get_times.append(t1 - t0)
            post_times.append(t2 - t1)
            if len(sizes) < PAGES:
                token = location.rsplit("/-/", 1)[1].split(".")[0]
                sizes.append(len(app.store.get(token) or b""))
            location = dict(answered.headers)["location"]
            done += 1
    plain_times: list[float] = []
    body = b""
    for i in range(steps):
        t0 = time.perf_counter()
        text = stateless(Incoming("POST", "/plain", "", {}, body))
        plain_times.append(time.perf_counter() - t0)
        seen = re.search(r'name="seen" value="([^"]*)"', text)
        body = f"seen={seen.group(1) if seen else ''}&n={i}".encode() if seen else b""

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e3:.3f} ms"

    floor = statistics.median(plain_times)
    how = "by value (__main__)" if by_value else "by reference (a module)"
    print(f"per request, {steps} steps, SQLite, handler {how}, HTTP excluded (median):")
    print(f"  without continuations (state in hidden fields): {ms(plain_times)}")
    print(f"  POST (restore, send, snapshot, sign, store):    {ms(post_times)}")
    print(f"  GET  (load, verify, show the saved HTML):       {ms(get_times)}")
    over_post = (statistics.median(post_times) - floor) * 1e3
    over_get = (statistics.median(get_times) - floor) * 1e3
    print(f"  continuation overhead: POST +{over_post:.3f} ms, GET +{over_get:.3f} ms")
    print("bytes stored per page (page n keeps n answers):")
    print("  " + " ".join(f"{n + 1}:{size}" for n, size in enumerate(sizes)))


def breakdown(steps: int) -> None:
    """Where a POST's time goes: the codec, the store, the detach, and the web layer's own rest."""
    import functools

    from contsnap import _codec
    from contsnap.web import _app

    directory = tempfile.mkdtemp()
    app = web.App("bench", store=f"sqlite:///{directory}/pages.db")
    import bench_web

    app.conversation("/count")(bench_web.counter)
    spent: dict[str, list[float]] = {}
    timing = [False]

    def timed(owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args: object, **kwargs: object) -> object:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if timing[0]:
                    spent.setdefault(label, []).append(time.perf_counter() - t0)

        setattr(owner, name, wrapper)

    for name in ("get", "touch", "put"):
        timed(app.store, name, f"store.{name}")
    for name in ("encode", "verify", "restore"):
        timed(_codec, name, f"codec.{name}")
    timed(_app, "_detach", "detach (snapshot)")
    cookie = ""
    posts: list[float] = []
    while len(posts) < steps:
        start = app.handle(Incoming("GET", "/count", "", {"cookie": cookie}, b""))
        cookie = cookie or start.headers[-1][1].split(";")[0]
        location = dict(start.headers)["location"]
        for n in range(PAGES):
            page = app.handle(Incoming("GET", location, "", {"cookie": cookie}, b""))
            body = f"n={n}&_csrf={_csrf(page.encoded().decode())}".encode()
            timing[0] = True
            t0 = time.perf_counter()
            answered = app.handle(Incoming("POST", location, "", {"cookie": cookie}, body))
            posts.append(time.perf_counter() - t0)
            timing[0] = False
            location = dict(answered.headers)["location"]
    total = statistics.median(posts)
    print(f"a POST, {len(posts)} steps, SQLite, median {total * 1e3:.3f} ms, of which (medians):")
    accounted = 0.0
    for label, values in sorted(spent.items()):
        share = statistics.median(values) * len(values) / len(posts)
        accounted += share
        print(f"  {label:20} {share * 1e3:.3f} ms ({len(values) / len(posts):.1f} per POST)")
    print(f"  {'web layer (the rest)':20} {(total - accounted) * 1e3:.3f} ms")


def _turns(cpu: bool) -> None:
    """A ``--compare`` worker: for each line ``N`` read, N conversations; their medians out."""
    clock = time.thread_time if cpu else time.perf_counter
    import bench_web

    app = web.App("bench", store=f"sqlite:///{tempfile.mkdtemp()}/pages.db")
    app.conversation("/count")(bench_web.counter)
    cookie = ""

    def conversation() -> tuple[list[float], list[float]]:
        nonlocal cookie
        posts, gets = [], []
        start = app.handle(Incoming("GET", "/count", "", {"cookie": cookie}, b""))
        cookie = cookie or start.headers[-1][1].split(";")[0]
        location = dict(start.headers)["location"]
        for n in range(PAGES):
            t0 = clock()
            page = app.handle(Incoming("GET", location, "", {"cookie": cookie}, b""))
            t1 = clock()
            body = f"n={n}&_csrf={_csrf(page.encoded().decode())}".encode()
            answered = app.handle(Incoming("POST", location, "", {"cookie": cookie}, body))
            posts.append(clock() - t1)
            gets.append(t1 - t0)
            location = dict(answered.headers)["location"]
        return posts, gets

    for _ in range(5):  # warm up
        conversation()
    for line in sys.stdin:
        posts, gets = [], []
        for _ in range(int(line)):
            post, get = conversation()
            posts += post
            gets += get
        print(json.dumps([statistics.median(posts), statistics.median(gets)]), flush=True)


def compare(tree: str, rounds: int, cpu: bool) -> None:
    """This checkout against ``tree``, in two processes taking turns (see the docstring)."""
    checkouts = {"this": str(ROOT), "other": os.path.abspath(tree)}
    if not os.path.isdir(os.path.join(checkouts["other"], "contsnap")):
        sys.exit(f"--compare {tree}: not a checkout of contsnap (no contsnap/ in it)")
    command = [sys.executable, str(Path(__file__).resolve()), "--turns"] + (["--cpu"] * cpu)
    workers = {
        name: subprocess.Popen(
            command,
            cwd=path,
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, path in checkouts.items()
    }
    results: dict[str, list[list[float]]] = {name: [] for name in workers}
    for _ in range(rounds):
        for name, worker in workers.items():
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write("3\n")
            worker.stdin.flush()
            results[name].append(json.loads(worker.stdout.readline()))
    for worker in workers.values():
        assert worker.stdin is not None
        worker.stdin.close()
        worker.wait()
    what = "thread CPU time" if cpu else "wall clock"
    print(f"{rounds} rounds of 3 conversations x {PAGES} pages each, SQLite, {what}, medians:")
    for name, path in checkouts.items():
        post = statistics.median(r[0] for r in results[name]) * 1e3
        get = statistics.median(r[1] for r in results[name]) * 1e3
        print(f"  {name:5} {path}: POST {post:.3f} ms, GET {get:.3f} ms")
    for index, label in ((0, "POST"), (1, "GET")):
        ratios = [a[index] / b[index] for a, b in zip(results["this"], results["other"])]
        print(
            f"  this/other per round, {label}: median {statistics.median(ratios):.3f} "
            f"(range {min(ratios):.2f}-{max(ratios):.2f})"
        )


def load(conversations: int, pages: int, workers: int, time_limit: float) -> None:
    import httpx
    import servers
    from web_server import WebServer

    from contsnap.stores import open_store

    redis = servers.RedisServer(servers.find_binary("redis-server") or "redis-server")
    per_session = 5  # each conversation is a browser session of its own: the bound bites
    bound = {"WEB_TEST_PER_SESSION": str(per_session)}
    first = WebServer(redis.url, **bound)
    second = WebServer(redis.url, **bound)
    latencies: list[float] = []
    wrong: list[int] = []
    finished: list[int] = []
    deadline = time.monotonic() + time_limit

    def one(number: int) -> None:
        """One conversation of ``pages`` pages of /many, each request to the other process."""
        if time.monotonic() > deadline:
            return  # bounded in time: the conversations not started by then are not run
        hosts = [first.url, second.url]
        with httpx.Client(timeout=30) as client:
            page = client.get(hosts[number % 2] + "/many", follow_redirects=True)
            seen: list[list[str]] = []
            for step in range(pages):
                path = "/" + str(page.url).split("/", 3)[3]
                data = {"v": f"c{number}s{step}", "_csrf": _csrf(page.text)}
                t0 = time.perf_counter()
                answered = client.post(hosts[(number + step + 1) % 2] + path, data=data)
                page = client.get(hosts[(number + step) % 2] + answered.headers["location"])
                latencies.append(time.perf_counter() - t0)
                seen.append([f"c{number}s{step}"])
                if f"step {step + 1} seen {seen}" not in page.text:
                    wrong.append(number)  # lost, or mixed up with another conversation
                    return
        finished.append(number)

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(conversations)))
        elapsed = time.perf_counter() - started
        store = open_store(redis.url)
        names = store.keys()
        keys = len(names)
        size = sum(len(store.get(name) or b"") for name in names)
        store.close()
    finally:
        first.stop()
        second.stop()
        redis.stop()
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1e3
    p99 = latencies[int(len(latencies) * 0.99)] * 1e3
    most = len(finished) * per_session
    within = keys <= most and size <= 256 * 1024 * 1024
    print(
        f"load: {len(finished)} of {conversations} conversations x {pages} pages finished "
        f"(time limit {time_limit:.0f} s), 2 uvicorn processes + Redis, {workers} clients: "
        f"{len(latencies)} steps in {elapsed:.1f} s, "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms per page (POST + GET), "
        f"{len(wrong)} lost or mixed-up conversations, {keys} pages in the store "
        f"({size / 1e6:.1f} MB; bound: {per_session} pages per session = {most}, 256 MB: "
        f"{'within' if within else 'EXCEEDED'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--load", action="store_true")
    parser.add_argument(
        "--breakdown", action="store_true", help="where a POST's time goes (codec, store, web)"
    )
    parser.add_argument(
        "--by-value", action="store_true", help="also the handler defined in __main__"
    )
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds, for --load")
    parser.add_argument("--compare", metavar="TREE", help="another checkout to take turns with")
    parser.add_argument("--rounds", type=int, default=30, help="rounds, for --compare")
    parser.add_argument("--cpu", action="store_true", help="thread CPU time, for --compare")
    parser.add_argument("--turns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.turns:
        _turns(args.cpu)
        return
    if args.compare:
        compare(args.compare, args.rounds, args.cpu)
        return
    overhead(args.steps)
    if args.by_value:
        overhead(args.steps, by_value=True)
    if args.breakdown:
        breakdown(args.steps)
    if args.load:
        load(args.conversations, args.pages, args.workers, args.time_limit)


if __name__ == "__main__":
    main()
