"""The patient risk score (engine/risk.py) and its place in the findings API."""

from __future__ import annotations

from datetime import datetime, timedelta

from rxguard.engine.risk import patient_risk, rule_weight
from rxguard.models import Finding, Severity
from tests.unit.test_api import get, seed, services

T0 = datetime(2026, 3, 1, 9, 0)


def finding(rule: str, severity: Severity, days_ago: float = 0, status: str = "new", n: int = 0) -> Finding:
    return Finding(
        finding_id=f"{rule}-{severity.value}-{n}-{days_ago}",
        rule_id=rule,
        rule_version=1,
        severity=severity,
        subject_type="patient",
        psn_no="P1",
        occurred_at=T0 - timedelta(days=days_ago),
        evidence=["P1/1"],
        explanation_zh="",
        explanation_en="",
        status=status,  # type: ignore[arg-type]
    )


def test_no_findings_is_zero_and_one_strong_high_finding_is_39():
    assert patient_risk([], as_of=T0).score == 0
    one = patient_risk([finding("trace-code-reuse", Severity.HIGH)], as_of=T0)
    assert (one.score, one.level) == (39, "medium") and one.points == 1.0
    assert one.parts[0].rule_id == "trace-code-reuse" and one.top[0].points == 1.0


def test_severity_rule_recency_and_review_order_the_score():
    high = patient_risk([finding("early-refill", Severity.HIGH)], as_of=T0).score
    medium = patient_risk([finding("early-refill", Severity.MEDIUM)], as_of=T0).score
    low = patient_risk([finding("early-refill", Severity.LOW)], as_of=T0).score
    assert high > medium > low > 0
    # a stronger rule weighs more at the same severity
    assert rule_weight("identity-misuse") > rule_weight("pharmacy-spend")
    # 90 days old: half the points
    old = patient_risk([finding("early-refill", Severity.HIGH, days_ago=90)], as_of=T0)
    assert old.points == round(rule_weight("early-refill") / 2, 3)
    # a dismissed finding counts for nothing; a confirmed one for more
    f = finding("early-refill", Severity.HIGH)
    assert patient_risk([f], {f.finding_id: "dismissed"}, as_of=T0).score == 0
    assert patient_risk([f], {f.finding_id: "confirmed"}, as_of=T0).score > high

    class Review:  # a review record, as the console passes it
        status = "dismissed"

    assert patient_risk([f], {f.finding_id: Review()}, as_of=T0).score == 0
    assert patient_risk([finding("early-refill", Severity.HIGH, status="superseded")], as_of=T0).score == 0


def test_the_score_saturates_below_100_and_lists_its_parts():
    many = [finding("cumulative-oversupply", Severity.HIGH, n=i) for i in range(10)] + [
        finding("early-refill", Severity.MEDIUM, n=i) for i in range(3)
    ]
    risk = patient_risk(many, as_of=T0)
    assert 90 <= risk.score <= 100 and risk.level == "high"
    assert [p.rule_id for p in risk.parts] == ["cumulative-oversupply", "early-refill"]
    assert risk.parts[0].findings == 10 and len(risk.top) == 10
    assert abs(sum(p.points for p in risk.parts) - risk.points) < 0.01


def test_the_findings_list_of_a_patient_carries_the_risk_score(kb):
    svc = services(kb)
    seed(svc, kb)
    status, answer = get(svc, "/v1/findings?patient=SYN0")
    assert status == 200
    risk = answer["risk"]
    assert 0 < risk["score"] <= 100 and risk["findings"] == 3
    assert {p["rule_id"] for p in risk["parts"]} == {"early-refill", "trace-code-reuse", "cross-institution-repeat"}
    status, answer = get(svc, "/v1/findings")
    assert status == 200 and answer.get("risk") is None
