"""multi-provider (多处就诊开药): one patient receives monitored drugs of one ATC level-4
class from >= `min_institutions` institutions and >= `min_prescribers` prescribers within
`window_days` (PDMPs alert at 5 and 5 in 90 days; the PQA measure uses 4 and 4 in 180).
A pharmacy line without a prescriber counts its institution as the prescriber.

Severity medium; high at twice both thresholds. One finding per run of lines at or above
the thresholds; the anchor is the line that first reaches them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from rxguard.engine.common import higher
from rxguard.engine.fills import is_ward_use
from rxguard.engine.rules.base import Hit, Parameters, Rule
from rxguard.models import ClaimLine


class MultiProviderParameters(Parameters):
    min_institutions: int = 4
    min_prescribers: int = 4
    window_days: int = 90


@dataclass
class ProviderWindow:
    """Where the walk of one class's lines stands: the lines so far, the first in the window,
    its institutions and prescribers, and the run at or above the thresholds going on
    (anchor, window at its peak, peaks)."""

    lines: list[ClaimLine] = field(default_factory=list)
    start: int = 0
    institutions: Counter[str] = field(default_factory=Counter)
    prescribers: Counter[str] = field(default_factory=Counter)
    run: tuple[ClaimLine, list[ClaimLine], int, int] | None = None

    def copy(self) -> ProviderWindow:
        return ProviderWindow(
            list(self.lines), self.start, Counter(self.institutions), Counter(self.prescribers), self.run
        )


def prescriber_of(line: ClaimLine) -> str:
    return line.bilg_dr_codg or f"institution:{line.fixmedins_code}"


class MultiProvider(Rule):
    id = "multi-provider"
    subject_type = "patient"
    behaviour_code = "16"  # 多处就诊开药（多医师、多机构）
    scenarios = ("doctor-shopping",)
    risk_weight = 0.8
    Parameters = MultiProviderParameters

    def evaluate(self, psn_no: str, timeline: Sequence[ClaimLine]) -> list[Hit]:
        if not self.enabled:
            return []
        classes = self.classes(timeline)
        out: list[Hit] = []
        for atc4 in sorted(classes):
            out.extend(self._class(psn_no, atc4, classes[atc4]))
        return out

    def classes(self, timeline: Sequence[ClaimLine]) -> dict[str, list[ClaimLine]]:
        """The lines the rule counts, by ATC level-4 class (in the timeline's order)."""
        classes: dict[str, list[ClaimLine]] = {}
        for line in timeline:
            drug = self.kb.drug(line.med_list_codg)
            if drug is None or is_ward_use(line) or line.reverses is not None or not self.applies(drug):
                continue
            classes.setdefault(drug.atc_code[:5], []).append(line)
        return classes

    def _class(self, psn_no: str, atc4: str, lines: list[ClaimLine]) -> list[Hit]:
        out: list[Hit] = []
        window = ProviderWindow()
        self.walk(psn_no, atc4, window, lines, out)
        self.close(psn_no, atc4, window, out)
        return out

    def walk(
        self, psn_no: str, atc4: str, window: ProviderWindow, lines: list[ClaimLine], out: list[Hit] | None
    ) -> None:
        """Two pointers over the class's lines in time order: the window's institutions and
        prescribers as counters (linear in the lines). `window` (updated in place) is where an
        earlier walk stopped: a check resumes its history's; hits into `out` (None: none made)."""
        institutions, prescribers = window.institutions, window.prescribers
        for line in lines:
            window.lines.append(line)
            end, every = len(window.lines) - 1, window.lines
            p: MultiProviderParameters = self.params(line.admdvs)
            institutions[line.fixmedins_code] += 1
            prescribers[prescriber_of(line)] += 1
            horizon = line.fee_ocur_time - timedelta(days=p.window_days)
            while every[window.start].fee_ocur_time <= horizon:
                old = every[window.start]
                for counter, key in ((institutions, old.fixmedins_code), (prescribers, prescriber_of(old))):
                    counter[key] -= 1
                    if not counter[key]:
                        del counter[key]
                window.start += 1
            n_inst, n_doc = len(institutions), len(prescribers)
            hit = n_inst >= p.min_institutions and n_doc >= p.min_prescribers and self.active(line.day, line.admdvs)
            run = window.run
            if hit:
                if run is None:
                    window.run = (line, every[window.start : end + 1], n_inst, n_doc)
                elif (n_inst, n_doc) > (run[2], run[3]):
                    window.run = (run[0], every[window.start : end + 1], n_inst, n_doc)
            elif run is not None:
                if out is not None:
                    out.append(self._hit(psn_no, atc4, *run))
                window.run = None

    def close(self, psn_no: str, atc4: str, window: ProviderWindow, out: list[Hit]) -> None:
        if window.run is not None:
            out.append(self._hit(psn_no, atc4, *window.run))

    def _hit(self, psn_no: str, atc4: str, anchor: ClaimLine, window: list[ClaimLine], n_inst: int, n_doc: int) -> Hit:
        p: MultiProviderParameters = self.params(anchor.admdvs)
        severity = self.severity(anchor.admdvs)
        if n_inst >= 2 * p.min_institutions and n_doc >= 2 * p.min_prescribers:
            severity = higher(severity)
        figures = {
            "atc_class": atc4,
            "institutions": n_inst,
            "prescribers": n_doc,
            "window_days": p.window_days,
            "min_institutions": p.min_institutions,
            "min_prescribers": p.min_prescribers,
            "window_from": window[0].day.isoformat(),
            "window_to": window[-1].day.isoformat(),
            "institution_codes": sorted({ln.fixmedins_code for ln in window}),
            "trigger_lines": [anchor.line_id],
        }
        return Hit.at_line(
            psn_no, anchor, severity, [ln.line_id for ln in window], figures, id_key=["providers", atc4, anchor.line_id]
        )

    def explain(self, hit: Hit) -> tuple[str, str]:
        f = hit.figures
        return (
            f"{f['window_from']} 至 {f['window_to']}（{f['window_days']} 天内），"
            f"该参保人在 {f['institutions']} 家机构、经 {f['prescribers']} 名医师（药店无医师时按药店计）"
            f"取得 {f['atc_class']} 类重点监控药品，"
            f"达到 {f['min_institutions']} 家机构且 {f['min_prescribers']} 名医师的标准，疑似多处就诊开药。",
            f"From {f['window_from']} to {f['window_to']} (within {f['window_days']} days) the patient obtained "
            f"monitored drugs of class {f['atc_class']} from {f['institutions']} institutions and "
            f"{f['prescribers']} prescribers (a pharmacy without a prescriber counts as one), at or above "
            f"{f['min_institutions']} institutions and {f['min_prescribers']} prescribers: multiple providers.",
        )
