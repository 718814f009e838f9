"""Corner cases found by review: each test pins one behaviour that once went wrong."""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest
from copy_ways import WAYS

import contsnap

LOG: list[object] = []


@pytest.fixture(autouse=True)
def _clean_log() -> None:
    LOG.clear()


@contsnap.checkpointable
def nested_yielding_finally():
    try:
        try:
            yield 1
            return "early"
        finally:
            yield "inner-fin"
    finally:
        LOG.append("outer-fin")
        yield "outer-fin"


def test_detach_inside_a_finally_reached_by_return_runs_no_outer_finally() -> None:
    g = nested_yielding_finally()
    next(g)
    assert g.send(None) == "inner-fin"
    moved = contsnap.loads(contsnap.dumps(g))
    contsnap.detach(g)
    assert LOG == []
    assert next(moved) == "outer-fin"
    with pytest.raises(StopIteration) as stop:
        next(moved)
    assert stop.value.value == "early"
    assert LOG == ["outer-fin"]


@contsnap.checkpointable
def leaf():
    try:
        yield 1
        yield 2
    finally:
        LOG.append("leaf-finally")


@contsnap.checkpointable
def loops_over_leaf():
    for value in leaf():
        yield value


@contextlib.contextmanager
@contsnap.checkpointable
def managed():
    try:
        yield "resource"
    finally:
        LOG.append("managed-exit")


@contsnap.checkpointable
def uses_managed():
    with managed() as resource:
        yield resource
        yield resource


def test_detach_ends_generators_the_frame_holds() -> None:
    g = loops_over_leaf()
    next(g)
    moved = contsnap.loads(contsnap.dumps(g))
    contsnap.detach(g)
    del g
    assert LOG == []
    assert list(moved) == [2]
    assert LOG == ["leaf-finally"]


def test_detach_ends_a_contextmanager_generator_held_by_with() -> None:
    g = uses_managed()
    next(g)
    moved = contsnap.loads(contsnap.dumps(g))
    contsnap.detach(g)
    del g
    assert LOG == []
    assert list(moved) == ["resource"]
    assert LOG == ["managed-exit"]


class ThrowingIterator:
    def __init__(self) -> None:
        self.items = [1, 2]

    def __iter__(self) -> ThrowingIterator:
        return self

    def __next__(self) -> int:
        if not self.items:
            raise StopIteration
        return self.items.pop(0)

    def throw(self, *args: object) -> int:
        return 99


@contsnap.checkpointable
def delegates_to_custom(it):
    yield from it


def test_detach_refuses_a_foreign_delegate_with_throw() -> None:
    g = delegates_to_custom(ThrowingIterator())
    next(g)
    with pytest.raises(contsnap.NotCheckpointableError, match="ThrowingIterator"):
        contsnap.detach(g)
    assert next(g) == 2  # untouched


@contsnap.checkpointable
def countdown(n):
    if n:
        yield n
        yield from countdown(n - 1)


def test_recursive_generator_refers_to_itself() -> None:
    g = countdown(150)
    for _ in range(100):
        next(g)
    restored = contsnap.loads(contsnap.dumps(g))
    assert type(restored.gi_yieldfrom) is types.GeneratorType  # no wrapper per level
    assert list(restored) == list(range(50, 0, -1))


class Failure(Exception):
    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


@contsnap.checkpointable
def holds_chained_exceptions():
    try:
        try:
            raise KeyError("first")
        except KeyError as exc:
            raise Failure("second", code=7) from exc
    except Failure as err:
        held = err
    yield "paused"
    yield (held.code, repr(held.__cause__), held.__suppress_context__)


def test_exceptions_keep_cause_context_and_attributes() -> None:
    g = holds_chained_exceptions()
    next(g)
    # (copy.deepcopy cannot rebuild an exception whose __init__ needs keywords, in or
    # out of a generator; pickle-based copies can)
    for copy_of_g in (contsnap.loads(contsnap.dumps(g)), contsnap.fork(g)):
        assert next(copy_of_g) == (7, "KeyError('first')", True)


class Holder:
    def __init__(self) -> None:
        self.log: list[object] = []
        self.job = self.work()

    @contsnap.checkpointable
    def work(self):
        while True:
            self.log.append((yield len(self.log)))


def test_deepcopy_honours_the_memo() -> None:
    holder = Holder()
    next(holder.job)
    twin = copy.deepcopy(holder)
    twin.job.send("x")
    assert twin.log == ["x"]
    assert holder.log == []
    again = pickle.loads(pickle.dumps(holder))
    again.job.send("y")
    assert again.log == ["y"]


def test_copy_copy_shares_the_locals() -> None:
    holder = Holder()
    next(holder.job)
    shallow = copy.copy(holder.job)
    shallow.send("s")
    assert holder.log == ["s"]


@contsnap.checkpointable
def debug_fstring():
    width = 4
    return f"{(yield 'q')=} {width = } {(yield 'r'):>{(yield 'w')}}"


def test_fstring_debug_specifier_and_yield_in_format_spec() -> None:
    g = debug_fstring()
    next(g)
    g.send(5)
    g.send("x")
    with pytest.raises(StopIteration) as stop:
        g.send(3)
    assert stop.value.value == "(yield 'q')=5 width = 4   x"


class Secretive:
    def __init__(self) -> None:
        self.__secret = "hidden"

    def reveal(self):
        @contsnap.checkpointable
        def gen():
            class Local:
                pass

            yield self.__secret
            yield Local.__qualname__

        return gen()


def test_private_names_and_qualnames_inside_a_method() -> None:
    g = Secretive().reveal()
    assert next(g) == "hidden"
    assert contsnap.fork(g).__next__() == "Secretive.reveal.<locals>.gen.<locals>.Local"
    assert g.__qualname__ == "Secretive.reveal.<locals>.gen"


def test_not_checkpointable_error_is_also_a_type_error() -> None:
    def plain():
        yield 1

    with pytest.raises(TypeError):
        pickle.dumps(plain())


class NoExit:
    def __enter__(self) -> NoExit:
        return self


@contsnap.checkpointable
def enters_a_non_manager():
    yield 1
    with NoExit():
        yield 2


def test_with_errors_match_native() -> None:
    def native_error() -> BaseException:
        try:
            with NoExit():  # type: ignore[attr-defined]
                pass
        except BaseException as exc:
            return exc
        raise AssertionError

    expected = native_error()
    g = enters_a_non_manager()
    next(g)
    with pytest.raises(type(expected)) as info:
        next(g)
    assert info.value.args == expected.args


def outer_factory(base):
    @contsnap.checkpointable
    def counting(n):
        for i in range(n):
            yield base + i

    return counting


def test_unstarted_generator_with_a_closure() -> None:
    g = outer_factory(100)(3)
    assert list(contsnap.fork(g)) == [100, 101, 102]
    assert list(contsnap.loads(contsnap.dumps(g))) == [100, 101, 102]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="except* is 3.11+")
def test_snapshot_inside_except_star_handler_is_refused() -> None:
    namespace: dict[str, object] = {}
    source = (
        "import contsnap\n"
        "def star():\n"
        "    try:\n"
        "        raise ExceptionGroup('g', [ValueError(1), KeyError(2)])\n"
        "    except* ValueError:\n"
        "        yield 'in-handler'\n"
        "    except* KeyError:\n"
        "        pass\n"
        "    yield 'after'\n"
    )
    import importlib.util
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "star_module.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("star_module", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        namespace.update(vars(module))
        star = contsnap.checkpointable(namespace["star"])
    g = star()
    assert next(g) == "in-handler"
    with pytest.raises(contsnap.NotCheckpointableError, match=r"inside an except\* handler"):
        contsnap.dumps(g)
    assert list(g) == ["after"]


@contsnap.checkpointable
def abandons_leaf():
    for value in leaf():
        LOG.append(("got", value))
        break
    LOG.append("after-loop")
    yield "end"


def test_a_generator_left_by_break_closes_at_the_break_as_natively() -> None:
    native = abandons_leaf.__wrapped__()  # type: ignore[attr-defined]
    assert next(native) == "end"
    native_log = list(LOG)
    LOG.clear()
    assert next(abandons_leaf()) == "end"
    assert native_log == LOG == [("got", 1), "leaf-finally", "after-loop"]


@contsnap.checkpointable
def two_cells_out_of_order(n_pages, per_page):
    # `per_page` (a parameter) and `page` are both cells (the comprehension reads them);
    # the compiler orders a closure's cells by name, not as they were written
    for page in range(n_pages):
        items = [page * per_page + i for i in range(per_page)]
        yield from items


def test_cells_are_matched_by_name_not_by_position() -> None:
    for steps in range(12):
        gen = two_cells_out_of_order(3, 4)
        for _ in range(steps):
            next(gen)
        restored = contsnap.loads(contsnap.dumps(gen))
        contsnap.detach(gen)
        assert list(restored) == list(range(steps, 12)), steps


@contsnap.checkpointable
def closure_over_parameters(zeta, alpha):
    def read():
        return zeta, alpha

    yield zeta, alpha
    zeta += "1"
    yield zeta, alpha, read()


def test_cells_are_restored_to_their_own_names_whatever_their_order() -> None:
    # 3.11+ list parameter cells in parameter order; a closure's cells are sorted by name
    g = closure_over_parameters("z", "a")
    assert next(g) == ("z", "a")
    for moved in (contsnap.loads(contsnap.dumps(g)), copy.deepcopy(g)):
        assert next(moved) == ("z1", "a", ("z1", "a"))


def _pair(*args: object, **kwargs: object) -> tuple[object, object]:
    return args, sorted(kwargs.items())


def keyword_before_star(log):
    # positional arguments, `*` ones included, are evaluated before every keyword
    log.append(_pair((yield 1), b=(yield 2), *[(yield 3)], **{"z": (yield 4)}))  # noqa: B026


def test_call_arguments_keep_positional_before_keyword_order() -> None:
    from contsnap.testing import LOG as RUN_LOG
    from contsnap.testing import check_generator_equivalence

    marked = contsnap.checkpointable(keyword_before_star)
    check_generator_equivalence(keyword_before_star, marked, (RUN_LOG,), [10, 20, 30, 40])


def annotated_cell(log):
    # an annotated local that a closure reads: the resume variant declares it nonlocal
    seen: list[object] = []
    page = lambda: f"seen {seen}"  # noqa: E731
    for _ in range(3):
        seen.append((yield page()))
    log.append(page())


def test_annotated_local_captured_by_a_closure_compiles_and_resumes() -> None:
    from contsnap.testing import LOG as RUN_LOG
    from contsnap.testing import check_generator_equivalence

    marked = contsnap.checkpointable(annotated_cell)
    check_generator_equivalence(annotated_cell, marked, (RUN_LOG,), [1, 2, 3])


def _original(value: object) -> tuple[str, object]:
    return "original", value


def _replacement(value: object) -> tuple[str, object]:
    return "replacement", value


def _rebind_callee(value: object) -> object:
    global _callee
    _callee = _replacement
    return value


_callee = _original


def calls_a_global_rebound_while_paused():
    # the global `_callee` is looked up before the yield, as natively
    return _callee((yield _rebind_callee(1)))


def test_a_global_is_read_before_the_yield_that_follows_it() -> None:
    global _callee
    results = []
    for function in (
        calls_a_global_rebound_while_paused,
        contsnap.checkpointable(calls_a_global_rebound_while_paused),
    ):
        _callee = _original
        gen = function()
        next(gen)
        with pytest.raises(StopIteration) as stop:
            gen.send("sent")
        results.append(stop.value.value)
    assert results == [("original", "sent")] * 2


@pytest.mark.skipif(sys.version_info < (3, 11), reason="except* is new in 3.11")
def test_detach_passes_a_try_with_except_star_and_a_yielding_finally() -> None:
    from contsnap.testing import assert_equivalent

    # except* re-raises the Detach wrapped in a group, which the finally's guard
    # took for an error: the old copy ran its finally while being detached
    source = (
        "def gen(arg, log):\n"
        "    try:\n"
        "        x = yield 1\n"
        "        raise ExceptionGroup('g', [ValueError(x), KeyError(2)])\n"
        "    except* ValueError:\n"
        "        log.append('value')\n"
        "    except* KeyError:\n"
        "        log.append('key')\n"
        "    finally:\n"
        "        y = yield 'finally'\n"
        "    return y\n"
    )
    assert_equivalent(source, [0, 1], modes=("native", "roundtrip"))


def unpacks_before_yielding():
    items = [1, 2]
    # Python unpacks `*items` before it evaluates the yield: a change to the list
    # while paused must not show, and `*2` fails before the yield, as natively
    listed = [*items, (yield items)]
    called = _pair(*items, (yield items))
    mapping = {"a": 1}
    merged = {**mapping, "b": (yield mapping)}
    yield listed, called, merged
    yield {*((yield "set") or ()), (yield "never")}


def test_a_starred_operand_is_unpacked_before_a_later_yield() -> None:
    outcomes = []
    for function in (unpacks_before_yielding, contsnap.checkpointable(unpacks_before_yielding)):
        gen = function()
        next(gen).append("changed")
        gen.send("one").append("changed")
        gen.send("two")["c"] = "changed"
        values = gen.send("three")
        assert next(gen) == "set"
        with pytest.raises(TypeError) as error:
            gen.send(2)
        outcomes.append((values, str(error.value)))
    expected = ([1, 2, "one"], ((1, 2, "changed", "two"), []), {"a": 1, "b": "three"})
    assert outcomes[0] == outcomes[1] == (expected, "'int' object is not iterable")


SCRIPT_WITH_A_CLASS = """
import contsnap

class Job:
    def __init__(self):
        self.n = 0

    @contsnap.checkpointable
    def steps(self):
        while True:
            self.n += 1
            yield self.n

@contsnap.checkpointable
def outer(job):
    yield from job.steps()

g = outer(Job())
next(g)
for _ in range(3):  # the class travels by value: each load makes a copy of its methods
    g = contsnap.loads(contsnap.dumps(g))
    next(g)
job = g.gi_frame.f_locals["job"]
fresh = job.steps()  # made by the copied method
print(next(fresh), fresh.gi_code.co_filename.endswith("script.py"))
print(next(contsnap.loads(contsnap.dumps(fresh))))
"""


def test_a_method_of_a_class_saved_by_value_still_makes_checkpointable_generators(
    tmp_path: Path,
) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT_WITH_A_CLASS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["5", "True", "6"]


class Multi(dict):  # boltons.dictutils.OrderedMultiDict: a dict of lists, read one by one
    def __getitem__(self, key):
        return super().__getitem__(key)[-1]


@contsnap.checkpointable
def lengths_of(multi):
    get_values = super(Multi, multi).__getitem__  # dict's own method, bound to multi
    set_values = super(Multi, multi).__setitem__  # a slot wrapper, bound to multi
    for key in ["a", "b"]:
        yield len(get_values(key))
    set_values("c", [5])
    yield multi["c"], get_values.__self__ is multi


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_builtin_method_got_through_super_stays_that_method(way: str) -> None:
    # pickle saves a bound built-in method as getattr(owner, name): the subclass's override
    gen = lengths_of(Multi(a=[1, 2], b=[3]))
    assert next(gen) == 2
    copied = WAYS[way](gen)
    assert list(copied) == [1, (5, True)]


_MARKER = object()  # more-itertools' _marker: compared by identity


@contsnap.checkpointable
def pairs_equal(*iterables):
    held = _MARKER
    for combo in itertools.zip_longest(*iterables, fillvalue=_MARKER):
        if any(value is _MARKER for value in combo):
            raise ValueError("unequal lengths")
        yield combo
    yield held is _MARKER


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_module_level_sentinel_stays_itself(way: str) -> None:
    # a copied object() would never be `is` the module's again: the loop ran forever
    gen = pairs_equal([1, 2], "ab")
    assert next(gen) == (1, "a")
    assert list(WAYS[way](gen)) == [(2, "b"), True]
    short = pairs_equal([1, 2], "a")
    next(short)
    with pytest.raises(ValueError, match="unequal"):
        next(WAYS[way](short))
