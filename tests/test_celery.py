"""Durable Celery tasks with real workers: a killed, frozen or drained worker's job resumes.

Each scenario runs `celery_tasks.squares` (a job of N steps, one effect per step)
on real ``celery worker`` processes against a throwaway redis-server, interferes
with the owner (SIGKILL of the pool child or of the whole worker, SIGSTOP past
its lease, SIGTERM, a duplicate start, a step that kills its worker, a deploy of
changed code) and checks what a user sees: the same result as an uninterrupted
run, every effect recorded exactly once, at most one checkpoint interval of
steps run again, and no worker process left behind. The core scenarios run
again with the checkpoints in PostgreSQL.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import contsnap

pytest.importorskip("celery")
redis = pytest.importorskip("redis")

TESTS = Path(__file__).parent
ROOT = TESTS.parent
N, DELAY, EVERY, LEASE, VISIBILITY = 30, 0.1, 0.5, 1.5, 3.0
EXPECTED = sum(i * i for i in range(N))
#: the steps one checkpoint interval holds: at most these run again after a kill
INTERVAL_STEPS = round(EVERY / DELAY)


def _processes_in_group(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


class Worker:
    """One ``celery worker -c 1 -P prefork`` in its own process group."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "-c", "1",
            "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", f"{name}@%h", "--loglevel", "INFO",
        ]  # fmt: skip
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                command, cwd=TESTS, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.pgid = self.process.pid

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"worker {self.name} did not start:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        with_group = _processes_in_group(self.pgid)
        for pid in with_group:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.wait(10)


class Cluster:
    """The workers of one scenario, the test app, and the test's bookkeeping in Redis."""

    def __init__(self, env: dict[str, str], log_dir: Path, tasks: Any) -> None:
        self.env = env
        self.log_dir = log_dir
        self.tasks = tasks
        self.notes = redis.Redis.from_url(env["CONTSNAP_CELERY_NOTES"])
        self.workers: list[Worker] = []

    def start_workers(self, count: int, **extra: str) -> list[Worker]:
        started = [
            Worker(f"w{len(self.workers) + i}", {**self.env, **extra}, self.log_dir)
            for i in range(count)
        ]
        self.workers.extend(started)
        for worker in started:
            worker.wait_ready()
        return started

    def steps(self, tag: str) -> list[tuple[int, int, float]]:
        rows = [row.decode().split(":") for row in self.notes.lrange(f"steps:{tag}", 0, -1)]
        return [(int(i), int(pid), float(at)) for i, pid, at in rows]

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def logs(self) -> str:
        """The workers' logs and the broker's keys (with their ttl): what a failure shows."""
        broker = redis.Redis.from_url(self.env["CONTSNAP_CELERY_BROKER"])
        keys = sorted(broker.keys())
        state = ", ".join(f"{k.decode()} (ttl {broker.pttl(k)} ms)" for k in keys)
        workers = "\n".join(f"--- {w.name}\n{w.output()}" for w in self.workers)
        return f"{workers}\n--- broker keys: {state}"

    def result(self, result: Any, timeout: float = 60) -> Any:
        """``result.get``; a timeout shows the logs."""
        from celery.exceptions import TimeoutError as NoResult

        try:
            return result.get(timeout=timeout)
        except NoResult:
            raise AssertionError(f"no result in {timeout} s\n{self.logs()}") from None

    def wait_steps(self, tag: str, count: int) -> None:
        self.wait_for(f"{count} steps of {tag}", lambda: len(self.steps(tag)) >= count)

    def owner(self, tag: str) -> tuple[int, Worker]:
        """The pool child running ``tag`` now, and its worker."""
        child = int(self.notes.get(f"pid:{tag}") or 0)
        main = int(self.notes.get(f"ppid:{tag}") or 0)
        for worker in self.workers:
            if worker.process.pid == main:
                return child, worker
        raise AssertionError(f"no worker of ours runs {tag} (parent pid {main})")

    def check_outcome(self, tag: str, result: Any, *, reruns: int, steps: int = N) -> None:
        """The uninterrupted result, each effect once, and at most ``reruns`` steps run twice."""
        expected = sum(i * i for i in range(steps))
        assert self.result(result) == expected
        assert self.tasks.squares.stored_result(tag) == expected
        effects = self.notes.hgetall(f"effects:{tag}")
        assert sorted(effects) == sorted(f"{tag}/{i}".encode() for i in range(steps))
        assert [json.loads(effects[f"{tag}/{i}".encode()])["square"] for i in range(steps)] == [
            i * i for i in range(steps)
        ]
        assert int(self.notes.get(f"deliveries:{tag}") or 0) >= steps
        runs = int(self.notes.get(f"runs:{tag}") or 0)
        assert steps <= runs <= steps + reruns, (runs, self.steps(tag))
        # a step run again made its direct call under the same step_key()
        calls = self.notes.hgetall(f"calls:{tag}")
        assert calls == {f"{tag}/step/{i}/call".encode(): str(i).encode() for i in range(steps)}

    def check_effects_so_far(self, tag: str, below: int) -> int:
        """A job that did not finish: its effects so far, each once, from the first on."""
        effects = self.notes.hgetall(f"effects:{tag}")
        count = len(effects)
        assert count <= below
        assert sorted(effects) == sorted(f"{tag}/{i}".encode() for i in range(count))
        for i in range(count):
            assert json.loads(effects[f"{tag}/{i}".encode()])["square"] == i * i
        return count

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        deadline = time.monotonic() + 10
        for worker in self.workers:
            while _processes_in_group(worker.pgid) and time.monotonic() < deadline:
                time.sleep(0.02)  # SIGKILLed processes take a moment to go
            assert _processes_in_group(worker.pgid) == [], f"{worker.name} left processes"


@pytest.fixture(params=["redis", "postgres"])
def cluster(request: pytest.FixtureRequest, redis_server: Any, tmp_path: Path) -> Iterator[Cluster]:
    base = redis_server.url.rsplit("/", 1)[0]
    if request.param == "postgres":
        store_url = request.getfixturevalue("postgres_server").url
    else:
        store_url = base + "/1"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
        "CONTSNAP_CELERY_BROKER": base + "/0",
        "CONTSNAP_CELERY_STORE": store_url,
        "CONTSNAP_CELERY_NOTES": base + "/2",
        "CONTSNAP_CELERY_LEASE": str(LEASE),
        "CONTSNAP_CELERY_VISIBILITY": str(VISIBILITY),
        "CONTSNAP_CELERY_EVERY": str(EVERY),
    }
    # every scenario starts from empty databases: no message, checkpoint or note of another
    for db in (0, 1, 2, 3):
        redis.Redis.from_url(f"{base}/{db}").flushdb()
    if request.param == "postgres":
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as db:
            for table in db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall():
                db.execute(f'TRUNCATE "{table[0]}"')
    os.environ.update({k: v for k, v in env.items() if k.startswith("CONTSNAP_CELERY_")})
    sys.modules.pop("celery_tasks", None)
    tasks = importlib.import_module("celery_tasks")
    running = Cluster(env, tmp_path, tasks)
    try:
        yield running
    finally:
        running.stop()
        tasks.app.close()


def test_uninterrupted_run_and_result_after_finish(cluster: Cluster) -> None:
    """A job twice the visibility timeout, two workers: the broker redelivers it while it
    runs, and the copy bounces off the live lease; no step runs twice."""
    cluster.start_workers(2)
    steps = round(2 * VISIBILITY / DELAY)
    result = cluster.tasks.squares.start("plain", steps, DELAY, job_id="plain")
    cluster.check_outcome("plain", result, reruns=0, steps=steps)
    assert len({pid for _i, pid, _at in cluster.steps("plain")}) == 1
    # asked again after the end: the stored result, no step runs again
    again = cluster.tasks.squares.start("plain", steps, DELAY, job_id="plain")
    assert cluster.result(again) == sum(i * i for i in range(steps))
    assert int(cluster.notes.get("runs:plain") or 0) == steps


def _resume_after(
    cluster: Cluster, tag: str, kill: Callable[[int, Worker], None], at_step: int
) -> float:
    """Start the job on two workers, ``kill`` its owner at a step; seconds to resume."""
    cluster.start_workers(2)
    result = cluster.tasks.squares.start(tag, N, DELAY, job_id=tag)
    cluster.wait_steps(tag, at_step)
    child, worker = cluster.owner(tag)
    killed_at = time.time()
    kill(child, worker)
    cluster.check_outcome(tag, result, reruns=INTERVAL_STEPS + 1)
    later = [at for _i, pid, at in cluster.steps(tag) if at > killed_at and pid != child]
    assert later, "the job never ran again after the kill"
    resumed = min(later) - killed_at
    first_after = min(i for i, pid, at in cluster.steps(tag) if at > killed_at and pid != child)
    assert first_after > 0, "the job started over instead of resuming"
    reruns = int(cluster.notes.get(f"runs:{tag}") or 0) - N
    print(
        f"\n{tag}: resumed {resumed:.2f} s after the kill, from step {first_after}; {reruns} re-run"
    )
    return resumed


def test_pool_child_killed_resumes(cluster: Cluster) -> None:
    resumed = _resume_after(
        cluster, "child", lambda child, worker: os.kill(child, signal.SIGKILL), 12
    )
    # a bound for mistakes, not a speed figure: waiting out a visibility timeout or a
    # kombu sweep (~100 s) would break it, a loaded machine does not (figures: -s)
    assert resumed < LEASE + 15


def test_whole_worker_killed_resumes_elsewhere(cluster: Cluster) -> None:
    """The worst moment: the worker dies while it holds kombu's sweep lock (``unacked_mutex``).

    kombu's lock lives 300 s; a worker killed during its sweep (likelier the busier the
    machine) left every other worker unable to redeliver its job for five minutes.
    `configure` shortens the lock, so the job resumes as fast as after any other kill.
    """
    broker = redis.Redis.from_url(cluster.env["CONTSNAP_CELERY_BROKER"])
    expire = cluster.tasks.app.conf.broker_transport_options["unacked_mutex_expire"]

    def kill(child: int, worker: Worker) -> None:
        os.killpg(worker.pgid, signal.SIGKILL)
        # what the killed worker leaves when it dies in its sweep: the lock, for its lifetime
        broker.set("unacked_mutex", b"held by the killed worker", px=int(expire * 1000))

    resumed = _resume_after(cluster, "worker", kill, 15)
    assert resumed < VISIBILITY + expire + LEASE + 15  # not 300 s: see the child's bound


def test_frozen_owner_is_fenced_off(cluster: Cluster) -> None:
    cluster.start_workers(2)
    tag = "frozen"
    result = cluster.tasks.squares.start(tag, N, DELAY, job_id=tag)
    cluster.wait_steps(tag, 8)
    child, worker = cluster.owner(tag)
    os.kill(child, signal.SIGSTOP)
    stopped_at = time.time()
    try:
        cluster.wait_for(
            "another worker to take the job over",
            lambda: any(pid != child and at > stopped_at for _i, pid, at in cluster.steps(tag)),
        )
    finally:
        os.kill(child, signal.SIGCONT)
    cluster.check_outcome(tag, result, reruns=INTERVAL_STEPS + 1)
    # woken, the old owner's next renewal or save is refused: its attempt ends, ignored
    cluster.wait_for(
        "the frozen owner's attempt to end",
        lambda: f"squares[{tag}] ignored" in worker.log.read_text(errors="replace"),
    )
    resumed_at = min(at for _i, pid, at in cluster.steps(tag) if pid != child and at > stopped_at)
    late = [i for i, pid, at in cluster.steps(tag) if pid == child and at > resumed_at]
    assert len(late) <= 1, f"the frozen owner ran on after it lost its lease: steps {late}"
    assert "Traceback" not in worker.output(), "the old owner's end is not an error"


def test_duplicate_delivery_never_runs_the_job_twice(cluster: Cluster) -> None:
    cluster.start_workers(2)
    tag = "twice"
    first = cluster.tasks.squares.start(tag, N, DELAY, job_id=tag)
    cluster.wait_steps(tag, 3)
    second = cluster.tasks.squares.start(tag, N, DELAY, job_id=tag)
    cluster.check_outcome(tag, first, reruns=0)
    assert second.get(timeout=30) == EXPECTED
    assert {pid for _i, pid, _at in cluster.steps(tag)} == {cluster.owner(tag)[0]}


@pytest.mark.parametrize("shutdown", ["SIGTERM", "SIGQUIT"], ids=["warm", "cold"])
def test_shutdown_hands_the_job_over(cluster: Cluster, shutdown: str) -> None:
    cluster.start_workers(2)
    tag, steps = "drain", 100  # 10 s of work; the drained worker leaves in a few seconds
    result = cluster.tasks.squares.start(tag, steps, DELAY, job_id=tag)
    cluster.wait_steps(tag, 8)
    child, worker = cluster.owner(tag)
    sent = time.monotonic()
    worker.process.send_signal(getattr(signal, shutdown))
    worker.process.wait(timeout=30)
    exited_at, took = time.time(), time.monotonic() - sent
    # rolled out at its next safe point: no step runs twice
    cluster.check_outcome(tag, result, reruns=0, steps=steps)
    owners = [pid for _i, pid, _at in cluster.steps(tag)]
    assert owners.count(child) < 20 and owners[-1] != child
    # the old worker left while the job went on elsewhere, not at the job's end
    after = [i for i, pid, at in cluster.steps(tag) if pid != child and at > exited_at]
    assert len(after) >= 10, f"the drained worker exited after {took:.1f} s, near the job's end"
    print(
        f"\n{shutdown}: the old worker exited {took:.2f} s after {shutdown}; "
        f"{len(after)} of {steps} steps ran after that on the other worker"
    )


def test_poison_job_falls_back_then_stops(cluster: Cluster) -> None:
    cluster.start_workers(2)
    tag = "poison"
    cluster.notes.set(f"poison:{tag}", 12)
    result = cluster.tasks.squares.start(tag, N, DELAY, job_id=tag)
    with pytest.raises(Exception, match="is poisoned") as raised:
        result.get(timeout=90)
    assert "PoisonedJobError" in type(raised.value).__name__
    crashes = [i for i, _pid, _at in cluster.steps(tag) if i == 12]
    assert 2 <= len(crashes) <= 5, crashes
    status = cluster.tasks.squares.status(tag)
    assert status["poisoned"] and status["fell_back"] and not status["finished"]
    assert any("fell back to generation" in line for line in status["history"])
    # its checkpoints are kept, and nothing runs it again
    runs = int(cluster.notes.get(f"runs:{tag}") or 0)
    store = cluster.tasks.squares.contsnap_spec.store
    assert any(key.startswith("task:") for key in store.keys(group=None))
    time.sleep(LEASE + 1)
    assert int(cluster.notes.get(f"runs:{tag}") or 0) == runs
    cluster.check_effects_so_far(tag, below=12)
    key = f"task:celery_tasks.squares:{tag}"
    listed = _contsnap("ls", cluster.env["CONTSNAP_CELERY_STORE"])
    (row,) = [line for line in listed.splitlines() if line.startswith(key)]
    assert " poisoned " in row, listed


def test_changed_code_is_refused_by_name(cluster: Cluster) -> None:
    (old,) = cluster.start_workers(1)
    tag = "deploy"
    result = cluster.tasks.squares.start(tag, N, DELAY, job_id=tag)
    cluster.wait_steps(tag, 8)
    old.process.send_signal(signal.SIGTERM)  # drained: requeued with its checkpoint
    old.process.wait(timeout=15)
    cluster.start_workers(1, CONTSNAP_CELERY_CODE="changed")
    with pytest.raises(Exception, match="squares") as raised:
        result.get(timeout=30)
    assert "CodeChangedError" in type(raised.value).__name__
    assert len(cluster.steps(tag)) < N
    # drained at a safe point: its effects so far delivered once each, its checkpoint kept
    saved = cluster.tasks.squares.status(tag)
    assert not saved["finished"] and saved["effects"] == cluster.check_effects_so_far(tag, N)


def test_changed_code_with_a_migration_resumes_through_it(cluster: Cluster) -> None:
    """Drained from the old code, resumed by a worker whose code renamed a local variable
    and registered a migration for the old checkpoints: the uninterrupted result."""
    (old,) = cluster.start_workers(1)
    tag = "migrate"
    result = cluster.tasks.squares.start(tag, N, DELAY, job_id=tag)
    cluster.wait_steps(tag, 8)
    old.process.send_signal(signal.SIGTERM)
    old.process.wait(timeout=15)
    drained_at = len(cluster.steps(tag))
    cluster.start_workers(1, CONTSNAP_CELERY_CODE="migrated")
    cluster.check_outcome(tag, result, reruns=0)
    assert drained_at < N and {pid for _i, pid, _at in cluster.steps(tag)[drained_at:]} == {
        cluster.owner(tag)[0]
    }


def test_where_the_job_is_from_the_command_line(cluster: Cluster) -> None:
    """``contsnap inspect``/``ls`` on the store: the live owner, then the dead one's job."""
    (worker,) = cluster.start_workers(1)
    tag, steps, delay = "shown", 40, 0.25
    key = f"task:celery_tasks.squares:{tag}"
    store = cluster.env["CONTSNAP_CELERY_STORE"]
    result = cluster.tasks.squares.start(tag, steps, delay, job_id=tag)
    cluster.wait_steps(tag, 4)
    child, _ = cluster.owner(tag)
    shown = _contsnap("inspect", store, key)
    assert "kind      task (celery_tasks.squares/shown)" in shown
    assert "state     running" in shown, shown
    assert f"lease     held by pid {child} on " in shown and ", fencing token 1, " in shown
    assert f"attempts  running; last owner pid {child} on " in shown
    assert "squares  " in shown and "celery_tasks.py:" in shown
    assert "code matches" in shown  # the version of squares this worker runs (under an if)
    listed = _contsnap("ls", store)
    (row,) = [line for line in listed.splitlines() if line.startswith(key)]
    # the state cell is "running", or "running, N effects pending" between two checkpoints
    assert re.search(r"  running(, \d+ effects pending)?  ", row), row
    assert f"pid {child} on " in row and "#1 " in row
    os.killpg(worker.pgid, signal.SIGKILL)
    # once the dead owner's lease has expired: free, and its attempt never ended
    dead = cluster.wait_for("the dead owner's lease to expire", lambda: _contsnap_if(
        "state     crashed", "inspect", store, key))  # fmt: skip
    assert "lease     free (its last owner died: the next delivery resumes it)" in dead
    cluster.start_workers(1)
    cluster.check_outcome(tag, result, reruns=INTERVAL_STEPS + 1, steps=steps)
    (row,) = [line for line in _contsnap("ls", store).splitlines() if line.startswith(key)]
    assert " finished " in row and f"{steps:,}" in row
    assert "(1 crashes)" not in row  # a finished job's attempt record is gone


def _contsnap_if(wanted: str, *args: str) -> str | None:
    shown = _contsnap(*args)
    return shown if wanted in shown else None


# --- in-process (eager) runs: no broker, the checkpoints in SQLite ----------------------

_FAIL_AT: set[int] = set()


@contsnap.checkpointable
def _eager_job(n: int):  # type: ignore[no-untyped-def]
    total = 0
    for i in range(n):
        _STEP_RUNS.append(i)
        if i in _FAIL_AT:
            _FAIL_AT.discard(i)
            raise RuntimeError(f"step {i} failed")
        total += i * 3
        yield contsnap.effect("record", {"i": i, "total": total})
        yield i  # a plain safe point between effects
    return total


_STEP_RUNS: list[int] = []


@contsnap.checkpointable
def _local_job(n: int):  # type: ignore[no-untyped-def]
    """A durable script's job (no effects: contsnap.run() has no outbox), failing at step 2."""
    for i in range(n):
        if i == 2:
            raise RuntimeError("step 2 failed")
        yield i


def _eager_task(tmp_path: Path, effects: dict[str, Any]) -> Any:
    from celery import Celery

    from contsnap.integrations.celery import configure, durable_task
    from contsnap.stores import SQLiteStore

    app = configure(Celery("eager", broker="memory://", backend="cache+memory://"))
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    store = SQLiteStore(str(tmp_path / "jobs.db"))
    return durable_task(app, store=store, every=1e-9, effects=effects)(_eager_job)


def test_resumed_at_every_step_matches_the_native_run(tmp_path: Path) -> None:
    """Differential: the job failed once at step k, then started again, for every k."""
    steps = 6
    gen = _eager_job(steps)
    yielded = []
    try:
        while True:
            yielded.append(next(gen))
    except StopIteration as done:
        expected = done.value
    native_effects = [(v.name, v.payload) for v in yielded if isinstance(v, contsnap.Effect)]
    for fail_at in range(steps):
        delivered: dict[str, Any] = {}
        attempts: list[str] = []

        def record(
            payload: Any, key: str, delivered: Any = delivered, attempts: Any = attempts
        ) -> None:
            attempts.append(key)
            delivered.setdefault(key, payload)

        (tmp_path / str(fail_at)).mkdir()
        task = _eager_task(tmp_path / str(fail_at), {"record": record})
        _STEP_RUNS.clear()
        _FAIL_AT.clear()
        _FAIL_AT.add(fail_at)
        with pytest.raises(RuntimeError, match=f"step {fail_at} failed"):
            task.start(steps, job_id="job").get()
        assert task.status("job")["running"] is False
        assert task.start(steps, job_id="job").get() == expected
        assert [("record", delivered[f"job/{i}"]) for i in range(steps)] == native_effects
        assert sorted(delivered) == sorted(set(attempts))  # no key but the job's own
        assert len(_STEP_RUNS) <= steps + 1  # checkpointed at every yield: one step again
        status = task.status("job")
        assert status["finished"] and status["effects"] == steps
        assert task.stored_result("job") == expected


def test_unknown_effect_names_the_handlers(tmp_path: Path) -> None:
    task = _eager_task(tmp_path, {"other": lambda payload, key: None})
    with pytest.raises(contsnap.CheckpointError, match="no handler for 'record'.*handlers: other"):
        task.start(2, job_id="unknown").get()


def test_step_key_outside_a_task_says_where_it_works() -> None:
    from contsnap.integrations.celery import step_key

    with pytest.raises(contsnap.CheckpointError, match="outside a durable task"):
        step_key("x")


def test_a_failed_delivery_is_retried_at_the_next_start(tmp_path: Path) -> None:
    """An effect whose handler raised stays in the outbox and is delivered when the job resumes."""
    delivered: dict[str, Any] = {}
    failures = {"job/2"}

    def record(payload: Any, key: str) -> None:
        if key in failures:
            failures.discard(key)
            raise ConnectionError("the service is down")
        delivered.setdefault(key, payload)

    task = _eager_task(tmp_path, {"record": record})
    _STEP_RUNS.clear()
    _FAIL_AT.clear()
    with pytest.raises(ConnectionError):
        task.start(5, job_id="job").get()
    assert "job/2" not in delivered
    assert task.start(5, job_id="job").get() == sum(i * 3 for i in range(5))
    assert sorted(delivered) == [f"job/{i}" for i in range(5)]
    assert delivered["job/2"] == {"i": 2, "total": 9}
    assert len(_STEP_RUNS) <= 5 + 1


def test_a_checkpoint_of_another_kind_or_job_is_refused(tmp_path: Path) -> None:
    """A contsnap.run checkpoint, or another job's, put under a task's key is not resumed."""
    from contsnap.integrations.celery import _task_key

    task = _eager_task(tmp_path, {"record": lambda payload, key: None})
    store = task.contsnap_spec.store
    name = task.contsnap_spec.name
    _FAIL_AT.clear()
    _FAIL_AT.add(3)
    with pytest.raises(RuntimeError):
        task.start(5, job_id="other").get()
    # the other job's checkpoint, copied under this job's key: bound to its job id
    store.put(_task_key(name, "mine"), store.get(_task_key(name, "other")))
    with pytest.raises(contsnap.SnapshotKindError, match="_eager_job/other', not of .*/mine'"):
        task.start(5, job_id="mine").get()
    # a local durable script's checkpoint (kind "job") under a task's key
    with pytest.raises(RuntimeError):
        contsnap.run(_local_job, 5, store=store, checkpoint="local")
    store.put(_task_key(name, "local"), store.get("local"))
    with pytest.raises(contsnap.SnapshotKindError, match="not a distributed job's checkpoint"):
        task.start(5, job_id="local").get()


def _contsnap(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "contsnap", *args], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=TESTS, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_contsnap_inspect_and_ls_read_a_task_from_its_store(tmp_path: Path) -> None:
    """``contsnap inspect STORE KEY`` and ``ls STORE``: progress, lease, attempts, effects."""
    from contsnap.integrations.celery import _task_key

    down = {"seen/1"}

    def record(payload: Any, key: str) -> None:
        if key in down:
            down.discard(key)
            raise ConnectionError("the service is down")

    task = _eager_task(tmp_path, {"record": record})
    _FAIL_AT.clear()
    with pytest.raises(ConnectionError):  # effect 1 committed with its checkpoint, not delivered
        task.start(5, job_id="seen").get()
    key = _task_key(task.name, "seen")
    for store in (f"sqlite:///{tmp_path / 'jobs.db'}", str(tmp_path / "jobs.db")):
        shown = _contsnap("inspect", store, key)
        assert "kind      task (test_celery._eager_job/seen)" in shown
        assert "3 steps" in shown  # effect 0, a plain yield, effect 1: saved at each
        assert "state     stopped" in shown and "lease     free" in shown
        assert "attempts  not running; last owner pid " in shown and "0 crashes" in shown
        assert "effects   2 yielded; pending 1 committed, not yet delivered (1)" in shown
        assert "_eager_job" in shown and "test_celery.py:" in shown
    as_json = json.loads(_contsnap("inspect", str(tmp_path / "jobs.db"), key, "--json"))
    assert as_json["state"] == "stopped" and as_json["effects_pending"] == [1]
    assert as_json["lease"] is None and as_json["attempts"]["running"] is False
    status = task.status("seen")
    assert status["effects_pending"] == [1] and status["lease"] is None
    # the job's sidecar keys (attempts, outbox) are folded into its line
    (header, row) = _contsnap("ls", str(tmp_path / "jobs.db")).splitlines()
    assert header.split() == ["KEY", "AGE", "STEPS", "STATE", "LEASE", "PAUSED", "IN"]
    assert row.startswith(key) and " 3 " in row
    assert "stopped, 1 effects pending" in row and "(last: pid " in row
    assert task.start(5, job_id="seen").get() == sum(i * 3 for i in range(5))
    (_, row) = _contsnap("ls", f"sqlite:///{tmp_path / 'jobs.db'}").splitlines()
    assert " finished " in row and "effects pending" not in row
    shown = _contsnap("inspect", str(tmp_path / "jobs.db"), key)
    assert "state     finished" in shown and "pending none" in shown


def test_contsnap_ls_and_inspect_refuse_a_missing_store(tmp_path: Path) -> None:
    """A store path that does not exist is reported, never created."""
    (tmp_path / "plain.txt").write_text("not a database")
    for args in (
        ["inspect", f"sqlite:///{tmp_path / 'none.db'}", "task:x"],
        ["ls", f"file://{tmp_path / 'nowhere'}"],
        ["inspect", str(tmp_path / "nowhere"), "task:x"],
        ["inspect", str(tmp_path / "plain.txt"), "task:x"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "contsnap", *args], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "does not exist" in done.stderr or "not an SQLite database" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]


_THIEF: dict[str, Any] = {}


@contsnap.checkpointable
def _losing_job(n: int):  # type: ignore[no-untyped-def]
    for i in range(n):
        if i == 2 and _THIEF:
            # frozen past the lease: another worker takes the job over meanwhile, and
            # this owner then fails in some other way than a refused write
            store, key = _THIEF.pop("store"), _THIEF.pop("key")
            deadline = time.monotonic() + 30
            while True:
                try:
                    store.acquire(key, 30, owner="the new owner")
                    break
                except contsnap.stores.LeaseHeldError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            raise ConnectionError("the store's connection broke while the owner was frozen")
        yield i
    return n


def test_an_owner_that_lost_its_lease_reports_nothing(tmp_path: Path) -> None:
    """The error of an attempt that lost the lease is not the job's: the task is ignored."""
    from celery import Celery

    from contsnap.integrations.celery import _task_key, configure, durable_task
    from contsnap.stores import SQLiteStore

    app = configure(Celery("eager", broker="memory://", backend="cache+memory://"))
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    store = SQLiteStore(str(tmp_path / "jobs.db"))
    task = durable_task(app, store=store, every=1e-9, lease=0.3)(_losing_job)
    _THIEF.update(store=store, key=_task_key(task.name, "lost"))
    result = task.start(5, job_id="lost")
    assert result.state == "IGNORED"
    assert store.current_lease(_task_key(task.name, "lost")).owner == "the new owner"
    assert task.status("lost")["running"] is True  # the attempt record is the new owner's now


def test_killed_at_random_instants_the_job_ends_as_uninterrupted(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Owners SIGKILLed at random instants: by a timer (the pool child, or its whole worker)
    or by the owner itself at a random store call, or inside it (a checkpoint's write, its
    outbox, a lease renewal). The job ends with the uninterrupted result, each effect once.

    Each kill comes after the job made a checkpoint since the last one (two kills from one
    checkpoint are the poison rule's business, `test_poison_job_falls_back_then_stops`).
    ``CONTSNAP_CELERY_KILLS`` sets the number of kills, ``CONTSNAP_KILL_SEED`` the seed.
    """
    seed = int(os.environ.get("CONTSNAP_KILL_SEED", 20261207))
    kills = int(os.environ.get("CONTSNAP_CELERY_KILLS", 4))
    rng = random.Random(seed)
    arm = tmp_path / "arm"
    cluster.env = {
        **cluster.env,
        "CONTSNAP_FAULT_ARM": str(arm),
        "CONTSNAP_FAULT_DIR": str(tmp_path / "none"),
        "CONTSNAP_FAULT_SAY": "1",
    }
    cluster.start_workers(2)
    tag, steps = "random", 40 + 25 * kills
    result = cluster.tasks.squares.start(tag, steps, DELAY, job_id=tag)
    done: list[str] = []
    fired = tmp_path / "arm.fired"
    for k in range(kills):
        cluster.wait_steps(tag, len(cluster.steps(tag)) + INTERVAL_STEPS + 2)
        time.sleep(rng.uniform(0, EVERY + 2 * DELAY))
        how = rng.choice(["child", "worker", "store call", "inside a store call"])
        child, worker = cluster.owner(tag)
        if how == "child":
            os.kill(child, signal.SIGKILL)
        elif how == "worker":
            os.killpg(worker.pgid, signal.SIGKILL)
            cluster.start_workers(1)
        else:
            arm.write_text(f"{k} {rng.randint(1, 12)}{':during' if 'inside' in how else ''}")
            cluster.wait_for(f"kill {k} (seed {seed})", lambda: fired.exists() or result.ready())
            if not fired.exists():
                break  # the job ended first
            fired.unlink()
        done.append(how)
    assert len(done) >= min(kills, 3), f"seed {seed}: the job ended after the kills {done}"
    print(f"\nseed {seed}: kills {done}")
    try:
        cluster.check_outcome(tag, result, reruns=kills * (INTERVAL_STEPS + 2), steps=steps)
    except AssertionError as exc:
        raise AssertionError(f"seed {seed}, kills {done}: {exc}") from exc


def test_stored_state_that_was_tampered_with_is_refused_by_name(tmp_path: Path) -> None:
    """Every key a durable task keeps, damaged in the store: its newest checkpoint (an older
    one is resumed, with a warning), its attempt record and an outbox entry (refused, the key
    named, nothing delivered from it). Never another exception, never a wrong result."""
    import warnings

    from contsnap.integrations.celery import _task_key

    delivered: dict[str, Any] = {}
    down = {"job/2"}

    def record(payload: Any, key: str) -> None:
        if key in down:
            raise ConnectionError("the service is down")
        delivered.setdefault(key, payload)

    def damaged(data: bytes | None) -> bytes:
        assert data is not None
        edited = bytearray(data)
        edited[len(edited) // 2] ^= 0x10
        return bytes(edited)

    task = _eager_task(tmp_path, {"record": record})
    store = task.contsnap_spec.store
    key = _task_key(task.contsnap_spec.name, "job")
    _STEP_RUNS.clear()
    _FAIL_AT.clear()
    with pytest.raises(ConnectionError):
        task.start(5, job_id="job").get()
    live = store.keys()
    outbox = [k for k in live if k.startswith(key + ".") and k != key + ".attempts"]
    assert outbox, live
    kept = store.get(outbox[0])
    store.put(outbox[0], damaged(kept))
    with pytest.raises(contsnap.SnapshotSignatureError, match=re.escape(repr(outbox[0]))):
        task.start(5, job_id="job").get()
    assert "job/2" not in delivered
    store.put(outbox[0], kept or b"")
    attempts = store.get(key + ".attempts")
    store.put(key + ".attempts", damaged(attempts))
    with pytest.raises(contsnap.SnapshotSignatureError, match="attempt record .*delete that key"):
        task.start(5, job_id="job").get()
    store.put(key + ".attempts", attempts or b"")
    # the newest checkpoint damaged: the one before is resumed, and that is said
    generations = [store.get(key, generation=g) for g in range(3)][::-1]
    store.delete(key)
    for data in generations[:-1]:
        store.put(key, data or b"", keep=3)
    store.put(key, damaged(generations[-1]), keep=3)
    down.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert task.start(5, job_id="job").get() == sum(i * 3 for i in range(5))
    assert any("rolled back" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert sorted(delivered) == [f"job/{i}" for i in range(5)]
    assert all(delivered[f"job/{i}"]["i"] == i for i in range(5))


def test_a_job_id_ending_like_another_jobs_record_gets_a_key_of_its_own(tmp_path: Path) -> None:
    """Job ids are the message's: one ending in ``.attempts`` or ``.fx.N`` named the key of
    another job's attempt record or outbox entry, so the two jobs overwrote each other's
    state (here job 'x' then stopped on a SnapshotKindError for good)."""
    from contsnap.integrations.celery import _task_key

    task = _eager_task(tmp_path, {"record": lambda payload, key: None})
    name = task.contsnap_spec.name
    for job_id in ("x", "x.attempts", "x.fx.0", "x.fx.12"):
        _FAIL_AT.clear()
        _FAIL_AT.add(3)
        with pytest.raises(RuntimeError):
            task.start(5, job_id=job_id).get()
    keys = {job_id: _task_key(name, job_id) for job_id in ("x", "x.attempts", "x.fx.0")}
    assert keys["x.attempts"] != keys["x"] + ".attempts"
    assert keys["x.fx.0"] != keys["x"] + ".fx.0"
    hashed = _task_key(name, "x/y")  # a plain id spelled like a hashed key is hashed too
    assert _task_key(name, hashed.split(":", 2)[2]) != hashed
    for job_id in ("x", "x.attempts", "x.fx.0", "x.fx.12"):
        assert task.start(5, job_id=job_id).get() == sum(i * 3 for i in range(5)), job_id
