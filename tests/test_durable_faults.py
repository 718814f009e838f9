"""Durable jobs under the faults a new user met (issue 22): library jobs resumed from the
command line, full or read-only disks, kills before the first autosave, early signals,
a damaged newest generation under ``contsnap resume``."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import contsnap
from contsnap._checkpoints import _files

LIBRARY = """
import os, time
import contsnap

@contsnap.checkpointable
def main(n, delay):
    total = 0
    for i in range(n):
        time.sleep(delay)
        total += i
        yield i
    return total
"""

STARTER = """
import sys
sys.path.insert(0, "lib")
import contsnap, jobmod
print(contsnap.run(jobmod.main, 40, 0.05, checkpoint="j.ckpt", every=0.1, progress=False))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _bytes_of(path: Path) -> bytes | None:
    """The file's bytes (None between a save's two renames)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _contsnap(*args: str, cwd: Path, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "contsnap", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_a_library_job_resumes_from_the_cli_twice_without_pythonpath(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "jobmod.py").write_text(LIBRARY)
    started = subprocess.Popen(
        [sys.executable, "-c", STARTER], cwd=tmp_path, env=_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _wait_for(tmp_path / "j.ckpt")
    started.send_signal(signal.SIGTERM)
    _out, err = started.communicate(timeout=60)
    assert started.returncode == contsnap.ROLLED_OUT, err
    # resumed from another directory, with no PYTHONPATH: the checkpoint says where
    # the module came from; rolled out again during the resume...
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    saved = (tmp_path / "j.ckpt").read_bytes()
    resumed = _contsnap("resume", str(tmp_path / "j.ckpt"), cwd=elsewhere)
    deadline = time.monotonic() + 60
    while _bytes_of(tmp_path / "j.ckpt") in (saved, None):  # saved anew: the job runs
        assert time.monotonic() < deadline and resumed.poll() is None, "never saved again"
        time.sleep(0.01)
    resumed.send_signal(signal.SIGTERM)
    _out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == contsnap.ROLLED_OUT, err
    # ...and resumed once more, to the end (no recursion into `contsnap resume`)
    final = _contsnap("resume", str(tmp_path / "j.ckpt"), cwd=elsewhere)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert out.strip() == str(sum(range(40)))
    assert "RecursionError" not in err


@contsnap.checkpointable
def with_finally(log: str, n: int):
    try:
        for i in range(n):
            yield i
    finally:
        with open(log, "a") as out:
            out.write("finally\n")


def test_a_save_that_fails_stops_the_job_with_advice_and_finally_runs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "job.ckpt"
    real_save = _files.CheckpointFiles.save
    saves = [0]

    def flaky_save(self: Any, data: bytes) -> None:
        saves[0] += 1
        if saves[0] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(self, data)

    log = tmp_path / "finally.log"
    log.touch()
    monkeypatch.setattr(_files.CheckpointFiles, "save", flaky_save)
    with pytest.raises(contsnap.CheckpointError) as caught:
        contsnap.run(with_finally, str(log), 50, checkpoint=path, every=1e-9, progress=False)
    message = str(caught.value)
    assert "No space left on device" in message and "Free some space" in message
    assert "the last good checkpoint is kept" in message
    import gc

    gc.collect()
    assert log.read_text() == ""  # detached: its finally runs where the job ends, not here
    monkeypatch.setattr(_files.CheckpointFiles, "save", real_save)
    assert contsnap.run(with_finally, str(log), 50, checkpoint=path, progress=False) is None
    gc.collect()
    assert log.read_text() == "finally\n"


def test_an_unwritable_checkpoint_directory_is_found_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    log = tmp_path / "finally.log"
    with pytest.raises(contsnap.CheckpointError, match=r"cannot write checkpoints to .*"):
        contsnap.run(with_finally, str(log), 3, checkpoint=blocker / "job.ckpt", progress=False)
    assert not log.exists()  # nothing ran


APPENDER = """
import os, sys, time
import contsnap

@contsnap.checkpointable
def main():
    with open("out.txt", "a") as out:
        for i in range(400):
            out.write(f"line {i}\\n")
            out.flush()
            time.sleep(0.002)
            yield i

if __name__ == "__main__":
    contsnap.run(main, checkpoint="a.ckpt", every=1000, progress=False)
"""


def test_a_kill_before_the_first_autosave_does_not_repeat_output(tmp_path: Path) -> None:
    (tmp_path / "appender.py").write_text(APPENDER)
    run = [sys.executable, "appender.py"]
    first = subprocess.Popen(run, cwd=tmp_path, env=_env())
    _wait_for(tmp_path / "out.txt")
    deadline = time.monotonic() + 30
    while (tmp_path / "out.txt").read_text().count("\n") < 50:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.kill()  # long before the first autosave (every=1000 s)
    first.wait()
    subprocess.run(run, cwd=tmp_path, env=_env(), check=True, timeout=120)
    assert (tmp_path / "out.txt").read_text() == "".join(f"line {i}\n" for i in range(400))


def test_contsnap_run_of_a_script_defining_only_main_runs_it(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        textwrap.dedent(
            """
            import contsnap

            @contsnap.checkpointable
            def main():
                total = 0
                for i in range(5):
                    total += i
                    yield total
                return total
            """
        )
    )
    done = _contsnap("run", "m.py", cwd=tmp_path)
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    assert out.strip() == "10"
    assert (tmp_path / "job.ckpt").exists()


def test_a_sigterm_while_the_script_is_still_importing_rolls_out(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(
        textwrap.dedent(
            """
            import time
            open("importing", "w").close()  # contsnap has started: its handlers are in place
            time.sleep(1.5)  # a slow import: the signal arrives here
            import contsnap

            @contsnap.checkpointable
            def main():
                for i in range(1000):
                    time.sleep(0.01)
                    yield i
                return "done"
            """
        )
    )
    started = _contsnap("run", "--checkpoint", "s.ckpt", "slow.py", cwd=tmp_path)
    _wait_for(tmp_path / "importing")  # the script is still sleeping
    started.send_signal(signal.SIGTERM)
    _out, err = started.communicate(timeout=60)
    assert started.returncode == contsnap.ROLLED_OUT, err
    assert "rolled out" in err
    resumed = _contsnap("resume", "s.ckpt", cwd=tmp_path)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert out.strip() == "'done'"


def test_resume_falls_back_to_an_intact_older_generation_and_names_it(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "jobmod.py").write_text(LIBRARY)
    started = subprocess.Popen(
        [sys.executable, "-c", STARTER], cwd=tmp_path, env=_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _wait_for(tmp_path / "j.ckpt.1")
    started.send_signal(signal.SIGTERM)
    started.communicate(timeout=60)
    newest = tmp_path / "j.ckpt"
    data = bytearray(newest.read_bytes())
    data[-40] ^= 0xFF
    newest.write_bytes(bytes(data))
    resumed = _contsnap("resume", "j.ckpt", cwd=tmp_path)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert out.strip() == str(sum(range(40)))
    assert "warning: checkpoint skipped" in err and "rolled back" in err
    assert "resuming __main__:" not in err or "j.ckpt.1" in err
    assert "from " + str(tmp_path / "j.ckpt.1") in err


def test_run_says_what_to_pass_for_a_generator_object() -> None:
    gen = with_finally(os.devnull, 3)
    with pytest.raises(TypeError, match=r"takes the @checkpointable generator \*function\*"):
        contsnap.run(gen)  # type: ignore[arg-type]


def test_a_module_that_cannot_be_found_on_load_is_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "gonemod.py").write_text(LIBRARY)
    env = {**_env(), "PYTHONPATH": str(tmp_path / "lib")}
    subprocess.run(
        [sys.executable, "-c", "import contsnap, gonemod; g = gonemod.main(3, 0); next(g);"
         "open('g.snap', 'wb').write(contsnap.dumps(g))"],
        cwd=tmp_path, env=env, check=True, timeout=60,
    )  # fmt: skip
    with pytest.raises(contsnap.CheckpointError) as caught:
        contsnap.loads((tmp_path / "g.snap").read_bytes())
    assert not isinstance(caught.value, contsnap.CodeChangedError)
    assert "cannot import module 'gonemod'" in str(caught.value)
    assert "Is it on sys.path?" in str(caught.value)


@pytest.mark.parametrize("rich_installed", [True, False], ids=["rich", "plain"])
def test_the_status_line_is_drawn_with_or_without_rich(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, rich_installed: bool
) -> None:
    if not rich_installed:
        monkeypatch.setitem(sys.modules, "rich.console", None)  # import fails
    log = tmp_path / "finally.log"
    result = contsnap.run(with_finally, str(log), 30, checkpoint=tmp_path / "p.ckpt", progress=True)
    assert result is None
    err = capsys.readouterr().err
    if not rich_installed:
        assert "with_finally  " in err and " steps  ·  " in err  # the plain line
