"""The benchmark report: statistics, verdicts, the tables and the JSON (no timing here)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

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
