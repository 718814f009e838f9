"""Round-trip test mode and the pytest plugin, run as a user would: in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = {
    "pkgrt/__init__.py": "",
    "pkgrt/gens.py": """
        LOG = []

        def countdown(n):
            try:
                while n:
                    received = yield n
                    if received:
                        n = received
                    n -= 1
            finally:
                LOG.append("done")

        def outer(n):
            total = yield from countdown(n)
            yield "end"

        class Job:
            def __init__(self):
                self.steps = self.run()

            def run(self):
                for i in range(3):
                    yield i
    """,
    "pkgrt/coros.py": """
        import asyncio
        import contsnap

        LOG = []

        async def inner(n):
            total = 0
            for i in range(n):
                await contsnap.checkpoint()
                await asyncio.sleep(0)  # not a safe point: skipped, not moved
                total += i
            return total

        async def outer():
            try:
                return await inner(4) + await inner(3)
            finally:
                LOG.append("finally")

        async def numbers(n):
            try:
                for i in range(n):
                    await contsnap.checkpoint()
                    received = yield i
                    if received is not None:
                        LOG.append(received)
            finally:
                LOG.append("agen finally")

        async def collect(n):
            return [x async for x in numbers(n)]

        class Manager:
            async def __aenter__(self):
                await contsnap.checkpoint()
                LOG.append("entered")
                return self

            async def __aexit__(self, *exc):
                await contsnap.checkpoint()
                LOG.append("exited")

        def plain_helper(n):
            return inner(n)  # a driven coroutine, awaited by transformed code

        async def through_helpers():
            async with Manager() as manager:
                value = await plain_helper(3)
            return manager is not None, value
    """,
    "test_pkgrt_async.py": """
        import asyncio
        import inspect
        import unittest

        from pkgrt import coros

        class Coroutines(unittest.IsolatedAsyncioTestCase):
            async def test_await_chain(self):
                coros.LOG.clear()
                self.assertTrue(inspect.iscoroutinefunction(coros.outer))
                self.assertEqual(await coros.outer(), 9)
                self.assertEqual(coros.LOG, ["finally"])

            async def test_async_for_in_marked_and_plain_code(self):
                coros.LOG.clear()
                self.assertEqual(await coros.collect(4), [0, 1, 2, 3])
                self.assertEqual([x async for x in coros.numbers(3)], [0, 1, 2])
                self.assertEqual(coros.LOG, ["agen finally"] * 2)

            async def test_asend_athrow_aclose(self):
                coros.LOG.clear()
                agen = coros.numbers(5)
                self.assertTrue(inspect.isasyncgenfunction(coros.numbers))
                self.assertEqual(await agen.asend(None), 0)
                self.assertEqual(await agen.asend("hello"), 1)
                with self.assertRaises(KeyError):
                    await agen.athrow(KeyError("boom"))
                await agen.aclose()
                self.assertEqual(coros.LOG, ["hello", "agen finally"])

            async def test_plain_callers_in_between(self):
                coros.LOG.clear()
                self.assertEqual(await coros.through_helpers(), (True, 3))
                self.assertEqual(coros.LOG, ["entered", "exited"])

            async def test_cancel_reaches_the_handlers(self):
                coros.LOG.clear()
                task = asyncio.ensure_future(coros.outer())
                for _ in range(3):
                    await asyncio.sleep(0)
                task.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await task
                self.assertEqual(coros.LOG, ["finally"])
    """,
    "pkgrt/wrapped.py": """
        import functools
        import contsnap

        def sync(function):  # asyncstdlib.sync: an awaitable form of a plain function
            @functools.wraps(function)
            async def async_wrapped(*args, **kwargs):
                await contsnap.checkpoint()
                return function(*args, **kwargs)
            return async_wrapped

        def plus_ten(x):
            return x + 10

        def numbered(generator_function):  # functools.wraps of another marked function
            @functools.wraps(generator_function)
            def numbered_wrapper(*args):
                for i, item in enumerate(generator_function(*args)):
                    yield i, item
            return numbered_wrapper

        def letters(word):
            yield from word
    """,
    "test_pkgrt_wrapped.py": """
        import asyncio
        import weakref

        from pkgrt import wrapped

        def test_functools_wraps_over_a_marked_function():
            synced = wrapped.sync(wrapped.plus_ten)
            assert synced.__wrapped__ is wrapped.plus_ten
            assert synced.__name__ == "plus_ten"
            assert asyncio.run(synced(x=1)) == 11
            numbered = wrapped.numbered(wrapped.letters)
            assert numbered.__wrapped__ is wrapped.letters
            assert list(numbered("ab")) == [(0, "a"), (1, "b")]
            assert weakref.ref(numbered)() is numbered
    """,
    "pkgrt/linked.py": """
        class Chain:  # boltons.dictutils.OMD: pickled through its own generator
            def __init__(self, items):
                self.items = list(items)

            def __iter__(self):
                for item in self.items:
                    yield item

            def __reduce__(self):
                return (Chain, (list(self),))

        def walk(chain):
            for item in chain:
                yield item
    """,
    "test_pkgrt_linked.py": """
        from pkgrt import linked

        def test_a_generator_run_by_a_reduce_while_its_caller_is_moved():
            assert list(linked.walk(linked.Chain("abc"))) == ["a", "b", "c"]
    """,
    "test_pkgrt.py": """
        from pkgrt import gens

        def test_countdown():
            gens.LOG.clear()
            g = gens.countdown(5)
            assert next(g) == 5
            assert g.send(3) == 2
            assert list(g) == [1]
            assert gens.LOG == ["done"]

        def test_delegation_and_shared_generator():
            assert list(gens.outer(2)) == [2, 1, "end"]
            job = gens.Job()
            assert [next(job.steps), next(job.steps)] == [0, 1]
    """,
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name, text in PACKAGE.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def _pytest(
    project: Path, *args: str, env: dict[str, str] | None = None, tests: str = "test_pkgrt.py"
) -> str:
    # this checkout's contsnap, not the one the interpreter has installed
    path = os.pathsep.join([str(project), *(p for p in sys.path if p)])
    environment = dict(os.environ, PYTHONPATH=path, **(env or {}))
    environment.pop("CONTSNAP_ROUNDTRIP", None)
    environment.update(env or {})
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, tests],
        cwd=project,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.parametrize("flag", ["--contsnap-roundtrip", "--contsnap-roundtrip-pickle"])
def test_plugin_moves_every_generator_and_the_suite_still_passes(project: Path, flag: str) -> None:
    output = _pytest(project, "--contsnap-hook=pkgrt", flag)
    assert "2 passed" in output
    line = next(x for x in output.splitlines() if x.startswith("contsnap round trips"))
    assert int(line.split(":")[1].split()[0]) >= 8


def test_environment_variable_and_json_report(project: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    _pytest(
        project,
        "--contsnap-hook=pkgrt",
        env={"CONTSNAP_ROUNDTRIP": "1", "CONTSNAP_ROUNDTRIP_REPORT": str(report)},
    )
    summary = json.loads(report.read_text())
    assert summary["mode"] == "1"
    assert summary["round_trips"]["generator"] == summary["total"] >= 8
    assert summary["failures"] == {}


def test_a_run_without_round_trips_says_so(project: Path) -> None:
    output = _pytest(project, "--contsnap-roundtrip")  # no hook: nothing is marked
    assert "NO ROUND TRIP WAS PERFORMED" in output


@pytest.mark.parametrize("mode", ["1", "pickle"])
def test_coroutines_and_async_generators_are_moved_too(
    project: Path, tmp_path: Path, mode: str
) -> None:
    report = tmp_path / "report.json"
    output = _pytest(
        project,
        "--contsnap-hook=pkgrt",
        env={"CONTSNAP_ROUNDTRIP": mode, "CONTSNAP_ROUNDTRIP_REPORT": str(report)},
        tests="test_pkgrt_async.py",
    )
    assert "5 passed" in output
    summary = json.loads(report.read_text())
    assert summary["failures"] == {}
    # 7 checkpoints in outer(), more in the cancelled run; an async generator at each yield
    assert summary["round_trips"]["coroutine"] >= 7
    assert summary["round_trips"]["async_generator"] >= 4
    skipped = summary["skipped_suspensions"]
    assert any("coroutine object sleep" in reason for reason in skipped), skipped


@pytest.mark.parametrize("flag", ["--contsnap-roundtrip", "--contsnap-roundtrip-pickle"])
def test_functools_wraps_applied_to_a_driven_function(project: Path, flag: str) -> None:
    # @wraps(f) over a marked function sets its __wrapped__ and copies f's attributes
    # over it: the driven form must keep calling its own function (asyncstdlib.sync)
    output = _pytest(project, "--contsnap-hook=pkgrt", flag, tests="test_pkgrt_wrapped.py")
    assert "1 passed" in output
    line = next(x for x in output.splitlines() if x.startswith("contsnap round trips"))
    assert int(line.split(":")[1].split()[0]) >= 3


@pytest.mark.parametrize("mode", ["1", "pickle"])
def test_a_generator_run_while_a_move_pickles_is_not_moved(
    project: Path, tmp_path: Path, mode: str
) -> None:
    # pickling walk()'s frame calls Chain.__reduce__, which runs Chain.__iter__, a marked
    # generator: moving that one too pickled the chain again, without end
    report = tmp_path / "report.json"
    env = {"CONTSNAP_ROUNDTRIP": mode, "CONTSNAP_ROUNDTRIP_REPORT": str(report)}
    output = _pytest(project, "--contsnap-hook=pkgrt", env=env, tests="test_pkgrt_linked.py")
    assert "1 passed" in output
    summary = json.loads(report.read_text())
    assert summary["failures"] == {}
    assert summary["round_trips"]["generator"] >= 3
    if mode == "pickle":
        assert sum(n for why, n in summary["skipped_suspensions"].items() if "move" in why)
