"""The peers' virtual environments and the workers that measure each side.

``python benchmarks/run.py --setup`` (or any run, the first time) makes one
virtual environment per peer under ``benchmarks/.venvs/`` (git-ignored), from the
same base interpreter as the driver, and installs the peer's pinned release there
with pip. A file ``ready.json`` in it records what was installed, or why it could
not be; later runs reuse it. A peer that cannot be installed for this Python is
reported as skipped, with pip's reason, in the output and the docs.

``Worker`` starts ``worker.py`` in an interpreter and sends it requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENVS = HERE / ".venvs"


@dataclass(frozen=True)
class Peer:
    name: str  # as worker.IMPLS names it
    requirements: tuple[str, ...]
    note: str


PEERS = (
    Peer(
        "dispatch-py",
        ("dispatch-py==0.8.0", "http-message-signatures==0.5.0"),
        "C-level copy of CPython frames; wheels for CPython 3.11 and 3.12, built from source "
        "on 3.10, does not build on 3.13",
    ),
    Peer(
        "pyteleport",
        ("pyteleport==0.3.4",),
        "pickles a generator with dill as bytecode that rebuilds its frame; CPython 3.9-3.14, "
        "no async code",
    ),
)
# matplotlib for the plots, when the driver's interpreter has none (not a side)
PLOTS = Peer("plots", ("matplotlib>=3.7",), "")


def _tag() -> str:
    return f"py{sys.version_info[0]}.{sys.version_info[1]}"


def venv_dir(peer: Peer) -> Path:
    return VENVS / f"{peer.name}-{_tag()}"


def venv_python(peer: Peer) -> Path:
    return venv_dir(peer) / "bin" / "python"


def status(peer: Peer) -> dict[str, Any] | None:
    """What the setup recorded for a peer (``{"ok": bool, ...}``), or None before any setup."""
    marker = venv_dir(peer) / "ready.json"
    if not marker.exists():
        return None
    record: dict[str, Any] = json.loads(marker.read_text(encoding="utf-8"))
    if record.get("requirements") != list(peer.requirements):
        return None  # pinned versions changed since: set up again
    return record


def setup(peer: Peer, *, force: bool = False, log: Any = sys.stderr) -> dict[str, Any]:
    """Make the peer's virtual environment and install it (once); answer what happened."""
    if not force and (record := status(peer)) is not None:
        return record
    folder = venv_dir(peer)
    base = getattr(sys, "_base_executable", sys.executable)
    print(f"setting up {peer.name} in {folder} ...", file=log, flush=True)
    subprocess.run([base, "-m", "venv", "--clear", str(folder)], check=True)
    done = subprocess.run(
        [str(venv_python(peer)), "-m", "pip", "install", "-q", *peer.requirements],
        capture_output=True,
        text=True,
    )
    record = {"requirements": list(peer.requirements), "ok": done.returncode == 0}
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        record["reason"] = (
            f"pip could not install {' '.join(peer.requirements)} for Python "
            f"{sys.version_info[0]}.{sys.version_info[1]}: "
            + (" ".join(errors) or done.stderr.strip()[-300:])
        )
        print(record["reason"], file=log)
    (folder / "ready.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


class WorkerError(RuntimeError):
    pass


class Worker:
    """``worker.py`` running in an interpreter; ``ask`` sends one request and reads the answer."""

    def __init__(self, label: str, python: str | Path, impls: list[str]) -> None:
        self.label = label
        env = dict(os.environ)
        # the work tree under test first: contsnap and the workloads come from here
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), str(HERE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen(
            [str(python), str(HERE / "worker.py"), *impls],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        self.hello = self.ask({"op": "hello"})

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            raise WorkerError(f"worker {self.label} died:\n{self.log.read()[-3000:]}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask_quit()
            finally:
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        self.log.close()

    def ask_quit(self) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()
        except BrokenPipeError:
            pass
