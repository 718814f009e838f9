"""Random generator programs: the prelude every program starts with, the scope of the
function being written, and expressions."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final, Literal

from hypothesis import strategies as st

_PRELUDE: Final = '''\
"""A program drawn by contsnap.testing.generator_programs()."""

import contextvars

# assert_equivalent() sets this per call: a generator restored into the globals
# of another module (an earlier copy of the same program) logs the wrong one.
NONCE = None

# set and read by the programs: a paused task keeps what it set
CV = contextvars.ContextVar("CV", default=0)


class Ctx:
    """Logs its enter and exit (with the exception type); may swallow an Exception."""

    def __init__(self, log, name, suppress):
        self.log = log
        self.name = name
        self.suppress = suppress

    def __enter__(self):
        self.log.append(("enter", self.name))
        return self.name

    def __exit__(self, exc_type, exc, tb):
        self.log.append(("exit", self.name, None if exc_type is None else exc_type.__name__))
        return self.suppress and exc_type is not None and issubclass(exc_type, Exception)


class Box:
    def __init__(self, attr):
        self.attr = attr


class Shown:
    """Logs its conversions to text: a %-format shows when it converts each item."""

    def __init__(self, log, value):
        self.log = log
        self.value = value

    def __str__(self):
        self.log.append(("str", self.value))
        return str(self.value)

    def __repr__(self):
        self.log.append(("repr", self.value))
        return repr(self.value)


class Steps:
    """An iterator written in Python that logs each call of its ``__iter__``: a for
    loop makes one, on its iterable."""

    def __init__(self, log, n):
        self.log = log
        self.n = n

    def __iter__(self):
        self.log.append(("iter", self.n))
        return self

    def __next__(self):
        if self.n <= 0:
            raise StopIteration
        self.n -= 1
        return self.n


class Countdown:
    """An iterable whose iterator has ``__next__`` only, which a for loop accepts."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return Ticks(self.n)


class Ticks:
    def __init__(self, n):
        self.n = n

    def __next__(self):
        if self.n <= 0:
            raise StopIteration
        self.n -= 1
        return self.n * 2
'''

# Locals every generated function starts with: three ints, a list that never
# gets shorter than 3, a dict whose keys change at most once (one "grown" key:
# a loop over it then raises, as Python does), an object with an attribute, a
# list for starred targets, and objects that look into others: a live view of
# the dict's keys, a writable memoryview of a bytearray, a bound method of a set.
_LOCALS: Final = (
    "b = 1",
    "c = 2",
    "items = [3, 1, 4]",
    'table = {"k0": 0, "k1": 1, "k2": 2}',
    "box = Box(5)",
    "mid = []",
    "keys, buf = table.keys(), bytearray(b'abcdefgh')",
    "window, known = memoryview(buf)[2:6], set(items).__contains__",
)
_INTS: Final = ("a", "b", "c")
_KEYS: Final = ('"k0"', '"k1"', '"k2"')

_Lines = list[str]


def _indent(lines: _Lines) -> _Lines:
    return ["    " + line for line in lines]


@dataclasses.dataclass(frozen=True)
class _Scope:
    """What the statement builders may use at one point of a function body."""

    fresh: Callable[[str], str]  # hands out names never used before: i0, w1, err2...
    inner_cost: int = 0  # > 0: `inner` exists and costs at most this many steps
    closures: bool = False  # `bump` (writes nonlocal c) and `scale` (reads b) exist
    depth: int = 0  # nesting of compound statements
    loops: int = 0  # nesting of loops: break/continue allowed when > 0
    in_try: bool = False  # a raise here may be caught
    in_except: bool = False  # a bare `raise` would re-raise
    in_finally: bool = False  # no return/break/continue here
    ints: tuple[str, ...] = _INTS
    keys: tuple[str, ...] = _KEYS
    errors: tuple[str, ...] = ()  # bound `except ... as` names
    # The async programs: "coroutine" bodies await, "asyncgen" bodies also yield.
    dialect: Literal["sync", "coroutine", "asyncgen"] = "sync"
    callee: str = "inner"  # the helper `inner_cost` is the price of
    agen_rounds: int = 0  # > 0: the async generator `agen` exists and yields at most this often
    agen_cost: int = 0  # the steps of a whole run of `agen`
    returns: Literal["any", "int", "none"] = "any"  # what a `return` may give back

    def nested(self, **changes: Any) -> _Scope:
        return dataclasses.replace(self, depth=self.depth + 1, **changes)

    @property
    def can_yield(self) -> bool:
        """A ``yield`` may go here. Not in an async generator's ``finally``: closed by
        ``aclose()``, CPython marks it closed for good when it yields there."""
        return self.dialect == "sync" or (self.dialect == "asyncgen" and not self.in_finally)

    @property
    def can_await(self) -> bool:
        return self.dialect != "sync"


def _suspensions(text: str, scope: _Scope) -> int:
    """The most suspensions ``text`` can cause: one per yield or checkpoint, plus the
    whole run of each call of the helper ``scope.callee``."""
    calls = text.count(f"{scope.callee}(") * scope.inner_cost
    return text.count("yield") + text.count("checkpoint()") + calls


def _cost(lines: _Lines, scope: _Scope) -> int:
    """Steps a simple statement can take: one, plus one per suspension, plus helpers' runs."""
    return len(lines) + _suspensions("\n".join(lines), scope)


def _small(draw: st.DrawFn, low: int = 0, high: int = 9) -> str:
    return str(draw(st.integers(low, high)))


def _int_expr(
    draw: st.DrawFn, scope: _Scope, depth: int = 0, *, yields: bool = True, walrus: bool = True
) -> str:
    """An expression that gives an int (or raises TypeError, having received None).

    ``yields=False`` keeps suspensions out (where a step count must stay exact);
    ``walrus=False`` keeps ``:=`` out (a comprehension's iterable may not have it).
    """
    kinds = ["name", "number", "name", "lookup"]  # atoms first: they are what shrinking seeks
    if depth < 2:
        kinds += ["add", "modulo"] + ["yield"] * yields
    if depth < 1:
        kinds += ["scale", "divide", "choose", "builtin", "lambda", "comprehension"]
        kinds += ["closure"] * scope.closures + ["walrus"] * walrus + ["yield"] * yields
    kind = draw(st.sampled_from(kinds))

    def sub(*, walrus: bool = walrus) -> str:
        return _int_expr(draw, scope, depth + 1, yields=yields, walrus=walrus)

    if kind == "name":
        return draw(st.sampled_from(scope.ints))
    if kind == "number":
        return _small(draw)
    if kind == "lookup":
        lookups = ["len(items)", "box.attr", "len(mid)", *(f"table[{k}]" for k in _KEYS)]
        return draw(st.sampled_from(lookups))
    if kind == "add":
        return f"({sub()} {draw(st.sampled_from(['+', '-']))} {sub()})"
    if kind == "scale":  # bounded, however many times a loop repeats it
        return f"(({sub()} * {_small(draw, 2, 5)}) % 97)"
    if kind == "divide":  # the divisor is 1..5, never 0
        return f"({sub()} // ({sub()} % 5 + 1))"
    if kind == "modulo":
        return f"({sub()} % {_small(draw, 2, 7)})"
    if kind == "choose":
        test = _condition(draw, scope, depth + 1, yields=yields, walrus=walrus)
        return f"({sub()} if {test} else {sub()})"
    if kind == "builtin":
        name = draw(st.sampled_from(["abs", "max", "min"]))
        return f"abs({sub()})" if name == "abs" else f"{name}({sub()}, {sub()})"
    if kind == "lambda":  # the lambda reads a local, which makes that local a cell
        return f"(lambda q: q + {draw(st.sampled_from(scope.ints))})({sub()})"
    if kind == "comprehension":
        form = draw(st.integers(0, 2))
        if form == 0:
            return f"sum([q * 2 for q in range({sub(walrus=False)} % 4)])"
        if form == 1:
            return f"len([q for q in items if q and q > {draw(st.sampled_from(scope.ints))}])"
        return "sum([v for k, v in table.items() if v])"
    if kind == "closure":
        return f"{draw(st.sampled_from(['bump', 'scale']))}({sub()})"
    if kind == "walrus":
        return f"({draw(st.sampled_from(_INTS))} := {sub()})"
    # A suspension inside an expression: the partial results around it must survive.
    if scope.dialect == "sync" or (scope.can_yield and draw(st.booleans())):
        form = draw(st.integers(0, 2))
        if form == 0:
            return f"(yield {sub()})"
        if form == 1:
            return f"((yield {sub()}) or 0)"
        return "((yield) or 1)"
    return _awaited_int(draw, scope, sub)


def _awaited_int(draw: st.DrawFn, scope: _Scope, sub: Callable[[], str]) -> str:
    """An ``await`` that gives an int: of a checkpoint (None, so ``or`` a value), or of
    the helper coroutine ``scope.callee``, which returns an int."""
    forms = ["checkpoint", "checkpoint-or-1"] + ["call", "call"] * bool(scope.inner_cost)
    form = draw(st.sampled_from(forms))
    if form == "checkpoint":
        return f"(await contsnap.checkpoint() or {sub()})"
    if form == "checkpoint-or-1":
        return "((await contsnap.checkpoint()) or 1)"
    return f"(await {scope.callee}({sub()}, log))"


def _condition(
    draw: st.DrawFn, scope: _Scope, depth: int = 0, *, yields: bool = True, walrus: bool = True
) -> str:
    """A boolean expression, sometimes with a walrus or a yield in it."""
    kinds = ["compare", "parity", "truthy", "both"] + ["walrus"] * walrus + ["yield"] * yields
    kind = draw(st.sampled_from(kinds))

    def operand() -> str:
        return _int_expr(draw, scope, depth + 1, yields=yields, walrus=walrus)

    left = operand()
    if kind == "compare":
        return f"{left} {draw(st.sampled_from(['<', '>', '==', '!=', '<=']))} {operand()}"
    if kind == "parity":
        return f"{left} % 2 == 0"
    if kind == "truthy":
        return draw(st.sampled_from([left, f"not {left}"]))
    if kind == "both":
        op = draw(st.sampled_from(["and", "or"]))
        return f"{left} > {_small(draw)} {op} {operand()} < {_small(draw)}"
    if kind == "walrus":
        return f"({draw(st.sampled_from(_INTS))} := {left}) > {_small(draw, 0, 4)}"
    if scope.dialect == "sync" or (scope.can_yield and draw(st.booleans())):
        return f"(yield {left})"
    if scope.inner_cost and draw(st.booleans()):
        return f"(await {scope.callee}({left}, log)) % 2 == 1"
    return f"(await contsnap.checkpoint() is None and {left} > {_small(draw)})"


def _tag(scope: _Scope, prefix: str = "s") -> str:
    return f'"{scope.fresh(prefix)}"'
