"""The ``contsnap`` command line."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence

from ._version import __version__


def _describe(path: str) -> int:
    from . import _envelope
    from ._errors import CheckpointError

    try:
        with open(path, "rb") as f:
            meta = _envelope.read_meta(f.read())
    except (OSError, CheckpointError) as exc:
        print(f"contsnap: {path}: {exc}", file=sys.stderr)
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
        if not line.lstrip().startswith(f"def {DEF_NAME}("):
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


def _show(target: str, variant: str) -> int:
    from . import _hook

    try:
        path, module, wanted = _locate(target)
        functions = list(_hook.transformed_functions(path, module))
    except (LookupError, OSError, SyntaxError) as exc:
        print(f"contsnap show: {exc}", file=sys.stderr)
        return 1
    shown = 0
    for qualname, line, info in functions:
        if wanted and qualname != wanted and not qualname.startswith(wanted + "."):
            continue
        shown += 1
        if isinstance(info, str):
            print(f"# {module}.{qualname} ({path}:{line}): not transformed\n# {info}\n")
            continue
        print(f"# {module}.{qualname} ({path}:{line}) fingerprint {info.fingerprint}")
        variants = _variants(info.source, info.name)
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


def _run(hooks: list[str], mark_all: bool, as_module: bool, target: str, args: list[str]) -> int:
    import runpy

    from ._hook import install_import_hook

    names = [name for spec in hooks for name in spec.split(",") if name.strip()]
    argv, path = sys.argv[:], sys.path[:]
    sys.argv = [target, *args]
    try:
        with install_import_hook(names, mark_all=mark_all):
            if as_module:
                sys.path.insert(0, os.getcwd())
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
                runpy.run_path(target, run_name="__main__")
    finally:
        sys.argv = argv
        sys.path[:] = path
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="contsnap",
        description="Checkpointable generators: snapshot a paused computation and resume it.",
    )
    parser.add_argument("--version", action="version", version=f"contsnap {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    describe = commands.add_parser(
        "describe", help="print a snapshot's metadata (nothing is unpickled, no key needed)"
    )
    describe.add_argument("file")
    show = commands.add_parser(
        "show",
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
        help="run a script with the import hook installed",
        description=(
            "Run a Python script (or, with -m, a module) as __main__ with contsnap's import "
            "hook installed for the given packages: their @checkpointable functions are "
            "transformed from source with an on-disk cache, and with --mark-all every "
            "generator function in them becomes checkpointable."
        ),
    )
    run.add_argument(
        "--hook",
        action="append",
        required=True,
        metavar="PKG[,PKG...]",
        help="modules or packages to hook (a package includes its submodules); repeatable",
    )
    run.add_argument(
        "--mark-all",
        action="store_true",
        help="make every generator function of the hooked modules checkpointable",
    )
    run.add_argument("-m", dest="as_module", action="store_true", help="run a module, not a file")
    run.add_argument("target", metavar="script.py", help="the script (or module, with -m)")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    args = parser.parse_args(argv)
    if args.command == "describe":
        return _describe(args.file)
    if args.command == "show":
        return _show(args.target, args.variant)
    if args.command == "run":
        return _run(args.hook, args.mark_all, args.as_module, args.target, args.args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
