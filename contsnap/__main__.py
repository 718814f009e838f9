"""The ``contsnap`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Sequence

from ._version import __version__


def _describe(path: str) -> int:
    from ._durable._cli import _read_meta, printable
    from ._errors import CheckpointError

    try:
        meta = _read_meta(path)
    except (OSError, CheckpointError) as exc:
        print(f"contsnap describe: {printable(path)}: {printable(str(exc))}", file=sys.stderr)
        return 1
    print(json.dumps(meta, indent=2, sort_keys=True))
    return 0


def _locate(target: str) -> tuple[str, str, str | None]:
    """(file, module name, qualname filter) of ``MODULE_OR_FILE[:qualname]``."""
    qualname = None
    found = re.fullmatch(r"(.+):([A-Za-z_][\w.]*)", target)
    if found and not os.path.exists(target) and len(found.group(1)) > 1:
        target, qualname = found.group(1), found.group(2)
    if target.endswith(".py") or os.path.sep in target or os.path.isfile(target):
        if not os.path.isfile(target):
            raise LookupError(f"no such file: {target}")
        return target, os.path.splitext(os.path.basename(target))[0], qualname
    import importlib.util

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError) as exc:
        raise LookupError(f"cannot find module {target}: {exc}") from exc
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise LookupError(f"module {target} has no Python source file")
    return spec.origin, target, qualname


def _variants(source: str, name: str) -> list[str]:
    """The fresh and resume functions out of their compile scaffolding, under the real name."""
    from ._compile import DEF_NAME

    lines = source.split("\n")
    found = []
    for i, line in enumerate(lines):
        if not line.lstrip().startswith((f"def {DEF_NAME}(", f"async def {DEF_NAME}(")):
            continue
        indent = len(line) - len(line.lstrip())
        body = [line]
        for nxt in lines[i + 1 :]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt)
        text = "\n".join(chunk[indent:] for chunk in body).rstrip()
        found.append(text.replace(f"def {DEF_NAME}(", f"def {name}(", 1))
    return found or [source.rstrip()]


def _signatures(path: str) -> dict[int, str]:
    """The ``def`` line as written (defaults, annotations) of each function, by first line."""
    import ast

    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return {}
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            keyword = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
            returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
            found[first] = f"{keyword} {node.name}({ast.unparse(node.args)}){returns}:"
    return found


def _with_signature(text: str, signature: str | None) -> str:
    """``text`` (a generated function) with its header replaced by the user's ``signature``.

    The compiled function takes its defaults and annotations from the original
    one, so the generated header leaves them out; the reader wants to see them.
    """
    lines = text.split("\n")
    if signature is None or not lines[0].lstrip().startswith(("def ", "async def ")):
        return text
    for end, line in enumerate(lines):
        if line.rstrip().endswith(":") and (end + 1 == len(lines) or lines[end + 1][:1] == " "):
            return "\n".join([signature, *lines[end + 1 :]])
    return text


def _show(target: str, variant: str) -> int:
    from ._marking import _show

    try:
        path, module, wanted = _locate(target)
        functions = list(_show.transformed_functions(path, module))
    except (LookupError, OSError, SyntaxError) as exc:
        print(f"contsnap show: {exc}", file=sys.stderr)
        return 1
    shown = 0
    signatures = _signatures(path)
    for qualname, line, info in functions:
        if wanted and qualname != wanted and not qualname.startswith(wanted + "."):
            continue
        shown += 1
        if isinstance(info, str):
            print(f"# {module}.{qualname} ({path}:{line}): not transformed\n# {info}\n")
            continue
        print(f"# {module}.{qualname} ({path}:{line}) fingerprint {info.fingerprint}")
        variants = _variants(info.source, info.name)
        variants[0] = _with_signature(variants[0], signatures.get(line))
        if variant == "fresh":
            variants = variants[:1]
        elif variant == "resume":
            variants = variants[1:]
        for title, text in zip(("fresh", "resume"), variants):
            if variant == "both" and len(variants) > 1:
                print(f"# -- {title} variant")
            print(text + "\n")
    if not shown:
        what = f"named {wanted!r}" if wanted else "to transform"
        print(f"contsnap show: {path}: no generator function {what}", file=sys.stderr)
        return 1
    return 0


def _missing_target(target: str, as_module: bool) -> str | None:
    """Why ``contsnap run`` cannot start ``target`` at all (None: it can try)."""
    if not as_module:
        if os.path.exists(target):
            return None
        return (
            f"{target}: no such file (give the path of a Python script, or -m MODULE to run "
            "a module)"
        )
    import importlib.util

    top = target.split(".")[0]  # only the top level: finding a submodule imports its package
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        return None
    return (
        f"no module named {top!r} (run from the directory that holds it, or put it on PYTHONPATH)"
    )


def _stdout_gone() -> int:
    """The reader of our output went away (``contsnap show ... | head``): stop quietly.

    Python's documented way (the signal module's note on SIGPIPE): point stdout
    at devnull so that the flush at exit does not fail again; exit status 141
    is what a shell reports for a program that SIGPIPE ended.
    """
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``contsnap`` command; a user error is one line on stderr and status 1.

    ``--debug`` shows the traceback of such an error instead.
    """
    from ._errors import CheckpointError

    parser = _parser()
    args = parser.parse_args(argv)
    # contsnap's own errors; for run/resume nothing else, since other errors may come
    # from the user's script, whose traceback they need
    expected: tuple[type[BaseException], ...] = (CheckpointError,)
    if args.command not in ("run", "resume"):
        expected += (OSError, LookupError, ImportError, SyntaxError)
    try:
        status = _dispatch(parser, args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:
        return _stdout_gone()
    except expected as exc:
        if args.debug:
            raise
        from ._durable._cli import printable

        command = f"contsnap {args.command}" if args.command else "contsnap"
        print(f"{command}: {printable(str(exc))}", file=sys.stderr)
        return 1
    return status


def _parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, show its traceback instead of one line",
    )
    parser = argparse.ArgumentParser(
        prog="contsnap",
        description="Checkpointable generators: snapshot a paused computation and resume it.",
    )
    parser.add_argument("--version", action="version", version=f"contsnap {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show its traceback instead of one line",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    describe = commands.add_parser(
        "describe",
        parents=[debug],
        help="print a snapshot's metadata (nothing is unpickled, no key needed)",
    )
    describe.add_argument("file")
    show = commands.add_parser(
        "show",
        parents=[debug],
        help="print the transformed code of a module's generator functions",
        description=(
            "Print the code contsnap compiles for each generator function of a module, as "
            "the import hook's mark_all would transform it: the fresh variant (what a call "
            "runs) and the resume variant (what a restore runs). Nothing of the module is "
            "executed; the transform is cached in __pycache__ as on import."
        ),
    )
    show.add_argument(
        "target",
        metavar="MODULE_OR_FILE[:QUALNAME]",
        help="a module name (pkg.mod) or a .py file, optionally :Class.method to show one",
    )
    show.add_argument(
        "--variant",
        choices=("both", "fresh", "resume"),
        default="both",
        help="which variant to print (default: both)",
    )
    run = commands.add_parser(
        "run",
        parents=[debug],
        help="run a script, durably with --checkpoint, and/or with the import hook",
        description=(
            "Run a Python script (or, with -m, a module) as __main__. With --checkpoint, "
            "--every or --entry it is a durable job: its contsnap.run() call (or, if it makes "
            "none, its @checkpointable generator function main()) autosaves, rolls out on "
            "SIGTERM/SIGINT with exit status 75, and resumes from the checkpoint when run "
            "again. With --hook, contsnap's import hook is installed for those packages: "
            "their @checkpointable functions are transformed from source with an on-disk "
            "cache, and with --mark-all every generator and coroutine function in them "
            "becomes checkpointable."
        ),
    )
    run.add_argument(
        "--hook",
        action="append",
        metavar="PKG[,PKG...]",
        help="modules or packages to hook (a package includes its submodules); repeatable",
    )
    run.add_argument(
        "--mark-all",
        action="store_true",
        help="make every generator function of the hooked modules checkpointable",
    )
    run.add_argument("--checkpoint", metavar="FILE", help="the job's checkpoint file")
    run.add_argument(
        "--every", type=float, metavar="SECONDS", help="autosave interval (default 15)"
    )
    run.add_argument("--keep", type=int, metavar="K", help="checkpoints kept (default 3)")
    run.add_argument(
        "--entry", metavar="NAME", help="the generator function to run (default: main)"
    )
    run.add_argument("-m", dest="as_module", action="store_true", help="run a module, not a file")
    run.add_argument("target", metavar="script.py", help="the script (or module, with -m)")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    resume = commands.add_parser(
        "resume",
        parents=[debug],
        help="continue the job saved in a checkpoint file",
        description=(
            "Continue a job saved by contsnap.run(): its script is run again (same "
            "arguments, directory and hooks) and resumes from FILE; a job without a script "
            "is loaded and driven to its end."
        ),
    )
    resume.add_argument("file")
    resume.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept an unsigned checkpoint (from an older contsnap); only one you trust",
    )
    resume.add_argument("--every", type=float, metavar="SECONDS", help="autosave interval")
    inspect_cmd = commands.add_parser(
        "inspect",
        parents=[debug],
        help="describe a checkpoint: frames, lines, locals, age, whether the code still matches",
        description=(
            "Describe a checkpoint without a key and without unpickling anything: its frames "
            "(function, file:line, the types of its live locals), age, size, whether it is "
            "signed, and whether each function's code on disk still matches its fingerprint."
        ),
    )
    inspect_cmd.add_argument(
        "file",
        help="a checkpoint file, or a store (URL, store directory, SQLite file) followed by a key",
    )
    inspect_cmd.add_argument(
        "key",
        nargs="?",
        help="with a store: the key of the checkpoint (a durable task's: task:TASK:JOB_ID); "
        "its lease, attempts and pending effects are shown too",
    )
    inspect_cmd.add_argument("--json", action="store_true", help="print JSON")
    ls = commands.add_parser(
        "ls",
        parents=[debug],
        help="list the snapshots in a directory, or the jobs in a store",
        description=(
            "List the snapshot files of a directory (age, size, steps, where paused), or the "
            "checkpoints in a store given by URL (redis://, postgresql://, sqlite:///, "
            "file:///), store directory or SQLite file: age, steps, state (running, crashed, "
            "finished, poisoned), the lease holder and fencing token, where paused. Only "
            "metadata is read; nothing is unpickled and no key is needed."
        ),
    )
    ls.add_argument("directory", nargs="?", default=".", metavar="DIR_OR_STORE")
    return parser


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command in ("run", "resume"):
        from ._durable import _signals

        _signals.install_early()  # before the script's imports: no SIGTERM is lost
    if args.command == "describe":
        return _describe(args.file)
    if args.command == "show":
        return _show(args.target, args.variant)
    if args.command in ("run", "resume", "inspect", "ls"):
        from ._durable import _cli

        if args.command == "resume":
            return _cli.resume(args.file, every=args.every, allow_unsigned=args.allow_unsigned)
        if args.command == "inspect":
            return _cli.inspect_file(args.file, key=args.key, as_json=args.json)
        if args.command == "ls":
            return _cli.list_directory(args.directory)
        if not args.hook and args.mark_all:
            parser.error("--mark-all needs --hook PKG")
        missing = _missing_target(args.target, args.as_module)
        if missing is not None:
            print(f"contsnap run: {_cli.printable(missing)}", file=sys.stderr)
            return 1
        return _cli.run_script(
            args.target,
            args.args,
            hooks=args.hook,
            mark_all=args.mark_all,
            as_module=args.as_module,
            checkpoint=args.checkpoint,
            every=args.every,
            keep=args.keep,
            entry=args.entry,
        )
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
