"""pharmacy-spend (单月药店配药金额异常): spending at retail pharmacies in a calendar month
above `max_monthly_yuan`; informational when high-cost specialty drugs dispensed within
the rules explain the excess. 《上海市基本医疗保险门急诊就医和药店配药异常情形审核管理办法》."""

from __future__ import annotations

from collections import Counter

from pydantic import Field

from rxguard.engine.common import lower, num
from rxguard.engine.rules.base import Hit, Parameters, Rule
from rxguard.models import ClaimLine, InstitutionKind, Scene
from rxguard.scope import Scope


class PharmacySpendParameters(Parameters):
    max_monthly_yuan: float = 8000.0
    # drug categories (e.g. [high_cost] for dual-channel specialty drugs) whose spending, when no
    # medium/high finding concerns it, makes the finding informational if it explains the excess
    specialty_categories: list[str] = Field(default_factory=list)


class PharmacySpend(Rule):
    id = "pharmacy-spend"
    subject_type = "patient"
    scenes = (Scene.IN, Scene.POST)
    behaviour_code = "23"  # 药店配药金额异常
    scenarios = ("pharmacy-spend",)
    risk_weight = 0.4
    Parameters = PharmacySpendParameters

    def evaluate(
        self, psn_no: str, period: str, region: str | None, lines: list[ClaimLine], flagged: set[str]
    ) -> Hit | None:
        p: PharmacySpendParameters = self.params(region)
        limit = p.max_monthly_yuan
        categories = set(p.specialty_categories)
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
        severity = self.severity(region)
        pharmacies = Counter(ln.fixmedins_code for ln in at_pharmacy)
        mitigations: list[str] = []
        if specialty > 0 and total - specialty <= limit + 1e-9:
            severity = lower(severity, 2)
            mitigations.append("specialty_drugs")
        return Hit(
            subject=Scope.patient(psn_no),
            severity=severity,
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
            psn_no=psn_no,
            fixmedins_code=min(pharmacies.items(), key=lambda kv: (-kv[1], kv[0]))[0],
            admdvs=region,
            mitigations=mitigations,
            facts={"total": total, "specialty": specialty, "limit": limit},
            id_key=[period],
        )

    def explain(self, hit: Hit) -> tuple[str, str]:
        f = hit.figures
        total, specialty, limit = hit.facts["total"], hit.facts["specialty"], hit.facts["limit"]
        zh = (
            f"{f['period']} 该参保人在 {f['pharmacies']} 家定点药店配药 {f['lines']} 笔，合计 {total:.2f} 元，"
            f"超过单月 {limit:.0f} 元的异常标准。"
        )
        en = (
            f"In {f['period']} the patient spent {total:.2f} yuan on {f['lines']} lines at {f['pharmacies']} "
            f"retail pharmacy(ies), above the threshold of {limit:.0f} yuan a month."
        )
        if "specialty_drugs" in hit.mitigations:
            zh += f"其中 {specialty:.2f} 元为按规定用量配售的高值特药，扣除后未超标准，仅作提示。"
            en += (
                f" {specialty:.2f} yuan of it are high-cost specialty drugs dispensed within the rules; "
                "without them the spending stays below the threshold, so this is informational."
            )
        return zh, en
