"""institution-outlier from monthly aggregates (the function the workflow shares)."""

from __future__ import annotations

import pytest

from rxguard.engine import ActivityAggregate, Engine, activity_from_lines, flagged_line_ids
from rxguard.engine.factory import make_line
from rxguard.models import InstitutionKind, Severity
from rxguard.screening import institution_findings

PHARMACY = InstitutionKind.PHARMACY


@pytest.fixture(scope="module")
def engine(kb):  # type: ignore[no-untyped-def]
    return Engine(kb)


def unit(code: str, lines: int, flagged: int, period: str = "2025-10", kind=PHARMACY, subject="institution"):  # type: ignore[no-untyped-def]
    return ActivityAggregate(
        subject_type=subject,
        code=code,
        period=period,
        kind=kind,
        monitored_lines=lines,
        flagged_lines=tuple(f"{code}/{i}" for i in range(flagged)),
        fixmedins_code=code if subject == "institution" else "P3100000",
    )


def peers(n: int = 6, lines: int = 100, flagged: int = 3, period: str = "2025-10"):  # type: ignore[no-untyped-def]
    return [unit(f"P31000{i:02d}", lines, flagged, period) for i in range(n)]


def test_pill_mill_far_above_peers_is_flagged(kb):
    # Given six ordinary pharmacies (3% flagged) and one with 60% of its monitored lines flagged
    aggregates = [*peers(), unit("P3109999", 80, 48)]
    found = institution_findings(aggregates, kb)
    assert [(f.fixmedins_code, f.subject_type) for f in found] == [("P3109999", "institution")]
    f = found[0]
    assert f.figures["flagged_share"] == 0.6 and f.figures["peer_median_share"] == 0.03
    assert f.figures["signals"] == ["flagged_share"] and f.severity is Severity.MEDIUM
    assert len(f.evidence) == 48
    assert "P3109999" in f.explanation_zh and "60%" in f.explanation_en


def test_share_like_peers_is_not_flagged(kb):
    # Given a whole peer group at 40% (say, a region with much abuse): nobody stands out
    aggregates = [unit(f"P31000{i:02d}", 100, 40) for i in range(6)]
    assert institution_findings(aggregates, kb) == []


@pytest.mark.parametrize(("lines", "flagged_count", "hit"), [(30, 9, True), (29, 9, False), (30, 8, False)])
def test_min_lines_and_min_share_boundaries(kb, lines, flagged_count, hit):
    # Given peers at 0% and a unit with 30% (9/30) or fewer lines / a smaller share
    aggregates = [*peers(flagged=0), unit("P3109999", lines, flagged_count)]
    assert bool(institution_findings(aggregates, kb)) is hit


def test_volume_growth_far_above_peers_is_flagged(kb):
    # Given peers steady at 100 lines, and one pharmacy growing from 40 to 150 lines
    aggregates = [*peers(period="2025-09"), *peers(), unit("P3109999", 40, 0, "2025-09"), unit("P3109999", 150, 0)]
    found = institution_findings(aggregates, kb)
    assert [f.figures["signals"] for f in found] == [["volume_growth"]]
    assert found[0].figures["growth"] == 3.8


def test_growth_shared_by_all_peers_is_not_flagged(kb):
    # Given data starting late in September: every pharmacy "grows" fourfold in October
    aggregates = [
        *peers(lines=25, period="2025-09"),
        *peers(),
        unit("P3109999", 25, 0, "2025-09"),
        unit("P3109999", 100, 0),
    ]
    assert institution_findings(aggregates, kb) == []


def test_prescriber_outlier_from_lines(kb, engine):
    # Given 5 doctors writing 40 monitored lines each, one of whom has 20 lines flagged
    lines = [
        make_line(
            kb,
            drug_code="XB01AC04A001",
            psn_no=f"P{d}{i}",
            fixmedins_code="H3101001",
            when=f"2025-10-{1 + i % 28:02d} 10:00:00",
            bilg_dr_codg=f"D{d}",
        )
        for d in range(5)
        for i in range(40)
    ]
    flagged = {ln.line_id for ln in lines if ln.bilg_dr_codg == "D0"}
    flagged = set(sorted(flagged)[:20])
    found = [f for f in engine.evaluate_institutions(lines, flagged) if f.subject_type == "prescriber"]
    assert [(f.bilg_dr_codg, f.fixmedins_code) for f in found] == [("D0", "H3101001")]
    # And with nothing flagged, nobody is an outlier
    assert engine.evaluate_institutions(lines, set()) == []


def test_aggregates_count_monitored_lines_only(kb):
    lines = [make_line(kb, drug_code="XB01AC04A001"), make_line(kb)]  # a monitored drug and a fee
    aggregates = activity_from_lines(lines, {lines[0].line_id}, kb)
    institution = next(a for a in aggregates if a.subject_type == "institution")
    assert institution.monitored_lines == 1 and institution.flagged_lines == (lines[0].line_id,)


def test_flagged_lines_are_the_trigger_lines_of_medium_and_high_dispensing_findings(kb, engine):
    # Given an early refill (the second fill is blamed, not the first) and a lost-medication refill (low)
    first = make_line(kb, drug_code="XB01AC04A001", when="2025-10-01 10:00:00")
    early = make_line(kb, drug_code="XB01AC04A001", when="2025-10-05 10:00:00", fixmedins_code="P3101002")
    findings = engine.evaluate_patient("P0001", [first, early])
    assert flagged_line_ids(findings) == {early.line_id}
    lost = make_line(kb, drug_code="XB01AC04A001", when="2025-10-05 10:00:00", override_reason="lost")
    assert flagged_line_ids(engine.evaluate_patient("P0001", [first, lost])) == set()
