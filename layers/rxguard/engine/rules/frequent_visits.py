"""frequent-visits (单月门诊就医频次异常): distinct outpatient visits of one patient in a
calendar month at or above `min_visits`; informational when registered chronic-disease
visits explain the count. 《上海市基本医疗保险门急诊就医和药店配药异常情形审核管理办法》."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import Field

from rxguard.engine.rules.base import Hit, Parameters, Rule
from rxguard.models import ClaimLine, Scene, Severity
from rxguard.scope import Scope


class FrequentVisitsParameters(Parameters):
    min_visits: int = 15
    outpatient_med_types: list[str] = Field(default_factory=lambda: ["11", "14", "13", "16", "19"])
    # registered chronic/special-disease visits: informational when they explain the count
    chronic_med_types: list[str] = Field(default_factory=lambda: ["14"])


class FrequentVisits(Rule):
    id = "frequent-visits"
    subject_type = "patient"
    scenes = (Scene.IN, Scene.POST)
    behaviour_code = "21"  # 就医频次异常
    scenarios = ("frequent-visits",)
    risk_weight = 0.4
    Parameters = FrequentVisitsParameters

    def evaluate(self, psn_no: str, period: str, region: str | None, lines: list[ClaimLine]) -> Hit | None:
        p: FrequentVisitsParameters = self.params(region)
        minimum = p.min_visits
        outpatient = set(p.outpatient_med_types)
        chronic_types = set(p.chronic_med_types)
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
        severity = self.severity(region)
        mitigations: list[str] = []
        if chronic and other < minimum:
            severity = Severity.LOW
            mitigations.append("med_type_14")
        figures: dict[str, Any] = {
            "period": period,
            "visits": len(ordered),
            "chronic_disease_visits": chronic,
            "other_visits": other,
            "institutions": len(institutions),
            "threshold_visits": minimum,
        }
        return Hit(
            subject=Scope.patient(psn_no),
            severity=severity,
            occurred_at=ordered[minimum - 1][0].fee_ocur_time,
            evidence=[ln.line_id for v in ordered for ln in v],
            figures=figures,
            psn_no=psn_no,
            fixmedins_code=Counter(v[0].fixmedins_code for v in ordered).most_common(1)[0][0],
            admdvs=region,
            mitigations=mitigations,
            id_key=[period],
        )

    def explain(self, hit: Hit) -> tuple[str, str]:
        f = hit.figures
        period, visits, minimum = f["period"], f["visits"], f["threshold_visits"]
        zh = f"{period} 该参保人门诊就诊 {visits} 次（{f['institutions']} 家机构），达到单月 {minimum} 次的异常标准。"
        en = (
            f"In {period} the patient had {visits} outpatient visits at {f['institutions']} "
            f"institution(s), at or above the threshold of {minimum} a month."
        )
        if "med_type_14" in hit.mitigations:
            chronic, other = f["chronic_disease_visits"], f["other_visits"]
            zh += f"其中 {chronic} 次为门诊慢特病就诊，其余 {other} 次未达标准，仅作提示。"
            en += (
                f" {chronic} of them are registered chronic/special-disease visits (med_type 14); the other "
                f"{other} stay below the threshold, so this is informational."
            )
        return zh, en
