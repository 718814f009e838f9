"""The examples run as a user runs them, and say what they promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _run(name: str) -> str:
    env = dict(os.environ, CONTSNAP_QUIET="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_save_and_resume() -> None:
    assert "process 2: finished" in _run("save_and_resume.py")


def test_pause_task() -> None:
    assert _run("pause_task.py").strip()


@pytest.mark.parametrize("name", ["paginated_fetch.py", "word_frequency.py"])
def test_durable_job_examples_survive_sigterm_and_sigkill(name: str) -> None:
    output = _run(name)
    assert "sending SIGTERM" in output and "status 75" in output
    assert "sending SIGKILL" in output and "status -9" in output
    assert "same result, nothing lost, nothing done twice" in output


def test_actor_pipeline_restored_in_a_new_process_ends_the_same() -> None:
    lines = _run("actor_pipeline.py").splitlines()
    restored = next(line for line in lines if "aggregator result" in line).split("result ")[1]
    alone = next(line for line in lines if line.startswith("uninterrupted")).split(":")[1]
    assert restored.strip() == alone.strip()
    assert "rolled out 6 actors" in lines[0]


def test_supervisor_poison_demo() -> None:
    output = _run("supervisor_poison.py")
    assert "poisoned, not used again" in output
    assert "final balance: 160" in output


def _readme_commands() -> list[str]:
    """The ```bash blocks of README.md's quick start, in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Quick start")
    blocks = text[start:].split("```bash\n")[1:]
    return [block.split("\n```", 1)[0].strip() for block in blocks]


def test_the_readme_example_command_runs_verbatim_in_a_fresh_clone(tmp_path: Path) -> None:
    """A new user's first command: a clean clone, a new venv, the package installed, the
    example run - exactly as README.md writes it (CI runs the second, the test command)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    example, test_command = _readme_commands()[:2]
    assert "examples/" in example and "tox run" in test_command
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci  # .ci/run runs the README's test command, verbatim
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "VIRTUAL_ENV"))}
    done = subprocess.run(
        ["bash", "-c", example], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "finished" in done.stdout
