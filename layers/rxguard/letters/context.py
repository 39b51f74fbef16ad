"""What a letter says, as plain data for the templates: addressee, number, dates, the
findings with their evidence and figures, the legal basis and the response asked.

Pure functions, no I/O. Everything the addressee reads is Chinese (docs/letters.md):
rule names, not ids; Chinese labels and values; shares as percentages; dates as
2026年3月1日; finding ids replaced by short reference numbers (`12-3`: the letter's serial
and the row). Patient numbers appear masked (`**************001X`); the keys of stored
letters use the keyed pseudonym, never the number.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from rxguard.alerts.schema import pseudonym
from rxguard.alerts.settings import AlertSettings
from rxguard.kb import KnowledgeBase
from rxguard.letters.numbers import document_number
from rxguard.models import ClaimLine, Finding, Severity
from rxguard.privacy import mask, neutralise_csv_cell

SEVERITY_ZH = {Severity.HIGH: "高", Severity.MEDIUM: "中", Severity.LOW: "低"}
SUBJECT_ZH = {"patient": "参保人", "institution": "定点医药机构", "prescriber": "医师", "trace_code": "追溯码"}
MITIGATION_ZH = {
    "lt_rx_flag": "长期处方",
    "dscg_tkdrug_flag": "出院带药",
    "chronic": "慢特病",
    "override_reason": "已说明原因",
    "override_reason:lost": "已说明原因（遗失补开）",
    "override_reason:travel": "已说明原因（外出备药）",
    "override_reason:dose_change": "已说明原因（剂量调整）",
    "lost": "遗失补开",
    "travel": "外出备药",
    "dose_change": "剂量调整",
    "med_type_14": "门诊慢特病就诊",
    "specialty_drugs": "含特药",
}
# Values of figures that are codes of ours (limit basis, signals, kinds) in Chinese.
VALUE_ZH = {
    "acute": "急性病用药限量",
    "chronic": "慢性病用药限量",
    "long_term": "长期处方限量",
    "discharge": "出院带药限量",
    "one_pack": "整盒发药",
    "flagged_share": "疑点明细占比偏高",
    "volume_growth": "用量增长过快",
    "hospital": "医院",
    "pharmacy": "零售药店",
    "other": "其他机构",
}
# Figures that are shares (0-1): shown as percentages.
SHARE_FIGURES = {"used_fraction", "used_fraction_threshold", "flagged_share", "peer_median_share"}
# Figures that are dates (yyyy-mm-dd): shown as 2026年3月1日.
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_ISO_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
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
    "prescribers": "医师数",
    "hours_apart": "相隔小时数",
    "first_admdvs": "首次区划",
    "second_admdvs": "再次区划",
}
# Figures that are parameters or plumbing rather than facts about the case.
HIDDEN_FIGURES = {
    "trigger_lines", "max_daily_dose_unit", "min_lines", "min_flag_share", "peer_multiple", "growth_multiple",
    "evidence_truncated", "ingredient_atc", "atc_code", "first_line", "windows", "z_limit", "min_rate_ratio",
    "min_rate", "min_flagged", "max_overrides", "window_days", "min_institutions", "min_prescribers", "limit_hours",
    "regions_differ_in", "trigger_lines_count", "atc_class", "ingredients", "institution_codes",
}  # fmt: skip

LetterKind = Literal["提醒函", "警示函"]
Period = Literal["month", "quarter", "year"]
QUARTER_ZH = ("一", "二", "三", "四")


class LetterRenderError(ValueError):
    """A letter cannot be rendered (font missing, template error); names the file. Here, not
    in `letters.pdf`, so rendering HTML does not load reportlab (~0.6 s)."""


@dataclass(frozen=True)
class Person:
    """A patient's name and postal address from the bureau's person file."""

    name: str
    address: str
    postcode: str = ""


def period_of(moment: datetime | date, period: Period) -> tuple[str, str]:
    """(key, Chinese label) of the period holding `moment`: ("2026-03", "2026年3月"),
    ("2026-Q1", "2026年第一季度") or ("2026", "2026年")."""
    if period == "year":
        return f"{moment.year}", f"{moment.year}年"
    if period == "quarter":
        q = (moment.month - 1) // 3
        return f"{moment.year}-Q{q + 1}", f"{moment.year}年第{QUARTER_ZH[q]}季度"
    return f"{moment.year}-{moment.month:02d}", f"{moment.year}年{moment.month}月"


@dataclass(frozen=True)
class FindingRow:
    index: int
    ref: str  # short reference number shown in the letter: `<serial>-<index>`
    finding_id: str  # kept for the index and the annex, never printed in the letter body
    rule_id: str
    rule_name_zh: str
    severity: str  # 高 / 中 / 低
    severity_code: str  # high / medium / low
    subject_zh: str
    occurred_on: str  # 2026年3月2日
    patient: str  # masked psn_no or ""
    drug: str
    explanation_zh: str
    figures: list[tuple[str, str]]
    mitigations: list[str]
    evidence: list[str]  # one Chinese sentence per evidence line (capped)
    evidence_more: int  # evidence lines left out of the letter


@dataclass(frozen=True)
class LegalBasis:
    rule_id: str
    rule_name_zh: str
    text: str


@dataclass
class LetterContext:
    letter_id: str  # `institution-<code>-<period>` / `patient-<pseudonym>-<period>`: file name, announcement id
    addressee_type: Literal["institution", "patient"]
    kind: LetterKind
    number: str
    serial: int
    batch_id: str
    period_key: str
    period_label: str
    issued_on: date
    response_due: date
    response_working_days: int
    title: str
    addressee_zh: str
    address: Person | None
    institution_id: str | None
    psn_pseudonym: str | None
    issuer_zh: str
    contact_zh: str
    findings: list[FindingRow]  # every finding (the annex has them all)
    table_rows: int  # rows shown in the letter's table
    legal_basis: list[LegalBasis]
    counts: dict[str, int] = field(default_factory=dict)  # by severity (zh)
    annex_name: str | None = None  # the CSV annex's file name when the table is capped
    source: list[Finding] = field(default_factory=list)

    @property
    def shown(self) -> list[FindingRow]:
        return self.findings[: self.table_rows]

    @property
    def more(self) -> int:
        return max(len(self.findings) - self.table_rows, 0)

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


def tail_psn(psn_no: str) -> str:
    """The short form in a table cell: 尾号0017 (the same characters `mask_psn` shows)."""
    visible = mask_psn(psn_no).lstrip("*")
    return f"尾号{visible}" if visible else "（已隐去）"


def date_zh(day: date) -> str:
    """GB/T 9704: Arabic figures, the year in full, no padding: 2026年3月5日."""
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


def _number(value: float) -> str:
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return text


def value_zh(key: str, value: Any) -> str | None:
    """A figure's value as the letter shows it; None when it cannot be said in Chinese."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "是" if value else "否"
    if key in SHARE_FIGURES and isinstance(value, int | float):
        return f"{round(value * 100)}%"
    if isinstance(value, int | float):
        return _number(float(value))
    if isinstance(value, list | tuple):
        parts = [value_zh(key, v) for v in value]
        return "、".join(p for p in parts if p) or None
    if isinstance(value, dict):
        return None
    text = str(value)
    if text in VALUE_ZH:
        return VALUE_ZH[text]
    match = _ISO_DATE.match(text[:10])
    if match:
        year, month, day = (int(g) for g in match.groups())
        return f"{year}年{month}月{day}日" + text[10:].replace("T", " ")
    match = _ISO_MONTH.match(text)
    if match:
        return f"{int(match.group(1))}年{int(match.group(2))}月"
    if re.search(r"[a-z]{2,}", text):  # an English word or one of our ids: not for the letter
        return None
    return text


def _figures(figures: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in figures.items():
        if key in HIDDEN_FIGURES or (key not in FIGURE_ZH and "psn" not in key.lower()):
            continue
        if "psn" in key.lower():
            values = value if isinstance(value, list | tuple) else [value]
            rows.append(("参保人", "、".join(mask_psn(str(v)) for v in values)))
            continue
        if key == "max_daily_dose" and figures.get("max_daily_dose_unit"):
            text = value_zh(key, value)
            unit = str(figures["max_daily_dose_unit"])
            if text is not None and not re.search(r"[A-Za-z]{2,}", unit):
                rows.append((FIGURE_ZH[key], f"{text}{unit}"))
            continue
        shown = value_zh(key, value)
        if shown:
            rows.append((FIGURE_ZH[key], shown))
    return rows


_RULE_NAMES: dict[int, tuple[KnowledgeBase, re.Pattern[str], dict[str, str]]] = {}
_ISO_DAY = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
_ISO_MONTH = re.compile(r"(?<![\d-])(\d{4})-(\d{2})(?![\d-])")


def _rule_names(kb: KnowledgeBase) -> tuple[re.Pattern[str], dict[str, str]]:
    """One pattern for every rule id of `kb` (longest first, with an optional version), and
    the Chinese name of each: a letter's rows are thousands at a million lines."""
    cached = _RULE_NAMES.get(id(kb))
    if cached is None or cached[0] is not kb:
        ids = sorted(kb.rules, key=len, reverse=True)
        pattern = re.compile(f"({'|'.join(map(re.escape, ids))})(?: ?v\\d+)?")
        cached = _RULE_NAMES[id(kb)] = (kb, pattern, {rule_id: rule.name_zh for rule_id, rule in kb.rules.items()})
    return cached[1], cached[2]


def clean_text(text: str, kb: KnowledgeBase) -> str:
    """The engine's Chinese explanation as a letter says it: our rule ids named in Chinese,
    ISO dates (2026-01-07) and months (2026-01) in Chinese form."""
    if kb.rules:
        pattern, names = _rule_names(kb)
        text = pattern.sub(lambda m: names[m[1]], text)
    text = _ISO_DAY.sub(lambda m: f"{int(m[1])}年{int(m[2])}月{int(m[3])}日", text)
    return _ISO_MONTH.sub(lambda m: f"{int(m[1])}年{int(m[2])}月", text)


def _evidence(finding: Finding, lines: Mapping[str, ClaimLine], names: Mapping[str, str], cap: int) -> list[str]:
    out = []
    for line_id in finding.evidence[:cap]:
        line = lines.get(line_id)
        institution, _, serial = line_id.partition("/")
        if line is None:
            out.append(f"{names.get(institution, institution)}，流水号{serial}")
            continue
        unit = "（拆零）" if line.trdn_flag else ""
        days = f"，可用{_number(round(line.days_supply, 1))}天" if line.days_supply is not None else ""
        where = names.get(line.fixmedins_code) or line.fixmedins_name or line.fixmedins_code
        drug = line.med_list_name or line.med_list_codg
        out.append(
            f"{date_zh(line.fee_ocur_time.date())}{where}{drug}数量{_number(line.cnt)}{unit}"
            f"，{_number(line.det_item_fee_sumamt)}元{days}（流水号{line.feedetl_sn}）"
        )
    return out


def _drug(finding: Finding, lines: Mapping[str, ClaimLine], kb: KnowledgeBase) -> str:
    for line_id in reversed(finding.evidence):
        line = lines.get(line_id)
        if line is not None and (line.med_list_name or line.med_list_codg):
            return line.med_list_name or line.med_list_codg
    code = finding.figures.get("drug_code") or finding.figures.get("med_list_codg")
    drug = kb.drugs.get(str(code)) if code else None
    return drug.generic_name_zh if drug else ""


def _rows(
    findings: Sequence[Finding],
    kb: KnowledgeBase,
    lines: Mapping[str, ClaimLine],
    names: Mapping[str, str],
    cap: int,
    serial: int,
) -> list[FindingRow]:
    ordered = sorted(findings, key=lambda f: (-f.severity.rank, f.occurred_at, f.finding_id))
    out = []
    for i, f in enumerate(ordered, start=1):
        rule = kb.rules.get(f.rule_id)
        explanation = f.explanation_zh.replace(f.psn_no, mask_psn(f.psn_no)) if f.psn_no else f.explanation_zh
        out.append(
            FindingRow(
                index=i,
                ref=f"{serial}-{i}",
                finding_id=f.finding_id,
                rule_id=f.rule_id,
                rule_name_zh=rule.name_zh if rule else "其他疑点",
                severity=SEVERITY_ZH[f.severity],
                severity_code=f.severity.value,
                subject_zh=SUBJECT_ZH.get(f.subject_type, "其他"),
                occurred_on=date_zh(f.occurred_at.date()),
                patient=tail_psn(f.psn_no) if f.psn_no else "",
                drug=_drug(f, lines, kb),
                explanation_zh=clean_text(explanation, kb),
                figures=_figures(f.figures),
                mitigations=[MITIGATION_ZH[m] for m in f.mitigations if m in MITIGATION_ZH],
                evidence=_evidence(f, lines, names, cap),
                evidence_more=max(len(f.evidence) - cap, 0),
            )
        )
    return out


def letter_id_of(
    addressee_type: Literal["institution", "patient"],
    subject: str,
    period_key: str,
    serial: int,
    supplement: bool,
    settings: AlertSettings,
) -> str:
    """A letter's id (its file name and announcement id) before it is built:
    `institution-<code>-<period>` / `patient-<pseudonym>-<period>`, `-s<serial>` for a
    supplementary letter of the period (its own file)."""
    suffix = f"-s{serial}" if supplement else ""
    if addressee_type == "institution":
        return f"institution-{subject}-{period_key}{suffix}"
    return f"patient-{pseudonym(subject, settings.pseudonym_key)}-{period_key}{suffix}"


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
    serial: int = 1,
    period: tuple[str, str] | None = None,
    person: Person | None = None,
    supplement: bool = False,
) -> LetterContext:
    """One letter to `subject` (a fixmedins_code, or a psn_no for a patient letter) for
    one period, numbered `serial` in its bureau's series of the year."""
    kind: LetterKind = "警示函" if any(f.severity is Severity.HIGH for f in findings) else "提醒函"
    times = sorted(f.occurred_at for f in findings)
    period_key, period_label = period or period_of(times[0], settings.letter_period)
    more = "（补充）" if supplement else ""
    letter_id = letter_id_of(addressee_type, subject, period_key, serial, supplement, settings)
    if addressee_type == "institution":
        name = institution_names.get(subject)
        addressee = name or f"定点医药机构（编码{subject}）"
        title = f"关于{name or '贵单位'}{period_label}医保药品超量开药疑点的{kind}{more}"
        institution_id: str | None = subject
        psn_token: str | None = None
    else:
        psn_token = pseudonym(subject, settings.pseudonym_key)
        addressee = f"{person.name}同志" if person else f"参保人（人员编号{mask_psn(subject)}）"
        title = f"医保药品合理购药{kind}{more}"
        institution_id = None
    rule_ids = sorted({f.rule_id for f in findings})
    basis = []
    for rule_id in rule_ids:
        rule = kb.rules.get(rule_id)
        if rule is not None:
            basis.append(LegalBasis(rule_id, rule.name_zh, rule.legal_basis_zh or "（规则库未载明）"))
    counts = {SEVERITY_ZH[s]: sum(1 for f in findings if f.severity is s) for s in Severity}
    rows = _rows(findings, kb, lines, institution_names, settings.letter_evidence_cap, serial)
    capped = len(rows) > settings.letter_table_rows
    return LetterContext(
        letter_id=letter_id,
        addressee_type=addressee_type,
        kind=kind,
        number=document_number(settings.issuer_abbr_zh, issued_on.year, serial),
        serial=serial,
        batch_id=batch_id,
        period_key=period_key,
        period_label=period_label,
        issued_on=issued_on,
        response_due=add_working_days(issued_on, settings.response_working_days, settings.holidays),
        response_working_days=settings.response_working_days,
        title=title,
        addressee_zh=addressee,
        address=person if addressee_type == "patient" else None,
        institution_id=institution_id,
        psn_pseudonym=psn_token,
        issuer_zh=settings.issuer_name_zh,
        contact_zh=settings.contact_zh,
        findings=rows,
        table_rows=settings.letter_table_rows,
        legal_basis=basis,
        counts={k: v for k, v in counts.items() if v},
        annex_name=f"{letter_id}-annex.csv" if capped else None,
        source=list(findings),
    )


ANNEX_COLUMNS = (
    "疑点编号", "疑点类型", "风险等级", "发生日期", "参保人", "药品", "疑点说明", "关键指标", "已考虑情形", "证据明细",
    "系统编号",
)  # fmt: skip


def annex_csv(letter: LetterContext) -> bytes:
    """Every finding of the letter as CSV (UTF-8 with BOM: Excel and WPS open it as is);
    cells that a spreadsheet would run as formulas are neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(ANNEX_COLUMNS)
    for row in letter.findings:
        cells = [
            row.ref,
            row.rule_name_zh,
            row.severity,
            row.occurred_on,
            row.patient,
            row.drug,
            row.explanation_zh,
            "；".join(f"{label}：{value}" for label, value in row.figures),
            "、".join(row.mitigations),
            "；".join(row.evidence) + (f"；另有{row.evidence_more}条" if row.evidence_more else ""),
            row.finding_id,
        ]
        writer.writerow([neutralise_csv_cell(c) for c in cells])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")
