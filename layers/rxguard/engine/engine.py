"""The rule engine: the rules of the catalogue (engine/rules/), configured by rules/rules.yaml,
over a patient's whole timeline, a traceability code's sales, and institutions' monthly activity. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, time, timedelta
from typing import TypeVar

from rxguard.engine.common import RuleSet
from rxguard.engine.fills import build_fills
from rxguard.engine.institutions import ActivityAggregate, activity_from_lines
from rxguard.engine.monthly import MonthlyRules
from rxguard.engine.reversals import net_reversals
from rxguard.engine.rules import CATALOGUE, Rule, check_definitions, flagged_line_ids
from rxguard.engine.rules.cross_institution_repeat import CrossInstitutionRepeat
from rxguard.engine.rules.cumulative_oversupply import CumulativeOversupply
from rxguard.engine.rules.early_refill import EarlyRefill
from rxguard.engine.rules.frequent_visits import FrequentVisits
from rxguard.engine.rules.identity_misuse import IdentityMisuse
from rxguard.engine.rules.indication_mismatch import IndicationMismatch
from rxguard.engine.rules.institution_outlier import InstitutionOutlier
from rxguard.engine.rules.multi_hospital_days import MultiHospitalDays
from rxguard.engine.rules.multi_provider import MultiProvider
from rxguard.engine.rules.over_quantity import OverQuantity
from rxguard.engine.rules.override_frequency import OverrideFrequency
from rxguard.engine.rules.pharmacy_spend import PharmacySpend
from rxguard.engine.rules.therapeutic_duplication import TherapeuticDuplication
from rxguard.engine.rules.trace_code_reuse import TraceCodeReuse
from rxguard.engine.supply import SupplyRules
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding, Scene
from rxguard.repository import TraceSale

_R = TypeVar("_R", bound=Rule)


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
        check_definitions(kb.rules.values())
        self.rules = RuleSet(kb, scenes)
        self.catalogue: dict[str, Rule] = {rid: cls(self.rules, kb) for rid, cls in CATALOGUE.items()}
        self._supply = SupplyRules(
            self._rule(OverQuantity),
            self._rule(EarlyRefill),
            self._rule(CrossInstitutionRepeat),
            self._rule(CumulativeOversupply),
            self._rule(OverrideFrequency),
        )
        self._monthly = MonthlyRules(
            self._rule(FrequentVisits), self._rule(MultiHospitalDays), self._rule(PharmacySpend)
        )
        self._indication = self._rule(IndicationMismatch)
        self._trace = self._rule(TraceCodeReuse)
        self._outlier = self._rule(InstitutionOutlier)
        self._duplication = self._rule(TherapeuticDuplication)
        self._providers = self._rule(MultiProvider)
        self._identity = self._rule(IdentityMisuse)

    def _rule(self, cls: type[_R]) -> _R:
        rule = self.catalogue[cls.id]
        assert isinstance(rule, cls)
        return rule

    def evaluate_patient(self, psn_no: str, timeline: Sequence[ClaimLine]) -> list[Finding]:
        """Every patient-scope finding over the patient's whole timeline (any order in)."""
        lines = net_reversals(normalize_timeline(psn_no, timeline))
        if not lines:
            return []
        fills = build_fills(lines, self.kb)
        findings = self._supply.evaluate(psn_no, fills)  # first: it settles which override reasons hold
        findings.extend(self._duplication.finding(h) for h in self._duplication.evaluate(psn_no, fills))
        findings.extend(self._providers.finding(h) for h in self._providers.evaluate(psn_no, lines))
        findings.extend(self._identity.finding(h) for h in self._identity.evaluate(psn_no, lines))
        findings.extend(self._indication.findings(psn_no, lines))
        findings.extend(self._trace.within_line_findings(psn_no, lines))
        findings.extend(self._monthly.evaluate(psn_no, lines, flagged_line_ids(findings)))
        return _unique(findings)

    def evaluate_patient_lines(
        self, psn_no: str, timeline: Sequence[ClaimLine], line_ids: Collection[str]
    ) -> list[Finding]:
        """The findings of `evaluate_patient(psn_no, timeline)` whose evidence includes one of
        `line_ids` (the lines a check proposes), exactly (ids, rules, severities, evidence,
        figures), each rule family evaluated over only what can share a finding with them:

        - the supply rules, therapeutic-duplication and multi-provider: the lines of the
          proposed lines' ATC level-4 classes (fills, stock, overrides, episodes are per
          ingredient; duplications and provider windows per class);
        - identity-misuse: the lines from the first proposed line's day less the longest
          window of the patient's regions to the last proposed line plus it (a finding pairs
          lines closer than the window; the pairs already found that day are replayed);
        - indication-mismatch and a trace code repeated within a line: the proposed lines
          (a finding's evidence is its line; diagnoses still come from the whole timeline);
        - the monthly rules (in and post scenes) read every other finding (pharmacy-spend's
          flagged lines): when one is selected, the whole timeline is evaluated.

        tests/unit/test_engine_proposed.py proves the equality over random timelines."""
        wanted = set(line_ids)
        lines = net_reversals(normalize_timeline(psn_no, timeline))
        targets = [line for line in lines if line.line_id in wanted]
        if not targets:  # a reversal, or no line: nothing is evidence of them
            return []
        if self._monthly.enabled:
            found = self.evaluate_patient(psn_no, timeline)
        else:
            found = self._around(psn_no, lines, targets)
        return [f for f in found if not wanted.isdisjoint(f.evidence)]

    def _around(self, psn_no: str, lines: list[ClaimLine], targets: list[ClaimLine]) -> list[Finding]:
        kb = self.kb
        classes = set()
        for line in targets:
            drug = kb.drug(line.med_list_codg)
            if drug is not None:
                classes.add(drug.atc_code[:5])
        findings: list[Finding] = []
        if classes:
            related = []
            for line in lines:
                drug = kb.drug(line.med_list_codg)
                if drug is not None and drug.atc_code[:5] in classes:
                    related.append(line)
            fills = build_fills(related, kb)
            findings = self._supply.evaluate(psn_no, fills)  # first: it settles which override reasons hold
            findings.extend(self._duplication.finding(h) for h in self._duplication.evaluate(psn_no, fills))
            findings.extend(self._providers.finding(h) for h in self._providers.evaluate(psn_no, related))
        if self._identity.enabled:
            window = self._identity_window(lines, targets)
            findings.extend(self._identity.finding(h) for h in self._identity.evaluate(psn_no, window))
        findings.extend(self._indication.findings(psn_no, lines, targets))
        findings.extend(self._trace.within_line_findings(psn_no, targets))
        return _unique(findings)

    def _identity_window(self, lines: list[ClaimLine], targets: list[ClaimLine]) -> list[ClaimLine]:
        """The lines identity-misuse needs to find every pair a target is in: from the first
        target's midnight less the longest window (the pairs already found that day, which
        it does not repeat, and their earlier partners) to the last target plus it."""
        rule = self._identity
        regions = {line.admdvs for line in lines if line.admdvs}
        hours = max(
            (max(p.province_hours, p.prefecture_hours, 0.0) for p in (rule.params(r) for r in regions)), default=0.0
        )
        reach = timedelta(hours=hours)
        start = datetime.combine(min(t.fee_ocur_time for t in targets).date(), time.min) - reach
        end = max(t.fee_ocur_time for t in targets) + reach
        return [line for line in lines if start <= line.fee_ocur_time <= end]

    def evaluate_trace_code(
        self, code: str, sales: Sequence[TraceSale], lines: Mapping[str, ClaimLine] | None = None
    ) -> list[Finding]:
        """Findings of one traceability code from all its recorded sales."""
        del lines  # accepted for callers that have them: the result must not depend on them
        return _unique(self._trace.findings(code, sales))

    def evaluate_institutions(self, lines: Iterable[ClaimLine], flagged_line_ids: set[str]) -> list[Finding]:
        """institution-outlier from lines and the ids of lines blamed by patient/trace findings
        (see `rxguard.engine.flagged_line_ids`)."""
        return self.evaluate_activity(activity_from_lines(lines, flagged_line_ids, self.kb))

    def evaluate_activity(self, aggregates: Sequence[ActivityAggregate]) -> list[Finding]:
        """institution-outlier from monthly aggregates kept by the caller (e.g. DynamoDB)."""
        return _unique(self._outlier.findings(aggregates))


def _unique(findings: list[Finding]) -> list[Finding]:
    out: dict[str, Finding] = {}
    for f in findings:
        out.setdefault(f.finding_id, f)
    return sorted(out.values(), key=lambda f: (f.occurred_at, f.rule_id, f.finding_id))
