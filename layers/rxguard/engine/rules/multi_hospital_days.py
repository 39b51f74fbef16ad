"""multi-hospital-days (单日多院就诊): days in a calendar month on which the patient visited
at least `min_hospitals_per_day` hospitals; flagged at `min_days` such days.
《上海市基本医疗保险门急诊就医和药店配药异常情形审核管理办法》."""

from __future__ import annotations

from datetime import date

from rxguard.engine.rules.base import Hit, Parameters, Rule
from rxguard.models import ClaimLine, InstitutionKind, Scene
from rxguard.scope import Scope


class MultiHospitalDaysParameters(Parameters):
    min_hospitals_per_day: int = 3
    min_days: int = 3


class MultiHospitalDays(Rule):
    id = "multi-hospital-days"
    subject_type = "patient"
    scenes = (Scene.IN, Scene.POST)
    behaviour_code = "22"  # 单日多院就诊
    scenarios = ("hospital-hopping",)
    risk_weight = 0.5
    Parameters = MultiHospitalDaysParameters

    def evaluate(self, psn_no: str, period: str, region: str | None, lines: list[ClaimLine]) -> Hit | None:
        p: MultiHospitalDaysParameters = self.params(region)
        per_day_min, min_days = p.min_hospitals_per_day, p.min_days
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
        return Hit(
            subject=Scope.patient(psn_no),
            severity=self.severity(region),
            occurred_at=firsts[per_day_min - 1],
            evidence=evidence,
            figures={
                "period": period,
                "days": [d.isoformat() for d in hopping],
                "hospitals_per_day": [len(days[d]) for d in hopping],
                "threshold_hospitals_per_day": per_day_min,
                "threshold_days": min_days,
            },
            psn_no=psn_no,
            fixmedins_code=min(third),
            admdvs=region,
            id_key=[period],
        )

    def explain(self, hit: Hit) -> tuple[str, str]:
        f = hit.figures
        pairs = list(zip(f["days"], f["hospitals_per_day"], strict=True))
        per_day_min, min_days = f["threshold_hospitals_per_day"], f["threshold_days"]
        detail = "、".join(f"{d}（{n}家）" for d, n in pairs)
        detail_en = ", ".join(f"{d} ({n})" for d, n in pairs)
        return (
            f"{f['period']} 该参保人有 {len(pairs)} 天单日到 {per_day_min} 家及以上医院就诊：{detail}，"
            f"达到累计 {min_days} 天的异常标准。",
            f"In {f['period']} the patient visited {per_day_min} or more hospitals on one day on {len(pairs)} "
            f"days: {detail_en} (hospitals per day); the threshold is {min_days} such days.",
        )
