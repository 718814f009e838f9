"""Durable jobs: contsnap.run(), its checkpoint files, signals and kills, and the CLI."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import contsnap
from contsnap import _codec
from contsnap._checkpoints._files import CheckpointFiles, write_atomic
from contsnap._durable._run import _job_name

JOB = """
import json, os, sys, time
import contsnap

@contsnap.checkpointable
def pages(n_pages, per_page, delay):
    \"\"\"A paginated 'fetch and process' loop: its own output is the record.\"\"\"
    done = []
    try:
        for page in range(n_pages):
            items = [page * per_page + i for i in range(per_page)]  # the 'fetch'
            for item in items:
                time.sleep(delay)
                done.append(item * item % 1009)
                yield item
    finally:
        with open(os.environ["FINALLY_LOG"], "a") as log:
            log.write("finally\\n")
    return done

if __name__ == "__main__":
    n, per, delay, every = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    result = contsnap.run(pages, n, per, delay, checkpoint=os.environ["CKPT"], every=every)
    with open(os.environ["RESULT"], "w") as out:
        json.dump(result, out)
"""


def expected_result(n: int, per: int) -> list[int]:
    return [(i * i) % 1009 for i in range(n * per)]


@pytest.fixture
def job(tmp_path: Path) -> dict[str, str]:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = dict(os.environ)
    env.update(
        CKPT=str(tmp_path / "job.ckpt"),
        RESULT=str(tmp_path / "result.json"),
        FINALLY_LOG=str(tmp_path / "finally.log"),
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )
    env.pop("CONTSNAP_KEY", None)
    return {"script": str(script), "dir": str(tmp_path), **env}


def _start(job: dict[str, str], *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, job["script"], *map(str, args)],
        env=job,
        cwd=job["dir"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: str | Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _result(job: dict[str, str]) -> list[int]:
    import json

    with open(job["RESULT"]) as f:
        return list(json.load(f))


def test_a_finished_job_keeps_its_result_and_does_not_run_again(job: dict[str, str]) -> None:
    proc = _start(job, 3, 5, 0.001, 0.01)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert _result(job) == expected_result(3, 5)
    meta = contsnap.describe(Path(job["CKPT"]).read_bytes())
    assert meta["job"]["finished"] and meta["job"]["steps"] == 15
    os.unlink(job["RESULT"])
    proc = _start(job, 3, 5, 0.001, 0.01)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "already finished" in err
    assert _result(job) == expected_result(3, 5)
    assert Path(job["FINALLY_LOG"]).read_text() == "finally\n"  # ran once, in the first run


def test_sigterm_rolls_out_and_a_rerun_resumes(job: dict[str, str]) -> None:
    proc = _start(job, 4, 25, 0.01, 0.05)
    _wait_for(job["CKPT"])  # running, and saved once
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == contsnap.ROLLED_OUT, err
    assert "rolled out" in err and "job.py" in err
    assert os.path.exists(job["CKPT"])
    assert not os.path.exists(job["FINALLY_LOG"])  # the finally runs where the job ends
    meta = contsnap.describe(Path(job["CKPT"]).read_bytes())
    assert meta["job"]["steps"] > 0
    proc = _start(job, 4, 25, 0.01, 0.05)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "resuming" in err
    assert _result(job) == expected_result(4, 25)
    assert Path(job["FINALLY_LOG"]).read_text() == "finally\n"


def test_killed_at_random_moments_the_job_still_ends_with_the_same_result(
    job: dict[str, str],
) -> None:
    """SIGKILL and SIGTERM at random instants (also mid-save): nothing lost, nothing twice."""
    chooser = random.Random(1234)
    n, per = 6, 40
    kills = 0
    deadline = time.monotonic() + 90
    while True:
        proc = _start(job, n, per, 0.002, 0.02)
        if kills < 12:
            time.sleep(chooser.uniform(0.2, 1.5))
            proc.send_signal(chooser.choice([signal.SIGKILL, signal.SIGTERM]))
            kills += 1
        _out, err = proc.communicate(timeout=60)
        if proc.returncode == 0:
            break
        # a SIGTERM that lands before run() installed its handler ends the process plainly
        assert proc.returncode in (contsnap.ROLLED_OUT, -signal.SIGKILL, -signal.SIGTERM), err
        assert time.monotonic() < deadline, "the job did not finish in time"
    assert _result(job) == expected_result(n, per)
    assert Path(job["FINALLY_LOG"]).read_text() == "finally\n"


def test_a_second_signal_aborts_at_once_and_keeps_the_last_checkpoint(
    job: dict[str, str],
) -> None:
    proc = _start(job, 2, 3, 1.0, 0.01)  # one step a second: the first save comes fast
    _wait_for(job["CKPT"])
    before = Path(job["CKPT"]).read_bytes()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "aborting" in err
    assert contsnap.describe(Path(job["CKPT"]).read_bytes())["job"]["steps"] >= 1
    assert len(Path(job["CKPT"]).read_bytes()) > 0 and before[:4] == b"CSNP"


# --- the files --------------------------------------------------------------------------


@contsnap.checkpointable
def counting(n):
    for i in range(n):
        yield i
    return n


def _snapshot_at(step: int) -> bytes:
    gen = counting(100)
    for _ in range(step):
        next(gen)
    return contsnap.dumps(gen)


def test_generations_rotate_and_a_damaged_newest_falls_back(tmp_path: Path) -> None:
    files = CheckpointFiles(tmp_path / "c.ckpt", keep=3)
    for step in (1, 2, 3, 4):
        files.save(_snapshot_at(step))
    assert [Path(p).name for p in files.existing()] == ["c.ckpt", "c.ckpt.1", "c.ckpt.2"]
    damaged = bytearray(Path(files.path).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    Path(files.path).write_bytes(bytes(damaged))
    with pytest.warns(contsnap.CheckpointFallbackWarning, match="does not verify|older"):
        loaded = files.load(kinds=("snapshot",))
    assert loaded is not None and loaded.path.endswith("c.ckpt.1")
    assert next(loaded.obj) == 3  # saved after 3 steps


def test_a_crash_between_rotation_and_rename_leaves_the_previous_generation(
    tmp_path: Path,
) -> None:
    files = CheckpointFiles(tmp_path / "c.ckpt", keep=2)
    files.save(_snapshot_at(5))
    os.replace(files.path, files.generation(1))  # as if killed right after the rotation
    loaded = files.load(kinds=("snapshot",))
    assert loaded is not None and next(loaded.obj) == 5


def test_a_save_killed_while_writing_moves_no_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contsnap._checkpoints import _files

    files = CheckpointFiles(tmp_path / "c.ckpt", keep=3)
    at5, at6 = _snapshot_at(5), _snapshot_at(6)
    files.save(at5)
    files.save(at6)
    written = _files._written_temp

    def killed_after_writing(target: str, data: bytes) -> str:
        written(target, data)
        raise KeyboardInterrupt  # its temporary file stays, as after a SIGKILL

    monkeypatch.setattr(_files, "_written_temp", killed_after_writing)
    with pytest.raises(KeyboardInterrupt):
        files.save(_snapshot_at(7))
    monkeypatch.undo()
    # the bytes are written before any generation moves: a reader finds both as they were
    assert [Path(p).read_bytes() for p in files.existing()] == [at6, at5]
    files.save(_snapshot_at(8))
    assert not [p for p in os.listdir(tmp_path) if _files.TEMP_MARK in p]  # removed
    loaded = files.load(kinds=("snapshot",))
    assert loaded is not None and next(loaded.obj) == 8
    assert Path(files.generation(1)).read_bytes() == at6


def test_every_generation_damaged_raises_the_newest_error(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    path.write_bytes(b"CSNP not really")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(contsnap.SnapshotCorruptError, match=r"c\.ckpt"):
            CheckpointFiles(path).load(kinds=("snapshot",))


def test_write_atomic_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["x.bin"]


def test_run_in_process_resumes_and_checks_what_it_resumes(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    gen = counting(100)
    for _ in range(90):
        next(gen)
    CheckpointFiles(path).save(
        _codec.encode(gen, kind="job", identity=_job_name(counting), meta={"job": {"steps": 90}})
    )
    assert contsnap.run(counting, 100, checkpoint=path, progress=False) == 100
    assert contsnap.describe(path.read_bytes())["job"]["finished"]
    assert contsnap.run(counting, 100, checkpoint=path, progress=False) == 100
    path.unlink()

    @contsnap.checkpointable
    def other():
        yield 1

    # a generator snapshot is not a job's checkpoint; a job's is not another job's
    CheckpointFiles(path).save(_snapshot_at(10))
    with pytest.raises(contsnap.SnapshotKindError, match="generator snapshot"):
        contsnap.run(counting, 100, checkpoint=path, progress=False)
    gen = counting(100)
    next(gen)
    CheckpointFiles(path).save(
        _codec.encode(gen, kind="job", identity=_job_name(counting), meta={"job": {}})
    )
    with pytest.raises(contsnap.SnapshotKindError, match="of .*counting.*, not of .*other"):
        contsnap.run(other, checkpoint=path, progress=False)
    assert path.exists()
    with pytest.raises(TypeError, match="checkpointable generator function"):
        contsnap.run(lambda: iter([1]), checkpoint=tmp_path / "n.ckpt")
    with pytest.raises(ValueError, match="every"):
        contsnap.run(counting, 3, checkpoint=tmp_path / "n.ckpt", every=0)


def test_signed_checkpoints_refuse_unsigned_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.ckpt"
    gen = counting(100)
    next(gen)
    unsigned = _codec.encode(
        gen, kind="job", identity=_job_name(counting), meta={"job": {"steps": 1}}, sign=False
    )
    CheckpointFiles(path).save(unsigned)
    with pytest.raises(contsnap.SnapshotSignatureError, match="unsigned"):
        contsnap.run(counting, 100, checkpoint=path, progress=False)
    assert path.exists()  # a refused checkpoint is not removed
    assert contsnap.run(counting, 100, checkpoint=path, allow_unsigned=True, progress=False) == 100


# --- the command line --------------------------------------------------------------------


def _cli(
    *args: str, cwd: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contsnap", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


SCRIPT = """
import contsnap, time

@contsnap.checkpointable
def main():
    total = 0
    for i in range(60):
        time.sleep(0.02)
        total += i
        yield i
    return total
"""


def test_cli_run_inspect_ls_and_resume(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "contsnap",
            "run",
            "--checkpoint",
            "s.ckpt",
            "--every",
            "0.05",
            str(script),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(tmp_path / "s.ckpt")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == contsnap.ROLLED_OUT, err
    shown = _cli("inspect", "s.ckpt", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "code matches" in shown.stdout and "script.py:" in shown.stdout
    assert "signed    yes" in shown.stdout and "locals " in shown.stdout
    assert "kind      job (__main__:main)" in shown.stdout
    listed = _cli("ls", ".", cwd=tmp_path, env=env)
    assert "s.ckpt" in listed.stdout and "main line" in listed.stdout
    script.write_text(SCRIPT.replace("total += i", "total += 2 * i"))
    shown = _cli("inspect", "s.ckpt", cwd=tmp_path, env=env)
    assert "code changed" in shown.stdout
    script.write_text(SCRIPT + "\n# a comment does not count\n")
    assert "code matches" in _cli("inspect", "s.ckpt", cwd=tmp_path, env=env).stdout
    resumed = _cli("resume", "s.ckpt", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == str(sum(range(60)))
    assert "finished" in _cli("inspect", "s.ckpt", cwd=tmp_path, env=env).stdout


def test_cli_errors_are_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "bad.ckpt").write_bytes(b"garbage")
    for command in (["inspect", "bad.ckpt"], ["resume", "bad.ckpt"], ["resume", "none.ckpt"]):
        result = _cli(*command, cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    (tmp_path / "plain.py").write_text("x = 1\n")
    result = _cli("run", "--checkpoint", "p.ckpt", "plain.py", cwd=tmp_path)
    assert result.returncode == 2 and "main()" in result.stderr
    listed = _cli("ls", str(tmp_path), cwd=tmp_path)
    assert "no contsnap snapshots" in listed.stdout


HOOKED_JOBS = """\
import time


def steps(n, pace):
    total = 0
    for i in range(n):
        time.sleep(pace)
        try:
            total += i
        finally:
            pass
        yield i
    return total


class Runner:
    def main(self, n, pace):
        result = yield from steps(n, pace)
        return result
"""

HOOKED_SCRIPT = """\
import sys

import contsnap
from hookedjobs.work import Runner


@contsnap.checkpointable
def main():
    total = yield from Runner().main(int(sys.argv[1]), float(sys.argv[2]))
    print(total, flush=True)
"""


def test_a_job_in_hooked_modules_rolls_out_and_resumes_from_their_warm_cache(
    tmp_path: Path,
) -> None:
    """contsnap run --hook --mark-all, rolled out by SIGTERM and run again, every job
    importing the hooked package from its warm cache (its generators made with their
    transformed code and no mark call: they start fresh as well as resume)."""
    (tmp_path / "hookedjobs").mkdir()
    (tmp_path / "hookedjobs" / "__init__.py").write_text("")
    (tmp_path / "hookedjobs" / "work.py").write_text(HOOKED_JOBS)
    (tmp_path / "script.py").write_text(HOOKED_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the hook's cache is written and read
    run = [sys.executable, "-m", "contsnap", "run", "--hook", "hookedjobs", "--mark-all"]
    command = [*run, "--checkpoint", "j.ckpt", "--every", "0.05", "script.py"]
    # a first, short job fills the cache; the jobs below start fresh from it
    warm = subprocess.run(
        [*run, "--checkpoint", "warm.ckpt", "script.py", "5", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (warm.returncode, warm.stdout.strip()) == (0, "10"), warm.stderr
    for _ in range(2):
        ckpt = tmp_path / "j.ckpt"
        before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        proc = subprocess.Popen(
            [*command, "400", "0.005"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not ckpt.exists() or ckpt.stat().st_mtime_ns == before:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == contsnap.ROLLED_OUT, err
    caches = list((tmp_path / "hookedjobs" / "__pycache__").glob("work.*.cache"))
    assert caches, "the hook cached the package"
    done = subprocess.run(
        [*command, "400", "0"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sum(range(400)))


@contsnap.checkpointable
def _sends_an_effect(log: list[str]):
    yield 1
    try:
        yield contsnap.effect("mail", {"to": "ops"})
    finally:
        log.append("finally")


def test_an_effect_under_run_is_refused_not_dropped(tmp_path: Path) -> None:
    # effects need an outbox (durable Celery tasks): run() says so instead of
    # silently going on without delivering it
    log: list[str] = []
    with pytest.raises(contsnap.CheckpointError, match=r"effect\('mail'\).*no outbox"):
        contsnap.run(_sends_an_effect, log, checkpoint=tmp_path / "e.ckpt", progress=False)
    assert log == []  # detached, not closed: its finally has not run here
