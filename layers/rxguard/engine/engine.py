"""The rule engine: the ten rules of rules/rules.yaml over a patient's whole timeline,
a traceability code's sales, and institutions' monthly activity. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from rxguard.engine.common import RuleSet, check_parameters, flagged_line_ids
from rxguard.engine.fills import build_fills
from rxguard.engine.indication import IndicationRule
from rxguard.engine.institutions import ActivityAggregate, activity_from_lines, evaluate_activity
from rxguard.engine.monthly import MonthlyRules
from rxguard.engine.supply import SupplyRules
from rxguard.engine.trace import TraceRule
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding, Scene
from rxguard.repository import TraceSale


def _order(line: ClaimLine) -> tuple[object, str]:
    return (line.fee_ocur_time, line.line_id)


def normalize_timeline(psn_no: str, timeline: Iterable[ClaimLine]) -> list[ClaimLine]:
    """This patient's lines, deduplicated by line id (first kept), in (time, line id) order."""
    seen: dict[str, ClaimLine] = {}
    for line in timeline:
        if line.psn_no == psn_no and line.line_id not in seen:
            seen[line.line_id] = line
    return sorted(seen.values(), key=_order)


class Engine:
    """`Engine(kb)`: evaluate the rules of `kb` (optionally only those of some scenes)."""

    def __init__(self, kb: KnowledgeBase, scenes: Collection[Scene] | None = None) -> None:
        self.kb = kb
        check_parameters(kb.rules.values())
        self.rules = RuleSet(kb, scenes)
        self._supply = SupplyRules(self.rules)
        self._monthly = MonthlyRules(self.rules, kb)
        self._indication = IndicationRule(self.rules, kb)
        self._trace = TraceRule(self.rules, kb)

    def evaluate_patient(self, psn_no: str, timeline: Sequence[ClaimLine]) -> list[Finding]:
        """Every patient-scope finding over the patient's whole timeline (any order in)."""
        lines = normalize_timeline(psn_no, timeline)
        if not lines:
            return []
        findings = self._supply.evaluate(psn_no, build_fills(lines, self.kb))
        findings.extend(self._indication.evaluate(psn_no, lines))
        findings.extend(self._trace.within_lines(psn_no, lines))
        findings.extend(self._monthly.evaluate(psn_no, lines, flagged_line_ids(findings)))
        return _unique(findings)

    def evaluate_trace_code(
        self, code: str, sales: Sequence[TraceSale], lines: Mapping[str, ClaimLine] | None = None
    ) -> list[Finding]:
        """Findings of one traceability code from all its recorded sales."""
        return _unique(self._trace.evaluate(code, sales, lines))

    def evaluate_institutions(self, lines: Iterable[ClaimLine], flagged_line_ids: set[str]) -> list[Finding]:
        """institution-outlier from lines and the ids of lines blamed by patient/trace findings
        (see `rxguard.engine.flagged_line_ids`)."""
        return self.evaluate_activity(activity_from_lines(lines, flagged_line_ids, self.kb))

    def evaluate_activity(self, aggregates: Sequence[ActivityAggregate]) -> list[Finding]:
        """institution-outlier from monthly aggregates kept by the caller (e.g. DynamoDB)."""
        return _unique(evaluate_activity(aggregates, self.rules))


def _unique(findings: list[Finding]) -> list[Finding]:
    out: dict[str, Finding] = {}
    for f in findings:
        out.setdefault(f.finding_id, f)
    return sorted(out.values(), key=lambda f: (f.occurred_at, f.rule_id, f.finding_id))
