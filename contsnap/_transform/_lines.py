"""A tiny line-oriented IR for generated code that remembers where each line came from.

Generated statements are kept as text with the original line number of the
user statement they stand for, so rendering yields both the source text and a
map from generated line to original line (tracebacks point at the user's file).
"""

from __future__ import annotations

import io
import tokenize
from dataclasses import dataclass, field


@dataclass
class Line:
    """One statement: ``text`` may span several physical lines; ``body`` makes it a block header."""

    text: str
    src: int
    body: list[Line] | None = None
    #: For user code copied verbatim: original column of its first character.
    col: int | None = None
    #: Physical lines of ``text`` that start inside a string token (never re-indented).
    keep: frozenset[int] = field(default_factory=frozenset)
    #: For a yield whose line alone does not identify it: its label, stored before it.
    store: int | None = None


def block(header: str, src: int, body: list[Line]) -> Line:
    """A compound-statement header with its body (``pass`` when empty)."""
    return Line(header, src, body=body or [Line("pass", src)])


def verbatim(text: str, src: int, col: int) -> Line:
    """User code copied as is; lines inside multi-line strings keep their indentation."""
    return Line(text, src, col=col, keep=_string_continuations(text))


def _string_continuations(text: str) -> frozenset[int]:
    if "\n" not in text:
        return frozenset()
    inside: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text + "\n").readline):
            start, end = tok.start[0], tok.end[0]
            if end > start and tok.type not in (tokenize.NL, tokenize.NEWLINE):
                inside.update(range(start, end))  # rows start+1..end, 0-based: start..end-1
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return frozenset(inside)


@dataclass
class Rendered:
    text: str
    #: generated line (1-based index) -> (original line, column shift or None)
    line_map: dict[int, tuple[int, int | None]]


def render(lines: list[Line], indent: int = 0, out: Rendered | None = None) -> Rendered:
    """Render nested lines with four-space indentation and record the line map."""
    if out is None:
        out = Rendered("", {})
    parts: list[str] = [out.text] if out.text else []
    _render_into(lines, indent, parts, out.line_map, [out.text.count("\n")])
    out.text = "".join(parts)
    return out


def _render_into(
    lines: list[Line],
    indent: int,
    parts: list[str],
    line_map: dict[int, tuple[int, int | None]],
    count: list[int],
) -> None:
    pad = "    " * indent
    for line in lines:
        shift = None if line.col is None else line.col - len(pad)
        if line.store is None and "\n" not in line.text:  # most lines
            count[0] += 1
            parts.append(pad + line.text + "\n")
            line_map[count[0]] = (line.src, shift)
            if line.body is not None:
                _render_into(line.body, indent + 1, parts, line_map, count)
            continue
        physical = line.text.split("\n")
        for i, chunk in enumerate(physical):
            count[0] += 1
            if i == 0:
                prefix = "" if line.store is None else f"_cs_label = {line.store}; "
                parts.append(pad + prefix + chunk + "\n")
            elif i in line.keep or line.col is None:
                parts.append(chunk + "\n")
            else:
                parts.append(pad + chunk + "\n")
            line_map[count[0]] = (line.src + i, shift)
        if line.body is not None:
            _render_into(line.body, indent + 1, parts, line_map, count)
