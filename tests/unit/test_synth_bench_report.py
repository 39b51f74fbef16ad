"""The `make bench` aggregator: sections that fail or have not landed degrade to
"not available: <why>", and the report names every figure that misses its target."""

from __future__ import annotations

from typing import Any

import pytest

import bench.__main__ as report


def _machine() -> dict[str, Any]:
    return {"cpu": "test cpu", "cores": 2, "memory_gb": 4, "os": "Linux", "python": "3.12", "date_utc": "2026-11-23"}


def test_a_section_whose_module_is_missing_or_fails_degrades(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given one section whose module has not landed and one that raises
    def missing(quick: bool) -> dict[str, Any]:
        raise ModuleNotFoundError("No module named 'bench.nothing'", name="bench.nothing")

    def broken(quick: bool) -> dict[str, Any]:
        raise RuntimeError("moto exploded")

    monkeypatch.setitem(report.RUNNERS, "engine", missing)
    monkeypatch.setitem(report.RUNNERS, "api", broken)
    # When they run
    engine, api = report.run_section("engine", True), report.run_section("api", True)
    # Then each says why, and the report renders both as not available
    assert engine["available"] is False and engine["why"] == "module bench.nothing has not landed"
    assert api["available"] is False and "moto exploded" in api["why"]
    sections = {name: {"available": False, "why": "skipped"} for name in report.SECTIONS}
    sections.update(engine=engine, api=api)
    text = report.render_markdown({"machine": _machine(), "quick": True, "sections": sections})
    assert "not available: module bench.nothing has not landed" in text
    assert "not available: RuntimeError: moto exploded" in text


def _cost(total: float, floor: float) -> dict[str, Any]:
    return {
        "available": True,
        "largest": 20000,
        "trace_codes_per_line": 1.5,
        "prices_read_on": "2026-11-23",
        "per_1000_lines": dict.fromkeys(
            (
                "dynamodb_wru",
                "dynamodb_items_written",
                "dynamodb_write_calls",
                "dynamodb_rru",
                "dynamodb_read_calls",
                "lambda_gb_seconds",
                "sfn_transitions",
                "sns_publishes",
                "s3_requests",
            ),
            1.0,
        ),
        "components_usd_per_million_lines": {"dynamodb_writes": total * 0.7, "s3_put": total * 0.3},
        "total_usd_per_million_lines": total,
        "floor_at_measured_codes_usd": floor,
        "floor_usd_per_million_lines": floor,
        "ratio_to_floor": round(total / floor, 2),
        "target_multiple": 1.25,
        "within_target": total <= 1.25 * floor,
        "points": [
            {"lines": 20000, "status": "SUCCEEDED", "usd_per_million": total, "lines_per_s": 50, "wall_seconds": 400}
        ],
        "prices": {
            "dynamodb_wru": {"usd": 6.25e-7, "unit": "WRU", "source": "https://aws.amazon.com/dynamodb/pricing/"}
        },
        "chart": "docs/bench-chart.png",
    }


def test_shortfalls_name_the_cost_ratio_and_slow_cold_starts() -> None:
    # Given a cost 3x the floor and one function importing in 900 ms
    sections: dict[str, Any] = {name: {"available": False, "why": "skipped"} for name in report.SECTIONS}
    sections["cost"] = _cost(total=4.8, floor=1.6)

    def cold(cpu: float) -> dict[str, Any]:
        return {
            "import_cpu_ms_median": cpu,
            "import_cpu_ms_min": cpu - 10,
            "import_cpu_ms_max": cpu + 50,
            "import_wall_ms_median": cpu * 2,
            "process_cpu_ms_median": cpu + 20,
            "within_target": cpu <= report.COLD_START_TARGET_MS,
        }

    sections["coldstart"] = {
        "available": True,
        "target_ms": report.COLD_START_TARGET_MS,
        "functions": {"screen": cold(900.0), "api": cold(120.0)},
    }
    data = {"machine": _machine(), "quick": False, "sections": sections}
    # When the report renders
    text = report.render_markdown(data)
    # Then the shortfalls say which figures miss and by how much, and the met ones are not listed
    assert "AWS cost is 3.0x the floor (target 1.25x)" in text
    assert "dynamodb_writes $3.36/M" in text
    assert "cold start of functions/screen: 900.0 ms of CPU importing app.py from the built layer (target 250)" in text
    assert "functions/api:" not in text
    assert data["shortfalls"] and len(data["shortfalls"]) == 2


def test_a_cost_within_target_is_not_a_shortfall() -> None:
    # Given a cost at 1.1x the floor
    sections: dict[str, Any] = {name: {"available": False, "why": "skipped"} for name in report.SECTIONS}
    sections["cost"] = _cost(total=1.76, floor=1.6)
    data = {"machine": _machine(), "quick": False, "sections": sections}
    # When the report renders
    text = report.render_markdown(data)
    # Then the cost is reported within target and not listed as a shortfall
    assert "within the 1.25x target" in text
    assert not data["shortfalls"]


def test_merging_reports_takes_each_section_once_and_combines_workflow_sizes() -> None:
    # Given two earlier reports: one with the 10k workflow run and the engine, one with the 100k run
    first = {
        "machine": {"date_utc": "2026-11-23 20:00"},
        "sections": {
            "engine": {"available": True, "engine_lines_per_s": 1},
            "workflow": {"available": True, "runs": {"10000": {"wall_seconds": 1}}},
            "api": {"available": False, "why": "skipped"},
        },
    }
    second = {
        "machine": {"date_utc": "2026-11-23 21:00"},
        "sections": {
            "engine": {"available": True, "engine_lines_per_s": 2},
            "workflow": {"available": True, "runs": {"100000": {"wall_seconds": 9}}},
        },
    }
    # When merged
    merged = report.merge_reports([first, second])["sections"]
    # Then the first report's sections win, workflow sizes are combined, unavailable ones are dropped
    assert merged["engine"]["engine_lines_per_s"] == 1 and merged["engine"]["measured_on"] == "2026-11-23 20:00"
    assert set(merged["workflow"]["runs"]) == {"10000", "100000"}
    assert "api" not in merged


def _storage_run(lines: int, months: int, requests: float, units: float, total: float) -> dict[str, Any]:
    components = {"dynamodb_writes_tables": total * 0.4, "dynamodb_storage_400d": total * 0.2}
    components["dynamodb_pitr_400d"] = total - sum(components.values())
    return {
        "lines": lines,
        "history_months": months,
        "dynamodb_requests_per_1k_lines": requests,
        "write_units_per_line": units,
        "cost": {"components_usd_per_million_lines": components, "total_usd_per_million_lines": total},
    }


def test_the_storage_targets_are_judged_on_the_20k_month_after_one_month() -> None:
    # Given a small batch that misses every target and the 20k-line month that meets them
    sections: dict[str, Any] = {name: {"available": False, "why": "skipped"} for name in report.SECTIONS}
    sections["storage"] = {
        "available": True,
        "runs": [_storage_run(2000, 1, 130.0, 0.9, 1.9), _storage_run(20000, 1, 95.0, 0.74, 1.41)],
        "chart": "docs/bench-storage-cost.png",
    }
    data = {"machine": _machine(), "quick": False, "sections": sections}
    # When the report renders
    text = report.render_markdown(data)
    # Then both columns are shown and nothing is a shortfall; a headline over target is one
    assert "| **USD per million lines, total** | **1.9000** | **1.4100** |" in text
    assert not data["shortfalls"]
    sections["storage"]["runs"][1] = _storage_run(20000, 1, 120.0, 0.85, 1.6)
    text = report.render_markdown(data)
    assert data["shortfalls"] == [
        "120.0 DynamoDB requests per 1,000 lines (target 100)",
        "0.85 write units a line (target 0.8)",
        "$1.60 per million lines with storage and PITR (target $1.50)",
    ]
