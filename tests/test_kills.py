"""Durable jobs SIGKILLed at random instants, on every backend (the harness: tests/killing.py).

Each campaign kills a job by a timer (any instant: starting, resuming, computing, saving),
at a random fault point (before or after a write, rename or fsync of a checkpoint or of
the output, a store call) or inside the write after it, checks after every kill that each
generation the job keeps verifies, and at the end that the result and the whole output
equal an uninterrupted run's, the ``finally`` having run once.

The default is 30 kills in all, in about a minute. ``CONTSNAP_KILLS=N`` makes it N kills
per backend (the long mode; e.g. 200) and ``CONTSNAP_KILL_SEED=S`` changes the seeds; a
failure names its seed and the command that replays it.
"""

from __future__ import annotations

import os
from pathlib import Path

import killing
import pytest

#: kills per backend by default: 30 in all
DEFAULT_KILLS = {"files": 10, "filestore": 5, "sqlite": 5, "redis": 5, "postgres": 5}


@pytest.mark.parametrize("backend", list(DEFAULT_KILLS))
def test_a_job_killed_at_random_instants_ends_as_an_uninterrupted_run(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    kills = int(os.environ.get("CONTSNAP_KILLS", DEFAULT_KILLS[backend]))
    seed = int(os.environ.get("CONTSNAP_KILL_SEED", 20261207)) + len(backend)
    directory = tmp_path / "job"
    url: str | None = None
    options: dict[str, str] = {}
    if backend == "filestore":
        url = f"file://{directory}/store"
    elif backend == "sqlite":
        url = f"sqlite:///{directory}/store.db"
    elif backend in ("redis", "postgres"):
        url = request.getfixturevalue(f"{backend}_server").url
        prefix = f"k{os.getpid()}{tmp_path.name[-6:]}".replace("-", "")
        options = {"prefix": prefix + (":" if backend == "redis" else "_")}
    campaign = killing.run_campaign(backend, directory, kills, seed, url, options)
    assert campaign.kills >= kills, campaign.modes
    print(f"\n{backend} seed {seed}: {campaign.kills} kills {campaign.modes}, {campaign.jobs} jobs")
