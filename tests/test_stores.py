"""One contract for every store: files, SQLite, Redis and PostgreSQL (real servers).

Each test runs against all four backends; the Redis and PostgreSQL servers are
started by the session fixtures of ``conftest.py`` and skip only where the
server binary is missing. Concurrency is tested with separate processes
(spawned), and lease fencing with a holder frozen by SIGSTOP.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import store_workers

import contsnap
from contsnap import stores
from contsnap.stores import (
    FencedError,
    FileStore,
    Lease,
    LeaseHeldError,
    SQLiteStore,
    StoreError,
    VersionConflictError,
    open_store,
)

BACKENDS = ["files", "sqlite", "redis", "postgres"]
_namespaces = itertools.count()


@dataclass
class Backend:
    """How to open one fresh store of a backend, in this process or another one."""

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    opened: list[Any] = field(default_factory=list)

    def open(self, **options: Any) -> Any:
        store = open_store(self.url, **self.options, **options)
        self.opened.append(store)
        return store


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name = request.param
    if name == "files":
        spec = Backend(name, f"file://{tmp_path}/files")
    elif name == "sqlite":
        spec = Backend(name, f"sqlite:///{tmp_path}/store.db")
    elif name == "redis":
        server = request.getfixturevalue("redis_server")
        spec = Backend(name, server.url, {"prefix": f"t{next(_namespaces)}:"})
    else:
        server = request.getfixturevalue("postgres_server")
        spec = Backend(name, server.url, {"prefix": f"t{next(_namespaces)}_"})
    yield spec
    for store in spec.opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> Any:
    return backend.open()


def spawn() -> Any:
    return multiprocessing.get_context("spawn")


# --- bytes by key, generations, compare-and-set --------------------------------------------------


def test_put_get_generations_delete(store: Any) -> None:
    assert isinstance(store, stores.Store)
    assert store.get("ckpt") is None and store.version("ckpt") is None
    for n in range(1, 5):
        assert store.put("ckpt", f"state {n}".encode(), keep=3) == n
    assert store.generations("ckpt") == [4, 3, 2]
    assert [store.get("ckpt", generation=g) for g in range(4)] == [
        b"state 4",
        b"state 3",
        b"state 2",
        None,
    ]
    assert store.entry("ckpt", generation=1) == stores.Entry(b"state 3", 3, 1)
    assert store.put("ckpt", b"state 5") == 5  # keep=1 drops the older generations
    assert store.generations("ckpt") == [5]
    assert store.get("ckpt", generation=1) is None
    assert store.put("empty", b"") == 1 and store.get("empty") == b""
    assert store.delete("ckpt") is True
    assert (
        store.get("ckpt") is None
        and store.generations("ckpt") == []
        and store.version("ckpt") is None
    )
    assert store.delete("ckpt") is False
    assert store.put("ckpt", b"again") == 1
    assert store.get("empty") == b""


def test_keys_lists_the_live_keys_of_a_group(store: Any) -> None:
    store.put("-page-b", b"1", group="session-1")
    store.put("page-a", b"2", group="session-1", keep=2)
    store.put("page-a", b"3", group="session-1", keep=2)
    store.put("page-c", b"4", group="session-2")
    store.put("job", b"5")
    store.put("gone", b"6", group="session-1", ttl=0.05)
    time.sleep(0.1)
    assert store.keys(group="session-1") == ["-page-b", "page-a"]
    assert store.keys() == ["-page-b", "job", "page-a", "page-c"]
    store.delete("page-a")
    assert store.keys(group="session-1") == ["-page-b"]
    assert store.keys(group="nobody") == []


def test_acquire_can_wait_for_the_lease(backend: Backend) -> None:
    holder, waiter = backend.open(), backend.open()
    lease = holder.acquire("job", 30)
    with pytest.raises(LeaseHeldError):
        waiter.acquire("job", 30, wait=0.2)  # still held after waiting
    timer = threading.Timer(0.3, holder.release, [lease])
    timer.start()
    started = time.monotonic()
    second = waiter.acquire("job", 30, wait=10)
    assert 0.2 < time.monotonic() - started < 5
    assert second.token == lease.token + 1
    timer.join()


def test_compare_and_set_in_one_process(store: Any) -> None:
    assert store.cas("k", b"first", 0) is True
    assert store.cas("k", b"lost", 0) is False
    assert store.put("k", b"second", expect=1) == 2
    with pytest.raises(
        VersionConflictError, match=r"expected version 1 but the key is at version 2"
    ):
        store.put("k", b"stale", expect=1)
    with pytest.raises(VersionConflictError, match="is missing"):
        store.put("absent", b"x", expect=3)
    assert store.get("k") == b"second"


def test_compare_and_set_races_between_processes(backend: Backend) -> None:
    """Three processes try to win each of 20 rounds; every round has exactly one winner."""
    ctx, workers, rounds = spawn(), 3, 20
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(
            target=store_workers.cas_rounds,
            args=(backend.url, backend.options, "counter", rounds, barrier, out),
        )
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    winner_of = {r: pid for pid, wins in results.items() for r in wins}
    assert sorted(r for wins in results.values() for r in wins) == list(range(rounds))
    store = backend.open()
    assert store.version("counter") == rounds
    assert [store.get("counter", generation=g) for g in range(rounds)] == [
        f"{winner_of[r]}:{r}".encode() for r in reversed(range(rounds))
    ]


def test_put_many_is_atomic_and_fenced(backend: Backend) -> None:
    store = backend.open()
    lease = store.acquire("job", 30)
    if backend.name == "files":
        with pytest.raises(StoreError, match="cannot be atomic in a directory"):
            store.put_many({"ckpt": b"c", "outbox": b"o"}, lease=lease)
        assert store.put_many({"ckpt": b"c"}, lease=lease) == {"ckpt": 1}
        return
    assert store.put_many({"ckpt": b"c1", "outbox": b"o1"}, lease=lease, keep=2) == {
        "ckpt": 1,
        "outbox": 1,
    }
    store.release(lease)
    newer = store.acquire("job", 30)
    with pytest.raises(FencedError):
        store.put_many({"ckpt": b"c2", "outbox": b"o2"}, lease=lease)
    assert (store.get("ckpt"), store.get("outbox")) == (b"c1", b"o1")
    assert store.put_many({"ckpt": b"c3", "outbox": b"o3"}, lease=newer) == {"ckpt": 2, "outbox": 2}


# --- leases and fencing --------------------------------------------------------------------------


def test_lease_renew_release_and_growing_tokens(store: Any) -> None:
    lease = store.acquire("job", 5, owner="worker-a")
    assert (lease.key, lease.owner, lease.pid, lease.host) == (
        "job",
        "worker-a",
        os.getpid(),
        socket.gethostname(),
    )
    with pytest.raises(LeaseHeldError, match=r"held by 'worker-a' \(pid \d+, host "):
        store.acquire("job", 5, owner="worker-b")
    renewed = store.renew(lease, 20)
    assert renewed.token == lease.token and renewed.expires_at > lease.expires_at + 10
    assert store.put("data", b"x", lease=renewed) == 1
    assert store.release(renewed) is True
    assert store.release(renewed) is False  # nothing left to release
    with pytest.raises(FencedError, match="expired or was released"):
        store.renew(renewed)
    with pytest.raises(FencedError):
        store.put("data", b"y", lease=renewed)
    second = store.acquire("job", 5)
    assert second.token > lease.token
    assert store.release(lease) is False  # an old lease cannot release its successor's
    with pytest.raises(FencedError, match=rf"newer lease \(token {second.token}\)"):
        store.delete("data", lease=lease)
    assert store.get("data") == b"x"
    other = store.acquire("other-job", 5)  # leases of different keys are independent
    assert store.put("data", b"z", lease=other) == 2


def test_current_lease_shows_the_holder_and_takes_nothing(store: Any) -> None:
    """``current_lease`` reads the live lease (for ``contsnap inspect``); it never acquires."""
    assert store.current_lease("job") is None
    lease = store.acquire("job", 5, owner="worker-a")
    seen = store.current_lease("job")
    assert (seen.key, seen.token, seen.owner, seen.pid, seen.host) == (
        "job",
        lease.token,
        "worker-a",
        os.getpid(),
        socket.gethostname(),
    )
    assert abs(seen.expires_at - lease.expires_at) < 1 and 0 < seen.ttl <= 5
    with pytest.raises(LeaseHeldError):
        store.acquire("job", 5)  # reading it took nothing over
    assert store.current_lease("other-job") is None
    assert store.release(lease) is True
    assert store.current_lease("job") is None  # released: no holder, whatever the record says
    short = store.acquire("job", 0.3)
    assert store.current_lease("job").token == short.token > lease.token
    deadline = time.monotonic() + 10
    while store.current_lease("job") is not None:  # expired: no holder
        assert time.monotonic() < deadline, "the expired lease is still shown"
        time.sleep(0.05)
    with pytest.raises(StoreError, match="not a valid key"):
        store.current_lease("../x")


def test_lease_lost_by_a_frozen_holder_is_fenced(backend: Backend) -> None:
    """A holder paused (SIGSTOP) past its ttl loses the lease; after SIGCONT its write is refused."""
    ctx, ttl = spawn(), 0.5
    out, go = ctx.Queue(), ctx.Event()
    holder = ctx.Process(
        target=store_workers.lease_holder, args=(backend.url, backend.options, ttl, out, go)
    )
    holder.start()
    try:
        status, pid, token = out.get(timeout=60)
        assert status == "ready" and pid == holder.pid
        store = backend.open()
        with pytest.raises(LeaseHeldError) as held:  # the holder's lease has 60 s left
            store.acquire("job", 10)
        assert f"pid {pid}, host {socket.gethostname()}" in str(held.value)
        assert (held.value.pid, held.value.host) == (pid, socket.gethostname())
        go.set()  # the holder renews its lease for `ttl` seconds only ...
        assert out.get(timeout=60) == ("renewed", ttl, token)
        os.kill(pid, signal.SIGSTOP)  # ... and is frozen past that
        time.sleep(ttl + 0.3)
        lease = store.acquire("job", 10)  # the frozen holder's ttl has passed
        assert lease.token > token
        store.put("result", b"new owner", lease=lease)
        os.kill(pid, signal.SIGCONT)
        go.set()
        status, message = out.get(timeout=60)
        assert status == "fenced", message
        assert f"newer lease (token {lease.token})" in message
        assert store.get("result") == b"new owner"
        assert store.generations("result") == [2]
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        go.set()
        holder.join(30)
    assert holder.exitcode == 0


_FROZEN_IN_A_WRITE = """
import os, signal, sys
from contsnap.stores import FencedError, PostgresStore, StoreError
store = PostgresStore(sys.argv[1], prefix=sys.argv[2], idle_in_transaction=0.5)
lease = store.acquire("job", 0.5)
try:
    with store._write(["#lease/job"]):  # a write under way, its locks taken
        print("writing", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
except StoreError as exc:
    print("rolled back:", "PostgreSQL failed" in str(exc), flush=True)
try:
    store.put("data", b"late", lease=lease)
except FencedError:
    print("fenced", flush=True)
"""


def test_a_postgres_writer_frozen_mid_write_does_not_hold_the_key(
    postgres_server: Any,
) -> None:
    """A client frozen inside a write transaction loses its session, not the others their turn.

    Its write's locks would block every other writer of the key until it woke; the
    server ends the idle transaction, the lease is taken over, and the woken client
    (on a new connection) is fenced off.
    """
    import subprocess
    import sys

    prefix = f"t{next(_namespaces)}_"
    holder = subprocess.Popen(
        [sys.executable, "-c", _FROZEN_IN_A_WRITE, postgres_server.url, prefix],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "writing\n"
        other = open_store(postgres_server.url, prefix=prefix)
        taken: list[Lease] = []
        thread = threading.Thread(target=lambda: taken.append(other.acquire("job", 30, wait=20)))
        thread.start()
        thread.join(30)
        assert taken, "the frozen writer's locks still block the key"
        assert other.put("data", b"new", lease=taken[0]) == 1
    finally:
        holder.send_signal(signal.SIGCONT)
        out, _ = holder.communicate(timeout=30)
    assert out.split("\n")[:2] == ["rolled back: True", "fenced"], out
    assert other.get("data") == b"new"
    other.close()


def test_a_crashed_holders_file_lease_is_taken_at_once(tmp_path: Path) -> None:
    """FileStore: the holder's fcntl lock dies with its process, so its ttl need not pass."""
    ctx = spawn()
    out, go = ctx.Queue(), ctx.Event()
    url = f"file://{tmp_path}"
    holder = ctx.Process(target=store_workers.lease_holder, args=(url, {}, 600.0, out, go))
    holder.start()
    status, pid, token = out.get(timeout=60)
    assert status == "ready"
    os.kill(pid, signal.SIGKILL)
    holder.join(30)
    lease = open_store(url).acquire("job", 10)
    assert lease.token == token + 1


# --- expiry and bounds ---------------------------------------------------------------------------


def test_expiry_absolute_and_idle_and_sweep(store: Any) -> None:
    store.put("idle-touched", b"a", idle=1.0)
    store.put("idle-untouched", b"b", idle=1.0)
    store.put("absolute", b"c", ttl=1.0)
    store.put("forever", b"d")
    time.sleep(0.6)
    assert store.touch("idle-touched") and store.touch("absolute")
    assert store.touch("missing") is False
    time.sleep(0.6)
    assert store.get("idle-touched") == b"a"  # touched 0.6 s ago, idle is 1 s
    assert store.get("idle-untouched") is None
    assert store.get("absolute") is None  # touching never extends an absolute ttl
    assert store.version("absolute") is None and store.generations("absolute") == []
    assert store.get("forever") == b"d"
    assert store.sweep() == 2
    assert store.sweep() == 0
    assert store.put("absolute", b"fresh") == 1  # an expired key starts afresh


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"], indirect=True)
def test_bounds_evict_least_recently_used(backend: Backend) -> None:
    store = backend.open(max_per_group=2, max_bytes=100)
    for page in ("p1", "p2"):
        store.put(page, b"x", group="session-1")
        time.sleep(0.01)
    store.put("other", b"y", group="session-2")
    time.sleep(0.01)
    store.touch("p1")
    time.sleep(0.01)
    store.put("p3", b"z", group="session-1")  # the group's third key evicts its least recent one
    assert [store.get(k) for k in ("p1", "p2", "p3", "other")] == [b"x", None, b"z", b"y"]
    time.sleep(0.01)
    store.put("big1", b"1" * 40)
    time.sleep(0.01)
    store.put("big2", b"2" * 40)
    time.sleep(0.01)
    store.touch("big1")
    store.put("big3", b"3" * 40)  # 120 bytes > 100: the least recently used keys go
    assert store.get("big1") == b"1" * 40 and store.get("big3") == b"3" * 40
    assert store.get("big2") is None and store.get("other") is None
    with pytest.raises(StoreError, match="max_bytes=100"):
        store.put("huge", b"h" * 101)
    assert store.get("huge") is None and store.get("big3") == b"3" * 40


# (Redis keeps every key of a put_many larger than the bound: its last assertion differs)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_group_bound_evicts_only_the_excess_and_never_a_key_just_written(
    backend: Backend,
) -> None:
    store = backend.open(max_per_group=3)
    for page in ("p1", "p2", "p3"):
        store.put(page, b"x", group="g")
        time.sleep(0.01)
    store.touch("p1")
    store.put("p4", b"x", group="g")  # one over: only the least recently used (p2) goes
    assert sorted(store.keys(group="g")) == ["p1", "p3", "p4"]
    store.put_many({"n1": b"1", "n2": b"2"}, group="g")  # two over: p3 then p1
    assert sorted(store.keys(group="g")) == ["n1", "n2", "p4"]
    store.put_many({"m1": b"1", "m2": b"2", "m3": b"3", "m4": b"4"}, group="g")
    assert sorted(store.keys(group="g")) == ["m1", "m2", "m3"]  # more than the bound at once


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_group_slack_evicts_down_below_the_bound_in_one_go(backend: Backend) -> None:
    store = backend.open(max_per_group=4, group_slack=2)
    for page in ("p1", "p2", "p3", "p4"):
        store.put(page, b"x", group="g")
        time.sleep(0.01)
    store.touch("p1")
    assert sorted(store.keys(group="g")) == ["p1", "p2", "p3", "p4"]  # at the bound: kept
    store.put("p5", b"x", group="g")  # one over: down to 4 - 2, the least recently used first
    assert sorted(store.keys(group="g")) == ["p1", "p5"]
    assert [store.get(k) for k in ("p2", "p3", "p4")] == [None, None, None]
    store.put_many({"n1": b"1", "n2": b"2"}, group="g")  # back at the bound: nothing goes
    assert sorted(store.keys(group="g")) == ["n1", "n2", "p1", "p5"]
    # more than the bound at once: the slack never evicts a key just written beyond the bound
    store.put_many({f"m{n}": b"m" for n in range(5)}, group="g")
    assert sorted(store.keys(group="g")) == ["m0", "m1", "m2", "m3"]
    for bad in (-1, 4, 1.5, True):
        with pytest.raises(StoreError, match="group_slack"):
            backend.open(max_per_group=4, group_slack=bad)
    with pytest.raises(StoreError, match="group_slack"):
        backend.open(group_slack=1)  # a slack needs a bound


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"], indirect=True)
def test_byte_bound_counts_generations_deletes_and_expiry(backend: Backend) -> None:
    store = backend.open(max_bytes=100)
    store.put("a", b"a" * 30, keep=2)
    store.put("a", b"A" * 30, keep=2)  # both generations count: 60 bytes
    store.put("b", b"b" * 30)
    time.sleep(0.01)
    store.put("c", b"c" * 30)  # 120 bytes: "a" (least recently used) goes
    assert (store.get("a"), store.get("b")) == (None, b"b" * 30)
    store.delete("b")
    store.put("d", b"d" * 10, ttl=0.05)
    time.sleep(0.1)
    store.sweep()
    store.put("e", b"e" * 70)  # 30 + 70: fits only if the delete and the expiry were counted
    assert (store.get("c"), store.get("e")) == (b"c" * 30, b"e" * 70)


def test_sqlite_sweep_keeps_the_wal_bounded(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "web.db")
    for n in range(150):
        store.put(f"page{n}", os.urandom(20_000), ttl=0.2)
    wal = tmp_path / "web.db-wal"
    assert wal.stat().st_size > 2_000_000
    time.sleep(0.3)
    assert store.sweep() == 150
    assert wal.stat().st_size == 0
    store.close()


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_gives_clear_errors(store: Any) -> None:
    with pytest.raises(
        StoreError, match=r"value for key 'k' is a str, not bytes; .*encode it first"
    ):
        store.put("k", "text")
    for key in ("", "../etc/passwd", "a/b", ".hidden", "x" * 201, 7):
        with pytest.raises(StoreError, match="is not a valid key"):
            store.put(key, b"x")
    for bad in ({"keep": 0}, {"ttl": -1}, {"idle": 0}, {"expect": -1}, {"group": "a b"}):
        with pytest.raises(StoreError, match=str(next(iter(bad)))):
            store.put("k", b"x", **bad)
    with pytest.raises(StoreError, match="generation=-1"):
        store.get("k", generation=-1)
    with pytest.raises(StoreError, match=r"ttl=0 must be"):
        store.acquire("job", 0)
    assert store.get("k") is None
    assert all(
        issubclass(e, contsnap.CheckpointError) for e in (StoreError, FencedError, LeaseHeldError)
    )


def test_file_store_refuses_keys_that_look_like_generations(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"ends in \.<digits>"):
        open_store(f"file://{tmp_path}").put("ckpt.1", b"x")


@pytest.mark.parametrize(
    "url",
    ["ftp://host/x", "sqlite://", "file://otherhost/dir", "store.db", "redis://127.0.0.1:1/0"],
)
def test_open_store_refuses_bad_urls(url: str) -> None:
    with pytest.raises(StoreError, match="open_store|cannot reach"):
        open_store(url)


def test_files_are_private_and_generations_are_plain_files(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    store.put("job.ckpt", b"one", keep=2)
    store.put("job.ckpt", b"two", keep=2)
    assert (tmp_path / "job.ckpt").read_bytes() == b"two"
    assert (tmp_path / "job.ckpt.1").read_bytes() == b"one"
    assert (tmp_path / "job.ckpt").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".contsnap", "job.ckpt", "job.ckpt.1"]


def test_public_names() -> None:
    for name in stores.__all__:
        obj = getattr(stores, name)
        assert obj.__module__ == "contsnap.stores", name
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, contsnap.CheckpointError)
            assert pickle.loads(pickle.dumps(obj("x"))).args == ("x",)
    lease = Lease("job", 3, "me", 1, "host", 0.0, 1.0)
    assert pickle.loads(pickle.dumps(lease)) == lease


@pytest.mark.parametrize("stop_after", ["rotate", "write"])
def test_a_file_store_put_killed_before_its_bookkeeping_relabels_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_after: str
) -> None:
    """The bookkeeping is a put's commit point: a put killed before it leaves the
    generations it had, each under its own version, and never one twice (found by the
    kill harness, tests/killing.py: generations [16, 16, 15] after a kill)."""
    store = FileStore(tmp_path / "s", fsync=False)
    for n in range(1, 4):
        store.put("k", f"v{n}".encode(), keep=3)

    class Killed(BaseException):
        pass

    real_write = FileStore._write_file

    def write_then_die(self: FileStore, path: str, data: bytes) -> None:
        if stop_after == "rotate":
            raise Killed  # after the renames of the rotation, before the new bytes
        real_write(self, path, data)
        raise Killed  # after the new bytes, before the bookkeeping

    monkeypatch.setattr(FileStore, "_write_file", write_then_die)
    with pytest.raises(Killed):
        store.put("k", b"v4", keep=3)
    monkeypatch.setattr(FileStore, "_write_file", real_write)
    reopened = FileStore(tmp_path / "s", fsync=False)
    kept = [reopened.entry("k", generation=g) for g in range(3)]
    found = [(e.data, e.version) for e in kept if e is not None]
    assert found[:2] == [(b"v3", 3), (b"v2", 2)]  # the oldest may be gone, none relabelled
    assert reopened.generations("k") == [v for _d, v in found]
    assert reopened.put("k", b"v4", keep=3) == 4
    assert [reopened.get("k", generation=g) for g in range(3)] == [b"v4", b"v3", b"v2"]
    assert reopened.generations("k") == [4, 3, 2]
