"""``contsnap run``, ``resume``, ``inspect`` and ``ls``: durable scripts from the command line."""

from __future__ import annotations

import ast
import contextlib
import datetime
import json
import math
import os
import re
import runpy
import stat
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from typing import Any

from .. import _envelope
from .._checkpoints._files import CheckpointFallbackWarning, CheckpointFiles
from .._errors import CheckpointError
from .._marking._plan import _first_line
from . import _plan, _run, _signals


def _hook_names(hooks: list[str] | None) -> list[str]:
    return [name.strip() for spec in hooks or () for name in spec.split(",") if name.strip()]


@contextlib.contextmanager
def _script_context(target: str, args: list[str], as_module: bool) -> Iterator[None]:
    argv, path = sys.argv[:], sys.path[:]
    sys.argv = [target, *args]
    if as_module:
        sys.path.insert(0, os.getcwd())
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
    try:
        yield
    finally:
        sys.argv = argv
        sys.path[:] = path


def run_script(
    target: str,
    args: list[str],
    *,
    hooks: list[str] | None = None,
    mark_all: bool = False,
    as_module: bool = False,
    checkpoint: str | None = None,
    every: float | None = None,
    keep: int | None = None,
    entry: str | None = None,
    allow_unsigned: bool = False,
) -> int:
    """Run a script as ``__main__``; make it durable when a checkpoint option is given.

    The script is durable when it calls [`contsnap.run`][contsnap.run] (the options given
    here win over that call's arguments) or, if it does not, when it defines a
    checkpointable generator function ``main`` (or ``entry``), which is then run.
    """
    from .._marking._decorator import function_info
    from .._marking._hook import install_import_hook

    names = _hook_names(hooks)
    durable = checkpoint is not None or every is not None or keep is not None or entry
    calls_before = _run.RUN_CALLS[0]
    hook = install_import_hook(names, mark_all=mark_all) if names else contextlib.nullcontext()
    with (
        _plan.overrides(
            checkpoint=checkpoint,
            every=every,
            keep=keep,
            hooks=names or None,
            mark_all=mark_all or None,
            entry=entry,
            allow_unsigned=allow_unsigned or None,
            script=None if as_module else os.path.abspath(target),
            module=target if as_module else None,
            argv=list(args),
        ),
        hook,
        _script_context(target, args, as_module),
    ):
        if as_module:
            namespace = runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            namespace = runpy.run_path(target, run_name="__main__")
        if _run.RUN_CALLS[0] != calls_before:
            return 0
        function = namespace.get(entry or "main")
        if function is None or function_info(function) is None:
            if not durable:
                _signals.deliver_unhandled()  # a plain script: a signal acts as usual
                return 0
            print(
                f"contsnap run: {target} did not call contsnap.run() and defines no "
                f"@checkpointable generator function {entry or 'main'}()",
                file=sys.stderr,
            )
            return 2
        result = _run.run(function)
        if result is not None:
            print(repr(result))
    return 0


#: describe/inspect/ls read no file larger than this (a hostile path must not exhaust memory)
MAX_DESCRIBED_FILE = _envelope.MAX_INFLATED_BODY + (1 << 20)
#: inspect reads a source file named in (unverified) metadata only up to this size
MAX_SOURCE_FILE = 16 << 20


def read_regular(path: str, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes.

    Opened without blocking (a FIFO), checked after opening (no race with a swap), and
    read only up to the limit (a file that grows, or /dev/zero, cannot exhaust memory).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise OSError(f"{path} is {info.st_size} bytes, more than the {limit} read here")
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise OSError(f"{path} grew past {limit} bytes while it was read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_meta(path: str) -> dict[str, Any]:
    """Unverified metadata, to describe a file: never to act on."""
    return _envelope.read_meta(read_regular(path, MAX_DESCRIBED_FILE))


#: inspect looks up at most this many of a job's effects in the store
MAX_EFFECTS_LOOKED_UP = 1000
_SQLITE_MAGIC = b"SQLite format 3\x00"


def is_store(target: str) -> bool:
    """Does ``target`` name a store (a URL, a store directory, an SQLite database file)?"""
    if "://" in target:
        return True
    if os.path.isdir(os.path.join(target, ".contsnap")):
        return True
    try:
        with open(target, "rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def open_cli_store(target: str) -> Any:
    """The store ``target`` names, opened to read: a URL, a directory, an SQLite file.

    A path that does not exist is refused rather than created as an empty store.
    """
    from ..stores import FileStore, SQLiteStore, open_store

    if "://" not in target:
        if os.path.isdir(target):
            return FileStore(target)
        if is_store(target):
            return SQLiteStore(target)
        what = "not an SQLite database" if os.path.exists(target) else "does not exist"
        raise CheckpointError(
            f"no store at {target} ({what}); give a store URL (redis://, postgresql://, "
            "sqlite:///, file:///), a store directory or an SQLite file"
        )
    lowered = target.lower()
    local = lowered.startswith(("file://", "sqlite:///"))
    if local:
        path = target[len("sqlite:///") :] if lowered.startswith("sqlite:") else target[7:]
        if not os.path.exists(os.path.expanduser(path)):
            raise CheckpointError(f"no store at {target} ({path} does not exist)")
    return open_store(target)


def job_record(store: Any, key: str) -> dict[str, Any]:
    """Where the job under ``key`` is, from unverified metadata only (nothing is unpickled).

    ``meta`` (the newest checkpoint's), ``attempts`` (a durable task's attempt
    record kept at ``KEY.attempts``: owner, crashes, poisoned), ``lease`` (the live
    lease on the key: holder, fencing token, seconds left; None when free) and
    ``effects_pending`` (the sequence numbers of the effects committed with a
    checkpoint and not yet delivered).
    """
    data = store.get(key)
    if data is None:
        raise CheckpointError(f"no key {key!r} in {store.url} (or it expired)")
    meta = _envelope.read_meta(data)
    attempts = None
    record = store.get(f"{key}.attempts")
    if record is not None:
        with contextlib.suppress(CheckpointError):
            attempts = _envelope.read_meta(record).get("attempts")
    lease = store.current_lease(key)
    job = meta.get("job") if isinstance(meta.get("job"), dict) else {}
    pending = None
    first, end = _field(job, "outbox_from", int), _field(job, "next_effect", int)
    if first is not None and end is not None:
        wanted = range(max(first, 0), min(end, max(first, 0) + MAX_EFFECTS_LOOKED_UP))
        pending = [n for n in wanted if store.version(f"{key}.fx.{n}") is not None]
    return {
        "meta": meta,
        "attempts": attempts if isinstance(attempts, dict) else None,
        "lease": None
        if lease is None
        else {
            "owner": lease.owner,
            "pid": lease.pid,
            "host": lease.host,
            "token": lease.token,
            "expires_at": lease.expires_at,
            "expires_in": round(lease.ttl, 3),
        },
        "effects_pending": pending,
    }


def _read_store_job(url: str, key: str) -> dict[str, Any]:
    store = open_cli_store(url)
    try:
        return job_record(store, key)
    finally:
        store.close()


def job_state(found: dict[str, Any]) -> str:
    """One word for where the job is: finished, poisoned, running, crashed, stopped, saved."""
    job = found["meta"].get("job")
    attempts, lease = found["attempts"], found["lease"]
    if isinstance(job, dict) and job.get("finished") is True:
        return "finished"
    if isinstance(attempts, dict) and attempts.get("poisoned"):
        return "poisoned"
    if lease is not None:
        return "running"
    if isinstance(attempts, dict) and attempts.get("running"):
        return "crashed"  # the attempt neither ended nor holds its lease: its worker died
    return "stopped" if attempts is not None else "saved"


def _lease_line(lease: dict[str, Any] | None, attempts: Any) -> str:
    if lease is None:
        after = ""
        if isinstance(attempts, dict) and attempts.get("running"):
            after = " (its last owner died: the next delivery resumes it)"
        return f"free{after}"
    owner = _show(lease["owner"])
    if lease["owner"] != f"pid {lease['pid']} on {lease['host']}":  # named by the holder
        owner += f" (pid {_show(lease['pid'])}, host {_show(lease['host'])})"
    return (
        f"held by {owner}, fencing token {_show(lease['token'])}, "
        f"{lease['expires_in']:.1f} s left unless renewed"
    )


def _one_line(error: BaseException) -> str:
    return printable(str(error))


def resume(path: str, *, every: float | None = None, allow_unsigned: bool = False) -> int:
    """Continue the job saved in ``path``: through its script when it had one.

    The checkpoint's signature and kind are verified before anything it names is acted
    on: the directory, the script, the module and the arguments come from its signed part.
    """
    files = CheckpointFiles(path)
    try:
        with warnings.catch_warnings(record=True) as fallbacks:
            warnings.simplefilter("always", CheckpointFallbackWarning)
            found = files.verified(kinds=("job",), allow_unsigned=allow_unsigned)
    except CheckpointError as exc:
        print(f"contsnap resume: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        for warning in fallbacks:  # one line each, as every message of the CLI
            print(f"contsnap resume: warning: {printable(str(warning.message))}", file=sys.stderr)
    if found is None:
        print(f"contsnap resume: no checkpoint at {files.path}", file=sys.stderr)
        return 1
    job = found.meta.get("job")
    try:
        plan = _Plan.of(job)
    except ValueError as exc:
        print(
            f"contsnap resume: {found.path} is a job checkpoint with a malformed job record "
            f"({exc}); it was signed by a key in effect, so it comes from a bug or was made "
            "by hand",
            file=sys.stderr,
        )
        return 1
    checkpoint = files.path
    if plan.cwd is not None and os.path.isdir(plan.cwd):
        os.chdir(plan.cwd)  # the script's relative paths mean what they meant
    if plan.module is not None or (plan.script is not None and os.path.isfile(plan.script)):
        return run_script(
            plan.module if plan.module is not None else str(plan.script),
            plan.argv,
            hooks=plan.hooks,
            mark_all=plan.mark_all,
            as_module=plan.module is not None,
            checkpoint=checkpoint,
            every=every,
            entry=plan.entry,
            allow_unsigned=allow_unsigned,
        )
    from .._marking._hook import install_import_hook

    hooks = plan.hooks
    hook = install_import_hook(hooks, mark_all=plan.mark_all) if hooks else contextlib.nullcontext()
    # a job started from library code: find its module where the first process found it
    for entry in (plan.path, plan.cwd):
        if entry is not None and os.path.isdir(entry) and entry not in sys.path:
            sys.path.insert(0, entry)
    with hook, _plan.overrides(every=every):
        result = _run.resume_file(checkpoint, allow_unsigned=allow_unsigned)
    if result is not None:
        print(repr(result))
    return 0


class _Plan:
    """How to run a job again, as its verified checkpoint records it (types checked)."""

    def __init__(self) -> None:
        self.cwd: str | None = None
        self.script: str | None = None
        self.module: str | None = None
        self.entry: str | None = None
        self.path: str | None = None
        self.argv: list[str] = []
        self.hooks: list[str] = []
        self.mark_all = False

    @classmethod
    def of(cls, job: Any) -> _Plan:
        if not isinstance(job, dict):
            raise ValueError("no job record")
        plan = cls()
        for name in ("cwd", "script", "module", "entry", "path"):
            value = job.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"its {name} is a {type(value).__name__}, not text")
            setattr(plan, name, value)
        for name in ("argv", "hooks"):
            value = job.get(name) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"its {name} is not a list of strings")
            setattr(plan, name, value)
        plan.mark_all = job.get("mark_all") is True
        return plan


def printable(text: str) -> str:
    """``text`` with control characters escaped: names from a file never drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _show(value: Any) -> str:
    """A metadata value for a human: text escaped, anything else by its (escaped) repr."""
    return printable(value if isinstance(value, str) else repr(value))


def _field(mapping: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    """``mapping[name]`` when it has the expected type, else None (shown as invalid)."""
    value = mapping.get(name) if isinstance(mapping, dict) else None
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        return None
    return value if isinstance(value, kind) else None


def _age(created: Any) -> str:
    if (
        not isinstance(created, (int, float))
        or isinstance(created, bool)
        or not math.isfinite(created)
    ):
        return "invalid"
    seconds = max(0.0, time.time() - created)
    try:
        when = datetime.datetime.fromtimestamp(created).isoformat(sep=" ", timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return "invalid"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{when} ({seconds / size:.1f} {unit} ago)"
    return f"{when} ({seconds:.0f} s ago)"


def _defined_in(scope: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of ``scope``, and those of its ``if``/``try``/``with`` blocks, in order.

    A function defined under ``if`` (a version for each platform or setting) is still
    the module's or class's own.
    """
    for node in scope:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With, ast.AsyncWith)):
            for block in ("body", "orelse", "finalbody"):
                yield from _defined_in(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                yield from _defined_in(handler.body)


def _find_defs(tree: ast.Module, qualname: str) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Every definition of ``qualname`` in ``tree`` (more than one under if/else)."""
    scopes: list[list[ast.stmt]] = [tree.body]
    found: list[Any] = []
    for part in qualname.split("."):
        if part == "<locals>":
            functions = [n for n in found if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            scopes = [
                [n for n in ast.walk(f) if isinstance(n, ast.stmt) and n is not f]
                for f in functions
            ]
            found = []
            continue
        found = [
            n
            for scope in scopes
            for n in _defined_in(scope)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and n.name == part
        ]
        scopes = [n.body for n in found]
    return [n for n in found if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def code_status(frame: dict[str, Any]) -> str:
    """Does the function on disk still match the frame's fingerprint? (Nothing is imported.)

    The path comes from unverified metadata: only a regular file of bounded size is read.
    """
    from .._fingerprint import fingerprint

    path, qualname = _field(frame, "file", str), _field(frame, "qualname", str)
    if path is None or qualname is None:
        return "unknown (no source location recorded)"
    try:
        source = read_regular(path, MAX_SOURCE_FILE).decode("utf-8")
        nodes = _find_defs(ast.parse(source), qualname)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return f"unknown ({type(exc).__name__}: {exc})"
    if not nodes:
        return f"changed ({qualname} is no longer in {path})"
    lines = source.splitlines()
    for node in nodes:
        text = textwrap.dedent("\n".join(lines[_first_line(node) - 1 : node.end_lineno]))
        if fingerprint(text) == frame.get("fingerprint"):
            return "matches"
    return "changed"


def inspect_file(path: str, *, key: str | None = None, as_json: bool = False) -> int:
    """Describe a checkpoint without a key and without unpickling anything.

    With ``key``, ``path`` is a store URL and the checkpoint is that key's newest
    generation; a record kept next to it (``KEY.attempts``: a durable task's
    attempts, owner and crashes) is shown as well.
    """
    found: dict[str, Any] | None = None
    try:
        if key is None:
            meta = _read_meta(path)
        else:
            found = _read_store_job(path, key)
            meta = found["meta"]
            path = f"{path} key {key}"
    except (OSError, CheckpointError) as exc:
        print(f"contsnap inspect: {printable(path)}: {_one_line(exc)}", file=sys.stderr)
        return 1
    frames = [f for f in meta.get("frames") or [] if isinstance(f, dict)][:64]
    for frame in frames:
        frame["code"] = code_status(frame)
    attempts = None if found is None else found["attempts"]
    if as_json:
        meta["frames"] = frames
        if found is not None:
            meta.update({k: v for k, v in found.items() if k != "meta"})
            meta["state"] = job_state(found)
        print(json.dumps(meta, indent=2, sort_keys=True, default=str))
        return 0
    job = meta.get("job") if isinstance(meta.get("job"), dict) else None
    print(printable(path))
    print(f"  kind      {_show(meta.get('kind'))} ({_show(meta.get('identity'))})")
    print(f"  created   {_age(meta.get('created_at'))}")
    compressed = ", compressed" if meta.get("compressed") else ""
    size, state_bytes = meta.get("total_bytes"), meta.get("payload_bytes")
    print(f"  size      {size} bytes ({state_bytes} of state{compressed})")
    signed = (
        f"yes (HMAC-SHA256, key id {_show(meta.get('key_id'))}; not verified here: "
        "verified when loaded)"
        if meta.get("signed")
        else "no (loads only with allow_unsigned)"
    )
    print(f"  signed    {signed}")
    print(
        f"  format    {meta.get('format_version')} (contsnap "
        f"{_show(meta.get('contsnap_version'))}, Python {_show(meta.get('python'))})"
    )
    if job is not None:
        steps = _field(job, "steps", int)
        state = ""
        if job.get("finished") is True:
            state = f", finished (result: {_show(job.get('result_type'))})"
        shown_steps = "invalid" if steps is None else f"{steps:,}"
        print(f"  job       {_show(job.get('name'))}: {shown_steps} steps{state}")
        if job.get("generation") is not None:
            print(f"  generation {_show(job.get('generation'))}")
        script = _field(job, "script", str)
        if script:
            argv = job.get("argv") if isinstance(job.get("argv"), list) else []
            print(f"  script    {printable(script)} {' '.join(map(_show, argv))}".rstrip())
    system = meta.get("actors")
    if isinstance(system, dict):
        print(
            f"  actors    system {_show(system.get('system'))}: {_show(system.get('count'))} "
            f"actors, checkpoint {_show(system.get('sequence'))}"
        )
    if found is not None:
        print(f"  state     {job_state(found)}")
        print(f"  lease     {_lease_line(found['lease'], attempts)}")
    if isinstance(attempts, dict):
        state = "running" if attempts.get("running") else "not running"
        if attempts.get("poisoned"):
            state = "poisoned"
        print(
            f"  attempts  {state}; last owner {_show(attempts.get('owner'))}, began "
            f"{_age(attempts.get('started_at'))}; {_show(attempts.get('crashes'))} crashes "
            f"from this checkpoint{', fell back once' if attempts.get('fell_back') else ''}"
        )
    pending = None if found is None else found["effects_pending"]
    if pending is not None and job is not None:
        yielded = _show(job.get("next_effect"))
        shown = ", ".join(map(str, pending[:10])) + (", ..." if len(pending) > 10 else "")
        waiting = f"{len(pending)} committed, not yet delivered ({shown})" if pending else "none"
        print(f"  effects   {yielded} yielded; pending {waiting}")
    for depth, frame in enumerate(frames):
        print(
            f"  frame {depth}   {_show(frame.get('qualname'))}  "
            f"{_show(frame.get('file'))}:{_show(frame.get('line'))}"
        )
        print(
            f"            fingerprint {_show(frame.get('fingerprint'))}: "
            f"code {printable(frame['code'])}"
        )
        local = frame.get("locals")
        if isinstance(local, dict) and local:
            shown = ", ".join(f"{_show(n)}: {_show(k)}" for n, k in sorted(local.items()))
            print(f"            locals {shown}")
    changed = [_show(f.get("qualname")) for f in frames if str(f.get("code")).startswith("changed")]
    if changed:
        print(
            f"  note      the code of {', '.join(changed)} changed since: loading "
            "raises CodeChangedError unless a migration is registered"
        )
    return 0


def _row(directory: str, name: str) -> tuple[str, ...] | None:
    path = os.path.join(directory, name)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with open(path, "rb", buffering=0) as f:
            if f.read(4) != _envelope.MAGIC:
                return None
        meta = _read_meta(path)
    except (OSError, CheckpointError) as exc:
        return (printable(name), "-", "-", "-", f"INVALID: {_one_line(exc)}", "-")
    job = meta.get("job") if isinstance(meta.get("job"), dict) else {}
    frames = meta.get("frames") if isinstance(meta.get("frames"), list) else []
    first = frames[0] if frames and isinstance(frames[0], dict) else {}
    where = f"{_show(first.get('qualname'))} line {_show(first.get('line'))}"
    if job and job.get("finished") is True:
        where = "finished"
    steps = _field(job, "steps", int)
    return (
        printable(name),
        _age(meta.get("created_at")).split("(")[-1].rstrip(")"),
        str(meta.get("total_bytes")),
        ("invalid" if steps is None else f"{steps:,}") if job else "-",
        where,
        f"signed {_show(meta.get('key_id'))}" if meta.get("signed") else "unsigned",
    )


def list_directory(directory: str) -> int:
    """One line per snapshot file in ``directory``: age, size, steps, where, signed.

    A file that cannot be read or described gets its own INVALID line; the others are
    listed all the same. A store (URL, store directory, SQLite file) lists its jobs.
    """
    if is_store(directory):
        return list_store(directory)
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        print(f"contsnap ls: {_one_line(exc)}", file=sys.stderr)
        return 1
    rows = [row for name in names if (row := _row(directory, name)) is not None]
    if not rows:
        print(f"no contsnap snapshots in {printable(directory)}")
        return 0
    header = ("FILE", "AGE", "BYTES", "STEPS", "PAUSED IN", "SIGNED")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


_SIDECAR = re.compile(r"(.+)\.(attempts|fx\.\d+)")


def _store_row(store: Any, key: str, pending: int) -> tuple[str, ...] | None:
    try:
        data = store.get(key)
        if data is None or data[:4] != _envelope.MAGIC:
            return None  # expired since listed, or not a snapshot: not a job
        found = job_record(store, key)
    except CheckpointError as exc:
        return (printable(key), "-", "-", "INVALID", "-", _one_line(exc))
    meta, attempts, lease = found["meta"], found["attempts"], found["lease"]
    job = meta.get("job") if isinstance(meta.get("job"), dict) else {}
    frames = meta.get("frames") if isinstance(meta.get("frames"), list) else []
    first = frames[0] if frames and isinstance(frames[0], dict) else {}
    steps = _field(job, "steps", int)
    state = job_state(found)
    if isinstance(attempts, dict) and attempts.get("crashes"):
        state += f" ({_show(attempts.get('crashes'))} crashes)"
    if pending:
        state += f", {pending} effects pending"
    owner = "-"
    if lease is not None:
        owner = f"{_show(lease['owner'])} #{_show(lease['token'])} {lease['expires_in']:.0f}s"
    elif isinstance(attempts, dict) and attempts.get("owner"):
        owner = f"(last: {_show(attempts.get('owner'))})"
    where = "-"
    if first:
        where = f"{_show(first.get('qualname'))} line {_show(first.get('line'))}"
    return (
        printable(key),
        _age(meta.get("created_at")).split("(")[-1].rstrip(")"),
        ("invalid" if steps is None else f"{steps:,}") if job else "-",
        state,
        owner,
        where,
    )


def list_store(target: str) -> int:
    """One line per checkpoint in a store: age, steps, state, lease holder, where paused.

    A durable task's sidecar keys (``KEY.attempts``, ``KEY.fx.N``) are folded into
    their job's line; only metadata is read, nothing is unpickled.
    """
    try:
        store = open_cli_store(target)
    except CheckpointError as exc:
        print(f"contsnap ls: {_one_line(exc)}", file=sys.stderr)
        return 1
    try:
        keys = store.keys()
        present = set(keys)
        effects: dict[str, int] = {}
        jobs = []
        for key in keys:
            side = _SIDECAR.fullmatch(key)
            if side is None or side.group(1) not in present:
                jobs.append(key)
            elif side.group(2) != "attempts":
                effects[side.group(1)] = effects.get(side.group(1), 0) + 1
        rows = [row for k in jobs if (row := _store_row(store, k, effects.get(k, 0)))]
    except CheckpointError as exc:
        print(f"contsnap ls: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if not rows:
        print(f"no contsnap checkpoints in {printable(store.url)}")
        return 0
    header = ("KEY", "AGE", "STEPS", "STATE", "LEASE", "PAUSED IN")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
