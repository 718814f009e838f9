"""Actors: quiesce, one consistent checkpoint of the whole set, restore, supervise."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import contsnap
from contsnap import actors
from contsnap._snapshot import capture

sys.path.insert(0, str(Path(__file__).parent))
import actor_programs as programs

N = 30


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def _expected_results(n: int = N, workers: int = 3) -> dict[str, Any]:
    return {
        "producer": n,
        "agg": programs.expected_pipeline(n),
        **{f"w{i}": len(range(i, n, workers)) for i in range(workers)},
    }


def test_an_uninterrupted_pipeline() -> None:
    async def main() -> dict[str, Any]:
        return await programs.start_pipeline("plain", N).join()

    assert run(main()) == _expected_results()


@pytest.mark.parametrize("turns", [0, 7, 25, 60])
def test_checkpointed_mid_run_and_restored_it_ends_the_same(turns: int) -> None:
    async def main() -> dict[str, Any]:
        system = programs.start_pipeline("mid", N)
        for _ in range(turns):
            await asyncio.sleep(0)
        data = await system.checkpoint()
        await system.stop()  # cancelled: the snapshot goes on instead
        restored = await actors.System.restore(data)
        return await restored.join()

    assert run(main()) == _expected_results()


def test_checkpoints_taken_while_messages_flow_let_the_system_go_on_exactly() -> None:
    """Actors waiting in receive() are parked where they wait (no turn of the loop each);
    a message that reaches one during the pause waits in its mailbox, taken once: the
    system that goes on and every checkpoint restored end with the same results."""

    async def main() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        system = programs.start_pipeline("flowing", N, workers=4)
        saved = []
        for turn in range(40):
            saved.append(await system.checkpoint())
            for _ in range(turn % 3):
                await asyncio.sleep(0)
        results = await system.join()
        restored = []
        for data in saved[::6]:
            restored.append(await (await actors.System.restore(data)).join())
        return results, restored

    results, restored = run(main())
    expected = _expected_results(workers=4)
    assert results == expected
    assert restored and all(r == expected for r in restored)


def test_stop_with_rollout_detaches_so_finally_runs_once(tmp_path: Path) -> None:
    path = tmp_path / "pipe.ckpt"
    programs.LOG.clear()

    async def first() -> None:
        system = programs.start_pipeline("roll", N)
        for _ in range(20):
            await asyncio.sleep(0)
        await system.stop(rollout=path)

    async def second() -> dict[str, Any]:
        return await (await actors.System.restore(path)).join()

    run(first())
    assert programs.LOG == []  # detached: no finally ran in the process that rolled out
    assert run(second()) == _expected_results()
    assert sorted(programs.LOG) == [("worker finally", f"w{i}") for i in range(3)]


def test_restored_in_a_new_process_after_sigkill(tmp_path: Path) -> None:
    """Autosave every 50 ms; kill -9 at random; each restart resumes from the last save."""
    path = str(tmp_path / "pipe.ckpt")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    script = str(Path(programs.__file__))
    chooser = random.Random(7)
    n = 400
    mode = "run"
    for attempt in range(8):
        proc = subprocess.Popen(
            [sys.executable, script, mode, path, str(n)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if attempt < 3:
            deadline = time.monotonic() + 60
            while not os.path.exists(path) and proc.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            time.sleep(chooser.uniform(0.0, 0.2))
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
        mode = "resume"
    assert proc.returncode == 0, err
    assert eval(out.strip()) == _expected_results(n)


def test_quiesce_holds_messages_and_resume_delivers_them() -> None:
    async def main() -> tuple[int, int]:
        system = actors.System("q")
        ref = system.spawn(programs.counter, 0, name="c")
        ref.send(1)
        await asyncio.sleep(0.01)
        await system.quiesce()
        for value in (10, 100):
            ref.send(value)
        await asyncio.sleep(0.01)
        waiting = len(system.mailboxes["c"])
        system.resume()
        ref.send("stop")
        results = await system.join()
        return waiting, results["c"]

    assert run(main()) == (2, 111)


def test_quiesce_timeout_names_the_actor_and_where_it_waits() -> None:
    async def main() -> None:
        system = actors.System("late")
        system.spawn(programs.sleeper, name="dozy")
        system.spawn(programs.counter, 0, name="fine")
        await asyncio.sleep(0.01)
        try:
            with pytest.raises(contsnap.NotCheckpointableError) as caught:
                await system.quiesce(timeout=0.2)
            message = str(caught.value)
            assert "dozy" in message and "sleeper" in message and "fine" not in message
            assert not system._parked  # nobody stays stopped
        finally:
            await system.stop()

    run(main())


def test_refs_travel_in_messages_and_a_missing_actor_is_named() -> None:
    ref = actors.ActorRef("nowhere", "ghost")
    with pytest.raises(actors.ActorNotFoundError, match="ghost"):
        ref.send(1)
    assert not ref.alive
    assert contsnap.loads(contsnap.dumps(ref)) == ref

    with pytest.raises(RuntimeError, match="outside an actor"):
        actors.receive()


def test_state_that_cannot_be_saved_names_the_actor_and_the_variable() -> None:
    import threading

    @contsnap.checkpointable
    async def holder(lock):
        await actors.receive()

    async def main() -> None:
        system = actors.System("locked")
        system.spawn(holder, threading.Lock(), name="keeper")
        await asyncio.sleep(0)
        try:
            with pytest.raises(contsnap.NotCheckpointableError, match=r"actor 'keeper'.*lock"):
                await system.checkpoint()
        finally:
            await system.stop()

    run(main())


# --- supervision ----------------------------------------------------------------------


def test_one_for_one_restores_a_crashed_actor_from_its_last_checkpoint() -> None:
    async def main() -> tuple[dict[str, Any], list[actors.Crash]]:
        system = actors.System("sup")
        system.supervisor("root", strategy="one_for_one", restart="restore", backoff=0.001)
        ref = system.spawn(programs.counter, 0, name="c", supervisor="root")
        ref.send(5)
        await asyncio.sleep(0.01)
        await system.checkpoint()  # total 5 saved
        ref.send(7)  # lost with the crash: the state goes back to the checkpoint
        ref.send("boom")  # the poison message is not delivered again
        ref.send(1)
        await asyncio.sleep(0.1)
        ref.send("stop")
        return await system.join(), system.crashes

    results, crashes = run(main())
    assert results == {"c": 6}
    assert [(c.actor, c.origin, "boom" in c.error) for c in crashes] == [("c", "fresh", True)]


def test_restart_fresh_and_one_for_all() -> None:
    async def main() -> dict[str, Any]:
        system = actors.System("all")
        system.supervisor("root", strategy="one_for_all", restart="fresh", backoff=0.001)
        a = system.spawn(programs.counter, 100, name="a", supervisor="root")
        b = system.spawn(programs.counter, 200, name="b", supervisor="root")
        a.send(1)
        b.send(2)
        await asyncio.sleep(0.01)
        a.send("boom")  # b restarts afresh too
        await asyncio.sleep(0.1)
        a.send("stop")
        b.send("stop")
        return await system.join()

    assert run(main()) == {"a": 100, "b": 200}


def test_a_poisoned_state_falls_back_to_an_older_checkpoint_then_fresh(tmp_path: Path) -> None:
    async def main() -> tuple[dict[str, Any], list[str], int]:
        system = actors.System("poison")
        system.supervisor(
            "root",
            restart="restore",
            poison_after=2,
            max_restarts=10,
            backoff=0.001,
            poison_dir=str(tmp_path),
        )
        ref = system.spawn(programs.counter, 0, name="c", supervisor="root")
        ref.send(3)
        await asyncio.sleep(0.01)
        await system.checkpoint()  # checkpoint 1: total 3, good
        ref.send(-10)
        await asyncio.sleep(0.01)
        await system.checkpoint()  # checkpoint 2: total -7, crashes on any number
        for _ in range(4):
            ref.send(1)
            await asyncio.sleep(0.05)
        # the poisoned state loads alone (its prelude in front of it), where it crashed
        poisoned = contsnap.loads((tmp_path / "poison-c-checkpoint2.ckpt").read_bytes())
        try:
            total = capture(poisoned).values["total"]
        finally:
            poisoned.close()
        ref.send("stop")
        results = await system.join()
        return results, [c.origin for c in system.crashes], total

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results, origins, poisoned_total = run(main())
    # the live state crashed, then checkpoint 2 twice (poisoned), then checkpoint 1 held
    assert origins == ["fresh", "checkpoint 2", "checkpoint 2"]
    assert results == {"c": 3 + 1}
    assert any("checkpoint 2 crashed 2 times" in str(w.message) for w in caught)
    assert os.listdir(tmp_path) == ["poison-c-checkpoint2.ckpt"]
    kept = contsnap.describe((tmp_path / "poison-c-checkpoint2.ckpt").read_bytes())
    assert kept["poisoned"] == {"system": "poison", "actor": "c", "checkpoint": 2}
    assert poisoned_total == -7


def test_restart_intensity_gives_up_and_restarts_do_not_spin() -> None:
    async def main() -> tuple[float, int]:
        system = actors.System("spin")
        system.supervisor("root", restart="fresh", max_restarts=3, within=10, backoff=0.02)
        ref = system.spawn(programs.counter, 0, name="c", supervisor="root")
        started = time.monotonic()

        async def poison() -> None:
            while True:
                try:
                    ref.send("boom")
                except actors.ActorNotFoundError:
                    return
                await asyncio.sleep(0.001)

        feeder = asyncio.ensure_future(poison())
        with pytest.raises(actors.SupervisorGaveUpError, match="more than 3 restarts"):
            await system.join()
        feeder.cancel()
        return time.monotonic() - started, len(system.crashes)

    elapsed, crashes = run(main())
    assert crashes == 4  # three restarts, then it gave up
    assert elapsed >= 0.02 + 0.04 + 0.08  # exponential backoff between restarts


def test_autosave_keeps_the_last_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "auto.ckpt"

    async def main() -> None:
        system = actors.System("auto")
        ref = system.spawn(programs.counter, 0, name="c")
        system.autosave(path, every=0.02, keep=2)
        await asyncio.sleep(0.2)
        ref.send("stop")
        await system.join()

    run(main())
    assert sorted(os.listdir(tmp_path)) == ["auto.ckpt", "auto.ckpt.1"]
    assert contsnap.describe(path.read_bytes())["actors"]["system"] == "auto"


# --- the property ------------------------------------------------------------------------


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    n=st.integers(1, 40),
    workers=st.integers(1, 4),
    cuts=st.lists(st.integers(0, 80), max_size=3),
)
def test_random_workloads_with_checkpoint_and_restore_end_the_same(
    n: int, workers: int, cuts: list[int]
) -> None:
    """Any number of checkpoint/restore cycles at any moment: nothing lost or delivered twice."""

    async def main() -> dict[str, Any]:
        system = programs.start_pipeline("prop", n, workers)
        for turns in cuts:
            for _ in range(turns):
                await asyncio.sleep(0)
            if all(a.task is None or a.task.done() for a in system.actors.values()):
                break
            data = await system.checkpoint()
            await system.stop()
            system = await actors.System.restore(data)
        return await system.join()

    assert run(main()) == _expected_results(n, workers)


def test_back_to_back_checkpoints_find_every_actor_parked_again() -> None:
    async def main() -> int:
        system = actors.System("twice")
        ref = system.spawn(programs.counter, 0, name="c")
        await asyncio.sleep(0.01)
        for _ in range(3):  # released and paused again before the actor ran on
            await system.checkpoint(timeout=2)
        ref.send(4)
        ref.send("stop")
        return (await system.join())["c"]

    assert run(main()) == 4


ACTOR_V1 = """
import contsnap
from contsnap import actors

@contsnap.checkpointable
async def tally(total):
    while True:
        message = await actors.receive()
        if message == "stop":
            return total
        total += message
"""


def test_live_upgrade_is_refused_clearly_or_goes_through_a_migration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import uuid

    from contsnap._marking import _decorator

    name = f"actmod_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{name}.py"
    source.write_text(ACTOR_V1)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)

    async def save() -> bytes:
        system = actors.System("upgrade")
        ref = system.spawn(module.tally, 0, name="t")
        ref.send(5)
        await asyncio.sleep(0.01)
        data = await system.checkpoint()
        await system.stop()
        return data

    data = run(save())
    # v2 counts messages too: a new local, and the receive moved down a line
    source.write_text(
        ACTOR_V1.replace("    while True:\n", "    count = 0\n    while True:\n").replace(
            "        total += message\n", "        total += message\n        count += 1\n"
        )
    )
    importlib.invalidate_caches()
    module = importlib.reload(module)

    async def restore() -> Any:
        system = await actors.System.restore(data)
        system.ref("t").send(2)
        system.ref("t").send("stop")
        return (await system.join())["t"]

    try:
        with pytest.raises(contsnap.CodeChangedError, match=rf"{name}\.tally"):
            run(restore())
        lines: list[int | None] = []

        @contsnap.migration(module.tally)
        def add_count(old: contsnap.OldFrame) -> contsnap.Resume:
            lines.append(old.line)
            assert old.line is not None
            return contsnap.Resume(line=old.line + 1, locals={**old.locals, "count": 1})

        assert run(restore()) == 7
        assert lines == [8]  # v1's `message = await actors.receive()`
    finally:
        _decorator.forget_module(name)
        sys.modules.pop(name, None)


ACTOR_LOG: list[str] = []


@contsnap.checkpointable
async def counted_numbers(n):
    try:
        for i in range(n):
            await contsnap.checkpoint()
            yield i
    finally:
        ACTOR_LOG.append("numbers finally")


@contsnap.checkpointable
async def sums_numbers(n):
    total = 0
    async for x in counted_numbers(n):
        total += x
    return total


def test_roll_out_an_actor_paused_inside_an_async_generator_step(tmp_path: Path) -> None:
    path = tmp_path / "s.ckpt"
    ACTOR_LOG.clear()

    async def main() -> dict[str, Any]:
        system = actors.System("agen")
        system.spawn(sums_numbers, 50, name="a")
        for _ in range(7):  # inside the async generator's step, at its checkpoint
            await asyncio.sleep(0)
        await system.stop(rollout=path)
        assert ACTOR_LOG == []  # detached: its finally is the restored copy's to run
        return await (await actors.System.restore(path)).join()

    assert run(main()) == {"a": sum(range(50))}
    assert ACTOR_LOG == ["numbers finally"]


def test_a_checkpoint_lets_go_only_the_actors_it_stopped() -> None:
    async def main() -> tuple[int, int, dict[str, Any]]:
        system = actors.System("partial")
        held = system.spawn(programs.counter, 0, name="held")
        free = system.spawn(programs.counter, 0, name="free")
        await asyncio.sleep(0.01)
        await system.quiesce(["held"])
        await system.checkpoint()
        held.send(1)
        free.send(1)
        await asyncio.sleep(0.01)
        waiting = (len(system.mailboxes["held"]), len(system.mailboxes["free"]))
        system.resume()
        held.send("stop")
        free.send("stop")
        return (*waiting, await system.join())

    assert run(main()) == (1, 0, {"held": 1, "free": 1})


# --- join() right after an actor's task ended ----------------------------------------------


@pytest.mark.parametrize("sleeps", [0, 1, 2, 3])
def test_join_records_an_actor_that_ended_one_loop_turn_ago(sleeps: int) -> None:
    # after one sleep(0) the actor's task is done() but its result is not recorded
    # yet (the done callback runs on the next turn): join() must wait for it
    async def main(message: str) -> dict[str, Any]:
        system = actors.System(f"turns-{message}-{sleeps}")
        ref = system.spawn(programs.counter, 7, name="c")
        ref.send(message)
        for _ in range(sleeps):
            await asyncio.sleep(0)
        return await system.join()

    assert run(main("stop")) == {"c": 7}
    with pytest.raises(ValueError, match="boom"):  # a crash is not lost either
        run(main("boom"))


# --- autosave on a disk that refuses the write ------------------------------------------------


def _refuse_writes_under(
    monkeypatch: pytest.MonkeyPatch, directory: Path, err: int, times: int
) -> list[str]:
    """os.open of a new file under ``directory`` fails with ``err``, the first ``times`` times."""
    refused: list[str] = []
    real_open = os.open

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if (
            flags & os.O_CREAT
            and os.fspath(path).startswith(str(directory))
            and len(refused) < times
        ):
            refused.append(os.fspath(path))
            raise OSError(err, os.strerror(err), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    return refused


def _autosaved_counter(path: Path, on_error: str) -> Any:
    async def main() -> dict[str, Any]:
        system = actors.System(f"disk-{on_error}")
        ref = system.spawn(programs.counter, 0, name="c")
        system.autosave(path, every=0.01, on_error=on_error)
        for _ in range(20):
            await asyncio.sleep(0.01)
            if on_error == "fail" and system.save_errors:
                break
            ref.send(1)
        await asyncio.sleep(0.05)
        ref.send("stop")
        try:
            return await system.join()
        finally:
            main.save_errors = system.save_errors  # type: ignore[attr-defined]

    return main


def test_autosave_on_a_full_disk_warns_records_and_tries_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    path = tmp_path / "full.ckpt"
    refused = _refuse_writes_under(monkeypatch, tmp_path, errno.ENOSPC, times=2)
    main = _autosaved_counter(path, "warn")
    with pytest.warns(RuntimeWarning, match="No space left on device") as caught:
        assert run(main()) == {"c": 20}
    assert len(refused) == 2
    assert len(main.save_errors) == 2
    message = str(main.save_errors[0])
    assert "'disk-warn'" in message and str(path) in message and "free space" in message
    assert isinstance(main.save_errors[0], contsnap.CheckpointError)
    assert "next autosave tries again" in str(caught[0].message)
    # the disk had room again: a later save went through
    assert contsnap.describe(path.read_bytes())["actors"]["system"] == "disk-warn"


def test_autosave_on_a_full_disk_can_fail_the_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    _refuse_writes_under(monkeypatch, tmp_path, errno.ENOSPC, times=1000)
    main = _autosaved_counter(tmp_path / "full.ckpt", "fail")
    with (
        pytest.warns(RuntimeWarning, match="the system fails"),
        pytest.raises(contsnap.CheckpointError, match="No space left on device"),
    ):
        run(main())
    assert len(main.save_errors) == 1
    assert not any(tmp_path.iterdir())


def test_autosave_into_a_read_only_directory_is_reported(tmp_path: Path) -> None:
    # root ignores a directory's mode, but not sysfs, which refuses new files (EACCES)
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    locked = Path("/sys/kernel") if root else tmp_path / "locked"
    if not root:
        locked.mkdir()
        locked.chmod(0o500)
    try:
        main = _autosaved_counter(locked / "ro.ckpt", "warn")
        with pytest.warns(RuntimeWarning, match="Permission denied"):
            assert run(main()) == {"c": 20}
        assert main.save_errors and "make its directory writable" in str(main.save_errors[0])
    finally:
        if not root:
            locked.chmod(0o700)


def test_autosave_on_a_read_only_file_system_keeps_trying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # root ignores a directory's mode (the test above is skipped as root); a read-only
    # mount stops it, with EROFS
    import errno

    _refuse_writes_under(monkeypatch, tmp_path, errno.EROFS, times=1000)
    main = _autosaved_counter(tmp_path / "ro.ckpt", "warn")
    with pytest.warns(RuntimeWarning, match="Read-only file system"):
        assert run(main()) == {"c": 20}
    assert len(main.save_errors) >= 2  # it kept trying
    assert not any(tmp_path.iterdir())


def test_autosave_refuses_an_unknown_policy() -> None:
    async def main() -> None:
        system = actors.System("policy")
        try:
            with pytest.raises(ValueError, match="'warn' or 'fail'"):
                system.autosave("x.ckpt", on_error="ignore")
        finally:
            await system.stop()

    run(main())


def test_inspect_and_ls_show_where_each_actor_is_paused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from contsnap.__main__ import main as cli

    async def main() -> None:
        system = actors.System("where")
        system.spawn(programs.counter, 0, name="c")
        system.spawn(programs.counter, 5, name="d")  # paused at the same place: listed once
        await asyncio.sleep(0)
        await system.checkpoint(tmp_path / "where.ckpt")
        await system.stop()

    run(main())
    source = Path(programs.__file__).read_text().splitlines()
    line = next(
        n
        for n, text in enumerate(source, 1)
        if "message = await actors.receive()" in text
        and n > source.index("async def counter(start):")
    )
    assert cli(["inspect", str(tmp_path / "where.ckpt")]) == 0
    out = capsys.readouterr().out
    assert f"frame 0   counter  {programs.__file__}:{line}\n" in out
    assert "frame 1" not in out
    assert "code matches" in out and "None" not in out
    assert cli(["ls", str(tmp_path)]) == 0
    assert f"counter line {line}" in capsys.readouterr().out


# --- the pause: what is in it, and what comes after --------------------------------------


def test_the_actors_go_on_while_the_checkpoint_is_written_and_it_holds_the_set_of_the_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The set is captured while the actors are stopped; the checkpoint is sealed after they
    go on. What they do meanwhile (here: every message of a pair moving tokens) is in the
    live system, not in that checkpoint: restored, the pair is as it was at the pause."""
    sealing, go_on = threading.Event(), threading.Event()
    seal = actors.System._seal_and_save

    def slow_seal(self: actors.System, *args: Any) -> bytes:
        sealing.set()
        assert go_on.wait(30)
        return seal(self, *args)

    monkeypatch.setattr(actors.System, "_seal_and_save", slow_seal)

    async def main() -> tuple[list[Any], float | None, dict[str, Any], dict[str, Any]]:
        system = actors.System("ledger")
        a = system.spawn(programs.mover, 100, name="a")
        b = system.spawn(programs.mover, 100, name="b")
        a.send(("give", 10, b))
        await asyncio.sleep(0.01)  # a holds 90, b 110
        programs.LOG.clear()
        job = asyncio.ensure_future(system.checkpoint())
        while not sealing.is_set():
            await asyncio.sleep(0.001)
        for _ in range(5):
            a.send(("give", 1, b))
            b.send(("give", 2, a))
        for _ in range(20):
            await asyncio.sleep(0)
        handled_meanwhile = list(programs.LOG)
        go_on.set()
        data = await job
        a.send("stop")
        b.send("stop")
        live = await system.join()
        restored = await actors.System.restore(data)
        for name in ("a", "b"):
            restored.ref(name).send("stop")
        return handled_meanwhile, system.last_pause, live, await restored.join()

    handled, pause, live, restored = run(main())
    assert len(handled) == 20  # 10 gives and 10 takes, all while the checkpoint was sealed
    assert pause is not None and pause > 0
    assert live == {"a": 95, "b": 105}
    assert restored == {"a": 90, "b": 110}


@pytest.mark.parametrize(
    ("crash_at", "restored_total"),
    [
        (("replace", 1), 5),  # moving the newest generation aside
        (("fsync", 1), 5),  # the new file written, not yet flushed or in place
        (("replace", 2), 5),  # flushed, not yet in place
        (("fsync", 2), 12),  # in place: the new checkpoint is the one restored
    ],
)
def test_a_crash_while_the_checkpoint_is_written_keeps_the_previous_one(
    tmp_path: Path, crash_at: tuple[str, int], restored_total: int
) -> None:
    """The checkpoint is written after the actors go on, in a thread: a process that dies
    at any point of the write leaves the previous checkpoint to restore."""
    path = tmp_path / "crashy.ckpt"
    call, nth = crash_at
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        import actor_programs as programs
        from contsnap import actors

        async def main():
            system = actors.System("crashy")
            ref = system.spawn(programs.counter, 0, name="c")
            ref.send(5)
            await asyncio.sleep(0.01)
            await system.checkpoint({str(path)!r})
            ref.send(7)
            await asyncio.sleep(0.01)
            real, calls = os.{call}, []

            def crash(*args):
                calls.append(args)
                if len(calls) == {nth}:
                    os._exit(3)
                return real(*args)

            os.{call} = crash
            await system.checkpoint({str(path)!r})
            os._exit(4)  # not reached

        asyncio.run(main())
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr

    async def restored() -> dict[str, Any]:
        system = await actors.System.restore(path)
        system.ref("c").send("stop")
        return await system.join()

    assert run(restored()) == {"c": restored_total}


def test_the_collector_is_off_only_while_the_checkpoint_stops_the_loop() -> None:
    """Python's cyclic collector is held off while the set is captured, on again for the
    actors that run while the checkpoint waits for them to reach a safe point, and left as
    it was found (off, if the program turned it off)."""

    async def main() -> list[Any]:
        system = actors.System("collected")
        system.spawn(programs.spinner, programs.Probe(), name="busy")
        system.spawn(programs.counter, 0, name="idle")
        await asyncio.sleep(0)
        programs.LOG.clear()
        await system.checkpoint()
        assert gc.isenabled()
        seen = list(programs.LOG)
        gc.disable()
        try:
            await system.checkpoint()
            assert not gc.isenabled()
        finally:
            gc.enable()
        await system.stop()
        return seen

    seen = run(main())
    assert ("pickled", False) in seen
    assert ("running", True) in seen and ("running", False) not in seen


def test_actors_of_several_kinds_and_one_saved_by_value_restore_and_restart() -> None:
    """The actors' states share one functions table and one prelude (the globals they
    name, learnt from the first states of each kind); a state the fast pickler cannot
    make (a function defined in a test: saved by value) is pickled whole. Each restores,
    and each restarts alone from the history."""

    @contsnap.checkpointable
    async def local_counter(total):
        while True:
            message = await actors.receive()
            if message == "stop":
                return total
            if message == "boom":
                raise ValueError("boom")
            total += message

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        system = actors.System("kinds")
        system.supervisor("sup", backoff=0.0)
        c = system.spawn(programs.counter, 1, name="c", supervisor="sup")
        local = system.spawn(local_counter, 2, name="local", supervisor="sup")
        a = system.spawn(programs.mover, 100, name="a")
        b = system.spawn(programs.mover, 100, name="b")
        a.send(("give", 3, b))
        c.send(10)
        local.send(20)
        await asyncio.sleep(0.01)
        data = await system.checkpoint()
        second = await system.checkpoint()  # with the prelude learnt by the first
        c.send(100)
        local.send(200)
        await asyncio.sleep(0.01)
        c.send("boom")
        local.send("boom")
        await asyncio.sleep(0.05)  # both restarted from the checkpoint: 11 and 22
        for ref in (c, local, a, b):
            ref.send("stop")
        live = await system.join()
        assert data != second
        restored = await actors.System.restore(second)
        for name in ("c", "local", "a", "b"):
            restored.ref(name).send("stop")
        return live, await restored.join()

    live, restored = run(main())
    assert live == {"c": 11, "local": 22, "a": 97, "b": 103}
    assert restored == {"c": 11, "local": 22, "a": 97, "b": 103}


def test_a_checkpoint_of_format_1_still_restores() -> None:
    """Format 1 pickled each actor's state on its own, naming every function itself."""
    from contsnap import _codec
    from contsnap._snapshot import to_payload

    async def main() -> dict[str, Any]:
        system = actors.System("old")
        ref = system.spawn(programs.counter, 1, name="c")
        ref.send(4)
        await asyncio.sleep(0.01)
        await system.quiesce()
        actor = system.actors["c"]
        coro = actor.task.get_coro()  # type: ignore[union-attr]
        state = to_payload(coro)[0]
        frames = [dict(f, line=f["line"]) for f in _codec.frames_of(coro, to_payload(coro)[1])]
        whole = {
            "format": "contsnap-actor-system/1",
            "name": "old",
            "sequence": 1,
            "actors": {
                "c": {
                    "state": state,
                    "frames": frames,
                    "spec": to_payload(actor.spec)[0],
                    "supervisor": None,
                    "mailbox": [10],
                }
            },
            "results": {},
            "supervisors": [],
            "poisoned": {},
        }
        data = _codec.encode_payload(to_payload(whole)[0], frames, kind="actor-system")
        system.resume()
        await system.stop()
        restored = await actors.System.restore(data)
        restored.ref("c").send("stop")
        return await restored.join()

    assert run(main()) == {"c": 15}


def test_killed_at_random_writes_of_the_autosave_it_resumes_from_a_good_checkpoint(
    tmp_path: Path,
) -> None:
    """The pipeline kills itself at a random write, rename or fsync of its autosave (the
    fault points of tests/faultpoints.py), six times: every generation left verifies, and
    the restarts end with the uninterrupted result."""
    from contsnap import _codec
    from contsnap._checkpoints._files import CheckpointFiles

    seed = int(os.environ.get("CONTSNAP_KILL_SEED", 1207))
    rng = random.Random(seed)
    path = str(tmp_path / "pipe.ckpt")
    tests = str(Path(__file__).parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests, *(p for p in sys.path if p)]))
    env["CONTSNAP_FAULT_DIR"] = str(tmp_path)
    script = str(Path(programs.__file__))
    runner = (
        "import sys, runpy, faultpoints; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    n = 300

    def start(mode: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", runner, script, mode, path, str(n)],
            env={**env, **extra}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def clear() -> None:
        for name in os.listdir(tmp_path):
            if name.startswith(("pipe.ckpt", ".pipe.ckpt")):
                os.unlink(tmp_path / name)

    count = tmp_path / "points"
    first = start("run", CONTSNAP_FAULT_COUNT=str(count))
    assert first.returncode == 0, first.stderr
    points = int(count.read_text())
    assert points > 20, points
    clear()
    kills, log = 0, []
    for _attempt in range(40):
        mode = "resume" if os.path.exists(path) else "run"
        fault = f"{rng.randint(1, points)}{rng.choice(['', ':during'])}" if kills < 6 else ""
        done = start(mode, CONTSNAP_FAULT=fault, CONTSNAP_FAULT_SAY="1")
        log.append(f"{mode} {fault} -> {done.returncode} {done.stderr[-120:]!r}")
        if done.returncode == -signal.SIGKILL:
            kills += 1
            files = CheckpointFiles(path, 3)
            for generation in files.existing():
                with open(generation, "rb") as f:
                    _codec.verify(f.read(), kinds=("actor-system",))  # raises if unreadable
            continue
        assert done.returncode == 0, (seed, log)
        if kills >= 6:
            break
        clear()  # ended before the kill: again from the start
    assert kills >= 6, (seed, log)
    assert eval(done.stdout.strip()) == _expected_results(n), (seed, log)
