"""Durable jobs on the stores layer: resumed in another process from any store, one runner
per job (a lock for files, a fenced lease for stores), a frozen runner fenced off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import contsnap

JOB = """
import json, os, sys, time
import contsnap
from contsnap.stores import open_store

@contsnap.checkpointable
def count(n, delay):
    total = 0
    for i in range(n):
        time.sleep(delay)
        total += i
        with open(os.environ["STEPS"], "a") as steps:
            steps.write(f"{i}\\n")
        yield i
    return total

if __name__ == "__main__":
    url = os.environ.get("STORE")
    options = json.loads(os.environ.get("OPTIONS", "{}"))
    store = open_store(url, **options) if url else None
    where = {"store": store} if store else {"checkpoint": os.environ["CKPT"]}
    result = contsnap.run(
        count, int(sys.argv[1]), float(sys.argv[2]), every=0.05, progress=False,
        lease=float(os.environ.get("LEASE", "30")), wait=float(os.environ.get("WAIT", "0")),
        **where,
    )
    print(result, flush=True)
"""


def _start(tmp_path: Path, n: int, delay: float, **env: str) -> subprocess.Popen[str]:
    (tmp_path / "job.py").write_text(JOB)
    full = {**os.environ, "STEPS": str(tmp_path / "steps.txt"), **env}
    return subprocess.Popen(
        [sys.executable, "job.py", str(n), str(delay)],
        cwd=tmp_path,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _steps(tmp_path: Path) -> list[int]:
    path = tmp_path / "steps.txt"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _wait_steps(tmp_path: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(_steps(tmp_path)) < count:
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.02)


def _store_env(request: pytest.FixtureRequest, name: str, tmp_path: Path) -> dict[str, str]:
    if name == "files":
        return {"STORE": f"file://{tmp_path}/store"}
    if name == "sqlite":
        return {"STORE": f"sqlite:///{tmp_path}/store.db"}
    server = request.getfixturevalue(f"{name}_server")
    prefix = f"d{os.getpid()}{tmp_path.name[-6:]}".replace("-", "")
    sep = ":" if name == "redis" else "_"
    return {"STORE": server.url, "OPTIONS": json.dumps({"prefix": prefix + sep})}


@pytest.mark.parametrize("backend", ["files", "sqlite", "redis", "postgres"])
def test_a_killed_job_resumes_from_its_store_in_another_process(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    env = {**_store_env(request, backend, tmp_path), "LEASE": "1.5"}
    first = _start(tmp_path, 60, 0.01, **env)
    _wait_steps(tmp_path, 20)
    first.kill()
    first.communicate(timeout=30)
    # the killed runner's lease outlives it (a store cannot tell a dead runner from a
    # slow one): the next runner waits for it to expire
    done = _start(tmp_path, 60, 0.0, WAIT="30", **env)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert out.strip() == str(sum(range(60)))
    steps = _steps(tmp_path)
    assert sorted(set(steps)) == list(range(60))
    # a step since the last checkpoint may run again; a few at most (every=0.05 s)
    assert len(steps) - 60 <= 8, steps


def test_a_second_runner_of_a_job_refuses_naming_the_holder_or_waits(tmp_path: Path) -> None:
    env = {"CKPT": str(tmp_path / "job.ckpt")}
    first = _start(tmp_path, 40, 0.03, **env)
    _wait_steps(tmp_path, 3)
    second = _start(tmp_path, 40, 0.03, **env)
    _out, err = second.communicate(timeout=60)
    assert second.returncode != 0
    assert f"already running (pid {first.pid} on host " in err
    waiting = _start(tmp_path, 40, 0.03, WAIT="60", **env)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    out2, err2 = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err2
    assert out.strip() == out2.strip() == str(sum(range(40)))
    assert "already finished" in err2
    assert sorted(_steps(tmp_path)) == list(range(40))  # never two runners


def test_a_frozen_runner_loses_its_lease_and_is_fenced_off(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Redis: a runner frozen in the middle of a write holds nothing on the server (with
    # SQLite it could freeze inside a write transaction and lock the file for everyone)
    env = {**_store_env(request, "redis", tmp_path), "LEASE": "1.0"}
    frozen = _start(tmp_path, 200, 0.01, **env)
    _wait_steps(tmp_path, 10)
    frozen.send_signal(signal.SIGSTOP)
    try:
        taker = _start(tmp_path, 200, 0.01, WAIT="30", **env)
        out, err = taker.communicate(timeout=120)
        assert taker.returncode == 0, err
        assert out.strip() == str(sum(range(200)))
    finally:
        frozen.send_signal(signal.SIGCONT)
    _out, err = frozen.communicate(timeout=60)
    assert frozen.returncode != 0
    assert "lease" in err and "was lost" in err, err
    steps = _steps(tmp_path)
    assert sorted(set(steps)) == list(range(200))
    # the frozen runner may have finished the one step it was in: nothing more
    assert len(steps) - 200 <= 8, steps


def test_run_with_a_store_in_process_and_its_key(tmp_path: Path) -> None:
    from contsnap.stores import SQLiteStore

    sys.path.insert(0, str(tmp_path))
    (tmp_path / "jobmod_store.py").write_text(JOB)
    try:
        import jobmod_store

        os.environ["STEPS"] = str(tmp_path / "steps.txt")
        with SQLiteStore(str(tmp_path / "s.db")) as store:
            assert contsnap.run(jobmod_store.count, 5, 0.0, store=store, progress=False) == 10
            assert store.keys() == ["job:jobmod_store:count"]
            again: Any = contsnap.run(jobmod_store.count, 5, 0.0, store=store, progress=False)
            assert again == 10
    finally:
        sys.path.remove(str(tmp_path))
        os.environ.pop("STEPS", None)


@contsnap.checkpointable
def _adding(n: int):  # type: ignore[no-untyped-def]
    total = 0
    for i in range(n):
        total += i
        yield i
    return total


def test_a_checkpoint_copied_over_another_jobs_key_is_refused(tmp_path: Path) -> None:
    """Write access to the store without the key: a job's signed checkpoint copied over
    another job's key (both run the same function) must not be taken for that job's."""
    from contsnap.stores import FileStore

    store = FileStore(tmp_path / "store")
    assert contsnap.run(_adding, 10, store=store, checkpoint="job:a", progress=False) == 45
    forged = store.get("job:a")
    assert forged is not None
    store.put("job:b", forged)
    with pytest.raises(
        contsnap.SnapshotKindError, match="written for the key 'job:a', not 'job:b'"
    ):
        contsnap.run(_adding, 1000, store=store, checkpoint="job:b", progress=False)
    store.delete("job:b")
    assert contsnap.run(_adding, 1000, store=store, checkpoint="job:b", progress=False) == 499500
