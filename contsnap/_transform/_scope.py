"""Questions about a function body that respect Python's scopes.

A ``yield`` inside a nested ``def``, ``lambda``, class body or comprehension
belongs to that inner scope, except for the parts the enclosing scope
evaluates itself: decorators, defaults, class bases, and the outermost
iterable of a comprehension.

The walks here test a node's exact class (``type(node) is cst.Name``), not
``isinstance``: libcst's classes are ABCs, whose ``isinstance`` is a Python
call for every node that is not of the class asked for. Parsed trees and the
transform's own nodes hold libcst's classes only, never subclasses.
"""

from __future__ import annotations

import dataclasses

import libcst as cst

from .._registry import STATE

_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)
#: the classes that open a scope of their own
_SCOPES = frozenset({cst.FunctionDef, cst.Lambda, cst.ClassDef, *_COMPREHENSIONS})


def _own_scope_parts(node: cst.CSTNode) -> list[cst.CSTNode] | None:
    """Parts of a scope-opening node that the enclosing scope evaluates, or None."""
    kind = type(node)
    if kind not in _SCOPES:
        return None
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
    assert isinstance(node, _COMPREHENSIONS)
    return [node.for_in.iter]


#: Fields that only hold whitespace, comments or punctuation: no names, no yields.
_SKIPPED_FIELDS = frozenset(
    {"leading_lines", "lines_after_decorators", "header", "footer", "lpar", "rpar", "semicolon"}
)
_CHILD_FIELDS: dict[type[cst.CSTNode], tuple[str, ...]] = {}
STATE.add(__name__, "_CHILD_FIELDS", None, "a memo of node classes, never stale")
#: what a field's value is, by its class: 1 a node, 2 a sequence, 0 anything else
_VALUE_KINDS: dict[type, int] = {tuple: 2, list: 2, str: 0, type(None): 0}
STATE.add(__name__, "_VALUE_KINDS", None, "a memo of value classes, seeded: never stale")


def _value_kind(kind: type) -> int:
    found = _VALUE_KINDS[kind] = (
        1 if issubclass(kind, cst.CSTNode) else 2 if issubclass(kind, (tuple, list)) else 0
    )
    return found


def children(node: cst.CSTNode) -> list[cst.CSTNode]:
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
    kinds = _VALUE_KINDS
    found: list[cst.CSTNode] = []
    for name in names:
        value = getattr(node, name)
        kind = kinds.get(type(value))
        if kind is None:
            kind = _value_kind(type(value))
        if kind == 1:
            found.append(value)
        elif kind == 2:
            for item in value:
                item_kind = kinds.get(type(item))
                if item_kind is None:
                    item_kind = _value_kind(type(item))
                if item_kind == 1:
                    found.append(item)
    return found


#: Answers of contains() and exits(), per question. The transform asks about every
#: statement and again about its parts, so a fresh walk each time made it quadratic
#: in the nesting depth. Keys hold their nodes alive, so an identity is never reused.
_MEMO: dict[object, dict[cst.CSTNode, bool]] = {}
STATE.add(__name__, "_MEMO")


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


_AWAITING = frozenset({cst.For, cst.With, cst.ListComp, cst.SetComp, cst.DictComp})


def contains(node: cst.CSTNode, kinds: tuple[type[cst.CSTNode], ...]) -> bool:
    """Does ``node`` hold one of ``kinds`` (exactly those classes) in this scope?"""
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
    kind = type(node)
    if kind in kinds or (
        awaits
        and kind in _AWAITING
        and (
            # async for / async with await __anext__, __aenter__ and __aexit__
            (isinstance(node, (cst.For, cst.With)) and node.asynchronous is not None)
            or awaiting_comprehension(node)
        )
    ):
        found = True
    else:
        parts = _own_scope_parts(node)
        found = False
        for child in children(node) if parts is None else parts:
            if _contains(child, kinds, awaits, memo):
                found = True
                break
    memo[node] = found
    return found


SUSPENSIONS: tuple[type[cst.CSTNode], ...] = (cst.Yield, cst.Await)


def suspends(node: cst.CSTNode) -> bool:
    """Does evaluating ``node`` in this scope pass a yield or await?"""
    return contains(node, SUSPENSIONS)


_EXITS = frozenset({cst.Return, cst.Break, cst.Continue})


def exits(node: cst.CSTNode) -> bool:
    """Can control leave ``node`` by return, or by break/continue of an enclosing loop?"""
    return _exits(node, _memo(exits), _memo(_returns))


def _exits(
    node: cst.CSTNode, memo: dict[cst.CSTNode, bool], returns: dict[cst.CSTNode, bool]
) -> bool:
    found = memo.get(node)
    if found is not None:
        return found
    kind = type(node)
    if kind in _EXITS:
        found = True
    elif kind in _SCOPES:
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
        kind = type(node)
        if kind is cst.Return:
            found = True
        elif kind in _SCOPES:
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
        if type(current) is cst.Name:
            names.add(current.value)
        else:
            stack.extend(children(current))
    return names


_BINDING_TARGETS = frozenset(
    {cst.AssignTarget, cst.AugAssign, cst.AnnAssign, cst.NamedExpr, cst.For, cst.CompFor, cst.Del}
)
_BINDERS = frozenset({*_BINDING_TARGETS, cst.AsName})
_NAMED = frozenset({cst.FunctionDef, cst.ClassDef, cst.MatchStar, cst.MatchAs})


def survey(func: cst.FunctionDef) -> tuple[set[str], set[str]]:
    """Every identifier spelled anywhere in ``func`` (all scopes), and its unstable names.

    The unstable names are the globals, builtins, free variables, nonlocals, and
    every name an inner scope mentions (it may be a cell). Any other name of the
    function is a plain local: nothing but this frame can change it, so its value
    need not be saved aside before a yield. A name is bound by the function when
    it is a parameter or a target in the function's own scope.
    """
    body = func.body
    used: set[str] = set()
    for child in children(func):
        if child is not body:
            used |= names_used(child)
    params = func.params
    bound = {p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)}
    for star in (params.star_arg, params.star_kwarg):
        if isinstance(star, cst.Param):
            bound.add(star.name.value)
    in_body: set[str] = set()
    changing: set[str] = set()  # named in an inner scope, declared, or bound by a walrus
    # (node, in an inner scope, binding): binding is _OUTSIDE (not evaluated by the
    # function's own scope), _READ, or _TARGET (an assignment's target)
    stack: list[tuple[cst.CSTNode, bool, int]] = [(body, False, _READ)]
    while stack:
        node, inner, binding = stack.pop()
        kind = type(node)
        if type(node) is cst.Name:
            in_body.add(node.value)
            if inner:
                changing.add(node.value)
            if binding == _TARGET:
                bound.add(node.value)
            continue
        if type(node) is cst.Global or type(node) is cst.Nonlocal:
            changing.update(n.name.value for n in node.names)
        elif type(node) is cst.NamedExpr and type(node.target) is cst.Name:
            # a walrus may rebind the name inside the very expression that read it
            changing.add(node.target.value)
        scope = kind in _SCOPES
        below = inner or scope
        if binding == _OUTSIDE:
            stack.extend((child, below, _OUTSIDE) for child in children(node))
            continue
        name = _bound_by(node)
        if name is not None:
            bound.add(name)
        if kind is cst.Attribute or kind is cst.Subscript:
            # `a.b = ...` and `a[i] = ...` bind no name
            stack.extend((child, below, _READ) for child in children(node))
        elif scope:
            parts = _own_scope_parts(node) or []
            for child in children(node):
                own = any(child is part for part in parts)
                stack.append((child, below, binding if own else _OUTSIDE))
            if kind in _COMPREHENSION_KINDS:
                # the first iterable is the enclosing scope's, below the first `for`:
                # walked once more for its bindings (a walrus there binds here)
                stack.append((parts[0], True, binding))
        elif kind in _BINDERS:
            if type(node) is cst.AsName:
                target: cst.CSTNode = node.name
            else:  # each of _BINDING_TARGETS has one
                target = node.target  # type: ignore[attr-defined]
            stack.extend(
                (child, below, _TARGET if child is target else binding) for child in children(node)
            )
        else:
            stack.extend((child, below, binding) for child in children(node))
    return used | in_body, (in_body - bound) | changing


_OUTSIDE, _READ, _TARGET = 0, 1, 2
_COMPREHENSION_KINDS = frozenset(_COMPREHENSIONS)


def _bound_by(node: cst.CSTNode) -> str | None:
    """The name a def, class, pattern or import binds by itself, not as a target."""
    bound: cst.CSTNode | None = None
    kind = type(node)
    if kind in _NAMED:
        assert isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.MatchStar, cst.MatchAs))
        bound = node.name
    elif type(node) is cst.MatchMapping:
        bound = node.rest
    elif type(node) is cst.ImportAlias and node.asname is None:
        bound = node.name
        while type(bound) is cst.Attribute:  # `import a.b` binds `a`
            bound = bound.value
    return bound.value if type(bound) is cst.Name else None
