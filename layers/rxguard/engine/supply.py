"""The walk the supply rules share: override-frequency (first: it decides which override
reasons are honoured), over-quantity, early-refill, cross-institution-repeat,
cumulative-oversupply (their decisions and texts are in engine/rules/).

It walks each ingredient's fills in time order and keeps the stock on hand: the supply
bought and not yet usable at the label maximum dose, consumed oldest first (FIFO) at
one day of supply per calendar day. See docs/rules.md for the semantics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
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


@dataclass
class Walk:
    """Where the walk of one ingredient's fills stands: the stock on hand, the fills whose
    coverage has not ended, the previous fill, the cumulative-oversupply episode going on."""

    stock: Stock = field(default_factory=Stock)
    active: list[Fill] = field(default_factory=list)
    prev: Fill | None = None
    episode: Episode | None = None

    def copy(self) -> Walk:
        """A copy to walk on from (the fills themselves are shared)."""
        stock = self.stock.copy()
        episode = None
        if self.episode is not None:
            episode = dataclasses.replace(self.episode, triggers=list(self.episode.triggers), stock=stock)
        return Walk(stock, list(self.active), self.prev, episode)


@dataclass
class Prepared:
    """One ingredient's history walked (`SupplyRules.prepare`): its fills, marked by
    override-frequency, and the walk after the last of them."""

    atc: str
    fills: list[Fill]
    walk: Walk


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
        for hit in self.overrides.evaluate(psn_no, atc, fills):  # first: it decides which overrides hold
            out.append(self.overrides.finding(hit))
        walk = Walk()
        self._walk(psn_no, atc, walk, fills, out)
        self._close(psn_no, walk, out)

    def prepare(self, psn_no: str, atc: str, fills: list[Fill]) -> Prepared:
        """The walk of a history's fills of one ingredient, findings left out: a check of
        later fills resumes it (`resume`) instead of walking the history again."""
        self.overrides.evaluate(psn_no, atc, fills)  # marks the fills (its hits: recomputed on resume)
        walk = Walk()
        self._walk(psn_no, atc, walk, fills, None)
        return Prepared(atc, fills, walk)

    def resume(self, psn_no: str, prepared: Prepared, later: list[Fill]) -> list[Finding]:
        """The findings of `_ingredient` over the prepared history's fills followed by
        `later` (every one after the last history fill, none joining one) that involve a
        fill of `later`, and possibly some that do not: the caller filters by evidence.
        The history's walk is not repeated; override-frequency runs over all the fills
        (it only counts the declared reasons, and its marks of the history's fills stay)."""
        out: list[Finding] = []
        for hit in self.overrides.evaluate(psn_no, prepared.atc, [*prepared.fills, *later]):
            out.append(self.overrides.finding(hit))
        walk = prepared.walk.copy()
        self._walk(psn_no, prepared.atc, walk, later, out)
        self._close(psn_no, walk, out)
        return out

    def _walk(self, psn_no: str, atc: str, walk: Walk, fills: list[Fill], out: list[Finding] | None) -> None:
        """Walk `fills` on from `walk` (updated in place); findings into `out` (None: none made)."""
        oq, er, cx, cu = self.over_quantity, self.early_refill, self.cross_institution, self.cumulative

        def emit(rule: Any, hit: Hit | None) -> None:
            if hit is not None and out is not None:
                out.append(rule.finding(hit))

        # which rules judge at all is fixed for a walk (the engine's rule set): asked once
        judging = out is not None
        oq_on, er_on, cx_on = judging and oq.enabled, judging and er.enabled, judging and cx.enabled
        cu_on = cu.enabled
        stock, active, prev, episode = walk.stock, walk.active, walk.prev, walk.episode
        for fill in fills:
            on = date.fromordinal(fill.day)
            admdvs = fill.admdvs
            if prev is not None:
                stock.consume(fill.day - prev.day)
            stock_before = stock.total
            if fill.override == "lost":
                stock.clear()  # the lost supply is no longer on hand
            if oq_on and oq.active(on, admdvs) and oq.applies(fill.drug):
                emit(oq, oq.evaluate(psn_no, fill))
            if er_on and prev is not None and er.active(on, admdvs) and er.applies(fill.drug):
                emit(er, er.evaluate(psn_no, fill, prev, stock_before))
            active = [f for f in active if f.end > fill.day]  # bounded by the fills covering one day
            if cx_on and active and cx.active(on, admdvs) and cx.applies(fill.drug):
                emit(cx, cx.evaluate(psn_no, fill, active))
            active.append(fill)
            stock.push(fill)
            if cu_on and cu.applies(fill.drug):
                episode, ended = cu.step(psn_no, atc, fill, stock, episode, cu.active(on, admdvs))
                emit(cu, ended)
            prev = fill
        walk.active, walk.prev, walk.episode = active, prev, episode

    def _close(self, psn_no: str, walk: Walk, out: list[Finding]) -> None:
        if walk.episode is not None:
            out.append(self.cumulative.finding(self.cumulative.evaluate(psn_no, walk.episode)))
