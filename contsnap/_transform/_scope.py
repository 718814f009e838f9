"""Questions about a function body that respect Python's scopes.

A ``yield`` inside a nested ``def``, ``lambda``, class body or comprehension
belongs to that inner scope, except for the parts the enclosing scope
evaluates itself: decorators, defaults, class bases, and the outermost
iterable of a comprehension.
"""

from __future__ import annotations

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


class _Finder(cst.CSTVisitor):
    def __init__(self, kinds: tuple[type[cst.CSTNode], ...]) -> None:
        self.kinds = kinds
        self.found = False

    def on_visit(self, node: cst.CSTNode) -> bool:
        if self.found:
            return False
        if (
            isinstance(node, self.kinds)
            or (
                # async for / async with await __anext__, __aenter__ and __aexit__
                cst.Await in self.kinds
                and isinstance(node, (cst.For, cst.With))
                and node.asynchronous is not None
            )
            or (cst.Await in self.kinds and awaiting_comprehension(node))
        ):
            self.found = True
            return False
        parts = _own_scope_parts(node)
        if parts is not None:
            for part in parts:
                part.visit(self)
            return False
        return True


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
    finder = _Finder(kinds)
    node.visit(finder)
    return finder.found


SUSPENSIONS: tuple[type[cst.CSTNode], ...] = (cst.Yield, cst.Await)


def suspends(node: cst.CSTNode) -> bool:
    """Does evaluating ``node`` in this scope pass a yield or await?"""
    return contains(node, SUSPENSIONS)


class _ExitFinder(cst.CSTVisitor):
    """Finds ``return`` anywhere, and ``break``/``continue`` not inside an inner loop."""

    def __init__(self) -> None:
        self.found = False
        self.loops = 0

    def on_visit(self, node: cst.CSTNode) -> bool:
        if self.found:
            return False
        if isinstance(node, cst.Return):
            self.found = True
            return False
        if isinstance(node, (cst.Break, cst.Continue)) and self.loops == 0:
            self.found = True
            return False
        if _own_scope_parts(node) is not None:
            return False
        if isinstance(node, (cst.For, cst.While)):
            node.iter.visit(self) if isinstance(node, cst.For) else node.test.visit(self)
            self.loops += 1
            node.body.visit(self)
            self.loops -= 1
            if node.orelse is not None:
                node.orelse.visit(self)
            return False
        return True


def exits(node: cst.CSTNode) -> bool:
    """Can control leave ``node`` by return, or by break/continue of an enclosing loop?"""
    finder = _ExitFinder()
    node.visit(finder)
    return finder.found


class _NameCollector(cst.CSTVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)


def names_used(node: cst.CSTNode) -> set[str]:
    """Every identifier spelled anywhere in ``node`` (all scopes)."""
    collector = _NameCollector()
    node.visit(collector)
    return collector.names


class _Unstable(cst.CSTVisitor):
    """Names another scope may rebind while this frame is suspended."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.depth = 0

    def visit_Global(self, node: cst.Global) -> None:
        self.names.update(n.name.value for n in node.names)

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        self.names.update(n.name.value for n in node.names)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        # a walrus may rebind the name inside the very expression that read it
        if isinstance(node.target, cst.Name):
            self.names.add(node.target.value)

    def on_visit(self, node: cst.CSTNode) -> bool:
        if self.depth and isinstance(node, cst.Name):
            self.names.add(node.value)
        if _own_scope_parts(node) is not None:
            self.depth += 1
        return super().on_visit(node)

    def on_leave(self, original_node: cst.CSTNode) -> None:
        if _own_scope_parts(original_node) is not None:
            self.depth -= 1
        super().on_leave(original_node)


def unstable_names(body: cst.CSTNode) -> set[str]:
    """Globals, nonlocals, and every name an inner scope mentions (it may be a cell).

    Any other name of the function is a plain local: nothing but this frame can
    change it, so its value need not be saved aside before a yield.
    """
    finder = _Unstable()
    body.visit(finder)
    return finder.names
