"""`rxguard watch` and `rxguard backtest` (docs/planning.md).

rxguard watch --state DIR [--since YYYY-MM] [--json FILE] [--chart FILE] [--top N]
rxguard backtest --state DIR --rules NEW.yaml [--since YYYY-MM] [--json FILE] [--chart FILE]
rxguard backtest --state DIR --phases [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rxguard.config import Settings
from rxguard.kb import KnowledgeBase, KnowledgeBaseError, get_knowledge_base
from rxguard.local.state import STATE_FILE, State, StateError
from rxguard.planning.backtest import backtest, phase_plan
from rxguard.planning.history import overlay_rules
from rxguard.planning.watch import drug_watch, format_watch

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _month(value: str) -> str:
    if not _MONTH.fullmatch(value):
        raise argparse.ArgumentTypeError(f"expected YYYY-MM, got {value!r}")
    return value


def _state_dir(value: str) -> Path:
    path = Path(value)
    if not (path / STATE_FILE).is_file():
        raise argparse.ArgumentTypeError(f"{path}: no rxguard state here ({STATE_FILE} missing); run rxguard run first")
    return path


def _kb() -> KnowledgeBase:
    settings = Settings.from_env()
    return get_knowledge_base(settings.rules_dir, settings.phase)


def _write_json(path: Path | None, data: Any) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def watch_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rxguard watch", description="rank drugs for the monitored list")
    parser.add_argument("--state", type=_state_dir, required=True, help="the local state directory")
    parser.add_argument("--since", type=_month, help="first month of the window (default: 12 months back)")
    parser.add_argument("--json", type=Path, help="write the report as JSON")
    parser.add_argument("--chart", type=Path, help="write a PNG chart of the top drugs")
    parser.add_argument("--top", type=int, default=20, help="rows to print (the JSON holds every drug)")
    args = parser.parse_args(argv)
    try:
        kb = _kb()
        started = time.process_time()
        with State.open(args.state) as state:
            report = drug_watch(state, kb, since=args.since)
        report["cpu_seconds"] = round(time.process_time() - started, 3)
    except (KnowledgeBaseError, StateError) as exc:
        print(f"rxguard watch: {exc}", file=sys.stderr)
        return 1
    print(format_watch(report, args.top))
    _write_json(args.json, report)
    if args.chart:
        from rxguard.planning.charts import watch_chart

        watch_chart(report, args.chart)
    return 0


def backtest_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rxguard backtest", description="try a rule change on the stored history")
    parser.add_argument("--state", type=_state_dir, required=True, help="the local state directory")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--rules", type=Path, help="a rule base (whole, or only the rules it changes)")
    what.add_argument("--phases", action="store_true", help="what each phase's monitored list would have flagged")
    parser.add_argument("--since", type=_month, help="compare findings that occurred since this month")
    parser.add_argument("--json", type=Path, help="write the report as JSON")
    parser.add_argument("--chart", type=Path, help="write a PNG chart of the changes per rule")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    args = parser.parse_args(argv)
    try:
        kb = _kb()
        started = time.perf_counter()
        if args.phases:
            plan = phase_plan(args.state, kb, since=args.since, workers=args.workers)
            _print_phases(plan)
            _write_json(args.json, plan)
            return 0
        new_kb = overlay_rules(kb, args.rules)
        result = backtest(args.state, new_kb, since=args.since, workers=args.workers)
    except (KnowledgeBaseError, StateError) as exc:
        print(f"rxguard backtest: {exc}", file=sys.stderr)
        return 1
    report = result.as_json()
    report["seconds"] = round(time.perf_counter() - started, 2)
    _print_backtest(report)
    _write_json(args.json, report)
    if args.chart:
        from rxguard.planning.charts import backtest_chart

        backtest_chart(report, args.chart)
    return 0


def _print_backtest(report: dict[str, Any]) -> None:
    print(
        f"Backtest over {report['lines']} stored lines ({report['seconds']} s): "
        f"{report['findings_before']} findings today, {report['findings_after']} with the new rules"
    )
    head = ("rule", "added", "removed", "sev.changed", "patients", "conf.lost", "dism.avoided", "precision")
    rows = [head]
    for rule_id, r in report["rules"].items():
        precision = f"{_pct(r['precision_before'])} -> {_pct(r['precision_after'])}"
        rows.append(
            (
                rule_id,
                str(r["added"]),
                str(r["removed"]),
                str(r["severity_changed"]),
                str(r["patients"]),
                str(r["confirmed_lost"]),
                str(r["dismissed_avoided"]),
                precision,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))


def _print_phases(plan: dict[str, Any]) -> None:
    print("Phase planning: what each monitored list would have flagged over the stored history")
    for phase, p in plan["phases"].items():
        print(
            f"  {phase:8} {p['monitored_drugs']:4d} drugs  {p['findings']:6d} findings  {p['patients']:5d} patients  "
            f"{p['spending_flagged']:,.0f} yuan flagged"
        )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
