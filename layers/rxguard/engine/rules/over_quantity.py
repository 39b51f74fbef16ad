"""over-quantity (单次超量开药): one fill supplies more days, at the label maximum daily
dose, than a prescription may cover (acute 7, chronic 30, long-term 84, discharge 30; one
whole pack always allowed). 《处方管理办法》第十九条；《长期处方管理规范（试行）》."""

from __future__ import annotations

from typing import Any

from rxguard.engine.common import higher, num, text
from rxguard.engine.fills import Fill
from rxguard.engine.rules._dispensing import (
    BASIS,
    allowed_days,
    day_text,
    explained,
    inst,
    inst_en,
    max_dose,
    mitigate,
    patient_hit,
    what,
)
from rxguard.engine.rules.base import Hit, Parameters, Rule


class OverQuantityParameters(Parameters):
    acute_max_days: float = 7.0
    chronic_max_days: float = 30.0
    long_term_max_days: float = 84.0
    discharge_max_days: float = 30.0  # 出院带药 may cover up to 30 days for acute drugs too
    pack_allowance: bool = True  # one whole pack is always allowed
    tolerance: float = 0.0  # fraction above the limit that is still accepted
    high_ratio: float = 2.0  # days / allowed at or above this is high severity


class OverQuantity(Rule):
    id = "over-quantity"
    subject_type = "patient"
    behaviour_code = "11"  # 超量开药
    dispensing = True
    scenarios = ("over-quantity", "pill-mill")
    risk_weight = 0.5
    Parameters = OverQuantityParameters

    def evaluate(self, psn_no: str, fill: Fill) -> Hit | None:
        p: OverQuantityParameters = self.params(fill.admdvs)
        allowed, basis = allowed_days(
            fill, p.acute_max_days, p.chronic_max_days, p.long_term_max_days, p.discharge_max_days, p.pack_allowance
        )
        if fill.days <= allowed * (1 + p.tolerance) + 1e-9:
            return None
        severity = self.severity(fill.admdvs)
        ratio = fill.days / allowed if allowed else float("inf")
        if ratio >= p.high_ratio:
            severity = higher(severity)
        mitigations: list[str] = []
        notes = ["long_term_ignored"] if fill.long_term_ignored else []
        severity = mitigate(severity, fill, mitigations, notes)
        figures: dict[str, Any] = {
            "ingredient_atc": fill.atc,
            "drug_code": fill.drug.drug_code,
            "dispensed_on": day_text(fill.day),
            "quantity_units": num(fill.units),
            "days_supplied": num(fill.days),
            "allowed_days": num(allowed),
            "limit_basis": basis,
            "ratio": num(ratio) if allowed else None,
            "max_daily_dose": fill.drug.max_daily_dose,
            "max_daily_dose_unit": fill.drug.max_daily_dose_unit,
            "trigger_lines": fill.line_ids,
            **fill.prescribed(),
        }
        return patient_hit(psn_no, fill, severity, fill.line_ids, figures, mitigations, notes, {"allowed": allowed})

    def explain(self, hit: Hit) -> tuple[str, str]:
        fill: Fill = hit.facts["fill"]
        allowed = hit.facts["allowed"]
        what_zh, what_en = what(fill)
        dose_zh, dose_en = max_dose(fill)
        basis_zh, basis_en = BASIS[hit.figures["limit_basis"]]
        zh = [
            f"{day_text(fill.day)} {inst(fill)} 一次配 {what_zh}，按{dose_zh}至少可用 {text(fill.days)} 天，"
            f"超过允许的 {text(allowed)} 天（{basis_zh}）。"
        ]
        en = [
            f"On {day_text(fill.day)} {inst_en(fill)} dispensed {what_en}: at {dose_en} it lasts at least "
            f"{text(fill.days)} days, more than the {text(allowed)} days allowed ({basis_en})."
        ]
        return explained(zh, en, hit.notes)
