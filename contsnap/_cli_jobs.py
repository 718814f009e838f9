"""``contsnap run``, ``resume``, ``inspect`` and ``ls``: durable scripts from the command line."""

from __future__ import annotations

import ast
import contextlib
import datetime
import json
import os
import runpy
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

from . import _durable, _envelope
from ._errors import CheckpointError
from ._hook import _first_line


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
) -> int:
    """Run a script as ``__main__``; make it durable when a checkpoint option is given.

    The script is durable when it calls :func:`contsnap.run` (the options given
    here win over that call's arguments) or, if it does not, when it defines a
    checkpointable generator function ``main`` (or ``entry``), which is then run.
    """
    from ._decorator import function_info
    from ._hook import install_import_hook

    names = _hook_names(hooks)
    durable = checkpoint is not None or every is not None or keep is not None or entry
    calls_before = _durable.RUN_CALLS[0]
    hook = install_import_hook(names, mark_all=mark_all) if names else contextlib.nullcontext()
    with (
        _durable.overrides(
            checkpoint=checkpoint,
            every=every,
            keep=keep,
            hooks=names or None,
            mark_all=mark_all or None,
            entry=entry,
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
        if not durable or _durable.RUN_CALLS[0] != calls_before:
            return 0
        function = namespace.get(entry or "main")
        if function is None or function_info(function) is None:
            print(
                f"contsnap run: {target} did not call contsnap.run() and defines no "
                f"@checkpointable generator function {entry or 'main'}()",
                file=sys.stderr,
            )
            return 2
        result = _durable.run(function)
        if result is not None:
            print(repr(result))
    return 0


def _read_meta(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        return _envelope.read_meta(f.read())


def resume(path: str, *, every: float | None = None) -> int:
    """Continue the job saved in ``path``: through its script when it had one."""
    try:
        meta = _read_meta(path)
    except (OSError, CheckpointError) as exc:
        print(f"contsnap resume: {path}: {exc}", file=sys.stderr)
        return 1
    job = meta.get("job")
    if not isinstance(job, dict):
        print(
            f"contsnap resume: {path} is a snapshot, not a job checkpoint (made by "
            "contsnap.run or contsnap run); load it with contsnap.loads()",
            file=sys.stderr,
        )
        return 1
    checkpoint = os.path.abspath(path)
    cwd = job.get("cwd")
    if isinstance(cwd, str) and os.path.isdir(cwd):
        os.chdir(cwd)  # the script's relative paths mean what they meant
    script = job.get("script")
    hooks = job.get("hooks") or []
    mark_all = bool(job.get("mark_all"))
    module = job.get("module")
    if isinstance(module, str) or (isinstance(script, str) and os.path.isfile(script)):
        return run_script(
            module if isinstance(module, str) else str(script),
            [str(a) for a in job.get("argv", [])],
            hooks=list(hooks),
            mark_all=mark_all,
            as_module=isinstance(module, str),
            checkpoint=checkpoint,
            every=every,
            entry=job.get("entry"),
        )
    from ._hook import install_import_hook

    hook = install_import_hook(hooks, mark_all=mark_all) if hooks else contextlib.nullcontext()
    with hook, _durable.overrides(every=every):
        result = _durable.resume_file(checkpoint)
    if result is not None:
        print(repr(result))
    return 0


def _age(created: Any) -> str:
    if not isinstance(created, (int, float)):
        return "unknown"
    seconds = max(0.0, time.time() - created)
    when = datetime.datetime.fromtimestamp(created).isoformat(sep=" ", timespec="seconds")
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{when} ({seconds / size:.1f} {unit} ago)"
    return f"{when} ({seconds:.0f} s ago)"


def _find_def(tree: ast.Module, qualname: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    scope: list[ast.stmt] = tree.body
    found: Any = None
    for part in qualname.split("."):
        if part == "<locals>":
            if not isinstance(found, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return None
            scope = [n for n in ast.walk(found) if isinstance(n, ast.stmt) and n is not found]
            continue
        found = next(
            (
                n
                for n in scope
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and n.name == part
            ),
            None,
        )
        if found is None:
            return None
        scope = found.body
    return found if isinstance(found, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def code_status(frame: dict[str, Any]) -> str:
    """Does the function on disk still match the frame's fingerprint? (Nothing is imported.)"""
    from ._transform._fingerprint import fingerprint

    path, qualname = frame.get("file"), frame.get("qualname")
    if not isinstance(path, str) or not isinstance(qualname, str):
        return "unknown (no source location recorded)"
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        node = _find_def(ast.parse(source), qualname)
    except (OSError, SyntaxError, ValueError) as exc:
        return f"unknown ({type(exc).__name__}: {exc})"
    if node is None:
        return f"changed ({qualname} is no longer in {path})"
    start = _first_line(node)
    text = textwrap.dedent("\n".join(source.splitlines()[start - 1 : node.end_lineno]))
    if fingerprint(text) == frame.get("fingerprint"):
        return "matches"
    return "changed"


def inspect_file(path: str, *, as_json: bool = False) -> int:
    """Describe a checkpoint without a key and without unpickling anything."""
    try:
        meta = _read_meta(path)
    except (OSError, CheckpointError) as exc:
        print(f"contsnap inspect: {path}: {exc}", file=sys.stderr)
        return 1
    frames = meta.get("frames") or []
    for frame in frames:
        frame["code"] = code_status(frame)
    if as_json:
        print(json.dumps(meta, indent=2, sort_keys=True, default=str))
        return 0
    job = meta.get("job") if isinstance(meta.get("job"), dict) else None
    print(f"{path}")
    print(f"  created   {_age(meta.get('created_at'))}")
    print(
        f"  size      {meta.get('total_bytes')} bytes "
        f"({meta.get('payload_bytes')} of state{', compressed' if meta.get('compressed') else ''})"
    )
    print(
        "  signed    "
        + ("yes (HMAC-SHA256; verified when loaded with the key)" if meta.get("signed") else "no")
    )
    print(f"  format    {meta.get('format_version')} (contsnap {meta.get('contsnap_version')})")
    if job is not None:
        state = f", finished (result: {job.get('result_type')})" if job.get("finished") else ""
        print(f"  job       {job.get('name')}: {job.get('steps', 0):,} steps{state}")
        if job.get("script"):
            argv = " ".join(str(a) for a in job.get("argv", []))
            print(f"  script    {job['script']} {argv}".rstrip())
    system = meta.get("actors")
    if isinstance(system, dict):
        print(
            f"  actors    system {system.get('system')!r}: {system.get('count')} actors, "
            f"checkpoint {system.get('sequence')}"
        )
    for depth, frame in enumerate(frames):
        print(f"  frame {depth}   {frame.get('qualname')}  {frame.get('file')}:{frame.get('line')}")
        print(f"            fingerprint {frame.get('fingerprint')}: code {frame['code']}")
        local = frame.get("locals") or {}
        if local:
            shown = ", ".join(f"{name}: {kind}" for name, kind in sorted(local.items()))
            print(f"            locals {shown}")
    changed = [f.get("qualname") for f in frames if str(f.get("code")).startswith("changed")]
    if changed:
        print(
            f"  note      the code of {', '.join(map(str, changed))} changed since: loading "
            "raises CodeChangedError unless a migration is registered"
        )
    return 0


def list_directory(directory: str) -> int:
    """One line per snapshot file in ``directory``: age, size, steps, where, signed."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        print(f"contsnap ls: {exc}", file=sys.stderr)
        return 1
    rows = []
    for name in names:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as f:
                if f.read(4) != _envelope.MAGIC:
                    continue
                f.seek(0)
                meta = _envelope.read_meta(f.read())
        except (OSError, CheckpointError) as exc:
            rows.append((name, "-", "-", "-", f"DAMAGED: {exc}", "-"))
            continue
        job = meta.get("job") if isinstance(meta.get("job"), dict) else {}
        frames = meta.get("frames") or [{}]
        where = f"{frames[0].get('qualname')} line {frames[0].get('line')}"
        if job and job.get("finished"):
            where = "finished"
        rows.append(
            (
                name,
                _age(meta.get("created_at")).split("(")[-1].rstrip(")"),
                str(meta.get("total_bytes")),
                f"{job.get('steps', 0):,}" if job else "-",
                where,
                "signed" if meta.get("signed") else "unsigned",
            )
        )
    if not rows:
        print(f"no contsnap snapshots in {directory}")
        return 0
    header = ("FILE", "AGE", "BYTES", "STEPS", "PAUSED IN", "SIGNED")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
