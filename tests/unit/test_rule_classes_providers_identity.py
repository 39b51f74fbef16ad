"""therapeutic-duplication, multi-provider and identity-misuse at and around their thresholds."""

from __future__ import annotations

from rxguard.engine import Engine
from rxguard.engine.factory import days_later, make_line
from rxguard.models import Severity

ATORVASTATIN = "XC10AA05A001"  # 28 tablets, 7 days a pack at the label maximum (C10AA05)
ROSUVASTATIN = "XC10AA07A001"  # 28 tablets, 14 days a pack (C10AA07)
CLOPIDOGREL = "XB01AC04A001"  # 28 days a pack (B01AC04)
T0 = "2025-09-01 09:00:00"


def line(kb, drug, day, inst="P3101001", psn="P1", **kw):  # type: ignore[no-untyped-def]
    return make_line(kb, drug_code=drug, psn_no=psn, fixmedins_code=inst, when=days_later(T0, day), **kw)


def of_rule(findings, rule):  # type: ignore[no-untyped-def]
    return [f for f in findings if f.rule_id == rule]


# --- therapeutic-duplication -----------------------------------------------------------


def test_two_statins_overlapping_by_more_than_7_days_are_a_duplication(kb):
    # Given atorvastatin for 28 days (4 packs) on day 0 and rosuvastatin (2 packs, 28 days) on day 10
    lines = [line(kb, ATORVASTATIN, 0, packs=4), line(kb, ROSUVASTATIN, 10, inst="H3101001", packs=2)]
    (found,) = of_rule(Engine(kb).evaluate_patient("P1", lines), "therapeutic-duplication")
    # Then: 18 days of overlap (> 7), medium, the later fill blamed
    assert found.severity is Severity.MEDIUM
    assert found.figures["overlap_days"] == 18 and found.figures["atc_class"] == "C10AA"
    assert found.figures["trigger_lines"] == [lines[1].line_id]
    assert sorted(found.evidence) == sorted(x.line_id for x in lines)


def test_overlap_at_the_threshold_and_switches_are_not_flagged(kb):
    engine = Engine(kb)
    # 28 days on day 0; the new statin on day 21: 7 days of overlap, exactly the threshold
    at_limit = [line(kb, ATORVASTATIN, 0, packs=4), line(kb, ROSUVASTATIN, 21, packs=2)]
    assert of_rule(engine.evaluate_patient("P1", at_limit), "therapeutic-duplication") == []
    # day 20: 8 days > 7, and 20/28 = 71% used (< 75%): flagged
    above = [line(kb, ATORVASTATIN, 0, packs=4), line(kb, ROSUVASTATIN, 20, packs=2)]
    assert len(of_rule(engine.evaluate_patient("P1", above), "therapeutic-duplication")) == 1
    # a long old supply mostly used (84 days, switch on day 70: 83% used, 14 days overlap): a switch
    switch = [line(kb, ATORVASTATIN, 0, packs=12, lt_rx_flag=True), line(kb, ROSUVASTATIN, 70, packs=2)]
    assert of_rule(engine.evaluate_patient("P1", switch), "therapeutic-duplication") == []
    # a documented change of therapy (dose_change) on the new fill: a switch
    documented = [line(kb, ATORVASTATIN, 0, packs=4), line(kb, ROSUVASTATIN, 5, packs=2, override_reason="dose_change")]
    assert of_rule(engine.evaluate_patient("P1", documented), "therapeutic-duplication") == []
    # the same ingredient twice is not a duplication (that is early-refill's business)
    same = [line(kb, ATORVASTATIN, 0, packs=4), line(kb, ATORVASTATIN, 5, packs=4)]
    assert of_rule(engine.evaluate_patient("P1", same), "therapeutic-duplication") == []


# --- multi-provider --------------------------------------------------------------------


def shopping(kb, n, gap=26.0, doctors=True):  # type: ignore[no-untyped-def]
    return [
        line(kb, CLOPIDOGREL, i * gap, inst=f"H310100{i + 1}", bilg_dr_codg=f"D{i + 1}" if doctors else None)
        for i in range(n)
    ]


def test_four_institutions_and_prescribers_in_90_days_fire(kb):
    engine = Engine(kb)
    assert of_rule(engine.evaluate_patient("P1", shopping(kb, 3)), "multi-provider") == []
    lines = shopping(kb, 4)  # days 0, 26, 52, 78
    (found,) = of_rule(engine.evaluate_patient("P1", lines), "multi-provider")
    assert found.severity is Severity.MEDIUM
    assert (found.figures["institutions"], found.figures["prescribers"]) == (4, 4)
    assert found.figures["trigger_lines"] == [lines[3].line_id]
    # the same four spread over more than 90 days (gap 31: days 0..93) do not
    assert of_rule(engine.evaluate_patient("P1", shopping(kb, 4, gap=31)), "multi-provider") == []
    # and the other supply rules stay quiet on this rhythm
    assert {f.rule_id for f in engine.evaluate_patient("P1", lines)} == {"multi-provider"}


def test_pharmacies_count_as_their_own_prescriber_and_twice_the_thresholds_is_high(kb):
    engine = Engine(kb)
    lines = [line(kb, CLOPIDOGREL, i * 11, inst=f"P310100{i + 1}") for i in range(8)]  # 8 pharmacies in 77 days
    found = of_rule(engine.evaluate_patient("P1", lines), "multi-provider")
    assert len(found) == 1 and found[0].severity is Severity.HIGH
    assert found[0].figures["prescribers"] == 8
    # one institution with four doctors is not multiple providers
    one = [line(kb, CLOPIDOGREL, i * 26, inst="H3101001", bilg_dr_codg=f"D{i}") for i in range(4)]
    assert of_rule(engine.evaluate_patient("P1", one), "multi-provider") == []


def test_a_chronic_patient_at_two_pharmacies_and_a_hospital_is_not_flagged(kb):
    lines = [line(kb, CLOPIDOGREL, i * 28, inst=("H3101001", "P3101001", "P3101002")[i % 3]) for i in range(6)]
    assert Engine(kb).evaluate_patient("P1", lines) == []


# --- identity-misuse -------------------------------------------------------------------


def at(kb, when, inst, admdvs, psn="P1"):  # type: ignore[no-untyped-def]
    return make_line(kb, drug_code=None, psn_no=psn, fixmedins_code=inst, when=when, admdvs=admdvs)


def test_two_provinces_within_4_hours_is_identity_misuse(kb):
    engine = Engine(kb)
    shanghai = at(kb, "2025-09-01 09:00:00", "P3101001", "310101")
    hangzhou = at(kb, "2025-09-01 12:59:00", "P3301001", "330102")
    (found,) = of_rule(engine.evaluate_patient("P1", [shanghai, hangzhou]), "identity-misuse")
    assert found.severity is Severity.HIGH
    assert found.figures["regions_differ_in"] == "province" and found.figures["hours_apart"] == 4.0
    assert found.figures["trigger_lines"] == [hangzhou.line_id]
    # exactly 4 hours apart (or the next day) is a possible journey
    later = at(kb, "2025-09-01 13:00:00", "P3301001", "330102")
    assert of_rule(engine.evaluate_patient("P1", [shanghai, later]), "identity-misuse") == []
    next_day = at(kb, "2025-09-02 09:00:00", "P3301001", "330102")
    assert of_rule(engine.evaluate_patient("P1", [shanghai, next_day]), "identity-misuse") == []


def test_two_cities_of_one_province_within_an_hour(kb):
    engine = Engine(kb)
    hangzhou = at(kb, "2025-09-01 09:00:00", "P3301001", "330102")
    ningbo = at(kb, "2025-09-01 09:50:00", "P3302001", "330203")
    assert len(of_rule(engine.evaluate_patient("P1", [hangzhou, ningbo]), "identity-misuse")) == 1
    ningbo_late = at(kb, "2025-09-01 10:00:00", "P3302001", "330203")
    assert of_rule(engine.evaluate_patient("P1", [hangzhou, ningbo_late]), "identity-misuse") == []
    # two districts of one city (same prefecture) within minutes: fine
    district = at(kb, "2025-09-01 09:10:00", "P3301002", "330106")
    assert of_rule(engine.evaluate_patient("P1", [hangzhou, district]), "identity-misuse") == []
