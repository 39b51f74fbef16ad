"""The rule catalogue: one module per rule, named after the rule id (`early-refill` ->
`early_refill.py`). This registry is the one list of rules: the engine, the national
behaviour codes of the 3101/3102 bridge, the synthetic generator's labels and
`rxguard eval` read it. Adding a rule: its module, its entry here, its rules.yaml entry,
its tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import ValidationError

from rxguard.engine.rules.base import Hit, Parameters, Rule, SubjectType
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
from rxguard.kb import KnowledgeBaseError, RuleDefinition
from rxguard.models import Finding, Severity

CATALOGUE: Mapping[str, type[Rule]] = {
    r.id: r
    for r in (
        OverQuantity,
        EarlyRefill,
        CumulativeOversupply,
        CrossInstitutionRepeat,
        FrequentVisits,
        MultiHospitalDays,
        PharmacySpend,
        TraceCodeReuse,
        IndicationMismatch,
        InstitutionOutlier,
        OverrideFrequency,
        TherapeuticDuplication,
        MultiProvider,
        IdentityMisuse,
    )
}
RULE_IDS: tuple[str, ...] = tuple(CATALOGUE)
# Rules whose findings are about a patient (scope `patient:<psn_no>`).
PATIENT_RULES: tuple[str, ...] = tuple(i for i, r in CATALOGUE.items() if r.subject_type == "patient")
# Rules that judge what an institution dispensed (their trigger lines count for institution-outlier).
DISPENSING_RULES = frozenset(i for i, r in CATALOGUE.items() if r.dispensing)
OTHER_BEHAVIOUR = "99"


def behaviour_code(rule_id: str) -> str:
    """The national behaviour type (`vola_bhvr_type`) of a rule; 99 for an unknown rule."""
    rule = CATALOGUE.get(rule_id)
    return rule.behaviour_code if rule is not None else OTHER_BEHAVIOUR


def scenario_rules(scenarios: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """For each synthetic scenario, the rules whose patients it must flag (registry order)."""
    return {s: tuple(i for i, r in CATALOGUE.items() if s in r.scenarios) for s in scenarios}


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


def check_definitions(rules: Iterable[RuleDefinition], file: str = "rules.yaml") -> None:
    """Raise KnowledgeBaseError naming the rule and field for a rule without a module, a
    scene the rule cannot run in, or a parameter of the wrong kind or name (defaults and
    region overrides), so a typo in rules.yaml fails when an engine is built."""
    for rule in rules:
        cls = CATALOGUE.get(rule.id)
        if cls is None:
            raise KnowledgeBaseError(
                file, rule.id, "id", f"no rule module for {rule.id!r} (known: {', '.join(RULE_IDS)})"
            )
        extra = [str(s) for s in rule.scenes if s not in cls.scenes]
        if extra:
            raise KnowledgeBaseError(file, rule.id, "scenes", f"the rule cannot run in scene(s) {', '.join(extra)}")
        sources = [("parameters", rule.parameters)] + [
            (f"region_overrides.{code}.parameters", {**rule.parameters, **o.parameters})
            for code, o in rule.region_overrides.items()
        ]
        for where, params in sources:
            try:
                cls.Parameters.model_validate(params)
            except ValidationError as exc:
                err = exc.errors()[0]
                name = ".".join(str(p) for p in err["loc"])
                raise KnowledgeBaseError(
                    file, rule.id, f"{where}.{name}", f"{err['msg']}, got {err['input']!r}"
                ) from exc


__all__ = [
    "CATALOGUE",
    "DISPENSING_RULES",
    "PATIENT_RULES",
    "RULE_IDS",
    "Hit",
    "Parameters",
    "Rule",
    "SubjectType",
    "behaviour_code",
    "check_definitions",
    "flagged_line_ids",
    "scenario_rules",
    "trigger_lines",
]
