"""The examples run as a user runs them, and say what they promise."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def _serve_example(name: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``python examples/<name>`` as its docstring says to run it, on a free port."""
    import servers

    port = servers.free_port()
    env = dict(os.environ, PORT=str(port), CONTSNAP_WEB_STORE=f"sqlite:///{tmp_path}/pages.db")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["CONTSNAP_KEY"] = "example-key-" + "0" * 40
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    servers._wait_for_port(port, process, log, name)
    return process, f"http://127.0.0.1:{port}", log


def _submit(browser: Any, page: Any, fields: dict[str, str]) -> Any:
    """Post ``fields`` to the form of ``page`` with its CSRF field, as a browser would."""
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
    assert action and csrf, page.text
    return browser.post(html.unescape(action.group(1)), data={**fields, "_csrf": csrf.group(1)})


@pytest.mark.parametrize("name", ["web_sum.py", "web_checkout.py"])
def test_web_examples_serve_their_conversation(name: str, tmp_path: Path) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    process, url, log = _serve_example(name, tmp_path)
    try:
        with httpx.Client(base_url=url, follow_redirects=True, timeout=20) as browser:
            if name == "web_sum.py":
                page = browser.get("/sum")
                for n in (1, 2, 3):
                    page = _submit(browser, page, {"n": str(n)})
                assert page.text == "<p>The sum is 6</p>"
            else:
                basket = browser.get("/checkout")
                address = _submit(browser, basket, {"apple": "2", "pear": "1"})
                wrong = {"name": "Ada", "street": "1 Loop", "postcode": "1"}
                assert "five digits" in _submit(browser, address, wrong).text
                right = {"name": "Ada", "street": "1 Loop", "postcode": "12345"}
                confirm = _submit(browser, address, right)
                edit = _submit(browser, confirm, {"_button": "Edit address"})
                assert 'value="12345"' in edit.text
                confirm = _submit(browser, edit, {**right, "street": "2 Loop"})
                done = _submit(browser, confirm, {"_button": "Place order"})
                assert "Your order is order-1: 10 EUR" in done.text
    finally:
        process.terminate()
        process.wait(10)
    assert "Traceback" not in log.read_text()


def test_web_mounts_example_imports_both_frameworks() -> None:
    """examples/web_mounts.py: the Flask and Starlette apps it builds (driven in test_web.py)."""
    pytest.importorskip("flask")
    pytest.importorskip("starlette")
    code = "import web_mounts; print(type(web_mounts.flask_app).__name__, type(web_mounts.starlette_app).__name__)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(EXAMPLES), *(p for p in sys.path if p)]))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Flask", "Starlette"]
