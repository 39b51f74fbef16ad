"""override-frequency: more than 2 override reasons for one ingredient in 180 days."""

from __future__ import annotations

from rxguard.engine import Engine
from rxguard.engine.factory import days_later, make_line
from rxguard.models import Severity
from tests.unit.test_engine import with_rule

CLOPIDOGREL = "XB01AC04A001"  # 28 days a pack at the label maximum
T0 = "2025-09-01 09:00:00"


def fill(kb, day, reason=None, inst="P3101001", packs=1):  # type: ignore[no-untyped-def]
    return make_line(
        kb, drug_code=CLOPIDOGREL, psn_no="P1", fixmedins_code=inst, when=days_later(T0, day), packs=packs,
        override_reason=reason,
    )  # fmt: skip


def of_rule(findings, rule="override-frequency"):  # type: ignore[no-untyped-def]
    return [f for f in findings if f.rule_id == rule]


def test_two_overrides_in_the_window_are_allowed(kb):
    # Given monthly fills, two of them with a documented override, Then no override-frequency finding
    lines = [fill(kb, 30 * i, "travel" if i in (1, 3) else None) for i in range(6)]
    assert of_rule(Engine(kb).evaluate_patient("P1", lines)) == []


def test_the_third_override_in_180_days_fires_medium_and_the_fourth_high(kb):
    engine = Engine(kb)
    three = [fill(kb, 30 * i, "lost" if i in (0, 2, 4) else None) for i in range(6)]  # days 0, 60, 120
    (found,) = of_rule(engine.evaluate_patient("P1", three))
    assert found.severity is Severity.MEDIUM
    assert found.figures["overrides_in_window"] == 3 and found.figures["max_overrides"] == 2
    assert found.figures["trigger_lines"] == [three[4].line_id]
    assert len(found.evidence) == 3 and "180" in found.explanation_zh
    four = [fill(kb, 30 * i, "lost" if i in (0, 1, 2, 4) else None) for i in range(6)]
    (found,) = of_rule(engine.evaluate_patient("P1", four))
    assert found.severity is Severity.HIGH and found.figures["overrides_in_window"] == 4


def test_overrides_further_apart_than_the_window_do_not_add_up(kb):
    # days 0, 100, 200, 300: at most two in any 180 days
    lines = [fill(kb, 100 * i, "travel") for i in range(4)]
    assert of_rule(Engine(kb).evaluate_patient("P1", lines)) == []


def test_overrides_beyond_the_limit_no_longer_lower_supply_findings(kb):
    # Given the pattern: 8 fills of 2 packs, 3 days apart, at two pharmacies, each "travel"
    lines = [fill(kb, 3 * i, "travel", inst=("P3101001", "P3101002")[i % 2], packs=2) for i in range(8)]
    found = Engine(kb).evaluate_patient("P1", lines)
    # Then override-frequency is high, and the fills beyond the limit are flagged at medium or high
    (freq,) = of_rule(found)
    assert freq.severity is Severity.HIGH and freq.figures["overrides_in_window"] == 8
    early = of_rule(found, "early-refill")
    honoured = {lines[0].line_id, lines[1].line_id}
    for f in early:
        blamed = set(f.figures["trigger_lines"])
        assert (f.severity is Severity.LOW) == bool(blamed & honoured), f.figures
    assert any(f.severity is Severity.HIGH for f in early)
    assert any("超过规定期限内允许的次数" in f.explanation_zh for f in early)
    # while with the rule switched off every override is honoured: all informational
    off = Engine(with_rule(kb, "override-frequency", enabled=False)).evaluate_patient("P1", lines)
    assert of_rule(off) == [] and {f.severity for f in off} == {Severity.LOW}


def test_one_documented_override_stays_informational(kb):
    # a lost supply replaced after 10 days: the early refill is informational, no frequency finding
    lines = [fill(kb, 0), fill(kb, 10, "lost"), fill(kb, 40)]
    found = Engine(kb).evaluate_patient("P1", lines)
    assert of_rule(found) == []
    assert all(f.severity is Severity.LOW for f in found)
