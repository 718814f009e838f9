"""``"%s" % (a, (yield))``: CPython 3.11+ runs a constant %-format over a tuple display as
an f-string (``str(a)`` before the yield); 3.10 runs the operator (after). The transformed
code keeps the order of the interpreter it runs on."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from contsnap.testing import (
    LOG,
    check_coroutine_equivalence,
    check_generator_equivalence,
    load_program,
)

PROGRAM = """
class Shown:
    def __init__(self, log, value):
        self.log = log
        self.value = value

    def __str__(self):
        self.log.append(("str", self.value))
        return str(self.value)

    def __repr__(self):
        self.log.append(("repr", self.value))
        return repr(self.value)

    def __format__(self, spec):
        self.log.append(("format", self.value, spec))
        return format(str(self.value), spec)


def gen(n, log):
    got = yield "start"
    {body}
    yield "end"
"""


def _check(body: str) -> None:
    source = PROGRAM.replace("{body}", body)
    with load_program(source) as native, load_program(source, marked=True) as marked:
        check_generator_equivalence(native.gen, marked.gen, (1, LOG), [None, "x", "y", "z"])


def test_str_of_an_item_before_the_yield_runs_before_it() -> None:
    _check("log.append('%s-%r' % (Shown(log, 1), (yield 'mid')))")


def test_items_after_the_last_yield_keep_their_order_too() -> None:
    _check(
        "log.append('%s|%5r|%-4s|%.1a' % (Shown(log, 1), (yield), Shown(log, 2), Shown(log, 3)))"
    )


def test_two_yields_in_one_format() -> None:
    _check(
        "x = '%r%%%s|%s' % (Shown(log, 6), (yield 7), (yield '%s' % (Shown(log, 8),)))\n"
        "    log.append(x)"
    )


def test_a_format_python_keeps_as_an_operator_is_left_alone() -> None:
    # %d, a starred item, more units than items: the operator runs, after every item
    _check("log.append('%d %s' % (n, (yield)))")
    _check("log.append('%s %s' % (*[Shown(log, 1)], (yield)))")
    _check(
        "try:\n"
        "        log.append('%s %s %s' % (Shown(log, 1), (yield)))\n"
        "    except TypeError as exc:\n"
        "        log.append(str(exc))"
    )


UNIT = st.builds(
    lambda flags, width, precision, conversion: f"%{flags}{width}{precision}{conversion}",
    st.sampled_from(["", "-", "0", "+", " ", "#", "-0"]),
    st.sampled_from(["", "1", "5", "12", "123"]),
    st.sampled_from(["", ".", ".2", ".10"]),
    st.sampled_from(["s", "r", "a", "s", "r", "d", "x"]),
)
TEXT = st.sampled_from(["", "-", "%%", "{}", "'", '"', "\\n", "é"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(TEXT, UNIT), min_size=1, max_size=4), TEXT, st.data())
def test_random_formats_around_a_yield_match_native(
    units: list[tuple[str, str]], tail: str, data: st.DataObject
) -> None:
    fmt = "".join(text + unit for text, unit in units) + tail
    count = len(units)
    at = data.draw(st.integers(0, count - 1), label="yield at")
    items = [f"Shown(log, {i})" for i in range(count)]
    items[at] = f"(yield {at})"
    if data.draw(st.booleans(), label="item after the yield is an int"):
        items[-1] = "n" if at != count - 1 else items[-1]
    body = f"log.append({fmt!r} % ({', '.join(items)},))"
    if "d" in fmt or "x" in fmt:
        body = f"try:\n        {body}\n    except TypeError as exc:\n        log.append(str(exc))"
    _check(body)


def test_the_order_differs_between_versions_as_python_says() -> None:
    """A pin of the fact the transform follows: only 3.11+ convert before the yield."""
    log: list[object] = []

    class Item:
        def __str__(self) -> str:
            log.append("str")
            return "item"

    def native():  # type: ignore[no-untyped-def]
        yield "%s %s" % (Item(), (yield))  # noqa: UP031

    g = native()
    next(g)
    log.append("paused")
    g.send(None)
    expected = ["str", "paused"] if sys.version_info >= (3, 11) else ["paused", "str"]
    assert log == expected


ASYNC_PROGRAM = (
    PROGRAM.split("def gen")[0]
    + """
import contsnap


async def gen(n, log):
    log.append("%s|%4r" % (Shown(log, 1), await contsnap.checkpoint()))
    log.append("%s%s" % (Shown(log, 2), (await contsnap.checkpoint()) or Shown(log, 3)))
    return n
"""
)


def test_an_await_inside_a_percent_format_keeps_the_native_order() -> None:
    with (
        load_program(ASYNC_PROGRAM) as native,
        load_program(ASYNC_PROGRAM, marked=True) as marked,
    ):
        check_coroutine_equivalence(native.gen, marked.gen, (1, LOG))
