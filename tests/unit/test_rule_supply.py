"""The supply rules: over-quantity, early-refill, cumulative-oversupply, cross-institution-repeat.

Days of supply are at the label maximum dose: clopidogrel 75 mg x 28 tablets, max 75 mg/day
= 28 days a box; tramadol 100 mg x 10, max 400 mg/day = 2.5 days a box; zolpidem
10 mg x 10, max 10 mg/day = 10 days a box (longer than the 7-day acute limit)."""

from __future__ import annotations

import pytest

from rxguard.engine import Engine
from rxguard.engine.factory import days_later, make_line
from rxguard.models import Severity

CLOPIDOGREL = "XB01AC04A001"  # chronic, long-term eligible, 28 days a box
ENTECAVIR = "XJ05AF10A001"  # chronic, NOT long-term eligible, 14 days a box
TRAMADOL = "XN02AX02A001"  # acute, 2.5 days a box
ZOLPIDEM = "XN05CF02A001"  # acute, 10 days a box
START = "2025-09-01 09:00:00"


@pytest.fixture(scope="module")
def engine(kb):  # type: ignore[no-untyped-def]
    return Engine(kb)


def buy(kb, day: float, drug: str = CLOPIDOGREL, inst: str = "P3101001", **kw):  # type: ignore[no-untyped-def]
    return make_line(kb, drug_code=drug, fixmedins_code=inst, when=days_later(START, day), **kw)


def by_rule(findings, rule_id):  # type: ignore[no-untyped-def]
    return [f for f in findings if f.rule_id == rule_id]


# --- over-quantity ---------------------------------------------------------------------


def test_over_quantity_acute_hit_names_drug_days_and_limit(kb, engine):
    # Given 3 boxes of tramadol (7.5 days at the maximum dose), an acute drug
    line = buy(kb, 0, TRAMADOL, packs=3, prd_days=5, sin_dos_dscr="100mg")
    # When the patient is evaluated
    found = by_rule(engine.evaluate_patient("P0001", [line]), "over-quantity")
    # Then one finding with the figures and an explanation naming the drug
    assert len(found) == 1
    f = found[0]
    assert f.figures["days_supplied"] == 7.5 and f.figures["allowed_days"] == 7
    assert f.figures["limit_basis"] == "acute" and f.figures["prd_days"] == 5
    assert f.severity is Severity.MEDIUM
    assert "曲马多" in f.explanation_zh and "tramadol" in f.explanation_en and "7.5" in f.explanation_en
    assert f.evidence == [line.line_id]


@pytest.mark.parametrize(("units", "flagged"), [(28, False), (29, True)])
def test_over_quantity_acute_boundary_is_seven_days(kb, engine, units, flagged):
    # Given 28 tablets of tramadol = exactly 7.0 days, or 29 = 7.25 days
    line = buy(kb, 0, TRAMADOL, units=units)
    # When evaluated / Then only more than 7 days is flagged
    assert bool(by_rule(engine.evaluate_patient("P0001", [line]), "over-quantity")) is flagged


@pytest.mark.parametrize(("units", "flagged"), [(30, False), (31, True)])
def test_over_quantity_chronic_boundary_is_thirty_days(kb, engine, units, flagged):
    line = buy(kb, 0, CLOPIDOGREL, units=units)
    assert bool(by_rule(engine.evaluate_patient("P0001", [line]), "over-quantity")) is flagged


def test_over_quantity_high_at_twice_the_limit(kb, engine):
    # Given 84 days of clopidogrel without a long-term prescription
    found = by_rule(engine.evaluate_patient("P0001", [buy(kb, 0, packs=3)]), "over-quantity")
    # Then high severity (84 >= 2 x 30)
    assert found[0].severity is Severity.HIGH


def test_long_term_prescription_on_eligible_drug_allows_84_days(kb, engine):
    # Given 84 days of clopidogrel on a long-term prescription
    ok = buy(kb, 0, packs=3, lt_rx_flag=True)
    too_much = buy(kb, 200, packs=4, lt_rx_flag=True)  # 112 days
    found = by_rule(engine.evaluate_patient("P0001", [ok, too_much]), "over-quantity")
    # Then only the 112-day fill is flagged, against 84 days
    assert [f.evidence for f in found] == [[too_much.line_id]]
    assert found[0].figures["allowed_days"] == 84 and found[0].figures["limit_basis"] == "long_term"


def test_long_term_flag_on_non_eligible_drug_does_not_extend(kb, engine):
    # Given 3 boxes of entecavir (42 days) flagged long-term; entecavir is not eligible
    line = buy(kb, 0, ENTECAVIR, packs=3, lt_rx_flag=True, diagnoses=["B18.1"])
    found = by_rule(engine.evaluate_patient("P0001", [line]), "over-quantity")
    # Then judged against 30 days, and the explanation says the flag was ignored
    assert found[0].figures["allowed_days"] == 30
    assert "not eligible" in found[0].explanation_en


def test_discharge_medication_allows_thirty_days_and_lowers_severity_beyond(kb, engine):
    # Given an acute drug as discharge medication: 20 days pass, 60 days are flagged, lowered
    ok = buy(kb, 0, ZOLPIDEM, units=20, dscg_tkdrug_flag=True, med_type="21", inst="H3101001")
    over = buy(kb, 100, ZOLPIDEM, units=60, dscg_tkdrug_flag=True, med_type="21", inst="H3101001")
    found = by_rule(engine.evaluate_patient("P0001", [ok, over]), "over-quantity")
    assert [f.evidence for f in found] == [[over.line_id]]
    assert found[0].figures["limit_basis"] == "discharge"
    # 60 days is >= 2 x 30 -> high, lowered one step by discharge
    assert found[0].severity is Severity.MEDIUM and found[0].mitigations == ["dscg_tkdrug_flag"]


def test_one_whole_pack_is_always_allowed(kb, engine):
    # Given one box of zolpidem (10 days at the maximum dose, acute limit 7)
    one = buy(kb, 0, ZOLPIDEM, packs=1)
    two = buy(kb, 60, ZOLPIDEM, packs=2)
    found = by_rule(engine.evaluate_patient("P0001", [one, two]), "over-quantity")
    # Then the single box passes; two boxes (20 days) exceed the one-pack allowance
    assert [f.evidence for f in found] == [[two.line_id]]
    assert found[0].figures["limit_basis"] == "one_pack"


def test_lines_of_one_dispensing_are_one_fill(kb, engine):
    # Given two lines of clopidogrel in one visit (20 + 20 tablets = 40 days)
    a = buy(kb, 0, units=20, mdtrt_id="V1")
    b = buy(kb, 0.01, units=20, mdtrt_id="V1")
    findings = engine.evaluate_patient("P0001", [a, b])
    # Then one over-quantity finding over both lines and no early refill between them
    assert [f.evidence for f in by_rule(findings, "over-quantity")] == [sorted([a.line_id, b.line_id])]
    assert not by_rule(findings, "early-refill")


# --- early-refill ----------------------------------------------------------------------


def test_early_refill_hit_at_another_institution(kb, engine):
    # Given a box (28 days) then another box 10 days later at another pharmacy
    first, second = buy(kb, 0), buy(kb, 10, inst="P3101002")
    found = by_rule(engine.evaluate_patient("P0001", [first, second]), "early-refill")
    # Then early-refill with 10/28 used, evidence both fills
    assert len(found) == 1
    f = found[0]
    assert f.evidence == sorted([first.line_id, second.line_id])
    assert f.figures["elapsed_days"] == 10 and f.figures["used_fraction"] == pytest.approx(10 / 28, abs=0.01)
    assert f.figures["trigger_lines"] == [second.line_id]
    assert f.severity is Severity.MEDIUM
    assert "2025-09-01" in f.explanation_en and "2025-09-11" in f.explanation_en


def test_early_refill_very_early_is_high(kb, engine):
    found = by_rule(engine.evaluate_patient("P0001", [buy(kb, 0), buy(kb, 5)]), "early-refill")
    assert found[0].severity is Severity.HIGH


@pytest.mark.parametrize(("day", "flagged"), [(21, False), (20, True)])
def test_early_refill_boundary_is_three_quarters(kb, engine, day, flagged):
    # Given 28 days then a refill on day 21 (exactly 75%) or day 20
    findings = engine.evaluate_patient("P0001", [buy(kb, 0), buy(kb, day)])
    assert bool(by_rule(findings, "early-refill")) is flagged


def test_chain_of_slightly_early_refills_is_not_flagged(kb, engine):
    # Given ten boxes, each bought 2 days before the previous one runs out (stock grows to 18 days)
    lines = [buy(kb, 26 * i) for i in range(10)]
    findings = engine.evaluate_patient("P0001", lines)
    # Then no supply rule fires
    assert not [f for f in findings if f.rule_id in ("early-refill", "cumulative-oversupply")]


def test_leftover_stock_beyond_tolerance_makes_a_refill_early(kb, engine):
    # Given a box every 21 days: each refill is at exactly 75% of the previous box,
    # but the leftovers add up: 7, 14, 21, then 28 days on hand
    lines = [buy(kb, 21 * i) for i in range(5)]
    found = by_rule(engine.evaluate_patient("P0001", lines), "early-refill")
    # Then only the fifth box is early: 28 days on hand > 25% of 28 + 14 days of carry tolerance
    assert [f.figures["trigger_lines"] for f in found] == [[lines[4].line_id]]
    assert found[0].figures["stock_before_days"] == 28
    assert "on hand" in found[0].explanation_en


@pytest.mark.parametrize("reason", ["lost", "travel"])
def test_override_lost_or_travel_makes_early_refill_informational(kb, engine, reason):
    # Given an early refill declaring an override reason
    findings = engine.evaluate_patient("P0001", [buy(kb, 0), buy(kb, 10, override_reason=reason)])
    found = by_rule(findings, "early-refill")
    # Then it is low, and says which reason
    assert found[0].severity is Severity.LOW
    assert found[0].mitigations == [f"override_reason:{reason}"]
    assert "override reason" in found[0].explanation_en
    assert all(f.severity is Severity.LOW for f in findings)


def test_override_dose_change_is_not_flagged(kb, engine):
    findings = engine.evaluate_patient("P0001", [buy(kb, 0), buy(kb, 10, override_reason="dose_change")])
    assert not by_rule(findings, "early-refill")


def test_lost_writes_off_the_old_stock(kb, engine):
    # Given a patient who lost a full box and bought a replacement, then refills on time
    lines = [buy(kb, 0), buy(kb, 5, override_reason="lost"), buy(kb, 5 + 26)]
    findings = engine.evaluate_patient("P0001", lines)
    # Then the refill after the replacement is judged against the replacement only
    assert [f.severity for f in by_rule(findings, "early-refill")] == [Severity.LOW]


# --- cumulative-oversupply -------------------------------------------------------------


def test_cumulative_oversupply_one_episode_per_stockpile(kb, engine):
    # Given a box a week at four pharmacies for eight weeks
    lines = [buy(kb, 7 * i, inst=f"P310100{i % 4}") for i in range(8)]
    found = by_rule(engine.evaluate_patient("P0001", lines), "cumulative-oversupply")
    # Then one high finding: stock passed 60 days (30 allowed + 30 tolerance)
    assert len(found) == 1
    f = found[0]
    assert f.severity is Severity.HIGH
    assert f.figures["threshold_days"] == 60 and f.figures["stock_days"] > 60
    assert f.figures["peak_stock_days"] == 8 * 28 - 7 * 7
    assert len(f.figures["institutions"]) == 4


@pytest.mark.parametrize(("third_day", "flagged"), [(24, False), (23, True)])
def test_cumulative_oversupply_boundary(kb, engine, third_day, flagged):
    # Given boxes on days 0 and 0 (56 days), then a third: stock after = 56 - day + 28
    lines = [buy(kb, 0, mdtrt_id="A"), buy(kb, 0, inst="P3101002"), buy(kb, third_day, inst="P3101003")]
    found = by_rule(engine.evaluate_patient("P0001", lines), "cumulative-oversupply")
    # Then 60 days on hand pass, 61 are flagged
    assert bool(found) is flagged


def test_cumulative_long_term_allows_84_plus_tolerance(kb, engine):
    # Given a long-term patient: 84 days every 80 days for a year
    lines = [buy(kb, 80 * i, packs=3, lt_rx_flag=True) for i in range(5)]
    assert not engine.evaluate_patient("P0001", lines)


# --- cross-institution-repeat ----------------------------------------------------------


def test_cross_institution_repeat_hit(kb, engine):
    a, b = buy(kb, 0, inst="P3101001"), buy(kb, 15, inst="P3101002")
    found = by_rule(engine.evaluate_patient("P0001", [a, b]), "cross-institution-repeat")
    assert len(found) == 1
    assert found[0].figures["overlap_days"] == 13
    assert found[0].figures["institutions"] == ["P3101001", "P3101002"]
    assert found[0].figures["trigger_lines"] == [b.line_id]


def test_same_institution_is_not_cross_institution(kb, engine):
    findings = engine.evaluate_patient("P0001", [buy(kb, 0), buy(kb, 15)])
    assert not by_rule(findings, "cross-institution-repeat")


@pytest.mark.parametrize(("day", "flagged"), [(25, True), (26, False)])
def test_cross_institution_boundary_is_three_days(kb, engine, day, flagged):
    # Given 28 days at A; at B on day 25 the overlap is 3 days, on day 26 it is 2
    findings = engine.evaluate_patient("P0001", [buy(kb, 0), buy(kb, day, inst="P3101002")])
    assert bool(by_rule(findings, "cross-institution-repeat")) is flagged


@pytest.mark.parametrize(("day", "flagged"), [(75, True), (76, False)])
def test_cross_institution_overlap_of_a_long_fill_must_be_a_tenth_of_it(kb, engine, day, flagged):
    # Given a long-term fill of 84 days at A; at B the overlap must reach 8.4 days
    lines = [buy(kb, 0, packs=3, lt_rx_flag=True), buy(kb, day, inst="P3101002", lt_rx_flag=True)]
    assert bool(by_rule(engine.evaluate_patient("P0001", lines), "cross-institution-repeat")) is flagged


def test_alternating_pharmacies_on_time_is_not_flagged(kb, engine):
    # Given a chronic patient alternating two pharmacies, refilling when the box runs out
    lines = [buy(kb, 28 * i, inst=("P3101001", "P3101002")[i % 2]) for i in range(8)]
    assert not engine.evaluate_patient("P0001", lines)


def test_discharge_then_pharmacy_is_informational(kb, engine):
    # Given discharge medication from a hospital, then the same drug at a pharmacy 10 days later
    discharge = buy(kb, 0, inst="H3101001", med_type="21", dscg_tkdrug_flag=True)
    pharmacy = buy(kb, 10, inst="P3101002")
    found = by_rule(engine.evaluate_patient("P0001", [discharge, pharmacy]), "cross-institution-repeat")
    assert found[0].severity is Severity.LOW and "dscg_tkdrug_flag" in found[0].mitigations


def test_inpatient_ward_use_is_not_a_fill(kb, engine):
    # Given daily ward lines during a stay, then a pharmacy box
    ward = [buy(kb, d, inst="H3101001", med_type="21", units=1, mdtrt_id="STAY") for d in range(10)]
    findings = engine.evaluate_patient("P0001", [*ward, buy(kb, 5, inst="P3101002")])
    assert not findings


def test_documented_example_of_docs_rules(kb, engine):
    # Given the example table of docs/rules.md
    lines = [buy(kb, 0, inst="PA"), buy(kb, 26, inst="PA"), buy(kb, 40, inst="PB"), buy(kb, 42, inst="PC")]
    findings = engine.evaluate_patient("P0001", lines)
    got = sorted(
        (f.rule_id, f.figures.get("dispensed_on") or f.figures.get("first_exceeded_on"), f.severity.value)
        for f in findings
    )
    # Then exactly the findings the table lists
    assert got == [
        ("cross-institution-repeat", "2025-10-11", "medium"),
        ("cross-institution-repeat", "2025-10-13", "medium"),
        ("cumulative-oversupply", "2025-10-13", "high"),
        ("early-refill", "2025-10-11", "medium"),
        ("early-refill", "2025-10-13", "high"),
    ]


def test_a_visit_id_reused_for_months_does_not_merge_monthly_refills(kb, engine):
    # Given a hospital that reuses one visit id for a chronic-disease registration period
    lines = [buy(kb, 28 * i, inst="H3101001", med_type="14", mdtrt_id="REG-2025") for i in range(4)]
    # When evaluated / Then the four monthly boxes are four fills, none over quantity
    assert engine.evaluate_patient("P0001", lines) == []
