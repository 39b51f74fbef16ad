"""cross-institution-repeat (跨机构重复购药): a purchase of an ingredient at one institution
while a purchase of the same ingredient at another institution still covers that day by
at least `min_overlap_days` (and `min_overlap_fraction` of the covering purchase).
国家医保局《关于进一步加强超量开药智能监管工作的通知》."""

from __future__ import annotations

from typing import Any

from rxguard.engine.common import num, text
from rxguard.engine.fills import Fill
from rxguard.engine.rules._dispensing import day_text, explained, inst, inst_en, mitigate, patient_hit, what
from rxguard.engine.rules.base import Hit, Parameters, Rule
from rxguard.models import Severity


class CrossInstitutionRepeatParameters(Parameters):
    min_overlap_days: float = 3.0  # overlap of coverage shorter than this is ignored
    min_overlap_fraction: float = 0.10  # and shorter than this share of the covering purchase (long fills)


class CrossInstitutionRepeat(Rule):
    id = "cross-institution-repeat"
    subject_type = "patient"
    behaviour_code = "14"  # 跨机构重复购药
    dispensing = True
    scenarios = ("stockpiling", "override-abuse")
    risk_weight = 0.6
    Parameters = CrossInstitutionRepeatParameters

    def evaluate(self, psn_no: str, fill: Fill, active: list[Fill]) -> Hit | None:
        p: CrossInstitutionRepeatParameters = self.params(fill.admdvs)
        min_days, min_fraction = p.min_overlap_days, p.min_overlap_fraction
        covering: list[tuple[Fill, float]] = []
        for other in active:
            if other.fixmedins_code == fill.fixmedins_code:
                continue
            overlap = min(other.end, fill.end) - fill.day
            if overlap >= max(min_days, min_fraction * other.days) - 1e-9 and overlap > 0:
                covering.append((other, overlap))
        if not covering:
            return None
        main, overlap = max(covering, key=lambda c: (c[1], c[0].line_ids[0]))
        severity = self.severity(fill.admdvs)
        mitigations: list[str] = []
        notes: list[str] = []
        if fill.override or fill.discharge:
            severity = mitigate(severity, fill, mitigations, notes)
        elif main.discharge:
            mitigations.append("dscg_tkdrug_flag")
            notes.append("covering_discharge")
            severity = Severity.LOW
        figures: dict[str, Any] = {
            "ingredient_atc": fill.atc,
            "institutions": sorted({fill.fixmedins_code, *(c[0].fixmedins_code for c in covering)}),
            "covering_dispensed_on": day_text(main.day),
            "covering_days_supplied": num(main.days),
            "covering_until": day_text(int(main.end)),
            "dispensed_on": day_text(fill.day),
            "days_supplied": num(fill.days),
            "overlap_days": num(overlap),
            "min_overlap_days": num(max(min_days, min_fraction * main.days)),
            "trigger_lines": fill.line_ids,
        }
        evidence = [*fill.line_ids]
        for other, _ in covering:
            evidence.extend(other.line_ids)
        return patient_hit(
            psn_no, fill, severity, evidence, figures, mitigations, notes, {"main": main, "overlap": overlap}
        )

    def explain(self, hit: Hit) -> tuple[str, str]:
        fill: Fill = hit.facts["fill"]
        main: Fill = hit.facts["main"]
        overlap = hit.facts["overlap"]
        what_zh, what_en = what(fill)
        prev_zh, prev_en = what(main)
        zh = [
            f"{day_text(main.day)} 在 {inst(main)} 配 {prev_zh}（可用至 {day_text(int(main.end))}）；"
            f"覆盖期内 {day_text(fill.day)} 又在另一机构 {inst(fill)} 配同成分药品 {what_zh}，重叠 {text(overlap)} 天。"
        ]
        en = [
            f"On {day_text(main.day)} {inst_en(main)} dispensed {prev_en} (covering until {day_text(int(main.end))}); "
            f"while still covered, on {day_text(fill.day)} another institution, {inst_en(fill)}, dispensed the same "
            f"ingredient: {what_en}, overlapping by {text(overlap)} days."
        ]
        return explained(zh, en, hit.notes)
