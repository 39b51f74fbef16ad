"""What every rule module declares, and the one way a rule turns a hit into a finding.

A rule module (`engine/rules/<rule_id with _>.py`) holds one `Rule` subclass:

- `id`, the `subject_type` of its findings, its `risk_weight` in the patient risk score
  (engine/risk.py), the `scenes` it can run in (rules.yaml picks among them), the
  national behaviour code (`behaviour_code`, answered as `vola_bhvr_type` by the
  3101/3102 bridge), whether its trigger lines are dispensing faults that count for
  institution-outlier (`dispensing`), and the synthetic scenarios whose patients must
  trigger it (`scenarios`, read by `rxguard synth` and `rxguard eval`);
- `Parameters`: a typed pydantic model holding every parameter with its default, in one
  place; rules.yaml (and its region overrides) only override them;
- `evaluate(...)`: the decision, returning `Hit`s (facts and figures, no prose);
- `explain(hit)`: the zh/en text of a hit, apart from the decision.

`Rule.finding(hit)` is the single place that builds a `Finding` from a hit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from rxguard.engine.common import RuleSet
from rxguard.kb import Drug, KnowledgeBase
from rxguard.models import ClaimLine, Finding, Scene, Severity
from rxguard.scope import Scope

Figures = dict[str, Any]  # a finding's figures (JSON values)
SubjectType = Literal["patient", "institution", "prescriber", "trace_code"]
ALL_SCENES = (Scene.PRE, Scene.IN, Scene.POST)


class Parameters(BaseModel):
    """A rule's parameters. Strict: a number is a number (not a string or a boolean), a flag
    a boolean; an unknown name is an error (a typo in rules.yaml fails at load)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


@dataclass
class Hit:
    """One thing a rule found: who, when, which lines, the figures; `facts` carries what
    `explain` needs to write the text (not stored); `notes` name the mitigations and
    remarks the text must mention, in order."""

    subject: Scope  # the reconciliation scope (`rxguard.scope`)
    severity: Severity
    occurred_at: datetime
    evidence: Iterable[str]
    figures: dict[str, Any]
    psn_no: str | None = None
    fixmedins_code: str | None = None
    bilg_dr_codg: str | None = None
    admdvs: str | None = None
    subject_type: SubjectType | None = None  # when a rule has findings of two kinds
    mitigations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    id_key: list[str] | None = None

    @classmethod
    def at_line(
        cls, psn_no: str, line: ClaimLine, severity: Severity, evidence: Iterable[str], figures: Figures, **more: Any
    ) -> Hit:
        """A patient hit located at one of its lines: its time, institution, prescriber, region."""
        subject, at = Scope.patient(psn_no), line.fee_ocur_time
        where = (line.fixmedins_code, line.bilg_dr_codg, line.admdvs)
        return cls(subject, severity, at, evidence, figures, psn_no, *where, **more)


class Rule:
    """Base of the rule classes; subclasses declare the class attributes below."""

    id: ClassVar[str]
    subject_type: ClassVar[SubjectType]
    scenes: ClassVar[tuple[Scene, ...]] = ALL_SCENES
    behaviour_code: ClassVar[str]
    dispensing: ClassVar[bool] = False
    scenarios: ClassVar[tuple[str, ...]] = ()
    risk_weight: ClassVar[float] = 0.5  # how strongly a finding signals abuse, for the patient risk score (0-1)
    Parameters: ClassVar[type[Parameters]]

    def __init__(self, rules: RuleSet, kb: KnowledgeBase) -> None:
        self.rules = rules
        self.kb = kb
        self._params: dict[str | None, Any] = {}
        self._windows: dict[str | None, tuple[date, date]] = {}

    @property
    def enabled(self) -> bool:
        """Selected: in the knowledge base and in the engine's scenes."""
        return self.rules.has(self.id)

    def params(self, admdvs: str | None) -> Any:
        """The typed parameters for a region (defaults, rules.yaml, region override)."""
        found = self._params.get(admdvs)
        if found is None:
            found = self.Parameters.model_validate(self.rules.params(self.id, admdvs))
            self._params[admdvs] = found
        return found

    def severity(self, admdvs: str | None) -> Severity:
        return self.rules.severity(self.id, admdvs)

    def active(self, on: date, admdvs: str | None) -> bool:
        window = self._windows.get(admdvs)  # a hot path: ~5 calls a line (few regions, many days)
        if window is None:
            window = self._windows[admdvs] = self.rules.window(self.id, admdvs)
        return window[0] <= on <= window[1]

    def applies(self, drug: Drug) -> bool:
        return self.rules.applies(self.id, drug)

    def explain(self, hit: Hit) -> tuple[str, str]:
        raise NotImplementedError

    def finding(self, hit: Hit) -> Finding:
        """The finding of a hit: its id comes from the rule, the subject and the evidence
        lines (or `hit.id_key`, e.g. the calendar month, for aggregate rules)."""
        definition = self.rules.rule(self.id)
        zh, en = self.explain(hit)
        lines = sorted(set(hit.evidence))
        key = lines if hit.id_key is None else hit.id_key
        return Finding(
            finding_id=Finding.make_id(definition.id, hit.subject, key),
            rule_id=definition.id,
            rule_version=definition.version,
            severity=hit.severity,
            subject_type=hit.subject_type or self.subject_type,
            psn_no=hit.psn_no,
            fixmedins_code=hit.fixmedins_code,
            bilg_dr_codg=hit.bilg_dr_codg,
            admdvs=hit.admdvs,
            occurred_at=hit.occurred_at,
            evidence=lines,
            figures=hit.figures,
            mitigations=sorted(set(hit.mitigations)),
            explanation_zh=zh,
            explanation_en=en,
        )
