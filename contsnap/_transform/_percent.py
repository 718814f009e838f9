"""How CPython evaluates ``"constant %s format" % (a, b)``: as the operator, or as an f-string.

From 3.11 the compiler's AST optimiser rewrites a ``%`` whose left side is a
constant ``str`` and whose right side is a tuple display into the f-string it
stands for (``"%s-%r" % (a, b)`` runs as ``f"{a!s}-{b!r}"``): each item is then
converted (``str(a)``) right after it is evaluated, before the next item; the
operator evaluates every item first. With a ``yield`` among the items the
difference is visible (a ``__str__`` runs before or after the yield), so the
transform must keep the order the running interpreter uses.

The rule differs between versions, so it is not written down here as a
version table: :func:`native_pieces` reads the format the way CPython 3.11-3.13
do and then checks the result against the running compiler's own bytecode.
"""

from __future__ import annotations

import ast
import dis
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Unit:
    """One ``%`` unit CPython turns into an f-string field: ``{item!conversion:spec}``."""

    conversion: str  # "s", "r" or "a"
    spec: str  # the format spec ("" for none), e.g. ">5" for ``%5s``
    text: str  # the unit as written, ``%`` included


Piece = str | Unit


class UnknownFolding(Exception):
    """CPython compiles this ``%`` into an f-string in a way this module cannot reproduce."""


def _read_unit(fmt: str, pos: int) -> tuple[Unit, int] | None:
    """The unit starting after the ``%`` at ``pos - 1`` (None: CPython keeps the operator)."""
    start = pos - 1
    n = len(fmt)
    left_justify = False
    while pos < n and fmt[pos] in "-+ #0":
        left_justify |= fmt[pos] == "-"
        pos += 1
    width = ""
    while pos < n and fmt[pos].isdigit() and fmt[pos].isascii():
        width += fmt[pos]
        pos += 1
    precision = None
    if pos < n and fmt[pos] == ".":
        pos += 1
        precision = ""
        while pos < n and fmt[pos].isdigit() and fmt[pos].isascii():
            precision += fmt[pos]
            pos += 1
    if pos >= n or fmt[pos] not in "sra" or len(width) > 2 or len(precision or "") > 2:
        return None
    spec = ""
    if width and int(width) > 0 and not left_justify:
        spec += ">"
    if width:
        spec += str(int(width))
    if precision is not None:
        spec += f".{int(precision or 0)}"
    return Unit(fmt[pos], spec, fmt[start : pos + 1]), pos + 1


def _read(fmt: str, count: int) -> list[Piece] | None:
    """``fmt`` as literal text and units, when it has exactly ``count`` simple units."""
    pieces: list[Piece] = []
    pos, n, used = 0, len(fmt), 0
    while True:
        start = pos
        while (pos < n and fmt[pos] != "%") or fmt[pos : pos + 2] == "%%":
            pos += 2 if fmt[pos] == "%" else 1
        if pos > start:
            pieces.append(fmt[start:pos].replace("%%", "%"))
        if pos >= n:
            break
        if used >= count:
            return None
        read = _read_unit(fmt, pos + 1)
        if read is None:
            return None
        unit, pos = read
        pieces.append(unit)
        used += 1
    return pieces if used == count else None


def _names(count: int) -> list[str]:
    return [f"_cs_item{i}" for i in range(count)]


def _as_fstring(pieces: list[Piece]) -> ast.Expression:
    names = iter(_names(len(pieces)))
    values: list[ast.expr] = []
    for piece in pieces:
        if isinstance(piece, str):
            values.append(ast.Constant(piece))
            continue
        spec = ast.JoinedStr([ast.Constant(piece.spec)]) if piece.spec else None
        values.append(
            ast.FormattedValue(ast.Name(next(names), ast.Load()), ord(piece.conversion), spec)
        )
    return ast.fix_missing_locations(ast.Expression(ast.JoinedStr(values)))


def _fingerprint(code: object) -> tuple[object, ...]:
    return tuple((i.opname, i.argval) for i in dis.get_instructions(code))  # type: ignore[arg-type]


@lru_cache(maxsize=256)
def native_pieces(fmt: str, count: int, starred: bool) -> list[Piece] | None:
    """How this interpreter runs ``fmt % (item, ...)`` with ``count`` items (``starred``:
    one of them is ``*unpacked``): None if as the ``%`` operator, else as the f-string
    made of these pieces. Raises UnknownFolding for an f-string of another shape."""
    names = _names(count)
    if starred:
        names[0] = f"*{names[0]}"
    items = "".join(f"{name}, " for name in names)
    probe = compile(f"{fmt!r} % ({items})", "<probe>", "eval")
    if any(i.opname in ("BINARY_OP", "BINARY_MODULO") for i in dis.get_instructions(probe)):
        return None
    pieces = None if starred else _read(fmt, count)
    if pieces is not None:
        candidate = compile(_as_fstring(pieces), "<probe>", "eval")
        if _fingerprint(candidate) == _fingerprint(probe):
            return pieces
    raise UnknownFolding(fmt)
