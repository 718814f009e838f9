"""Rewrite a generator body into its fresh and resume variants in one pass.

For every statement the processor returns an `Out`: the *fresh* code
(what runs when the generator is called normally), the *resume* code (the same
statement, able to jump back to a saved yield) and the set of yield labels it
contains. The rules, in the order a reader meets them:

* A yield anywhere in an expression is hoisted (A-normal form): everything
  Python would evaluate before it is stored in a ``_cs_t`` temporary first, so
  the order of evaluation is kept and partial results are named locals.
* Every yield becomes its own statement preceded by ``_cs_label = k``; a
  snapshot reads that label from the suspended frame.
* ``for`` keeps its iterator in ``_cs_iter_n``; ``with`` whose body yields is
  spelled out (PEP 343) with the manager in ``_cs_mgr_n``; ``match`` arms that
  yield become an ``if`` chain on ``_cs_arm_n``; an ``except`` handler that
  yields binds its exception to ``_cs_hx_n``; a ``finally`` that yields is
  split into explicit copies for the normal, exceptional and
  return/break/continue exits, each with its own labels.
* In the resume variant, while ``_cs_resuming`` is true every statement that
  does not contain the saved label is skipped, loops and ``if`` are entered
  towards it, an ``except``/``finally`` handler is re-entered by raising the
  saved exception, and at the label the yield becomes a priming
  ``yield PRIME`` (``yield from resume_delegate(...)`` for delegation).
* ``except`` clauses, ``finally`` bodies and ``with`` exits let
  ``__contsnap_rt__.Detach`` through untouched, so a moved continuation can end
  its old copy without running cleanup twice.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import libcst as cst

from .._labels import RT, LabelInfo, helper
from ._lines import Line, block, verbatim
from ._percent import Unit, UnknownFolding, native_pieces
from ._positions import Positions
from ._scope import (
    SUSPENSIONS,
    awaiting_comprehension,
    children,
    contains,
    exits,
    names_used,
    suspends,
)

#: statements that may start at a decorator (exact classes: see ``_scope``)
_DEFINITIONS = frozenset({cst.FunctionDef, cst.ClassDef})

#: the runtime helpers transformed code calls by global names of their own (see _labels)
FOR_ITER, WITH_ENTER, WITH_EXIT = helper("for_iter"), helper("with_enter"), helper("with_exit")
ITER, TYPE_OF, BUILTIN_ITERS = helper("iter"), helper("type_of"), helper("builtin_iters")
IS_DETACH, LIVE, DETACH = helper("is_detach"), helper("live"), helper("Detach")
YIELD_FROM_ITER = helper("yield_from_iter")


class UnsupportedSyntax(Exception):
    """A construct the transform cannot make resumable (message names the line)."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class Out:
    fresh: list[Line]
    resume: list[Line]
    labels: frozenset[int] = field(default_factory=frozenset)


@dataclass
class _FinallyExit:
    """A ``finally`` with yields that a return/break/continue may pass through."""

    state: str
    value: str
    loop_depth: int
    kinds: set[str] = field(default_factory=set)


def plain(lines: list[Line]) -> Out:
    return Out(lines, lines)


def cond(labels: Iterable[int]) -> str:
    """A test for "the saved label is one of these" (labels of a statement are contiguous)."""
    ordered = sorted(labels)
    lo, hi = ordered[0], ordered[-1]
    assert hi - lo + 1 == len(ordered), ordered
    return f"_cs_label == {lo}" if lo == hi else f"{lo} <= _cs_label <= {hi}"


def _suite(node: cst.BaseSuite) -> Sequence[cst.CSTNode]:
    return node.body


class BodyProcessor:
    """Turns the statements of one generator function into fresh and resume code."""

    def __init__(
        self,
        module: cst.Module,
        positions: Positions,
        line_offset: int,
    ) -> None:
        self.module = module
        self.positions = positions
        self.line_offset = line_offset
        self.labels: dict[int, LabelInfo] = {}
        self.live: list[str] = []
        self.temps_live: list[str] = []
        self.finally_exits: list[_FinallyExit] = []
        self.loop_depth = 0
        self._counter = 0
        self._line = 0
        self._yield_lines: list[tuple[int, Line]] = []
        #: names that are not plain locals (set by the caller from the function body)
        self.unstable: set[str] = set()
        #: an async generator: ``return`` takes no value
        self.bare_return = False
        #: the ``_cs_aw_n`` locals made so far, in order
        self.awaited: list[str] = []
        #: ``async for`` loops a comprehension was written out into: every line of those
        #: has the comprehension's line, so their steps must be labelled awaits
        self.spell_out: set[int] = set()

    def stable(self, node: cst.BaseExpression) -> bool:
        """Evaluating ``node`` again after a suspension gives the same value."""
        if _is_constant(node):
            return True
        return isinstance(node, cst.Name) and node.value not in self.unstable

    def finish_labels(self) -> None:
        """Keep the ``_cs_label = k`` store only where the line does not identify the yield.

        A paused frame reports its line (``f_lineno``); when just one yield of
        the function is on that line, the line is the label and the hot path
        stores nothing.
        """
        per_line: dict[int, int] = {}
        for info in self.labels.values():
            per_line[info.line] = per_line.get(info.line, 0) + 1
        for label, line in self._yield_lines:
            line.store = label if per_line[self.labels[label].line] > 1 else None

    # ------------------------------------------------------------------ basics

    def where(self, node: cst.CSTNode) -> tuple[int, int]:
        if type(node) in _DEFINITIONS:
            assert isinstance(node, (cst.FunctionDef, cst.ClassDef))
            if node.decorators:
                node = node.decorators[0]  # the statement starts at its first decorator
        pos = self.positions.get(node)
        if pos is None:
            return self._line, 0
        return pos[0] + self.line_offset, pos[1]

    def code(self, node: cst.CSTNode) -> str:
        text = self.module.code_for_node(node)
        if isinstance(node, cst.BaseExpression):
            text = text.strip()
            bare_tuple = isinstance(node, cst.Tuple) and not node.lpar
            if "\n" in text or bare_tuple:  # `for x in 1, 2:` must stay one argument
                text = f"({text})"
        return text

    def fresh_name(self, kind: str) -> str:
        self._counter += 1
        return f"_cs_{kind}_{self._counter}"

    def temp(self) -> str:
        name = self.fresh_name("t")
        self.temps_live.append(name)
        return name

    def line(self, text: str) -> Line:
        return Line(text, self._line)

    def yield_line(self, label: int, text: str) -> Line:
        line = Line(text, self._line, store=label)
        self._yield_lines.append((label, line))
        return line

    def assign(self, target: str, value: str) -> Out:
        return plain([self.line(f"{target} = {value}")])

    def new_label(self, delegate: str | None = None, kind: str = "yield") -> int:
        label = len(self.labels) + 1
        helpers = frozenset(self.live) | frozenset(self.temps_live)
        if delegate is not None:
            helpers |= {delegate}
        self.labels[label] = LabelInfo(self._line, helpers, delegate, kind=kind)
        return label

    def unsupported(self, what: str, node: cst.CSTNode) -> UnsupportedSyntax:
        return UnsupportedSyntax(what, self.where(node)[0])

    # ----------------------------------------------------------------- blocks

    def combine(self, outs: list[Out]) -> Out:
        """Sequence statements; in the resume variant skip those without the saved label."""
        fresh = [line for out in outs for line in out.fresh]
        labels = frozenset().union(*(out.labels for out in outs))
        if not labels:
            return Out(fresh, fresh)
        resume: list[Line] = []
        pending: list[Line] = []
        for out in outs:
            if not out.labels:
                pending.extend(out.fresh)
                continue
            if pending:
                resume.append(block("if not _cs_resuming:", pending[0].src, pending))
                pending = []
            first = out.resume[0].src if out.resume else self._line
            resume.append(block(f"if not _cs_resuming or {cond(out.labels)}:", first, out.resume))
        if pending:
            resume.append(block("if not _cs_resuming:", pending[0].src, pending))
        return Out(fresh, resume, labels)

    def body(self, suite: cst.BaseSuite | Sequence[cst.CSTNode]) -> Out:
        nodes = suite if isinstance(suite, Sequence) else _suite(suite)
        outs: list[Out] = []
        for node in nodes:
            outs.extend(self.statement(node))
        return self.combine(outs)

    def guarded(self, out: Out) -> list[Line]:
        """Resume code of a block that may be entered while resuming towards elsewhere."""
        if out.labels:
            return out.resume
        return (
            [
                block(
                    "if not _cs_resuming:", out.fresh[0].src if out.fresh else self._line, out.fresh
                )
            ]
            if out.fresh
            else []
        )

    # ------------------------------------------------------------- statements

    def statement(self, node: cst.CSTNode) -> list[Out]:
        line = self.where(node)[0]
        saved_line = self._line
        self._line = line
        try:
            if not self._needs_work(node):
                return [self.copy(node)]
            if isinstance(node, cst.SimpleStatementLine):
                outs: list[Out] = []
                for small in node.body:
                    outs.extend(self.statement(small))
                return outs
            handler = getattr(self, "do_" + type(node).__name__, None)
            if handler is None:
                raise self.unsupported(
                    f"a yield inside a {type(node).__name__} statement is not supported", node
                )
            mark = len(self.temps_live)
            result: list[Out] = handler(node)
            held = self.temps_live[mark:]
            del self.temps_live[mark:]
            if held:
                # Python drops intermediate values when the statement ends: so do we,
                # or an object (a generator's finally, a __del__) would outlive it.
                result.append(plain([self.line(" = ".join(held) + " = None")]))
            return result
        finally:
            self._line = saved_line

    def _needs_work(self, node: cst.CSTNode) -> bool:
        if suspends(node):
            return True
        return bool(self.finally_exits) and exits(node)

    def copy(self, node: cst.CSTNode) -> Out:
        line, col = self.where(node)
        sliced = self.positions.statement_text(node)
        if sliced is not None:  # the source's own text: libcst need not generate it
            text, keep = sliced
            return plain([Line(text, line, col=col, keep=keep)])
        if isinstance(node, (cst.BaseSmallStatement,)):
            node = node.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)
        elif hasattr(node, "leading_lines"):
            node = node.with_changes(leading_lines=())
        text = self.module.code_for_node(node).rstrip("\n").rstrip()
        return plain([verbatim(text, line, col)])

    # -- simple statements

    def do_Expr(self, node: cst.Expr) -> list[Out]:
        direct = self.suspension_statement(None, node.value)
        if direct is not None:
            return direct
        point = self.leading(node.value)
        if point is not None:
            return self.inline_statement(node.value, point, lambda text: text)
        pre, value = self.anf(node.value)
        return [*pre, plain([self.line(self.code(value))])]

    def do_Assign(self, node: cst.Assign) -> list[Out]:
        targets = [t.target for t in node.targets]
        if isinstance(node.value, (cst.Yield, cst.Await)) and not any(suspends(t) for t in targets):
            direct = self.suspension_statement(
                " = ".join(self.code(t) for t in targets), node.value
            )
            assert direct is not None
            return direct
        point = self.leading(node.value)
        if point is not None and not any(suspends(t) for t in targets):
            names = " = ".join(self.code(t) for t in targets)
            return self.inline_statement(node.value, point, lambda text: f"{names} = {text}")
        pre, value = self.anf(node.value)
        if any(suspends(t) for t in targets):
            hold = self.temp()
            pre.append(self.assign(hold, self.code(value)))
            for target in targets:
                tpre, new_target = self.anf_target(target)
                pre.extend(tpre)
                pre.append(self.assign(self.code(new_target), hold))
            return pre
        names = " = ".join(self.code(t) for t in targets)
        return [*pre, self.assign(names, self.code(value))]

    def do_AnnAssign(self, node: cst.AnnAssign) -> list[Out]:
        if node.value is None or suspends(node.target) or suspends(node.annotation):
            raise self.unsupported("a yield inside an annotation or target is not supported", node)
        head = f"{self.code(node.target)}: {self.code(node.annotation.annotation)}"
        direct = self.suspension_statement(head, node.value)
        if direct is not None:
            return direct
        pre, value = self.anf(node.value)
        return [*pre, self.assign(head, self.code(value))]

    def do_AugAssign(self, node: cst.AugAssign) -> list[Out]:
        op = self.code(node.operator).strip()
        target = node.target
        point = self.leading(node.value)
        if point is not None and self.stable(target) and isinstance(target, cst.Name):
            name = target.value
            return self.inline_statement(node.value, point, lambda text: f"{name} {op} {text}")
        pre, new_target = self.anf_target(target)
        if not suspends(node.value):
            return [
                *pre,
                plain([self.line(f"{self.code(new_target)} {op} {self.code(node.value)}")]),
            ]
        # Python loads the target before it evaluates the right-hand side.
        current = self.fresh_name("aug")
        self.temps_live.append(current)
        if isinstance(new_target, cst.Attribute):
            obj = self._hold(new_target.value, pre)
            store = f"{obj}.{new_target.attr.value}"
        elif isinstance(new_target, cst.Subscript):
            obj = self._hold(new_target.value, pre)
            index = self._hold_slice(new_target, pre)
            store = f"{obj}[{index}]"
        else:
            store = self.code(new_target)
        pre.append(self.assign(current, store))
        vpre, value = self.anf(node.value)
        pre.extend(vpre)
        pre.append(plain([self.line(f"{current} {op} {self.code(value)}")]))
        pre.append(self.assign(store, current))
        return pre

    def _hold(self, expr: cst.BaseExpression, pre: list[Out]) -> str:
        if self.stable(expr):
            return self.code(expr)
        name = self.temp()
        pre.append(self.assign(name, self.code(expr)))
        return name

    def _hold_slice(self, sub: cst.Subscript, pre: list[Out]) -> str:
        def one(element: cst.SubscriptElement) -> str:
            part = element.slice
            if isinstance(part, cst.Index):
                return self.code(part.value)
            assert isinstance(part, cst.Slice)
            bounds = (part.lower, part.upper, part.step)
            return f"{RT}.slice({', '.join('None' if b is None else self.code(b) for b in bounds)})"

        if len(sub.slice) == 1:
            only = sub.slice[0].slice
            if isinstance(only, cst.Index) and only.star is None:
                return self._hold(only.value, pre)
            text = one(sub.slice[0])
        else:
            text = "(" + ", ".join(one(e) for e in sub.slice) + ",)"
        hold = self.temp()
        pre.append(self.assign(hold, text))
        return hold

    def do_Return(self, node: cst.Return) -> list[Out]:
        pre: list[Out] = []
        value: str | None = None
        if node.value is not None and not self.finally_exits:
            point = self.leading(node.value)
            if point is not None:
                return self.inline_statement(
                    node.value, point, lambda text: f"return {text}", returns=True
                )
        if node.value is not None:
            if isinstance(node.value, (cst.Yield, cst.Await)):
                hold = self.temp()
                pre.extend(self.suspension_statement(hold, node.value) or [])
                value = hold
            else:
                vpre, expr = self.anf(node.value)
                pre.extend(vpre)
                value = self.code(expr)
        if not self.finally_exits:
            return [*pre, plain([self.line("return" if value is None else f"return {value}")])]
        if self.bare_return:  # an async generator returns no value
            lines = []
            for fin in self.finally_exits:
                fin.kinds.add("return")
                lines.append(self.line(f"{fin.state} = 4"))
            return [*pre, plain([*lines, self.line("return")])]
        hold = self.fresh_name("ret")
        lines = [self.line(f"{hold} = {value if value is not None else 'None'}")]
        for fin in self.finally_exits:
            fin.kinds.add("return")
            lines.append(self.line(f"{fin.value} = {hold}"))
            lines.append(self.line(f"{fin.state} = 4"))
        lines.append(self.line(f"return {hold}"))
        return [*pre, plain(lines)]

    def _loop_exit(self, word: str, code: int) -> list[Out]:
        lines = []
        for fin in self.finally_exits:
            if fin.loop_depth == self.loop_depth:
                fin.kinds.add(word)
                lines.append(self.line(f"{fin.state} = {code}"))
        lines.append(self.line(word))
        return [plain(lines)]

    def do_Break(self, node: cst.Break) -> list[Out]:
        return self._loop_exit("break", 2)

    def do_Continue(self, node: cst.Continue) -> list[Out]:
        return self._loop_exit("continue", 3)

    def do_Raise(self, node: cst.Raise) -> list[Out]:
        parts = [p for p in (node.exc, node.cause.item if node.cause else None) if p is not None]
        pre, new = self.anf_sequence(parts)
        text = "raise"
        if node.exc is not None:
            text += f" {self.code(new[0])}"
        if node.cause is not None:
            text += f" from {self.code(new[1])}"
        return [*pre, plain([self.line(text)])]

    def do_Assert(self, node: cst.Assert) -> list[Out]:
        pre, test = self.anf(node.test)
        raise_out: list[Out]
        if node.msg is None:
            raise_out = [plain([self.line("raise AssertionError")])]
        else:
            mpre, msg = self.anf(node.msg)
            raise_out = [*mpre, plain([self.line(f"raise AssertionError({self.code(msg)})")])]
        check = self.if_out(f"not ({self.code(test)})", self.combine(raise_out), None)
        return [self.if_out("__debug__", self.combine([*pre, check]), None)]

    def do_Del(self, node: cst.Del) -> list[Out]:
        pre, target = self.anf_target(node.target)
        return [*pre, plain([self.line(f"del {self.code(target)}")])]

    # -- the yield statement itself

    def yield_statement(self, target: str | None, node: cst.Yield) -> list[Out]:
        pre: list[Out] = []
        assign = f"{target} = " if target else ""
        if isinstance(node.value, cst.From):
            vpre, value = self.anf(node.value.item)
            pre.extend(vpre)
            delegate = self.fresh_name("dlg")
            self.temps_live.append(delegate)
            label = self.new_label(delegate)
            fresh = [
                self.line(f"{delegate} = {YIELD_FROM_ITER}({self.code(value)})"),
                self.yield_line(label, f"{assign}yield from {delegate}"),
            ]
            resuming = f"{assign}yield from {RT}.resume_delegate({delegate})"
        else:
            text = ""
            if node.value is not None:
                vpre, value = self.anf(node.value)
                pre.extend(vpre)
                text = " " + self.code(value)
            label = self.new_label()
            fresh = [self.yield_line(label, f"{assign}yield{text}")]
            resuming = f"{assign}yield {RT}.PRIME"
        return [*pre, self.suspension(label, fresh, resuming)]

    def await_statement(self, target: str | None, node: cst.Await) -> list[Out]:
        """``target = await x``, as Python runs it: a snapshot reads the awaitable from the
        frame (``cr_await`` / ``ag_await``) and saves it as ``_cs_aw_n``.

        A restored coroutine is not primed: the event loop's first ``send``
        runs the dispatch, and ``resume_awaitable`` gives the saved awaitable to
        re-enter (a restored coroutine, or what a safe point resumes as). Only
        the step of a spelled-out ``async for`` keeps its awaitable in the local
        (see `_held_await`).
        """
        vpre, value = self.anf(node.expression)
        assign = f"{target} = " if target else ""
        awaited = self.fresh_name("aw")
        resuming = f"{assign}await {RT}.resume_awaitable({awaited})"
        if _held_await(value):
            self.temps_live.append(awaited)
            self.awaited.append(awaited)
            label = self.new_label(awaited, kind="await")
            fresh = [
                self.line(f"{awaited} = {self.code(value)}"),
                self.yield_line(label, f"{assign}await {awaited}"),
            ]
            return [*vpre, self.suspension(label, fresh, resuming)]
        label = self.new_label(awaited, kind="await")
        fresh = [self.yield_line(label, f"{assign}await {self.code(value)}")]
        return [*vpre, self.suspension(label, fresh, resuming, release=awaited)]

    def suspension(
        self, label: int, fresh: list[Line], resuming: str, release: str | None = None
    ) -> Out:
        """A labelled suspension: while resuming, ``resuming`` stands in for ``fresh``.

        ``release``: a local that only the resume variant binds (the saved awaitable),
        let go once the resumed statement is done, as the fresh variant holds nothing.
        """
        resumed = [self.line("_cs_resuming = False"), self.line(resuming)]
        if release is not None:
            resumed.append(self.line(f"{release} = None"))
        resume = [
            block("if _cs_resuming:", self._line, resumed),
            block("else:", self._line, fresh),
        ]
        return Out(fresh, resume, frozenset({label}))

    def leading(self, expr: cst.BaseExpression) -> cst.Yield | cst.Await | None:
        """The only suspension in ``expr``, if Python evaluates it before anything else.

        Such a statement keeps its ``await``/``yield`` inline: at the suspension
        the value stack holds nothing that a resume could not recompute.
        """
        if _count_suspensions(expr) != 1:
            return None
        node: cst.BaseExpression = expr
        while not isinstance(node, (cst.Yield, cst.Await)):
            if isinstance(node, cst.NamedExpr):
                children: list[cst.BaseExpression] | None = [node.value]
            else:
                children = _evaluation_order(node)
            if not children or not suspends(children[0]):
                return None
            node = children[0]
        if isinstance(node, cst.Yield) and isinstance(node.value, cst.From):
            return None
        return node

    def inline_statement(
        self,
        expr: cst.BaseExpression,
        point: cst.Yield | cst.Await,
        render: Callable[[str], str],
        returns: bool = False,
    ) -> list[Out]:
        """A statement whose leading suspension stays inside it (see `leading`); ``returns``:
        it is a ``return`` (nothing runs after it)."""
        resume_point: cst.CSTNode
        release = None
        if isinstance(point, cst.Await):
            # the awaitable is read from the frame by a snapshot (see `await_statement`)
            awaited = self.fresh_name("aw")
            label = self.new_label(awaited, kind="await")
            resume_point = point.with_changes(
                expression=cst.parse_expression(f"{RT}.resume_awaitable({awaited})")
            )
            release = None if returns else awaited
        else:
            label = self.new_label()
            resume_point = point.with_changes(value=cst.parse_expression(f"{RT}.PRIME"))
        fresh_text = render(self.code(expr))
        resume_text = render(self.code(_replace(expr, {id(point): resume_point})))
        fresh = [self.yield_line(label, fresh_text)]
        return [self.suspension(label, fresh, resume_text, release)]

    def suspension_statement(
        self, target: str | None, node: cst.BaseExpression
    ) -> list[Out] | None:
        """The statement form of a bare ``yield`` / ``await`` (None for other values)."""
        if isinstance(node, cst.Yield):
            return self.yield_statement(target, node)
        if isinstance(node, cst.Await):
            return self.await_statement(target, node)
        return None

    # -- compound statements

    def if_out(self, test: str, body: Out, orelse: Out | None) -> Out:
        """``if test: body else: orelse``; resuming enters the branch with the label."""
        src = self._line
        fresh = [block(f"if {test}:", src, body.fresh)]
        if orelse is not None and orelse.fresh:
            fresh.append(block("else:", src, orelse.fresh))
        labels = body.labels | (orelse.labels if orelse else frozenset())
        if not labels:
            return Out(fresh, fresh)
        pick = cond(body.labels) if body.labels else "False"
        resume = [block(f"if ({pick}) if _cs_resuming else ({test}):", src, self.guarded(body))]
        if orelse is not None and orelse.fresh:
            resume.append(block("else:", src, self.guarded(orelse)))
        return Out(fresh, resume, labels)

    def do_If(self, node: cst.If) -> list[Out]:
        pre, test = self.anf(node.test)
        body = self.body(node.body)
        orelse: Out | None = None
        if isinstance(node.orelse, cst.Else):
            orelse = self.body(node.orelse.body)
        elif isinstance(node.orelse, cst.If):
            orelse = self.combine(self.statement(node.orelse))
        return [*pre, self.if_out(self.code(test), body, orelse)]

    def loop_body(self, suite: cst.BaseSuite | list[Out], helpers: Sequence[str] = ()) -> Out:
        self.live.extend(helpers)
        self.loop_depth += 1
        try:
            if isinstance(suite, list):
                return self.combine(suite)
            return self.body(suite)
        finally:
            self.loop_depth -= 1
            del self.live[len(self.live) - len(helpers) :]

    def do_While(self, node: cst.While) -> list[Out]:
        if not suspends(node.test):
            body = self.loop_body(node.body)
            orelse = self.body(node.orelse.body) if node.orelse else None
            return [self.while_out(self.code(node.test), body, orelse)]
        # The test yields: ``while True`` with the test at the top of the body.
        flag = self.fresh_name("welse") if node.orelse else None
        pre: list[Out] = []
        if flag:
            pre.append(self.assign(flag, "False"))
        self.live.extend([flag] if flag else [])
        self.loop_depth += 1
        try:
            tpre, test = self.anf(node.test)
            stop = [self.line(f"{flag} = True")] if flag else []
            stop.append(self.line("break"))
            check = plain([block(f"if not ({self.code(test)}):", self._line, stop)])
            inner = [*tpre, check, *self._statements_of(node.body)]
            body = self.combine(inner)
        finally:
            self.loop_depth -= 1
            if flag:
                self.live.pop()
        loop = self.while_out("True", body, None)
        outs = [*pre, loop]
        if flag and node.orelse:
            outs.append(self.if_out(flag, self.body(node.orelse.body), None))
        return outs

    def _statements_of(self, suite: cst.BaseSuite) -> list[Out]:
        outs: list[Out] = []
        for stmt in _suite(suite):
            outs.extend(self.statement(stmt))
        return outs

    def while_out(self, test: str, body: Out, orelse: Out | None) -> Out:
        src = self._line
        fresh = [block(f"while {test}:", src, body.fresh)]
        if orelse is not None:
            fresh.append(block("else:", src, orelse.fresh))
        return self.peeled(fresh, body, orelse)

    def peeled(self, loop: list[Line], body: Out, orelse: Out | None) -> Out:
        """Resume code of a loop: finish the resumed iteration, then run ``loop`` itself.

        The iteration that holds the saved label runs once, guarded, inside a
        one-shot ``for`` (so its ``break`` leaves the loop and skips ``else``,
        and its ``continue`` moves on to the next iteration); every later
        iteration is the fresh loop, unguarded, at native speed. Resuming into
        the ``else`` clause skips the loop.
        """
        labels = body.labels | (orelse.labels if orelse else frozenset())
        if not labels:
            return Out(loop, loop)
        src = self._line
        resume = loop
        if body.labels:
            resume = [
                block("for _cs_resuming in (True,) if _cs_resuming else ():", src, body.resume),
                block("else:", src, loop),
            ]
        if orelse is not None and orelse.labels:
            into_else = f"_cs_resuming and {cond(orelse.labels)}" if body.labels else "_cs_resuming"
            resume = [
                block(f"if {into_else}:", src, orelse.resume),
                block("else:", src, resume),
            ]
        return Out(loop, resume, labels)

    def do_For(self, node: cst.For) -> list[Out]:
        if suspends(node.target):
            node = self._target_in_body(node)
        if node.asynchronous is not None:
            return self.async_for(node)
        pre, iterable = self.anf(node.iter)
        iterator = self.fresh_name("iter")
        self.fresh_name("item")  # unused now: keeps the later names (saved by name) as they were
        # ``for_iter(iter(iterable))``, with the usual case (a builtin iterator) in C only
        setup = plain(
            [
                self.line(f"{iterator} = {ITER}({self.code(iterable)})"),
                block(
                    f"if {TYPE_OF}({iterator}) not in {BUILTIN_ITERS}:",
                    self._line,
                    [self.line(f"{iterator} = {FOR_ITER}({iterator})")],
                ),
            ]
        )
        body = self.loop_body(node.body, [iterator])
        orelse = self.body(node.orelse.body) if node.orelse else None
        target = self.code(node.target)
        fresh = [block(f"for {target} in {iterator}:", self._line, body.fresh)]
        if orelse is not None:
            fresh.append(block("else:", self._line, orelse.fresh))
        return [*pre, setup, self.releasing(iterator, self.peeled(fresh, body, orelse))]

    def _target_in_body(self, node: cst.For) -> cst.For:
        """``for d[(yield)] in it: body`` as ``for _cs_tgt_n in it: d[(yield)] = _cs_tgt_n;
        _cs_tgt_n = None; body``: the same order (the next item, then the target's
        subexpressions), with the target's yield an ordinary yield of the body."""
        item = cst.Name(self.fresh_name("tgt"))
        store = cst.SimpleStatementLine(
            body=[cst.Assign(targets=[cst.AssignTarget(node.target)], value=item)]
        )
        release = cst.SimpleStatementLine(
            body=[cst.Assign(targets=[cst.AssignTarget(item)], value=cst.Name("None"))]
        )
        statements: Sequence[cst.BaseStatement]
        if isinstance(node.body, cst.IndentedBlock):
            statements = node.body.body
        else:  # `for x in y: a; b` on one line
            assert isinstance(node.body, cst.SimpleStatementSuite)
            statements = [cst.SimpleStatementLine(body=node.body.body)]
        new = node.with_changes(
            target=item, body=cst.IndentedBlock(body=[store, release, *statements])
        )
        self.positions.alias(new, node)
        self.positions.alias(store, node)
        self.positions.alias(release, node)
        return new

    def releasing(self, iterator: str, loop: Out, also: Sequence[str] = ()) -> Out:
        """The loop, dropping its iterator however it ends, as Python's own for loop does.

        A generator left by ``break`` or by an exception is then closed on the
        way out, not when the enclosing function finishes (nor when a traceback
        that holds this frame goes away). ``also`` names other locals that hold it.
        """
        src = self._line
        release = block(
            "finally:", src, [self.line(f"{name} = None") for name in (iterator, *also)]
        )
        fresh = [block("try:", src, loop.fresh), release]
        if not loop.labels:
            return Out(fresh, fresh)
        return Out(fresh, [block("try:", src, loop.resume), release], loop.labels)

    def do_With(self, node: cst.With) -> list[Out]:
        if len(node.items) > 1:
            inner = node.with_changes(items=node.items[1:])
            outer = node.with_changes(
                items=[node.items[0].with_changes(comma=cst.MaybeSentinel.DEFAULT)],
                body=cst.IndentedBlock(body=[inner]),
            )
            self.positions.alias(outer, node)
            self.positions.alias(inner, node)
            return self.do_With(outer)
        if node.asynchronous is not None:
            return self.async_with(node)
        item = node.items[0]
        target = item.asname.name if item.asname is not None else None
        pre, manager = self.anf(item.item)
        simple = target is None or not suspends(target)
        if simple and not suspends(node.body) and not (self.finally_exits and exits(node.body)):
            header = self.code(manager)
            if target is not None:
                header += f" as {self.code(target)}"
            body = self.body(node.body)
            return [*pre, plain([block(f"with {header}:", self._line, body.fresh)])]
        n = self.fresh_name("w")[len("_cs_w_") :]
        mgr, owed, entered, caught = (f"_cs_mgr_{n}", f"_cs_wx_{n}", f"_cs_ent_{n}", f"_cs_we_{n}")
        setup = plain(
            [
                self.line(f"{mgr} = {self.code(manager)}"),
                self.line(f"{entered} = {WITH_ENTER}({mgr})"),
                self.line(f"{owed} = True"),
            ]
        )
        self.live.extend([mgr, owed])
        try:
            binding: list[Out] = []
            if target is not None:
                # the target is assigned inside the protected block, as the with statement does
                self.live.append(entered)  # live while the target's own yields run
                try:
                    tpre, new_target = self.anf_target(target)
                finally:
                    self.live.pop()
                binding = [*tpre, self.assign(self.code(new_target), entered)]
            body = self.combine([*binding, *self._statements_of(node.body)])
        finally:
            del self.live[-2:]
        src = self._line
        handler = block(
            f"except BaseException as {caught}:",
            src,
            [
                self.line(f"{owed} = False"),
                block(
                    f"if {IS_DETACH}({caught}) or not {WITH_EXIT}({mgr}, {caught}):",
                    src,
                    [self.line("raise")],
                ),
            ],
        )
        final = block(
            "finally:",
            src,
            [
                block(
                    f"if {owed}:",
                    src,
                    [self.line(f"{owed} = False"), self.line(f"{WITH_EXIT}({mgr}, None)")],
                )
            ],
        )
        fresh = [block("try:", src, body.fresh), handler, final]
        release = self.assign(f"{mgr} = {entered}", "None")
        if not body.labels:
            return [*pre, setup, Out(fresh, fresh), release]
        resume = [block("try:", src, body.resume), handler, final]
        return [*pre, setup, Out(fresh, resume, body.labels), release]

    def _process(self, nodes: Sequence[cst.CSTNode], helpers: Sequence[str] = ()) -> list[Out]:
        """Process generated statements (positions fall back to the current line)."""
        self.live.extend(helpers)
        try:
            outs: list[Out] = []
            for stmt in nodes:
                outs.extend(self.statement(stmt))
            return outs
        finally:
            del self.live[len(self.live) - len(helpers) :]

    @staticmethod
    def _lines_of(suite: cst.BaseSuite) -> list[cst.BaseStatement]:
        if isinstance(suite, cst.SimpleStatementSuite):
            return [cst.SimpleStatementLine(body=[small]) for small in suite.body]
        return list(suite.body)  # type: ignore[arg-type]

    def async_for(self, node: cst.For) -> list[Out]:
        """``async for`` run by Python itself over an iterator held in ``_cs_aiter_n``.

        A frame paused in a step (awaiting ``__anext__()``) reports the loop's
        header line; the step's label names the iterator (``LabelInfo.anext_of``)
        and a snapshot takes the awaited step from the frame (``ag_await`` /
        ``cr_await``), so nothing is stored per iteration. The resume variant
        finishes the saved iteration (a saved step is awaited again through
        ``resume_awaitable``) and then runs the same native loop (see `peeled`).
        """
        n = self.fresh_name("af")[len("_cs_af_") :]
        one_line = isinstance(node.body, cst.SimpleStatementSuite) and suspends(node.body)
        if suspends(node.iter) or suspends(node.target) or one_line or id(node) in self.spell_out:
            return self.async_for_spelled(node, n)
        iterator, item, exhausted = f"_cs_aiter_{n}", f"_cs_aitem_{n}", f"_cs_aelse_{n}"
        awaited = self.fresh_name("aw")
        setup = self.assign(iterator, f"{RT}.aiter({self.code(node.iter)})")
        self.live.append(iterator)
        try:
            step = self.new_label(awaited, kind="await")
        finally:
            self.live.pop()
        self.labels[step].anext_of = iterator
        body = self.loop_body(node.body, [iterator])
        orelse = self.body(node.orelse.body) if node.orelse else None
        target = self.code(node.target)
        src = self._line
        fresh = [block(f"async for {target} in {iterator}:", src, body.fresh)]
        if orelse is not None:
            fresh.append(block("else:", src, orelse.fresh))
        # the saved step, awaited again; its end (StopAsyncIteration) leaves the loop,
        # through the else clause
        ended = [self.line(f"{exhausted} = True")] if orelse is not None else []
        resumed_step = block(
            f"if _cs_resuming and _cs_label == {step}:",
            src,
            [
                self.line("_cs_resuming = False"),
                block(
                    "try:",
                    src,
                    [
                        self.line(f"{awaited} = {RT}.resume_awaitable({awaited})"),
                        self.line(f"{item} = await {awaited}"),
                    ],
                ),
                block(f"except {RT}.StopAsyncIteration:", src, [*ended, self.line("break")]),
                block("finally:", src, [self.line(f"{awaited} = None")]),
                self.line(f"{target} = {item}"),
                self.line(f"{item} = None"),
            ],
        )
        first = Out(body.fresh, [resumed_step, *body.resume], body.labels | {step})
        loop = self.peeled(fresh, first, orelse)
        if orelse is not None:
            after = block(f"if {exhausted}:", src, orelse.fresh)
            resume = [self.line(f"{exhausted} = False"), *loop.resume, after]
            loop = Out(loop.fresh, resume, loop.labels)
        # the step's local is bound in the fresh variant too (it has no other use there),
        # so the resume variant's prologue restores it
        return [setup, self.releasing(iterator, loop, [awaited])]

    def async_for_spelled(self, node: cst.For, n: str) -> list[Out]:
        """``async for`` spelled out, so each ``__anext__`` is an ordinary labelled await.

        Only for a loop whose header line holds another suspension (its iterable
        or target awaits or yields, or its body is on the same line): there the
        frame's line cannot tell the step from the other suspension.
        """
        iterator, item, exhausted = f"_cs_aiter_{n}", f"_cs_aitem_{n}", f"_cs_aelse_{n}"
        stop = f"{exhausted} = True\n        " if node.orelse is not None else ""
        loop = cst.parse_statement(
            f"while True:\n"
            f"    try:\n"
            f"        {item} = await {RT}.anext({iterator})\n"
            f"    except {RT}.StopAsyncIteration:\n"
            f"        {stop}break\n"
            f"    {self.code(node.target)} = {item}\n"
        )
        assert isinstance(loop, cst.While) and isinstance(loop.body, cst.IndentedBlock)
        loop = loop.with_changes(
            body=loop.body.with_changes(body=[*loop.body.body, *self._lines_of(node.body)])
        )
        head = [cst.parse_statement(f"{iterator} = {RT}.aiter({self.code(node.iter)})")]
        if node.orelse is not None:
            head.append(cst.parse_statement(f"{exhausted} = False"))
        outs = self._process(head)
        helpers = [iterator] + ([exhausted] if node.orelse is not None else [])
        first_await = len(self.awaited)
        body = self.combine(self._process([loop], helpers))
        # the `__anext__` awaitable holds the iterator too
        outs.append(self.releasing(iterator, body, self.awaited[first_await : first_await + 1]))
        if node.orelse is not None:
            check = cst.parse_statement(f"if {exhausted}:\n    pass\n")
            assert isinstance(check, cst.If)
            check = check.with_changes(
                body=cst.IndentedBlock(body=self._lines_of(node.orelse.body))
            )
            outs += self._process([check])
        return outs

    def async_with(self, node: cst.With) -> list[Out]:
        """``async with`` spelled out as in PEP 492: awaits of ``__aenter__``/``__aexit__``."""
        item = node.items[0]
        n = self.fresh_name("aw")[len("_cs_aw_") :]
        mgr, owed, entered, caught = (
            f"_cs_amgr_{n}",
            f"_cs_awx_{n}",
            f"_cs_aent_{n}",
            f"_cs_awe_{n}",
        )
        statements = cst.parse_module(
            f"{mgr} = {self.code(item.item)}\n"
            f"{entered} = await {RT}.aenter({mgr})\n"
            f"{owed} = True\n"
            f"try:\n"
            f"    pass\n"
            f"except BaseException as {caught}:\n"
            f"    {owed} = False\n"
            f"    if {IS_DETACH}({caught}) or not (await {RT}.aexit({mgr}, {caught})):\n"
            f"        raise\n"
            f"finally:\n"
            f"    if {owed}:\n"
            f"        {owed} = False\n"
            f"        await {RT}.aexit({mgr}, None)\n"
        ).body
        guarded = statements[3]
        assert isinstance(guarded, cst.Try) and isinstance(guarded.body, cst.IndentedBlock)
        inner: list[cst.BaseStatement] = []
        if item.asname is not None:
            inner.append(cst.parse_statement(f"{self.code(item.asname.name)} = {entered}"))
        guarded = guarded.with_changes(
            body=guarded.body.with_changes(body=[*inner, *self._lines_of(node.body)])
        )
        outs = self._process(statements[:1])
        outs += self._process(statements[1:3], [mgr])
        outs += self._process([guarded], [mgr, owed])
        outs.append(self.assign(f"{mgr} = {entered}", "None"))
        return outs

    def do_Match(self, node: cst.Match) -> list[Out]:
        """Arms whose body yields run from an ``if`` chain on ``_cs_arm_n``.

        A guard that yields splits the cases: the match up to that case binds
        the pattern only, the guard is evaluated as ordinary statements, and if
        it fails the remaining cases are matched in a second ``match``.
        """
        pre, subject = self.anf(node.subject)
        arm = self.fresh_name("arm")
        src = self._line
        split = any(c.guard is not None and suspends(c.guard) for c in node.cases)
        subject_text = self.code(subject)
        outs = [*pre]
        if split and not (isinstance(subject, cst.Name) and subject.value.startswith("_cs_")):
            held = self.fresh_name("subj")
            self.temps_live.append(held)
            outs.append(self.assign(held, subject_text))
            subject_text = held
        outs.append(self.assign(arm, "0"))
        bodies: list[tuple[int, cst.MatchCase]] = []
        segment: list[Line] = []
        segments: list[Out] = []
        for number, case in enumerate(node.cases, start=1):
            case_line = self.where(case)[0]
            head = f"case {self.code(case.pattern)}"
            guard_yields = case.guard is not None and suspends(case.guard)
            if case.guard is not None and not guard_yields:
                head += f" if {self.code(case.guard)}"
            needs_arm = split or suspends(case.body) or (self.finally_exits and exits(case.body))
            if needs_arm:
                bodies.append((number, case))
                tag = -number if guard_yields else number
                segment.append(block(head + ":", case_line, [Line(f"{arm} = {tag}", case_line)]))
            else:
                segment.append(block(head + ":", case_line, self.body(case.body).fresh))
            if guard_yields:
                assert case.guard is not None
                matching = plain([block(f"match {subject_text}:", src, segment)])
                saved = self._line
                self._line = case_line
                gpre, guard = self.anf(case.guard)
                decide = self.if_out(
                    f"{arm} == {-number}",
                    self.combine(
                        [*gpre, self.assign(arm, f"{number} if ({self.code(guard)}) else 0")]
                    ),
                    None,
                )
                self._line = saved
                segments.append(self.combine([matching, decide]))
                segment = []
        if segment:
            segments.append(plain([block(f"match {subject_text}:", src, segment)]))
        for index, part in enumerate(segments):
            outs.append(part if index == 0 else self.if_out(f"{arm} == 0", part, None))
        chain: Out | None = None
        for number, case in reversed(bodies):
            saved = self._line
            self._line = self.where(case)[0]
            chain = self.if_out(f"{arm} == {number}", self.body(case.body), chain)
            self._line = saved
        if chain is not None:
            outs.append(chain)
        return outs

    def do_Try(self, node: cst.Try | cst.TryStar) -> list[Out]:
        star = isinstance(node, cst.TryStar)
        node = self._handlers_as_tests(node, star)
        final = node.finalbody
        if final is not None and suspends(final):
            return self.try_finally_yields(node, star)
        inner = self.try_inner(node, star)
        if final is None:
            return [inner]
        fin = self.body(final.body)
        src = self._line
        if not inner.labels:
            fresh = [block("try:", src, inner.fresh), block("finally:", src, fin.fresh)]
            return [Out(fresh, fresh)]
        guard = [block(f"if {LIVE}():", src, fin.fresh)]
        fresh = [block("try:", src, inner.fresh), block("finally:", src, guard)]
        resume = [block("try:", src, inner.resume), block("finally:", src, guard)]
        return [Out(fresh, resume, inner.labels)]

    do_TryStar = do_Try

    def _handlers_as_tests(self, node: cst.Try | cst.TryStar, star: bool) -> cst.Try | cst.TryStar:
        """``except`` clauses from the first whose type yields, as one handler testing each.

        ``except kinds[(yield)] as e: body`` becomes ``except BaseException as _cs_ex_n:``
        with ``if exc_match(_cs_ex_n, kinds[(yield)]): e = _cs_ex_n; body`` (``elif``
        for the clauses after it, ``else: raise``): the type is evaluated as natively,
        only when the exception reaches that clause and while it is being handled, and
        its yield is an ordinary yield of a handler body (labelled, and resumed by
        re-entering the handler).
        """
        handlers: list[cst.ExceptHandler | cst.ExceptStarHandler] = list(node.handlers)
        first = next(
            (i for i, h in enumerate(handlers) if h.type is not None and suspends(h.type)), None
        )
        if first is None:
            return node
        if star:
            raise self.unsupported("a yield inside an except* clause's type is not supported", node)
        caught = self.fresh_name("ex")
        reraise = cst.ensure_type(
            cst.parse_statement("if _:\n    pass\nelse:\n    raise\n"), cst.If
        )
        tail: cst.If | cst.Else = cst.ensure_type(reraise.orelse, cst.Else)
        for handler in reversed(handlers[first:]):
            body = handler.body
            if isinstance(body, cst.SimpleStatementSuite):  # `except E: x` on one line
                body = cst.IndentedBlock(body=[cst.SimpleStatementLine(body=body.body)])
            if handler.name is not None:
                bound = cst.ensure_type(handler.name.name, cst.Name).value
                unbound = cst.ensure_type(
                    cst.parse_statement(
                        f"try:\n    pass\nfinally:\n    {bound} = None\n    del {bound}\n"
                    ),
                    cst.Try,
                )
                guarded = unbound.with_changes(body=body)
                self.positions.alias(guarded, handler)
                body = cst.IndentedBlock(body=[cst.parse_statement(f"{bound} = {caught}"), guarded])
            if handler.type is None:  # a bare `except:` is the last clause
                tail = cst.Else(body=body)
                continue
            test = cst.Call(
                func=cst.Attribute(value=cst.Name(RT), attr=cst.Name("exc_match")),
                args=[cst.Arg(cst.Name(caught)), cst.Arg(handler.type)],
            )
            tail = cst.If(test=test, body=body, orelse=tail)
            self.positions.alias(tail, handler)
        assert isinstance(tail, cst.If)
        tests = cst.ExceptHandler(
            body=cst.IndentedBlock(body=[tail]),
            type=cst.Name("BaseException"),
            name=cst.AsName(name=cst.Name(caught)),
        )
        self.positions.alias(tests, handlers[first])
        return node.with_changes(handlers=[*handlers[:first], tests])

    def try_inner(self, node: cst.Try | cst.TryStar, star: bool) -> Out:
        """The try body with its handlers and else clause, as statements (no finally).

        Without handlers this is just the body; either way the result can be put
        inside another ``try:`` block, and its resume code skips everything while
        resuming towards a label elsewhere.
        """
        src = self._line
        body = self.body(node.body)
        if not node.handlers and node.orelse is None:
            return Out(body.fresh, self.guarded(body), body.labels)
        word = "except*" if star else "except"
        fresh_handlers: list[Line] = []
        resume_handlers: list[Line] = []
        plants: list[tuple[frozenset[int], str]] = []
        labels = set(body.labels)
        if body.labels:
            guard_line = block(f"{word} {DETACH}:", src, [self.line("raise")])
            fresh_handlers.append(guard_line)
            resume_handlers.append(guard_line)
        for handler in node.handlers:
            hsrc = self.where(handler)[0]
            saved = self._line
            self._line = hsrc
            kind = self.code(handler.type) if handler.type is not None else "BaseException"
            user_name = None
            if handler.name is not None:
                assert isinstance(handler.name.name, cst.Name)
                user_name = handler.name.name.value
            if suspends(handler.body):
                held = self.fresh_name("hx")
                # the handler of clauses whose type yields binds a name of ours: saved too
                also = [user_name] if user_name is not None and user_name.startswith("_cs_") else []
                self.live.extend([held, *also])
                try:
                    hbody = self.body(handler.body)
                finally:
                    del self.live[len(self.live) - 1 - len(also) :]
                labels |= hbody.labels
                plants.append((hbody.labels, held))
                if star:
                    # The part of the group that other except* clauses take, and the
                    # part re-raised afterwards, live on the interpreter's stack only.
                    for label in hbody.labels:
                        self.labels[label].refuse = (
                            "it is paused inside an except* handler, where the rest of the "
                            "exception group is not reachable; move the yield out of the handler"
                        )
                if user_name is None:
                    fresh_body, resume_body = hbody.fresh, [self.unplant(held), *hbody.resume]
                else:
                    cleanup = [self.line(f"{user_name} = None"), self.line(f"del {user_name}")]
                    fresh_body = [
                        self.line(f"{user_name} = {held}"),
                        block("try:", hsrc, hbody.fresh),
                        block("finally:", hsrc, cleanup),
                    ]
                    resume_body = [
                        self.unplant(held),
                        block("if not _cs_resuming:", hsrc, [self.line(f"{user_name} = {held}")]),
                        block("try:", hsrc, hbody.resume),
                        block("finally:", hsrc, cleanup),
                    ]
                fresh_handlers.append(block(f"{word} {kind} as {held}:", hsrc, fresh_body))
                match = (
                    f"((BaseException if {cond(hbody.labels)} else ()) if _cs_resuming else {kind})"
                )
                resume_handlers.append(block(f"{word} {match} as {held}:", hsrc, resume_body))
            else:
                hbody = self.body(handler.body)
                name = f" as {user_name}" if user_name else ""
                if handler.type is None and not star:
                    fresh_handlers.append(block("except:", hsrc, hbody.fresh))
                else:
                    fresh_handlers.append(block(f"{word} {kind}{name}:", hsrc, hbody.fresh))
                resume_handlers.append(
                    block(f"{word} (() if _cs_resuming else {kind}){name}:", hsrc, hbody.fresh)
                )
            self._line = saved
        orelse = self.body(node.orelse.body) if node.orelse is not None else None
        if orelse is not None:
            labels |= orelse.labels
            fresh_handlers.append(block("else:", src, orelse.fresh))
            resume_handlers.append(block("else:", src, self.guarded(orelse)))
        fresh = [block("try:", src, body.fresh), *fresh_handlers]
        if not labels:
            return Out(fresh, fresh)
        plant_lines = [self.plant(held, plant_labels) for plant_labels, held in plants]
        resume = [block("try:", src, [*plant_lines, *self.guarded(body)]), *resume_handlers]
        if star and body.labels:
            # `except*` wraps the Detach it re-raises in a group, which the plain
            # `except Detach` guards further out would not recognise
            group = self.fresh_name("dg")
            unwrap = block(
                f"except BaseExceptionGroup as {group}:",
                src,
                [
                    block(
                        f"if {IS_DETACH}({group}):",
                        src,
                        [self.line(f"raise {DETACH}() from None")],
                    ),
                    self.line("raise"),
                ],
            )
            fresh = [block("try:", src, fresh), unwrap]
            resume = [block("try:", src, resume), unwrap]
        return Out(fresh, resume, frozenset(labels))

    def plant(self, held: str, labels: frozenset[int]) -> Line:
        """Re-enter a handler while resuming: raise the saved exception it was handling.

        Its traceback and ``__context__`` are kept aside for `unplant`: the ``raise``
        would set the context to whatever the code that restores the generator is
        handling (a ``loads`` in an ``except`` clause).
        """
        return block(
            f"if _cs_resuming and ({cond(labels)}):",
            self._line,
            [
                self.line(f"_cs_tb = {held}.__traceback__, {held}.__context__"),
                self.line(f"raise {held}"),
            ],
        )

    def unplant(self, held: str) -> Line:
        """First thing in a re-entered handler: give the exception back its own traceback
        and context.

        An exception that went through pickle has no traceback; it keeps the entry of
        the resume point, so its traceback still leads into this function.
        """
        return block(
            "if _cs_resuming:",
            self._line,
            [
                block(
                    "if _cs_tb[0] is not None:",
                    self._line,
                    [self.line(f"{held}.__traceback__ = _cs_tb[0]")],
                ),
                self.line(f"{held}.__context__ = _cs_tb[1]"),
                self.line("_cs_tb = None"),
            ],
        )

    def try_finally_yields(self, node: cst.Try | cst.TryStar, star: bool) -> list[Out]:
        """A ``finally`` that yields: explicit copies per way of leaving the try."""
        assert node.finalbody is not None
        src = self._line
        n = self.fresh_name("f")[len("_cs_f_") :]
        state, value, pending = f"_cs_st_{n}", f"_cs_rv_{n}", f"_cs_fx_{n}"
        exit_info = _FinallyExit(state, value, self.loop_depth)
        self.finally_exits.append(exit_info)
        self.live.extend([state, value])
        try:
            inner = self.try_inner(node, star)
        finally:
            self.finally_exits.pop()
        try:
            normal = self.body(node.finalbody.body)
            self.live.append(pending)
            try:
                failing = self.body(node.finalbody.body)
            finally:
                self.live.pop()
            leaving = self.body(node.finalbody.body)
        finally:
            del self.live[-2:]
        detach = block(f"except {DETACH}:", src, [self.line("raise")])
        fresh = [
            self.line(f"{state} = 0"),
            block("try:", src, inner.fresh),
            detach,
            block(
                f"except BaseException as {pending}:",
                src,
                [self.line(f"{state} = 1"), *failing.fresh, self.line("raise")],
            ),
            block("else:", src, [self.line(f"{state} = 1"), *normal.fresh]),
            block("finally:", src, [block(f"if {state} >= 2 and {LIVE}():", src, leaving.fresh)]),
        ]
        labels = inner.labels | normal.labels | failing.labels | leaving.labels
        after_leaving: list[Line] = []
        if "return" in exit_info.kinds:
            done = "return" if self.bare_return else f"return {value}"
            after_leaving.append(block(f"if {state} == 4:", src, [self.line(done)]))
        if self.loop_depth > 0:
            if "break" in exit_info.kinds:
                after_leaving.append(block(f"if {state} == 2:", src, [self.line("break")]))
            if "continue" in exit_info.kinds:
                after_leaving.append(block(f"if {state} == 3:", src, [self.line("continue")]))
        set_one = block("if not _cs_resuming:", src, [self.line(f"{state} = 1")])
        plant = self.plant(pending, failing.labels)
        regular = [
            block("if not _cs_resuming:", src, [self.line(f"{state} = 0")]),
            block("try:", src, [plant, *self.guarded(inner)]),
            detach,
            block(
                f"except BaseException as {pending}:",
                src,
                [self.unplant(pending), set_one, *failing.resume, self.line("raise")],
            ),
            block("else:", src, [set_one, *normal.resume]),
            block("finally:", src, [block(f"if {state} >= 2 and {LIVE}():", src, leaving.fresh)]),
        ]
        resume = [
            block(
                f"if _cs_resuming and ({cond(leaving.labels)}):",
                src,
                [*leaving.resume, *after_leaving],
            ),
            block("else:", src, regular),
        ]
        return [Out(fresh, resume, labels)]

    def do_FunctionDef(self, node: cst.FunctionDef) -> list[Out]:
        """A nested def whose decorators or defaults yield: evaluate them first, in order."""
        params = node.params
        ordered = [*params.posonly_params, *params.params, *params.kwonly_params]
        annotated = [
            p.annotation
            for p in [*ordered, params.star_arg, params.star_kwarg]
            if isinstance(p, cst.Param) and p.annotation is not None
        ]
        if any(suspends(a) for a in annotated) or (node.returns and suspends(node.returns)):
            raise self.unsupported("a yield inside an annotation is not supported", node)
        defaults = [p.default for p in ordered if p.default is not None]
        pre, decorators, new_defaults = self._hoist_header(node.decorators, defaults)
        replaced = iter(new_defaults)
        rebuilt = {id(p): p.with_changes(default=next(replaced)) for p in ordered if p.default}
        new_params = params.with_changes(
            posonly_params=[rebuilt.get(id(p), p) for p in params.posonly_params],
            params=[rebuilt.get(id(p), p) for p in params.params],
            kwonly_params=[rebuilt.get(id(p), p) for p in params.kwonly_params],
        )
        bare = node.with_changes(decorators=(), params=new_params, leading_lines=())
        return [*pre, self._define(bare, node.name.value, decorators)]

    def do_ClassDef(self, node: cst.ClassDef) -> list[Out]:
        """A nested class whose decorators, bases or keywords yield."""
        arguments = [*node.bases, *node.keywords]
        pre, decorators, values = self._hoist_header(node.decorators, [a.value for a in arguments])
        new_args = [a.with_changes(value=v) for a, v in zip(arguments, values)]
        bare = node.with_changes(
            decorators=(),
            bases=new_args[: len(node.bases)],
            keywords=new_args[len(node.bases) :],
            leading_lines=(),
        )
        return [*pre, self._define(bare, node.name.value, decorators)]

    def _hoist_header(
        self, decorators: Sequence[cst.Decorator], values: list[cst.BaseExpression]
    ) -> tuple[list[Out], list[str], list[cst.BaseExpression]]:
        """Decorators go to temporaries (applied after the definition), then the values."""
        pre, hoisted = self.anf_sequence([d.decorator for d in decorators] + values)
        held = []
        for expr in hoisted[: len(decorators)]:
            if isinstance(expr, cst.Name) and expr.value.startswith("_cs_"):
                held.append(expr.value)
            else:
                name = self.temp()
                pre.append(self.assign(name, self.code(expr)))
                held.append(name)
        return pre, held, hoisted[len(decorators) :]

    def _define(self, bare: cst.CSTNode, name: str, decorators: list[str]) -> Out:
        line, col = self.where(bare)
        text = self.module.code_for_node(bare).rstrip("\n").rstrip()
        lines = [verbatim(text, self._line, col if line == self._line else 0)]
        if decorators:
            applied = name
            for decorator in reversed(decorators):
                applied = f"{decorator}({applied})"
            lines.append(self.line(f"{name} = {applied}"))
        return plain(lines)

    # ---------------------------------------------------------- expressions

    def anf_sequence(
        self, exprs: Sequence[cst.BaseExpression], unpacked: Mapping[int, str] | None = None
    ) -> tuple[list[Out], list[cst.BaseExpression]]:
        """Hoist a left-to-right sequence so that everything before the last yield is a temp.

        ``unpacked`` maps the id of an operand of ``*`` or ``**`` to that star
        (``"set"`` for ``*`` in a set display):
        Python unpacks it before it evaluates the next operand, so it is held
        unpacked (a list may change, an iterator is consumed, while paused).
        """
        last = max((i for i, e in enumerate(exprs) if suspends(e)), default=-1)
        pre: list[Out] = []
        result: list[cst.BaseExpression] = []
        for i, expr in enumerate(exprs):
            if i > last:
                result.append(expr)
                continue
            epre, new = self.anf(expr)
            pre.extend(epre)
            star = (unpacked or {}).get(id(expr))
            if i < last and (star is not None or not self.stable(new)):
                hold = self.temp()
                value = self.code(new)
                if star == "set":
                    value = f"{RT}.set_items({value})"
                elif star == "*":
                    value = f"[*{value}]"
                elif star == "**":
                    value = f"{{**{value}}}"
                pre.append(self.assign(hold, value))
                new = cst.Name(hold)
            result.append(new)
        return pre, result

    def anf(self, expr: cst.BaseExpression) -> tuple[list[Out], cst.BaseExpression]:
        """Return statements that perform the yields of ``expr`` and the yield-free rest."""
        if not suspends(expr):
            return [], expr
        if isinstance(expr, cst.Yield):
            hold = self.temp()
            return self.yield_statement(hold, expr), cst.Name(hold)
        if isinstance(expr, cst.Await):
            hold = self.temp()
            return self.await_statement(hold, expr), cst.Name(hold)
        if isinstance(expr, cst.BooleanOperation) and suspends(expr.right):
            pre, left = self.anf(expr.left)
            hold = self.temp()
            pre.append(self.assign(hold, self.code(left)))
            rpre, right = self.anf(expr.right)
            rest = self.combine([*rpre, self.assign(hold, self.code(right))])
            guard = hold if isinstance(expr.operator, cst.And) else f"not {hold}"
            pre.append(self.if_out(guard, rest, None))
            return pre, cst.Name(hold)
        if isinstance(expr, cst.IfExp) and (suspends(expr.body) or suspends(expr.orelse)):
            pre, test = self.anf(expr.test)
            hold = self.temp()
            bpre, body = self.anf(expr.body)
            opre, orelse = self.anf(expr.orelse)
            pre.append(
                self.if_out(
                    self.code(test),
                    self.combine([*bpre, self.assign(hold, self.code(body))]),
                    self.combine([*opre, self.assign(hold, self.code(orelse))]),
                )
            )
            return pre, cst.Name(hold)
        if isinstance(expr, cst.Comparison) and any(
            suspends(c.comparator) for c in expr.comparisons[1:]
        ):
            return self.anf_comparison(expr)
        if isinstance(expr, cst.NamedExpr):
            pre, value = self.anf(expr.value)
            hold = self.temp()
            pre.append(self.assign(hold, self.code(value)))
            pre.append(self.assign(self.code(expr.target), hold))
            return pre, cst.Name(hold)
        if isinstance(expr, cst.FormattedString):
            return self.anf_fstring(expr)
        if (
            isinstance(expr, cst.BinaryOperation)
            and isinstance(expr.operator, cst.Modulo)
            and isinstance(expr.right, cst.Tuple)
        ):
            folded = self.anf_percent(expr, expr.right)
            if folded is not None:
                return folded
        if awaiting_comprehension(expr):
            assert isinstance(expr, (cst.ListComp, cst.SetComp, cst.DictComp))
            return self.anf_comprehension(expr)
        children = _evaluation_order(expr)
        if children is None:
            raise self.unsupported(
                f"a yield inside a {type(expr).__name__} expression is not supported", expr
            )
        pre, new = self.anf_sequence(children, _unpacked(expr))
        replacements: dict[int, cst.CSTNode] = {
            id(old): repl for old, repl in zip(children, new) if old is not repl
        }
        return pre, _replace(expr, replacements)

    def anf_target(self, target: cst.BaseExpression) -> tuple[list[Out], cst.BaseExpression]:
        """Hoist yields out of an assignment target, keeping it a target."""
        if not suspends(target):
            return [], target
        if isinstance(target, (cst.Tuple, cst.List)):
            pre: list[Out] = []
            elements = []
            for element in target.elements:
                epre, value = self.anf_target(element.value)
                pre.extend(epre)
                elements.append(element.with_changes(value=value))
            return pre, target.with_changes(elements=elements)
        if isinstance(target, cst.StarredElement):
            pre, value = self.anf_target(target.value)
            return pre, target.with_changes(value=value)
        return self.anf(target)

    def anf_comparison(self, expr: cst.Comparison) -> tuple[list[Out], cst.BaseExpression]:
        result = self.temp()
        pre, left = self.anf(expr.left)
        if self.stable(left):
            hold = self.code(left)
        else:
            hold = self.temp()
            pre.append(self.assign(hold, self.code(left)))

        def chain(index: int, left_name: str) -> list[Out]:
            target = expr.comparisons[index]
            outs, right = self.anf(target.comparator)
            right_text = self.code(right)
            if index + 1 < len(expr.comparisons):
                right_name = self.temp()
                outs.append(self.assign(right_name, right_text))
                right_text = right_name
            op = self.code(target.operator).strip()
            outs.append(self.assign(result, f"{left_name} {op} {right_text}"))
            if index + 1 < len(expr.comparisons):
                outs.append(self.if_out(result, self.combine(chain(index + 1, right_text)), None))
            return outs

        pre.extend(chain(0, hold))
        return pre, cst.Name(result)

    def anf_comprehension(
        self, expr: cst.ListComp | cst.SetComp | cst.DictComp
    ) -> tuple[list[Out], cst.BaseExpression]:
        """An awaiting comprehension written out as a loop, so its awaits are labelled.

        Its loop variables get fresh names: they stay out of the function's own.
        """
        clauses: list[cst.CompFor] = []
        clause: cst.CompFor | None = expr.for_in
        while clause is not None:
            clauses.append(clause)
            clause = clause.inner_for_in
        renames: dict[str, str] = {}
        for c in clauses:
            for name in sorted(_target_names(c.target)):
                renames[name] = self.fresh_name("cv")
                self.temps_live.append(renames[name])
        parts = [expr.key, expr.value] if isinstance(expr, cst.DictComp) else [expr.elt]
        for c in clauses:
            parts.extend(i.test for i in c.ifs)
            parts.extend([c.target] + ([c.iter] if c is not clauses[0] else []))
        renamer = _Rename(renames)
        for part in parts:
            part.visit(renamer)
        if renamer.captured:
            raise self.unsupported(
                "an inner function or lambda in an awaiting comprehension uses its loop "
                "variable; write the loop out",
                expr,
            )

        def text(node: cst.CSTNode) -> str:
            renamed = node.visit(_Rename(renames))
            assert isinstance(renamed, cst.CSTNode)
            return self.code(renamed)

        result = self.temp()
        # `{*()}`, not `set()`: the name `set` may mean something else here
        empty = {cst.ListComp: "[]", cst.SetComp: "{*()}", cst.DictComp: "{}"}[type(expr)]
        lines: list[str] = []
        depth = 0
        for c in clauses:
            iterable = self.code(c.iter) if c is clauses[0] else text(c.iter)
            keyword = "async for" if c.asynchronous is not None else "for"
            lines.append("    " * depth + f"{keyword} {text(c.target)} in {iterable}:")
            depth += 1
            for condition in c.ifs:
                lines.append("    " * depth + f"if {text(condition.test)}:")
                depth += 1
        if isinstance(expr, cst.DictComp):
            store = f"{result}[{text(expr.key)}] = {text(expr.value)}"
        elif isinstance(expr, cst.SetComp):
            store = f"{result}.add({text(expr.elt)})"
        else:
            store = f"{result}.append({text(expr.elt)})"
        lines.append("    " * depth + store)
        statements = cst.parse_module("\n".join(lines) + "\n").body
        loop: cst.CSTNode = statements[0]
        while isinstance(loop, (cst.For, cst.If)):
            if isinstance(loop, cst.For) and loop.asynchronous is not None:
                self.spell_out.add(id(loop))
            inner = loop.body.body[0] if isinstance(loop.body, cst.IndentedBlock) else None
            if inner is None:
                break
            loop = inner
        outs = [self.assign(result, empty), *self._process(statements)]
        return outs, cst.Name(result)

    def anf_percent(
        self, expr: cst.BinaryOperation, items: cst.Tuple
    ) -> tuple[list[Out], cst.BaseExpression] | None:
        """``"%s-%r" % (a, (yield))`` where CPython runs it as ``f"{a!s}-{(yield)!r}"``
        (3.11+): each item is converted right after it is evaluated, so ``str(a)`` runs
        before the yield. None where CPython runs the ``%`` operator itself."""
        try:
            fmt = ast.literal_eval(self.code(expr.left))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        if not isinstance(fmt, str):
            return None
        elements = list(items.elements)
        starred = any(isinstance(e, cst.StarredElement) for e in elements)
        try:
            pieces = native_pieces(fmt, len(elements), starred)
        except UnknownFolding:
            raise self.unsupported(
                "a yield or await inside this %-format is not supported on this Python, "
                "which runs it as an f-string of a form contsnap does not know; write it as "
                "an f-string",
                expr,
            ) from None
        if pieces is None:
            return None
        units = [piece for piece in pieces if isinstance(piece, Unit)]
        last = max(i for i, element in enumerate(elements) if suspends(element.value))
        pre: list[Out] = []
        held: dict[int, str] = {}
        for i, element in enumerate(elements[: last + 1]):
            epre, value = self.anf(element.value)
            pre.extend(epre)
            if isinstance(value, cst.Name) and not value.lpar:
                value_text = value.value
            else:
                value_text = self.temp()
                pre.append(self.assign(value_text, self.code(value)))
            spec = f":{units[i].spec}" if units[i].spec else ""
            held[i] = self.temp()
            conversion = f"{{{value_text}!{units[i].conversion}{spec}}}"
            pre.append(self.assign(held[i], f'f"{conversion}"'))
        # the rest as a %-format again, the converted items as %s: CPython folds it too
        fmt_out = []
        unit_index = 0
        for piece in pieces:
            if isinstance(piece, str):
                fmt_out.append(piece.replace("%", "%%"))
                continue
            fmt_out.append("%s" if unit_index in held else piece.text)
            unit_index += 1
        values = [
            held[i] if i in held else self.code(element.value) for i, element in enumerate(elements)
        ]
        rest = f"({''.join(fmt_out)!r} % ({''.join(f'{v}, ' for v in values)}))"
        return pre, cst.parse_expression(rest)

    def anf_fstring(self, expr: cst.FormattedString) -> tuple[list[Out], cst.BaseExpression]:
        parts = list(expr.parts)
        last = max(
            i
            for i, p in enumerate(parts)
            if isinstance(p, cst.FormattedStringExpression) and suspends(p)
        )
        pre: list[Out] = []
        new_parts: list[cst.BaseFormattedStringContent] = []
        for i, part in enumerate(parts):
            if i > last or not isinstance(part, cst.FormattedStringExpression):
                new_parts.append(part)
                continue
            epre, value = self.anf(part.expression)
            pre.extend(epre)
            if part.format_spec and any(suspends(p) for p in part.format_spec):
                # the value is computed before the fields of its format spec
                if not self.stable(value):
                    held_value = self.temp()
                    pre.append(self.assign(held_value, self.code(value)))
                    value = cst.Name(held_value)
                spec = list(part.format_spec)
                fields = [p for p in spec if isinstance(p, cst.FormattedStringExpression)]
                spre, spec_values = self.anf_sequence([f.expression for f in fields])
                pre.extend(spre)
                swap = {id(f): f.with_changes(expression=v) for f, v in zip(fields, spec_values)}
                part = part.with_changes(format_spec=[swap.get(id(p), p) for p in spec])
            hold = self.temp()
            if isinstance(part.equal, cst.AssignEqual):
                # f"{expr=}" prints the expression's own text, then (by default) its repr
                shown = "".join(
                    self.module.code_for_node(piece)
                    for piece in (
                        part.whitespace_before_expression,
                        part.expression,
                        part.equal,
                        part.whitespace_after_expression,
                    )
                )
                conversion = part.conversion
                if conversion is None and part.format_spec is None:
                    conversion = "r"
                bare = part.with_changes(
                    expression=value,
                    equal=None,
                    conversion=conversion,
                    whitespace_before_expression=cst.SimpleWhitespace(""),
                    whitespace_after_expression=cst.SimpleWhitespace(""),
                )
                single = expr.with_changes(parts=[bare])
                pre.append(self.assign(hold, f"{shown!r} + {self.code(single)}"))
            else:
                single = expr.with_changes(parts=[part.with_changes(expression=value)])
                pre.append(self.assign(hold, self.code(single)))
            new_parts.append(cst.FormattedStringExpression(expression=cst.Name(hold)))
        return pre, expr.with_changes(parts=new_parts)


def _held_await(value: cst.BaseExpression) -> bool:
    """Is this the step of a spelled-out ``async for`` (``await RT.anext(iterator)``)?

    What it awaits is an `ANext`, which a snapshot saves and cannot find in the frame
    (``cr_await`` is the iterator of the step's ``__anext__()``): it keeps its local.
    """
    func = value.func if isinstance(value, cst.Call) else None
    return (
        isinstance(func, cst.Attribute)
        and isinstance(func.value, cst.Name)
        and func.value.value == RT
        and func.attr.value == "anext"
    )


def _is_constant(node: cst.BaseExpression) -> bool:
    if isinstance(node, (cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString, cst.Ellipsis)):
        return True
    return isinstance(node, cst.Name) and (
        node.value in ("True", "False", "None") or node.value.startswith("_cs_")
    )


def _count_suspensions(node: cst.CSTNode) -> int:
    """The yields and awaits in ``node``'s own scope, nested ones included."""
    count = 0
    stack = [node]
    while stack:
        inner = stack.pop()
        if type(inner) in _SUSPENSION_KINDS:
            count += 1
        elif (
            inner is not node
            and isinstance(inner, cst.BaseExpression)
            and not contains(inner, SUSPENSIONS)
        ):
            continue
        stack.extend(children(inner))
    return count


_SUSPENSION_KINDS = frozenset(SUSPENSIONS)


def _evaluation_order(expr: cst.BaseExpression) -> list[cst.BaseExpression] | None:
    """Sub-expressions the enclosing scope evaluates, in Python's order (None: unknown node)."""
    if isinstance(expr, cst.Attribute):
        return [expr.value]
    if isinstance(expr, cst.Subscript):
        out: list[cst.BaseExpression] = [expr.value]
        for element in expr.slice:
            sl = element.slice
            if isinstance(sl, cst.Index):
                out.append(sl.value)
            else:
                assert isinstance(sl, cst.Slice)
                out.extend(p for p in (sl.lower, sl.upper, sl.step) if p is not None)
        return out
    if isinstance(expr, cst.Call):
        # positional arguments, `*` unpackings included, come before every keyword
        # argument even when written after one: f(b=x, *y) evaluates y, then x
        positional = [a for a in expr.args if a.keyword is None and a.star != "**"]
        named = [a for a in expr.args if a.keyword is not None or a.star == "**"]
        return [expr.func, *(arg.value for arg in (*positional, *named))]
    if isinstance(expr, cst.BinaryOperation):
        return [expr.left, expr.right]
    if isinstance(expr, cst.BooleanOperation):
        return [expr.left, expr.right]
    if isinstance(expr, cst.UnaryOperation):
        return [expr.expression]
    if isinstance(expr, cst.Comparison):
        return [expr.left, expr.comparisons[0].comparator]
    if isinstance(expr, cst.IfExp):
        return [expr.test]
    if isinstance(expr, (cst.Tuple, cst.List, cst.Set)):
        return [element.value for element in expr.elements]
    if isinstance(expr, cst.Dict):
        dict_out: list[cst.BaseExpression] = []
        for item in expr.elements:
            if isinstance(item, cst.DictElement):
                dict_out.extend([item.key, item.value])
            else:
                dict_out.append(item.value)
        return dict_out
    if isinstance(expr, cst.ConcatenatedString):
        return [expr.left, expr.right]
    if isinstance(expr, cst.Lambda):
        params = expr.params
        ordered = [*params.posonly_params, *params.params, *params.kwonly_params]
        return [p.default for p in ordered if p.default is not None]
    if isinstance(expr, (cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)):
        return [expr.for_in.iter]
    if isinstance(expr, cst.StarredElement):
        return [expr.value]
    return None


def _unpacked(expr: cst.BaseExpression) -> dict[int, str]:
    """The operands of ``*`` and ``**`` among the sub-expressions of ``expr``, by id."""
    found: dict[int, str] = {}
    if isinstance(expr, (cst.Tuple, cst.List, cst.Set)):
        for element in expr.elements:
            if isinstance(element, cst.StarredElement):
                found[id(element.value)] = "set" if isinstance(expr, cst.Set) else "*"
    elif isinstance(expr, cst.Call):
        for arg in expr.args:
            if arg.star:
                found[id(arg.value)] = arg.star
    elif isinstance(expr, cst.Dict):
        for item in expr.elements:
            if isinstance(item, cst.StarredDictElement):
                found[id(item.value)] = "**"
    return found


def _target_names(target: cst.CSTNode) -> set[str]:
    if isinstance(target, cst.Name):
        return {target.value}
    if isinstance(target, (cst.Tuple, cst.List)):
        return set().union(*(_target_names(e.value) for e in target.elements))
    if isinstance(target, cst.StarredElement):
        return _target_names(target.value)
    return set()


def _comprehension_targets(node: cst.ListComp | cst.SetComp | cst.DictComp) -> set[str]:
    names: set[str] = set()
    clause: cst.CompFor | None = node.for_in
    while clause is not None:
        names |= _target_names(clause.target)
        clause = clause.inner_for_in
    return names


class _Rename(cst.CSTTransformer):
    """Rename loop variables of a comprehension; notes inner scopes that use them."""

    def __init__(self, renames: dict[str, str]) -> None:
        self.renames = renames
        self.captured = False

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, (cst.ListComp, cst.SetComp, cst.DictComp)) and not (
            _comprehension_targets(node) & set(self.renames)
        ):
            # run at once, within one step of the loop: it sees the value the loop variable
            # has then, renamed or not (an inner lambda or generator is still refused)
            return True
        if isinstance(
            node,
            (
                cst.Lambda,
                cst.FunctionDef,
                cst.ClassDef,
                cst.ListComp,
                cst.SetComp,
                cst.DictComp,
                cst.GeneratorExp,
            ),
        ):
            if names_used(node) & set(self.renames):
                self.captured = True
            return False
        return True

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.Name:
        new = self.renames.get(original_node.value)
        return updated_node if new is None else updated_node.with_changes(value=new)


class _Replace(cst.CSTTransformer):
    def __init__(self, replacements: dict[int, cst.CSTNode]) -> None:
        self.replacements = replacements

    def on_leave(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        return self.replacements.get(id(original_node), updated_node)


def _replace(expr: cst.BaseExpression, replacements: dict[int, cst.CSTNode]) -> cst.BaseExpression:
    if not replacements:
        return expr
    result = expr.visit(_Replace(replacements))
    assert isinstance(result, cst.BaseExpression)
    return result
