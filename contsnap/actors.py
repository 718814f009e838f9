"""Actors: message-handling coroutines checkpointed as one consistent set, and supervised.

An actor is a checkpointable coroutine function with a mailbox::

    @contsnap.checkpointable
    async def counter(total):
        while True:
            msg = await actors.receive()        # a safe point
            if msg == "stop":
                return total
            total += msg

    system = actors.System("shop")
    ref = system.spawn(counter, 0, name="counter")
    ref.send(5)
    await system.checkpoint("shop.ckpt")         # every actor, mid-computation too
    ...
    system = await actors.System.restore("shop.ckpt")   # this or a new process

Every actor stops at its next safe point (``receive()``,
``contsnap.checkpoint()``, ``contsnap.sleep()``, a ``contsnap.Queue``, or a
checkpointable coroutine that reaches one) while the set is captured, and goes on
while the snapshot is signed and written; messages sent meanwhile wait in the
mailboxes. Supervisors restart crashed actors from their last good checkpoint or
afresh, with restart intensity, exponential backoff, and poisoned-state detection.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import gc
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _codec, _keys
from ._aio import Queue, QueueGet, detach_task, park, unpause
from ._checkpoints._files import CheckpointFiles, write_atomic
from ._errors import CheckpointError, NotCheckpointableError, SnapshotCorruptError
from ._migrate import old_lines
from ._registry import STATE
from ._resources import truncate
from ._runtime import is_detach
from ._snapshot import Batch, from_payload, prelude_bytes, to_payload

__all__ = [
    "ActorNotFoundError",
    "ActorRef",
    "Crash",
    "Supervisor",
    "SupervisorGaveUpError",
    "System",
    "receive",
    "self_ref",
]

#: format 2: the actors' states and start specifications name their functions by their
#: place in one table (``functions``), and each state the globals it uses by their place in
#: a prelude (``prelude``: the first ``n`` of them are put in the memo before the state is
#: read, ``n`` being the actor's ``prelude``). Format 1 (each state on its own) still loads
_FORMAT = "contsnap-actor-system/2"
_FORMATS = (_FORMAT, "contsnap-actor-system/1")

#: the systems of this process, by name: what an ActorRef resolves through
_SYSTEMS: dict[str, System] = {}
STATE.add(__name__, "_SYSTEMS", None, "the live actor systems, by name")
_CURRENT: contextvars.ContextVar[_Actor | None] = contextvars.ContextVar(
    "contsnap_actor", default=None
)


def _check_whole(whole: Any) -> None:
    """A verified actor-system checkpoint that is malformed (a bug, or hand-made) is named
    as such here, rather than failing later with a KeyError from inside contsnap."""

    def bad(what: str) -> SnapshotCorruptError:
        return SnapshotCorruptError(
            f"this actor-system checkpoint is malformed: {what}; it was signed by a key in "
            "effect, so it comes from a bug or was made by hand. Restore an older one"
        )

    if not isinstance(whole, dict) or whole.get("format") not in _FORMATS:
        raise bad(f"it holds {type(whole).__name__}, not a system of format {_FORMAT}")
    expected = {
        "name": str,
        "sequence": int,
        "actors": dict,
        "results": dict,
        "supervisors": list,
        "poisoned": dict,
    }
    for field_name, kind in expected.items():
        if not isinstance(whole.get(field_name), kind):
            raise bad(f"its {field_name!r} is missing or not a {kind.__name__}")
    for policy in whole["supervisors"]:
        if not isinstance(policy, dict) or not isinstance(policy.get("name"), str):
            raise bad("a supervisor's policy is not a mapping with a name")
    parts: dict[str, type | tuple[type, ...]] = {
        "state": (bytes, type(None)),
        "frames": list,
        "spec": bytes,
        "supervisor": (str, type(None)),
        "mailbox": list,
    }
    names = {policy["name"] for policy in whole["supervisors"]}
    for name, saved in whole["actors"].items():
        if not isinstance(saved, dict):
            raise bad(f"actor {name!r} is not a mapping")
        for part, kinds in parts.items():
            if part not in saved:
                raise bad(f"actor {name!r} has no {part!r}")
            if not isinstance(saved[part], kinds):
                raise bad(f"actor {name!r}'s {part!r} is a {type(saved[part]).__name__}")
        if saved["supervisor"] is not None and saved["supervisor"] not in names:
            raise bad(f"actor {name!r} names the unknown supervisor {saved['supervisor']!r}")
    for table, what in (
        ("functions", "[module, qualname, fingerprint, file]"),
        ("prelude", "[module, qualname]"),
    ):
        entries = whole.get(table, [])
        if not isinstance(entries, list) or not all(
            isinstance(entry, list) and all(isinstance(part, str) for part in entry)
            for entry in entries
        ):
            raise bad(f"its {table} table is not a list of {what}")
    longest = len(whole.get("prelude", []))
    for name, saved in whole["actors"].items():
        used = saved.get("prelude", 0)
        if type(used) is not int or not 0 <= used <= longest:
            raise bad(f"actor {name!r}'s prelude is not a length of the prelude table")


class ActorNotFoundError(LookupError):
    """An ActorRef names an actor that does not exist (any more) in this process."""

    __module__ = "contsnap.actors"


class SupervisorGaveUpError(RuntimeError):
    """A supervisor's children crashed more often than its restart intensity allows."""

    __module__ = "contsnap.actors"


class ActorRef:
    """The address of an actor: serialisable, and resolved by name when used.

    A restored system has the same name and the same actor names, so a ref
    saved anywhere (a message, another actor's locals) reaches the same actor
    after a restore, in this process or a new one.
    """

    __slots__ = ("name", "system")

    def __init__(self, system: str, name: str) -> None:
        self.system = system
        self.name = name

    def _actor(self) -> _Actor:
        system = _SYSTEMS.get(self.system)
        actor = system.actors.get(self.name) if system is not None else None
        if actor is None:
            where = "no such system" if system is None else "no such actor"
            raise ActorNotFoundError(
                f"actor {self.name!r} of system {self.system!r} is not here ({where} in this "
                "process: it ended, its system stopped, or it lived in another process)"
            )
        return actor

    def send(self, message: Any) -> None:
        """Put ``message`` in the actor's mailbox (it never waits)."""
        self._actor().mailbox.put_nowait(message)

    @property
    def alive(self) -> bool:
        try:
            actor = self._actor()
        except ActorNotFoundError:
            return False
        return actor.task is not None and not actor.task.done()

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorRef, (self.system, self.name))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and (other.system, other.name) == (
            self.system,
            self.name,
        )

    def __hash__(self) -> int:
        return hash((ActorRef, self.system, self.name))

    def __repr__(self) -> str:
        return f"ActorRef({self.system!r}, {self.name!r})"


class Mailbox(Queue):
    """An actor's queue. Saved by the name of its actor: its contents travel separately."""

    def __init__(self, system: str, actor: str, items: Any = ()) -> None:
        super().__init__(items)
        self.owner = (system, actor)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_mailbox, self.owner)

    def __repr__(self) -> str:
        return f"<mailbox of {self.owner[1]!r}: {len(self)} waiting>"


def _mailbox(system: str, actor: str) -> Mailbox:
    found = _SYSTEMS.get(system)
    if found is None or actor not in found.mailboxes:
        raise CheckpointError(f"the mailbox of actor {actor!r} of system {system!r} is not here")
    return found.mailboxes[actor]


def receive() -> QueueGet:
    """The next message of the current actor: ``msg = await receive()``, a safe point."""
    actor = _CURRENT.get()
    if actor is None:
        raise RuntimeError("receive() is awaited outside an actor: spawn the coroutine first")
    return actor.mailbox.get()


def self_ref() -> ActorRef:
    """The ref of the actor this is called from."""
    actor = _CURRENT.get()
    if actor is None:
        raise RuntimeError("self_ref() is called outside an actor")
    return ActorRef(actor.system.name, actor.name)


@dataclass
class _Spec:
    """How an actor starts fresh."""

    function: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class Crash:
    """One crash: which actor, the state it ran from, the error."""

    actor: str
    origin: str
    error: str
    at: float


class _Actor:
    def __init__(
        self, system: System, name: str, spec: _Spec, supervisor: str | None, origin: str
    ) -> None:
        self.system = system
        self.name = name
        self.spec = spec
        self.supervisor = supervisor
        self.origin = origin
        self.mailbox = system.mailboxes.setdefault(name, Mailbox(system.name, name))
        self.task: asyncio.Task[Any] | None = None
        #: set while the system ends the task on purpose (stop, one_for_all, detach)
        self.ending = False
        #: set once the system has recorded how the task ended (its done callback ran):
        #: a task can be done() a loop turn before that, with its result not yet recorded
        self.recorded = False


@dataclass
class Supervisor:
    """Restart policy for a group of actors (see
    [`System.supervisor`][contsnap.actors.System.supervisor])."""

    name: str
    strategy: str = "one_for_one"
    max_restarts: int = 3
    within: float = 5.0
    restart: str = "restore"
    poison_after: int = 2
    poison_within: float = 10.0
    backoff: float = 0.01
    max_backoff: float = 1.0
    parent: str | None = None
    poison_dir: str | None = None
    children: list[str] = field(default_factory=list)
    recent: collections.deque[float] = field(default_factory=collections.deque, repr=False)
    #: "actor@origin" of states that crashed too often, kept on disk for inspection
    poisoned: dict[str, str] = field(default_factory=dict)
    failed: BaseException | None = None

    def policy(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "name",
                "strategy",
                "max_restarts",
                "within",
                "restart",
                "poison_after",
                "poison_within",
                "backoff",
                "max_backoff",
                "parent",
                "poison_dir",
            )
        }


def _alone(
    states: dict[str, bytes], preludes: dict[str, int], names: list[list[str]]
) -> dict[str, bytes]:
    """Each state with the prelude it was made with in front of it: it loads alone."""
    made: dict[int, bytes] = {0: b""}
    alone = {}
    for name, state in states.items():
        used = preludes.get(name, 0)
        prelude = made.get(used)
        if prelude is None:
            prelude = made[used] = prelude_bytes(names[:used])
        alone[name] = prelude + state if prelude else state
    return alone


class _CollectorOff:
    """Python's cyclic garbage collector held off while a checkpoint blocks the event loop.

    The pause allocates a few objects per actor, nearly all freed before it ends; with the
    collector on, those allocations set off collections that walk every actor's objects
    again and again (the pause grew faster than the number of actors). Off, the objects
    freed by the end of the pause leave the collector's counts where they were: no work is
    left for later. Should the checkpoint let the loop run (actors still on their way to a
    safe point), the collector is on again meanwhile (`on`, then `off`).
    """

    def __init__(self) -> None:
        self.was_on = gc.isenabled()
        self.off()

    def off(self) -> None:
        if self.was_on:
            gc.disable()

    def on(self) -> None:
        if self.was_on:
            gc.enable()


async def _in_thread(call: Callable[[], bytes]) -> bytes:
    """``call()`` in a worker thread. A cancellation waits until it is done before it is
    raised: the thread cannot be stopped, and no other checkpoint may write the same files
    meanwhile (the system's lock stays held until then)."""
    context = contextvars.copy_context()
    job = asyncio.get_running_loop().run_in_executor(None, context.run, call)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(job)
        except asyncio.CancelledError:
            if not job.done():
                cancelled = True
                continue
            raise
        if cancelled:
            raise asyncio.CancelledError
        return result


class System:
    """A set of actors that is checkpointed, restored and stopped as one."""

    def __init__(self, name: str = "system") -> None:
        if name in _SYSTEMS:
            raise ValueError(f"a system named {name!r} is already running in this process")
        self.name = name
        self.actors: dict[str, _Actor] = {}
        self.mailboxes: dict[str, Mailbox] = {}
        self.supervisors: dict[str, Supervisor] = {}
        self.results: dict[str, Any] = {}
        self.errors: dict[str, BaseException] = {}
        self.crashes: list[Crash] = []
        #: every autosave that failed, oldest first (see `autosave`)
        self.save_errors: list[CheckpointError] = []
        #: the last checkpoints taken or restored here: (number, {actor: state bytes})
        self.history: collections.deque[tuple[int, dict[str, bytes]]] = collections.deque(maxlen=3)
        self.sequence = 0
        #: how long the last checkpoint stopped the actors, in seconds: from its start until
        #: the event loop could run them again (sealing and writing the file come after)
        self.last_pause: float | None = None
        #: the functions table and the prelude of the actors' states (see `_FORMAT`); both
        #: only grow, so every state in `history` stays loadable with them
        self._batch = Batch()
        self._specs: dict[str, bytes] = {}
        self._lock = asyncio.Lock()
        self._parked: set[str] = set()
        self._idle: asyncio.Event | None = None
        self._autosave: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._stopped = False
        self._restarting: set[asyncio.Task[None]] = set()
        _SYSTEMS[name] = self

    # ------------------------------------------------------------------ actors

    def supervisor(self, name: str, **policy: Any) -> Supervisor:
        """A supervisor for the actors spawned with ``supervisor=name``.

        ``strategy``: ``"one_for_one"`` restarts the crashed actor, ``"one_for_all"`` all its
        siblings too. ``restart``: ``"restore"`` from the last good checkpoint (falling back to
        older ones, then to a fresh start, when a state keeps crashing) or ``"fresh"``. More than
        ``max_restarts`` restarts ``within`` seconds make it give up: its children stop and it
        escalates to its ``parent`` supervisor, or the system fails
        ([`join`][contsnap.actors.System.join] raises
        [`SupervisorGaveUpError`][contsnap.actors.SupervisorGaveUpError]). Restarts wait ``backoff``
        seconds, doubling up to ``max_backoff``. A restored state that crashes ``poison_after``
        times within ``poison_within`` seconds is poisoned: it is written to ``poison_dir`` (if set)
        and not used again.
        """
        if name in self.supervisors:
            raise ValueError(f"supervisor {name!r} exists already")
        sup = Supervisor(name, **policy)
        if sup.strategy not in ("one_for_one", "one_for_all"):
            raise ValueError(f"strategy is one_for_one or one_for_all, not {sup.strategy!r}")
        if sup.restart not in ("restore", "fresh"):
            raise ValueError(f"restart is 'restore' or 'fresh', not {sup.restart!r}")
        if sup.parent is not None and sup.parent not in self.supervisors:
            raise ValueError(f"no parent supervisor {sup.parent!r}")
        self.supervisors[name] = sup
        return sup

    def spawn(
        self,
        function: Callable[..., Any],
        /,
        *args: Any,
        name: str | None = None,
        supervisor: str | Supervisor | None = None,
        **kwargs: Any,
    ) -> ActorRef:
        """Start ``function(*args, **kwargs)`` (a checkpointable coroutine) as an actor."""
        from ._marking._decorator import function_info

        if function_info(function) is None:
            raise TypeError(f"an actor is a @checkpointable coroutine function, not {function!r}")
        if self._stopped:
            raise RuntimeError(f"system {self.name!r} has stopped")
        name = name or f"{getattr(function, '__name__', 'actor')}-{len(self.actors) + 1}"
        if name in self.actors:
            raise ValueError(f"an actor named {name!r} exists already in {self.name!r}")
        sup_name = supervisor.name if isinstance(supervisor, Supervisor) else supervisor
        if sup_name is not None and sup_name not in self.supervisors:
            raise ValueError(f"no supervisor {sup_name!r}: create it with system.supervisor()")
        actor = _Actor(self, name, _Spec(function, args, kwargs), sup_name, "fresh")
        coro = function(*args, **kwargs)
        if not asyncio.iscoroutine(coro):
            raise TypeError(f"an actor is a coroutine function; {name} returned {coro!r}")
        self.actors[name] = actor
        if sup_name is not None:
            self.supervisors[sup_name].children.append(name)
        self._start(actor, coro)
        return ActorRef(self.name, name)

    def ref(self, name: str) -> ActorRef:
        if name not in self.actors:
            raise ActorNotFoundError(f"no actor {name!r} in system {self.name!r}")
        return ActorRef(self.name, name)

    def _start(self, actor: _Actor, coro: Any) -> None:
        context = contextvars.copy_context()
        context.run(_CURRENT.set, actor)
        loop = asyncio.get_running_loop()
        actor.ending = False
        actor.recorded = False
        task = context.run(loop.create_task, coro)
        task.set_name(f"{self.name}:{actor.name}")
        actor.task = task
        task.add_done_callback(functools.partial(self._ended, actor))
        if self._idle is not None:
            self._idle.clear()

    def _ended(self, actor: _Actor, task: asyncio.Task[Any]) -> None:
        if actor.task is not task:
            return
        actor.recorded = True
        if task.cancelled() or actor.ending:
            if not task.cancelled():
                task.exception()  # a detach or a cancel on purpose: retrieved
            self._check_idle()
            return
        error = task.exception()
        if error is None:
            self.results[actor.name] = task.result()
            self.actors.pop(actor.name, None)
        elif is_detach(error):
            pass
        else:
            self._crashed(actor, error)
        self._check_idle()

    def _check_idle(self) -> None:
        busy = any(a.task is not None and not a.recorded for a in self.actors.values())
        if not busy and not self._restarting and self._idle is not None:
            self._idle.set()

    # --------------------------------------------------------------- crashes

    def _crashed(self, actor: _Actor, error: BaseException) -> None:
        self.crashes.append(Crash(actor.name, actor.origin, repr(error), time.time()))
        sup = self.supervisors.get(actor.supervisor or "")
        if sup is None or self._stopped:
            self.errors[actor.name] = error
            self.actors.pop(actor.name, None)
            return
        job = asyncio.ensure_future(self._restart(sup, actor.name))
        self._restarting.add(job)
        job.add_done_callback(self._restart_done)

    def _restart_done(self, job: asyncio.Task[None]) -> None:
        self._restarting.discard(job)
        if not job.cancelled() and job.exception() is not None:
            self._fail(job.exception())  # type: ignore[arg-type]
        self._check_idle()

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        for actor in list(self.actors.values()):
            if actor.task is not None and not actor.task.done():
                actor.ending = True
                actor.task.cancel()
        if self._idle is not None:
            self._idle.set()

    async def _restart(self, sup: Supervisor, crashed: str) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        sup.recent.append(now)
        while sup.recent and sup.recent[0] < now - sup.within:
            sup.recent.popleft()
        if len(sup.recent) > sup.max_restarts:
            await self._give_up(sup, crashed)
            return
        delay = min(sup.max_backoff, sup.backoff * 2 ** (len(sup.recent) - 1))
        async with self._lock:  # a checkpoint waits for the restart: it includes the actor
            await asyncio.sleep(delay)  # restarts never spin
            if self._stopped:
                return
            names = [crashed] if sup.strategy == "one_for_one" else list(sup.children)
            for name in names:
                actor = self.actors.get(name)
                if name != crashed and actor is not None and actor.task is not None:
                    actor.ending = True
                    actor.task.cancel()
                    await asyncio.gather(actor.task, return_exceptions=True)
            number = self._restart_point(sup, crashed) if sup.restart == "restore" else None
            for name in names:
                actor = self.actors.get(name)
                if actor is not None:
                    self._restart_one(actor, number)

    def _restart_point(self, sup: Supervisor, crashed: str) -> int | None:
        """The newest checkpoint whose state of ``crashed`` is not poisoned (None: fresh)."""
        actor = self.actors[crashed]
        recent = [c for c in self.crashes if c.actor == crashed and c.origin == actor.origin]
        window = [c for c in recent if c.at >= time.time() - sup.poison_within]
        if actor.origin.startswith("checkpoint ") and len(window) >= sup.poison_after:
            self._poison(sup, actor, len(window))
        for number, states in reversed(self.history):
            if crashed in states and f"checkpoint {number}" not in self._poisoned(sup, crashed):
                return number
        return None

    def _poisoned(self, sup: Supervisor, actor: str) -> set[str]:
        return {origin for key, origin in sup.poisoned.items() if key.startswith(f"{actor}@")}

    def _poison(self, sup: Supervisor, actor: _Actor, crashes: int) -> None:
        number = int(actor.origin.split()[1])
        key = f"{actor.name}@{actor.origin}"
        if key in sup.poisoned:
            return
        sup.poisoned[key] = actor.origin
        kept = ""
        state = dict(self.history).get(number, {}).get(actor.name)
        if sup.poison_dir is not None and state is not None:
            os.makedirs(sup.poison_dir, exist_ok=True)
            file = f"{self.name}-{actor.name}-checkpoint{number}.ckpt"
            path = os.path.join(sup.poison_dir, file)
            meta = {
                "created_at": round(time.time(), 3),
                "frames": [],
                # the table the state names its functions by (as any snapshot's metadata)
                "functions": self._batch.functions.entries,
                "poisoned": {"system": self.name, "actor": actor.name, "checkpoint": number},
            }
            # a snapshot of the actor's coroutine: contsnap inspect / contsnap.loads read it
            write_atomic(path, _codec.encode_payload(state, [], kind="snapshot", meta=meta))
            kept = f"; kept in {path}"
        warnings.warn(
            f"actor {actor.name!r}: the state of checkpoint {number} crashed {crashes} times "
            f"within {sup.poison_within} s: poisoned, not used again{kept}",
            stacklevel=2,
        )

    def _restart_one(self, actor: _Actor, number: int | None) -> None:
        coro = None
        if number is not None:
            state = dict(self.history)[number].get(actor.name)
            if state is not None:
                coro = self._load_actor(actor.name, state)
                actor.origin = f"checkpoint {number}"
        if coro is None:
            coro = actor.spec.function(*actor.spec.args, **actor.spec.kwargs)
            actor.origin = "fresh"
        self._start(actor, coro)

    async def _give_up(self, sup: Supervisor, crashed: str) -> None:
        error = SupervisorGaveUpError(
            f"supervisor {sup.name!r} gave up: more than {sup.max_restarts} restarts within "
            f"{sup.within} s (last crash: {crashed!r}, "
            f"{next((c.error for c in reversed(self.crashes) if c.actor == crashed), '?')})"
        )
        sup.failed = error
        for name in sup.children:
            actor = self.actors.get(name)
            if actor is not None and actor.task is not None and not actor.task.done():
                actor.ending = True
                actor.task.cancel()
        parent = self.supervisors.get(sup.parent or "")
        if parent is None:
            raise error
        # escalate: the parent restarts the whole group afresh, counting one restart
        now = asyncio.get_running_loop().time()
        parent.recent.append(now)
        if len(parent.recent) > parent.max_restarts:
            await self._give_up(parent, crashed)
            return
        sup.recent.clear()
        sup.failed = None
        for name in sup.children:
            actor = self.actors.get(name)
            if actor is not None:
                self._restart_one(actor, None)

    # ---------------------------------------------------------- quiesce & co

    async def quiesce(self, actors: list[str] | None = None, *, timeout: float = 10.0) -> None:
        """Stop the actors (all, or those named) at their next safe point.

        Messages sent meanwhile wait in the mailboxes. [`resume`][contsnap.actors.System.resume]
        lets them go on. On timeout, ``NotCheckpointableError`` names the actors that did not arrive
        and where each waits; none stays stopped.
        """
        await self._park(actors, timeout, in_place=False)

    async def _park(
        self,
        actors: list[str] | None,
        timeout: float,
        *,
        in_place: bool,
        on_wait: Callable[[], object] | None = None,
    ) -> None:
        names = list(self.actors) if actors is None else list(actors)
        unknown = [n for n in names if n not in self.actors]
        if unknown:
            raise ActorNotFoundError(f"no actors {unknown} in system {self.name!r}")
        tasks = {
            n: t
            for n in names
            if n not in self._parked and (t := self.actors[n].task) is not None and not t.done()
        }
        await park(tasks, timeout=timeout, allow_finished=True, in_place=in_place, on_wait=on_wait)
        self._parked.update(n for n, t in tasks.items() if not t.done())

    def resume(self) -> None:
        """Let the quiesced actors go on."""
        self._release(set(self._parked))

    def _release(self, names: set[str]) -> None:
        for name in names:
            actor = self.actors.get(name)
            if actor is not None and actor.task is not None:
                unpause(actor.task)
        self._parked -= names

    async def checkpoint(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        keep: int = 3,
        key: bytes | str | None = None,
        timeout: float = 10.0,
    ) -> bytes:
        """Quiesce every actor, snapshot the whole system as one, and let them go on.

        The snapshot holds every actor's coroutine wherever it paused, every
        mailbox, the results so far and the supervision tree. The actors are
        stopped only while it is captured (``last_pause``); it is signed, and with
        ``path`` written atomically there (the last ``keep`` kept), in a thread while
        they go on. Returns the snapshot's bytes.
        """
        async with self._lock:
            return await self._checkpoint(path, keep, key, timeout, then_resume=True)

    async def _checkpoint(
        self,
        path: str | os.PathLike[str] | None,
        keep: int,
        key: bytes | str | None,
        timeout: float,
        *,
        then_resume: bool,
    ) -> bytes:
        # the key is found before the pause (reading a key file is no part of it), and a
        # wrong key= fails before any actor stops
        ring = _keys.resolve(key)
        signing = ring.signing_key if ring.keys else key
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        quiesced_before = set(self._parked)
        collector = _CollectorOff()
        try:
            # an actor waiting in receive() (or sleep()) is parked where it waits: no turn
            # of the event loop per actor, so the pause does not grow with them; a rollout
            # detaches the actors next: each must be parked in its safe point
            await self._park(None, timeout, in_place=then_resume, on_wait=collector.on)
            collector.off()
            try:
                payload, frames, meta = self._capture()
            finally:
                if then_resume:  # the actors the user quiesced stay quiesced
                    # the first thing the loop runs once this coroutine lets it: the end of
                    # the pause for every actor
                    loop.call_soon(self._pause_ended, started)
                    self._release(self._parked - quiesced_before)
        finally:
            collector.on()
        seal = functools.partial(self._seal_and_save, payload, frames, meta, signing, path, keep)
        if not then_resume:
            return seal()
        # the set is captured and the actors go on: it is signed (and written) meanwhile, in a
        # thread; the previous checkpoint file stays in place until this one is complete
        return await _in_thread(seal)

    def _pause_ended(self, started: float) -> None:
        self.last_pause = time.perf_counter() - started

    def _capture(self) -> tuple[bytes, list[dict[str, Any]], dict[str, Any]]:
        """The whole system pickled, while every actor is parked: its payload, the places its
        actors are paused at and the metadata to seal it with. Everything that may change
        once the actors go on is in the payload by the time this returns."""
        states: dict[str, bytes] = {}
        actors = {}
        last = self.history[-1][1] if self.history else {}
        # one record per place an actor is paused at (thousands of actors share a few),
        # the same dict object in every actor's list: pickled once
        places: dict[tuple[int, int], dict[str, Any]] = {}
        specs = self._specs
        saved = [(name, actor) for name, actor in self.actors.items() if actor.task is not None]
        running = [(name, t) for name, a in saved if (t := a.task) is not None and not t.done()]
        new_specs = [(name, actor.spec) for name, actor in saved if name not in specs]
        # one pickler, one functions table and one prelude for every actor's coroutine, each
        # still a payload of its own: an actor is restarted alone from it
        batch = self._batch
        payloads = batch.dump_each(task.get_coro() for _, task in running)
        frames_of: dict[str, list[dict[str, Any]]] = {}
        preludes: dict[str, int] = {}
        name = ""
        try:
            for name, _task in running:
                states[name], captured, preludes[name] = next(payloads)
                frames: list[dict[str, Any]] = []
                for f in captured.values():
                    info, label = f.info, f.label
                    place = places.get((id(info), label))
                    if place is None:
                        place = places[id(info), label] = {
                            "module": info.module,
                            "qualname": info.qualname,
                            "fingerprint": info.fingerprint,
                            "file": info.filename,
                            "line": info.line_of(label),
                        }
                    frames.append(place)
                frames_of[name] = frames
            # a specification is saved once and written with every checkpoint: it loads alone
            payloads = batch.dump_each((spec for _, spec in new_specs), prelude=False)
            for name, _spec in new_specs:
                specs[name] = next(payloads)[0]
        except NotCheckpointableError as exc:
            raise NotCheckpointableError(f"actor {name!r}: {exc}") from exc
        for name, actor in saved:
            if name not in frames_of and name in last:  # crashed, to be restarted: from there
                states[name] = last[name]
            actors[name] = {
                "state": states.get(name),
                "prelude": preludes.get(name, 0),
                "frames": frames_of.get(name, []),
                "spec": specs[name],
                "supervisor": actor.supervisor,
                "mailbox": list(actor.mailbox._items),
            }
        self.sequence += 1
        whole = {
            "format": _FORMAT,
            "name": self.name,
            "sequence": self.sequence,
            "functions": batch.functions.entries,
            "prelude": batch.prelude_names,
            "actors": actors,
            "results": self.results,
            "supervisors": [s.policy() for s in self.supervisors.values()],
            "poisoned": {s.name: dict(s.poisoned) for s in self.supervisors.values()},
        }
        try:
            payload = to_payload(whole)[0]
        except NotCheckpointableError as exc:
            raise NotCheckpointableError(f"system {self.name!r}: {exc}") from exc
        # a state in the history loads alone (a restart, a poisoned state written out)
        self.history.append((self.sequence, _alone(states, preludes, batch.prelude_names)))
        # every place an actor is paused at, once: loads() names each function whose
        # code changed, contsnap inspect / ls show where (file:line) and check the code
        unique = {
            (f["module"], f["qualname"], f["fingerprint"], f["file"], f["line"]): f
            for f in places.values()
        }
        meta = {
            "created_at": round(time.time(), 3),  # when it was taken, not sealed
            "actors": {"system": self.name, "sequence": self.sequence, "count": len(actors)},
        }
        return payload, list(unique.values()), meta

    def _seal_and_save(
        self,
        payload: bytes,
        frames: list[dict[str, Any]],
        meta: dict[str, Any],
        key: bytes | str | None,
        path: str | os.PathLike[str] | None,
        keep: int,
    ) -> bytes:
        data = _codec.encode_payload(
            payload, frames, kind="actor-system", identity=self.name, meta=meta, key=key
        )
        if path is not None:
            CheckpointFiles(path, keep).save(data)
        return data

    @classmethod
    async def restore(
        cls,
        source: str | os.PathLike[str] | bytes,
        *,
        key: bytes | str | None = None,
        name: str | None = None,
        allow_unsigned: bool | None = None,
    ) -> System:
        """Bring a checkpointed system back in the running event loop, and let it go on.

        The checkpoint's signature is verified and it must be an actor system's
        checkpoint (of the system ``name``, when given) before anything is unpickled;
        ``allow_unsigned`` accepts an unsigned one (from an older contsnap).
        """
        kinds = ("actor-system",)
        if isinstance(source, (bytes, bytearray, memoryview)):
            decoded = _codec.decode(
                source, kinds=kinds, identity=name, key=key, allow_unsigned=allow_unsigned
            )
            whole, outputs = decoded.obj, decoded.outputs
        else:
            loaded = CheckpointFiles(source).load(
                kinds=kinds, identity=name, key=key, allow_unsigned=allow_unsigned
            )
            if loaded is None:
                raise FileNotFoundError(f"no checkpoint at {os.fspath(source)}")
            whole, outputs = loaded.obj, loaded.outputs
        _check_whole(whole)
        system = cls(str(whole["name"]))
        try:
            system._load(whole)
        except BaseException:
            system._forget()
            raise
        truncate(outputs)  # the restored actors go on writing where they were saved
        return system

    def _load(self, whole: dict[str, Any]) -> None:
        self.sequence = int(whole["sequence"])
        # format 2: the table the states and specifications name their functions by
        self._batch = Batch(whole.get("functions", []))
        saved_states = {n: a["state"] for n, a in whole["actors"].items() if a["state"]}
        preludes = {n: a.get("prelude", 0) for n, a in whole["actors"].items()}
        alone = _alone(saved_states, preludes, whole.get("prelude", []))
        for policy in whole["supervisors"]:
            sup = self.supervisor(**policy)
            sup.poisoned.update(whole.get("poisoned", {}).get(sup.name, {}))
        self.results.update(whole["results"])
        for name, saved in whole["actors"].items():
            self.mailboxes[name] = Mailbox(self.name, name, saved["mailbox"])
        started = []
        states = {}
        for name, saved in whole["actors"].items():
            spec = from_payload(saved["spec"], functions=self._batch.functions.entries)
            if not isinstance(spec, _Spec):
                raise SnapshotCorruptError(
                    f"this actor-system checkpoint is malformed: actor {name!r}'s start "
                    f"specification is a {type(spec).__name__}; restore an older one"
                )
            actor = _Actor(self, name, spec, saved["supervisor"], f"checkpoint {self.sequence}")
            self._specs[name] = saved["spec"]
            if saved["state"] is None:  # crashed before any checkpoint: starts afresh
                actor.origin = "fresh"
                started.append((actor, spec.function(*spec.args, **spec.kwargs)))
                continue
            states[name] = alone[name]
            started.append((actor, self._load_actor(name, alone[name], saved["frames"])))
        for actor, coro in started:
            self.actors[actor.name] = actor
            if actor.supervisor is not None:
                self.supervisors[actor.supervisor].children.append(actor.name)
            self._start(actor, coro)
        self.history.append((self.sequence, states))

    def _load_actor(self, name: str, state: bytes, frames: list[Any] | None = None) -> Any:
        try:
            with old_lines(frames or []):  # where it was paused, for migrations
                return from_payload(state, functions=self._batch.functions.entries)
        except CheckpointError as exc:
            raise type(exc)(f"actor {name!r}: {exc}") from exc

    # ------------------------------------------------------------- ending

    def autosave(
        self,
        path: str | os.PathLike[str],
        *,
        every: float = 15.0,
        keep: int = 3,
        on_error: str = "warn",
    ) -> asyncio.Task[None]:
        """Checkpoint the system to ``path`` every ``every`` seconds (the last ``keep`` kept).

        A save that fails (a full or read-only disk, state that cannot be
        saved) is recorded in ``system.save_errors`` and warned about. With
        ``on_error="warn"`` the system goes on and the next save tries again;
        with ``on_error="fail"`` the system fails: its actors are cancelled
        and ``join()`` raises the error.
        """
        if on_error not in ("warn", "fail"):
            raise ValueError(f"on_error is 'warn' or 'fail', not {on_error!r}")
        if self._autosave is not None:
            self._autosave.cancel()
        target = os.fspath(path)

        async def save_now_and_then() -> None:
            while not self._stopped:
                await asyncio.sleep(every)
                try:
                    await self.checkpoint(target, keep=keep)
                except (CheckpointError, OSError) as exc:
                    self._save_failed(target, exc, on_error)
                    if on_error == "fail":
                        return

        self._autosave = asyncio.ensure_future(save_now_and_then())
        return self._autosave

    def _save_failed(self, path: str, exc: CheckpointError | OSError, on_error: str) -> None:
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            error = CheckpointError(
                f"autosave of actor system {self.name!r} could not write {path}: {reason} "
                f"(errno {exc.errno}); free space on that disk, make its directory writable, "
                "or autosave to another path"
            )
            error.__cause__ = exc
        else:
            error = CheckpointError(f"autosave of actor system {self.name!r} to {path}: {exc}")
            error.__cause__ = exc
        self.save_errors.append(error)
        then = (
            "the system fails (on_error='fail')"
            if on_error == "fail"
            else "the system goes on; the next autosave tries again"
        )
        warnings.warn(f"{error}; {then}", RuntimeWarning, stacklevel=1)
        if on_error == "fail":
            self._fail(error)

    async def stop(self, *, rollout: str | os.PathLike[str] | None = None, keep: int = 3) -> None:
        """Stop every actor. With ``rollout``, checkpoint there first and detach them.

        A detached actor's ``finally`` blocks do not run here: they run once,
        where the restored system ends it. Without ``rollout`` the actors are
        cancelled.
        """
        if self._autosave is not None:
            self._autosave.cancel()
        if rollout is not None:
            async with self._lock:
                await self._checkpoint(rollout, keep, None, 10.0, then_resume=False)
                self._stopped = True
                for actor in self.actors.values():
                    if actor.task is not None and not actor.task.done():
                        actor.ending = True
                        detach_task(actor.task)
        else:
            self._stopped = True
            for actor in self.actors.values():
                if actor.task is not None and not actor.task.done():
                    actor.ending = True
                    actor.task.cancel()
        for job in list(self._restarting):
            job.cancel()
        tasks = [a.task for a in self.actors.values() if a.task is not None]
        await asyncio.gather(*tasks, *self._restarting, return_exceptions=True)
        self._parked.clear()
        self._forget()

    def _forget(self) -> None:
        if _SYSTEMS.get(self.name) is self:
            del _SYSTEMS[self.name]

    async def join(self) -> dict[str, Any]:
        """Wait until every actor has ended; return their results by name.

        Raises [`SupervisorGaveUpError`][contsnap.actors.SupervisorGaveUpError] when a root
        supervisor gave up, and the first error of an unsupervised actor that crashed.
        """
        if self._idle is None:
            self._idle = asyncio.Event()
        while self._failure is None:
            self._idle.clear()
            self._check_idle()
            if self._idle.is_set():
                break
            await self._idle.wait()
        if self._autosave is not None:
            self._autosave.cancel()
        self._stopped = True
        self._forget()
        if self._failure is not None:
            raise self._failure
        if self.errors:
            raise next(iter(self.errors.values()))
        return dict(self.results)

    def __repr__(self) -> str:
        return f"<contsnap.actors.System {self.name!r}: {len(self.actors)} actors>"
