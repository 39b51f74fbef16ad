"""Backtest: what a changed rule base would have done to the stored history.

The new rule base is evaluated over the whole history (`rxguard.planning.evaluate`) and
compared, finding by finding, with the current findings of the state; nothing is written.
Per rule: findings added, removed and changed in severity, the patients and institutions
they touch, reviewed findings that would flip with a precision estimate from the past
reviews, and the spending the rule's findings cite (docs/planning.md)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rxguard.kb import KnowledgeBase, Phase
from rxguard.local.state import State
from rxguard.models import Finding
from rxguard.planning.evaluate import Evaluation, evaluate_history
from rxguard.planning.history import overlay_rule_entries, with_phase


@dataclass
class RuleChange:
    added: int = 0
    removed: int = 0
    severity_changed: int = 0
    unchanged: int = 0
    patients: set[str] = field(default_factory=set)
    institutions: set[str] = field(default_factory=set)
    confirmed_lost: int = 0  # confirmed by a reviewer, no longer raised
    dismissed_avoided: int = 0  # dismissed by a reviewer, no longer raised
    confirmed_kept: int = 0
    dismissed_kept: int = 0
    confirmed_total: int = 0
    dismissed_total: int = 0
    spending_before: float = 0.0
    spending_after: float = 0.0

    def as_json(self) -> dict[str, Any]:
        def ratio(num: int, den: int) -> float | None:
            return round(num / den, 4) if den else None

        return {
            "added": self.added,
            "removed": self.removed,
            "severity_changed": self.severity_changed,
            "unchanged": self.unchanged,
            "patients": len(self.patients),
            "institutions": len(self.institutions),
            "confirmed_lost": self.confirmed_lost,
            "dismissed_avoided": self.dismissed_avoided,
            "precision_before": ratio(self.confirmed_total, self.confirmed_total + self.dismissed_total),
            "precision_after": ratio(self.confirmed_kept, self.confirmed_kept + self.dismissed_kept),
            "spending_before": round(self.spending_before, 2),
            "spending_after": round(self.spending_after, 2),
        }


@dataclass
class Backtest:
    rules: dict[str, RuleChange]
    before: list[Finding]
    after: list[Finding]
    lines: int
    since: str | None = None

    def as_json(self) -> dict[str, Any]:
        rules = {rule_id: change.as_json() for rule_id, change in sorted(self.rules.items())}
        totals = {k: sum(r[k] for r in rules.values()) for k in ("added", "removed", "severity_changed", "unchanged")}
        return {
            "since": self.since,
            "lines": self.lines,
            "findings_before": len(self.before),
            "findings_after": len(self.after),
            "rules": rules,
            "totals": totals,
        }

    @property
    def changed(self) -> bool:
        return any(c.added or c.removed or c.severity_changed for c in self.rules.values())


def _since(findings: Iterable[Finding], since: str | None) -> list[Finding]:
    if not since:
        return list(findings)
    return [f for f in findings if f.occurred_at.strftime("%Y-%m") >= since]


def _subjects(finding: Finding, change: RuleChange) -> None:
    if finding.psn_no:
        change.patients.add(finding.psn_no)
    if finding.fixmedins_code:
        change.institutions.add(finding.fixmedins_code)


def compare(
    before: list[Finding],
    after: list[Finding],
    reviews: Mapping[str, str],
    spend: Mapping[str, float],
    rule_ids: Iterable[str] = (),
) -> dict[str, RuleChange]:
    """Per rule: how `after` differs from `before` (both current findings, by id).
    `reviews`: finding_id -> confirmed / dismissed; `spend`: line id -> amount."""
    out: dict[str, RuleChange] = defaultdict(RuleChange)
    for rule_id in rule_ids:
        out[rule_id] = RuleChange()
    old = {f.finding_id: f for f in before}
    new = {f.finding_id: f for f in after}
    cited_before: dict[str, set[str]] = defaultdict(set)  # rule -> lines its findings cite
    cited_after: dict[str, set[str]] = defaultdict(set)
    for fid, finding in old.items():
        change = out[finding.rule_id]
        cited_before[finding.rule_id].update(finding.evidence)
        status = reviews.get(fid)
        if status == "confirmed":
            change.confirmed_total += 1
        elif status == "dismissed":
            change.dismissed_total += 1
        now = new.get(fid)
        if now is None:
            change.removed += 1
            _subjects(finding, change)
            if status == "confirmed":
                change.confirmed_lost += 1
            elif status == "dismissed":
                change.dismissed_avoided += 1
            continue
        if status == "confirmed":
            change.confirmed_kept += 1
        elif status == "dismissed":
            change.dismissed_kept += 1
        if now.severity != finding.severity:
            change.severity_changed += 1
            _subjects(finding, change)
        else:
            change.unchanged += 1
    for fid, finding in new.items():
        change = out[finding.rule_id]
        cited_after[finding.rule_id].update(finding.evidence)
        if fid not in old:
            change.added += 1
            _subjects(finding, change)
    for rule_id, change in out.items():
        change.spending_before = sum(spend.get(x, 0.0) for x in cited_before[rule_id])
        change.spending_after = sum(spend.get(x, 0.0) for x in cited_after[rule_id])
    return dict(out)


def _reviews(state: State) -> dict[str, str]:
    return {fid: status for fid, status in state.read("SELECT finding_id, status FROM reviews")}


def _spending(state: State, findings: Iterable[Finding]) -> dict[str, float]:
    ids = sorted({x for f in findings for x in f.evidence})
    out: dict[str, float] = {}
    for start in range(0, len(ids), 5000):
        rows = state.read(
            "SELECT line_id, json_extract(body, '$.det_item_fee_sumamt') FROM lines "
            "WHERE line_id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids[start : start + 5000], ensure_ascii=False),),
        )
        out.update({line_id: float(amount or 0.0) for line_id, amount in rows})
    return out


def backtest(
    state_dir: str | Path,
    kb: KnowledgeBase,
    *,
    since: str | None = None,
    workers: int | None = None,
    baseline: list[Finding] | None = None,
    resolve_lines: bool = False,
) -> Backtest:
    """Evaluate `kb` over the history in the state and compare with its current findings
    (or with `baseline`). Writes nothing."""
    evaluation: Evaluation = evaluate_history(state_dir, kb, workers=workers, resolve_lines=resolve_lines)
    with State.open(state_dir) as state:
        before = baseline if baseline is not None else state.repository().all_current_findings()
        before = _since(before, since)
        after = _since(evaluation.findings, since)
        spend = _spending(state, [*before, *after])
        changes = compare(before, after, _reviews(state), spend, kb.rules)
    return Backtest(rules=changes, before=before, after=after, lines=evaluation.lines, since=since)


def phase_plan(
    state_dir: str | Path, kb: KnowledgeBase, *, since: str | None = None, workers: int | None = None
) -> dict[str, Any]:
    """What each phase's monitored list would have flagged over the stored history."""
    out: dict[str, Any] = {"since": since, "phases": {}}
    with State.open(state_dir) as state:
        reviews = _reviews(state)
    for phase in Phase:
        phase_kb = with_phase(kb, phase)
        evaluation = evaluate_history(state_dir, phase_kb, workers=workers, resolve_lines=True)
        found = _since(evaluation.findings, since)
        with State.open(state_dir) as state:
            spend = _spending(state, found)
        by_rule: dict[str, int] = defaultdict(int)
        for f in found:
            by_rule[f.rule_id] += 1
        confirmed = sum(1 for f in found if reviews.get(f.finding_id) == "confirmed")
        dismissed = sum(1 for f in found if reviews.get(f.finding_id) == "dismissed")
        out["phases"][phase.value] = {
            "monitored_drugs": len(phase_kb.monitored),
            "findings": len(found),
            "by_rule": dict(sorted(by_rule.items())),
            "patients": len({f.psn_no for f in found if f.psn_no}),
            "institutions": len({f.fixmedins_code for f in found if f.fixmedins_code}),
            "spending_flagged": round(sum(spend.get(x, 0.0) for x in {x for f in found for x in f.evidence}), 2),
            "reviewed_confirmed": confirmed,
            "reviewed_dismissed": dismissed,
        }
    return out


def state_planner(state_dir: str | Path, kb: KnowledgeBase, workers: int | None = None) -> Any:
    """The API's planner (`rxguard.api.service.Planner`) over a local state: rule entries as
    in rules.yaml, merged over `kb`'s, backtested on the state's history."""

    def plan(entries: list[dict[str, Any]], since: str | None) -> dict[str, Any]:
        trial = overlay_rule_entries(kb, {"rules": entries}, "request")
        return backtest(state_dir, trial, since=since, workers=workers).as_json()

    return plan
