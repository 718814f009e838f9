"""Random generator programs: simple statements (assignments, calls, yields, awaits)."""

from __future__ import annotations

from hypothesis import strategies as st

from ._program_text import _INTS, _awaited_int, _condition, _int_expr, _Lines, _Scope, _small, _tag


def _simple(draw: st.DrawFn, scope: _Scope) -> _Lines:
    """One line-level statement, usually with a yield somewhere in it."""
    kinds = ["log", "assign", "yield", "receive", "yield-in-expression", "augment", "yield"]
    kinds += ["receive", "yield-in-expression", "starred"]
    kinds += ["raise", "raise"] * (scope.in_try or scope.in_except)
    kinds += ["closure"] * scope.closures + ["handled"] * bool(scope.errors)
    kinds += ["delegate"] * bool(scope.inner_cost)
    kinds += ["live", "genexp"]
    if scope.can_await:
        return _simple_async(draw, scope)
    kind = draw(st.sampled_from(kinds))
    target = draw(st.sampled_from(_INTS))
    return _simple_form(draw, scope, kind, target, _int_expr(draw, scope))


def _simple_form(draw: st.DrawFn, scope: _Scope, kind: str, target: str, value: str) -> _Lines:
    """The statement of one ``kind`` of `_simple`: ``target`` is an int local that
    the statement may assign, ``value`` an int expression it may use."""
    if kind == "log":
        return [f"log.append(({_tag(scope)}, {value}))"]
    if kind == "assign":
        return [f"{target} = {value}"]
    if kind == "augment":
        return [f"{target} {draw(st.sampled_from(['+=', '-=']))} {value}"]
    if kind == "yield":
        return [draw(st.sampled_from([f"yield {value}", f"yield {_tag(scope, 'y')}", "yield"]))]
    if kind == "receive":
        place = draw(
            st.sampled_from(
                [target, "box.attr", f"table[{draw(st.sampled_from(scope.keys))}]", "items[1]"]
            )
        )
        return [
            draw(
                st.sampled_from(
                    [
                        f"{place} = yield {value}",
                        f"{place} += yield {value}",
                        f"{place} += yield",
                        f"{place} = (yield {value}) or 0",
                    ]
                )
            )
        ]
    if kind == "yield-in-expression":
        other = _int_expr(draw, scope, 1, yields=False)
        test = _condition(draw, scope)
        return [
            draw(
                st.sampled_from(
                    [
                        f"log.append(({_tag(scope)}, {other}, (yield {value})))",
                        f"{target} = {other} + (yield {value})",
                        f"{target} = items[(yield {value}) % 3]",
                        f"log.append(f'{{{other}}}:{{(yield {value})}}')",
                        f"log.append('%s|%4r' % (Shown(log, {other}), (yield {value})))",
                        f"{target} = len('<%r%%>' % ((yield {value}), Shown(log, {other})))",
                        f"{target} = (yield {value}) if {test} else (yield {other})",
                        f"log.append(({target} := (yield {value})))",
                        f"{target} = bump(1) + (yield {value})" if scope.closures else "yield",
                    ]
                )
            )
        ]
    if kind == "starred":
        first, last = draw(st.sampled_from([("a", "b"), ("b", "c"), ("c", "a")]))
        return [
            draw(
                st.sampled_from(
                    [
                        f"{first}, *mid, {last} = ({value}, (yield {first}), {_small(draw)}, 7)",
                        f"{first}, *mid = items[:3]",
                        f"*mid, {last} = [{value}, (yield)]",
                    ]
                )
            )
        ]
    if kind == "raise":
        exc = draw(
            st.sampled_from(
                [
                    f'raise ValueError("raised", {value})',
                    f'raise KeyError("k{draw(st.integers(0, 3))}")',
                    f'{target} = table["missing"]',
                    *(["raise"] if scope.in_except else []),
                ]
            )
        )
        return [f"if {_condition(draw, scope)}:", f"    {exc}"]
    if kind == "closure":
        return [
            draw(
                st.sampled_from(
                    [
                        f'log.append(("bump", bump({value})))',
                        f"{target} = scale({value})",
                    ]
                )
            )
        ]
    if kind == "handled":
        error = draw(st.sampled_from(scope.errors))
        return [f'yield ("handling", {error}.args)']
    if kind == "genexp":  # a generator expression held across a yield, read lazily after
        held = scope.fresh("lazy")
        rounds = draw(st.integers(1, 3))
        small = _small(draw)
        made, used = draw(
            st.sampled_from(
                [
                    (
                        f"(v * {small} + {target} for v in items[:{rounds}] if v != {small})",
                        f"{target} = next({held}, -1)",
                    ),
                    (
                        f"((p, q) for p in range({rounds + 1}) if p for q in range(p) if p + q)",
                        f"log.append(('pairs', next({held}, None), list({held})))",
                    ),
                    (
                        f"(w for w in (x + {target} for x in items[:{rounds}]))",
                        f"log.append(('nested', list({held})))",
                    ),
                    (
                        f"__import__('itertools').cycle(x - {small} for x in items[:{rounds}])",
                        f"log.append(('cycle', [next({held}) for _ in range({rounds + 2})]))",
                    ),
                ]
            )
        )
        return [f"{held} = {made}", f"yield {_tag(scope, 'y')}", used]
    if kind == "live":  # views must see writes made before and after a restore
        forms = [
            f"window[{value} % 4] = {value} % 256",
            f'log.append(("live", bytes(buf), list(keys), known({value})))',
            'log.append(("window", window.tolist(), len(keys)))',
            "grow",
        ]
        if scope.can_await:  # a task's context variables: pause() keeps what it set
            forms += [f"CV.set({value})", 'log.append(("cv", CV.get()))']
        live = draw(st.sampled_from(forms))
        if live == "grow":  # inside a loop over the dict, its next step raises RuntimeError
            return [f"if {_condition(draw, scope)}:", f'    table["grown"] = {value}']
        return [live]
    form = draw(st.integers(0, 3))
    if form == 3:  # a list iterator has no throw(): what is thrown in is raised here
        return [f"yield from items[{_small(draw, 0, 2)}:][:1]"]
    if form == 2:  # held unstarted across a suspension: saved before its first step
        held = scope.fresh("held")
        return [f"{held} = inner({value}, log)", "yield", f"{target} = yield from {held}"]
    if form == 1:
        return [f"yield from inner({value}, log)"]
    return [f"{target} = yield from inner({value}, log)"]


def _simple_async(draw: st.DrawFn, scope: _Scope) -> _Lines:
    """One line-level statement of an async function, usually with an ``await`` in it
    (and, in an async generator, often a ``yield``)."""
    kinds = ["log", "assign", "augment", "checkpoint", "checkpoint", "receive", "receive"]
    kinds += ["await-in-expression", "await-in-expression", "await-in-expression", "starred"]
    kinds += ["raise", "raise"] * (scope.in_try or scope.in_except)
    kinds += ["closure"] * scope.closures + ["handled"] * bool(scope.errors)
    kinds += ["delegate"] * bool(scope.inner_cost)
    kinds += ["live"]
    if scope.can_yield:
        kinds += ["yield", "yield", "receive-yield", "yield-in-expression"]
    kind = draw(st.sampled_from(kinds))
    target = draw(st.sampled_from(_INTS))
    value = _int_expr(draw, scope)
    callee = scope.callee
    calls = bool(scope.inner_cost)
    simple = ("log", "assign", "augment", "raise", "closure", "yield", "yield-in-expression")
    if kind in (*simple, "live"):
        return _simple_form(draw, scope, kind, target, value)
    if kind == "receive-yield":
        return _simple_form(draw, scope, "receive", target, value)
    if kind == "checkpoint":
        return ["await contsnap.checkpoint()"]
    if kind == "receive":
        place = draw(
            st.sampled_from(
                [target, "box.attr", f"table[{draw(st.sampled_from(scope.keys))}]", "items[1]"]
            )
        )
        forms = [
            f"{place} = await contsnap.checkpoint() or {value}",
            f"{place} += (await contsnap.checkpoint()) or 1",
        ]
        if calls:
            forms += [
                f"{place} = await {callee}({value}, log)",
                f"{place} += await {callee}({value}, log)",
                f"{place} -= await {callee}({value}, log)",
            ]
        return [draw(st.sampled_from(forms))]
    if kind == "await-in-expression":
        other = _int_expr(draw, scope, 1, yields=False)
        test = _condition(draw, scope)
        awaited = _awaited_int(draw, scope, lambda: value)
        forms = [
            f"log.append(({_tag(scope)}, {other}, await contsnap.checkpoint()))",
            f"log.append(({_tag(scope)}, {other}, {awaited}))",
            f"{target} = {other} + {awaited}",
            f"{target} = max({other}, {awaited})",
            f"{target} = items[{awaited} % 3]",
            f"log.append(f'{{{other}}}:{{{awaited}}}')",
            f"log.append('%s|%4r' % (Shown(log, {other}), {awaited}))",
            f"{target} = {awaited} if {test} else {other}",
            f"{target} = {other} if {test} else {awaited}",
            f"log.append(({target} := {awaited}))",
            f"{target} = bump(1) + {awaited}" if scope.closures else f"{target} -= {awaited}",
        ]
        if scope.can_yield:  # a yield and an await in one expression
            forms += [f"{target} = (yield {value}) if {test} else {awaited}"]
        return [draw(st.sampled_from(forms))]
    if kind == "starred":
        first, last = draw(st.sampled_from([("a", "b"), ("b", "c"), ("c", "a")]))
        pause = "(await contsnap.checkpoint() or 4)"
        return [
            draw(
                st.sampled_from(
                    [
                        f"{first}, *mid, {last} = ({value}, {pause}, {_small(draw)}, 7)",
                        f"{first}, *mid = items[:3]",
                        f"*mid, {last} = [await contsnap.checkpoint(), {value}]",
                    ]
                )
            )
        ]
    if kind == "handled":
        error = draw(st.sampled_from(scope.errors))
        forms = [f'log.append(("handling", {error}.args, await contsnap.checkpoint()))']
        if scope.can_yield:
            forms.append(f'yield ("handling", {error}.args)')
        return [draw(st.sampled_from(forms))]
    form = draw(
        st.sampled_from(
            [
                f"{target} = await {callee}({value}, log)",
                f"await {callee}({value}, log)",
                f'log.append(("result", await {callee}({value}, log)))',
                "held",
            ]
        )
    )
    if form == "held":  # held unstarted across a checkpoint: saved before its first step
        held = scope.fresh("held")
        return [
            f"{held} = {callee}({value}, log)",
            "await contsnap.checkpoint()",
            f"{target} = await {held}",
        ]
    return [form]


def _suspends(line: str) -> bool:
    return "yield" in line or "await " in line or line.lstrip().startswith("async ")


def _pause(draw: st.DrawFn, scope: _Scope) -> str:
    """A statement that only suspends."""
    if scope.dialect == "sync" or (scope.can_yield and draw(st.booleans())):
        return f"yield {_tag(scope, 'y')}"
    return "await contsnap.checkpoint()"
