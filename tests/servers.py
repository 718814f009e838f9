"""Throwaway Redis and PostgreSQL servers for the store tests, on 127.0.0.1 and a free port.

Each server lives in its own temporary directory and is stopped (and the
directory removed) by :meth:`stop`; the fixtures in ``conftest.py`` call it at
the end of the session whatever happened. A missing binary is reported by
:func:`find_binary` returning ``None``, so the tests that need it skip with
the reason; a binary that is there but fails to start is an error.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_binary(name: str) -> str | None:
    """``name`` in the newest ``/usr/lib/postgresql/*/bin`` (Debian's layout), or on PATH.

    Debian's ``redis-server`` is a link to ``redis-check-rdb`` that looks at
    its own name, so a link found on PATH is returned as it is.
    """
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(key=lambda p: int(Path(p).parent.parent.name.split(".")[0]), reverse=True)
    return candidates[0] if candidates else shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text() if log.exists() else "(no log)"
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{output}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    output = log.read_text() if log.exists() else "(no log)"
    raise RuntimeError(f"{what} did not listen on port {port} within 20 s:\n{output}")


class RedisServer:
    """``redis-server`` without persistence, in a temporary directory."""

    def __init__(self, binary: str) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="contsnap-redis-"))
        self.port = free_port()
        log = self.directory / "redis.log"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _wait_for_port(self.port, self.process, log, "redis-server")
        except BaseException:
            self.stop()
            raise
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


class PostgresServer:
    """A fresh cluster (``initdb --no-sync``) started with ``pg_ctl``, and one database.

    PostgreSQL refuses to run as root: as root, the cluster is made and run as
    the ``postgres`` OS user, in a directory that user owns.
    """

    def __init__(self, bin_dir: str) -> None:
        self.bin_dir = bin_dir
        self.directory = Path(tempfile.mkdtemp(prefix="contsnap-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self.started = False
        try:
            self._run("initdb", "--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8",
                      "-D", str(self.data))  # fmt: skip
            options = (
                f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c full_page_writes=off"
            )
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"),
                      "-w", "-t", "30", "-o", options, "start")  # fmt: skip
            self.started = True
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                      "contsnap_test")  # fmt: skip
        except BaseException:
            self.stop()
            raise
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/contsnap_test"

    def _run(self, tool: str, *args: str) -> None:
        command = [os.path.join(self.bin_dir, tool), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.directory)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")

    def stop(self) -> None:
        if self.started:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except RuntimeError:
                pid_file = self.data / "postmaster.pid"
                if pid_file.exists():
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            self.started = False
        shutil.rmtree(self.directory, ignore_errors=True)
