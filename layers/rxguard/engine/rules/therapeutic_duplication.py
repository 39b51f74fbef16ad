"""therapeutic-duplication (重复用药, NCPDP conflict code TD): supplies of two different
ingredients of one ATC level-4 class overlap by more than `overlap_days` at the label
maximum dose, at any institutions.

A switch is not flagged: when the old supply is mostly used (at least `switch_used_fraction`
of it) when the new ingredient is bought, or when the new fill declares `dose_change` (a
documented change of therapy). Severity medium."""

from __future__ import annotations

from datetime import date

from rxguard.engine.common import num, text
from rxguard.engine.fills import Fill
from rxguard.engine.rules._dispensing import day_text, inst, inst_en, patient_hit
from rxguard.engine.rules.base import Hit, Parameters, Rule


class TherapeuticDuplicationParameters(Parameters):
    overlap_days: float = 7.0  # overlaps up to this many days are ignored (a changeover)
    switch_used_fraction: float = 0.75  # the old supply this much used: a switch, not a duplicate


class TherapeuticDuplication(Rule):
    id = "therapeutic-duplication"
    subject_type = "patient"
    behaviour_code = "17"  # 重复用药
    dispensing = True
    scenarios = ("duplication",)
    risk_weight = 0.5
    Parameters = TherapeuticDuplicationParameters

    def evaluate(self, psn_no: str, fills_by_atc: dict[str, list[Fill]]) -> list[Hit]:
        if not self.enabled:
            return []
        classes: dict[str, list[Fill]] = {}
        for atc, fills in fills_by_atc.items():
            classes.setdefault(atc[:5], []).extend(fills)
        out: list[Hit] = []
        for atc4 in sorted(classes):
            members = classes[atc4]
            if len({f.atc for f in members}) < 2:
                continue
            members.sort(key=lambda f: (f.time, f.line_ids[0]))
            self.walk(psn_no, atc4, members, {}, out)
        return out

    def walk(
        self, psn_no: str, atc4: str, members: list[Fill], covering: dict[str, Fill], out: list[Hit] | None
    ) -> None:
        """Judge a class's fills in time order (hits into `out`; None: none judged) after the
        fills `covering` (ingredient -> its latest fill so far, updated in place) sums up:
        a check resumes the walk of its history's fills."""
        for fill in members:
            if out is not None:
                hit = self._check(psn_no, atc4, fill, covering)
                if hit is not None:
                    out.append(hit)
            latest = covering.get(fill.atc)
            if latest is None or fill.end >= latest.end:
                covering[fill.atc] = fill

    def _check(self, psn_no: str, atc4: str, fill: Fill, covering: dict[str, Fill]) -> Hit | None:
        if not self.applies(fill.drug) or fill.override == "dose_change":
            return None
        if not self.active(date.fromordinal(fill.day), fill.admdvs):
            return None
        p: TherapeuticDuplicationParameters = self.params(fill.admdvs)
        best: tuple[float, Fill] | None = None
        for atc, other in covering.items():
            if atc == fill.atc or other.end <= fill.day or other.days <= 0:
                continue
            used = (fill.day - other.day) / other.days
            overlap = min(other.end, fill.end) - fill.day
            if used >= p.switch_used_fraction - 1e-9 or overlap <= p.overlap_days + 1e-9:
                continue
            if best is None or overlap > best[0]:
                best = (overlap, other)
        if best is None:
            return None
        overlap, other = best
        figures = {
            "atc_class": atc4,
            "ingredients": sorted({fill.atc, other.atc}),
            "earlier_dispensed_on": day_text(other.day),
            "earlier_days_supplied": num(other.days),
            "dispensed_on": day_text(fill.day),
            "days_supplied": num(fill.days),
            "overlap_days": num(overlap),
            "threshold_days": num(p.overlap_days),
            "earlier_used_fraction": round((fill.day - other.day) / other.days, 2),
            "trigger_lines": fill.line_ids,
        }
        return patient_hit(
            psn_no,
            fill,
            self.severity(fill.admdvs),
            [*other.line_ids, *fill.line_ids],
            figures,
            [],
            [],
            {"other": other, "overlap": overlap},
        )

    def explain(self, hit: Hit) -> tuple[str, str]:
        fill: Fill = hit.facts["fill"]
        other: Fill = hit.facts["other"]
        overlap = hit.facts["overlap"]
        f = hit.figures
        return (
            f"{day_text(other.day)} 在 {inst(other)} 配 {other.drug.generic_name_zh}"
            f"（{other.atc}，可用 {text(other.days)} 天）；"
            f"{day_text(fill.day)} 又在 {inst(fill)} 配同类（{f['atc_class']}）不同成分药品 {fill.drug.generic_name_zh}"
            f"（{fill.atc}），两者按说明书最大日剂量重叠 {text(overlap)} 天，超过 {f['threshold_days']} 天：重复用药。",
            f"On {day_text(other.day)} {inst_en(other)} dispensed {other.drug.generic_name_en} ({other.atc}, "
            f"{text(other.days)} days); on {day_text(fill.day)} {inst_en(fill)} dispensed "
            f"{fill.drug.generic_name_en} ({fill.atc}), another ingredient of class {f['atc_class']}: at the label "
            f"maximum dose the supplies overlap by {text(overlap)} days, more than {f['threshold_days']}: "
            "therapeutic duplication.",
        )
