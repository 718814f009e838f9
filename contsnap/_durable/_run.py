"""Durable scripts: drive a checkpointable generator to its end across kills and restarts.

[`run`][contsnap.run] starts the job, or resumes it from its checkpoint file when there
is one. Every ``yield`` of the job is a safe point: there it autosaves every
``every`` seconds and, after SIGTERM or SIGINT, saves, detaches the job (its
``finally`` blocks run once, in the process that finishes it) and exits with
status `ROLLED_OUT` (75). A second signal aborts at once; the files on
disk are then still the last good checkpoints. When the job ends, its result
is its last checkpoint: a run of a finished job returns it without redoing
the work.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable
from typing import Any

from .. import _api, _codec
from .._checkpoints._files import CheckpointFiles, Loaded, check_writable
from .._checkpoints._stores import StoreCheckpoints, TakenOverError
from .._effects import Effect
from .._errors import CheckpointError, SnapshotCorruptError
from .._registry import STATE
from .._resources import truncate
from .._snapshot import info_of, to_payload
from ..stores import Store
from . import _signals
from ._plan import _OVERRIDES, PLAN_FIELDS, _script_meta
from ._progress import _Progress, _where

#: where a job's checkpoints live: files next to each other, or a key in a store
Checkpoints = CheckpointFiles | StoreCheckpoints

#: exit status of a job that rolled out (EX_TEMPFAIL: "try again later")
ROLLED_OUT = 75

_UNSET: Any = object()

#: how many times run() was called (the CLI runs ``main`` itself when a script did not)
RUN_CALLS = [0]
STATE.add(__name__, "RUN_CALLS", lambda: RUN_CALLS.__setitem__(0, 0))


class RolledOut(SystemExit):
    """The job was saved and stopped on a signal; run it again to continue.

    A ``SystemExit`` with status `ROLLED_OUT`, so an uncaught one ends
    the process quietly with that status.
    """

    __module__ = "contsnap"

    def __init__(self, checkpoint: str, steps: int, where: str) -> None:
        super().__init__(ROLLED_OUT)
        self.checkpoint = checkpoint
        self.steps = steps
        self.where = where


class _Signals:
    """SIGTERM/SIGINT ask for a roll-out at the next safe point; a second one aborts."""

    SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")

    def __init__(self, say: Callable[[str], None]) -> None:
        self.requested: int | None = None
        self.say = say
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers belong to the main thread
        for name in self.SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self.previous[number] = signal.signal(number, self._handle)
        early = _signals.take()  # sent while contsnap run was still starting the script
        if early is not None:
            self._handle(early, None)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: types.FrameType | None) -> None:
        name = signal.Signals(number).name
        if self.requested is not None:
            self.say(f"contsnap: {name} again: aborting now; the last checkpoint on disk stays")
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(128 + number)
        self.requested = number
        self.say(f"contsnap: {name}: saving at the next safe point (send it again to abort)")


class _Job:
    """One run of [`run`][contsnap.run]: the generator, its step count and its files."""

    def __init__(
        self,
        files: Checkpoints,
        key: bytes | str | None,
        every: float,
        name: str,
        genfunc: Callable[..., Any] | None = None,
    ) -> None:
        self.files = files
        self.key = key
        self.every = every
        self.name = name
        self.steps = 0
        #: how many checkpoints of this job were written; signed, so a rollback shows
        self.generation = 0
        self.gen: Any = None
        self.last_save: float | None = None
        #: the generation file it resumed from (an older one when the newest did not verify)
        self.resumed_from = files.path
        self.started = time.monotonic()
        self.script = _script_meta(genfunc)

    def save(self) -> None:
        payload, captured, _refs = to_payload(self.gen)
        self._write(payload, _codec.frames_of(self.gen, captured), {})

    def save_result(self, result: Any) -> bool:
        """Record that the job finished with ``result`` (False if it cannot be saved)."""
        try:
            payload, _captured, _refs = to_payload(result)
        except CheckpointError as exc:
            warnings.warn(
                f"the result of {self.name} cannot be saved ({exc}); its checkpoints are removed",
                stacklevel=3,
            )
            self.files.clear()
            return False
        self._write(payload, [], {"finished": True, "result_type": type(result).__qualname__})
        return True

    #: the signed kind of the checkpoints, and the identity they are bound to
    kind = "job"

    @property
    def identity(self) -> str:
        return self.name

    def record(self) -> dict[str, Any]:
        """More fields for the job record of each checkpoint (a subclass's own state)."""
        return {}

    def _write(self, payload: bytes, frames: list[Any], extra: dict[str, Any]) -> None:
        self.generation += 1
        job = {
            "name": self.name,
            "steps": self.steps,
            "generation": self.generation,
            "every": self.every,
            "pid": os.getpid(),
            **self.script,
            **self.record(),
            **self.files.binding(),
            **extra,
        }
        data = _codec.encode_payload(
            payload, frames, kind=self.kind, identity=self.identity, meta={"job": job}, key=self.key
        )
        self.files.save(data)
        self.last_save = time.monotonic()


def _job_name(genfunc: Callable[..., Any]) -> str:
    module = getattr(genfunc, "__module__", None) or "?"
    return f"{module}:{getattr(genfunc, '__qualname__', repr(genfunc))}"


def run(
    genfunc: Callable[..., Any],
    /,
    *args: Any,
    checkpoint: str | os.PathLike[str] = _UNSET,
    every: float = _UNSET,
    keep: int = _UNSET,
    key: bytes | str | None = None,
    allow_unsigned: bool | None = None,
    store: Store | None = None,
    lease: float = 30.0,
    wait: float = 0.0,
    progress: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Run the checkpointable generator function ``genfunc(*args, **kwargs)`` to its end.

    If ``checkpoint`` (default ``"job.ckpt"``) holds a checkpoint of the same
    job, the job resumes from it instead of starting over: the newest
    generation whose signature verifies is used, falling back to an older one
    (with a warning naming the rollback) when the newest is damaged. A
    checkpoint of another job, one signed with a key not in effect, or a file
    someone else could have written is refused with a [`CheckpointError`][contsnap.CheckpointError].
    Every ``yield`` is a safe point: the job is saved there once ``every``
    seconds (default 15) have passed since the last save, keeping ``keep``
    generations (default 3). On SIGTERM, SIGINT or SIGHUP it saves at the next
    safe point, detaches the generator and raises [`RolledOut`][contsnap.RolledOut] (exit
    status 75); a second signal aborts at once.

    Returns what the generator returns. That result is saved as the job's last
    checkpoint, so running the job again returns it at once instead of
    redoing the work (even when the process was killed just after the job
    ended); remove the checkpoint file to start the job afresh. A result that
    cannot be serialised is not kept (the files are removed, with a warning).
    If the generator raises, the files stay, so the last good state can be
    inspected or resumed. ``key`` signs and verifies the checkpoints (default: the
    key in effect, see [`contsnap.configure`][contsnap.configure]); ``allow_unsigned`` accepts an
    unsigned checkpoint (from an older contsnap); ``progress`` shows a status line
    (default: when stderr is a terminal).

    With ``store`` (any `contsnap.stores.Store`) the checkpoints are kept
    there instead, under the key ``checkpoint`` (default ``job:MODULE:QUALNAME``),
    so that another process or machine can resume the job. Only one process runs
    a job at a time: a second one raises `contsnap.stores.LeaseHeldError`
    naming the holder's pid and host, or waits up to ``wait`` seconds for it. With
    a store that is a lease of ``lease`` seconds, renewed at the job's safe
    points; a runner that loses it (a step longer than the lease, a frozen
    process) stops with [`TakenOverError`][contsnap.TakenOverError] and writes nothing more.
    """
    RUN_CALLS[0] += 1
    checkpoint = _OVERRIDES.get("checkpoint", checkpoint)
    every = _OVERRIDES.get("every", every)
    keep = _OVERRIDES.get("keep", keep)
    allow_unsigned = _OVERRIDES.get("allow_unsigned", allow_unsigned)
    every = 15.0 if every is _UNSET else float(every)
    keep = 3 if keep is _UNSET else int(keep)
    if not every > 0:
        raise ValueError(f"every must be a positive number of seconds, not {every!r}")
    if not callable(genfunc) or isinstance(genfunc, types.GeneratorType):
        raise TypeError(
            "contsnap.run() takes the @checkpointable generator *function* and its "
            f"arguments, run(main, ...), not {type(genfunc).__name__} (a generator object "
            "cannot be started again after a restart)"
        )
    name = _job_name(genfunc)
    files: Checkpoints
    if store is not None:
        store_key = _store_key(name) if checkpoint is _UNSET else os.fspath(checkpoint)
        files = StoreCheckpoints(store, store_key, keep, lease)
    else:
        files = CheckpointFiles("job.ckpt" if checkpoint is _UNSET else checkpoint, keep)
        check_writable(files.path)
    job = _Job(files, key, every, name, genfunc)
    with files.hold(wait=wait):
        loaded = files.load(
            kinds=("job",), identity=job.name, key=key, allow_unsigned=allow_unsigned
        )
        if loaded is not None and _finished(loaded):
            _check_resumable(loaded, genfunc, job.name)
            _say_finished(loaded, progress)
            return loaded.obj
        if loaded is not None:
            job.gen = _check_resumable(loaded, genfunc, job.name)
            _resume_from(job, loaded)
        else:
            job.gen = genfunc(*args, **kwargs)
            if info_of(job.gen) is None or not isinstance(job.gen, types.GeneratorType):
                raise TypeError(
                    f"contsnap.run() needs a @checkpointable generator function; "
                    f"{job.name} returned {type(job.gen).__name__}"
                )
        return _drive(job, resumed=loaded is not None, progress=progress)


def _store_key(name: str) -> str:
    """A store key for the job ``module:qualname`` (``<locals>`` and the like spelled out)."""
    return "job:" + re.sub(r"[^A-Za-z0-9_.:@=+\-]", "_", name)[:190]


def _finished(loaded: Loaded) -> bool:
    job = loaded.meta.get("job")
    return isinstance(job, dict) and bool(job.get("finished"))


def _say_finished(loaded: Loaded, progress: bool | None) -> None:
    job = loaded.meta["job"]
    with _Progress(str(job.get("name")), progress) as shown:
        shown.say(
            f"contsnap: {job.get('name')} already finished ({loaded.path} holds its result, "
            f"after {job.get('steps', 0):,} steps); remove that file to run it again"
        )


def _check_resumable(loaded: Loaded, genfunc: Callable[..., Any], name: str) -> Any:
    gen = loaded.obj
    saved = loaded.meta.get("job", {}).get("name")
    if _finished(loaded):
        if saved != name:
            raise CheckpointError(
                f"{loaded.path} holds the result of {saved}, not of {name}; "
                "remove it or pass another checkpoint= to start this job"
            )
        return gen
    info = info_of(gen)
    if info is None or not isinstance(gen, types.GeneratorType):
        raise CheckpointError(f"{loaded.path} does not hold a job's generator")
    wanted = getattr(genfunc, "__qualname__", None)
    if info.qualname != wanted and saved != name:
        raise CheckpointError(
            f"{loaded.path} holds a run of {saved or info.qualname}, not of {name}; "
            "remove it or pass another checkpoint= to start this job"
        )
    return gen


def resume_file(
    checkpoint: str | os.PathLike[str],
    *,
    key: bytes | str | None = None,
    allow_unsigned: bool | None = None,
    progress: bool | None = None,
) -> Any:
    """Continue the job saved in ``checkpoint`` without its script (``contsnap resume``)."""
    files = CheckpointFiles(checkpoint, int(_OVERRIDES.get("keep", 3)))
    with files.hold():
        return _resume_loaded(files, key, allow_unsigned, progress)


def _resume_loaded(
    files: CheckpointFiles, key: bytes | str | None, allow_unsigned: bool | None, progress: Any
) -> Any:
    loaded = files.load(kinds=("job",), key=key, allow_unsigned=allow_unsigned)
    if loaded is None:
        raise FileNotFoundError(f"no checkpoint at {files.path}")
    if _finished(loaded):
        _say_finished(loaded, progress)
        return loaded.obj
    job_meta = loaded.meta["job"]
    job = _Job(files, key, float(_OVERRIDES.get("every", job_meta.get("every", 15.0))), "")
    job.name = str(loaded.meta.get("identity") or job_meta.get("name"))
    # the next checkpoints say how to run the job as the first one did, not as
    # ``contsnap resume`` (which would then resume itself)
    job.script = {field: job_meta.get(field) for field in PLAN_FIELDS}
    job.gen = loaded.obj
    _resume_from(job, loaded)
    return _drive(job, resumed=True, progress=progress)


def _resume_from(job: _Job, loaded: Loaded) -> None:
    """Take up the job where ``loaded`` left it: counters, and its output files cut back."""
    job_meta = loaded.meta.get("job")
    if not isinstance(job_meta, dict):
        raise SnapshotCorruptError(f"{loaded.path}: a job checkpoint without its job record")
    job.steps = _count(job_meta.get("steps"))
    job.generation = _count(job_meta.get("generation"))
    job.last_save = time.monotonic()
    job.resumed_from = loaded.path
    truncate(loaded.outputs)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _drive(job: _Job, *, resumed: bool, progress: bool | None) -> Any:
    gen = job.gen
    with _Progress(job.name, progress) as shown, _Signals(shown.say) as signals:
        if resumed:
            shown.say(
                f"contsnap: resuming {job.name} from {job.resumed_from} "
                f"after {job.steps:,} steps ({_where(gen)})"
            )
        while True:
            try:
                value = gen.send(None)
            except StopIteration as done:
                # the result is the job's last checkpoint: a run killed after this
                # point, before its caller used the result, gets it back unchanged
                try:
                    job.save_result(done.value)
                except OSError as exc:
                    raise _save_failed(job, exc, "the job finished, but its result") from exc
                return done.value
            if isinstance(value, Effect):
                where = _where(gen)
                _api.detach(gen)  # its state is in the last checkpoint; nothing runs twice
                raise CheckpointError(
                    f"{job.name} yielded contsnap.effect({value.name!r}) in {where}, but "
                    "contsnap.run() has no outbox to deliver it: effects are delivered by "
                    "durable Celery tasks (contsnap.integrations.celery.durable_task); under "
                    "contsnap.run(), call the outside world in the step itself (it may run "
                    "again after a crash: make it idempotent)"
                )
            job.steps += 1
            now = time.monotonic()
            _heartbeat(job)
            if signals.requested is not None:
                _save(job)
                where = _where(gen)
                _api.detach(gen)
                shown.say(
                    f"contsnap: rolled out {job.name} after {job.steps:,} steps, "
                    f"paused in {where}; saved to {job.files.path}. "
                    "Run it again (or `contsnap resume FILE`) to continue."
                )
                raise RolledOut(job.files.path, job.steps, where)
            # the first safe point of a fresh job saves at once: a kill before the first
            # autosave would otherwise start over and repeat all its output so far
            if job.last_save is None or now - job.last_save >= job.every:
                _save(job)
            shown.update(job.steps, job.last_save, value, now)


def _save(job: _Job) -> None:
    """Save at a safe point; a failed write stops the job here, detached, with advice.

    The generator is detached, not closed: its ``finally`` blocks run once, in the
    process that resumes it from the last good checkpoint, never here as well.
    """
    try:
        job.save()
    except TakenOverError:
        _api.detach(job.gen)  # the job goes on where its lease is now
        raise
    except OSError as exc:
        where = _where(job.gen)
        _api.detach(job.gen)
        raise _save_failed(job, exc, f"the job stopped in {where}; its state") from exc


def _heartbeat(job: _Job) -> None:
    """Keep the job's lease (store-backed checkpoints); lost, the job stops detached."""
    try:
        job.files.heartbeat()
    except TakenOverError:
        _api.detach(job.gen)
        raise


def _save_failed(job: _Job, exc: OSError, what: str) -> CheckpointError:
    return CheckpointError(
        f"cannot save a checkpoint of {job.name} to {job.files.path}: "
        f"{exc.strerror or exc} ({type(exc).__name__}); {what} after step {job.steps:,} "
        "is not saved, the last good checkpoint is kept. Free some space or make the "
        "directory writable (or pass another checkpoint=), then run the job again: it "
        "resumes from that checkpoint"
    )
