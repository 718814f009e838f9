"""The benchmark report: statistics, verdicts, the tables and the JSON (no timing here)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "report.py"
_spec = importlib.util.spec_from_file_location("contsnap_bench_report", _PATH)
assert _spec is not None and _spec.loader is not None
report = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = report
_spec.loader.exec_module(report)
Row = report.Row


def test_quantile_interpolates_and_gives_the_median() -> None:
    assert report.quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert report.quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert report.quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == 2.0
    assert report.quantile([7.0], 0.75) == 7.0
    with pytest.raises(ValueError):
        report.quantile([], 0.5)


def test_paired_ratio_pairs_samples_in_order() -> None:
    value, (low, high) = report.paired_ratio([2.0, 4.0, 30.0], [1.0, 4.0, 10.0])
    assert value == 2.0  # ratios 2, 1, 3
    assert (low, high) == (1.5, 2.5)
    with pytest.raises(ValueError):
        report.paired_ratio([1.0], [1.0, 2.0])


def test_verdict_says_by_how_much_a_target_is_missed() -> None:
    assert Row("s", "on target", 1.04, "x", 1.05).verdict() == "ok"
    assert Row("s", "exactly", 1.05, "x", 1.05).verdict() == "ok"
    missed = Row("s", "over", 1.26, "x", 1.05)
    assert missed.missed_by == pytest.approx(0.2)
    assert missed.verdict() == "MISSED by 20%"
    assert Row("s", "no target", 9.0).verdict() == ""


def test_values_are_formatted_by_unit() -> None:
    assert report.format_value(1.23456, "x") == "1.235x"
    assert report.format_value(433.0, "B") == "433 B"
    assert report.format_value(283.4, "ms/1000 lines") == "283 ms/1000 lines"
    assert report.format_value(0.3214, "us") == "0.32 us"
    assert report.format_value(math.nan, "x") == "n/a"
    assert report.format_value(2391.4, "ms") == "2,391 ms"
    assert report.format_spread((2365.7, 3180.8)) == "2366-3181"
    assert report.format_spread((0.994, 1.046)) == "0.99-1.05"
    assert report.format_spread(None) == ""


def _rows() -> list[Row]:
    return [
        Row("fresh", "loop that only yields", 1.02, "x", 1.05, (0.99, 1.04), "25 ms vs 24 ms"),
        Row("fresh", "await chain", 1.10, "x", 1.05, None, "50 ms vs 45 ms"),
        Row("snapshot", "size", 433, "B", 250, detail="state 246 B"),
    ]


def test_text_table_groups_rows_by_section_and_aligns_columns() -> None:
    lines = report.format_table(_rows()).split("\n")
    assert lines[0].split()[:2] == ["measurement", "result"]
    assert lines[2] == "[fresh]" and lines[5] == "[snapshot]"
    assert "1.020x" in lines[3] and "0.99-1.04" in lines[3] and "<= 1.050x" in lines[3]
    assert "MISSED by 5%" in lines[4]
    assert "433 B" in lines[6] and "MISSED by 73%" in lines[6]
    result_column = {line.index("x ") for line in lines[3:5]}
    assert len(result_column) == 1  # right-aligned: the ratios end in the same column


def test_markdown_table_has_one_row_per_result_and_a_header_per_section() -> None:
    lines = report.markdown_table(_rows()).split("\n")
    assert lines[0].startswith("| measurement |") and lines[1] == "|---|---|---|---|---|---|"
    assert lines[2] == "| **fresh** | | | | | |"
    assert lines[3] == (
        "| loop that only yields | 1.020x | 0.99-1.04 | ≤ 1.050x | ok | 25 ms vs 24 ms |"
    )
    assert "missed by 5%" in lines[4]
    assert all(line.count("|") == 7 for line in lines)


def test_results_json_round_trips_rows_and_keeps_series() -> None:
    text = report.results_json({"python": "3.11.7"}, _rows(), {"steps": [100, 1000]})
    document = json.loads(text)
    assert document["schema"] == report.SCHEMA
    assert document["meta"] == {"python": "3.11.7"}
    assert document["series"] == {"steps": [100, 1000]}
    assert report.rows_from_json(text) == _rows()
    with pytest.raises(ValueError):
        report.rows_from_json(json.dumps({"schema": 999, "rows": []}))


# -- docs/performance.md's generated regions ------------------------------------------------------

_ROOT = Path(__file__).resolve().parent.parent
_RESULTS = _ROOT / "benchmarks" / "results" / "full-py3.11.json"


def test_the_page_shows_the_checked_in_results() -> None:
    """docs/performance.md's tables are those of the checked-in full run, never typed by hand.

    After a full run (``python benchmarks/run.py``, which rewrites the page) or a
    change of the page's generator: ``python benchmarks/report.py``.
    """
    document = json.loads(_RESULTS.read_text(encoding="utf-8"))
    page = report.PAGE.read_text(encoding="utf-8")
    regions = report.render_regions(document, "benchmarks/results/full-py3.11.json")
    assert {"machine", "results", "snapshot", "first-call", "restored"} <= set(regions)
    assert report.replace_regions(page, regions) == page, (
        "docs/performance.md does not show benchmarks/results/full-py3.11.json: "
        "run python benchmarks/report.py"
    )


def test_regions_are_replaced_and_the_prose_is_kept() -> None:
    page = "intro\n<!-- bench:a -->\nold\nlines\n<!-- /bench:a -->\nmiddle\n<!-- bench:b -->\n<!-- /bench:b -->\nend\n"
    new = report.replace_regions(page, {"a": "| new |", "b": "B"})
    assert new == (
        "intro\n<!-- bench:a -->\n| new |\n<!-- /bench:a -->\nmiddle\n"
        "<!-- bench:b -->\nB\n<!-- /bench:b -->\nend\n"
    )
    assert report.replace_regions(new, {"a": "| new |", "b": "B"}) == new
    with pytest.raises(KeyError, match="'c'"):
        report.replace_regions(page, {"a": "", "b": "", "c": ""})  # not marked in the page
    with pytest.raises(KeyError, match="'b'"):
        report.replace_regions(page, {"a": ""})  # marked, but the results have nothing for it


def _document() -> dict[str, object]:
    small = {
        "contsnap": {
            "bytes": 400,
            "dumps": 20e-6,
            "loads": 15e-6,
            "dumps_vs_pickle": [20.0, 19.0, 21.5],
            "loads_vs_pickle": [12.0, 11.0, 13.0],
            "dumps_vs_dispatch-py": [0.8, 0.75, 0.85],
            "loads_vs_dispatch-py": [1.25, 1.2, 1.3],
            "first_dumps": 40e-6,
            "first_loads": 30e-6,
            "first_dumps_vs_warm": [2.0, 1.9, 2.1],
            "first_loads_vs_warm": [2.0, 1.8, 2.2],
            "first_frozen_dumps": 24e-6,
            "first_frozen_dumps_vs_warm": [1.2, 1.1, 1.3],
        },
        "dispatch-py": {"bytes": 500, "dumps": 25e-6, "loads": 12e-6},
        "pickle": {"bytes": 100, "dumps": 1e-6, "loads": 1.25e-6},
    }
    chain = {
        "contsnap": {"bytes": 1200, "dumps": 2e-3, "loads": 1.5e-3},
        "pickle": {"skipped": "no plain-pickle equivalent of a chain of frames"},
    }
    return {
        "schema": report.SCHEMA,
        "meta": {
            "mode": "full",
            "sections": ["snapshot", "restored"],
            "seconds": 60.0,
            "date": "2026-12-06 20:00:00 +0000",
            "contsnap": "0.1.0",
            "commit": "abc",
            "contsnap_modified": True,
            "implementation": "CPython",
            "python": "3.11.7",
            "platform": "Linux-6-x86_64",
            "cpu_count": 2,
            "loadavg_start": [1.5, 1, 1],
            "loadavg_end": [2.25, 1, 1],
            "peers": {
                "versions": {"dispatch-py": "0.8.0"},
                "skipped": {"pyteleport": "pip could not install it"},
            },
        },
        "rows": [],
        "series": {
            "snapshot": {
                "cases": [
                    {"case": "small", "label": "10 small locals", "sides": small},
                    {"case": "chain", "label": "a chain", "sides": chain},
                ]
            },
            "restored": {
                "forms": [
                    {
                        "form": "for, only yields",
                        "sides": {
                            "contsnap": {"ratio": 1.03, "spread": [1.01, 1.05], "target": 1.05},
                            "dispatch-py": {"skipped": "no async"},
                        },
                    }
                ]
            },
        },
    }


def _ascii(text: str) -> str:
    """The docs' multiplication sign and range dash as x and -, for readable expectations."""
    return text.replace("\u00d7", "x").replace("\u2013", "-")


def test_the_snapshot_table_puts_every_side_of_a_case_on_one_line() -> None:
    lines = _ascii(report.snapshot_table(_document())).split("\n")
    assert lines[0] == (
        "| case | contsnap dumps / loads | dispatch-py dumps / loads | pickle of the same state "
        "| contsnap / dispatch-py |"
    )
    assert lines[2] == (
        "| 10 small locals | 20 µs / 15 µs (20.0x / 12.0x pickle), 400 B | 25 µs / 12 µs, 500 B "
        "| 1 µs / 1.25 µs, 100 B | 0.80x (0.75-0.85) / 1.25x (1.20-1.30) |"
    )
    # the chain: no pickle, no dispatch-py figures
    assert lines[3] == "| a chain | 2 ms / 1.5 ms, 1,200 B | — not measured | — | — |"


def test_first_call_and_restored_tables() -> None:
    first = _ascii(report.first_call_table(_document())).split("\n")
    assert first[2] == (
        "| contsnap | 40 µs / 20 µs | 2.00x (1.90-2.10) | 1.20x (1.10-1.30) "
        "| 30 µs / 15 µs | 2.00x (1.80-2.20) | — |"  # no frozen-heap loads figure here
    )
    assert len(first) == 3  # dispatch-py has no first-call figures here
    restored = _ascii(report.restored_table(_document())).split("\n")
    assert restored[0] == (
        "| loop form | target (contsnap) | contsnap restored / native | dispatch-py restored / native |"
    )
    assert restored[2] == "| for, only yields | ≤ 1.05x | 1.03x (1.01-1.05) | — no async |"


def test_the_machine_text_names_the_load_commit_and_skipped_peers() -> None:
    text = report.machine_text(_document(), "r.json")  # type: ignore[arg-type]
    assert "commit abc with contsnap/ modified" in text
    assert "load average 1.5 at the start, 2.2 at the end" in text
    assert "Peers: dispatch-py 0.8.0." in text
    assert "pyteleport was skipped: pip could not install it" in text


# -- the measuring worker (its protocol, not its timings) ----------------------------------------


def _peers_module() -> object:
    spec = importlib.util.spec_from_file_location(
        "contsnap_bench_peers", _ROOT / "benchmarks" / "peers.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_worker_prepares_checks_and_samples_each_side() -> None:
    peers: Any = _peers_module()
    worker = peers.Worker("contsnap", sys.executable, ["contsnap", "pickle", "native", "nosuch"])
    try:
        assert worker.hello["versions"]["contsnap"].endswith(f"({_ROOT / 'contsnap'})")
        assert "nosuch" in worker.hello["failed"]
        small = worker.ask({"op": "prepare", "impl": "contsnap", "case": "small"})
        assert small["check"] == "2" and small["bytes"] > 0  # the restored copy went on right
        plain = worker.ask({"op": "prepare", "impl": "pickle", "case": "small"})
        assert plain["bytes"] > 0
        ask = {"op": "sample", "impl": "contsnap", "case": "small", "target": 0.001}
        calibrated = worker.ask({**ask, "action": "dumps", "loops": 0})
        assert calibrated["loops"] >= 1 and calibrated["seconds"] > 0
        first = worker.ask({**ask, "action": "first-loads", "loops": 0})
        assert first["loops"] == 1
        form = "loop:for, only yields"
        for impl in ("contsnap", "native"):
            loop = worker.ask({"op": "prepare", "impl": impl, "case": form})
            assert loop["check"] == "1"
            run = {"op": "sample", "impl": impl, "case": form, "target": 0.001}
            assert worker.ask({**run, "action": "run", "loops": 0})["loops"] == 1
        chain = worker.ask({"op": "prepare", "impl": "pickle", "case": "chain"})
        assert "unsupported" in chain
        broken = worker.ask({"op": "sample", "impl": "contsnap", "case": "nosuch"})
        assert "error" in broken
    finally:
        worker.close()
    assert worker.process.returncode == 0
