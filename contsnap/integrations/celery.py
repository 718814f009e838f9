"""Durable Celery tasks: a job killed on one worker resumes from its checkpoint on another.

Celery redelivers the task of a dead worker (with ``acks_late`` and
``task_reject_on_worker_lost``) but the new worker starts it from scratch.
Here the task is a ``@contsnap.checkpointable`` generator function whose
checkpoints live in a `contsnap.stores.Store` under a lease with a fencing
token, so the worker that gets the task resumes it where the last checkpoint
left it, and never runs a job that another live worker owns:

- `configure` sets up the app: late acks, a short broker visibility timeout,
  prefetch 1, and a drain hook so that a warm shutdown rolls the job out at
  its next safe point and requeues it.
- `durable_task` turns the generator function into a `DurableTask`;
  ``task.start(*args, job_id=...)`` runs it once per job id.
- ``yield contsnap.effect(name, payload)`` puts an effect in the job's outbox,
  written in the same atomic store write as the next checkpoint and handed to
  the handler registered for ``name`` after that write, at least once, with the
  idempotency key ``JOB_ID/SEQUENCE``.

The job's checkpoints are signed with kind ``"task"`` and bound to the task's name
and job id: a local `contsnap.run` checkpoint (kind ``"job"``) cannot be fed to a
task, nor one job's checkpoint to another job.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import inspect
import os
import re
import signal
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, Task, signals  # type: ignore[import-untyped]
from celery.exceptions import Ignore  # type: ignore[import-untyped]

from contsnap import _api, _codec
from contsnap._checkpoints._files import (
    CheckpointFallbackWarning,
    Loaded,
)
from contsnap._checkpoints._stores import StoreCheckpoints, TakenOverError
from contsnap._durable._run import (
    _check_resumable,
    _count,
    _finished,
    _heartbeat,
    _Job,
    _resume_from,
    _save,
)
from contsnap._effects import Effect
from contsnap._errors import CheckpointError
from contsnap._snapshot import info_of
from contsnap.stores import FencedError, LeaseHeldError, Store, StoreError

__all__ = ["DurableTask", "PoisonedJobError", "configure", "durable_task", "step_key"]

#: the signed kind of a task's checkpoints, effects and attempt counter
KIND = "task"

#: the signal the worker's main process sends its pool children to drain them
DRAIN_SIGNAL = signal.SIGUSR2


class PoisonedJobError(CheckpointError):
    """A job crashed its worker too often, even from an older checkpoint; it is not run again.

    Its checkpoints stay in the store (``task.status(job_id)`` shows where it is);
    delete them, or start the job under another ``job_id``, to run it afresh.
    """


@dataclass
class _Spec:
    """How one durable task runs its jobs (what `durable_task` was given)."""

    genfunc: Callable[..., Any]
    store_or_factory: Store | Callable[[], Store]
    every: float
    keep: int
    lease: float
    key: bytes | str | None
    effects: Mapping[str, Callable[[Any, str], Any]]
    max_crashes: int
    name: str = ""
    _opened: tuple[int, Store] | None = None

    @property
    def store(self) -> Store:
        """The store, opened once per process when given as a factory (pool children fork)."""
        if isinstance(self.store_or_factory, Store) or hasattr(self.store_or_factory, "put_many"):
            return self.store_or_factory  # type: ignore[return-value]
        if self._opened is None or self._opened[0] != os.getpid():
            self._opened = (os.getpid(), self.store_or_factory())
        return self._opened[1]


class _Drain:
    """Set by the drain signal (or SIGTERM during a job): roll out at the next safe point."""

    requested: int | None = None
    #: this process is a prefork pool child (its SIGTERM is ours while a job runs)
    in_pool_child = False

    @classmethod
    def handle(cls, number: int, frame: types.FrameType | None) -> None:
        cls.requested = number


def configure(
    app: Celery,
    *,
    visibility_timeout: float = 60.0,
    restore_interval: float = 1.0,
    drain_timeout: float = 5.0,
) -> Celery:
    """Set ``app`` up for durable tasks; returns it.

    Late acks and ``task_reject_on_worker_lost`` (a task whose worker died is
    redelivered, not lost), prefetch 1 (a worker holds no job it is not running),
    a Redis broker ``visibility_timeout`` of ``visibility_timeout`` seconds swept
    every ``restore_interval`` seconds (a whole worker's death is noticed that
    fast, even if the worker that died held the sweep's lock; keep it longer than
    the tasks' lease), and a drain hook: on a warm
    shutdown (SIGTERM) or a cold one (SIGQUIT) each running job is rolled out at its
    next safe point and requeued, so another worker resumes it at once. A cold
    shutdown gives the jobs ``drain_timeout`` seconds (Celery's soft shutdown) to
    get there, and then stops the worker; a job still in a step is redelivered
    and resumes from its last checkpoint.
    """
    conf = app.conf
    conf.task_acks_late = True
    conf.task_reject_on_worker_lost = True
    conf.worker_prefetch_multiplier = 1
    conf.worker_soft_shutdown_timeout = float(drain_timeout)
    options = dict(conf.broker_transport_options or {})
    options["visibility_timeout"] = float(visibility_timeout)
    options["unacked_restore_interval"] = float(restore_interval)
    options["unacked_restore_throttle"] = 1
    # kombu sweeps under a Redis lock that lives 300 s: a worker killed while it held the
    # lock would stop every other worker's sweep, and so the redelivery of the dead
    # worker's jobs, for five minutes. A sweep takes milliseconds, and two at once are
    # harmless (each message is restored in a transaction that watches it): a short lock.
    options["unacked_mutex_expire"] = max(1.0, 2 * float(restore_interval))
    conf.broker_transport_options = options
    signals.worker_process_init.connect(
        _install_drain_handler, weak=False, dispatch_uid="contsnap-drain-child"
    )
    signals.worker_shutting_down.connect(
        _drain_children, weak=False, dispatch_uid="contsnap-drain-main"
    )
    signals.worker_ready.connect(
        _drain_before_cold_shutdown, weak=False, dispatch_uid="contsnap-drain-cold"
    )
    return app


def _install_drain_handler(**_: Any) -> None:
    """In each pool child: the drain signal asks the running job to roll out."""
    _Drain.in_pool_child = True
    signal.signal(DRAIN_SIGNAL, _Drain.handle)


def _drain_before_cold_shutdown(**_: Any) -> None:
    """In the worker's main process: SIGQUIT and SIGINT drain the children first.

    Celery's cold shutdown handler waits out the soft shutdown before it sends
    ``worker_shutting_down``; the jobs must hear of it at once to roll out in time.
    """
    for name in ("SIGQUIT", "SIGINT"):
        number = getattr(signal, name)
        previous = signal.getsignal(number)
        if not callable(previous) or getattr(previous, "contsnap_drain", False):
            continue

        def chained(signum: int, frame: Any, previous: Callable[..., Any] = previous) -> Any:
            _drain_children()
            return previous(signum, frame)

        chained.contsnap_drain = True  # type: ignore[attr-defined]
        with contextlib.suppress(ValueError):  # not the main thread: Celery's own handlers stay
            signal.signal(number, chained)


def _drain_children(**_: Any) -> None:
    """In the worker's main process, at shutdown: tell every pool child to roll its job out."""
    from billiard.process import active_children  # type: ignore[import-untyped]

    _Drain.requested = DRAIN_SIGNAL  # jobs run by this process (solo and thread pools)
    for child in active_children():
        with contextlib.suppress(OSError):
            os.kill(child.pid, DRAIN_SIGNAL)


def durable_task(
    app: Celery,
    *,
    store: Store | Callable[[], Store],
    every: float = 15.0,
    keep: int = 3,
    lease: float = 30.0,
    key: bytes | str | None = None,
    effects: Mapping[str, Callable[[Any, str], Any]] | None = None,
    max_crashes: int = 3,
    name: str | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], DurableTask]:
    """Make a ``@contsnap.checkpointable`` generator function a durable Celery task.

    The job saves a checkpoint to ``store`` every ``every`` seconds at a ``yield``
    (keeping ``keep`` generations) and holds a lease of ``lease`` seconds on it,
    renewed at its safe points. ``store`` is a store, or a function that opens one,
    called once in each process: for a store whose connection must not cross the
    fork of the pool children, such as `contsnap.stores.PostgresStore`.
    ``effects`` maps an effect's name to its handler, called as
    ``handler(payload, idempotency_key)``. After ``max_crashes`` worker deaths from
    the same checkpoint the job falls back to the generation before it, and after
    as many more it is poisoned (`PoisonedJobError`). ``options`` go to
    ``app.task``; the task's ``name`` defaults to ``module.qualname``.
    """
    if not every > 0:
        raise ValueError(f"every must be a positive number of seconds, not {every!r}")
    if keep < 1 or max_crashes < 1:
        raise ValueError(f"keep and max_crashes must be at least 1, not {keep}, {max_crashes}")

    def wrap(genfunc: Callable[..., Any]) -> DurableTask:
        if not callable(genfunc) or isinstance(genfunc, types.GeneratorType):
            raise TypeError(
                "durable_task() decorates a @contsnap.checkpointable generator function, "
                f"not {type(genfunc).__name__}"
            )
        task_name = name or f"{genfunc.__module__}.{genfunc.__qualname__}"
        spec = _Spec(
            genfunc, store, float(every), int(keep), float(lease), key,
            dict(effects or {}), int(max_crashes), task_name,
        )  # fmt: skip

        def run(self: DurableTask, *args: Any, **kwargs: Any) -> Any:
            return _execute(spec, self, args, kwargs)

        run.__doc__ = genfunc.__doc__
        # bounces off a live lease and requeues after a drain are retries: never run out
        options.setdefault("max_retries", None)
        task: DurableTask = app.task(
            bind=True,
            base=DurableTask,
            name=task_name,
            acks_late=True,
            reject_on_worker_lost=True,
            contsnap_spec=spec,
            **options,
        )(run)
        return task

    return wrap


class DurableTask(Task):  # type: ignore[misc]
    """A Celery task whose jobs resume from their last checkpoint (made by `durable_task`)."""

    contsnap_spec: _Spec

    def start(self, *args: Any, job_id: str, **kwargs: Any) -> Any:
        """Send the job ``job_id``; its ``AsyncResult`` (task id = ``job_id``).

        The same ``job_id`` never runs twice: a second start while the job runs is
        bounced by its lease, and once it is done returns the stored result.
        """
        if not isinstance(job_id, str) or not job_id:
            raise TypeError(f"start() needs job_id=, a non-empty str, not {job_id!r}")
        return self.apply_async(args, kwargs, task_id=job_id)

    def stored_result(self, job_id: str) -> Any:
        """The result of the finished job ``job_id``, read from the store.

        Raises `LookupError` if the job has no checkpoint or has not finished.
        """
        spec = self.contsnap_spec
        files = _TaskCheckpoints(spec.store, _task_key(spec.name, job_id), spec.keep, spec.lease)
        loaded = files.load(kinds=(KIND,), identity=_identity(spec, job_id), key=spec.key)
        if loaded is None or not _finished(loaded):
            state = "no checkpoint" if loaded is None else "not finished"
            raise LookupError(f"job {job_id!r} of {spec.name} has {state} in {spec.store.url}")
        return loaded.obj

    def status(self, job_id: str) -> dict[str, Any]:
        """Where the job ``job_id`` is, from the store: progress, lease, attempts, effects.

        Reads the checkpoint's signed metadata only (nothing is unpickled), the
        job's attempt record, its live lease (``None`` when free; ``ttl`` is the
        seconds left) and the effects committed but not yet delivered
        (``effects_pending``); an empty dict when the job has no checkpoint.
        """
        spec = self.contsnap_spec
        files = _TaskCheckpoints(spec.store, _task_key(spec.name, job_id), spec.keep, spec.lease)
        identity = _identity(spec, job_id)
        found = files.verified(kinds=(KIND,), identity=identity, key=spec.key)
        book = _AttemptBook(files, identity, spec.key)
        attempts = book.read()
        if found is None and attempts.started_at is None:
            return {}
        record = {} if found is None else found.meta.get("job", {})
        frames = [] if found is None else found.meta.get("frames", [])
        lease = spec.store.current_lease(files.key)
        first = _count(record.get("outbox_from"))
        pending = [
            n
            for n in range(first, _count(record.get("next_effect")))
            if spec.store.version(files.effect_key(n)) is not None
        ]
        return {
            "job_id": job_id,
            "task": spec.name,
            "store": spec.store.url,
            "key": files.key,
            "finished": bool(record.get("finished")),
            "steps": record.get("steps"),
            "generation": record.get("generation"),
            "saved_at": None if found is None else found.meta.get("created_at"),
            "saved_by_pid": record.get("pid"),
            "where": [f"{f.get('qualname')} at {f.get('file')}:{f.get('line')}" for f in frames],
            "effects": record.get("next_effect"),
            "effects_pending": pending,
            "lease": None if lease is None else dataclasses.asdict(lease),
            "owner": attempts.owner,
            "attempt_started_at": attempts.started_at,
            "running": attempts.running,
            "crashes": attempts.crashes,
            "fell_back": attempts.fell_back,
            "poisoned": attempts.poisoned,
            "history": list(attempts.history),
        }


def _identity(spec: _Spec, job_id: str) -> str:
    return f"{spec.name}/{job_id}"


#: the ends of the keys kept next to a job's checkpoint (`_AttemptBook`, the outbox), and
#: of a hashed key: a plain key never ends so
_SIDE_KEY = re.compile(r"(\.attempts|\.fx\.\d+|-[0-9a-f]{16})$")


def _task_key(task_name: str, job_id: str) -> str:
    """The job's store key: readable when the names allow, else shortened with a hash."""
    raw = f"{task_name}:{job_id}"
    clean = re.sub(r"[^A-Za-z0-9_.:@=+\-]", "_", raw)
    # a job's own keys are KEY, KEY.attempts and KEY.fx.N: a job id ending like one of the
    # latter (or like a hashed key) would name another job's, so it gets the hashed form
    if clean == raw and len(clean) <= 160 and not _SIDE_KEY.search(clean):
        return "task:" + clean
    return f"task:{clean[:140]}-{hashlib.sha256(raw.encode()).hexdigest()[:16]}"


class _TaskCheckpoints(StoreCheckpoints):
    """A task's checkpoints, written together with the effects yielded since the last one."""

    def __init__(self, store: Store, key: str, keep: int, lease: float) -> None:
        super().__init__(store, key, keep, lease)
        #: effects yielded since the last checkpoint: sequence -> signed bytes
        self.outbox: dict[int, bytes] = {}
        #: effects written to the store and not yet delivered (sequence numbers)
        self.committed: list[int] = []

    def effect_key(self, sequence: int) -> str:
        return f"{self.key}.fx.{sequence}"

    def save(self, data: bytes) -> None:
        items = {self.key: data}
        items.update((self.effect_key(seq), blob) for seq, blob in self.outbox.items())
        try:
            self.store.put_many(items, keep=self.keep, lease=self.lease)
        except FencedError as exc:
            raise self._taken_over(exc) from exc
        self.committed.extend(sorted(self.outbox))
        self.outbox.clear()

    def delete_fenced(self, key: str) -> None:
        try:
            self.store.delete(key, lease=self.lease)
        except FencedError as exc:
            raise self._taken_over(exc) from exc


class _TaskJob(_Job):
    """One attempt at a task's job: `contsnap.run`'s job record plus the effect counters."""

    kind = KIND

    def __init__(self, files: _TaskCheckpoints, spec: _Spec, job_id: str) -> None:
        super().__init__(files, spec.key, spec.every, spec.name, spec.genfunc)
        self.task_files = files
        self.spec = spec
        self.job_id = job_id
        #: the sequence number of the next effect the job yields
        self.next_effect = 0
        #: every effect numbered below this was delivered
        self.delivered_below = 0

    @property
    def identity(self) -> str:
        return _identity(self.spec, self.job_id)

    def record(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "next_effect": self.next_effect,
            "outbox_from": self.delivered_below,
        }

    def take_over(self, loaded: Loaded) -> None:
        """Continue the effect numbering of ``loaded``; its undelivered effects are due."""
        record = loaded.meta.get("job", {})
        self.next_effect = _count(record.get("next_effect"))
        self.delivered_below = min(_count(record.get("outbox_from")), self.next_effect)
        self.task_files.committed = list(range(self.delivered_below, self.next_effect))

    def add(self, effect: Effect) -> None:
        if effect.name not in self.spec.effects:
            known = ", ".join(sorted(self.spec.effects)) or "none"
            raise CheckpointError(
                f"{self.name} yielded contsnap.effect({effect.name!r}, ...) at step "
                f"{self.steps:,}, but the task has no handler for {effect.name!r} "
                f"(handlers: {known}); pass effects={{{effect.name!r}: handler}} to durable_task"
            )
        sequence = self.next_effect
        self.next_effect += 1
        self.task_files.outbox[sequence] = _codec.encode(
            effect, kind=KIND, identity=f"{self.identity}/{sequence}", key=self.key
        )

    def deliver(self) -> None:
        """Hand every committed effect to its handler, then drop it from the outbox."""
        files = self.task_files
        while files.committed:
            sequence = files.committed[0]
            effect_key = files.effect_key(sequence)
            data = files.store.get(effect_key)
            if data is not None:
                try:
                    effect = _codec.decode(
                        data, kinds=(KIND,), identity=f"{self.identity}/{sequence}", key=self.key
                    ).obj
                except CheckpointError as exc:
                    raise type(exc)(
                        f"the outbox entry {effect_key!r} in {files.store.url} (effect "
                        f"{sequence} of the job) is refused, nothing was delivered: {exc}"
                    ) from None
                if not isinstance(effect, Effect):
                    raise CheckpointError(f"{files.path}: {effect_key} does not hold an effect")
                self.spec.effects[effect.name](effect.payload, f"{self.job_id}/{sequence}")
                files.delete_fenced(effect_key)
            files.committed.pop(0)
            self.delivered_below = sequence + 1


@dataclass
class _Attempts:
    """How a job's attempts went: kept signed next to its checkpoints, under its lease."""

    running: bool = False
    crashes: int = 0
    generation: int = -1
    fell_back: bool = False
    poisoned: bool = False
    history: list[str] = field(default_factory=list)
    #: who ran the last attempt (the lease's owner: pid and host) and when it began
    owner: str | None = None
    started_at: float | None = None


class _AttemptBook:
    """Reads and writes a job's `_Attempts` record (``<key>.attempts``)."""

    def __init__(self, files: _TaskCheckpoints, identity: str, key: bytes | str | None) -> None:
        self.files = files
        self.job_identity = identity
        self.key = key
        self.store_key = f"{files.key}.attempts"
        self.identity = f"{identity}/attempts"
        self.state = _Attempts()

    def read(self) -> _Attempts:
        data = self.files.store.get(self.store_key)
        if data is not None:
            try:
                decoded = _codec.decode(data, kinds=(KIND,), identity=self.identity, key=self.key)
            except CheckpointError as exc:
                raise type(exc)(
                    f"the attempt record {self.store_key!r} in {self.files.store.url} is refused: "
                    f"{exc}. It counts the job's crashes; delete that key to reset the count "
                    "(the job's checkpoints stay) if you trust the store"
                ) from None
            found = decoded.obj
            if isinstance(found, _Attempts):
                self.state = found
        return self.state

    def write(self) -> None:
        # the counters in the metadata too, so that contsnap inspect shows them without a key
        summary = {"attempts": dataclasses.asdict(self.state)}
        data = _codec.encode(
            self.state, kind=KIND, identity=self.identity, meta=summary, key=self.key
        )
        try:
            self.files.store.put(self.store_key, data, lease=self.files.lease)
        except FencedError as exc:
            raise self.files._taken_over(exc) from exc

    def ended(self) -> None:
        """The attempt ended without a crash (finished, rolled out, raised)."""
        self.state.running = False
        with contextlib.suppress(StoreError, TakenOverError):
            self.write()


def _generation(loaded: Loaded | None) -> int:
    return -1 if loaded is None else _count(loaded.meta.get("job", {}).get("generation"))


def _execute(spec: _Spec, task: DurableTask, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One delivery of the job: bounce off a live owner, or take the job up and drive it."""
    job_id = str(task.request.id)
    files = _TaskCheckpoints(spec.store, _task_key(spec.name, job_id), spec.keep, spec.lease)
    job = _TaskJob(files, spec, job_id)
    requeue = False
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(files.hold())
        except LeaseHeldError as held:
            # a duplicate delivery, or a redelivery before the dead owner's lease ran out:
            # come back when the lease would have expired
            delay = max(0.2, (held.expires_in or 0.0) + 0.2)
            raise task.retry(countdown=delay) from None
        book = _AttemptBook(files, job.identity, spec.key)
        attempts = book.read()
        if attempts.poisoned:
            raise _poisoned(spec, job_id, files, attempts)
        loaded = files.load(kinds=(KIND,), identity=job.identity, key=spec.key)
        if loaded is not None and _finished(loaded):
            job.take_over(loaded)
            try:
                job.deliver()  # the effects the finishing write committed, if not all delivered
            except TakenOverError:
                raise Ignore() from None  # another delivery took over; it delivers them
            return loaded.obj
        loaded = _count_attempt(spec, job_id, files, book, loaded)
        stack.enter_context(_drain_on_sigterm())
        try:
            result = _start_or_resume(job, loaded, args, kwargs)
        except _RolledOut:
            book.ended()
            requeue = True
        except TakenOverError:
            raise Ignore() from None  # the job goes on under its new owner; nothing to report
        except BaseException:
            if _lost(files):  # e.g. a store connection that broke while the owner was frozen
                raise Ignore() from None
            book.ended()
            raise
        else:
            with contextlib.suppress(StoreError, TakenOverError):
                files.delete_fenced(book.store_key)
            return result
    if requeue:  # after the lease is released, so the next worker takes the job at once
        raise task.retry(countdown=0)
    raise AssertionError("unreachable")  # pragma: no cover


def _lost(files: _TaskCheckpoints) -> bool:
    """Did this attempt lose the job's lease (so its error is not the job's to report)?

    An owner frozen past its lease can fail on waking in ways other than a refused
    write (a store connection closed meanwhile); the job goes on under its new owner,
    and this attempt's error must not become the job's result.
    """
    if files.lease is None:
        return False
    try:
        files.lease = files.store.renew(files.lease)
    except FencedError:
        return True
    except StoreError:
        return False  # the store is unreachable: the error is worth reporting
    return False


def _count_attempt(
    spec: _Spec, job_id: str, files: _TaskCheckpoints, book: _AttemptBook, loaded: Loaded | None
) -> Loaded | None:
    """Count a crash of the last attempt; fall back or poison after too many from one place."""
    attempts = book.state
    generation = _generation(loaded)
    if attempts.running:  # the last attempt neither finished nor rolled out: its worker died
        same = attempts.generation == generation
        attempts.crashes = attempts.crashes + 1 if same else 1
        attempts.history.append(f"crashed after checkpoint generation {attempts.generation}")
    else:
        attempts.crashes = 0
    if attempts.crashes >= spec.max_crashes:
        older = None
        if not attempts.fell_back and spec.keep > 1:
            files.skip = 1
            older = files.load(kinds=(KIND,), identity=book.job_identity, key=spec.key)
            files.skip = 0
        if older is None or _finished(older):
            attempts.poisoned = True
            attempts.running = False
            book.write()
            raise _poisoned(spec, job_id, files, attempts)
        warnings.warn(
            f"job {job_id!r} of {spec.name} crashed {attempts.crashes} times after checkpoint "
            f"generation {generation}; resuming from the one before (generation "
            f"{_generation(older)})",
            CheckpointFallbackWarning,
            stacklevel=2,
        )
        attempts.fell_back = True
        attempts.crashes = 0
        attempts.history.append(f"fell back to generation {_generation(older)}")
        loaded, generation = older, _generation(older)
    attempts.running = True
    attempts.generation = generation
    attempts.owner = None if files.lease is None else files.lease.owner
    attempts.started_at = time.time()
    book.write()
    return loaded


def _poisoned(
    spec: _Spec, job_id: str, files: _TaskCheckpoints, attempts: _Attempts
) -> PoisonedJobError:
    fallback = (
        "also after falling back to an older one"
        if attempts.fell_back
        else "and there is no older one to fall back to"
    )
    return PoisonedJobError(
        f"job {job_id!r} of {spec.name} is poisoned: its worker died {spec.max_crashes} times "
        f"in a row from the same checkpoint, {fallback} "
        f"({'; '.join(attempts.history[-6:])}). It is not run again; its checkpoints stay "
        f"under {files.key!r} in {spec.store.url} (task.status(job_id) says where it is). "
        "Fix the step that kills the worker, then delete those keys or start it under a "
        "new job_id"
    )


class _RolledOut(Exception):
    """The job was saved and detached on a drain request; it is to be requeued."""


@contextlib.contextmanager
def _drain_on_sigterm() -> Iterator[None]:
    """SIGTERM sent to the pool child itself (a whole process group) drains too.

    Only in a prefork child: in a solo pool the job runs in the worker's main
    process, whose SIGTERM is Celery's warm shutdown (which drains through the hook).
    """
    if not _Drain.in_pool_child or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _Drain.handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start_or_resume(
    job: _TaskJob, loaded: Loaded | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if loaded is not None:
        job.gen = _check_resumable(loaded, job.spec.genfunc, job.name)
        _resume_from(job, loaded)
        job.take_over(loaded)
        job.deliver()  # effects committed by the last owner that it did not deliver
    else:
        job.gen = job.spec.genfunc(*args, **kwargs)
        if info_of(job.gen) is None or not isinstance(job.gen, types.GeneratorType):
            raise TypeError(
                f"durable_task needs a @contsnap.checkpointable generator function; "
                f"{job.name} returned {type(job.gen).__name__}"
            )
    return _drive(job)


#: the job this thread is driving (for step_key)
_CURRENT: contextvars.ContextVar[_TaskJob | None] = contextvars.ContextVar(
    "contsnap_celery_job", default=None
)


def step_key(*parts: object) -> str:
    """An idempotency key for a direct call the running step makes: ``JOB_ID/step/N[/parts]``.

    A step that runs again after a crash (the steps since the last checkpoint do)
    gets the same key, so a service that deduplicates on it does the call once.
    """
    job = _CURRENT.get()
    if job is None:
        raise CheckpointError(
            "step_key() is called outside a durable task's step; call it from the "
            "generator of a @durable_task while a worker runs it"
        )
    return "/".join([job.job_id, "step", str(job.steps), *map(str, parts)])


def _drive(job: _TaskJob) -> Any:
    token = _CURRENT.set(job)
    try:
        return _drive_steps(job)
    except BaseException:
        # stopped by an error (a handler that raised, a failed write): detached, so
        # its finally blocks run once, where the job resumes, not here as well
        if inspect.getgeneratorstate(job.gen) == inspect.GEN_SUSPENDED:
            _api.detach(job.gen)
        raise
    finally:
        _CURRENT.reset(token)


def _drive_steps(job: _TaskJob) -> Any:
    gen = job.gen
    while True:
        try:
            value = gen.send(None)
        except StopIteration as done:
            # the result and the effects since the last checkpoint: one write, fenced
            if not job.save_result(done.value):
                raise CheckpointError(
                    f"the result of {job.name} (job {job.job_id!r}) cannot be saved"
                ) from None
            job.deliver()
            return done.value
        job.steps += 1
        if isinstance(value, Effect):
            job.add(value)
        _heartbeat(job)
        if _Drain.requested is not None:
            _save(job)
            _api.detach(gen)
            job.deliver()
            raise _RolledOut()
        now = time.monotonic()
        if job.last_save is None or now - job.last_save >= job.every:
            _save(job)
            job.deliver()
