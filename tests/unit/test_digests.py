"""Daily and weekly digests per region and per institution: windows, grouping, ids; the
local `rxguard digest` (the DigestFunction on moto: tests/integration/test_digest_function.py)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

from rxguard.alerts import AlertSettings
from rxguard.alerts.digests import periodic_digests, previous, window
from rxguard.alerts.messages import readable
from rxguard.kb import KnowledgeBase
from rxguard.models import Finding, Severity
from rxguard.scope import Scope
from rxguard_tools.digest_cli import main as digest_main


def finding(n: int, day: date, institution: str, admdvs: str, severity: Severity = Severity.MEDIUM) -> Finding:
    line = f"{institution}/{n}"
    return Finding(
        finding_id=Finding.make_id("over-quantity", Scope.patient(f"SYN{n}"), [line]),
        rule_id="over-quantity",
        rule_version=1,
        severity=severity,
        subject_type="patient",
        psn_no=f"3101011990010100{n:02d}",
        fixmedins_code=institution,
        admdvs=admdvs,
        occurred_at=datetime(day.year, day.month, day.day, 9, 0),
        evidence=[line],
        explanation_zh=f"3101011990010100{n:02d}单次供药20天，超过7天限量。",
        explanation_en="over",
    )


FINDINGS = [
    finding(1, date(2026, 3, 4), "H3101040001", "310104", Severity.HIGH),  # Wednesday
    finding(2, date(2026, 3, 4), "P3101050002", "310105"),
    finding(3, date(2026, 3, 5), "H3101040001", "310104"),
    finding(4, date(2026, 3, 8), "H1301010001", "130101"),  # Sunday, same ISO week
    finding(5, date(2026, 3, 9), "H3101040001", "310104"),  # Monday: next week
]


def test_windows_are_the_day_and_the_iso_week() -> None:
    assert window("daily", date(2026, 3, 4))[2:] == ("daily/2026-03-04", "2026年3月4日")
    start, end, period, label = window("weekly", date(2026, 3, 4))
    assert (start, end, period) == (date(2026, 3, 2), date(2026, 3, 8), "weekly/2026-W10")
    assert label.startswith("2026年3月2日至3月8日")
    assert previous("daily", date(2026, 3, 5)) == date(2026, 3, 4)
    assert window("weekly", previous("weekly", date(2026, 3, 9)))[2] == "weekly/2026-W10"


def test_daily_and_weekly_digests_per_region_and_institution(kb: KnowledgeBase) -> None:
    settings = AlertSettings()
    daily = periodic_digests(FINDINGS, cadence="daily", on=date(2026, 3, 4), kb=kb, settings=settings)
    assert sorted(m.message_id for m in daily) == [
        "digest/daily/2026-03-04/institution/H3101040001",
        "digest/daily/2026-03-04/institution/P3101050002",
        "digest/daily/2026-03-04/region/3101",
    ]
    region = next(m for m in daily if m.body["scope"] == "region")
    assert region.body["total"] == 2 and region.body["by_institution"] == {"H3101040001": 1, "P3101050002": 1}
    assert region.attributes["region"] == "3101" and region.attributes["severity"] == "high"
    weekly = periodic_digests(
        FINDINGS, cadence="weekly", on=date(2026, 3, 6), kb=kb, settings=settings, by=("region",), region_digits=2
    )
    assert {m.body["region"]: m.body["total"] for m in weekly} == {"31": 3, "13": 1}
    subject, email, sms = readable(next(m for m in weekly if m.body["region"] == "31"))
    assert "疑点汇总：共3项（高风险1项）" in subject and "第10周" in subject
    assert "310101199001010001" not in email + sms and "单次超量开药：3项" in email
    # superseded findings are left out
    gone = [f.model_copy(update={"status": "superseded"}) for f in FINDINGS]
    assert periodic_digests(gone, cadence="weekly", on=date(2026, 3, 6), kb=kb, settings=settings) == []


def test_rxguard_digest_writes_each_digest_and_its_chinese_text(tmp_path: Path) -> None:
    findings = tmp_path / "findings.jsonl"
    findings.write_text("".join(f.model_dump_json() + "\n" for f in FINDINGS), encoding="utf-8")
    out = tmp_path / "digests"
    assert (
        digest_main(["--findings", str(findings), "--cadence", "weekly", "--on", "2026-03-04", "--out", str(out)]) == 0
    )
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert "weekly/2026-W10/region/3101.json" in written and "weekly/2026-W10/institution/H1301010001.json" in written
    body = json.loads((out / "weekly/2026-W10/region/3101.json").read_text(encoding="utf-8"))["body"]
    assert body["total"] == 3
    text = (out / "weekly/2026-W10/region/3101.txt").read_text(encoding="utf-8")
    assert text.startswith("【医保智能监管】") and "310101199001010001" not in text
