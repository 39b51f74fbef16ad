"""Helpers shared by the rule modules: rule lookup per region, severity steps, scopes.

Everything here is pure: no I/O, no clock, no randomness. A finding is a deterministic
function of the lines given to the engine.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date
from typing import Any

from rxguard.kb import Drug, KnowledgeBase, RuleDefinition
from rxguard.models import Finding, Scene, Severity
from rxguard.scope import Scope

_BY_RANK = (Severity.LOW, Severity.MEDIUM, Severity.HIGH)


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


def month_period(year: int, month: int) -> str:
    """A calendar month as the periods of findings, activity and the state name it: YYYY-MM
    (an f-string, 4x faster than strftime's "%Y-%m"; some callers make one a line)."""
    return f"{year:04d}-{month:02d}"


class RuleSet:
    """The rules of a knowledge base selected for some scenes, with per-region caches."""

    def __init__(self, kb: KnowledgeBase, scenes: Collection[Scene] | None = None) -> None:
        wanted = set(scenes) if scenes is not None else None
        self.rules: dict[str, RuleDefinition] = {
            rid: rule for rid, rule in kb.rules.items() if wanted is None or wanted & set(rule.scenes)
        }
        self._params: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._windows: dict[tuple[str, str | None], tuple[date, date]] = {}
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

    def window(self, rule_id: str, admdvs: str | None) -> tuple[date, date]:
        """The days a rule is active in a region (`RuleDefinition.window`; never when not selected)."""
        key = (rule_id, admdvs)
        found = self._windows.get(key)
        if found is None:
            rule = self.rules.get(rule_id)
            found = self._windows[key] = rule.window(admdvs) if rule is not None else (date.max, date.min)
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


def finding_scope(finding: Finding) -> Scope:
    """The reconciliation scope a finding belongs to (`rxguard.scope`)."""
    return Scope.of(finding)
