"""The import hook: which modules it transforms, mark_all, its disk cache, positions and names."""

from __future__ import annotations

import builtins
import importlib
import importlib.machinery
import inspect
import itertools
import linecache
import marshal
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import contsnap
from contsnap import _info, _runtime
from contsnap._info import FunctionInfo
from contsnap._marking import (
    _cache,
    _cache_key,
    _decorator,
    _hook,
    _hooked,
    _marking,
    _plan,
    _prebuilt,
)
from contsnap.testing import LOG, check_generator_equivalence, driver_actions

_names = itertools.count()

GENERATORS = """\
    import contsnap


    def counter(n):
        total = 0
        for i in range(n):
            total += yield i
        return total


    def plain(x):
        return x * 2


    class Box:
        def items(self, k):
            yield k
            yield k + 1

        @staticmethod
        def static(a):
            yield a

        @classmethod
        def klass(cls, a):
            yield cls.__name__, a


    def factory(x):
        def inner():
            yield x
        return inner


    def outer(m):

        def nested():
            yield m
        yield from nested()


    def crowded(m):
        value = m
        def squeezed():
            yield value
        yield from squeezed()


    async def coroutine():
        return 1


    async def agen():
        yield 1


    lam = lambda: (yield 1)


    @contsnap.checkpointable
    def explicit(n):
        yield n
    """


class Packages:
    """Writes throwaway packages under tmp_path and forgets them (and their hooks) afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[str] = []

    def make(self, files: dict[str, str], prefix: str = "hk") -> str:
        name = f"{prefix}_{os.getpid()}_{next(_names)}"
        self.made.append(name)
        for rel, text in {"__init__.py": "", **files}.items():
            path = self.root / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return name

    def path(self, name: str, rel: str) -> Path:
        return self.root / name / rel

    def forget(self) -> None:
        for mod in list(sys.modules):
            if any(mod == n or mod.startswith(n + ".") for n in self.made):
                del sys.modules[mod]


@pytest.fixture
def pkgs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Packages]:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.syspath_prepend(str(tmp_path))
    meta_path = list(sys.meta_path)
    packages = Packages(tmp_path)
    try:
        yield packages
    finally:
        sys.meta_path[:] = meta_path
        packages.forget()


@pytest.fixture
def transforms(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Qualnames of the functions the libcst transform actually ran for."""
    seen: list[str] = []
    real = _marking._transform

    def counting(fn: types.FunctionType, source: str, first: int) -> Any:
        seen.append(fn.__qualname__)
        return real(fn, source, first)

    monkeypatch.setattr(_marking, "_transform", counting)
    return seen


def _import(name: str) -> types.ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return importlib.import_module(name)


def _is_checkpointable(fn: Any) -> bool:
    return _decorator.function_info(fn) is not None


def _cache_file(pkgs: Packages, name: str, rel: str, mode: str = "all") -> Path:
    found = _cache_key.cache_path(str(pkgs.path(name, rel)), mode)
    assert found is not None
    return Path(found)


# --- which modules ------------------------------------------------------------------------


def test_only_named_modules_are_transformed(pkgs: Packages) -> None:
    hooked = pkgs.make({"mod.py": GENERATORS})
    other = pkgs.make({"mod.py": GENERATORS})
    with contsnap.install_import_hook(hooked, mark_all=True):
        a = _import(f"{hooked}.mod")
        b = _import(f"{other}.mod")
    assert _is_checkpointable(a.counter)
    assert isinstance(a.__loader__, _hook.HookLoader)
    assert not _is_checkpointable(b.counter)
    assert type(b.__loader__) is importlib.machinery.SourceFileLoader
    assert "__contsnap_mark__" not in vars(b)


def test_a_name_claims_its_submodules_but_not_longer_names(pkgs: Packages) -> None:
    base = pkgs.make({"sub/__init__.py": "", "sub/deep.py": GENERATORS, "top.py": GENERATORS})
    sibling = pkgs.make({"mod.py": GENERATORS}, prefix=base)  # named "<base>_N": not a submodule
    with contsnap.install_import_hook([base], mark_all=True):
        deep = _import(f"{base}.sub.deep")
        top = _import(f"{base}.top")
        near = _import(f"{sibling}.mod")
    assert _is_checkpointable(deep.counter) and _is_checkpointable(top.counter)
    assert not _is_checkpointable(near.counter)


def test_uninstall_and_context_manager_restore_the_import_system(pkgs: Packages) -> None:
    name = pkgs.make({"one.py": GENERATORS, "two.py": GENERATORS, "three.py": GENERATORS})
    before = list(sys.meta_path)
    hook = contsnap.install_import_hook(name, mark_all=True)
    assert sys.meta_path[0] is not before[0] and hook.installed
    assert _is_checkpointable(_import(f"{name}.one").counter)
    hook.uninstall()
    hook.uninstall()  # twice is fine
    assert sys.meta_path == before and not hook.installed
    assert not _is_checkpointable(_import(f"{name}.two").counter)
    # a module transformed while the hook was in place stays transformed
    assert _is_checkpointable(sys.modules[f"{name}.one"].counter)

    with pytest.warns(RuntimeWarning, match=rf"{name}\.two was imported before the hook"):
        again = contsnap.install_import_hook(name, mark_all=True)
    with again:
        assert again.installed and "installed" in repr(again)
        assert _is_checkpointable(_import(f"{name}.three").counter)
    assert sys.meta_path == before


def test_install_rejects_empty_names() -> None:
    with pytest.raises(ValueError, match="not a module name"):
        contsnap.install_import_hook(["ok", ""])


def test_contsnap_itself_is_never_claimed() -> None:
    hook = _hook.ImportHook(("contsnap",), mark_all=True)
    assert not hook.matches("contsnap") and not hook.matches("contsnap._marking._hook")


def test_builtin_modules_are_left_alone_and_frozen_ones_use_their_source() -> None:
    hook = _hook.ImportHook(("sys", "__hello__", "_imp"), mark_all=True)
    finder = _hook._Finder(hook)
    assert finder.find_spec("sys", None) is None
    assert finder.find_spec("_imp", None) is None
    spec = finder.find_spec("__hello__", None)  # frozen; 3.11+ also ship Lib/__hello__.py
    has_source = importlib.machinery.PathFinder.find_spec("__hello__") is not None
    if has_source:
        assert spec is not None and isinstance(spec.loader, _hook.HookLoader)
        assert spec.origin is not None and spec.origin.endswith("__hello__.py")
    else:
        assert spec is None


def test_a_module_with_nothing_to_transform_is_loaded_as_usual(pkgs: Packages) -> None:
    name = pkgs.make({"flat.py": "def f(x):\n    return x + 1\n"})
    with contsnap.install_import_hook(name, mark_all=True):
        flat = _import(f"{name}.flat")
    assert flat.f(1) == 2
    assert _hooked.hooked_module(flat.__file__) is None
    assert not _cache_file(pkgs, name, "flat.py").exists()
    assert "__contsnap_mark__" not in vars(flat)


def test_an_import_while_contsnap_transforms_is_not_hooked(
    pkgs: Packages, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = pkgs.make({"mod.py": GENERATORS, "helper.py": GENERATORS})
    seen: list[types.ModuleType] = []
    real = _marking._transform

    def importing(fn: types.FunctionType, source: str, first: int) -> Any:
        if not seen:  # what contsnap would do if its transform imported a matching module
            seen.append(importlib.import_module(f"{name}.helper"))
        return real(fn, source, first)

    monkeypatch.setattr(_marking, "_transform", importing)
    with contsnap.install_import_hook(name, mark_all=True):
        mod = _import(f"{name}.mod")
    assert _is_checkpointable(mod.counter)
    assert type(seen[0].__loader__) is importlib.machinery.SourceFileLoader
    assert not _is_checkpointable(seen[0].counter)


# --- what mark_all marks ------------------------------------------------------------------


def test_mark_all_marks_generator_functions_everywhere(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    with contsnap.install_import_hook(name, mark_all=True):
        mod = _import(f"{name}.mod")
    for fn in (
        mod.counter,
        mod.Box.items,
        mod.Box.static,
        mod.Box.klass,
        mod.factory(1),
        mod.outer,
        mod.explicit,
        mod.coroutine,
        mod.agen,
        mod.lam,
    ):
        assert _is_checkpointable(fn), fn
    # nested in a transformed generator: marked through the blank line above it
    g = mod.outer(5)
    assert next(g) == 5
    assert _is_checkpointable(g.gi_frame.f_locals["nested"])
    # not generator functions: untouched
    assert not _is_checkpointable(mod.plain)
    assert list(mod.Box().items(3)) == [3, 4]
    assert list(mod.Box.klass(7)) == [("Box", 7)]


LAMBDAS = """\
    simple = lambda n: (yield from range(n))
    first, second = (lambda: (yield 1)), (lambda: (yield "\u00e9t\u00e9") or (yield 2))


    def adder(k):
        return lambda x, *, y=k: (yield x + y)


    def host(k):
        yield 0
        inner = lambda: (yield k * 10)
        yield from inner()


    class Box:
        __secret = 5
        get = lambda self, z=3: (yield self.__secret, z)


    nested = lambda: (yield (lambda: (yield "inner")))
    returns = lambda: (yield)
    broken = lambda: ((yield 1),
                      1 / 0)
    label = f"{(lambda: (yield))}"
    """


def _roundtrip(g: Any) -> Any:
    return contsnap.loads(contsnap.dumps(g))


def test_mark_all_marks_generator_lambdas(pkgs: Packages, transforms: list[str]) -> None:
    name = pkgs.make({"mod.py": LAMBDAS})
    for attempt in ("cold", "warm"):
        pkgs.forget()
        transforms.clear()
        with contsnap.install_import_hook(name, mark_all=True):
            mod = _import(f"{name}.mod")
        for fn in (mod.simple, mod.first, mod.second, mod.adder(1), mod.Box.get, mod.nested):
            assert _is_checkpointable(fn), fn
            assert fn.__name__ == "<lambda>"
        g = mod.simple(4)
        assert (next(g), next(g)) == (0, 1)
        assert list(_roundtrip(g)) == [2, 3]
        # two lambdas on one line are told apart
        g1, g2 = mod.first(), mod.second()
        assert (next(g1), next(g2)) == (1, "\u00e9t\u00e9")
        assert _roundtrip(g2).send(None) == 2
        with pytest.raises(StopIteration) as stop:
            _roundtrip(g1).send(7)
        assert stop.value.value == 7  # the body's value is the return value
        assert list(_roundtrip(mod.adder(5)(1))) == [6]
        g = mod.host(3)
        assert (next(g), next(g)) == (0, 30)
        inner = g.gi_frame.f_locals["inner"]
        assert _is_checkpointable(inner) and inner.__qualname__ == "host.<locals>.<lambda>"
        assert list(_roundtrip(g)) == []
        box = mod.Box()
        g = box.get()
        assert next(g) == (5, 3)  # private names are mangled as in the class
        made = next(mod.nested())
        assert _is_checkpointable(made) and list(_roundtrip(made())) == ["inner"]
        g = mod.broken()
        next(g)
        with pytest.raises(ZeroDivisionError) as info:
            next(_roundtrip(g))
        frame = traceback.extract_tb(info.value.__traceback__)[-1]
        assert (frame.lineno, frame.name) == (23, "<lambda>")
        assert frame.filename == str(pkgs.path(name, "mod.py"))
        if attempt == "warm":
            assert transforms == [], "a warm import reads every lambda from the cache"


DIFFERENTIAL_LAMBDAS = """\
    def counter(limit, log):
        for n in range(limit):
            try:
                log.append((yield n))
            except ValueError as exc:
                log.append(exc.args)
        return limit


    echo = lambda limit, log: (yield from counter(limit, log))
    pair = (lambda limit, log: ((yield limit), (yield -limit))), (
        lambda limit, log: log.append((yield [limit])) or (yield (yield limit)))


    def holder(scale):
        return lambda limit, log: [(yield scale), log.append((yield limit * scale)), scale]
    """


@settings(deadline=None, max_examples=25)
@given(driver_actions(), st.integers(0, 4))
def test_generator_lambdas_behave_as_natively_at_every_suspension(
    actions: list[Any], limit: int
) -> None:
    """Each generator lambda, natively and marked by the hook, run the same, round-tripped
    through bytes at every suspension, and forked: same yields, return, exceptions, log.
    The second hooked import reads the cache the first wrote: there ``counter`` is made
    by the cached module code, its info built on first use, and the source, unchanged
    for longer than the (shortened) trust margin, is not read at all."""
    root = Path(tempfile.mkdtemp(prefix="contsnap-lambdas-"))
    name = f"hkl_{os.getpid()}_{next(_names)}"
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    (root / name / "mod.py").write_text(textwrap.dedent(DIFFERENTIAL_LAMBDAS))
    sys.path.insert(0, str(root))
    writing, margin = sys.dont_write_bytecode, _cache_key.TRUST_MARGIN_NS
    sys.dont_write_bytecode = False
    _cache_key.TRUST_MARGIN_NS = 50_000_000
    time.sleep(0.06)
    try:
        plain = importlib.import_module(f"{name}.mod")
        for warm in (False, True):
            del sys.modules[f"{name}.mod"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the package's __init__
                hook = contsnap.install_import_hook(name, mark_all=True)
            with hook:
                hooked = _import(f"{name}.mod")
            # from the cache: made with its transformed code, its info not built yet
            assert _info.is_pending(hooked.counter.__code__) == warm
            pairs = [
                (plain.counter, hooked.counter),
                (plain.echo, hooked.echo),
                (plain.pair[0], hooked.pair[0]),
                (plain.pair[1], hooked.pair[1]),
                (plain.holder(3), hooked.holder(3)),
            ]
            for native, marked in pairs:
                check_generator_equivalence(native, marked, (limit, LOG), actions, fork_at=1)
                assert _is_checkpointable(marked) and not _is_checkpointable(native)
            record = _hooked.hooked_module(hooked.__file__)
            assert record is not None and (record._data is None) == warm
    finally:
        sys.dont_write_bytecode, _cache_key.TRUST_MARGIN_NS = writing, margin
        sys.path.remove(str(root))
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]
        _decorator.forget_module(f"{name}.mod")
        shutil.rmtree(root, ignore_errors=True)


def test_a_generator_lambda_is_decorated_explicitly_when_its_line_is_unique() -> None:
    made = contsnap.checkpointable(lambda n: (yield from range(n)))
    g = made(3)
    next(g)
    assert list(_roundtrip(g)) == [1, 2]
    with pytest.raises(contsnap.NotCheckpointableError, match="holds 2 generator lambdas"):
        contsnap.checkpointable(lambda: (yield 1)), (lambda: (yield 2))


def test_a_generator_lambda_resumes_in_another_process(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": LAMBDAS})
    mod = _fresh_import(pkgs, name)
    g = mod.second()
    next(g)
    data = contsnap.dumps([g, mod.adder(5)(1)])
    child = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(pkgs.root)!r})
        import contsnap
        contsnap.install_import_hook({name!r}, mark_all=True)
        g, h = contsnap.loads(bytes.fromhex(sys.stdin.read()))
        print(next(g), next(h))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", child], input=data.hex(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "6"]


def test_nested_generator_without_a_free_line_above_warns(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    with contsnap.install_import_hook(name, mark_all=True), pytest.warns(RuntimeWarning) as rec:
        mod = importlib.import_module(f"{name}.mod")
    messages = [str(w.message) for w in rec]
    assert any("squeezed" in m and "blank or comment line" in m for m in messages), messages
    assert list(mod.crowded(4)) == [4]


def test_without_mark_all_only_decorated_functions_change(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    with contsnap.install_import_hook(name):
        mod = _import(f"{name}.mod")
    assert _is_checkpointable(mod.explicit)
    assert not _is_checkpointable(mod.counter)
    assert _hooked.hooked_module(mod.__file__) is not None


def test_the_transform_reads_the_source_that_was_imported(pkgs: Packages) -> None:
    source = """\
        import contsnap

        def factory(x):
            @contsnap.checkpointable
            def inner():
                yield x
            return inner
        """
    name = pkgs.make({"mod.py": source})
    with contsnap.install_import_hook(name):
        mod = _import(f"{name}.mod")
    # edited after the import: inspect.getsource would now read the wrong function
    pkgs.path(name, "mod.py").write_text("\n\n\n\n\ndef other():\n    pass\n")
    linecache.checkcache()
    inner = mod.factory(3)
    assert _is_checkpointable(inner) and list(inner()) == [3]


def test_a_refused_function_keeps_working_and_warns(pkgs: Packages) -> None:
    source = """\
        def fine():
            yield 1

        def refused():
            _cs_mine = 1
            yield _cs_mine
        """
    name = pkgs.make({"mod.py": source})
    with contsnap.install_import_hook(name, mark_all=True), pytest.warns(RuntimeWarning) as rec:
        mod = importlib.import_module(f"{name}.mod")
    assert _is_checkpointable(mod.fine) and not _is_checkpointable(mod.refused)
    assert list(mod.refused()) == [1]
    (message,) = [str(w.message) for w in rec]
    path = pkgs.path(name, "mod.py")
    assert f"refused ({path}:4)" in message and "reserved" in message and "_cs_mine" in message
    assert rec[0].filename == str(path) and rec[0].lineno == 4


def test_an_explicitly_decorated_refusal_still_raises(pkgs: Packages) -> None:
    source = """\
        import contsnap

        @contsnap.checkpointable
        def refused():
            _cs_mine = 1
            yield _cs_mine
        """
    name = pkgs.make({"mod.py": source})
    with (
        contsnap.install_import_hook(name, mark_all=True),
        pytest.raises(contsnap.NotCheckpointableError, match="reserved"),
    ):
        importlib.import_module(f"{name}.mod")


# --- positions and names ------------------------------------------------------------------

FAILING = """\
    def worker(items):
        for item in items:
            reply = yield item
            if reply == "boom":
                raise ValueError(f"bad {item}")


    class Holder:
        def run(self):
            yield "ready"
    """


def test_tracebacks_linecache_and_getsource_show_the_original(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": FAILING})
    with contsnap.install_import_hook(name, mark_all=True):
        mod = _import(f"{name}.mod")
    path = str(pkgs.path(name, "mod.py"))
    g = mod.worker([1, 2])
    next(g)
    with pytest.raises(ValueError) as info:
        g.send("boom")
    frame = traceback.extract_tb(info.value.__traceback__)[-1]
    assert (frame.filename, frame.lineno, frame.name) == (path, 5, "worker")
    assert frame.line == 'raise ValueError(f"bad {item}")'
    assert linecache.getline(path, 3).strip() == "reply = yield item"
    assert inspect.getsource(mod.worker) == textwrap.dedent(FAILING).split("\n\n\n")[0] + "\n"
    assert mod.worker.__code__.co_filename == path


TRACED = """\
    import warnings


    def worker(items, log):
        total = 0
        for item in items:
            try:
                if item < 0:
                    raise ValueError(item)
                got = yield item * 2
                total += got or 0
            except ValueError as exc:
                log.append(str(exc))
            finally:
                log.append("f")
        with open(__file__) as fh:
            first = fh.readline()
        warnings.warn("done here")
        return total, first
    """


def _traced_run(mod: Any, restore: bool) -> tuple[set[int], list[Any], list[tuple[str, int]]]:
    """The lines a tracer (coverage, pdb) sees in ``mod``, the values, the warnings."""
    lines: set[int] = set()

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename != mod.__file__:
            return None
        if event == "line":
            lines.add(frame.f_lineno)
        return tracer

    out: list[Any] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = mod.worker([1, -1, 2], [])
        previous = sys.gettrace()
        sys.settrace(tracer)
        try:
            out.append(next(g))
            while True:
                out.append(g.send(1))
                if restore:
                    g = contsnap.loads(contsnap.dumps(g))
        except StopIteration as stop:
            out.append(stop.value[0])
        finally:
            sys.settrace(previous)
    return lines, out, [(w.filename, w.lineno) for w in caught]


def test_tracers_and_warnings_see_the_users_lines(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": TRACED})
    plain = _import(f"{name}.mod")  # no hook: the native reference
    native = _traced_run(plain, restore=False)
    path = str(pkgs.path(name, "mod.py"))
    assert native[1] == [2, 4, 2] and native[2] == [(path, 18)]
    hooked = _fresh_import(pkgs, name)
    assert _is_checkpointable(hooked.worker)
    assert _traced_run(hooked, restore=False) == native
    lines, out, caught = _traced_run(hooked, restore=True)
    # a restored frame's prologue is reported on the def line, nothing else differs
    assert (out, caught) == native[1:] and lines - native[0] <= {4}
    assert native[0] <= lines


def test_names_stay_the_users(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": FAILING})
    with contsnap.install_import_hook(name, mark_all=True):
        mod = _import(f"{name}.mod")
    fn, method = mod.worker, mod.Holder.run
    assert (fn.__name__, fn.__qualname__, fn.__module__) == ("worker", "worker", f"{name}.mod")
    assert (method.__name__, method.__qualname__) == ("run", "Holder.run")
    g = mod.Holder().run()
    assert (g.__name__, g.__qualname__, g.gi_code.co_name) == ("run", "Holder.run", "run")
    assert "__contsnap" not in repr(g)


# --- get_code users: runpy and reload ----------------------------------------------------


RUNPY_SCRIPT = """\
    def ticks():
        yield 1
        yield 2

    from contsnap._marking._decorator import function_info

    MARKED = function_info(ticks) is not None
    """


def test_runpy_runs_the_transformed_module(pkgs: Packages) -> None:
    script = RUNPY_SCRIPT
    name = pkgs.make({"script.py": script})
    with contsnap.install_import_hook(name, mark_all=True):
        result = runpy.run_module(f"{name}.script", run_name="__main__")
    assert result["MARKED"] is True
    assert list(result["ticks"]()) == [1, 2]


def test_runpy_runs_the_cached_module_code_which_imports_what_the_loader_binds(
    pkgs: Packages,
) -> None:
    script = RUNPY_SCRIPT
    name = pkgs.make({"script.py": script})
    with contsnap.install_import_hook(name, mark_all=True):
        _import(f"{name}.script")  # cached, with ticks compiled in transformed
    assert _cache_file(pkgs, name, "script.py").is_file()
    pkgs.forget()
    with contsnap.install_import_hook(name, mark_all=True):
        result = runpy.run_module(f"{name}.script", run_name="__main__")
    assert result["MARKED"] is True and list(result["ticks"]()) == [1, 2]
    assert result["__contsnap_rt__"] is _runtime and result["__contsnap_mark__"] is _plan.mark


def _imports_during(run: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The modules import statements asked for while ``run`` ran."""
    asked: list[str] = []
    real = builtins.__import__

    def recording(name: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(name)
        return real(name, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "__import__", recording)
        run()
    return asked


def test_a_hooked_module_gets_the_marks_and_runtime_bound_without_an_import(
    pkgs: Packages, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    modules: list[types.ModuleType] = []
    for _ in range(2):  # cold, then warm from the cache
        asked = _imports_during(lambda: modules.append(_fresh_import(pkgs, name)), monkeypatch)
        assert "contsnap" in asked  # the module's own import statement
        assert "contsnap._runtime" not in asked and "contsnap._marking._plan" not in asked
        mod = modules[-1]
        assert mod.__contsnap_mark__ is _plan.mark and mod.__contsnap_rt__ is _runtime
        g = mod.counter(3)
        assert next(g) == 0 and g.send(5) == 1
        assert contsnap.loads(contsnap.dumps(g)).send(1) == 2


def test_reload_transforms_the_new_source(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": "def g():\n    yield 1\n"})
    with contsnap.install_import_hook(name, mark_all=True):
        mod = _import(f"{name}.mod")
        pkgs.path(name, "mod.py").write_text("def g():\n    yield 2\n    yield 3\n")
        os.utime(pkgs.path(name, "mod.py"), ns=(1, 10**18))  # a new mtime, whatever the clock
        mod = importlib.reload(mod)
    assert _is_checkpointable(mod.g) and list(mod.g()) == [2, 3]


# --- the disk cache -----------------------------------------------------------------------


def _fresh_import(
    pkgs: Packages, name: str, *, mark_all: bool = True, quiet: bool = True
) -> types.ModuleType:
    pkgs.forget()
    with contsnap.install_import_hook(name, mark_all=mark_all):
        return _import(f"{name}.mod") if quiet else importlib.import_module(f"{name}.mod")


def test_a_warm_import_runs_no_transform(pkgs: Packages, transforms: list[str]) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    mod = _fresh_import(pkgs, name)
    mod.factory(1)  # nested functions are built (and cached) when first defined
    cold = sorted(transforms)
    assert "counter" in cold and "factory.<locals>.inner" in cold
    assert _cache_file(pkgs, name, "mod.py").is_file()
    transforms.clear()
    mod = _fresh_import(pkgs, name)
    inner = mod.factory(2)
    assert transforms == []
    assert _is_checkpointable(mod.counter) and _is_checkpointable(inner)
    assert list(inner()) == [2]
    g = mod.counter(3)
    assert next(g) == 0 and g.send(5) == 1
    assert contsnap.loads(contsnap.dumps(g)).send(1) == 2


def test_the_resume_variant_is_compiled_on_first_need_and_cached_as_source(
    pkgs: Packages,
) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    mod = _fresh_import(pkgs, name)
    info = _decorator.function_info(mod.counter)
    assert info is not None and not isinstance(info.details, _info.Details)  # a call needs none
    g = mod.counter(3)
    assert next(g) == 0 and g.send(5) == 1
    record = _hooked.hooked_module(str(pkgs.path(name, "mod.py")))
    assert record is not None
    entry = _cache.read(str(_cache_file(pkgs, name, "mod.py")), record.key)
    assert entry is not None
    stored = [entry.details_of(key) for key in entry.functions]
    assert stored and all(d[1][0] == "source" for d in stored if d is not None)
    assert contsnap.loads(contsnap.dumps(g)).send(1) == 2  # compiled for the restore
    assert isinstance(info.details, _info.Details)
    mod = _fresh_import(pkgs, name)  # warm: the resume variant compiled from the cached text
    g = mod.counter(3)
    assert next(g) == 0 and g.send(5) == 1
    assert contsnap.loads(contsnap.dumps(g)).send(1) == 2


def test_a_warm_start_does_not_import_libcst(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    _fresh_import(pkgs, name).factory(1)  # fills the cache, nested function included
    child = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(pkgs.root)!r})
        import contsnap
        print("libcst" in sys.modules)
        contsnap.install_import_hook({name!r}, mark_all=True)
        from {name} import mod
        g = mod.counter(3)
        next(g)
        # nothing of the transform is imported until a snapshot needs a resume variant
        print("contsnap._compile" in sys.modules)
        g = contsnap.loads(contsnap.dumps(g))
        print(g.send(1), list(mod.factory(2)()), "libcst" in sys.modules)
        """
    )
    # the same contsnap as this process (a cache is only valid for the contsnap that wrote it)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(contsnap.__file__)))
    out = subprocess.run(
        [sys.executable, "-c", child],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=pkgs.root,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "1", "[2]", "False"]


PREBUILT = '''\
    import functools
    import inspect

    from contsnap._marking._decorator import function_info

    seen = []


    def noting(fn):
        seen.append((fn.__qualname__, function_info(fn) is not None))
        return fn


    def wrapping(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            return fn(*args, **kwargs)
        return call


    @noting
    def documented(a, /, b: int = 2, *rest, c=3, **more) -> "gen":
        """Yields its arguments."""
        yield a, b, rest, c, more
        raise ValueError(a)


    SELF_MARKED = function_info(documented) is not None


    @wrapping
    def wrapped_twice(n):
        yield n


    def refused():
        _cs_tmp = 1
        yield _cs_tmp


    class Base:
        def walk(self):
            yield "base"


    class Child(Base):
        "Child's docstring."

        def walk(self):
            yield from super().walk()
            yield __class__.__name__

        def described(self):
            "Kept: the docstring comes before the fresh code's cell prologue."
            yield from super().walk()

        @staticmethod
        def static(x):
            yield x


    def factory(x):
        def inner():
            yield x
        return inner
    '''


def _observed(mod: Any) -> dict[str, Any]:
    """What a user sees of the PREBUILT module's functions."""
    gen = mod.documented(1, 5, 6, c=7, d=8)
    first = next(gen)
    gen = contsnap.loads(contsnap.dumps(gen))
    with pytest.raises(ValueError) as raised:
        next(gen)
    fns = [mod.documented, mod.wrapped_twice, mod.refused, mod.Child.walk, mod.Child.static]
    fns.append(mod.Child.described)
    return {
        "seen": list(mod.seen),
        "self_marked": mod.SELF_MARKED,
        "names": [(f.__name__, f.__qualname__, f.__module__, f.__doc__) for f in fns],
        "signature": str(inspect.signature(mod.documented)),
        "annotations": mod.documented.__annotations__,
        "defaults": (mod.documented.__defaults__, mod.documented.__kwdefaults__),
        "first": first,
        "line": raised.value.__traceback__.tb_next.tb_lineno,  # type: ignore[union-attr]
        "marked": [_is_checkpointable(f) for f in fns],
        "wraps": _is_checkpointable(mod.wrapped_twice.__wrapped__),
        "values": [
            list(mod.wrapped_twice(4)),
            list(mod.refused()),
            list(mod.Child().walk()),
            list(mod.Child.static(9)),
            list(mod.Child().described()),
            list(mod.factory(3)()),
        ],
        "restored": list(contsnap.loads(contsnap.dumps(mod.Child().walk()))),
        "inner": _is_checkpointable(mod.factory(1)),
    }


def test_a_warm_import_builds_marked_functions_from_cached_code(
    pkgs: Packages, transforms: list[str]
) -> None:
    name = pkgs.make({"mod.py": PREBUILT})
    cold = _fresh_import(pkgs, name)
    expected = _observed(cold)
    assert expected["marked"] == [True, True, False, True, True, True]
    assert expected["seen"] == [("documented", True)] and expected["self_marked"]
    raise_line = textwrap.dedent(PREBUILT).split("\n").index("    raise ValueError(a)") + 1
    assert expected["line"] == raise_line and expected["inner"] and expected["wraps"]
    transforms.clear()
    warm = _fresh_import(pkgs, name)
    assert _observed(warm) == expected
    assert transforms == []
    # module and class level: made by the module code itself, no plain function kept
    # (a docstring stays the fresh code's first constant, with closure cells too)
    made = (warm.documented, warm.wrapped_twice.__wrapped__, warm.Child.walk, warm.Child.described)
    for fn in made:
        assert fn.__code__ is fn.__contsnap__.fresh_code
        assert not hasattr(fn, "__wrapped__")
    # per call of an enclosing function: the plain function is transformed as before
    inner = warm.factory(1)
    assert inner.__code__ is inner.__contsnap__.fresh_code
    assert inner.__wrapped__.__code__ is not inner.__code__


def test_a_cached_module_code_without_its_infos_is_transformed_again(
    pkgs: Packages, transforms: list[str]
) -> None:
    name = pkgs.make({"mod.py": PREBUILT})
    expected = _observed(_fresh_import(pkgs, name))
    path = _cache_file(pkgs, name, "mod.py")
    record = _cache.read(str(path), _hooked.hooked_module(str(pkgs.path(name, "mod.py"))).key)  # type: ignore[union-attr]
    assert record is not None
    record.functions.clear()  # the module code keeps its compiled-in fresh codes
    _cache.write(
        str(path), _hooked.hooked_module(str(pkgs.path(name, "mod.py"))).key, record, str(path)
    )  # type: ignore[union-attr]
    transforms.clear()
    warm = _fresh_import(pkgs, name)
    assert _observed(warm) == expected
    assert "documented" in transforms


def test_round_trip_mode_wraps_functions_built_from_cached_code(
    pkgs: Packages, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    _fresh_import(pkgs, name)
    monkeypatch.setattr(_marking, "_ROUNDTRIP", True)
    import contsnap._roundtrip  # noqa: F401 - round-trip mode registers its wrapper

    mod = _fresh_import(pkgs, name)
    assert type(mod.counter).__module__ == "contsnap._roundtrip"
    assert _round_trip_counter(mod) == [1, 2]


LAZY = """\
    import types


    def gen(n):
        yield n
        yield n + 1


    @types.coroutine
    def flagged():
        got = yield "first"
        return got


    def renamed():
        yield "renamed"


    alias = renamed
    del renamed


    class Holder:
        def method(self):
            yield self


    def delegating(n):
        try:
            result = yield from gen(n)
        finally:
            pass
        return result
    """


def test_a_warm_import_builds_infos_on_first_use(pkgs: Packages, transforms: list[str]) -> None:
    from contsnap import _info

    name = pkgs.make({"mod.py": LAZY})
    _fresh_import(pkgs, name)
    transforms.clear()
    mod = _fresh_import(pkgs, name)
    # the cached module code made them with their fresh code and nothing else ran
    assert transforms == [] and "__contsnap__" not in mod.gen.__dict__
    # transformed code runs before any info is built (it needs contsnap's runtime)
    assert list(mod.delegating(1)) == [1, 2]
    assert contsnap.checkpointable(mod.gen) is mod.gen and _is_checkpointable(mod.gen)
    g = mod.alias()  # its name is gone from the module: a stand-in carries its info
    assert list(_roundtrip(g)) == ["renamed"]
    c = mod.flagged()  # @types.coroutine replaced its code by a flagged copy
    assert c.send(None) == "first"
    with pytest.raises(StopIteration) as stop:
        _roundtrip(c).send("sent")
    assert stop.value.value == "sent"
    h = mod.Holder().method()
    assert next(_roundtrip(h)).__class__.__name__ == "Holder"
    assert transforms == []
    # a generator made before the module is loaded again can still be saved
    old = mod.gen(1)
    next(old)
    mod = _fresh_import(pkgs, name)
    assert list(_roundtrip(old)) == [2]
    g = mod.gen(5)
    next(g)
    assert list(_roundtrip(g)) == [6]
    # and forgetting the module lets go of all that waits
    _decorator.forget_module(mod.__name__)
    assert not any(p.module == mod.__name__ for p in _info._UNBUILT.values())
    assert not any(w[0] == mod.__name__ for w in _info._UNINDEXED)


def test_refusals_are_cached_too(
    pkgs: Packages, transforms: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = pkgs.make({"mod.py": "def r():\n    _cs_no = 1\n    yield _cs_no\n"})
    for _ in range(2):
        monkeypatch.setattr(_plan, "_REFUSED", {})  # as in a new process
        with pytest.warns(RuntimeWarning, match="reserved"):
            mod = _fresh_import(pkgs, name, quiet=False)
        assert not _is_checkpointable(mod.r)
    assert transforms == ["r"]


def test_decorated_only_and_mark_all_keep_separate_cache_files(
    pkgs: Packages, transforms: list[str]
) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    _fresh_import(pkgs, name, mark_all=False)
    _fresh_import(pkgs, name, mark_all=True)
    assert _cache_file(pkgs, name, "mod.py", "").is_file()
    assert _cache_file(pkgs, name, "mod.py", "all").is_file()
    transforms.clear()
    assert not _is_checkpointable(_fresh_import(pkgs, name, mark_all=False).counter)
    assert _is_checkpointable(_fresh_import(pkgs, name, mark_all=True).counter)
    assert transforms == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:],  # one flipped byte in the head
        lambda b: b[:300] + bytes([b[300] ^ 0x10]) + b[301:],  # and one in the module code
        lambda b: b[:19] + b"\xff\xff\xff\x7f" + b[23:],  # a first section of 2 GB
        lambda b: b"",  # empty
        lambda b: b"\x00" * len(b),  # garbage
        lambda b: b.replace(b"contsnap-cache", b"something-else"),  # another format
    ],
    ids=["truncated", "flipped", "flipped-code", "huge-size", "empty", "zeros", "magic"],
)
def test_a_damaged_cache_file_is_ignored_and_rebuilt(
    pkgs: Packages, transforms: list[str], damage: Callable[[bytes], bytes]
) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    _fresh_import(pkgs, name)
    cache = _cache_file(pkgs, name, "mod.py")
    cache.write_bytes(damage(cache.read_bytes()))
    transforms.clear()
    mod = _fresh_import(pkgs, name)
    assert list(mod.factory(7)()) == [7]
    # the resume variants are read on first use: a snapshot notices damage there
    assert _round_trip_counter(mod) == [1, 2]
    assert "counter" in transforms
    transforms.clear()
    mod = _fresh_import(pkgs, name)
    assert _round_trip_counter(mod) == [1, 2]
    assert transforms == []  # rewritten whole


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_fifo_where_the_cache_file_should_be_does_not_block_the_import(
    pkgs: Packages, transforms: list[str]
) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    cache = _cache_file(pkgs, name, "mod.py")
    cache.parent.mkdir()
    os.mkfifo(cache)
    mod = _fresh_import(pkgs, name)  # would wait for a writer if the FIFO were opened blocking
    assert _round_trip_counter(mod) == [1, 2] and "counter" in transforms
    assert cache.is_file()  # replaced by the cache file


def test_a_cache_file_replaced_before_the_first_snapshot_is_not_mixed_in(
    pkgs: Packages, transforms: list[str]
) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    _fresh_import(pkgs, name)
    transforms.clear()
    mod = _fresh_import(pkgs, name)
    record = _hooked.hooked_module(mod.__file__)
    assert record is not None
    # another process replaces the file: here, the same key with counter's resume
    # variant swapped for another function's (decodable, and wrong)
    other = _cache.read(record.cache_path, record.key)
    assert other is not None
    counter = next(k for k in other.functions if k[0] == "counter")
    items = next(k for k in other.functions if k[0] == "Box.items")
    other.details[counter] = other.details_of(items)
    _cache.write(record.cache_path, record.key, other, mod.__file__)
    assert _round_trip_counter(mod) == [1, 2]
    assert transforms == ["counter"]


def test_cached_infos_decode_alike_by_position_and_by_name(
    pkgs: Packages, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    _fresh_import(pkgs, name)
    mod = _fresh_import(pkgs, name)
    record = _hooked.hooked_module(mod.__file__)
    assert record is not None and _info._POSITIONAL
    fn = mod.counter
    stored = record.entry.functions[(fn.__qualname__, fn.__code__.co_firstlineno, "counter")]
    details = record.entry.details_of  # any callable: it is stored, not called
    fast = _cache.decode_info(stored, fn, details)  # type: ignore[arg-type]
    monkeypatch.setattr(_info, "_POSITIONAL", False)
    named = _cache.decode_info(stored, fn, details)  # type: ignore[arg-type]
    assert isinstance(fast, FunctionInfo) and isinstance(named, FunctionInfo)
    assert vars(fast) == vars(named)


def _round_trip_counter(mod: Any) -> list[int]:
    gen = mod.counter(3)
    next(gen)
    restored = contsnap.loads(contsnap.dumps(gen))
    gen.close()
    out = []
    try:
        while True:
            out.append(restored.send(1))
    except StopIteration:
        pass
    return out


def test_a_stale_cache_file_is_rebuilt_after_an_edit(pkgs: Packages, transforms: list[str]) -> None:
    name = pkgs.make({"mod.py": "def g():\n    yield 1\n"})
    _fresh_import(pkgs, name)
    pkgs.path(name, "mod.py").write_text("def g():\n    yield 10\n    yield 20\n")
    transforms.clear()
    mod = _fresh_import(pkgs, name)
    assert transforms == ["g"] and list(mod.g()) == [10, 20]


@pytest.fixture
def settle(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """A source unchanged for 50 ms counts as old (3 s by default): ``settle()`` waits so."""
    monkeypatch.setattr(_cache_key, "TRUST_MARGIN_NS", 50_000_000)
    return lambda: time.sleep(0.06)


@pytest.fixture
def source_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time the hook read a ``mod.py`` (for a warm import: never, when the cache vouches)."""
    seen: list[str] = []
    real = _hooked._read_file
    real_loader = _hook.HookLoader.get_data

    def counting(path: str) -> bytes:
        if path.endswith("mod.py"):
            seen.append(os.path.basename(path))
        return real(path)

    def counting_loader(self: Any, path: str) -> bytes:
        if path.endswith("mod.py"):
            seen.append(os.path.basename(path))
        return real_loader(self, path)

    monkeypatch.setattr(_hooked, "_read_file", counting)
    monkeypatch.setattr(_hook.HookLoader, "get_data", counting_loader)
    return seen


def test_a_warm_import_of_an_old_source_reads_only_the_cache_file(
    pkgs: Packages,
    transforms: list[str],
    source_reads: list[str],
    settle: Callable[[], None],
) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    settle()
    _fresh_import(pkgs, name).factory(0)  # inner is built when factory first runs
    assert source_reads == ["mod.py"] and "factory.<locals>.inner" in transforms
    source_reads.clear()
    transforms.clear()
    mod = _fresh_import(pkgs, name)
    assert source_reads == [] and transforms == []
    assert _round_trip_counter(mod) == [1, 2]  # the later sections, from the cache file
    assert list(mod.factory(3)()) == [3] and transforms == []
    assert inspect.getsource(mod.counter).startswith("def counter(n):")
    assert source_reads == []


def test_a_young_source_is_hashed_until_old_enough_then_stamped_anew(
    pkgs: Packages, transforms: list[str], source_reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # an hour's margin first: however slow the machine, the stamp stays young until lowered
    monkeypatch.setattr(_cache_key, "TRUST_MARGIN_NS", 3600 * 10**9)
    name = pkgs.make({"mod.py": GENERATORS})
    _fresh_import(pkgs, name)  # cached with a stamp too young to vouch for the source
    cache = _cache_file(pkgs, name, "mod.py")
    written = cache.read_bytes()
    source_reads.clear()
    transforms.clear()
    _fresh_import(pkgs, name)
    assert source_reads == ["mod.py"] and transforms == []
    assert cache.read_bytes() == written  # nothing to stamp yet
    monkeypatch.setattr(_cache_key, "TRUST_MARGIN_NS", 50_000_000)
    time.sleep(0.06)
    source_reads.clear()
    _fresh_import(pkgs, name)  # hashed, found alike, stamped: the file is otherwise the same
    assert source_reads == ["mod.py"] and transforms == []
    again = cache.read_bytes()
    assert again != written and again[-1000:] == written[-1000:]
    source_reads.clear()
    mod = _fresh_import(pkgs, name)
    assert source_reads == [] and transforms == []
    assert _round_trip_counter(mod) == [1, 2]


def test_a_loader_asked_for_code_outside_an_import_stamps_anew_too(
    pkgs: Packages, source_reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # runpy, doctest and pytest call get_code themselves, with no exec_module around it
    name = pkgs.make({"mod.py": GENERATORS})
    _fresh_import(pkgs, name)  # cached with a stamp too young to vouch for the source
    monkeypatch.setattr(_cache_key, "TRUST_MARGIN_NS", 50_000_000)
    time.sleep(0.06)
    path = str(pkgs.path(name, "mod.py"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the module's own notes
        _hook.HookLoader(f"{name}.mod", path, mark_all=True).get_code(f"{name}.mod")
    source_reads.clear()
    _fresh_import(pkgs, name)
    assert source_reads == []


def test_an_edit_of_an_old_source_is_noticed_whatever_its_size_and_mtime(
    pkgs: Packages, transforms: list[str], settle: Callable[[], None]
) -> None:
    name = pkgs.make({"mod.py": "def g():\n    yield 1\n"})
    source = pkgs.path(name, "mod.py")
    settle()
    _fresh_import(pkgs, name)
    before = source.stat()
    source.write_text("def g():\n    yield 2\n")  # the same size, and the same mtime
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))  # (as shutil.copy2 does)
    transforms.clear()
    mod = _fresh_import(pkgs, name)
    assert transforms == ["g"] and list(mod.g()) == [2]


def test_a_function_not_cached_is_refused_once_its_source_changed_after_a_warm_import(
    pkgs: Packages, transforms: list[str], settle: Callable[[], None]
) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    source = pkgs.path(name, "mod.py")
    settle()
    _fresh_import(pkgs, name)  # factory's inner is not built: it is not in the cache
    mod = _fresh_import(pkgs, name)
    source.write_text(source.read_text().replace("yield x", "yield -x"))
    transforms.clear()
    with pytest.warns(RuntimeWarning, match="changed since it was imported"):
        inner = mod.factory(1)
    assert not _is_checkpointable(inner) and list(inner()) == [1]  # left as it was compiled
    assert transforms == []
    assert _round_trip_counter(mod) == [1, 2]  # what the cache holds still works
    # an equal code object of another file is not taken for the one refused
    other = pkgs.make({"mod.py": GENERATORS})
    assert _is_checkpointable(_fresh_import(pkgs, other).factory(1))


def test_a_cache_file_keeps_the_mtime_it_was_written_with(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    _fresh_import(pkgs, name)
    cache = _cache_file(pkgs, name, "mod.py")
    # in the past, on an even second: no later write can leave the file with it
    mtime = cache.stat().st_mtime_ns
    assert mtime % 2_000_000_000 == 0 and mtime < time.time_ns() - 2_000_000_000


def test_a_cache_from_another_contsnap_is_not_used(
    pkgs: Packages, transforms: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = pkgs.make({"mod.py": "def g():\n    yield 1\n"})
    _fresh_import(pkgs, name)
    monkeypatch.setattr(_cache_key, "_stamp", "another-build")
    transforms.clear()
    _fresh_import(pkgs, name)
    assert transforms == ["g"]


def test_no_cache_is_written_when_bytecode_writing_is_off(
    pkgs: Packages, transforms: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = pkgs.make({"mod.py": "def g():\n    yield 1\n"})
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    mod = _fresh_import(pkgs, name)
    assert list(mod.g()) == [1]
    assert not _cache_file(pkgs, name, "mod.py").parent.exists()


def test_an_unwritable_cache_directory_is_not_an_error(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": "def g():\n    yield 1\n"})
    pkgs.path(name, "__pycache__").write_text("a file where the directory should be")
    mod = _fresh_import(pkgs, name)
    assert _is_checkpointable(mod.g) and list(mod.g()) == [1]


def test_concurrent_writers_leave_one_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    target = str(tmp_path / "__pycache__" / "m.cache")
    key = ("k",)
    code = compile("x = 1", "m", "exec")

    def writer(i: int) -> None:
        entry = _cache.Entry(code, {(f"f{i}", i, "f"): ("refused", "x" * 10000)})
        for _ in range(20):
            assert _cache.write(target, key, entry, __file__)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entry = _cache.read(target, key)
    assert entry is not None and len(entry.functions) == 1
    assert os.listdir(tmp_path / "__pycache__") == ["m.cache"]


def test_a_new_function_is_merged_into_another_processs_file(
    pkgs: Packages, transforms: list[str]
) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    first = _fresh_import(pkgs, name)
    record = _hooked.hooked_module(first.__file__)
    assert record is not None
    # another process wrote its own entry meanwhile
    other = _cache.read(record.cache_path, record.key)
    assert other is not None
    other.functions[("elsewhere", 1, "elsewhere")] = ("refused", "from another process")
    _cache.write(record.cache_path, record.key, other, first.__file__)
    first.factory(1)  # builds and stores a nested function now
    merged = _cache.read(record.cache_path, record.key)
    assert merged is not None
    assert ("elsewhere", 1, "elsewhere") in merged.functions
    assert any(k[0] == "factory.<locals>.inner" for k in merged.functions)


# --- snapshots across processes -----------------------------------------------------------


def test_a_snapshot_from_a_hooked_module_resumes_in_another_process(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    mod = _fresh_import(pkgs, name)
    g = mod.counter(5)
    assert next(g) == 0 and g.send(10) == 1 and g.send(20) == 2
    data = contsnap.dumps(g)
    child = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(pkgs.root)!r})
        import contsnap
        contsnap.install_import_hook({name!r}, mark_all=True)
        g = contsnap.loads(bytes.fromhex(sys.stdin.read()))
        print(g.send(30), g.send(40))
        try:
            g.send(50)
        except StopIteration as stop:
            print(stop.value)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", child],
        input=data.hex(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "4", "150"]


def test_docstring_and_future_imports_keep_their_place(pkgs: Packages) -> None:
    source = '''\
        """The module's docstring."""
        from __future__ import annotations

        def g(x: UndefinedName) -> UndefinedToo:
            yield x
        '''
    name = pkgs.make({"mod.py": source})
    with contsnap.install_import_hook(name, mark_all=True):
        mod = _import(f"{name}.mod")
    assert mod.__doc__ == "The module's docstring."
    assert _is_checkpointable(mod.g) and mod.g.__annotations__ == {
        "x": "UndefinedName",
        "return": "UndefinedToo",
    }


def test_a_contsnap_failure_under_mark_all_warns_instead_of_breaking_the_import(
    pkgs: Packages, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fn: types.FunctionType, source: str, first: int) -> Any:
        raise KeyError("surprise")

    monkeypatch.setattr(_marking, "_transform", broken)
    name = pkgs.make({"mod.py": "def g():\n    yield 1\n"})
    with contsnap.install_import_hook(name, mark_all=True), pytest.warns(RuntimeWarning) as rec:
        mod = importlib.import_module(f"{name}.mod")
    assert list(mod.g()) == [1] and not _is_checkpointable(mod.g)
    assert "please report it: KeyError" in str(rec[0].message)


def test_doctest_finds_the_docstrings_of_transformed_functions(pkgs: Packages) -> None:
    import doctest

    source = '''\
        def gen(n):
            """
            >>> list(gen(2))
            [0, 1]
            >>> from contsnap._marking._decorator import function_info
            >>> function_info(gen) is not None
            True
            """
            yield from range(n)
        '''
    name = pkgs.make({"mod.py": source})
    with contsnap.install_import_hook(name, mark_all=True):
        mod = _import(f"{name}.mod")
    (test,) = doctest.DocTestFinder().find(mod)
    assert test.lineno == 1  # the docstring's line in the file, found from the transformed code
    assert tuple(doctest.testmod(mod)) == (0, 3)  # failed, attempted


def test_tokenize_itself_can_be_hooked() -> None:
    # reading a source needs tokenize: the hook must not re-import the half-made one
    child = textwrap.dedent(
        """
        import io, sys
        import contsnap
        contsnap.install_import_hook("tokenize", mark_all=True)
        del sys.modules["tokenize"]
        import tokenize
        assert type(tokenize.__loader__).__name__ == "HookLoader"
        from contsnap._marking._decorator import function_info
        assert any(function_info(f) is not None for f in vars(tokenize).values())
        tokens = tokenize.tokenize(io.BytesIO(b"x = 1\\n").readline)
        print(" ".join(t.string for t in tokens if t.string.strip()))
        """
    )
    out = subprocess.run(
        [sys.executable, "-B", "-c", child], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["utf-8", "x", "=", "1"]


def test_merging_constants_keeps_apart_what_python_tells_apart() -> None:
    # what the cached module code does to the fresh codes it stitches in (compiled one by
    # one, they share nothing): equal constants become one object, as CPython's compiler
    # makes them within a module, but only constants that are the same value
    pieces = [
        "def a(): return (1,), ((1,),), 1, 'x', b'x', (None, 'x')",
        "def b(): return (True,), ((True,),), True, 'x', b'x', (None, 'x')",
        "def c(): return (1.0,), ((1.0,),), 1.0, 'x', b'x', (None, 'x')",
        "def d(): return (-0.0,), ((0.0,),), 0.0, 'y', b'y', (0, 'x')",
    ]
    module = compile("\n".join(pieces * 2), "m", "exec")  # the second a() ... d() win
    # a module code whose function codes come from separate compilations, like the hook's
    consts = list(module.co_consts)
    for at, const in enumerate(consts):
        if isinstance(const, types.CodeType):
            alone = compile(pieces[ord(const.co_name) - ord("a")], "m", "exec")
            consts[at] = next(c for c in alone.co_consts if isinstance(c, types.CodeType))
    twice = next(c for c in reversed(consts) if isinstance(c, types.CodeType))
    consts.append(twice)  # a code object met twice stays one
    stitched = module.replace(co_consts=tuple(consts))
    merged: dict[int, types.CodeType] = {}
    out = _prebuilt._merge_constants(stitched, {}, merged)
    assert (
        out.co_consts[-1] is merged[id(twice)]
        and sum(c is out.co_consts[-1] for c in out.co_consts) == 2
    )
    assert len(merged) == 9 and all(
        merged[id(c)] is not c for c in consts if isinstance(c, types.CodeType)
    )
    native: dict[str, Any] = {}
    exec(module, native)
    made: dict[str, Any] = {}
    exec(out, made)
    for name in "abcd":
        got, want = made[name](), native[name]()
        assert got == want and [type(x) for x in got] == [type(x) for x in want]
        assert repr(got) == repr(want)  # -0.0 stays -0.0, 1 stays 1, True stays True
    assert made["a"]()[5] is made["b"]()[5]  # shared
    assert made["a"]()[0] is not made["b"]()[0]  # (1,) == (True,), yet apart
    assert len(marshal.dumps(out)) < len(marshal.dumps(stitched))


def test_a_hook_installed_after_its_module_was_imported_warns(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    importlib.import_module(f"{name}.mod")  # imported plainly, before any hook
    with pytest.warns(RuntimeWarning, match=rf"{name}\.mod were imported before the hook"):
        hook = contsnap.install_import_hook(name, mark_all=True)
    hook.uninstall()


def test_contsnap_trace_says_why_the_cache_missed(pkgs: Packages) -> None:
    name = pkgs.make({"mod.py": GENERATORS})
    child = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(pkgs.root)!r})
        import contsnap
        contsnap.install_import_hook({name!r}, mark_all=True)
        from {name} import mod
        """
    )
    env = dict(
        os.environ,
        CONTSNAP_TRACE="1",
        PYTHONPATH=os.path.dirname(os.path.dirname(contsnap.__file__)),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    first = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert "contsnap: cache miss" in first.stderr and "no cache file" in first.stderr
    warm = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=120
    )
    misses = [line for line in warm.stderr.splitlines() if "cache miss" in line]
    assert not [line for line in misses if "mod.cpython" in line], warm.stderr  # a hit
    source = pkgs.root / name / "mod.py"
    source.write_text(source.read_text() + "\n# edited\n")
    second = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=120
    )
    assert second.returncode == 0, second.stderr
    assert "source (the file changed) differs" in second.stderr, second.stderr


def test_a_resume_variant_that_does_not_compile_is_a_clear_refusal() -> None:
    from contsnap._compile import ResumeSource
    from contsnap._marking._marking import PendingDetails

    pending = PendingDetails({}, ResumeSource("def (:\n", {}, "mod.py", (), "Job.run", "run"), "")
    with pytest.raises(contsnap.NotCheckpointableError, match=r"Job\.run \(mod\.py\).*resume"):
        pending()


@pytest.mark.parametrize("lambdas", [False, True])
def test_the_first_import_parses_the_module_once_unless_a_lambda_is_wrapped(
    pkgs: Packages, monkeypatch: pytest.MonkeyPatch, lambdas: bool
) -> None:
    # the prebuilt module code is compiled from the tree the import compiled, its marks
    # taken back out; a wrapped generator lambda cannot be unwrapped: parsed again
    source = GENERATORS if lambdas else GENERATORS.replace("lam = lambda: (yield 1)", "")
    name = pkgs.make({"mod.py": source})
    parsed: list[str] = []
    parse = _hooked.HookedModule._parse

    def counting(self: _hooked.HookedModule) -> Any:
        parsed.append(self.filename)
        return parse(self)

    monkeypatch.setattr(_hooked.HookedModule, "_parse", counting)
    _fresh_import(pkgs, name)
    assert len(parsed) == (2 if lambdas else 1)
    record = _hooked.hooked_module(str(pkgs.path(name, "mod.py")))
    assert record is not None
    cached = _cache.read(str(_cache_file(pkgs, name, "mod.py")), record.key)
    assert cached is not None and cached.has_prebuilt()
    assert ("counter", 4, "counter") in dict(cached.prebuilt)
    parsed.clear()
    warm = _fresh_import(pkgs, name)  # made from the cached module code, no mark call
    assert parsed == []
    g = warm.counter(3)
    assert next(g) == 0 and g.send(5) == 1
    assert _decorator.function_info(warm.counter) is not None
    assert not hasattr(warm.counter, "__wrapped__")
