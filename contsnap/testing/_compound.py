"""Random generator programs: compound statements (if, while, for, try, with, match),
functions, and `generator_programs`."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Final

from hypothesis import strategies as st

from ._program_text import (
    _LOCALS,
    _PRELUDE,
    _condition,
    _cost,
    _indent,
    _int_expr,
    _Lines,
    _Scope,
    _small,
    _suspensions,
    _tag,
)
from ._simple import _pause, _simple, _suspends


def _block(
    draw: st.DrawFn, scope: _Scope, budget: int, least: int = 1, most: int = 3
) -> tuple[_Lines, int]:
    """A list of ``least`` to ``most`` statements that takes at most ``budget`` steps."""
    lines: _Lines = []
    cost = 0
    for _ in range(draw(st.integers(least, most))):
        if cost >= budget:
            break
        statement, spent = _statement(draw, scope, budget - cost)
        lines += statement
        cost += spent
    if not any(_suspends(line) for line in lines) and cost + 2 <= budget:
        lines.append(_pause(draw, scope))  # so that every clause can be resumed in
        cost += 2
    return (lines or ["pass"]), max(cost, 1)


def _statement(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    """One statement, simple or compound, and the most steps it can take (<= ``budget``)."""
    kinds = ["simple", "simple", "simple", "simple"]
    if scope.depth < 3 and budget >= 8:
        kinds += ["if", "try", "with", "match"]
        if scope.loops < 2:
            kinds += ["while", "for"]
    if scope.loops and not scope.in_finally:
        kinds += ["jump"]
    if scope.depth and not scope.in_finally:  # an early return at the top would cut it short
        kinds += ["return"]
    kind = draw(st.sampled_from(kinds))
    if kind in _COMPOUND:
        lines, spent = _COMPOUND[kind](draw, scope, budget)
    else:
        if kind == "simple":
            lines = _simple(draw, scope)
        elif kind == "jump":
            jump = draw(st.sampled_from(["break", "continue"]))
            lines = [f"if {_condition(draw, scope)}:", f"    {jump}"]
        elif scope.returns == "none":  # an async generator: a bare return
            lines = [f"if {_condition(draw, scope)}:", "    return"]
        else:
            value = _int_expr(draw, scope)
            if scope.returns == "any":
                value = draw(st.sampled_from([value, f'("early", {value})']))
            lines = [f"if {_condition(draw, scope)}:", f"    return {value}"]
        spent = _cost(lines, scope)
    if spent > budget:  # too dear here: a cheap statement instead
        return [f"log.append({_tag(scope)})"], 1
    return lines, spent


def _if(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    inside = scope.nested()
    branches = draw(st.integers(1, 3))
    lines: _Lines = []
    tests_cost = 0
    bodies_cost = 0
    share = max(1, budget // 2)
    for number in range(branches):
        test = _condition(draw, scope)
        tests_cost += 1 + _suspensions(test, scope)
        body, spent = _block(draw, inside, share)
        bodies_cost = max(bodies_cost, spent)
        lines += [f"{'if' if number == 0 else 'elif'} {test}:", *_indent(body)]
    if draw(st.booleans()):
        body, spent = _block(draw, inside, share)
        bodies_cost = max(bodies_cost, spent)
        lines += ["else:", *_indent(body)]
    return lines, tests_cost + bodies_cost


def _loop_share(budget: int, rounds: int, overhead: int) -> int:
    """The budget of one round of a loop body (or of its `else`), when each round
    also spends ``overhead`` steps on the loop's own test and bookkeeping."""
    return max(1, budget // (rounds + 1) - overhead)


def _while(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    counter = scope.fresh("w")
    rounds = draw(st.integers(1, 4))
    test = f"{counter} < {rounds}"
    if draw(st.booleans()):  # the counter still bounds it; the test may also yield
        test += f" and ({_condition(draw, scope)})"
    overhead = 2 + _suspensions(test, scope)  # the test and the counter's increment
    share = _loop_share(budget - 1, rounds, overhead)
    body, spent = _block(draw, scope.nested(loops=scope.loops + 1), share)
    lines = [f"{counter} = 0", f"while {test}:", f"    {counter} += 1", *_indent(body)]
    cost = 1 + (rounds + 1) * overhead + rounds * spent
    if draw(st.booleans()):
        tail, tail_cost = _block(draw, scope.nested(), share, most=1)
        lines += ["else:", *_indent(tail)]
        cost += tail_cost
    return lines, cost


def _for(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    rounds = draw(st.integers(1, 4))
    item = scope.fresh("i")
    value = scope.fresh("v")
    ints = (*scope.ints, item)
    keys = scope.keys
    sources = ["range", "range-of", "items", "table", "enumerate", "zip", "genexp"]
    sources += ["steps", "countdown"]
    if scope.dialect == "sync" and scope.inner_cost and scope.inner_cost * 2 < budget:
        sources += ["inner", "inner", "inner"]
    if scope.agen_rounds and scope.agen_cost * 2 < budget:
        sources += ["agen", "agen", "agen"]
    source = draw(st.sampled_from(sources))
    header_cost = 1
    if source == "range":
        header = f"for {item} in range({rounds}):"
    elif source == "range-of":
        header = f"for {item} in range({_int_expr(draw, scope, 1)} % {rounds + 1}):"
        header_cost += _suspensions(header, scope)
    elif source == "items":
        header = f"for {item} in items[:{rounds}]:"
    elif source == "table":
        rounds = 3
        header = f"for {item}, {value} in table.items():"
        ints, keys = (*scope.ints, value), (*scope.keys, item)
    elif source == "enumerate":
        header = f"for {item}, {value} in enumerate(items[:{rounds}]):"
        ints = (*ints, value)
    elif source == "zip":
        header = f"for {item}, {value} in zip(range({rounds}), items):"
        ints = (*ints, value)
    elif source == "genexp":  # the loop's iterator is a generator expression, held across
        header = f"for {item} in (g * {_small(draw)} for g in range({rounds}) if g != 1):"
    elif source == "steps":  # an iterator class of Python code: __iter__ is called once
        header = f"for {item} in Steps(log, {rounds}):"
    elif source == "countdown":  # its iterator has no __iter__
        header = f"for {item} in Countdown({rounds}):"
    elif source == "agen":  # an async for: each value the async generator yields is a round
        rounds = scope.agen_rounds
        header = f"async for {item} in agen({_int_expr(draw, scope, 1, yields=False)}, log):"
        header_cost += scope.agen_cost
    else:  # iterate a generator: each of its yields is a round
        rounds = scope.inner_cost
        header = f"for {item} in inner({_int_expr(draw, scope, 1, yields=False)}, log):"
        header_cost += scope.inner_cost
    inside = scope.nested(loops=scope.loops + 1, ints=ints, keys=keys)
    share = _loop_share(budget - header_cost, rounds, 1)
    body, spent = _block(draw, inside, share)
    lines = [header, *_indent(body)]
    cost = header_cost + rounds * (spent + 1)
    if draw(st.booleans()):
        tail, tail_cost = _block(draw, scope.nested(), share, most=1)
        lines += ["else:", *_indent(tail)]
        cost += tail_cost
    return lines, cost


def _try(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    handlers = draw(
        st.lists(
            st.sampled_from(["ValueError", "KeyError", "both", "Exception"]),
            max_size=2,
            unique=True,
        )
    )
    has_else = bool(handlers) and draw(st.booleans())
    has_finally = not handlers or draw(st.booleans())
    share = max(1, budget // (2 + len(handlers) + has_else + has_finally))
    body, cost = _block(draw, scope.nested(in_try=True), share)
    lines = ["try:", *_indent(body)]
    for caught in handlers:
        error = scope.fresh("err")
        clause = "(ValueError, KeyError)" if caught == "both" else caught
        handler_scope = scope.nested(in_except=True, errors=(*scope.errors, error))
        handler, spent = _block(draw, handler_scope, share)
        lines += [
            f"except {clause} as {error}:",
            f'    log.append(("caught", type({error}).__name__, {error}.args))',
            *_indent(handler),
        ]
        cost += spent + 1
    if has_else:
        tail, spent = _block(draw, scope.nested(), share)
        lines += ["else:", *_indent(tail)]
        cost += spent
    if has_finally:
        cleanup, spent = _block(draw, scope.nested(in_finally=True, in_except=False), share)
        lines += ["finally:", *_indent(cleanup)]
        cost += spent
    return lines, cost


def _with(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    asynchronous = scope.can_await and draw(st.booleans())
    managers = []
    pauses = 0  # an `ACtx` that pauses awaits a checkpoint in __aenter__ and __aexit__
    for _ in range(draw(st.integers(1, 2))):
        label = scope.fresh("cm")
        names = [f'"{label}"'] + [f'(yield "{label}")'] * scope.can_yield
        names += [f'("{label}", await contsnap.checkpoint())'] * scope.can_await
        name = draw(st.sampled_from(names))
        if asynchronous:
            pause = draw(st.booleans())
            pauses += 2 * pause
            managers.append(f"ACtx(log, {name}, {draw(st.booleans())}, {pause})")
        else:
            managers.append(f"Ctx(log, {name}, {draw(st.booleans())})")
    bound = scope.fresh("name")
    header = f"{'async ' * asynchronous}with {', '.join(managers)} as {bound}:"
    body, spent = _block(draw, scope.nested(), budget - 3 - pauses)
    lines = [header, f'    log.append(("inside", {bound}))', *_indent(body)]
    return lines, spent + 3 + pauses + _suspensions(header, scope)


def _match(draw: st.DrawFn, scope: _Scope, budget: int) -> tuple[_Lines, int]:
    shape = draw(st.sampled_from(["int", "pair", "table"]))
    first, second = scope.fresh("m"), scope.fresh("m")
    if shape == "int":
        subject = _int_expr(draw, scope)
        patterns = [
            (_small(draw), ()),
            (f"{_small(draw)} | {_small(draw)}", ()),
            (f"int({first}) if {first} > {_small(draw)}", (first,)),
            ("None", ()),
        ]
    elif shape == "pair":
        subject = f"({_int_expr(draw, scope)}, {_int_expr(draw, scope)})"
        patterns = [
            (f"({_small(draw)}, {first})", (first,)),
            (
                f"({first}, {second}) if {first} is not None and {second} is not None"
                f" and {first} > {second}",
                (first, second),
            ),
            (f"[{first}, *rest]", (first,)),
        ]
    else:
        subject = "table"
        patterns = [
            (f'{{"k0": {first}}} if {first}', (first,)),
            ('{"k1": 1 | 2}', ()),
        ]
    chosen = draw(st.lists(st.sampled_from(patterns), min_size=1, max_size=3, unique=True))
    share = max(1, budget // (len(chosen) + 2))
    lines = [f"match {subject}:"]
    cost = 1 + _suspensions(subject, scope)
    bodies_cost = 0
    for pattern, captured in chosen:
        if draw(st.integers(0, 3)) == 0 and " if " not in pattern:  # a guard that yields
            pattern += f" if {_condition(draw, scope)}"
        cost += _suspensions(pattern, scope)
        body, spent = _block(draw, scope.nested(ints=(*scope.ints, *captured)), share)
        bodies_cost = max(bodies_cost, spent)
        lines += [f"    case {pattern}:", *_indent(_indent(body))]
    if draw(st.booleans()):
        body, spent = _block(draw, scope.nested(), share)
        bodies_cost = max(bodies_cost, spent)
        lines += ["    case _:", *_indent(_indent(body))]
    return lines, cost + bodies_cost


_COMPOUND: Final[dict[str, Callable[[st.DrawFn, _Scope, int], tuple[_Lines, int]]]] = {
    "if": _if,
    "while": _while,
    "for": _for,
    "try": _try,
    "with": _with,
    "match": _match,
}

_CLOSURES: Final = (
    "def bump(step):",
    "    nonlocal c",
    "    c = c + step",
    "    return c",
    "scale = lambda x: x * 2 + b",
)


def _function(
    draw: st.DrawFn, name: str, parameter: str, scope: _Scope, budget: int
) -> tuple[_Lines, int]:
    """``def name(parameter, log):`` with the standard locals, a random body and a return
    (``async def`` in the async dialects)."""
    preamble = [f"a = {parameter}", *_LOCALS]
    preamble.append(f'log.append(("start", "{name}", a))')
    if scope.can_await:
        preamble.append("CV.set(0)")  # every run starts from the same context value
    if scope.closures:
        preamble += _CLOSURES
    if scope.returns == "none":
        ending = "return"
    elif scope.returns == "int":
        ending = f"return {_int_expr(draw, scope)}"
    else:
        ending = draw(st.sampled_from(["return (a, b, c)", "return", "return {}"]))
        if "{}" in ending:
            ending = ending.format(_int_expr(draw, scope))
    fixed_cost = len(preamble) + 3 + _suspensions(ending, scope)
    body, cost = _block(draw, scope, budget - fixed_cost, least=2, most=6)
    if scope.dialect != "coroutine" and not any("yield" in line for line in body):
        body.append(f"yield {_tag(scope, 'y')}")  # it must stay a generator function
    body.append('log.append(("nonce", NONCE))')
    define = f"{'async ' * scope.can_await}def {name}({parameter}, log):"
    lines = [define, *_indent([*preamble, *body, ending])]
    return lines, fixed_cost + cost


@st.composite
def generator_programs(draw: st.DrawFn, max_steps: int = 200) -> str:
    """Source text of a module defining ``def gen(arg, log):``, a random generator function.

    Its body mixes assignments and int arithmetic; if/elif/else; ``while``
    loops with counters and ``for`` loops over ``range``, list slices,
    ``dict.items()``, ``enumerate``, ``zip``, the generator ``inner``, an
    iterator class of Python code that logs its ``__iter__`` and an iterable
    whose iterator has ``__next__`` only; break
    and continue; loop ``else``; try/except/else/finally with yields in every
    clause, deliberate ``ValueError``/``KeyError`` and bare re-raise; ``with``
    over a logging context manager that sometimes swallows the exception;
    match/case with guards; ``yield`` inside call arguments, operators,
    subscripts, f-strings, %-formats (beside an item that logs when it is
    converted), conditional expressions, walrus and augmented assignments (to
    names, attributes, items); starred assignment; a closure writing a
    ``nonlocal`` and lambdas reading locals (cell variables); list
    comprehensions; generator expressions held across a yield and read after it
    (one ``for``, several, nested, under ``itertools.cycle``, a ``for`` loop's own
    iterable); early ``return``; ``yield from`` a list slice (whose iterator
    has no ``throw``); ``yield from inner(...)``, where
    ``inner(n, log)`` is a second, smaller random generator function at module
    level (defined when ``gen`` calls it), also held unstarted across a yield
    first. Every function appends its side effects to ``log``. Each function also
    holds objects that look into others across its yields: a live
    ``table.keys()`` view, a writable ``memoryview`` of a ``bytearray`` written
    through, a set's bound ``__contains__``; and its ``table`` may grow by one key,
    so that a loop over it raises "dictionary changed size during iteration".

    Loops are bounded, so a run takes at most about ``max_steps`` statements
    whatever is sent in; division is never by zero. The module is valid
    Python 3.10 and iterates no set or hash order, so native runs are
    deterministic.
    """
    counter = itertools.count()

    def fresh(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    inner_budget = max_steps // 10 + 14  # about a dozen of its steps are its preamble
    inner_lines, inner_cost = _function(draw, "inner", "n", _Scope(fresh=fresh), inner_budget)
    gen_scope = _Scope(fresh=fresh, inner_cost=inner_cost, closures=draw(st.booleans()))
    gen_lines, _ = _function(draw, "gen", "arg", gen_scope, max_steps - inner_cost)
    if any("inner(" in line for line in gen_lines):  # else it never runs: leave it out
        gen_lines = [*inner_lines, "", "", *gen_lines]
    return "\n".join([_PRELUDE, "", *gen_lines, ""])
