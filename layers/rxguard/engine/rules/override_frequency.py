"""override-frequency (特殊原因超频): a patient's fills of one ingredient carry an override
reason (lost, travel, dose change) more than `max_overrides` times in a rolling
`window_days`. Plans cap vacation and lost-supply overrides (NCPDP submission
clarification codes): beyond the limit an override no longer excuses a fill, so the supply
findings of those fills keep their severity (a declared loss no longer clears the stock,
a declared dose change no longer restarts the refill clock).

Severity medium; high at `high_overrides` or more overrides in the window.
"""

from __future__ import annotations

from collections import Counter
from datetime import date

from rxguard.engine.common import higher
from rxguard.engine.fills import Fill
from rxguard.engine.rules._dispensing import OVERRIDE, day_text, inst, inst_en
from rxguard.engine.rules.base import Hit, Parameters, Rule
from rxguard.scope import Scope


class OverrideFrequencyParameters(Parameters):
    max_overrides: int = 2  # overrides allowed per ingredient in the window
    window_days: int = 180  # rolling window
    high_overrides: int = 4  # this many overrides in the window is high severity


class OverrideFrequency(Rule):
    id = "override-frequency"
    subject_type = "patient"
    behaviour_code = "15"  # 特殊原因超频（超量/提前购药原因滥用）
    dispensing = True
    scenarios = ("override-abuse",)
    risk_weight = 0.7
    Parameters = OverrideFrequencyParameters

    def evaluate(self, psn_no: str, atc: str, fills: list[Fill]) -> list[Hit]:
        """Mark the fills whose override is beyond the limit (`Fill.override_excess`; they
        lose their override), and return one hit per run of such fills. Fills marked by an
        earlier call count as declared: marking again gives the same marks (a check resumes
        the walk of fills marked when its history was walked, `SupplyRules.prepare`)."""
        if not self.enabled:
            return []
        declared = [f for f in fills if f.override or f.override_excess]
        runs: list[list[tuple[Fill, list[Fill]]]] = []  # runs of (excess fill, overrides in its window)
        previous_excess = False
        for i, fill in enumerate(declared):
            if not self.active(date.fromordinal(fill.day), fill.admdvs):
                previous_excess = False
                continue
            p: OverrideFrequencyParameters = self.params(fill.admdvs)
            window = [f for f in declared[: i + 1] if f.day > fill.day - p.window_days]
            if len(window) <= p.max_overrides:
                previous_excess = False
                continue
            if not previous_excess:
                runs.append([])
            runs[-1].append((fill, window))
            previous_excess = True
        for run in runs:
            for fill, _ in run:
                fill.override_excess, fill.override = fill.override or fill.override_excess, None
        return [self._hit(psn_no, atc, run) for run in runs]

    def _hit(self, psn_no: str, atc: str, run: list[tuple[Fill, list[Fill]]]) -> Hit:
        anchor = run[0][0]
        p: OverrideFrequencyParameters = self.params(anchor.admdvs)
        involved: dict[str, Fill] = {}
        for _, window in run:
            for f in window:
                involved[f.line_ids[0]] = f
        fills = sorted(involved.values(), key=lambda f: (f.time, f.line_ids[0]))
        most = max(len(window) for _, window in run)
        severity = self.severity(anchor.admdvs)
        if most >= p.high_overrides:
            severity = higher(severity)
        reasons = Counter((f.override or f.override_excess or "") for f in fills)
        return Hit(
            subject=Scope.patient(psn_no),
            severity=severity,
            occurred_at=anchor.time,
            evidence=[i for f in fills for i in f.line_ids],
            figures={
                "ingredient_atc": atc,
                "overrides_in_window": most,
                "max_overrides": p.max_overrides,
                "window_days": p.window_days,
                "first_exceeded_on": day_text(anchor.day),
                "reasons": dict(sorted(reasons.items())),
                "institutions": sorted({f.fixmedins_code for f in fills}),
                "trigger_lines": sorted(i for f, _ in run for i in f.line_ids),
            },
            psn_no=psn_no,
            fixmedins_code=anchor.fixmedins_code,
            bilg_dr_codg=anchor.lines[0].bilg_dr_codg,
            admdvs=anchor.admdvs,
            facts={"anchor": anchor, "fills": fills},
            id_key=["overrides", atc, *anchor.line_ids],
        )

    def explain(self, hit: Hit) -> tuple[str, str]:
        f = hit.figures
        anchor: Fill = hit.facts["anchor"]
        fills: list[Fill] = hit.facts["fills"]
        drug = anchor.drug
        reasons_zh = "、".join(f"{OVERRIDE.get(r, (r, r))[0]} {n} 次" for r, n in f["reasons"].items())
        reasons_en = ", ".join(f"{OVERRIDE.get(r, (r, r))[1]} {n}x" for r, n in f["reasons"].items())
        return (
            f"{drug.generic_name_zh}（{f['ingredient_atc']}）{f['window_days']} 天内 {f['overrides_in_window']} 次配药"
            f"申报特殊原因（{reasons_zh}），超过允许的 {f['max_overrides']} 次；自 {f['first_exceeded_on']} "
            f"{inst(anchor)} 的配药起，超出次数的特殊原因不再降低该药其他预警的风险等级。共涉及 {len(fills)} 次配药。",
            f"{drug.generic_name_en} ({f['ingredient_atc']}): {f['overrides_in_window']} fills within "
            f"{f['window_days']} days declared an override reason ({reasons_en}), more than the "
            f"{f['max_overrides']} allowed; from the fill on {f['first_exceeded_on']} at {inst_en(anchor)} on, "
            f"overrides beyond the limit no longer lower the severity of this drug's other findings "
            f"({len(fills)} fills involved).",
        )
