"""Questions about a function body that respect Python's scopes.

A ``yield`` inside a nested ``def``, ``lambda``, class body or comprehension
belongs to that inner scope, except for the parts the enclosing scope
evaluates itself: decorators, defaults, class bases, and the outermost
iterable of a comprehension.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import libcst as cst

_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)


def _own_scope_parts(node: cst.CSTNode) -> list[cst.CSTNode] | None:
    """Parts of a scope-opening node that the enclosing scope evaluates, or None."""
    if isinstance(node, cst.FunctionDef):
        parts: list[cst.CSTNode] = [d for d in node.decorators]
        parts.append(node.params)
        if node.returns is not None:
            parts.append(node.returns)
        return parts
    if isinstance(node, cst.Lambda):
        return [node.params]
    if isinstance(node, cst.ClassDef):
        return [*node.decorators, *node.bases, *node.keywords]
    if isinstance(node, _COMPREHENSIONS):
        return [node.for_in.iter]
    return None


#: Fields that only hold whitespace, comments or punctuation: no names, no yields.
_SKIPPED_FIELDS = frozenset(
    {"leading_lines", "lines_after_decorators", "header", "footer", "lpar", "rpar", "semicolon"}
)
_CHILD_FIELDS: dict[type[cst.CSTNode], tuple[str, ...]] = {}


def children(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """The child nodes of ``node`` that may hold code, read straight from its fields.

    libcst's own ``visit`` rebuilds every node it passes and costs ten times more.
    """
    names = _CHILD_FIELDS.get(type(node))
    if names is None:
        names = _CHILD_FIELDS[type(node)] = tuple(
            f.name
            for f in dataclasses.fields(node)
            if "whitespace" not in f.name and f.name not in _SKIPPED_FIELDS
        )
    for name in names:
        value = getattr(node, name)
        if isinstance(value, cst.CSTNode):
            yield value
        elif isinstance(value, (tuple, list)):
            for item in value:
                if isinstance(item, cst.CSTNode):
                    yield item


#: Answers of contains() and exits(), per question. The transform asks about every
#: statement and again about its parts, so a fresh walk each time made it quadratic
#: in the nesting depth. Keys hold their nodes alive, so an identity is never reused.
_MEMO: dict[object, dict[cst.CSTNode, bool]] = {}


def forget() -> None:
    """Drop the remembered answers (at the end of each function's transform)."""
    _MEMO.clear()


def _memo(question: object) -> dict[cst.CSTNode, bool]:
    memo = _MEMO.get(question)
    if memo is None:
        memo = _MEMO[question] = {}
    return memo


def awaiting_comprehension(node: cst.CSTNode) -> bool:
    """A list/set/dict comprehension that awaits: it suspends its enclosing coroutine."""
    if not isinstance(node, (cst.ListComp, cst.SetComp, cst.DictComp)):
        return False
    clause: cst.CompFor | None = node.for_in
    while clause is not None:
        if clause.asynchronous is not None:
            return True
        clause = clause.inner_for_in
    parts = [node.key, node.value] if isinstance(node, cst.DictComp) else [node.elt]
    inner: cst.CompFor | None = node.for_in
    while inner is not None:
        parts.extend(i.test for i in inner.ifs)
        if inner is not node.for_in:
            parts.append(inner.iter)
        inner = inner.inner_for_in
    return any(contains(part, (cst.Await,)) for part in parts)


def contains(node: cst.CSTNode, kinds: tuple[type[cst.CSTNode], ...]) -> bool:
    """Does ``node`` hold one of ``kinds`` in this scope?"""
    return _contains(node, kinds, cst.Await in kinds, _memo(kinds))


def _contains(
    node: cst.CSTNode,
    kinds: tuple[type[cst.CSTNode], ...],
    awaits: bool,
    memo: dict[cst.CSTNode, bool],
) -> bool:
    found = memo.get(node)
    if found is not None:
        return found
    if isinstance(node, kinds) or (
        awaits
        and (
            # async for / async with await __anext__, __aenter__ and __aexit__
            (isinstance(node, (cst.For, cst.With)) and node.asynchronous is not None)
            or awaiting_comprehension(node)
        )
    ):
        found = True
    else:
        parts = _own_scope_parts(node)
        found = any(
            _contains(child, kinds, awaits, memo)
            for child in (children(node) if parts is None else parts)
        )
    memo[node] = found
    return found


SUSPENSIONS: tuple[type[cst.CSTNode], ...] = (cst.Yield, cst.Await)


def suspends(node: cst.CSTNode) -> bool:
    """Does evaluating ``node`` in this scope pass a yield or await?"""
    return contains(node, SUSPENSIONS)


def exits(node: cst.CSTNode) -> bool:
    """Can control leave ``node`` by return, or by break/continue of an enclosing loop?"""
    return _exits(node, _memo(exits), _memo(_returns))


def _exits(
    node: cst.CSTNode, memo: dict[cst.CSTNode, bool], returns: dict[cst.CSTNode, bool]
) -> bool:
    found = memo.get(node)
    if found is not None:
        return found
    if isinstance(node, (cst.Return, cst.Break, cst.Continue)):
        found = True
    elif _own_scope_parts(node) is not None:
        found = False
    elif isinstance(node, (cst.For, cst.While)):
        # inside an inner loop only a return leaves the node
        head = node.iter if isinstance(node, cst.For) else node.test
        found = (
            _exits(head, memo, returns)
            or _returns(node.body, returns)
            or (node.orelse is not None and _exits(node.orelse, memo, returns))
        )
    else:
        found = any(_exits(child, memo, returns) for child in children(node))
    memo[node] = found
    return found


def _returns(node: cst.CSTNode, memo: dict[cst.CSTNode, bool]) -> bool:
    found = memo.get(node)
    if found is None:
        if isinstance(node, cst.Return):
            found = True
        elif _own_scope_parts(node) is not None:
            found = False
        else:
            found = any(_returns(child, memo) for child in children(node))
        memo[node] = found
    return found


def names_used(node: cst.CSTNode) -> set[str]:
    """Every identifier spelled anywhere in ``node`` (all scopes)."""
    names: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.Name):
            names.add(current.value)
        else:
            stack.extend(children(current))
    return names


_BINDING_TARGETS = (
    cst.AssignTarget,
    cst.AugAssign,
    cst.AnnAssign,
    cst.NamedExpr,
    cst.For,
    cst.CompFor,
    cst.Del,
)


def _bound_names(func: cst.FunctionDef) -> set[str]:
    """Names the function itself binds: parameters and every target in its own scope.

    A name read but never bound here is a global, a builtin or a free variable:
    other code may rebind it while the generator is paused.
    """
    params = func.params
    names = {p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)}
    for star in (params.star_arg, params.star_kwarg):
        if isinstance(star, cst.Param):
            names.add(star.name.value)
    stack: list[tuple[cst.CSTNode, bool]] = [(func.body, False)]
    while stack:
        node, target = stack.pop()
        if isinstance(node, cst.Name):
            if target:
                names.add(node.value)
            continue
        bound: cst.BaseExpression | None = None
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.MatchStar, cst.MatchAs)):
            bound = node.name
        elif isinstance(node, cst.MatchMapping):
            bound = node.rest
        elif isinstance(node, cst.ImportAlias) and node.asname is None:
            bound = node.name
            while isinstance(bound, cst.Attribute):  # `import a.b` binds `a`
                bound = bound.value
        if isinstance(bound, cst.Name):
            names.add(bound.value)
        if isinstance(node, (cst.Attribute, cst.Subscript)):
            # `a.b = ...` and `a[i] = ...` bind no name
            stack.extend((child, False) for child in children(node))
            continue
        targets: list[cst.CSTNode] = []
        if isinstance(node, _BINDING_TARGETS):
            targets = [node.target]
        elif isinstance(node, cst.AsName):
            targets = [node.name]
        parts = _own_scope_parts(node)
        for child in children(node) if parts is None else parts:
            stack.append((child, target or any(child is t for t in targets)))
    return names


def unstable_names(func: cst.FunctionDef) -> set[str]:
    """Globals, builtins, free variables, nonlocals, and every name an inner scope
    mentions (it may be a cell).

    Any other name of the function is a plain local: nothing but this frame can
    change it, so its value need not be saved aside before a yield.
    """
    body = func.body
    names = names_used(body) - _bound_names(func)
    stack: list[tuple[cst.CSTNode, bool]] = [(body, False)]
    while stack:
        node, inner = stack.pop()
        if isinstance(node, cst.Name):
            if inner:
                names.add(node.value)
            continue
        if isinstance(node, (cst.Global, cst.Nonlocal)):
            names.update(n.name.value for n in node.names)
        elif isinstance(node, cst.NamedExpr) and isinstance(node.target, cst.Name):
            # a walrus may rebind the name inside the very expression that read it
            names.add(node.target.value)
        inner = inner or _own_scope_parts(node) is not None
        stack.extend((child, inner) for child in children(node))
    return names
