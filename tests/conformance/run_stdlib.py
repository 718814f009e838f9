"""Run upstream test suites with their generators, coroutines and async generators made checkpointable.

    python tests/conformance/run_stdlib.py [-v] [--third-party] [--modes M,...] [SUITE ...]

Two kinds of suite, from this interpreter's installed ``test`` package:

* CPython's own suites for the language features (``test.test_generators``,
  ``test.test_yield_from``, ``test.test_contextlib``, ``test.test_coroutines``,
  ``test.test_asyncgen``, ``test.test_contextlib_async``): the *test module*
  is imported through ``contsnap.install_import_hook(module, mark_all=True)``.
  Its doctest examples are marked too (their ``def`` statements get the hook's
  decorator), since ``test_generators`` keeps most of its tests there.
* Generator-heavy library modules run against their own upstream tests
  (``difflib``, ``tokenize``, ``heapq``; with ``--third-party``, or named as a
  SUITE, the pinned packages of `THIRD_PARTY`: more-itertools, toolz, boltons,
  asyncstdlib, aioitertools, funcy, jinja2, pygments, pyparsing, whose tests ship
  in their sdists, downloaded with ``pip download`` into ``--cache-dir``; jinja2's
  tests import ``trio`` and funcy's ``whatever``, which must be importable): the
  *modules under test* are imported
  through the hook, and the tests are left as they are. unittest modules run
  under unittest, pytest paths (``tests/``) under ``pytest.main`` in the child,
  with no plugins from entry points. A module that was
  imported before (contsnap itself imports ``tokenize``) is dropped from
  ``sys.modules`` first, and the script prints the check that the module the
  tests use was loaded by the hook with its generator functions transformed.

``mark_all`` marks generator, coroutine and async generator functions and
generator lambdas; ``--generators-only`` leaves ``async def``s plain (with a
separate transform cache).

Each suite runs three times, each in a fresh child process: natively, hooked,
and hooked in round-trip mode (``CONTSNAP_ROUNDTRIP=1``: every checkpointable
generator moved to a restored copy at every suspension); ``--modes`` may add
``pickle`` (``CONTSNAP_ROUNDTRIP=pickle``: the same with values copied). The table compares
pass/fail/error/skip counts; every test that fails only in a hooked run is
listed with its error. A SUITE argument is a test module (its test module is
hooked), ``MODULE:TESTMODULE`` (MODULE is hooked; several, comma-separated)
or the name of a third-party package. Not part of the default
pytest run: it takes a while and the stdlib suites change between Python
versions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import types
from collections.abc import Iterator
from typing import Any, NamedTuple

LANGUAGE_SUITES = (
    "test.test_generators",
    "test.test_yield_from",
    "test.test_contextlib",
    "test.test_coroutines",
    "test.test_asyncgen",
    "test.test_contextlib_async",
)
MODULE_SUITES = (
    "difflib:test.test_difflib",
    "tokenize:test.test_tokenize",
    "heapq:test.test_heapq",
)


class Pinned(NamedTuple):
    """A third-party suite, pinned so that the counts in docs/roundtrip.md can be reproduced."""

    dist: str
    version: str
    #: the modules to hook, each with its submodules
    hooked: tuple[str, ...]
    #: unittest modules, or pytest paths (with a "/"), relative to the unpacked sdist
    tests: tuple[str, ...]
    #: where the package's import root is, relative to the unpacked sdist ("src")
    src: str = ""


THIRD_PARTY = {
    "more_itertools": Pinned(
        "more-itertools",
        "10.7.0",
        ("more_itertools",),
        ("tests.test_more", "tests.test_recipes"),
    ),
    # its tests live in the package (toolz.tests): hook the modules, not "toolz"
    "toolz": Pinned(
        "toolz",
        "1.2.0",
        (
            "toolz.itertoolz",
            "toolz.recipes",
            "toolz.functoolz",
            "toolz.dicttoolz",
            "toolz.utils",
            "toolz.curried",
            "toolz.sandbox.core",
            "toolz.sandbox.parallel",
        ),
        ("toolz/tests/", "toolz/sandbox/tests/"),
    ),
    # its modules with generators (the package's __init__ is empty)
    "boltons": Pinned(
        "boltons",
        "26.2.0",
        tuple(
            f"boltons.{name}utils"
            for name in ["cache", "dict", "file", "iter", "json", "set", "str", "tb", "time", "url"]
        ),
        ("tests/",),
    ),
    # async generators and coroutines, driven by the tests' own tiny event loop
    "asyncstdlib": Pinned("asyncstdlib", "3.14.0", ("asyncstdlib",), ("unittests/",)),
    # async generators over asyncio; its unittest tests live in the package
    "aioitertools": Pinned(
        "aioitertools",
        "0.13.0",
        tuple(
            f"aioitertools.{name}"
            for name in ["asyncio", "builtins", "helpers", "itertools", "more_itertools", "types"]
        ),
        ("aioitertools.tests",),
    ),
    "funcy": Pinned("funcy", "2.1", ("funcy",), ("tests/",)),
    # the lexer, the compiled templates' runtime, async rendering
    "jinja2": Pinned("jinja2", "3.1.6", ("jinja2",), ("tests/",), src="src"),
    # lexers are generators over generators (RegexLexer, using(), the filters)
    "pygments": Pinned(
        "pygments",
        "2.21.0",
        tuple(
            f"pygments.{name}"
            for name in ["lexer", "lexers", "filter", "filters", "formatters", "style", "styles"]
        ),
        ("tests/snippets/",),
    ),
    # scan_string, search_string and the helpers (test_unit.py takes minutes natively)
    "pyparsing": Pinned(
        "pyparsing", "3.3.3", ("pyparsing",), ("tests/test_simple_unit.py", "tests/test_util.py")
    ),
}
#: Left out of the round-trip columns only (they pass hooked): each runs millions of
#: suspensions, and a move at every one (some 30 us each) would take minutes per test.
ROUNDTRIP_TOO_SLOW = frozenset(
    {
        "tests.test_recipes.FactorTests.test_cross_check",
        "tests.test_recipes.PolynomialFromRootsTests.test_large",
        "tests.test_recipes.PrimeFunctionTests.test_primes",
    }
)
MODES = ("native", "hooked", "roundtrip")
#: ``--modes`` may also name this one: round trip with values copied (``CONTSNAP_ROUNDTRIP=pickle``)
EXTRA_MODES = ("pickle",)
MARKER = "\n@@contsnap-conformance@@"


def _mark_doctests() -> None:
    """Compile doctest examples with mark_all's decorator on their generator functions."""
    import ast
    import builtins
    import doctest

    from contsnap._marking import _plan

    builtins.__contsnap_mark__ = _plan.mark  # type: ignore[attr-defined]
    real_compile = compile

    def marked_compile(source: Any, filename: str, mode: str, flags: int = 0, *rest: Any) -> Any:
        tree = real_compile(source, filename, mode, flags | ast.PyCF_ONLY_AST, *rest)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if _plan._marks(node) and not _plan._explicit(node):
                mark = ast.Name(_plan.MARK_NAME, ast.Load())
                ast.copy_location(mark, node)
                mark.end_lineno, mark.end_col_offset = node.lineno, node.col_offset
                node.decorator_list.append(mark)
        return real_compile(tree, filename, mode, flags, *rest)

    doctest.compile = marked_compile  # type: ignore[attr-defined]


def _mark_generators_only() -> None:
    """Let mark_all leave coroutine and async generator functions plain, cached apart."""
    import ast

    from contsnap._marking import _cache_key, _plan

    _plan.MARKED_KINDS = (ast.FunctionDef,)
    real_key, real_path = _cache_key.cache_key, _cache_key.cache_path
    _cache_key.cache_key = lambda data, mode: real_key(data, mode and f"{mode}-gen")  # type: ignore[assignment]
    _cache_key.cache_path = lambda path, mode: real_path(path, mode and f"{mode}-gen")  # type: ignore[assignment]


def _transformed(module: Any) -> list[str]:
    """Qualified names of the checkpointable functions defined in ``module``'s namespace.

    A function made by a warm import's cached module code counts too: its info is
    built on first use, and looking must not build it (that would change the run).
    """
    from contsnap._info import is_pending

    found = []
    for name, value in vars(module).items():
        members = vars(value).items() if isinstance(value, type) else [(None, value)]
        for member_name, member in members:
            fn = getattr(member, "__func__", member)
            code = getattr(fn, "__code__", None)
            if getattr(fn, "__contsnap__", None) is not None or (
                isinstance(code, types.CodeType) and is_pending(code)
            ):
                found.append(f"{name}.{member_name}" if member_name else name)
    return sorted(found)


def _tests_of(suite: Any) -> Iterator[Any]:
    for test in suite:
        if hasattr(test, "_tests"):
            yield from _tests_of(test)
        else:
            yield test


class _PytestOutcomes:
    """A pytest plugin that keeps each test's outcome, in unittest's terms."""

    def __init__(self, roundtrip: bool) -> None:
        self.roundtrip = roundtrip
        self.outcomes: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        self.errors: dict[str, str] = {}

    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        if self.roundtrip:
            import pytest

            for item in items:
                if item.nodeid in ROUNDTRIP_TOO_SLOW:
                    reason = "too slow with a round trip at every suspension"
                    item.add_marker(pytest.mark.skip(reason=reason))

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.outcomes[report.nodeid] = "error"
            self.errors[report.nodeid] = report.longreprtext

    def pytest_runtest_logreport(self, report: Any) -> None:
        nodeid, seen = report.nodeid, self.outcomes.get(report.nodeid)
        if report.when == "call" or seen is None:
            if report.failed:
                if report.when == "call":
                    outcome = "failure"
                    self.failures[nodeid] = report.longreprtext
                else:
                    outcome = "error"
                    self.errors[nodeid] = report.longreprtext
            elif report.skipped:
                outcome = "skipped"  # xfail included
            else:
                outcome = "unexpected success" if hasattr(report, "wasxfail") else "passed"
            if seen not in ("error", "failure"):
                self.outcomes[nodeid] = outcome
        elif report.failed and seen not in ("error", "failure"):  # a teardown's error
            self.outcomes[nodeid] = "error"
            self.errors[nodeid] = report.longreprtext


def _run_pytest(paths: list[str], roundtrip: bool) -> dict[str, Any]:
    """Run pytest in this process on ``paths`` (the cwd is the unpacked sdist)."""
    import pytest

    outcomes = _PytestOutcomes(roundtrip)
    # no plugins from entry points (contsnap's own is not wanted: the hook is
    # installed above, and pytest would warn that contsnap cannot be rewritten)
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    args = ["-q", "--no-header", "-p", "no:cacheprovider", *paths]
    pytest.main(args, plugins=[outcomes])
    kinds = list(outcomes.outcomes.values())
    return {
        "run": len(kinds),
        "failures": outcomes.failures,
        "errors": outcomes.errors,
        "unexpected_successes": [
            nodeid
            for nodeid, outcome in outcomes.outcomes.items()
            if outcome == "unexpected success"
        ],
        "skipped": kinds.count("skipped"),
    }


def _is_pytest_path(test: str) -> bool:
    return "/" in test or test.endswith(".py")


def child(
    spec: str, hooked: bool, doctests: bool, mark_async: bool, path: str | None, src: str = ""
) -> dict[str, Any]:
    """Run one suite's tests in this process; return counts and the failures."""
    import importlib
    import warnings

    under_test, _, tests = spec.rpartition(":")
    test_modules = tests.split(",")
    modules_under_test = under_test.split(",") if under_test else []
    use_pytest = all(map(_is_pytest_path, test_modules))
    assert use_pytest or not any(map(_is_pytest_path, test_modules)), spec
    assert modules_under_test or not use_pytest, "pytest suites hook a module under test"
    hooked_names = modules_under_test or test_modules
    roundtrip = hooked and bool(os.environ.get("CONTSNAP_ROUNDTRIP"))
    if path:
        sys.path.insert(0, os.path.join(path, src))
    counts: dict[str, Any] = {"marked": 0, "refused": 0}
    if hooked:
        import contsnap
        from contsnap._marking import _plan

        real_mark = _plan.mark

        def counting_mark(fn: Any, *args: Any) -> Any:
            result = real_mark(fn, *args)
            if getattr(result, "__contsnap__", None) is not None:
                counts["marked"] += 1
            elif fn is result and getattr(fn, "__code__", None) in _plan._REFUSED:
                counts["refused"] += 1
            return result

        _plan.mark = counting_mark
        # the hook binds the mark in a module's namespace before its code runs
        _plan._BINDINGS = tuple(  # type: ignore[attr-defined]
            (name, counting_mark if value is real_mark else value)
            for name, value in _plan._BINDINGS  # type: ignore[attr-defined]
        )
        if not mark_async:
            _mark_generators_only()
        contsnap.install_import_hook(hooked_names, mark_all=True)
        if doctests and not modules_under_test:
            _mark_doctests()
    # contsnap (or the interpreter's start-up) may have imported them already: from
    # here on, every import of them must go through the hook (or, natively, anew)
    for under in modules_under_test:
        for name in [n for n in sys.modules if n == under or n.startswith(under + ".")]:
            del sys.modules[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        checks, modules, transformed = [], {}, 0
        for under in modules_under_test:
            module = modules[under] = importlib.import_module(under)
            loader = type(module.__loader__).__name__
            functions = _transformed(module)
            transformed += len(functions)
            checks.append(
                f"{under} from {module.__file__}, loaded by {loader}, "
                f"{len(functions)} checkpointable function(s) in its namespace"
                + (f" (e.g. {', '.join(functions[:3])})" if functions else "")
            )
            if hooked:
                assert loader == "HookLoader", module.__loader__
        if hooked and modules_under_test:
            assert transformed, f"no generator function of {under_test} was transformed"
        if modules_under_test:
            counts["check"] = "; ".join(checks)
        if use_pytest:
            outcome = _run_pytest(test_modules, roundtrip)
        else:
            outcome = _run_unittest(test_modules, modules, hooked, roundtrip, counts)
    refusals = sorted({str(w.message) for w in caught if str(w.message).startswith("contsnap:")})
    if hooked:
        from contsnap import _info

        # made by a warm import's cached module code, with no mark call
        counts["cached"] = sum(len(entries) for _, entries, _ in _info._UNINDEXED) + sum(
            len(made) for made in _info._UNBUILT_OF_MODULE.values()
        )
    if roundtrip:
        from contsnap import _roundtrip

        summary = _roundtrip.report()
        counts["round_trips"] = summary["total"]
        counts["round_trip_kinds"] = summary["round_trips"]
        counts["skipped_suspensions"] = sum(summary["skipped_suspensions"].values())
        counts["round_trip_failures"] = summary["failures"]
    return {**outcome, "refusals": refusals, **counts}


def _run_unittest(
    test_modules: list[str],
    modules: dict[str, Any],
    hooked: bool,
    roundtrip: bool,
    counts: dict[str, Any],
) -> dict[str, Any]:
    import importlib
    import io
    import unittest

    suite = unittest.TestSuite()
    for name in test_modules:
        mod = importlib.import_module(name)
        if hooked and not modules:
            assert type(mod.__loader__).__name__ == "HookLoader", mod.__loader__
        suite.addTest(unittest.defaultTestLoader.loadTestsFromModule(mod))
        if hasattr(mod, "__test__") and not hasattr(mod, "load_tests"):
            import doctest  # 3.10's test_generators runs its doctests from test_main()

            suite.addTest(doctest.DocTestSuite(mod))
    # the tests may import a module under test afresh themselves (test_heapq's
    # py_heapq and c_heapq): those copies must be hooked too
    fresh = [
        (f"{mod.__name__}.{name}", value)
        for mod in map(importlib.import_module, test_modules)
        for name, value in vars(mod).items()
        if isinstance(value, types.ModuleType)
        and value.__name__ in modules
        and value is not modules[value.__name__]
    ]
    for name, copy in fresh:
        counts["check"] += (
            f"; the tests' own {name} is loaded by {type(copy.__loader__).__name__}, "
            f"{len(_transformed(copy))} checkpointable"
        )
        if hooked:
            assert type(copy.__loader__).__name__ == "HookLoader", copy.__loader__
    if roundtrip:
        for test in _tests_of(suite):
            if test.id() in ROUNDTRIP_TOO_SLOW:
                method = getattr(test, test._testMethodName)
                skip = unittest.skip("too slow with a round trip at every suspension")
                setattr(test, test._testMethodName, skip(method))
    result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
    return {
        "run": result.testsRun,
        "failures": {t.id(): tb for t, tb in result.failures},
        "errors": {t.id(): tb for t, tb in result.errors},
        "unexpected_successes": [t.id() for t in result.unexpectedSuccesses],
        "skipped": len(result.skipped),
    }


def run_child(
    python: str, suite: dict[str, Any], mode: str, args: argparse.Namespace
) -> dict[str, Any]:
    cmd = [python, __file__, "--child", suite["spec"]]
    if mode != "native":
        cmd.append("--hooked")
    if args.no_doctests:
        cmd.append("--no-doctests")
    if args.generators_only:
        cmd.append("--generators-only")
    if suite.get("path"):
        cmd += ["--path", suite["path"]]
    if suite.get("src"):
        cmd += ["--src", suite["src"]]
    env = dict(os.environ)
    env.pop("CONTSNAP_ROUNDTRIP", None)
    if mode == "roundtrip":
        env["CONTSNAP_ROUNDTRIP"] = "1"
    elif mode == "pickle":
        env["CONTSNAP_ROUNDTRIP"] = "pickle"
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=args.timeout,
            env=env,
            cwd=suite.get("path"),
        )
    except subprocess.TimeoutExpired:
        return {"crash": f"timed out after {args.timeout} s (--timeout)"}
    if MARKER not in proc.stdout:
        return {"crash": f"exit {proc.returncode}\n{proc.stderr[-3000:]}"}
    data: dict[str, Any] = json.loads(proc.stdout.split(MARKER, 1)[1])
    return data


def third_party_suites(python: str, cache_dir: str, names: list[str]) -> list[dict[str, Any]]:
    """Download (once) and unpack the pinned sdists; a suite per package."""
    suites = []
    for dist, version, hooked, tests, src in map(THIRD_PARTY.__getitem__, names):
        root = os.path.join(cache_dir, f"{dist.replace('-', '_')}-{version}")
        if not os.path.isdir(root):
            os.makedirs(cache_dir, exist_ok=True)
            cmd = [python, "-m", "pip", "download", "--quiet", "--no-deps"]
            cmd += ["--no-binary", ":all:", "--dest", cache_dir, f"{dist}=={version}"]
            subprocess.run(cmd, check=True)
            archive = os.path.join(cache_dir, f"{dist.replace('-', '_')}-{version}.tar.gz")
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(cache_dir, filter="data")
                else:
                    tar.extractall(cache_dir)
        suites.append(
            {
                "spec": f"{','.join(hooked)}:{','.join(tests)}",
                "path": root,
                "src": src,
                "name": f"{dist} {version}",
            }
        )
    return suites


def _tally(data: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """run, passed, failed, errors, skipped of one child's result (by test: the failing
    subtests of one test count once; a subtest's id is its test's, a space, and its
    description)."""
    failing = {test_id.split(" ", 1)[0] for test_id in data["failures"]}
    erring = {test_id.split(" ", 1)[0] for test_id in data["errors"]} - failing
    failed, errors = len(failing), len(erring)
    return (
        data["run"],
        data["run"] - failed - errors - data["skipped"],
        failed,
        errors,
        data["skipped"],
    )


def _summary(data: dict[str, Any]) -> str:
    if "crash" in data:
        return "CRASHED"
    run, passed, failed, errors, skipped = _tally(data)
    return f"{run:4d} run {passed:4d} ok {failed:3d} fail {errors:3d} error {skipped:3d} skip"


def _cell(data: dict[str, Any]) -> str:
    if "crash" in data:
        return "crashed"
    run, passed, failed, errors, skipped = _tally(data)
    cell = f"{passed}/{run} ({failed} f, {errors} e, {skipped} s)"
    if "round_trips" in data:
        cell += f"; {data['round_trips']:,} round trips"
    return cell


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "suites",
        nargs="*",
        help="TESTMODULE, MODULE:TESTMODULE or a third-party package: " + ", ".join(THIRD_PARTY),
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter to test")
    parser.add_argument("--no-doctests", action="store_true", help="leave doctests unmarked")
    parser.add_argument(
        "--generators-only",
        action="store_true",
        help="mark generator functions only, as mark_all does",
    )
    parser.add_argument(
        "--third-party",
        action="store_true",
        help=f"also {', '.join(THIRD_PARTY)} (downloads their sdists; a SUITE may name one)",
    )
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
            "contsnap-conformance",
        ),
        help="where --third-party keeps the downloaded sdists",
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated subset of " + ",".join(MODES + EXTRA_MODES),
    )
    parser.add_argument(
        "--timeout", type=int, default=1800, help="seconds for one run of one suite (1800)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--hooked", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--src", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if args.child:
        data = child(
            args.child,
            args.hooked,
            not args.no_doctests,
            not args.generators_only,
            args.path,
            args.src,
        )
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
    modes = [m for m in args.modes.split(",") if m]
    chosen = [s for s in args.suites if s in THIRD_PARTY]
    if args.third_party:
        chosen = list(THIRD_PARTY)
    stdlib = [s for s in args.suites if s not in THIRD_PARTY]
    if not args.suites:
        stdlib = [*LANGUAGE_SUITES, *MODULE_SUITES]
    suites = [{"spec": s} for s in stdlib]
    suites += third_party_suites(args.python, args.cache_dir, chosen)
    marks = (
        "generator functions"
        if args.generators_only
        else "generator, coroutine and async generator functions"
    )
    print(f"Python {version}: {', '.join(modes)} (mark_all=True, marking {marks})\n")
    new_problems = 0
    table = []
    for suite in suites:
        name = suite.get("name") or suite["spec"]
        results = {mode: run_child(args.python, suite, mode, args) for mode in modes}
        table.append((name, results))
        print(name)
        for mode, data in results.items():
            print(f"  {mode:9s} {_summary(data)}")
            if "crash" in data:
                new_problems += 1
                print(textwrap.indent(f"{mode} run crashed: {data['crash']}", "    "))
        native = results.get("native", {})
        native_bad = set(native.get("failures", ())) | set(native.get("errors", ()))
        for test_id in sorted(native_bad):
            print(f"  fails natively too: {test_id}")
        seen_hooked: set[str] = set()
        for mode, data in results.items():
            if mode == "native" or "crash" in data:
                continue
            if mode == "hooked" or "hooked" not in results:
                print(
                    f"  functions marked: {data['marked']}, made from the warm cache: "
                    f"{data.get('cached', 0)}, left plain: {data['refused']}"
                )
                if "check" in data:
                    print(f"  check: {data['check']}")
                for message in data["refusals"]:
                    print(textwrap.indent(textwrap.fill(message, 100), "    "))
            if "round_trips" in data:
                print(
                    f"  round trips performed ({mode}): {data['round_trips']} "
                    f"{data.get('round_trip_kinds', {})}, suspensions skipped: "
                    f"{data.get('skipped_suspensions', 0)}"
                )
                for message, times in data.get("round_trip_failures", {}).items():
                    print(textwrap.indent(textwrap.fill(f"{times}x {message}", 100), "    "))
            for kind in ("failures", "errors"):
                for test_id, tb in sorted(data[kind].items()):
                    if test_id in native_bad or test_id in seen_hooked:
                        continue
                    if mode == "hooked":
                        seen_hooked.add(test_id)
                    new_problems += 1
                    lines = tb.strip().splitlines()
                    shown = lines if args.verbose else lines[-6:]
                    print(f"  NEW {kind[:-1].upper()} ({mode}): {test_id}")
                    print(textwrap.indent("\n".join(shown), "      "))
        print()
    print(f"| suite | {' | '.join(modes)} |")
    print(f"|---|{'---|' * len(modes)}")
    for name, results in table:
        print(f"| {name} | {' | '.join(_cell(results[m]) for m in modes)} |")
    print(f"\n{new_problems} problem(s) seen only in a hooked run")
    return 1 if new_problems else 0


if __name__ == "__main__":
    sys.exit(main())
