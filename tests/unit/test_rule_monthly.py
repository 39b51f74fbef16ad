"""Calendar-month rules (Shanghai measures): frequent-visits, multi-hospital-days, pharmacy-spend."""

from __future__ import annotations

import pytest

from rxguard.engine import Engine
from rxguard.engine.factory import days_later, make_line
from rxguard.models import Severity

ALECTINIB = "XL01ED03A001"  # high-cost, 9600 yuan a box of 28 days
CLOPIDOGREL = "XB01AC04A001"


@pytest.fixture(scope="module")
def engine(kb):  # type: ignore[no-untyped-def]
    return Engine(kb)


def visits(kb, n: int, start: str = "2025-10-01 08:00:00", med_type: str = "11", prefix: str = "H31010"):  # type: ignore[no-untyped-def]
    """n outpatient visits (a registration fee line each), one a day from `start`, 5 hospitals."""
    return [
        make_line(
            kb,
            fixmedins_code=f"{prefix}{i % 5:02d}",
            when=days_later(start, i),
            med_type=med_type,
            mdtrt_id=f"V{start[:10]}-{med_type}-{i}",
        )
        for i in range(n)
    ]


def only(findings, rule_id):  # type: ignore[no-untyped-def]
    return [f for f in findings if f.rule_id == rule_id]


# --- frequent-visits -------------------------------------------------------------------


@pytest.mark.parametrize(("n", "flagged"), [(14, False), (15, True)])
def test_frequent_visits_threshold_is_fifteen(kb, engine, n, flagged):
    found = only(engine.evaluate_patient("P0001", visits(kb, n)), "frequent-visits")
    assert bool(found) is flagged
    if flagged:
        assert found[0].figures["visits"] == 15 and found[0].figures["period"] == "2025-10"
        assert found[0].severity is Severity.MEDIUM
        assert "2025-10" in found[0].explanation_zh and "15" in found[0].explanation_en


def test_visits_are_counted_per_calendar_month(kb, engine):
    # Given 20 visits from Oct 22: 10 in October, 10 in November
    assert not only(engine.evaluate_patient("P0001", visits(kb, 20, "2025-10-22 08:00:00")), "frequent-visits")


def test_several_lines_of_one_visit_count_once_and_pharmacy_purchases_do_not_count(kb, engine):
    # Given 14 visits with 3 lines each, and 5 pharmacy purchases
    lines = [
        make_line(kb, fixmedins_code="H3101001", when=days_later("2025-10-01 08:00:00", i), mdtrt_id=f"V{i}")
        for i in range(14)
        for _ in range(3)
    ]
    lines += [make_line(kb, fixmedins_code="P3101001", when=days_later("2025-10-01 09:00:00", i)) for i in range(5)]
    assert not only(engine.evaluate_patient("P0001", lines), "frequent-visits")


def test_registered_chronic_disease_visits_make_it_informational(kb, engine):
    # Given 10 chronic-disease (med_type 14) visits and 8 general ones: 18 in all, 8 without med_type 14
    lines = visits(kb, 10, med_type="14") + visits(kb, 8, "2025-10-12 08:00:00")
    found = only(engine.evaluate_patient("P0001", lines), "frequent-visits")
    assert found[0].severity is Severity.LOW and found[0].mitigations == ["med_type_14"]
    assert found[0].figures["chronic_disease_visits"] == 10
    # And with 15 general visits besides, it is medium again
    more = lines + visits(kb, 15, "2025-10-13 10:00:00", prefix="H32010")
    assert only(engine.evaluate_patient("P0001", more), "frequent-visits")[0].severity is Severity.MEDIUM


def test_a_late_visit_updates_the_same_monthly_finding(kb, engine):
    # Given 15 visits, then a 16th arriving later
    base = visits(kb, 15)
    late = make_line(kb, fixmedins_code="H3109999", when="2025-10-30 08:00:00", mdtrt_id="LATE")
    before = only(engine.evaluate_patient("P0001", base), "frequent-visits")[0]
    after = only(engine.evaluate_patient("P0001", [*base, late]), "frequent-visits")[0]
    # Then the id is the same (keyed by month) and the figures grew
    assert before.finding_id == after.finding_id
    assert after.figures["visits"] == 16 and late.line_id in after.evidence


# --- multi-hospital-days ---------------------------------------------------------------


def hopping_day(kb, day: str, hospitals: int):  # type: ignore[no-untyped-def]
    return [make_line(kb, fixmedins_code=f"H31020{h:02d}", when=f"{day} {8 + h:02d}:00:00") for h in range(hospitals)]


@pytest.mark.parametrize(("days", "per_day", "flagged"), [(3, 3, True), (2, 3, False), (3, 2, False), (4, 5, True)])
def test_multi_hospital_days(kb, engine, days, per_day, flagged):
    lines = [ln for d in range(days) for ln in hopping_day(kb, f"2025-10-{d + 3:02d}", per_day)]
    found = only(engine.evaluate_patient("P0001", lines), "multi-hospital-days")
    assert bool(found) is flagged
    if flagged:
        assert len(found[0].figures["days"]) == days
        assert found[0].figures["days"][0] == "2025-10-03"


def test_pharmacies_do_not_count_as_hospitals(kb, engine):
    lines = []
    for d in range(3):
        lines += hopping_day(kb, f"2025-10-{d + 3:02d}", 2)
        lines.append(make_line(kb, fixmedins_code="P3101001", when=f"2025-10-{d + 3:02d} 15:00:00"))
    assert not only(engine.evaluate_patient("P0001", lines), "multi-hospital-days")


# --- pharmacy-spend --------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "flagged"), [(8000.0, False), (8000.01, True)])
def test_pharmacy_spend_threshold(kb, engine, amount, flagged):
    # Given two pharmacy lines in October adding up to the amount
    lines = [
        make_line(kb, fixmedins_code="P3101001", when="2025-10-02 10:00:00", price=5000.0),
        make_line(kb, fixmedins_code="P3101002", when="2025-10-20 10:00:00", price=round(amount - 5000.0, 2)),
    ]
    found = only(engine.evaluate_patient("P0001", lines), "pharmacy-spend")
    assert bool(found) is flagged
    if flagged:
        assert found[0].figures["pharmacy_spend_yuan"] == 8000.01
        assert found[0].occurred_at.day == 20
        assert found[0].severity is Severity.MEDIUM


def test_hospital_spending_does_not_count(kb, engine):
    lines = [make_line(kb, fixmedins_code="H3101001", when="2025-10-02 10:00:00", price=9000.0)]
    assert not only(engine.evaluate_patient("P0001", lines), "pharmacy-spend")


@pytest.fixture(scope="module")
def specialty_engine(kb):  # type: ignore[no-untyped-def]
    """A bureau that exempts high-cost specialty drugs dispensed within the rules."""
    from rxguard.kb import KnowledgeBase

    rules = dict(kb.rules)
    rule = rules["pharmacy-spend"]
    rules["pharmacy-spend"] = rule.model_copy(
        update={"parameters": {**rule.parameters, "specialty_categories": ["high_cost"]}}
    )
    return Engine(KnowledgeBase(drugs=kb.drugs, rules=rules, phase=kb.phase))


def test_specialty_drugs_count_by_default(kb, engine):
    # Given a lung-cancer patient buying one box of alectinib (9600 yuan) with the matching diagnosis
    line = make_line(
        kb, drug_code=ALECTINIB, fixmedins_code="P3101001", when="2025-10-02 10:00:00", diagnoses=["C34.1"]
    )
    found = only(engine.evaluate_patient("P0001", [line]), "pharmacy-spend")
    # Then by default (Shanghai's rule as written) the spending is flagged
    assert found[0].severity is Severity.MEDIUM


def test_specialty_drug_within_the_rules_makes_it_informational_where_configured(kb, specialty_engine):
    line = make_line(
        kb, drug_code=ALECTINIB, fixmedins_code="P3101001", when="2025-10-02 10:00:00", diagnoses=["C34.1"]
    )
    found = only(specialty_engine.evaluate_patient("P0001", [line]), "pharmacy-spend")
    # Then the finding is low, saying specialty drugs explain the spending
    assert found[0].severity is Severity.LOW and found[0].mitigations == ["specialty_drugs"]


def test_specialty_drug_bought_against_the_rules_is_not_excused(kb, specialty_engine):
    # Given two boxes of alectinib 5 days apart at two pharmacies (early refill) with the diagnosis
    lines = [
        make_line(kb, drug_code=ALECTINIB, fixmedins_code="P3101001", when="2025-10-02 10:00:00", diagnoses=["C34.1"]),
        make_line(kb, drug_code=ALECTINIB, fixmedins_code="P3101002", when="2025-10-07 10:00:00", diagnoses=["C34.1"]),
    ]
    found = only(specialty_engine.evaluate_patient("P0001", lines), "pharmacy-spend")
    assert found[0].severity is Severity.MEDIUM and not found[0].mitigations


def test_months_are_grouped_in_calendar_order_across_a_year_end(kb):
    from rxguard.engine.monthly import by_month

    # Given lines of December and January, given out of order
    lines = [
        make_line(kb, when="2026-01-05 09:00:00"),
        make_line(kb, when="2025-12-31 23:59:59"),
        make_line(kb, when="2025-09-01 00:00:00"),
        make_line(kb, when="2026-01-01 00:00:00"),
    ]
    # Then each month has its lines, the months in calendar order
    months = by_month(lines)
    assert list(months) == ["2025-09", "2025-12", "2026-01"]
    assert months["2026-01"] == [lines[0], lines[3]]
    assert months["2025-12"] == [lines[1]]
