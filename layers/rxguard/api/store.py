"""The findings store of the API: query, read and review findings, and review figures per
rule. `FindingsStore` is the contract; `InMemoryFindingsStore` (here) sits on the
`InMemoryRepository` the engine writes to; `rxguard.api.store_dynamo.DynamoFindingsStore`
on the FindingsTable of the template.

A review sets the finding's status to confirmed / dismissed; the repositories keep that
status when the rules produce the same finding again (repository contract), so reviews
survive re-screening. Review figures per rule feed `GET /v1/rules` (precision).

Warnings and dispositions (3101/3103): a check records nothing, yet the jr_id it answers
must be fetchable and disposable. `record_warnings` keeps the findings a check answered
(not current findings: no listing, no letters, no alerts; they expire); `get` answers a
warning when no recorded finding has its id (`recorded` false). `dispose` stores the
prescriber's handling with the finding or warning (continue with a reason / modify);
`rule_figures` counts them per rule (continue and modify rates, alert fatigue).
"""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from rxguard.api.errors import Conflict, InvalidField, NotFound
from rxguard.api.models import Disposition, FindingView, Review, ReviewStatus
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
    continued: int = 0  # dispositions "continue" (3103 dspo_way 1)
    modified: int = 0  # dispositions "modify" (dspo_way 2)

    @property
    def precision(self) -> float | None:
        reviewed = self.confirmed + self.dismissed
        return None if reviewed == 0 else self.confirmed / reviewed

    @property
    def continue_rate(self) -> float | None:
        disposed = self.continued + self.modified
        return None if disposed == 0 else self.continued / disposed

    @property
    def modify_rate(self) -> float | None:
        disposed = self.continued + self.modified
        return None if disposed == 0 else self.modified / disposed


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
        """Per rule id: findings confirmed and dismissed by reviewers, and findings or
        warnings continued and modified by prescribers (rules with none may be absent)."""

    @abstractmethod
    def record_warnings(self, findings: Sequence[Finding], at: datetime, answered: Collection[str] = ()) -> None:
        """Keep the findings a check answered, by finding_id (the jr_id), so that `get` and
        `dispose` find them, with the line ids the check answered for among each one's
        evidence (`answered`: the proposed lines, not the history). A warning is not a
        current finding: `query` never lists it and nothing alerts or writes letters from
        it. Recording the same id again replaces it (its disposition stays). Adapters may
        expire warnings (DynamoDB: 90 days TTL)."""

    @abstractmethod
    def continued_reasons(self, line_ids: Collection[str]) -> dict[str, str]:
        """For each given line id that a check answered with a warning the prescriber then
        continued past (3103 dspo_way 1), the reason given; lines without one are absent.
        A later "modify" of that warning withdraws it. The dispensation of the line reads
        this: the prescriber's reason is the line's override (feeds override-frequency)."""

    @abstractmethod
    def dispose(self, finding_id: str, disposition: Disposition) -> FindingView:
        """Store a prescriber's handling of a finding or warning (3103) and return the
        view with it. A recorded finding takes precedence over a warning of the same id.
        Raises NotFound when neither exists. Disposing again replaces the earlier
        disposition, and the per-rule counts move accordingly (never counted twice)."""


def view(finding: Finding, review: Review | None, disposition: Disposition | None = None) -> FindingView:
    return FindingView.model_validate({**finding.model_dump(), "review": review, "disposition": disposition})


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


def token_position(token: str) -> tuple[float, str]:
    """Where a next_token resumes: the (negated time, finding id) order of the last finding of
    the page before (`page_token`)."""
    payload = decode_token(token)
    try:
        return (float(payload["t"]), str(payload["id"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidField("next_token is not a token this API issued", "next_token") from exc


def page_token(last: Finding) -> str:
    """The next_token of a page ending at `last` (newest first)."""
    return encode_token({"t": -last.occurred_at.timestamp(), "id": last.finding_id})


def _order(finding: Finding) -> tuple[float, str]:
    return (-finding.occurred_at.timestamp(), finding.finding_id)


class InMemoryFindingsStore(FindingsStore):
    """Findings of an `InMemoryRepository` (the offline serve, tests, benchmarks)."""

    def __init__(self, repo: InMemoryRepository) -> None:
        self.repo = repo
        self.reviews: dict[str, Review] = {}
        self.warnings: dict[str, Finding] = {}
        self.warning_lines: dict[str, list[str]] = {}  # jr_id -> the answered lines among its evidence
        self.dispositions: dict[str, tuple[str, Disposition]] = {}  # finding_id -> (rule_id, disposition)

    def _view(self, finding: Finding, recorded: bool = True) -> FindingView:
        disposition = self.dispositions.get(finding.finding_id)
        found = view(finding, self.reviews.get(finding.finding_id), disposition[1] if disposition else None)
        return found if recorded else found.model_copy(update={"recorded": False})

    def query(self, query: FindingQuery, limit: int, token: str | None = None) -> tuple[list[FindingView], str | None]:
        after = token_position(token) if token else None
        matching = sorted((f for f in self.repo.findings.values() if query.matches(f)), key=_order)
        if after is not None:
            matching = [f for f in matching if _order(f) > after]
        page = matching[:limit]
        next_token = None
        if len(matching) > limit:
            next_token = page_token(page[-1])
        return [self._view(f) for f in page], next_token

    def get(self, finding_id: str) -> FindingView | None:
        finding = self.repo.findings.get(finding_id)
        if finding is not None:
            return self._view(finding)
        warning = self.warnings.get(finding_id)
        return None if warning is None else self._view(warning, recorded=False)

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
        return self._view(updated)

    def rule_figures(self, rule_ids: Collection[str]) -> dict[str, RuleFigures]:
        counts: dict[str, list[int]] = {}
        for fid, review in self.reviews.items():
            rule = self.repo.findings[fid].rule_id
            slot = counts.setdefault(rule, [0, 0, 0, 0])
            slot[0 if review.status == "confirmed" else 1] += 1
        for rule, disposition in self.dispositions.values():
            slot = counts.setdefault(rule, [0, 0, 0, 0])
            slot[2 if disposition.action == "continue" else 3] += 1
        return {rule: RuleFigures(*slot) for rule, slot in counts.items()}

    def record_warnings(self, findings: Sequence[Finding], at: datetime, answered: Collection[str] = ()) -> None:
        for finding in findings:
            self.warnings[finding.finding_id] = finding
            self.warning_lines[finding.finding_id] = [i for i in finding.evidence if i in set(answered)]

    def continued_reasons(self, line_ids: Collection[str]) -> dict[str, str]:
        wanted = set(line_ids)
        out: dict[str, str] = {}
        for finding_id, (_, disposition) in sorted(self.dispositions.items(), key=lambda e: e[1][1].disposed_at):
            if disposition.action != "continue" or not disposition.reason:
                continue
            for line_id in self.warning_lines.get(finding_id, ()):
                if line_id in wanted:
                    out[line_id] = disposition.reason
        return out

    def dispose(self, finding_id: str, disposition: Disposition) -> FindingView:
        recorded = self.repo.findings.get(finding_id)
        finding = recorded or self.warnings.get(finding_id)
        if finding is None:
            raise NotFound("no such finding or warning", "finding_id")
        self.dispositions[finding_id] = (finding.rule_id, disposition)
        return self._view(finding, recorded=recorded is not None)
