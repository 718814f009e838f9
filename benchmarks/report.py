"""Statistics and formatting of the benchmark results: pure functions, no timing, no plots.

``run.py`` measures and calls these; ``tests/test_bench_report.py`` tests them.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = 1


@dataclass
class Row:
    """One line of the results table.

    ``value`` is a ratio (unit ``"x"``: contsnap / baseline, best / best, measured
    in the same process, interleaved) or an absolute figure (``"B"``,
    ``"ms/1000 lines"``...). ``spread`` is the 25th-75th percentile of the
    per-pair ratios, when paired: how noisy the machine was.
    """

    section: str
    name: str
    value: float
    unit: str = "x"
    target: float | None = None
    spread: tuple[float, float] | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def missed_by(self) -> float | None:
        """How far over its target the value is (0.25: 25% over), or None when on target."""
        if self.target is None or self.value <= self.target:
            return None
        return self.value / self.target - 1

    def verdict(self) -> str:
        if self.target is None:
            return ""
        over = self.missed_by
        return "ok" if over is None else f"MISSED by {over:.0%}"


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) by linear interpolation; the median for q = 0.5."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def paired_ratio(
    numerators: Sequence[float], denominators: Sequence[float]
) -> tuple[float, tuple[float, float]]:
    """Median of the per-pair ratios, and their 25th-75th percentile.

    Pair i was measured back to back, so load that lasts longer than a pair slows
    both of its sides alike; the spread of the ratios shows how much shorter
    bursts, which hit one side only, disturbed the comparison.
    """
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError("need the same, non-zero number of values on both sides")
    ratios = [n / d for n, d in zip(numerators, denominators)]
    return statistics.median(ratios), (quantile(ratios, 0.25), quantile(ratios, 0.75))


def format_value(value: float, unit: str) -> str:
    if value != value:  # NaN: not measured
        return "n/a"
    if unit == "x":
        return f"{value:.3f}x"
    if unit == "B":
        return f"{value:.0f} B"
    if unit == "%":
        return f"{value:+.1f}%"
    if unit == "us":
        return f"{value:.2f} us"
    return f"{value:.3g} {unit}"


def format_target(row: Row) -> str:
    if row.target is None:
        return ""
    return f"<= {format_value(row.target, row.unit)}"


def format_table(rows: Iterable[Row]) -> str:
    """A plain-text table, one block per section, for the terminal."""
    rows = list(rows)
    head = ("measurement", "result", "25-75%", "target", "verdict", "absolute (this machine)")
    lines: list[tuple[str, ...]] = []
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines.append((f"[{section}]", "", "", "", "", ""))
        spread = f"{row.spread[0]:.2f}-{row.spread[1]:.2f}" if row.spread else ""
        lines.append(
            (
                "  " + row.name,
                format_value(row.value, row.unit),
                spread,
                format_target(row),
                row.verdict(),
                row.detail,
            )
        )
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    out = []
    for cells in [head, tuple("-" * w for w in widths), *lines]:
        text = "  ".join(
            c.ljust(w) if i in (0, 4, 5) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        )
        out.append(text.rstrip())
    return "\n".join(out)


def markdown_table(rows: Iterable[Row]) -> str:
    """The same table in Markdown, for docs/performance.md."""
    out = [
        "| measurement | result | 25-75% | target | verdict | absolute (this machine) |",
        "|---|---|---|---|---|---|",
    ]
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            out.append(f"| **{section}** | | | | | |")
        spread = f"{row.spread[0]:.2f}-{row.spread[1]:.2f}" if row.spread else ""
        target = format_target(row).replace("<=", "≤")
        verdict = row.verdict().replace("MISSED", "missed")
        out.append(
            f"| {row.name} | {format_value(row.value, row.unit)} | {spread} | {target} "
            f"| {verdict} | {row.detail} |"
        )
    return "\n".join(out)


def results_json(meta: dict[str, Any], rows: Iterable[Row], series: dict[str, Any]) -> str:
    """The JSON written to benchmarks/results/: metadata, every row, and the plotted series."""
    document = {
        "schema": SCHEMA,
        "meta": meta,
        "rows": [asdict(row) for row in rows],
        "series": series,
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def rows_from_json(text: str) -> list[Row]:
    """The rows of a results file (to re-print or re-plot a run without measuring again)."""
    document = json.loads(text)
    if document.get("schema") != SCHEMA:
        raise ValueError(f"unknown results schema {document.get('schema')!r}")
    rows = []
    for item in document["rows"]:
        spread = item.pop("spread")
        rows.append(Row(**item, spread=tuple(spread) if spread else None))
    return rows
