"""Random coroutine and async generator programs."""

from __future__ import annotations

import itertools
from typing import Final, Literal

from hypothesis import strategies as st

from ._compound import _function
from ._program_text import _PRELUDE, _indent, _Lines, _Scope, _small

_ACTX: Final = '''

class ACtx:
    """Logs its async enter and exit; may swallow an Exception; with `pauses`, awaits a
    checkpoint in both (so a marked program marks these methods too)."""

    def __init__(self, log, name, suppress, pauses):
        self.log = log
        self.name = name
        self.suppress = suppress
        self.pauses = pauses

    async def __aenter__(self):
        self.log.append(("aenter", self.name))
        if self.pauses:
            await contsnap.checkpoint()
        return self.name

    async def __aexit__(self, exc_type, exc, tb):
        self.log.append(("aexit", self.name, None if exc_type is None else exc_type.__name__))
        if self.pauses:
            await contsnap.checkpoint()
        return self.suppress and exc_type is not None and issubclass(exc_type, Exception)
'''

# The sync prelude after its docstring line, with the import the awaits need and ACtx.
_ASYNC_PRELUDE: Final = (
    '"""A program drawn by contsnap.testing.{strategy}()."""\n\nimport contsnap\n'
    + _PRELUDE.split("\n", 1)[1]
    + _ACTX
)


def _leaf(draw: st.DrawFn) -> tuple[_Lines, int]:
    """``async def leaf(n, log)``: the innermost coroutine of an await chain. It awaits one
    or two checkpoints, may raise ``KeyError`` and may log in a ``finally``."""
    pauses = draw(st.integers(1, 2))
    body = ["await contsnap.checkpoint()"] * pauses
    if draw(st.booleans()):
        body += [f"if n % 5 == {_small(draw, 0, 4)}:", '    raise KeyError("leaf")']
    if draw(st.booleans()):
        body = ["try:", *_indent(body), "finally:", '    log.append(("leaf end", n))']
    result = draw(st.sampled_from(["n * 3 % 11", "n // 2 - 1", "abs(n) + 1"]))
    lines = [
        "async def leaf(n, log):",
        *_indent(['log.append(("leaf", n))', *body, f"return {result}"]),
    ]
    return lines, len(lines) + pauses


def _agen(draw: st.DrawFn, leaf_cost: int) -> tuple[_Lines, int, int]:
    """``async def agen(n, log)``: an async generator for ``async for``, yielding one to
    three values with checkpoints around them; it may await ``leaf``, raise
    ``ValueError`` and await in its ``finally``. Returns its lines, the most values it
    yields and the most steps a whole run takes."""
    rounds = draw(st.integers(1, 3))
    received = draw(
        st.sampled_from(
            [
                "got = yield n + k",
                "got = yield k * 2",
                "got = yield (await contsnap.checkpoint() or k)",
            ]
        )
    )
    loop = ["await contsnap.checkpoint()"] * draw(st.booleans()) + [received]
    loop.append('log.append(("agen got", k, got))')
    once = 0
    if draw(st.booleans()):
        loop += [f"if k == {_small(draw, 0, rounds - 1)}:", "    await leaf(n + k, log)"]
        once = leaf_cost
    if draw(st.booleans()):
        loop += [f"if n + k == {_small(draw, 0, 5)}:", '    raise ValueError("agen", k)']
    cleanup = ['log.append(("agen end", n))']
    cleanup += ["await contsnap.checkpoint()"] * draw(st.booleans())
    body = [
        'log.append(("start", "agen", n))',
        "try:",
        f"    for k in range({rounds}):",
        *_indent(_indent(loop)),
        "finally:",
        *_indent(cleanup),
    ]
    loop_text = "\n".join(loop)
    per_round = 1 + len(loop) + loop_text.count("yield") + loop_text.count("checkpoint()")
    cost = 4 + rounds * per_round + once + 2 * len(cleanup)
    return ["async def agen(n, log):", *_indent(body)], rounds, cost


def _async_program(
    draw: st.DrawFn, dialect: Literal["coroutine", "asyncgen"], max_steps: int
) -> str:
    counter = itertools.count()

    def fresh(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    leaf_lines, leaf_cost = _leaf(draw)
    inner_scope = _Scope(
        fresh=fresh, dialect="coroutine", callee="leaf", inner_cost=leaf_cost, returns="int"
    )
    inner_budget = max_steps // 10 + 14  # about a dozen of its steps are its preamble
    inner_lines, inner_cost = _function(draw, "inner", "n", inner_scope, inner_budget)
    agen_lines, agen_rounds, agen_cost = _agen(draw, leaf_cost)
    gen_scope = _Scope(
        fresh=fresh,
        inner_cost=inner_cost,
        closures=draw(st.booleans()),
        dialect=dialect,
        agen_rounds=agen_rounds,
        agen_cost=agen_cost,
        returns="none" if dialect == "asyncgen" else "any",
    )
    gen_lines, _ = _function(draw, "gen", "arg", gen_scope, max_steps - inner_cost)
    helpers: list[_Lines] = []
    # Only the helpers that run: an unused one would be noise in every failure report.
    if any("inner(" in line for line in gen_lines):
        helpers.append(inner_lines)
    if any("agen(" in line for line in gen_lines):
        helpers.append(agen_lines)
    if any("leaf(" in line for lines in helpers for line in lines):
        helpers.insert(0, leaf_lines)
    strategy = "coroutine_programs" if dialect == "coroutine" else "async_generator_programs"
    lines = [_ASYNC_PRELUDE.replace("{strategy}", strategy).rstrip("\n")]
    for helper in [*helpers, gen_lines]:
        lines += ["", "", *helper]
    return "\n".join([*lines, ""])


@st.composite
def coroutine_programs(draw: st.DrawFn, max_steps: int = 200) -> str:
    """Source text of a module defining ``async def gen(arg, log):``, a random coroutine.

    ``gen`` is built from the statements of
    [`generator_programs`][contsnap.testing.generator_programs] (loops, try/except/else/finally,
    ``with``, match, closures, comprehensions, early ``return``, raised exceptions...) with
    ``await`` where those have ``yield``: ``await contsnap.checkpoint()`` as a statement and inside
    call arguments, operators, subscripts, f-strings, %-formats, conditional expressions, walrus,
    starred and augmented assignments (to names, attributes, items), ``while`` tests, ``match``
    guards and ``with`` headers. It also awaits ``inner(n, log)``, a smaller random coroutine that
    may await ``leaf(n, log)`` (so await chains are three deep: ``x += await inner(...)``),
    sometimes held unstarted across a checkpoint first; iterates ``async for v in agen(n, log)``,
    an async generator, with break/continue/else; and enters ``async with ACtx(...)``, an async
    context manager that logs its enter and exit, may swallow the exception and may await a
    checkpoint in ``__aenter__``/``__aexit__``. Helpers appear only when used; every function
    appends its side effects to ``log``.
    It sets and reads ``CV``, a module-level ``ContextVar`` (a task paused by
    [`contsnap.pause`][contsnap.pause] keeps what it set).

    The program imports ``contsnap`` for the checkpoints but marks nothing
    ([`assert_async_equivalent`][contsnap.testing.assert_async_equivalent] imports a marked copy
    too). Only ``contsnap.checkpoint()`` suspends, so a run needs no event loop: a driver calling
    ``send(None)`` steps it. A run takes at most about ``max_steps`` statements; the module is valid
    Python 3.10.
    """
    return _async_program(draw, "coroutine", max_steps)


@st.composite
def async_generator_programs(draw: st.DrawFn, max_steps: int = 200) -> str:
    """Like [`coroutine_programs`][contsnap.testing.coroutine_programs], but ``gen`` is an async
    generator: it also yields (statements, received values in expressions, in ``with`` headers, in
    exception handlers), and returns nothing. It never yields inside a ``finally`` (closed by
    ``aclose()`` there, CPython marks an async generator closed for good); it awaits there instead.
    """
    return _async_program(draw, "asyncgen", max_steps)
