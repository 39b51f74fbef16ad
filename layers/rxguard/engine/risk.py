"""A patient's risk score, 0-100, with its parts: one number to order review queues.

NarxCare computes such a score for opioids as a black box; ours lists its parts. Each
current finding about the patient contributes points:

    points = rule weight (Rule.risk_weight, 0-1: how strongly the rule signals abuse)
           x severity weight (high 1.0, medium 0.6, low 0.1)
           x recency 0.5 ** (age in days / 90)   (a finding loses half its weight in 90 days)
           x review (confirmed 1.5, dismissed 0, not reviewed 1)

and the score saturates: score = round(100 x (1 - exp(-sum of points / 2))). One fresh high
finding of a strong rule gives 39, two give 63, five give 92; dismissed findings count for
nothing. The answer lists the points per rule and the findings that weigh most.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, Field, WithJsonSchema

from rxguard.engine.rules import CATALOGUE
from rxguard.models import Severity

# Claim-line times are China time without an offset (as fee_ocur_time), so not RFC 3339 date-times
ChinaTime = Annotated[
    datetime,
    WithJsonSchema({"type": "string", "description": "China time (UTC+8) without an offset: YYYY-MM-DDTHH:MM:SS"}),
]

SEVERITY_WEIGHT = {Severity.HIGH: 1.0, Severity.MEDIUM: 0.6, Severity.LOW: 0.1}
REVIEW_WEIGHT = {"confirmed": 1.5, "dismissed": 0.0}
HALF_LIFE_DAYS = 90.0
SATURATION = 2.0  # points at which the score reaches 63
DEFAULT_WEIGHT = 0.5
TOP_FINDINGS = 10


class FindingLike(Protocol):
    """A finding as the engine makes it or as the API shows it (read-only attributes)."""

    @property
    def finding_id(self) -> str: ...
    @property
    def rule_id(self) -> str: ...
    @property
    def severity(self) -> Severity: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def status(self) -> str: ...


class RiskPart(BaseModel):
    rule_id: str
    findings: int
    points: float = Field(description="this rule's share of the points")
    weight: float = Field(description="the rule's weight (how strongly it signals abuse)")


class RiskContribution(BaseModel):
    finding_id: str
    rule_id: str
    severity: Severity
    occurred_at: ChinaTime
    age_days: float
    review: str = Field(description="confirmed | dismissed | not reviewed")
    points: float


class PatientRisk(BaseModel):
    score: int = Field(ge=0, le=100, description="0-100: 100 x (1 - exp(-points / 2))")
    level: str = Field(description="low (< 30) | medium (30-69) | high (>= 70)")
    points: float
    as_of: ChinaTime
    findings: int = Field(description="current findings counted")
    parts: list[RiskPart] = Field(description="points per rule, largest first")
    top: list[RiskContribution] = Field(description="the findings that weigh most (at most 10)")
    method: str = Field(
        default="points = rule weight x severity (high 1, medium 0.6, low 0.1) x 0.5^(age days / 90) x review "
        "(confirmed 1.5, dismissed 0); score = 100 x (1 - exp(-sum / 2))"
    )


def rule_weight(rule_id: str) -> float:
    rule = CATALOGUE.get(rule_id)
    return rule.risk_weight if rule is not None else DEFAULT_WEIGHT


def _outcome(review: Any) -> str | None:
    """A review outcome given as text or as a review record with a `status`."""
    if review is None:
        return None
    status = getattr(review, "status", review)
    return str(getattr(status, "value", status))


def patient_risk(
    findings: Iterable[FindingLike], reviews: Mapping[str, Any] | None = None, *, as_of: datetime | None = None
) -> PatientRisk:
    """The score of one patient's findings. `reviews` maps finding ids to a review outcome
    (confirmed / dismissed, as text or a review record with `status`); without one, the
    finding's own status is used. `as_of` (default:
    the latest finding) is the moment recency is measured from. Superseded findings do not count."""
    current = [f for f in findings if f.status != "superseded"]
    when = as_of or max((_naive(f.occurred_at) for f in current), default=datetime(1970, 1, 1))
    when = _naive(when)
    contributions: list[RiskContribution] = []
    for f in current:
        review = _outcome((reviews or {}).get(f.finding_id)) or (
            f.status if f.status in REVIEW_WEIGHT else "not reviewed"
        )
        age = max(0.0, (when - _naive(f.occurred_at)).total_seconds() / 86400)
        points = (
            rule_weight(f.rule_id)
            * SEVERITY_WEIGHT.get(Severity(f.severity), 0.0)
            * 0.5 ** (age / HALF_LIFE_DAYS)
            * REVIEW_WEIGHT.get(review, 1.0)
        )
        contributions.append(
            RiskContribution(
                finding_id=f.finding_id,
                rule_id=f.rule_id,
                severity=Severity(f.severity),
                occurred_at=f.occurred_at,
                age_days=round(age, 1),
                review=review,
                points=round(points, 3),
            )
        )
    total = sum(c.points for c in contributions)
    score = round(100 * (1 - math.exp(-total / SATURATION)))
    by_rule: dict[str, list[RiskContribution]] = {}
    for c in contributions:
        by_rule.setdefault(c.rule_id, []).append(c)
    parts = [
        RiskPart(rule_id=r, findings=len(cs), points=round(sum(c.points for c in cs), 3), weight=rule_weight(r))
        for r, cs in by_rule.items()
    ]
    parts.sort(key=lambda p: (-p.points, p.rule_id))
    top = sorted(contributions, key=lambda c: (-c.points, c.finding_id))[:TOP_FINDINGS]
    level = "high" if score >= 70 else ("medium" if score >= 30 else "low")
    return PatientRisk(
        score=score, level=level, points=round(total, 3), as_of=when, findings=len(contributions), parts=parts, top=top
    )


def _naive(at: datetime) -> datetime:
    """Times compared in China time without a zone (findings carry local times)."""
    if at.tzinfo is None:
        return at
    return at.astimezone(timezone(timedelta(hours=8))).replace(tzinfo=None)
