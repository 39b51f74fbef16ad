"""The findings store of the API: query, read and review findings, and review figures per
rule. `FindingsStore` is the contract; `InMemoryFindingsStore` (here) sits on the
`InMemoryRepository` the engine writes to; `rxguard.api.store_dynamo.DynamoFindingsStore`
on the FindingsTable of the template.

A review sets the finding's status to confirmed / dismissed; the repositories keep that
status when the rules produce the same finding again (repository contract), so reviews
survive re-screening. Review figures per rule feed `GET /v1/rules` (precision).
"""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from rxguard.api.errors import Conflict, InvalidField, NotFound
from rxguard.api.models import FindingView, Review, ReviewStatus
from rxguard.models import Finding
from rxguard.repository import InMemoryRepository


@dataclass(frozen=True)
class FindingQuery:
    institution: str | None = None  # None: every institution (regulators only)
    psn_no: str | None = None
    rule_id: str | None = None
    status: str | None = None  # None: current findings (new, confirmed, dismissed)
    date_from: date | None = None  # occurred_at day, inclusive
    date_to: date | None = None  # inclusive

    def matches(self, finding: Finding) -> bool:
        if self.institution is not None and finding.fixmedins_code != self.institution:
            return False
        if self.psn_no is not None and finding.psn_no != self.psn_no:
            return False
        if self.rule_id is not None and finding.rule_id != self.rule_id:
            return False
        if self.status is None:
            if finding.status == "superseded":
                return False
        elif finding.status != self.status:
            return False
        day = finding.occurred_at.date()
        if self.date_from is not None and day < self.date_from:
            return False
        return self.date_to is None or day <= self.date_to


@dataclass(frozen=True)
class RuleFigures:
    confirmed: int = 0
    dismissed: int = 0

    @property
    def precision(self) -> float | None:
        reviewed = self.confirmed + self.dismissed
        return None if reviewed == 0 else self.confirmed / reviewed


class FindingsStore(ABC):
    @abstractmethod
    def query(self, query: FindingQuery, limit: int, token: str | None = None) -> tuple[list[FindingView], str | None]:
        """A page of findings, newest first, and the opaque token of the next page (None at the end)."""

    @abstractmethod
    def get(self, finding_id: str) -> FindingView | None: ...

    @abstractmethod
    def review(self, finding_id: str, status: ReviewStatus, reason: str, reviewer: str, at: datetime) -> FindingView:
        """Record a review; raises NotFound, or Conflict for a superseded finding.
        Reviewing again replaces the earlier review (figures move accordingly)."""

    @abstractmethod
    def rule_figures(self, rule_ids: Collection[str]) -> dict[str, RuleFigures]:
        """Confirmed and dismissed findings per rule id (rules never reviewed may be absent)."""


def view(finding: Finding, review: Review | None) -> FindingView:
    return FindingView.model_validate({**finding.model_dump(), "review": review})


def encode_token(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any]:
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidField("next_token is not a token this API issued", "next_token") from exc
    if not isinstance(payload, dict):
        raise InvalidField("next_token is not a token this API issued", "next_token")
    return payload


def _order(finding: Finding) -> tuple[float, str]:
    return (-finding.occurred_at.timestamp(), finding.finding_id)


class InMemoryFindingsStore(FindingsStore):
    """Findings of an `InMemoryRepository` (the offline serve, tests, benchmarks)."""

    def __init__(self, repo: InMemoryRepository) -> None:
        self.repo = repo
        self.reviews: dict[str, Review] = {}

    def query(self, query: FindingQuery, limit: int, token: str | None = None) -> tuple[list[FindingView], str | None]:
        after: tuple[float, str] | None = None
        if token:
            payload = decode_token(token)
            try:
                after = (float(payload["t"]), str(payload["id"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise InvalidField("next_token is not a token this API issued", "next_token") from exc
        matching = sorted((f for f in self.repo.findings.values() if query.matches(f)), key=_order)
        if after is not None:
            matching = [f for f in matching if _order(f) > after]
        page = matching[:limit]
        next_token = None
        if len(matching) > limit:
            last = _order(page[-1])
            next_token = encode_token({"t": last[0], "id": last[1]})
        return [view(f, self.reviews.get(f.finding_id)) for f in page], next_token

    def get(self, finding_id: str) -> FindingView | None:
        finding = self.repo.findings.get(finding_id)
        return None if finding is None else view(finding, self.reviews.get(finding_id))

    def review(self, finding_id: str, status: ReviewStatus, reason: str, reviewer: str, at: datetime) -> FindingView:
        finding = self.repo.findings.get(finding_id)
        if finding is None:
            raise NotFound("no such finding")
        if finding.status == "superseded":
            raise Conflict("the finding is superseded: the rules no longer produce it", "status")
        updated = finding.model_copy(update={"status": status})
        self.repo.findings[finding_id] = updated
        review = Review(status=status, reason=reason, reviewer=reviewer, reviewed_at=at)
        self.reviews[finding_id] = review
        return view(updated, review)

    def rule_figures(self, rule_ids: Collection[str]) -> dict[str, RuleFigures]:
        counts: dict[str, list[int]] = {}
        for fid, review in self.reviews.items():
            rule = self.repo.findings[fid].rule_id
            slot = counts.setdefault(rule, [0, 0])
            slot[0 if review.status == "confirmed" else 1] += 1
        return {rule: RuleFigures(c, d) for rule, (c, d) in counts.items()}
