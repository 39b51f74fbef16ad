"""Helpers shared by the rule modules: rule lookup per region, severity steps, findings.

Everything here is pure: no I/O, no clock, no randomness. A finding is a deterministic
function of the lines given to the engine.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import date, datetime
from typing import Any, Literal

from rxguard.kb import Drug, KnowledgeBase, RuleDefinition
from rxguard.models import Finding, Scene, Severity
from rxguard.scope import Scope

RULE_IDS = (
    "over-quantity",
    "early-refill",
    "cumulative-oversupply",
    "cross-institution-repeat",
    "frequent-visits",
    "multi-hospital-days",
    "pharmacy-spend",
    "trace-code-reuse",
    "indication-mismatch",
    "institution-outlier",
)

# Rules whose findings are about a patient (scope `patient:<psn_no>`).
PATIENT_RULES = frozenset(RULE_IDS[:7]) | {"indication-mismatch"}
# Rules that judge what an institution dispensed (their trigger lines count for institution-outlier).
DISPENSING_RULES = frozenset(
    {
        "over-quantity",
        "early-refill",
        "cumulative-oversupply",
        "cross-institution-repeat",
        "indication-mismatch",
        "trace-code-reuse",
    }
)

_BY_RANK = (Severity.LOW, Severity.MEDIUM, Severity.HIGH)

SubjectType = Literal["patient", "institution", "prescriber", "trace_code"]


def lower(severity: Severity, steps: int = 1) -> Severity:
    return _BY_RANK[max(0, severity.rank - steps)]


def higher(severity: Severity, steps: int = 1) -> Severity:
    return _BY_RANK[min(2, severity.rank + steps)]


def num(value: float) -> float | int:
    """A figure rounded for people: integers stay integers, others keep one decimal."""
    rounded = round(float(value), 1)
    return int(rounded) if rounded == int(rounded) else rounded


def text(value: float) -> str:
    return str(num(value))


class RuleSet:
    """The rules of a knowledge base selected for some scenes, with per-region caches."""

    def __init__(self, kb: KnowledgeBase, scenes: Collection[Scene] | None = None) -> None:
        wanted = set(scenes) if scenes is not None else None
        self.rules: dict[str, RuleDefinition] = {
            rid: rule for rid, rule in kb.rules.items() if wanted is None or wanted & set(rule.scenes)
        }
        self._params: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._active: dict[tuple[str, str | None, date], bool] = {}
        self._applies: dict[tuple[str, str], bool] = {}

    def has(self, rule_id: str) -> bool:
        return rule_id in self.rules

    def rule(self, rule_id: str) -> RuleDefinition:
        return self.rules[rule_id]

    def params(self, rule_id: str, admdvs: str | None) -> dict[str, Any]:
        key = (rule_id, admdvs)
        found = self._params.get(key)
        if found is None:
            found = self.rules[rule_id].params_for(admdvs)
            self._params[key] = found
        return found

    def active(self, rule_id: str, on: date, admdvs: str | None) -> bool:
        rule = self.rules.get(rule_id)
        if rule is None:
            return False
        key = (rule_id, admdvs, on)
        found = self._active.get(key)
        if found is None:
            found = rule.active(on, admdvs)
            self._active[key] = found
        return found

    def applies(self, rule_id: str, drug: Drug) -> bool:
        """Whether a monitored drug is within the rule's `applies_to` (codes, categories)."""
        key = (rule_id, drug.drug_code)
        found = self._applies.get(key)
        if found is None:
            target = self.rules[rule_id].applies_to
            found = (not target.drugs or drug.drug_code in target.drugs) and (
                not target.categories or bool(set(target.categories) & set(drug.categories))
            )
            self._applies[key] = found
        return found

    def severity(self, rule_id: str, admdvs: str | None) -> Severity:
        return self.rules[rule_id].severity_for(admdvs)


def submitter(later: str, later_late: bool, earlier: str, earlier_late: bool) -> str:
    """The institution a finding about an earlier and a later sale names: the later seller's,
    unless only the earlier sale arrived late (recorded long after its date: backdated?). Then
    the finding names the institution that submitted it, never the seller it put second."""
    return earlier if earlier_late and not later_late else later


def make_finding(
    rule: RuleDefinition,
    *,
    severity: Severity,
    subject_type: SubjectType,
    subject: str,
    occurred_at: datetime,
    evidence: Iterable[str],
    figures: dict[str, Any],
    explanation_zh: str,
    explanation_en: str,
    psn_no: str | None = None,
    fixmedins_code: str | None = None,
    bilg_dr_codg: str | None = None,
    admdvs: str | None = None,
    mitigations: Iterable[str] = (),
    id_key: list[str] | None = None,
) -> Finding:
    """Build a finding; its id comes from the rule, the subject and the evidence lines
    (or `id_key`, e.g. the calendar month, for aggregate rules)."""
    lines = sorted(set(evidence))
    key = lines if id_key is None else id_key
    return Finding(
        finding_id=Finding.make_id(rule.id, subject, key),
        rule_id=rule.id,
        rule_version=rule.version,
        severity=severity,
        subject_type=subject_type,
        psn_no=psn_no,
        fixmedins_code=fixmedins_code,
        bilg_dr_codg=bilg_dr_codg,
        admdvs=admdvs,
        occurred_at=occurred_at,
        evidence=lines,
        figures=figures,
        mitigations=sorted(set(mitigations)),
        explanation_zh=explanation_zh,
        explanation_en=explanation_en,
    )


def finding_scope(finding: Finding) -> Scope:
    """The reconciliation scope a finding belongs to (`rxguard.scope`)."""
    return Scope.of(finding)


def trigger_lines(finding: Finding) -> list[str]:
    """The lines a finding blames (the later sale, the early fill ...), not the context."""
    lines = finding.figures.get("trigger_lines")
    return list(lines) if isinstance(lines, list) else list(finding.evidence)


def flagged_line_ids(findings: Iterable[Finding]) -> set[str]:
    """Lines dispensed against the rules: trigger lines of medium/high dispensing findings.

    This is what institution-outlier counts per institution and prescriber. Monthly
    patient-behaviour rules (visits, hospitals, spending) are not blamed on institutions."""
    out: set[str] = set()
    for finding in findings:
        if finding.rule_id in DISPENSING_RULES and finding.severity != Severity.LOW:
            out.update(trigger_lines(finding))
    return out


# The parameters each rule reads, with their kinds; checked once when an engine is built so
# a typo in rules.yaml fails with the rule and the field instead of mid-screening.
_NUMBER, _FLAG, _LIST = "number", "boolean", "list"
PARAMETERS: dict[str, dict[str, str]] = {
    "over-quantity": {
        "acute_max_days": _NUMBER,
        "chronic_max_days": _NUMBER,
        "long_term_max_days": _NUMBER,
        "discharge_max_days": _NUMBER,
        "pack_allowance": _FLAG,
        "tolerance": _NUMBER,
        "high_ratio": _NUMBER,
    },
    "early-refill": {
        "used_fraction": _NUMBER,
        "carry_tolerance_days": _NUMBER,
        "grace_days": _NUMBER,
        "high_used_fraction": _NUMBER,
    },
    "cumulative-oversupply": {
        "acute_allowed_days": _NUMBER,
        "chronic_allowed_days": _NUMBER,
        "long_term_allowed_days": _NUMBER,
        "discharge_allowed_days": _NUMBER,
        "pack_allowance": _FLAG,
        "tolerance_days": _NUMBER,
    },
    "cross-institution-repeat": {"min_overlap_days": _NUMBER, "min_overlap_fraction": _NUMBER},
    "frequent-visits": {"min_visits": _NUMBER, "outpatient_med_types": _LIST, "chronic_med_types": _LIST},
    "multi-hospital-days": {"min_hospitals_per_day": _NUMBER, "min_days": _NUMBER},
    "pharmacy-spend": {"max_monthly_yuan": _NUMBER, "specialty_categories": _LIST},
    "trace-code-reuse": {},
    "indication-mismatch": {"lookback_days": _NUMBER},
    "institution-outlier": {
        "min_lines": _NUMBER,
        "min_flag_share": _NUMBER,
        "peer_multiple": _NUMBER,
        "growth_multiple": _NUMBER,
        "min_growth_lines": _NUMBER,
    },
}


def check_parameters(rules: Iterable[RuleDefinition], file: str = "rules.yaml") -> None:
    """Raise KnowledgeBaseError naming the rule and field for a parameter of the wrong kind
    (defaults and region overrides). Unknown parameters are allowed (documentation)."""
    from rxguard.kb import KnowledgeBaseError

    for rule in rules:
        kinds = PARAMETERS.get(rule.id, {})
        sources = [("parameters", rule.parameters)] + [
            (f"region_overrides.{code}.parameters", o.parameters) for code, o in rule.region_overrides.items()
        ]
        for where, params in sources:
            for name, value in params.items():
                kind = kinds.get(name)
                ok = (
                    kind is None
                    or (kind == _NUMBER and isinstance(value, int | float) and not isinstance(value, bool))
                    or (kind == _FLAG and isinstance(value, bool))
                    or (kind == _LIST and isinstance(value, list))
                )
                if not ok:
                    raise KnowledgeBaseError(file, rule.id, f"{where}.{name}", f"expected a {kind}, got {value!r}")
