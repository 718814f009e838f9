"""The kill harness: SIGKILL a durable job at random instants, resume it, check what it left.

A *campaign* runs one job (``JOB`` below: a compute loop that appends a line per step
to an output file it keeps open, and a ``finally`` that writes to it too) first
uninterrupted, to learn its result, its output and how many fault points
(``tests/faultpoints.py``) it passes, and then again and again, each run killed:

- ``timer``: by the harness, with SIGKILL, at a random instant of the run (starting,
  loading and resuming, computing, saving);
- ``point``: by itself, at a random fault point (a write, rename or fsync of a
  checkpoint or of the output, a store call, before or after it);
- ``during``: by a timer of its own, 0-3 ms after a random fault point, inside the
  write that follows (an SQLite transaction, a Redis script, a PostgreSQL round trip);

until the wanted number of kills landed, then once more to its end. A run of the
checkpoint-file backend is started either as the script or as ``contsnap resume FILE``.
After every kill, every generation the job's checkpoint keeps must verify (no kill
leaves a checkpoint unreadable). At the end, the job's result and its whole output file
must equal the uninterrupted run's: no line lost, none twice, the ``finally`` line
once; a run after the end says "already finished" and changes nothing.

`run_campaign` raises AssertionError naming the seed, the run and what it found;
``python tests/killing.py BACKEND KILLS [SEED]`` runs a campaign from the shell.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

JOB = """
import faultpoints  # kills this process at the fault point the harness chose
import hashlib, json, os, sys
import contsnap
from contsnap.stores import open_store

@contsnap.checkpointable
def crunch(n, rounds):
    state = 1
    with open("out.txt", "w") as out:  # a rerun of the first step writes it afresh
        try:
            for i in range(n):
                digest = str(state).encode()
                for _ in range(rounds):  # the compute of a step
                    digest = hashlib.sha256(digest).digest()
                state = int.from_bytes(digest[:4], "big") ^ i
                out.write(f"{i} {state}\\n")
                out.flush()
                yield i
        finally:
            out.write("finally\\n")  # once: the output is cut back on resume
    return state

if __name__ == "__main__":
    where = {"checkpoint": "job.ckpt"}
    if os.environ.get("JOB_STORE"):
        options = json.loads(os.environ.get("JOB_STORE_OPTIONS", "{}"))
        where = {"store": open_store(os.environ["JOB_STORE"], **options),
                 "checkpoint": "crunch-job", "lease": float(os.environ["JOB_LEASE"]),
                 "wait": 120}
    result = contsnap.run(crunch, int(sys.argv[1]), int(sys.argv[2]), progress=False,
                          every=float(os.environ["JOB_EVERY"]), **where)
    print(json.dumps(result), flush=True)
"""

STEPS, ROUNDS, EVERY = 150, 3000, 0.02
#: a killed runner's lease on a server store outlives it: the next runner waits this long
LEASE = 2.0
KEEP = 3


@dataclass
class Campaign:
    backend: str
    directory: Path
    seed: int
    store_url: str | None = None
    store_options: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    kills: int = 0
    jobs: int = 0
    modes: dict[str, int] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT)])
        env["CONTSNAP_FAULT_DIR"] = str(self.directory)
        env["JOB_EVERY"] = str(EVERY)
        env["JOB_LEASE"] = str(LEASE)
        env.pop("CONTSNAP_FAULT", None)
        env.pop("CONTSNAP_FAULT_COUNT", None)
        if self.store_url:
            env["JOB_STORE"] = self.store_url
            env["JOB_STORE_OPTIONS"] = json.dumps(self.store_options)
        env.update(extra)
        return env

    def fail(self, what: str) -> AssertionError:
        tail = "\n".join(self.log[-12:])
        return AssertionError(
            f"kill campaign {self.backend} seed {self.seed}: {what}\n"
            f"(rerun: python tests/killing.py {self.backend} {self.kills or 1} {self.seed})\n"
            f"last runs:\n{tail}"
        )


def _start(c: Campaign, how: str, env: dict[str, str]) -> subprocess.Popen[str]:
    if how == "resume":
        command = [sys.executable, "-m", "contsnap", "resume", "job.ckpt"]
    else:
        command = [sys.executable, "job.py", str(STEPS), str(ROUNDS)]
    return subprocess.Popen(
        command, cwd=c.directory, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _reference(c: Campaign) -> tuple[str, str, int, float]:
    """The uninterrupted run: its printed result, its output, its fault points, its time."""
    count = c.directory / "points"
    started = time.monotonic()
    proc = _start(c, "script", c.env(CONTSNAP_FAULT_COUNT=str(count)))
    out, err = proc.communicate(timeout=300)
    took = time.monotonic() - started
    if proc.returncode != 0:
        raise c.fail(f"the uninterrupted run failed ({proc.returncode}):\n{err}")
    return out.strip(), (c.directory / "out.txt").read_text(), int(count.read_text()), took


def _clear(c: Campaign) -> None:
    for name in os.listdir(c.directory):
        if name != "job.py":
            path = c.directory / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if c.store_url:
        from contsnap.stores import open_store

        with open_store(c.store_url, **c.store_options) as store:
            store.delete("crunch-job")


def _generations(c: Campaign) -> list[tuple[str, bytes]]:
    if not c.store_url:
        found = []
        for index in range(KEEP):
            path = c.directory / ("job.ckpt" if index == 0 else f"job.ckpt.{index}")
            if path.exists():
                found.append((path.name, path.read_bytes()))
        return found
    from contsnap.stores import open_store

    with open_store(c.store_url, **c.store_options) as store:
        return [
            (f"generation {index}", data)
            for index in range(KEEP)
            if (data := store.get("crunch-job", generation=index)) is not None
        ]


def _check_generations(c: Campaign) -> None:
    """Every generation the job keeps verifies, and their signed counters go down."""
    from contsnap import _codec

    numbers = []
    for name, data in _generations(c):
        try:
            meta, _payload = _codec.verify(data, kinds=("job",), identity="__main__:crunch")
        except Exception as exc:
            raise c.fail(f"after a kill, checkpoint {name} does not verify: {exc!r}") from None
        numbers.append(meta["job"]["generation"])
    if numbers != sorted(numbers, reverse=True) or len(set(numbers)) != len(numbers):
        raise c.fail(f"the generations kept are out of order: {numbers}")


def _kill_job(c: Campaign, rng: random.Random, want: int, ref: tuple[str, str, int, float]) -> None:
    """Run one job to its end, killed ``want`` times first (fewer if it ends before)."""
    result, output, points, took = ref
    landed = 0
    for attempt in range(10 * want + 20):
        mode = rng.choice(["timer", "point", "during"]) if landed < want else "none"
        resumable = not c.store_url and (c.directory / "job.ckpt").exists()
        how = "resume" if resumable and rng.random() < 0.3 else "script"
        # aim at what is left of the job: its output says how far it got
        done = _lines(c) / STEPS
        left = max(0.05, 1.0 - done)
        extra: dict[str, str] = {}
        if mode in ("point", "during"):
            n = rng.randint(1, int(points * left) + 8)
            extra["CONTSNAP_FAULT"] = f"{n}:during" if mode == "during" else str(n)
            extra["CONTSNAP_FAULT_SAY"] = "1"
        proc = _start(c, how, c.env(**extra))
        if mode == "timer":
            try:
                proc.wait(rng.uniform(0.0, took * (0.3 + left)))
            except subprocess.TimeoutExpired:
                proc.kill()
        out, err = proc.communicate(timeout=300)
        said = [line for line in err.splitlines() if line.startswith("faultpoints:")]
        c.log.append(f"{attempt}: {how} {mode} {extra.get('CONTSNAP_FAULT', '')} -> "
                     f"{proc.returncode} {said[-1] if said else ''}")  # fmt: skip
        if proc.returncode == -signal.SIGKILL:
            landed += 1
            c.kills += 1
            c.modes[mode] = c.modes.get(mode, 0) + 1
            _check_generations(c)
            continue
        if proc.returncode == 1 and "TakenOverError" in err:
            # starved longer than its lease on a loaded machine: it stopped writing nothing
            # (docs/durable.md); the next run resumes, as after a kill
            c.log.append("   (lease lost: TakenOverError)")
            _check_generations(c)
            continue
        if proc.returncode != 0:
            raise c.fail(f"a run ended with status {proc.returncode}:\n{err}")
        printed = out.strip().splitlines()[-1] if out.strip() else ""
        if printed != result:
            raise c.fail(f"the job printed {printed!r}, the uninterrupted run {result!r}")
        break
    else:
        raise c.fail("the job never finished")
    _compare_output(c, output)
    again = _start(c, "script", c.env())
    out, err = again.communicate(timeout=300)
    if again.returncode != 0 or out.strip() != result or "already finished" not in err:
        raise c.fail(f"a run after the end: status {again.returncode}, {out!r}\n{err}")
    _compare_output(c, output)


def _lines(c: Campaign) -> int:
    path = c.directory / "out.txt"
    return path.read_text().count("\n") if path.exists() else 0


def _compare_output(c: Campaign, output: str) -> None:
    got = (c.directory / "out.txt").read_text()
    if got != output:
        got_lines, want_lines = got.splitlines(), output.splitlines()
        first = next(
            (i for i, (a, b) in enumerate(zip(got_lines, want_lines)) if a != b),
            min(len(got_lines), len(want_lines)),
        )
        raise c.fail(
            f"the output differs from the uninterrupted run's at line {first}: "
            f"{got_lines[first : first + 3]} instead of {want_lines[first : first + 3]} "
            f"({len(got_lines)} lines, {len(want_lines)} wanted)"
        )


def run_campaign(
    backend: str,
    directory: Path,
    kills: int,
    seed: int,
    store_url: str | None = None,
    store_options: dict[str, Any] | None = None,
) -> Campaign:
    """Kill a job ``kills`` times (in one or more jobs), checking as described above."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "job.py").write_text(JOB)
    c = Campaign(backend, directory, seed, store_url, store_options or {})
    rng = random.Random(seed)
    _clear(c)  # a store may hold a job of an earlier campaign
    ref = _reference(c)
    if ref[2] < 10:
        raise c.fail(f"the uninterrupted run passed only {ref[2]} fault points")
    while c.kills < kills:  # a job that ends before enough kills landed: another one
        _clear(c)
        c.jobs += 1
        _kill_job(c, rng, kills - c.kills, ref)
    return c


def _main() -> None:
    backend, kills = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else random.randrange(1 << 30)
    os.environ.setdefault("CONTSNAP_QUIET", "1")
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="contsnap-kills-"))
    url = {"files": None, "filestore": f"file://{directory}/job/store",
           "sqlite": f"sqlite:///{directory}/job/store.db"}.get(backend, backend)  # fmt: skip
    campaign = run_campaign(backend, directory / "job", kills, seed, url)
    print(f"{backend} seed {seed}: {campaign.kills} kills {campaign.modes} over "
          f"{campaign.jobs} jobs, every result and output as uninterrupted")  # fmt: skip
    if os.environ.get("KILLS_VERBOSE"):
        print("\n".join(campaign.log))
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    _main()
