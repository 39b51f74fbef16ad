"""The engine as a whole: finding fields, determinism, region overrides, inactive rules,
scenes, and screening over a repository (recording, idempotency, late batches, checks)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from rxguard.engine import RULE_IDS, Engine, finding_scope
from rxguard.engine.factory import days_later, make_line
from rxguard.kb import KnowledgeBase, RegionOverride
from rxguard.models import Scene, Severity
from rxguard.repository import InMemoryRepository
from rxguard.screening import check_lines, screen_lines

CLOPIDOGREL = "XB01AC04A001"
TRAMADOL = "XN02AX02A001"


def with_rule(kb: KnowledgeBase, rule_id: str, **update) -> KnowledgeBase:  # type: ignore[no-untyped-def]
    rules = dict(kb.rules)
    rules[rule_id] = rules[rule_id].model_copy(update=update)
    return KnowledgeBase(drugs=kb.drugs, rules=rules, phase=kb.phase)


def buy(kb, day, inst="P3101001", psn="P0001", **kw):  # type: ignore[no-untyped-def]
    return make_line(
        kb, drug_code=CLOPIDOGREL, psn_no=psn, fixmedins_code=inst, when=days_later("2025-09-01 09:00:00", day), **kw
    )


def test_rule_base_defines_exactly_the_ten_rules(kb):
    assert set(kb.rules) == set(RULE_IDS)


def test_findings_are_deterministic_and_complete(kb):
    # Given an early refill
    lines = [buy(kb, 0), buy(kb, 8, inst="P3101002")]
    # When two engines evaluate the lines in opposite orders
    a = Engine(kb).evaluate_patient("P0001", lines)
    b = Engine(kb).evaluate_patient("P0001", lines[::-1])
    # Then the findings are equal, with every field a reviewer needs
    assert a == b and a
    for f in a:
        assert f.rule_version == kb.rule(f.rule_id).version
        assert f.evidence == sorted(f.evidence)
        assert f.psn_no == "P0001" and f.subject_type == "patient" and f.fixmedins_code
        assert f.explanation_zh and f.explanation_en and "clopidogrel" in f.explanation_en
        assert len(f.finding_id) == 32
        json.dumps(f.model_dump(mode="json"))  # figures are plain JSON


def test_region_override_changes_thresholds_and_severity(kb):
    # Given Hebei (130000) allowing 14 acute days at high severity
    override = RegionOverride(parameters={"acute_max_days": 14}, severity=Severity.HIGH)
    regional = with_rule(kb, "over-quantity", region_overrides={"130000": override})
    engine = Engine(regional)
    tramadol = dict(drug_code=TRAMADOL, packs=4)  # 10 days
    shanghai = make_line(kb, admdvs="310000", **tramadol)
    hebei = make_line(kb, admdvs="130100", psn_no="P0002", **tramadol)  # a city of Hebei
    big_hebei = make_line(kb, admdvs="130100", psn_no="P0003", drug_code=TRAMADOL, packs=8)
    # When evaluated / Then Shanghai keeps 7 days, Hebei allows 10 days and flags 20 at high
    assert [f.rule_id for f in engine.evaluate_patient("P0001", [shanghai])] == ["over-quantity"]
    assert engine.evaluate_patient("P0002", [hebei]) == []
    found = engine.evaluate_patient("P0003", [big_hebei])
    assert found[0].severity is Severity.HIGH and found[0].figures["allowed_days"] == 14


def test_disabled_or_not_yet_effective_rules_produce_nothing(kb):
    line = make_line(kb, drug_code=TRAMADOL, packs=4, when="2025-09-01 10:00:00")
    disabled = with_rule(kb, "over-quantity", enabled=False)
    future = with_rule(kb, "over-quantity", effective_from=date(2026, 1, 1))
    expired = with_rule(kb, "over-quantity", effective_to=date(2025, 8, 31))
    off_in_region = with_rule(kb, "over-quantity", region_overrides={"310000": RegionOverride(enabled=False)})
    assert Engine(kb).evaluate_patient("P0001", [line])
    for variant in (disabled, future, expired):
        assert Engine(variant).evaluate_patient("P0001", [line]) == []
    assert Engine(off_in_region).evaluate_patient("P0001", [line.model_copy(update={"admdvs": "310000"})]) == []
    # one engine keeps each region's days apart: off in 310000, on in another region
    engine = Engine(off_in_region)
    assert engine.evaluate_patient("P0001", [line.model_copy(update={"admdvs": "310000"})]) == []
    assert engine.evaluate_patient("P0002", [line.model_copy(update={"admdvs": "610800", "psn_no": "P0002"})])


def test_monthly_rule_ignores_lines_before_it_takes_effect(kb):
    # frequent-visits takes effect on 2025-08-15: 10 visits before and 10 after in August
    lines = [
        make_line(kb, fixmedins_code="H3101001", when=f"2025-08-{d:02d} 09:00:00", mdtrt_id=f"V{d}")
        for d in range(1, 21)
    ]
    assert not [f for f in Engine(kb).evaluate_patient("P0001", lines) if f.rule_id == "frequent-visits"]


def test_scenes_select_rules(kb):
    # frequent-visits is not a pre-dispensing rule
    lines = [
        make_line(kb, fixmedins_code="H3101001", when=f"2025-10-{d:02d} 09:00:00", mdtrt_id=f"V{d}")
        for d in range(1, 17)
    ]
    assert Engine(kb, {Scene.POST}).evaluate_patient("P0001", lines)
    assert Engine(kb, {Scene.PRE}).evaluate_patient("P0001", lines) == []


# --- screening -----------------------------------------------------------------------------


def test_screen_lines_records_and_is_idempotent(kb):
    repo = InMemoryRepository()
    lines = [buy(kb, 0), buy(kb, 8, inst="P3101002", trace_codes=["1" * 20])]
    first = screen_lines(lines, repo, kb)
    assert len(first.recorded) == 2 and first.changes.new
    again = screen_lines(lines, repo, kb)
    assert again.recorded == [] and len(again.duplicates) == 2
    assert again.changes.new == [] and again.changes.updated == [] and again.changes.superseded == []


def test_late_batch_of_older_purchases_is_caught_and_stale_findings_superseded(kb):
    # Given a batch with boxes on days 40 and 50 (early refill of the day-40 box) ...
    repo = InMemoryRepository()
    recent = [buy(kb, 40), buy(kb, 50)]
    screen_lines(recent, repo, kb)
    before = {f.finding_id: f for f in repo.all_current_findings()}
    assert [f.figures["previous_dispensed_on"] for f in before.values()] == ["2025-10-11"]  # day 40
    # ... when a late batch brings an older purchase at another pharmacy on day 35
    late = screen_lines([buy(kb, 35, inst="P3101009")], repo, kb)
    # Then the day-40 box is now an early refill of it, at another institution
    current = repo.all_current_findings()
    assert {(f.rule_id, f.figures.get("dispensed_on")) for f in current} >= {
        ("early-refill", "2025-10-11"),
        ("cross-institution-repeat", "2025-10-11"),
    }
    assert late.changes.new
    # And the result equals a single batch of everything
    one_batch = InMemoryRepository()
    screen_lines(sorted(repo.lines.values(), key=lambda ln: ln.line_id), one_batch, kb)
    assert {f.finding_id for f in one_batch.all_current_findings()} == {f.finding_id for f in current}


def test_stale_finding_is_superseded_when_a_line_changes_the_evidence(kb):
    # Given two boxes 10 days apart at pharmacies A and B: early-refill, cross-institution
    repo = InMemoryRepository()
    screen_lines([buy(kb, 0), buy(kb, 10, inst="P3101002")], repo, kb)
    old = {f.finding_id for f in repo.all_current_findings() if f.rule_id == "early-refill"}
    # When a late line shows a third box between them (day 5 at A)
    outcome = screen_lines([buy(kb, 5)], repo, kb)
    # Then the early refill of day 10 is now judged against day 5: the old finding is superseded
    assert old <= {f.finding_id for f in outcome.changes.superseded}


def test_check_lines_judges_a_proposal_against_history_without_recording(kb):
    # Given a recorded box at pharmacy A
    repo = InMemoryRepository()
    screen_lines([buy(kb, 0)], repo, kb)
    recorded = dict(repo.lines)
    reads = repo.reads
    # When pharmacy B proposes a box 5 days later, and another patient proposes one
    proposal = buy(kb, 5, inst="P3101002")
    other = buy(kb, 5, inst="P3101002", psn="P0002")
    result = check_lines([proposal, other], repo, kb)
    # Then the proposal gets early-refill and cross-institution-repeat; nothing is recorded
    assert sorted(f.rule_id for f in result[proposal.line_id]) == ["cross-institution-repeat", "early-refill"]
    assert result[other.line_id] == []
    assert repo.lines == recorded
    assert all(proposal.line_id not in f.evidence for f in repo.all_current_findings())
    assert repo.reads - reads <= 2


def test_check_lines_sees_trace_codes_sold_before(kb):
    repo = InMemoryRepository()
    screen_lines([buy(kb, 0, trace_codes=["8" * 20])], repo, kb)
    proposal = buy(kb, 40, inst="P3101002", psn="P0002", trace_codes=["8" * 20])
    result = check_lines([proposal], repo, kb)
    assert [f.rule_id for f in result[proposal.line_id]] == ["trace-code-reuse"]


def test_finding_scopes(kb):
    repo = InMemoryRepository()
    screen_lines([buy(kb, 0, trace_codes=["7" * 20]), buy(kb, 3, psn="P0002", trace_codes=["7" * 20])], repo, kb)
    scopes = {finding_scope(f) for f in repo.all_current_findings()}
    assert "trace:" + "7" * 20 in scopes
    assert all(repo.scope_of[f.finding_id] == finding_scope(f) for f in repo.all_current_findings())


def test_screen_lines_refuses_the_pre_scene(kb):
    with pytest.raises(ValueError, match="check_lines"):
        screen_lines([buy(kb, 0)], InMemoryRepository(), kb, scene=Scene.PRE)


def test_a_parameter_of_the_wrong_kind_fails_naming_the_rule_and_field(kb):
    from rxguard.kb import KnowledgeBaseError

    rule = kb.rule("early-refill")
    bad = with_rule(kb, "early-refill", parameters={**rule.parameters, "used_fraction": "three quarters"})
    with pytest.raises(KnowledgeBaseError, match=r"early-refill.*parameters\.used_fraction"):
        Engine(bad)
    regional = with_rule(
        kb, "pharmacy-spend", region_overrides={"310000": RegionOverride(parameters={"max_monthly_yuan": "8k"})}
    )
    with pytest.raises(KnowledgeBaseError, match=r"region_overrides\.310000\.parameters\.max_monthly_yuan"):
        Engine(regional)
