"""What a letter says, as plain data for the templates: addressee, number, dates, the
findings with their evidence lines and figures, the legal basis and the response asked.

Pure functions, no I/O. Patient numbers appear masked (`**************001X`); the keys
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
# Labels of the figures the engine reports (rxguard.engine); unknown keys are shown as they are.
FIGURE_ZH = {
    "ingredient_atc": "成分ATC编码",
    "atc_code": "ATC编码",
    "drug_code": "药品编码",
    "med_list_codg": "医保药品编码",
    "med_list_name": "药品名称",
    "dispensed_on": "发药日期",
    "previous_dispensed_on": "前次发药日期",
    "quantity_units": "数量（最小单位）",
    "days_supply": "供应天数",
    "days_supplied": "供应天数",
    "previous_days_supplied": "前次供应天数",
    "allowed_days": "允许天数",
    "limit_basis": "限量依据",
    "ratio": "超出倍数",
    "max_daily_dose": "说明书最大日剂量",
    "prd_days": "处方用药天数",
    "sin_dos_dscr": "单次剂量",
    "used_frqu_dscr": "用药频次",
    "used_fraction": "前次药量已用比例",
    "used_fraction_threshold": "已用比例阈值",
    "elapsed_days": "间隔天数",
    "stock_days": "结余天数",
    "stock_before_days": "购药前结余天数",
    "peak_stock_days": "最高结余天数",
    "peak_on": "最高结余日期",
    "tolerance_days": "容差天数",
    "carry_tolerance_days": "结转容差天数",
    "first_exceeded_on": "首次超标日期",
    "fills": "购药次数",
    "days_supplied_total": "累计供应天数",
    "overlapping_institutions": "重叠机构",
    "lookback_days": "回溯天数",
    "window_days": "统计窗口（天）",
    "overlap_days": "供药期重叠天数",
    "min_overlap_days": "重叠天数阈值",
    "institutions": "机构数",
    "pharmacies": "药店数",
    "period": "统计期间",
    "visits": "就诊次数",
    "chronic_disease_visits": "门诊慢特病就诊次数",
    "other_visits": "其他就诊次数",
    "threshold_visits": "就诊次数阈值",
    "days": "日期",
    "hospitals_per_day": "单日就诊医院数",
    "threshold_hospitals_per_day": "单日医院数阈值",
    "threshold_days": "天数阈值",
    "pharmacy_spend_yuan": "药店购药金额（元）",
    "specialty_spend_yuan": "其中特药金额（元）",
    "threshold_yuan": "金额阈值（元）",
    "trace_code": "药品追溯码",
    "first_sold_at": "首次销售时间",
    "first_institution": "首次销售机构",
    "first_line": "首次销售明细",
    "sale_number": "第几次销售",
    "times_in_line": "同一明细内出现次数",
    "same_patient": "是否同一参保人",
    "restricted_indications": "限定支付范围（ICD-10）",
    "diagnoses": "诊断",
    "institution_kind": "机构类别",
    "monitored_lines": "重点监控药品明细数",
    "flagged_lines": "疑点明细数",
    "flagged_share": "疑点明细占比",
    "peer_median_share": "同类机构占比中位数",
    "growth": "用量增长倍数",
    "peer_median_growth": "同类机构增长中位数",
    "peers": "同类机构数",
    "signals": "异常信号",
    # issue 13's rules
    "rate": "疑点明细占比",
    "peer_rate": "同类机构合计占比",
    "volume": "重点监控药品明细数（判定窗口）",
    "control_limit": "控制上限（漏斗图）",
    "window": "判定窗口",
    "overrides_in_window": "期内申报特殊原因次数",
    "atc_class": "药品类别（ATC 4级）",
    "ingredients": "成分",
    "prescribers": "医师数",
    "hours_apart": "相隔小时数",
    "first_admdvs": "首次区划",
    "second_admdvs": "再次区划",
}
# Figures that are parameters or plumbing rather than facts about the case.
HIDDEN_FIGURES = {
    "trigger_lines", "max_daily_dose_unit", "min_lines", "min_flag_share", "peer_multiple", "growth_multiple",
    "evidence_truncated", "windows", "z_limit", "min_rate_ratio", "min_rate", "min_flagged", "max_overrides",
    "window_days", "min_institutions", "min_prescribers", "limit_hours", "regions_differ_in", "trigger_lines_count",
}  # fmt: skip

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
    trigger: bool = False  # a line the finding blames (not only context)


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
    evidence_more: int  # evidence lines left out of the letter (settings.letter_evidence_cap)
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


def mask_psn(psn_no: str) -> str:
    """A patient number as letters show it: the last 4 characters, when that keeps at
    most a third of it visible (rxguard.privacy.mask), e.g. `**************0017`."""
    return mask(psn_no, head=0, tail=4)


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
        if key in HIDDEN_FIGURES or value is None:
            continue
        if key == "max_daily_dose" and figures.get("max_daily_dose_unit"):
            rows.append((FIGURE_ZH[key], f"{_fmt(value)} {figures['max_daily_dose_unit']}"))
        elif "psn" in key.lower():
            values = value if isinstance(value, list | tuple) else [value]
            rows.append(("参保人", "、".join(mask_psn(str(v)) for v in values)))
        else:
            rows.append((FIGURE_ZH.get(key, key), _fmt(value)))
    return rows


def _evidence(
    finding: Finding, lines: Mapping[str, ClaimLine], names: Mapping[str, str], cap: int
) -> list[EvidenceRow]:
    blamed = finding.figures.get("trigger_lines")
    triggers = set(blamed) if isinstance(blamed, list) and len(finding.evidence) > 1 else set()
    rows = []
    for line_id in finding.evidence[:cap]:
        line = lines.get(line_id)
        if line is None:
            rows.append(EvidenceRow(line_id=line_id, institution=line_id.split("/", 1)[0], trigger=line_id in triggers))
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
                patient=mask_psn(line.psn_no),
                trigger=line_id in triggers,
            )
        )
    return rows


def _rows(
    findings: Sequence[Finding],
    kb: KnowledgeBase,
    lines: Mapping[str, ClaimLine],
    names: Mapping[str, str],
    cap: int,
) -> list[FindingRow]:
    ordered = sorted(findings, key=lambda f: (-f.severity.rank, f.occurred_at, f.finding_id))
    out = []
    for i, f in enumerate(ordered, start=1):
        rule = kb.rules.get(f.rule_id)
        explanation = f.explanation_zh.replace(f.psn_no, mask_psn(f.psn_no)) if f.psn_no else f.explanation_zh
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
                patient=mask_psn(f.psn_no) if f.psn_no else "",
                explanation_zh=explanation,
                evidence=_evidence(f, lines, names, cap),
                evidence_more=max(len(f.evidence) - cap, 0),
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
        addressee = f"参保人（人员编号：{mask_psn(subject)}）"
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
        findings=_rows(findings, kb, lines, institution_names, settings.letter_evidence_cap),
        legal_basis=basis,
        period=(date_zh(times[0].date()), date_zh(times[-1].date())),
        counts={k: v for k, v in counts.items() if v},
        source=list(findings),
    )
