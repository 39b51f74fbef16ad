"""indication-mismatch: a drug whose payment scope is restricted to some diagnoses
(ICD-10 prefixes in the catalogue) dispensed without any of them on record.

A diagnosis counts when it is on the line, on another line of the same visit, or on
any line of the patient within `lookback_days` before or after (a diagnosis made at the
hospital covers the later pharmacy purchases of the same treatment)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from rxguard.engine.common import RuleSet, make_finding
from rxguard.kb import Drug, KnowledgeBase
from rxguard.models import ClaimLine, Finding


def _matches(codes: Sequence[str], prefixes: Sequence[str]) -> bool:
    return any(c.startswith(p) for c in codes for p in prefixes)


class IndicationRule:
    def __init__(self, rules: RuleSet, kb: KnowledgeBase) -> None:
        self.rules = rules
        self.kb = kb

    def evaluate(self, psn_no: str, timeline: Sequence[ClaimLine]) -> list[Finding]:
        rules = self.rules
        if not rules.has("indication-mismatch"):
            return []
        restricted: list[tuple[ClaimLine, Drug]] = []
        for line in timeline:
            drug = self.kb.drug(line.med_list_codg)
            if drug is not None and drug.restricted_indications:
                restricted.append((line, drug))
        if not restricted:
            return []
        diagnosed: list[tuple[int, list[str]]] = []  # (day, codes), in time order
        visits: dict[tuple[str, str], list[str]] = {}
        for line in timeline:
            if line.diagnoses:
                codes = [d.strip().upper() for d in line.diagnoses]
                diagnosed.append((line.fee_ocur_time.toordinal(), codes))
                visits.setdefault((line.fixmedins_code, line.mdtrt_id), []).extend(codes)
        matching_days: dict[str, list[int]] = {}
        out: list[Finding] = []
        for line, drug in restricted:
            if not rules.active("indication-mismatch", line.day, line.admdvs) or not rules.applies(
                "indication-mismatch", drug
            ):
                continue
            prefixes = [p.upper() for p in drug.restricted_indications]
            own = [d.strip().upper() for d in line.diagnoses]
            if _matches(own, prefixes) or _matches(visits.get((line.fixmedins_code, line.mdtrt_id), ()), prefixes):
                continue
            days = matching_days.get(drug.drug_code)
            if days is None:
                days = sorted({day for day, codes in diagnosed if _matches(codes, prefixes)})
                matching_days[drug.drug_code] = days
            p = rules.params("indication-mismatch", line.admdvs)
            lookback = int(p.get("lookback_days", 365))
            day = line.fee_ocur_time.toordinal()
            i = bisect_left(days, day - lookback)
            if i < len(days) and days[i] <= day + lookback:
                continue
            out.append(self._finding(psn_no, line, drug, own, lookback))
        return out

    def _finding(self, psn_no: str, line: ClaimLine, drug: Drug, own: list[str], lookback: int) -> Finding:
        scope = "、".join(drug.restricted_indications)
        dx = "、".join(own) if own else "无"
        dx_en = ", ".join(own) if own else "none"
        inst = f"{line.fixmedins_name}（{line.fixmedins_code}）" if line.fixmedins_name else line.fixmedins_code
        inst_en = f"{line.fixmedins_name} ({line.fixmedins_code})" if line.fixmedins_name else line.fixmedins_code
        return make_finding(
            self.rules.rule("indication-mismatch"),
            severity=self.rules.severity("indication-mismatch", line.admdvs),
            subject_type="patient",
            subject=f"patient:{psn_no}",
            psn_no=psn_no,
            fixmedins_code=line.fixmedins_code,
            bilg_dr_codg=line.bilg_dr_codg,
            admdvs=line.admdvs,
            occurred_at=line.fee_ocur_time,
            evidence=[line.line_id],
            figures={
                "drug_code": drug.drug_code,
                "restricted_indications": list(drug.restricted_indications),
                "diagnoses": own,
                "lookback_days": lookback,
                "dispensed_on": line.day.isoformat(),
                "trigger_lines": [line.line_id],
            },
            explanation_zh=(
                f"{line.day.isoformat()} {inst} 配 {drug.generic_name_zh}，该药医保限定支付范围为诊断 {scope}；"
                f"本条诊断为 {dx}，同次就诊及前后 {lookback} 天内的就诊记录中均无相符诊断。"
            ),
            explanation_en=(
                f"On {line.day.isoformat()} {inst_en} dispensed {drug.generic_name_en}, whose insurance payment "
                f"is restricted to diagnoses {', '.join(drug.restricted_indications)}; the line's diagnoses are "
                f"{dx_en}, and no matching diagnosis is on record for the same visit or within {lookback} days."
            ),
        )
