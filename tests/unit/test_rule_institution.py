"""institution-outlier from monthly aggregates (the function the workflow shares)."""

from __future__ import annotations

from statistics import median

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rxguard.engine import ActivityAggregate, Engine, activity_from_lines, flagged_line_ids
from rxguard.engine.factory import make_line
from rxguard.engine.rules.institution_outlier import median_without
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
    # Then the finding shows the unit's rate, the peer rate, its volume and the limit it crossed
    assert (f.figures["rate"], f.figures["peer_rate"], f.figures["volume"]) == (0.6, 0.03, 80)
    assert 0.03 < f.figures["control_limit"] < 0.6
    assert f.figures["signals"] == ["flagged_share_month", "flagged_share_90d"] and f.severity is Severity.MEDIUM
    assert len(f.evidence) == 48
    assert "P3109999" in f.explanation_zh and "60%" in f.explanation_en and "Spiegelhalter" in f.explanation_en


def test_share_like_peers_is_not_flagged(kb):
    # Given a whole peer group at 40% (say, a region with much abuse): nobody stands out
    aggregates = [unit(f"P31000{i:02d}", 100, 40) for i in range(6)]
    assert institution_findings(aggregates, kb) == []


def test_peers_with_every_line_flagged_judge_nobody(kb):
    # Given a peer group where every monitored line is flagged (tiny data, one abusive clinic)
    aggregates = [unit(f"P31000{i:02d}", 10, 10) for i in range(3)]
    # Then nobody stands out, and nothing divides by zero
    assert institution_findings(aggregates, kb) == []


def test_a_small_unit_with_most_lines_flagged_is_an_outlier_without_a_volume_floor(kb):
    # Given peers at 3% and a small pharmacy with 8 of its 10 monitored lines flagged
    found = institution_findings([*peers(), unit("P3109999", 10, 8)], kb)
    assert [f.fixmedins_code for f in found] == ["P3109999"]
    assert found[0].figures["volume"] == 10 and found[0].figures["rate"] == 0.8
    # but 4 of 4 is too few flagged lines to judge (min_flagged 5)
    assert institution_findings([*peers(), unit("P3109999", 4, 4)], kb) == []


def test_a_large_unit_slightly_above_the_peer_rate_is_not(kb):
    # 1,000 lines at 4% against peers at 3%: under 2x the peer rate, and near its narrow limit
    assert institution_findings([*peers(), unit("P3109999", 1000, 40)], kb) == []
    # 1,000 lines at 8%: above its limit and 2x the peers, but a share too small to matter (min_rate 20%)
    assert institution_findings([*peers(), unit("P3109999", 1000, 80)], kb) == []
    # 1,000 lines at 25%: an outlier
    assert [f.fixmedins_code for f in institution_findings([*peers(), unit("P3109999", 1000, 250)], kb)] == ["P3109999"]


def test_the_control_limit_narrows_with_volume(kb):
    from rxguard.engine.rules.institution_outlier import InstitutionOutlierParameters, PeerSet, Window, judge

    p = InstitutionOutlierParameters()
    group = [Window("institution", f"P{i}", PHARMACY, "310101", 100, tuple(range(3))) for i in range(6)]
    limits = []
    for n in (10, 100, 1000):
        me = Window("institution", "ME", PHARMACY, "310101", n, ())
        _, limit, _ = judge(me, PeerSet.of([*group, me], p), p)
        limits.append(limit)
    assert limits[0] > limits[1] > limits[2] > 0.03


def test_the_rolling_window_catches_a_unit_too_small_for_a_month(kb):
    # Given peers at 3% for three months, and a pharmacy with 4 lines a month, all flagged
    months = ("2025-08", "2025-09", "2025-10")
    aggregates = [a for m in months for a in peers(period=m)]
    aggregates += [unit("P3109999", 4, 4, m) for m in months]
    for a in aggregates:
        if a.code == "P3109999":
            object.__setattr__(a, "flagged_lines", tuple(f"{a.code}/{a.period}/{i}" for i in range(4)))
    found = institution_findings(aggregates, kb)
    # Then no month alone (4 flagged) is enough, but the windows ending in September (8 of 8) and
    # October (12 of 12) are
    assert sorted((f.figures["period"], tuple(f.figures["signals"])) for f in found) == [
        ("2025-09", ("flagged_share_90d",)),
        ("2025-10", ("flagged_share_90d",)),
    ]
    october = next(f for f in found if f.figures["period"] == "2025-10")
    assert october.figures["window"] == "90d" and october.figures["volume"] == 12
    assert len(october.evidence) == 12


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


@given(st.dictionaries(st.sampled_from([f"U{i}" for i in range(12)]), st.sampled_from([0.5, 1.0, 1.25, 2.0, 4.0])))
def test_the_peers_median_growth_leaves_out_the_unit_itself_exactly(growth: dict[str, float]) -> None:
    # Given each unit's growth (ties included) and a unit without one
    ordered = sorted(growth.values())
    # Then each unit's peers' median is the median of every other unit's growth, as statistics gives it
    for code in [*growth, "no-growth"]:
        peers = [g for other, g in growth.items() if other != code]
        assert median_without(ordered, growth.get(code)) == (median(peers) if peers else 1.0)
