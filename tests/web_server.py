"""uvicorn serving ``tests/web_apps.py`` on 127.0.0.1 and a free port, for the web tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import servers

ROOT = Path(__file__).resolve().parent.parent
KEY = "web-test-key-" + "0" * 40


class WebServer:
    """One uvicorn process; ``restart()`` stops it and starts a new one on the same port."""

    def __init__(self, store: str, port: int | None = None, **env: str) -> None:
        self.port = port or servers.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, WEB_TEST_STORE=store, CONTSNAP_KEY=KEY, **env)
        self.env.pop("CONTSNAP_OLD_KEYS", None)
        self.env.update({k: v for k, v in env.items()})
        self.log = Path(tempfile.mkstemp(prefix="contsnap-web-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        paths = [str(ROOT), str(ROOT / "examples"), str(ROOT / "tests")]
        extra = self.env.get("WEB_TEST_PYTHONPATH")
        self.env["PYTHONPATH"] = os.pathsep.join(([extra] if extra else []) + paths)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "web_apps:app", "--host", "127.0.0.1"]
                + ["--port", str(self.port), "--log-level", "warning", "--lifespan", "off"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT / "tests"),
            )
        servers._wait_for_port(self.port, self.process, self.log, "uvicorn")

    def stop(self, *, keep_log: bool = False) -> None:
        """Stop the server; its log file goes too unless ``keep_log`` (a restart)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if not keep_log:
            self.log.unlink(missing_ok=True)

    def restart(self, **env: str) -> None:
        self.stop(keep_log=True)
        self.env.update(env)
        time.sleep(0.05)
        self.start()

    def output(self) -> str:
        return self.log.read_text(errors="replace")
