"""indication-mismatch (超限定支付范围用药): a drug whose payment scope is restricted to some
diagnoses (ICD-10 prefixes in the catalogue) dispensed without any of them on record.

A diagnosis counts when it is on the line, on another line of the same visit, or on any
line of the patient within `lookback_days` before or after (a diagnosis made at the
hospital covers the later pharmacy purchases of the same treatment).
《国家基本医疗保险、工伤保险和生育保险药品目录》限定支付范围."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from rxguard.engine.rules.base import Hit, Parameters, Rule
from rxguard.kb import Drug
from rxguard.models import ClaimLine, Finding
from rxguard.scope import Scope


class IndicationMismatchParameters(Parameters):
    lookback_days: int = 365  # a matching diagnosis on another line of the patient this recently counts


# the diagnoses of a timeline: (day, codes) per line with any, and the codes of each visit
# (institution, visit id); the order of either does not change a finding
Diagnoses = tuple[list[tuple[int, list[str]]], dict[tuple[str, str], list[str]]]


def diagnoses_of(timeline: Sequence[ClaimLine], more: Diagnoses | None = None) -> Diagnoses:
    """The diagnoses of `timeline`, added to copies of `more` (a history's, kept) when given
    (`more` itself when `timeline` has none: readers do not change them)."""
    if more is not None and not any(line.diagnoses for line in timeline):
        return more
    diagnosed: list[tuple[int, list[str]]] = list(more[0]) if more else []
    visits: dict[tuple[str, str], list[str]] = dict(more[1]) if more else {}
    for line in timeline:
        if line.diagnoses:
            codes = [d.strip().upper() for d in line.diagnoses]
            diagnosed.append((line.fee_ocur_time.toordinal(), codes))
            visit = (line.fixmedins_code, line.mdtrt_id)
            visits[visit] = [*visits.get(visit, ()), *codes]
    return diagnosed, visits


def _matches(codes: Sequence[str], prefixes: Sequence[str]) -> bool:
    return any(c.startswith(p) for c in codes for p in prefixes)


class IndicationMismatch(Rule):
    id = "indication-mismatch"
    subject_type = "patient"
    behaviour_code = "41"  # 超限定支付范围
    dispensing = True
    scenarios = ("indication-mismatch",)
    risk_weight = 0.4
    Parameters = IndicationMismatchParameters

    def findings(
        self,
        psn_no: str,
        timeline: Sequence[ClaimLine],
        judged: Sequence[ClaimLine] | None = None,
        diagnoses: Diagnoses | None = None,
        matching: dict[str, list[int]] | None = None,
    ) -> list[Finding]:
        return [self.finding(hit) for hit in self.evaluate(psn_no, timeline, judged, diagnoses, matching)]

    def evaluate(
        self,
        psn_no: str,
        timeline: Sequence[ClaimLine],
        judged: Sequence[ClaimLine] | None = None,
        diagnoses: Diagnoses | None = None,
        matching: dict[str, list[int]] | None = None,
    ) -> list[Hit]:
        """A hit per restricted line of `judged` (default: the whole timeline) without a
        matching diagnosis in `timeline` (or in `diagnoses`, `diagnoses_of(timeline)` kept by
        the caller). A hit's evidence is its line alone, so judging some lines gives exactly
        the whole timeline's hits on them. `matching`: the days of `diagnoses` matching each
        drug (by drug code), kept by the caller with them (filled here as drugs are judged:
        a check against a kept history does not go through its diagnoses again)."""
        if not self.enabled:
            return []
        restricted: list[tuple[ClaimLine, Drug]] = []
        for line in timeline if judged is None else judged:
            drug = self.kb.drug(line.med_list_codg)
            if drug is not None and drug.restricted_indications:
                restricted.append((line, drug))
        if not restricted:
            return []
        diagnosed, visits = diagnoses_of(timeline) if diagnoses is None else diagnoses
        matching_days: dict[str, list[int]] = {} if matching is None or diagnoses is None else matching
        out: list[Hit] = []
        for line, drug in restricted:
            if not self.active(line.day, line.admdvs) or not self.applies(drug):
                continue
            prefixes = [p.upper() for p in drug.restricted_indications]
            own = [d.strip().upper() for d in line.diagnoses]
            if _matches(own, prefixes) or _matches(visits.get((line.fixmedins_code, line.mdtrt_id), ()), prefixes):
                continue
            days = matching_days.get(drug.drug_code)
            if days is None:
                days = sorted({day for day, codes in diagnosed if _matches(codes, prefixes)})
                matching_days[drug.drug_code] = days
            lookback = self.params(line.admdvs).lookback_days
            day = line.fee_ocur_time.toordinal()
            i = bisect_left(days, day - lookback)
            if i < len(days) and days[i] <= day + lookback:
                continue
            out.append(
                Hit(
                    subject=Scope.patient(psn_no),
                    severity=self.severity(line.admdvs),
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
                    psn_no=psn_no,
                    fixmedins_code=line.fixmedins_code,
                    bilg_dr_codg=line.bilg_dr_codg,
                    admdvs=line.admdvs,
                    facts={"line": line, "drug": drug},
                )
            )
        return out

    def explain(self, hit: Hit) -> tuple[str, str]:
        line: ClaimLine = hit.facts["line"]
        drug: Drug = hit.facts["drug"]
        own, lookback = hit.figures["diagnoses"], hit.figures["lookback_days"]
        scope = "、".join(drug.restricted_indications)
        dx = "、".join(own) if own else "无"
        dx_en = ", ".join(own) if own else "none"
        inst = f"{line.fixmedins_name}（{line.fixmedins_code}）" if line.fixmedins_name else line.fixmedins_code
        inst_en = f"{line.fixmedins_name} ({line.fixmedins_code})" if line.fixmedins_name else line.fixmedins_code
        return (
            f"{line.day.isoformat()} {inst} 配 {drug.generic_name_zh}，该药医保限定支付范围为诊断 {scope}；"
            f"本条诊断为 {dx}，同次就诊及前后 {lookback} 天内的就诊记录中均无相符诊断。",
            f"On {line.day.isoformat()} {inst_en} dispensed {drug.generic_name_en}, whose insurance payment "
            f"is restricted to diagnoses {', '.join(drug.restricted_indications)}; the line's diagnoses are "
            f"{dx_en}, and no matching diagnosis is on record for the same visit or within {lookback} days.",
        )
