"""Run CPython's own generator test suites with every generator function made checkpointable.

    python tests/conformance/run_stdlib.py [-v] [--no-doctests] [MODULE ...]

Each module (default: test.test_generators, test.test_yield_from,
test.test_contextlib, from this interpreter's installed ``test`` package) runs
twice, each time in a fresh child process: natively, and imported through
``contsnap.install_import_hook(module, mark_all=True)``. In the hooked run the
doctest examples of the module are marked too (their ``def`` statements get the
hook's decorator), since ``test_generators`` keeps most of its tests there.
The table compares pass/fail/error/skip counts; every test that fails only in
the hooked run is listed with its error. Not part of the default pytest run:
it takes a while and the stdlib suites change between Python versions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from typing import Any

DEFAULT_MODULES = ("test.test_generators", "test.test_yield_from", "test.test_contextlib")
MARKER = "\n@@contsnap-conformance@@"


def _mark_doctests() -> None:
    """Compile doctest examples with mark_all's decorator on their generator functions."""
    import ast
    import builtins
    import doctest

    from contsnap import _hook

    builtins.__contsnap_mark__ = _hook.mark  # type: ignore[attr-defined]
    real_compile = compile

    def marked_compile(source: Any, filename: str, mode: str, flags: int = 0, *rest: Any) -> Any:
        tree = real_compile(source, filename, mode, flags | ast.PyCF_ONLY_AST, *rest)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if _hook._marks(node) and not _hook._explicit(node):
                mark = ast.Name(_hook.MARK_NAME, ast.Load())
                ast.copy_location(mark, node)
                mark.end_lineno, mark.end_col_offset = node.lineno, node.col_offset
                node.decorator_list.append(mark)
        return real_compile(tree, filename, mode, flags, *rest)

    doctest.compile = marked_compile  # type: ignore[attr-defined]


def child(module: str, hooked: bool, doctests: bool) -> dict[str, Any]:
    """Run one module's tests in this process; return counts and the failures."""
    import importlib
    import io
    import unittest
    import warnings

    counts = {"marked": 0, "refused": 0}
    if hooked:
        import contsnap
        from contsnap import _hook

        real_mark = _hook.mark

        def counting_mark(fn: Any) -> Any:
            result = real_mark(fn)
            if getattr(result, "__contsnap__", None) is not None:
                counts["marked"] += 1
            elif fn is result and getattr(fn, "__code__", None) in _hook._REFUSED:
                counts["refused"] += 1
            return result

        _hook.mark = counting_mark
        contsnap.install_import_hook(module, mark_all=True)
        if doctests:
            _mark_doctests()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        mod = importlib.import_module(module)
        if hooked:
            assert type(mod.__loader__).__name__ == "HookLoader", mod.__loader__
        suite = unittest.defaultTestLoader.loadTestsFromModule(mod)
        if hasattr(mod, "__test__") and not hasattr(mod, "load_tests"):
            import doctest  # 3.10's test_generators runs its doctests from test_main()

            suite.addTest(doctest.DocTestSuite(mod))
        result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
    refusals = sorted({str(w.message) for w in caught if str(w.message).startswith("contsnap:")})
    return {
        "run": result.testsRun,
        "failures": {t.id(): tb for t, tb in result.failures},
        "errors": {t.id(): tb for t, tb in result.errors},
        "unexpected_successes": [t.id() for t in result.unexpectedSuccesses],
        "skipped": len(result.skipped),
        "refusals": refusals,
        **counts,
    }


def run_child(python: str, module: str, hooked: bool, doctests: bool) -> dict[str, Any]:
    cmd = [python, __file__, "--child", module]
    if hooked:
        cmd.append("--hooked")
    if not doctests:
        cmd.append("--no-doctests")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if MARKER not in proc.stdout:
        return {"crash": f"exit {proc.returncode}\n{proc.stderr[-3000:]}"}
    data: dict[str, Any] = json.loads(proc.stdout.split(MARKER, 1)[1])
    return data


def _summary(data: dict[str, Any]) -> str:
    if "crash" in data:
        return "CRASHED"
    failed, errors = len(data["failures"]), len(data["errors"])
    passed = data["run"] - failed - errors - data["skipped"]
    return f"{data['run']:4d} run {passed:4d} ok {failed:3d} fail {errors:3d} error {data['skipped']:3d} skip"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(DEFAULT_MODULES))
    parser.add_argument("--python", default=sys.executable, help="interpreter to test")
    parser.add_argument("--no-doctests", action="store_true", help="leave doctests unmarked")
    parser.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--hooked", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data = child(args.child, args.hooked, not args.no_doctests)
        print(MARKER + json.dumps(data))
        return 0

    probe = subprocess.run(
        [args.python, "-c", "import test.test_generators"], capture_output=True, text=True
    )
    if probe.returncode:
        print(
            f"{args.python}: the stdlib's test package is not installed "
            f"(import test.test_generators failed):\n{probe.stderr.strip()}"
        )
        return 2
    version = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"Python {version}: native vs hooked (mark_all=True)\n")
    new_problems = 0
    for module in args.modules:
        native = run_child(args.python, module, False, not args.no_doctests)
        hooked = run_child(args.python, module, True, not args.no_doctests)
        print(f"{module}")
        print(f"  native  {_summary(native)}")
        print(f"  hooked  {_summary(hooked)}")
        for what in ("crash",):
            for name, data in (("native", native), ("hooked", hooked)):
                if what in data:
                    print(textwrap.indent(f"{name} run crashed: {data[what]}", "    "))
        if "crash" in hooked or "crash" in native:
            new_problems += 1
            continue
        print(f"  functions marked: {hooked['marked']}, left plain: {hooked['refused']}")
        for message in hooked["refusals"]:
            print(textwrap.indent(textwrap.fill(message, 100), "    "))
        native_bad = set(native["failures"]) | set(native["errors"])
        for kind in ("failures", "errors"):
            for test_id, tb in sorted(hooked[kind].items()):
                if test_id in native_bad:
                    continue
                new_problems += 1
                lines = tb.strip().splitlines()
                shown = lines if args.verbose else lines[-6:]
                print(f"  NEW {kind[:-1].upper()}: {test_id}")
                print(textwrap.indent("\n".join(shown), "      "))
        print()
    print(f"{new_problems} problem(s) seen only in the hooked run")
    return 1 if new_problems else 0


if __name__ == "__main__":
    sys.exit(main())
