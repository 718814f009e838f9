"""Statistics and formatting of the benchmark results, and docs/performance.md's generated tables.

Pure functions of the results, no timing, no plots, the standard library only.
``run.py`` measures and calls these; ``tests/test_bench_report.py`` tests them,
and checks that the page's generated regions are those of the checked-in results.

``python benchmarks/report.py [RESULTS.json]`` writes the page's generated regions
from a results file (default: the full run of this Python); ``--check`` only says
whether the page is up to date. A region of the page is the text between
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; everything else is prose
that this script never touches.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "docs" / "performance.md"

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
    if value >= 1000:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def format_spread(spread: tuple[float, float] | None) -> str:
    """The 25-75% spread of a row: two decimals, or none for figures of 100 and more."""
    if not spread:
        return ""
    digits = 0 if max(spread) >= 100 else 2
    return f"{spread[0]:.{digits}f}-{spread[1]:.{digits}f}"


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
        spread = format_spread(row.spread)
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
        spread = format_spread(row.spread)
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
    return rows_of(json.loads(text))


def rows_of(document: dict[str, Any]) -> list[Row]:
    if document.get("schema") != SCHEMA:
        raise ValueError(f"unknown results schema {document.get('schema')!r}")
    rows = []
    for item in document["rows"]:
        item = dict(item)
        spread = item.pop("spread")
        rows.append(Row(**item, spread=tuple(spread) if spread else None))
    return rows


def format_seconds(seconds: float) -> str:
    """A duration, readable (ASCII, for the terminal and the rows' details)."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} us"


# -- the generated regions of docs/performance.md ------------------------------------------------

PEER_ORDER = ("contsnap", "dispatch-py", "pyteleport")
TIMES, DASH = "\u00d7", "\u2013"  # the docs' multiplication sign and range dash


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _ratio(value: float) -> str:
    return _number(value) + TIMES


def _with_spread(entry: Sequence[float]) -> str:
    """A ratio with its 25-75% spread: ``1.02x (0.99-1.04)``, with the docs' signs."""
    if len(entry) == 3:
        return f"{_ratio(entry[0])} ({_number(entry[1])}{DASH}{_number(entry[2])})"
    return _ratio(entry[0])


def _size(n: int) -> str:
    return f"{n:,} B"


def machine_text(document: dict[str, Any], results: str) -> str:
    meta = document["meta"]
    start, end = meta.get("loadavg_start"), meta.get("loadavg_end")
    load = (
        f"load average {start[0]:.1f} at the start, {end[0]:.1f} at the end"
        if start and end
        else ""
    )
    commit = meta.get("commit") or "unknown"
    if meta.get("contsnap_modified"):
        commit += " with contsnap/ modified"
    versions = meta.get("peers", {}).get("versions", {})
    skipped = meta.get("peers", {}).get("skipped", {})
    peer_text = ", ".join(f"{name} {versions[name]}" for name in PEER_ORDER[1:] if name in versions)
    sections = ", ".join(meta["sections"])
    lines = [
        f"Measured {meta['date']} by a {meta['mode']} run ({sections}; "
        f"{meta['seconds']:.0f} s), contsnap {meta['contsnap']} at commit {commit}, "
        f"{meta['implementation']} {meta['python']}, {meta['platform'].split('-')[0]}, "
        f"{meta['cpu_count']} CPUs shared with other work; {load}. "
        f"Peers: {peer_text or 'none'}. The results file is `{results}`.",
    ]
    for name, reason in skipped.items():
        lines.append(f"{name} was skipped: {reason}")
    return "\n\n".join(lines)


def snapshot_table(document: dict[str, Any]) -> str:
    """The side-by-side table of issue 19: each implementation's dumps / loads, ratios, sizes."""
    data = document["series"]["snapshot"]
    cases = data["cases"]
    impls = [n for n in PEER_ORDER if any(n in c["sides"] for c in cases)]
    head = ["case", *(f"{n} dumps / loads" for n in impls), "pickle of the same state"]
    others = [n for n in impls if n != "contsnap"]
    head += [f"contsnap / {n}" for n in others]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in cases:
        sides = case["sides"]
        cells = [case["label"].replace("->", "→")]
        for name in impls:
            side = sides.get(name, {})
            if "dumps" not in side:
                cells.append("— " + side.get("skipped", "not measured"))
                continue
            text = f"{_time(side['dumps'])} / {_time(side['loads'])}"
            if "dumps_vs_pickle" in side:
                text += (
                    f" ({_ratio(side['dumps_vs_pickle'][0])} / "
                    f"{_ratio(side['loads_vs_pickle'][0])} pickle)"
                )
            cells.append(f"{text}, {_size(side['bytes'])}")
        plain = sides.get("pickle", {})
        cells.append(
            f"{_time(plain['dumps'])} / {_time(plain['loads'])}, {_size(plain['bytes'])}"
            if "dumps" in plain
            else "—"
        )
        contsnap = sides.get("contsnap", {})
        for name in others:
            key = f"_vs_{name}"
            if "dumps" + key in contsnap:
                dumps, loads = contsnap["dumps" + key], contsnap["loads" + key]
                cells.append(f"{_with_spread(dumps)} / {_with_spread(loads)}")
            else:
                cells.append("—")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def first_call_table(document: dict[str, Any]) -> str:
    """First call after ``gc.collect()`` against the warm figure, small state."""
    cases = document["series"]["snapshot"]["cases"]
    sides = next(c["sides"] for c in cases if c["case"] == "small")
    out = [
        "| implementation | dumps: first call / warm | first / warm | heap frozen: first / warm "
        "| loads: first call / warm | first / warm | heap frozen: first / warm |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in (*PEER_ORDER, "pickle"):
        side = sides.get(name, {})
        if "first_dumps" not in side:
            continue
        cells = [name]
        for action in ("dumps", "loads"):
            cells.append(f"{_time(side['first_' + action])} / {_time(side[action])}")
            cells.append(_with_spread(side[f"first_{action}_vs_warm"]))
            frozen = side.get(f"first_frozen_{action}_vs_warm")
            cells.append(_with_spread(frozen) if frozen else "—")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def restored_table(document: dict[str, Any]) -> str:
    """Each loop form: every implementation's restored generator over a native one."""
    forms = document["series"]["restored"]["forms"]
    impls = [n for n in PEER_ORDER if any(n in f["sides"] for f in forms)]
    head = ["loop form", "target (contsnap)", *(f"{n} restored / native" for n in impls)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for item in forms:
        form, entry = item["form"], item["sides"]
        target = entry.get("contsnap", {}).get("target")
        cells = [form, f"≤ {target:.2f}{TIMES}" if target else ""]
        for name in impls:
            side = entry.get(name, {})
            if "ratio" in side:
                cells.append(_with_spread([side["ratio"], *side["spread"]]))
            else:
                cells.append("— " + side.get("skipped", "not measured"))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def render_regions(document: dict[str, Any], results: str) -> dict[str, str]:
    """The text of each generated region of the page, from a results document."""
    regions = {
        "machine": machine_text(document, results),
        "results": markdown_table(rows_of(document)),
    }
    series = document["series"]
    if "snapshot" in series:
        regions["snapshot"] = snapshot_table(document)
        if any(c["case"] == "small" for c in series["snapshot"]["cases"]):
            regions["first-call"] = first_call_table(document)
    if "restored" in series:
        regions["restored"] = restored_table(document)
    return regions


_REGION = re.compile(r"(<!-- bench:([\w-]+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)


def replace_regions(page: str, regions: dict[str, str]) -> str:
    """The page with each marked region's text replaced; every region must be marked once."""
    found: list[str] = []

    def swap(match: re.Match[str]) -> str:
        name = match.group(2)
        found.append(name)
        if name not in regions:
            raise KeyError(f"the page marks a region {name!r} the results have nothing for")
        return f"{match.group(1)}{regions[name]}\n{match.group(4)}"

    text = _REGION.sub(swap, page)
    missing = set(regions) - set(found)
    if missing or len(found) != len(set(found)):
        raise KeyError(f"regions not marked exactly once in the page: {sorted(missing) or found}")
    return text


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def write_docs(document: dict[str, Any], results: Path, page: Path = PAGE) -> Path:
    text = page.read_text(encoding="utf-8")
    page.write_text(replace_regions(text, render_regions(document, _relative(results))), "utf-8")
    return page


def default_results() -> Path:
    return HERE / "results" / f"full-py{sys.version_info[0]}.{sys.version_info[1]}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="docs/performance.md's tables from a results file")
    parser.add_argument("results", nargs="?", type=Path, default=default_results())
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    document = json.loads(args.results.read_text(encoding="utf-8"))
    page = PAGE.read_text(encoding="utf-8")
    wanted = replace_regions(page, render_regions(document, _relative(args.results)))
    if args.check:
        if wanted != page:
            print(f"{PAGE} is out of date: python benchmarks/report.py {args.results}")
            return 1
        return 0
    PAGE.write_text(wanted, encoding="utf-8")
    print("wrote", PAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
