"""The walk the supply rules share: override-frequency (first: it decides which override
reasons are honoured), over-quantity, early-refill, cross-institution-repeat,
cumulative-oversupply (their decisions and texts are in engine/rules/).

It walks each ingredient's fills in time order and keeps the stock on hand: the supply
bought and not yet usable at the label maximum dose, consumed oldest first (FIFO) at
one day of supply per calendar day. See docs/rules.md for the semantics.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from rxguard.engine.fills import Fill
from rxguard.engine.rules.base import Hit
from rxguard.engine.rules.cross_institution_repeat import CrossInstitutionRepeat
from rxguard.engine.rules.cumulative_oversupply import CumulativeOversupply, Episode
from rxguard.engine.rules.early_refill import EarlyRefill
from rxguard.engine.rules.over_quantity import OverQuantity
from rxguard.engine.rules.override_frequency import OverrideFrequency
from rxguard.engine.stock import Stock
from rxguard.models import Finding


@dataclass(eq=False)
class SupplyRules:
    """The supply rules, walked together over one ingredient's fills."""

    over_quantity: OverQuantity
    early_refill: EarlyRefill
    cross_institution: CrossInstitutionRepeat
    cumulative: CumulativeOversupply
    overrides: OverrideFrequency

    def evaluate(self, psn_no: str, fills_by_atc: dict[str, list[Fill]]) -> list[Finding]:
        out: list[Finding] = []
        for atc in sorted(fills_by_atc):
            self._ingredient(psn_no, atc, fills_by_atc[atc], out)
        return out

    def _ingredient(self, psn_no: str, atc: str, fills: list[Fill], out: list[Finding]) -> None:
        oq, er, cx, cu = self.over_quantity, self.early_refill, self.cross_institution, self.cumulative

        def emit(rule: Any, hit: Hit | None) -> None:
            if hit is not None:
                out.append(rule.finding(hit))

        for hit in self.overrides.evaluate(psn_no, atc, fills):  # first: it decides which overrides hold
            emit(self.overrides, hit)
        stock = Stock()
        active: list[Fill] = []  # earlier fills whose own coverage has not ended
        prev: Fill | None = None
        episode: Episode | None = None
        for fill in fills:
            on = date.fromordinal(fill.day)
            admdvs = fill.admdvs
            if prev is not None:
                stock.consume(fill.day - prev.day)
            stock_before = stock.total
            if fill.override == "lost":
                stock.clear()  # the lost supply is no longer on hand
            if oq.enabled and oq.active(on, admdvs) and oq.applies(fill.drug):
                emit(oq, oq.evaluate(psn_no, fill))
            if prev is not None and er.enabled and er.active(on, admdvs) and er.applies(fill.drug):
                emit(er, er.evaluate(psn_no, fill, prev, stock_before))
            active = [f for f in active if f.end > fill.day]  # bounded by the fills covering one day
            if active and cx.enabled and cx.active(on, admdvs) and cx.applies(fill.drug):
                emit(cx, cx.evaluate(psn_no, fill, active))
            active.append(fill)
            stock.push(fill)
            if cu.enabled and cu.applies(fill.drug):
                episode, ended = cu.step(psn_no, atc, fill, stock, episode, cu.active(on, admdvs))
                emit(cu, ended)
            prev = fill
        if episode is not None:
            emit(cu, cu.evaluate(psn_no, episode))
