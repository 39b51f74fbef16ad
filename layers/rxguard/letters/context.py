"""What a letter says, as plain data for the templates: addressee, number, dates, the
findings with their evidence lines and figures, the legal basis and the response asked.

Pure functions, no I/O. Patient numbers appear masked (`3101**********001X`); the keys
of stored letters use the keyed pseudonym, never the number.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from rxguard.alerts.schema import pseudonym
from rxguard.alerts.settings import AlertSettings
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding, Severity
from rxguard.privacy import mask

SEVERITY_ZH = {Severity.HIGH: "高", Severity.MEDIUM: "中", Severity.LOW: "低"}
SUBJECT_ZH = {"patient": "参保人", "institution": "定点医药机构", "prescriber": "医师", "trace_code": "追溯码"}
MITIGATION_ZH = {
    "lt_rx_flag": "长期处方",
    "dscg_tkdrug_flag": "出院带药",
    "chronic": "慢特病",
    "override_reason": "已说明原因",
    "lost": "遗失补开",
    "travel": "外出备药",
    "dose_change": "剂量调整",
}
# Labels of the figures the engine reports; unknown keys are shown as they are.
FIGURE_ZH = {
    "days_supply": "供应天数",
    "allowed_days": "允许天数",
    "max_days": "允许天数",
    "ratio": "倍数",
    "used_fraction": "已用比例",
    "elapsed_days": "间隔天数",
    "previous_days_supply": "前次供应天数",
    "stock_days": "结余天数",
    "window_days": "统计窗口（天）",
    "visits": "就诊次数",
    "month": "月份",
    "hospitals": "医院数",
    "days": "天数",
    "amount": "金额（元）",
    "spend": "金额（元）",
    "threshold": "阈值",
    "institutions": "机构数",
    "sales": "销售次数",
    "quantity_units": "数量（最小单位）",
    "atc_code": "ATC编码",
    "drug_code": "药品编码",
    "diagnoses": "诊断",
}

LetterKind = Literal["提醒函", "警示函"]


@dataclass(frozen=True)
class EvidenceRow:
    line_id: str
    time: str = ""
    institution: str = ""
    drug: str = ""
    quantity: str = ""
    amount: str = ""
    days_supply: str = ""
    patient: str = ""


@dataclass(frozen=True)
class FindingRow:
    index: int
    finding_id: str
    rule_id: str
    rule_name_zh: str
    rule_version: int
    severity: str  # 高 / 中 / 低
    severity_code: str  # high / medium / low
    subject_zh: str
    occurred_at: str
    patient: str  # masked psn_no or ""
    explanation_zh: str
    evidence: list[EvidenceRow]
    figures: list[tuple[str, str]]
    mitigations: list[str]


@dataclass(frozen=True)
class LegalBasis:
    rule_id: str
    rule_name_zh: str
    text: str


@dataclass
class LetterContext:
    letter_id: str  # `institution-<code>` / `patient-<pseudonym>`: file name and announcement id
    addressee_type: Literal["institution", "patient"]
    kind: LetterKind
    number: str
    batch_id: str
    issued_on: date
    response_due: date
    response_working_days: int
    addressee_zh: str
    institution_id: str | None
    psn_pseudonym: str | None
    issuer_zh: str
    contact_zh: str
    findings: list[FindingRow]
    legal_basis: list[LegalBasis]
    period: tuple[str, str]
    counts: dict[str, int] = field(default_factory=dict)  # by severity (zh)
    source: list[Finding] = field(default_factory=list)

    def template_vars(self) -> dict[str, Any]:
        return {
            "letter": self,
            "issued_on_zh": date_zh(self.issued_on),
            "response_due_zh": date_zh(self.response_due),
            "high_count": sum(1 for f in self.findings if f.severity_code == "high"),
        }


def date_zh(day: date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def add_working_days(start: date, days: int, holidays: Iterable[date] = ()) -> date:
    """The date `days` working days after `start` (weekends and the given holidays skipped)."""
    off = set(holidays)
    current, left = start, days
    while left > 0:
        current += timedelta(days=1)
        if current.weekday() < 5 and current not in off:
            left -= 1
    return current


def letter_number(batch_id: str, letter_id: str, kind: LetterKind, year: int, abbr: str) -> str:
    """Deterministic number from batch and addressee: `医保监警〔2026〕0123456789号`."""
    digest = hashlib.sha256(f"{batch_id}\x1f{letter_id}".encode()).hexdigest()
    serial = int(digest[:12], 16) % 10**10
    return f"{abbr}{'警' if kind == '警示函' else '提'}〔{year}〕{serial:010d}号"


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, list | tuple):
        return "、".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return "；".join(f"{k}：{_fmt(v)}" for k, v in value.items())
    return str(value)


def _figures(figures: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in figures.items():
        if "psn" in key.lower():
            values = value if isinstance(value, list | tuple) else [value]
            rows.append(("参保人", "、".join(mask(str(v)) for v in values)))
        else:
            rows.append((FIGURE_ZH.get(key, key), _fmt(value)))
    return rows


def _evidence(finding: Finding, lines: Mapping[str, ClaimLine], names: Mapping[str, str]) -> list[EvidenceRow]:
    rows = []
    for line_id in finding.evidence:
        line = lines.get(line_id)
        if line is None:
            rows.append(EvidenceRow(line_id=line_id, institution=line_id.split("/", 1)[0]))
            continue
        unit = "（拆零）" if line.trdn_flag else ""
        rows.append(
            EvidenceRow(
                line_id=line_id,
                time=line.fee_ocur_time.strftime("%Y-%m-%d %H:%M"),
                institution=names.get(line.fixmedins_code) or line.fixmedins_name or line.fixmedins_code,
                drug=line.med_list_name or line.med_list_codg,
                quantity=f"{_fmt(line.cnt)}{unit}",
                amount=f"{line.det_item_fee_sumamt:.2f}",
                days_supply=_fmt(round(line.days_supply, 1)) if line.days_supply is not None else "",
                patient=mask(line.psn_no),
            )
        )
    return rows


def _rows(
    findings: Sequence[Finding], kb: KnowledgeBase, lines: Mapping[str, ClaimLine], names: Mapping[str, str]
) -> list[FindingRow]:
    ordered = sorted(findings, key=lambda f: (-f.severity.rank, f.occurred_at, f.finding_id))
    out = []
    for i, f in enumerate(ordered, start=1):
        rule = kb.rules.get(f.rule_id)
        explanation = f.explanation_zh.replace(f.psn_no, mask(f.psn_no)) if f.psn_no else f.explanation_zh
        out.append(
            FindingRow(
                index=i,
                finding_id=f.finding_id,
                rule_id=f.rule_id,
                rule_name_zh=rule.name_zh if rule else f.rule_id,
                rule_version=f.rule_version,
                severity=SEVERITY_ZH[f.severity],
                severity_code=f.severity.value,
                subject_zh=SUBJECT_ZH.get(f.subject_type, f.subject_type),
                occurred_at=f.occurred_at.strftime("%Y-%m-%d %H:%M"),
                patient=mask(f.psn_no) if f.psn_no else "",
                explanation_zh=explanation,
                evidence=_evidence(f, lines, names),
                figures=_figures(f.figures),
                mitigations=[MITIGATION_ZH.get(m, m) for m in f.mitigations],
            )
        )
    return out


def build_letter(
    addressee_type: Literal["institution", "patient"],
    subject: str,
    findings: Sequence[Finding],
    *,
    batch_id: str,
    kb: KnowledgeBase,
    settings: AlertSettings,
    issued_on: date,
    institution_names: Mapping[str, str],
    lines: Mapping[str, ClaimLine],
) -> LetterContext:
    """One letter to `subject` (a fixmedins_code, or a psn_no for a patient letter)."""
    kind: LetterKind = "警示函" if any(f.severity is Severity.HIGH for f in findings) else "提醒函"
    if addressee_type == "institution":
        letter_id = f"institution-{subject}"
        name = institution_names.get(subject)
        addressee = f"{name}（定点医药机构编码：{subject}）" if name else f"定点医药机构 {subject}"
        institution_id: str | None = subject
        psn_token: str | None = None
    else:
        psn_token = pseudonym(subject, settings.pseudonym_key)
        letter_id = f"patient-{psn_token}"
        addressee = f"参保人（人员编号：{mask(subject)}）"
        institution_id = None
    rule_ids = sorted({f.rule_id for f in findings})
    basis = []
    for rule_id in rule_ids:
        rule = kb.rules.get(rule_id)
        if rule is not None:
            basis.append(LegalBasis(rule_id, rule.name_zh, rule.legal_basis_zh or "（规则库未载明）"))
    times = sorted(f.occurred_at for f in findings)
    counts = {SEVERITY_ZH[s]: sum(1 for f in findings if f.severity is s) for s in Severity}
    return LetterContext(
        letter_id=letter_id,
        addressee_type=addressee_type,
        kind=kind,
        number=letter_number(batch_id, letter_id, kind, issued_on.year, settings.issuer_abbr_zh),
        batch_id=batch_id,
        issued_on=issued_on,
        response_due=add_working_days(issued_on, settings.response_working_days, settings.holidays),
        response_working_days=settings.response_working_days,
        addressee_zh=addressee,
        institution_id=institution_id,
        psn_pseudonym=psn_token,
        issuer_zh=settings.issuer_name_zh,
        contact_zh=settings.contact_zh,
        findings=_rows(findings, kb, lines, institution_names),
        legal_basis=basis,
        period=(date_zh(times[0].date()), date_zh(times[-1].date())),
        counts={k: v for k, v in counts.items() if v},
        source=list(findings),
    )
