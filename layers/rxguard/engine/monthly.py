"""Calendar-month patient rules (Shanghai measures): frequent-visits, multi-hospital-days,
pharmacy-spend. They count every line, monitored or not. A month's finding keeps one id
(rule + patient + month), so a late line of that month updates it instead of adding one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date
from typing import Any

from rxguard.engine.common import RuleSet, lower, make_finding, num
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding, InstitutionKind, Severity


def month_of(line: ClaimLine) -> str:
    t = line.fee_ocur_time
    return f"{t.year:04d}-{t.month:02d}"


def _region(lines: Sequence[ClaimLine]) -> str | None:
    """The month's region: the most frequent admdvs (ties: the smallest code)."""
    counts = Counter(line.admdvs for line in lines)
    if len(counts) == 1:
        return next(iter(counts))
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0] or ""))[0]


class MonthlyRules:
    def __init__(self, rules: RuleSet, kb: KnowledgeBase) -> None:
        self.rules = rules
        self.kb = kb

    def evaluate(self, psn_no: str, timeline: Sequence[ClaimLine], flagged: set[str]) -> list[Finding]:
        rules = self.rules
        wanted = [r for r in ("frequent-visits", "multi-hospital-days", "pharmacy-spend") if rules.has(r)]
        if not wanted or not timeline:
            return []
        months: dict[str, list[ClaimLine]] = {}
        for line in timeline:
            months.setdefault(month_of(line), []).append(line)
        out: list[Finding] = []
        for period in sorted(months):
            lines = months[period]
            region = _region(lines)
            for rule_id in wanted:
                active = [ln for ln in lines if rules.active(rule_id, ln.day, ln.admdvs)]
                if not active:
                    continue
                if rule_id == "frequent-visits":
                    found = self._visits(psn_no, period, region, active)
                elif rule_id == "multi-hospital-days":
                    found = self._hospitals(psn_no, period, region, active)
                else:
                    found = self._spend(psn_no, period, region, active, flagged)
                if found is not None:
                    out.append(found)
        return out

    def _visits(self, psn_no: str, period: str, region: str | None, lines: list[ClaimLine]) -> Finding | None:
        p = self.rules.params("frequent-visits", region)
        minimum = int(p.get("min_visits", 15))
        outpatient = set(p.get("outpatient_med_types", ["11", "14", "13", "16", "19"]))
        chronic_types = set(p.get("chronic_med_types", ["14"]))
        visits: dict[tuple[str, str], list[ClaimLine]] = {}
        for line in lines:
            if line.med_type in outpatient:
                visits.setdefault((line.fixmedins_code, line.mdtrt_id), []).append(line)
        if len(visits) < minimum:
            return None
        ordered = sorted(visits.values(), key=lambda v: (v[0].fee_ocur_time, v[0].line_id))
        chronic = sum(1 for v in ordered if any(ln.med_type in chronic_types for ln in v))
        other = len(ordered) - chronic
        institutions = {v[0].fixmedins_code for v in ordered}
        rule = self.rules.rule("frequent-visits")
        severity = self.rules.severity("frequent-visits", region)
        zh = (
            f"{period} 该参保人门诊就诊 {len(ordered)} 次（{len(institutions)} 家机构），"
            f"达到单月 {minimum} 次的异常标准。"
        )
        en = (
            f"In {period} the patient had {len(ordered)} outpatient visits at {len(institutions)} "
            f"institution(s), at or above the threshold of {minimum} a month."
        )
        mitigations: list[str] = []
        if chronic and other < minimum:
            severity = Severity.LOW
            mitigations.append("med_type_14")
            zh += f"其中 {chronic} 次为门诊慢特病就诊，其余 {other} 次未达标准，仅作提示。"
            en += (
                f" {chronic} of them are registered chronic/special-disease visits (med_type 14); the other "
                f"{other} stay below the threshold, so this is informational."
            )
        figures: dict[str, Any] = {
            "period": period,
            "visits": len(ordered),
            "chronic_disease_visits": chronic,
            "other_visits": other,
            "institutions": len(institutions),
            "threshold_visits": minimum,
        }
        return make_finding(
            rule,
            severity=severity,
            subject_type="patient",
            subject=f"patient:{psn_no}",
            psn_no=psn_no,
            fixmedins_code=Counter(v[0].fixmedins_code for v in ordered).most_common(1)[0][0],
            admdvs=region,
            occurred_at=ordered[minimum - 1][0].fee_ocur_time,
            evidence=[ln.line_id for v in ordered for ln in v],
            figures=figures,
            mitigations=mitigations,
            explanation_zh=zh,
            explanation_en=en,
            id_key=[period],
        )

    def _hospitals(self, psn_no: str, period: str, region: str | None, lines: list[ClaimLine]) -> Finding | None:
        p = self.rules.params("multi-hospital-days", region)
        per_day_min = int(p.get("min_hospitals_per_day", 3))
        min_days = int(p.get("min_days", 3))
        days: dict[date, dict[str, list[ClaimLine]]] = {}
        for line in lines:
            if line.institution_kind is InstitutionKind.HOSPITAL:
                days.setdefault(line.day, {}).setdefault(line.fixmedins_code, []).append(line)
        hopping = sorted(d for d, hospitals in days.items() if len(hospitals) >= per_day_min)
        if len(hopping) < min_days:
            return None
        evidence = [ln.line_id for d in hopping for group in days[d].values() for ln in group]
        third = days[hopping[min_days - 1]]
        firsts = sorted(min(ln.fee_ocur_time for ln in group) for group in third.values())
        rule = self.rules.rule("multi-hospital-days")
        detail = "、".join(f"{d.isoformat()}（{len(days[d])}家）" for d in hopping)
        detail_en = ", ".join(f"{d.isoformat()} ({len(days[d])})" for d in hopping)
        return make_finding(
            rule,
            severity=self.rules.severity("multi-hospital-days", region),
            subject_type="patient",
            subject=f"patient:{psn_no}",
            psn_no=psn_no,
            fixmedins_code=min(third),
            admdvs=region,
            occurred_at=firsts[per_day_min - 1],
            evidence=evidence,
            figures={
                "period": period,
                "days": [d.isoformat() for d in hopping],
                "hospitals_per_day": [len(days[d]) for d in hopping],
                "threshold_hospitals_per_day": per_day_min,
                "threshold_days": min_days,
            },
            explanation_zh=(
                f"{period} 该参保人有 {len(hopping)} 天单日到 {per_day_min} 家及以上医院就诊：{detail}，"
                f"达到累计 {min_days} 天的异常标准。"
            ),
            explanation_en=(
                f"In {period} the patient visited {per_day_min} or more hospitals on one day on {len(hopping)} "
                f"days: {detail_en} (hospitals per day); the threshold is {min_days} such days."
            ),
            id_key=[period],
        )

    def _spend(
        self, psn_no: str, period: str, region: str | None, lines: list[ClaimLine], flagged: set[str]
    ) -> Finding | None:
        p = self.rules.params("pharmacy-spend", region)
        limit = float(p.get("max_monthly_yuan", 8000))
        categories = set(p.get("specialty_categories", []))
        at_pharmacy = [ln for ln in lines if ln.institution_kind is InstitutionKind.PHARMACY]
        total = 0.0
        crossed: ClaimLine | None = None
        specialty = 0.0
        for line in at_pharmacy:
            total += line.det_item_fee_sumamt
            if crossed is None and total > limit + 1e-9:
                crossed = line
            drug = self.kb.drug(line.med_list_codg)
            if drug is not None and categories & set(drug.categories) and line.line_id not in flagged:
                specialty += line.det_item_fee_sumamt
        if crossed is None:
            return None
        rule = self.rules.rule("pharmacy-spend")
        severity = self.rules.severity("pharmacy-spend", region)
        pharmacies = Counter(ln.fixmedins_code for ln in at_pharmacy)
        zh = (
            f"{period} 该参保人在 {len(pharmacies)} 家定点药店配药 {len(at_pharmacy)} 笔，合计 {total:.2f} 元，"
            f"超过单月 {limit:.0f} 元的异常标准。"
        )
        en = (
            f"In {period} the patient spent {total:.2f} yuan on {len(at_pharmacy)} lines at {len(pharmacies)} "
            f"retail pharmacy(ies), above the threshold of {limit:.0f} yuan a month."
        )
        mitigations: list[str] = []
        if specialty > 0 and total - specialty <= limit + 1e-9:
            severity = lower(severity, 2)
            mitigations.append("specialty_drugs")
            zh += f"其中 {specialty:.2f} 元为按规定用量配售的高值特药，扣除后未超标准，仅作提示。"
            en += (
                f" {specialty:.2f} yuan of it are high-cost specialty drugs dispensed within the rules; "
                "without them the spending stays below the threshold, so this is informational."
            )
        return make_finding(
            rule,
            severity=severity,
            subject_type="patient",
            subject=f"patient:{psn_no}",
            psn_no=psn_no,
            fixmedins_code=min(pharmacies.items(), key=lambda kv: (-kv[1], kv[0]))[0],
            admdvs=region,
            occurred_at=crossed.fee_ocur_time,
            evidence=[ln.line_id for ln in at_pharmacy],
            figures={
                "period": period,
                "pharmacy_spend_yuan": round(total, 2),
                "specialty_spend_yuan": round(specialty, 2),
                "threshold_yuan": num(limit),
                "lines": len(at_pharmacy),
                "pharmacies": len(pharmacies),
            },
            mitigations=mitigations,
            explanation_zh=zh,
            explanation_en=en,
            id_key=[period],
        )
