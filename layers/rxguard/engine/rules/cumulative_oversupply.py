"""cumulative-oversupply (累计超量囤药): stock on hand of one ingredient (supply bought and
not yet usable at the label maximum dose, consumed oldest first) grows beyond the allowed
days plus `tolerance_days`; consecutive purchases above the line are one episode (one
finding). 河北省医保局重复购药智能监管场景（累计购药量与用药周期）."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rxguard.engine.common import num, text
from rxguard.engine.fills import Fill
from rxguard.engine.rules._dispensing import BASIS, allowed_days, day_text, explained, mitigate, patient_hit
from rxguard.engine.rules.base import Hit, Parameters, Rule
from rxguard.engine.stock import Stock
from rxguard.models import Severity


class CumulativeOversupplyParameters(Parameters):
    acute_allowed_days: float = 7.0
    chronic_allowed_days: float = 30.0
    long_term_allowed_days: float = 84.0
    discharge_allowed_days: float = 30.0
    pack_allowance: bool = True  # one whole pack is always allowed
    tolerance_days: float = 30.0  # stock may exceed the allowed days by this much


@dataclass
class Episode:
    """Consecutive purchases that keep the stock above the line."""

    atc: str
    anchor: Fill
    stock_at_anchor: float
    threshold: float
    allowed: float
    basis: str
    tolerance: float
    triggers: list[Fill] = field(default_factory=list)
    peak: float = 0.0
    peak_fill: Fill | None = None
    stock: Stock | None = None
    first_serial: int = 0  # the fills in stock at any trigger: serials first_serial..last_serial
    last_serial: int = 0

    @property
    def contributors(self) -> list[Fill]:
        assert self.stock is not None
        fills = [f for f in self.stock.pushed[self.first_serial : self.last_serial + 1] if f.days > 0]
        return sorted(fills, key=lambda f: (f.time, f.line_ids[0]))


class CumulativeOversupply(Rule):
    id = "cumulative-oversupply"
    subject_type = "patient"
    behaviour_code = "13"  # 累计超量囤药
    dispensing = True
    scenarios = ("stockpiling", "override-abuse")
    risk_weight = 0.9
    Parameters = CumulativeOversupplyParameters

    def step(
        self, psn_no: str, atc: str, fill: Fill, stock: Stock, episode: Episode | None, active: bool
    ) -> tuple[Episode | None, Hit | None]:
        """After `fill` joined the stock: the episode going on, and the hit of an episode
        that just ended. O(1) amortised (the stock keeps its total and largest allowance)."""
        p: CumulativeOversupplyParameters = self.params(fill.admdvs)

        def allowed_of(held: Fill) -> tuple[float, str]:
            return allowed_days(
                held,
                p.acute_allowed_days,
                p.chronic_allowed_days,
                p.long_term_allowed_days,
                p.discharge_allowed_days,
                p.pack_allowance,
            )

        allowed, basis = stock.largest_allowed(p, allowed_of)
        total = stock.total
        threshold = allowed + p.tolerance_days
        if not active or total <= threshold + 1e-9:
            return None, (self.evaluate(psn_no, episode) if episode is not None else None)
        if episode is None:
            episode = Episode(atc, fill, total, threshold, allowed, basis, p.tolerance_days, stock=stock)
            episode.first_serial = stock.head_serial
        episode.triggers.append(fill)
        episode.last_serial = len(stock.pushed) - 1
        if total > episode.peak:
            episode.peak, episode.peak_fill = total, fill
        return episode, None

    def evaluate(self, psn_no: str, ep: Episode) -> Hit:
        """The hit of a finished episode."""
        anchor = ep.anchor
        severity = self.severity(anchor.admdvs)
        contributors = ep.contributors
        institutions = sorted({f.fixmedins_code for f in contributors})
        peak_fill = ep.peak_fill or anchor
        mitigations: list[str] = []
        notes: list[str] = []
        if all(f.override or f.discharge for f in ep.triggers):
            lowered = Severity.LOW
            for f in ep.triggers:
                lowered = max(lowered, mitigate(severity, f, mitigations), key=lambda s: s.rank)
            severity = lowered
            notes.append("all_mitigated")
        figures: dict[str, Any] = {
            "ingredient_atc": anchor.atc,
            "first_exceeded_on": day_text(anchor.day),
            "stock_days": num(ep.stock_at_anchor),
            "peak_stock_days": num(ep.peak),
            "peak_on": day_text(peak_fill.day),
            "allowed_days": num(ep.allowed),
            "tolerance_days": num(ep.tolerance),
            "threshold_days": num(ep.threshold),
            "fills": len(contributors),
            "institutions": institutions,
            "days_supplied_total": num(sum(f.days for f in contributors)),
            "trigger_lines": sorted(i for f in ep.triggers for i in f.line_ids),
        }
        evidence = [i for f in contributors for i in f.line_ids]
        facts = {"episode": ep, "contributors": contributors, "peak_fill": peak_fill}
        return patient_hit(
            psn_no, anchor, severity, evidence, figures, mitigations, notes, facts, id_key=["episode", *anchor.line_ids]
        )

    def explain(self, hit: Hit) -> tuple[str, str]:
        ep: Episode = hit.facts["episode"]
        contributors: list[Fill] = hit.facts["contributors"]
        peak_fill: Fill = hit.facts["peak_fill"]
        anchor = ep.anchor
        drug = anchor.drug
        institutions = hit.figures["institutions"]
        basis_zh, basis_en = BASIS[ep.basis]
        zh = [
            f"{drug.generic_name_zh}（{anchor.atc}）在 {len(institutions)} 家机构共 {len(contributors)} 次配药，"
            f"按说明书最大日剂量计，{day_text(anchor.day)} 配药后手头存药达 {text(ep.stock_at_anchor)} 天，"
            f"{day_text(peak_fill.day)} 最多达 {text(ep.peak)} 天，超过允许的 {text(ep.allowed)} 天（{basis_zh}）"
            f"加 {text(ep.tolerance)} 天容差。"
        ]
        en = [
            f"{drug.generic_name_en} ({anchor.atc}) was dispensed {len(contributors)} times at "
            f"{len(institutions)} institution(s); at the label maximum dose the stock on hand reached "
            f"{text(ep.stock_at_anchor)} days on {day_text(anchor.day)} and peaked at {text(ep.peak)} days on "
            f"{day_text(peak_fill.day)}, beyond the {text(ep.allowed)} days allowed ({basis_en}) plus "
            f"{text(ep.tolerance)} days of tolerance."
        ]
        return explained(zh, en, hit.notes)
