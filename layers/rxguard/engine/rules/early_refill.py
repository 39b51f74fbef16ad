"""early-refill (提前购药): a new purchase of the same ingredient (ATC), at any institution,
before the previous supply can have been mostly used at the label maximum dose: less than
`used_fraction` of it elapsed, or stock on hand (older leftovers included) above
(1 - used_fraction) of it plus `carry_tolerance_days`. A documented dose change restarts
the clock. 河北省医保局重复购药智能监管场景；国家医保局超量开药智能监管通知."""

from __future__ import annotations

from typing import Any

from rxguard.engine.common import higher, num, submitter, text
from rxguard.engine.fills import Fill
from rxguard.engine.rules._dispensing import (
    day_text,
    explained,
    inst,
    inst_en,
    max_dose,
    mitigate,
    patient_hit,
    what,
)
from rxguard.engine.rules.base import Hit, Parameters, Rule


class EarlyRefillParameters(Parameters):
    used_fraction: float = 0.75  # early when less than this share of the previous supply can be used
    carry_tolerance_days: float = 14.0  # leftover stock from older purchases tolerated before it counts
    grace_days: float = 0.0  # days added to the elapsed time (a pharmacy's refill window)
    high_used_fraction: float = 0.25  # less than this share used is high severity


class EarlyRefill(Rule):
    id = "early-refill"
    subject_type = "patient"
    behaviour_code = "12"  # 提前购药
    dispensing = True
    scenarios = ("early-refill", "stockpiling", "override-abuse")
    risk_weight = 0.6
    Parameters = EarlyRefillParameters

    def evaluate(self, psn_no: str, fill: Fill, prev: Fill, stock_before: float) -> Hit | None:
        if fill.override == "dose_change" or prev.days <= 0:
            return None  # a documented dose change restarts the clock: not flagged
        p: EarlyRefillParameters = self.params(fill.admdvs)
        elapsed = fill.day - prev.day
        # share of the previous supply usable by now; leftover older stock beyond the
        # carry tolerance counts as not yet used
        by_interval = (elapsed + p.grace_days) / prev.days
        by_stock = 1.0 - (stock_before - p.carry_tolerance_days) / prev.days
        used = min(by_interval, by_stock)
        if used >= p.used_fraction - 1e-9:
            return None
        used = max(0.0, used)
        severity = self.severity(fill.admdvs)
        if used < p.high_used_fraction:
            severity = higher(severity)
        mitigations: list[str] = []
        notes: list[str] = []
        severity = mitigate(severity, fill, mitigations, notes)
        figures: dict[str, Any] = {
            "ingredient_atc": fill.atc,
            "previous_dispensed_on": day_text(prev.day),
            "previous_days_supplied": num(prev.days),
            "dispensed_on": day_text(fill.day),
            "days_supplied": num(fill.days),
            "elapsed_days": elapsed,
            "used_fraction": round(used, 2),
            "used_fraction_threshold": p.used_fraction,
            "stock_before_days": num(stock_before),
            "carry_tolerance_days": num(p.carry_tolerance_days),
            "trigger_lines": fill.line_ids,
            **fill.prescribed(),
        }
        facts = {"prev": prev, "used": used, "by_interval": by_interval <= by_stock, "stock": stock_before}
        hit = patient_hit(psn_no, fill, severity, [*prev.line_ids, *fill.line_ids], figures, mitigations, notes, facts)
        # a finding about an earlier and a later fill names the later seller, unless only the
        # earlier fill arrived late (backdated?): then the institution that submitted it
        hit.fixmedins_code = submitter(
            fill.fixmedins_code,
            any(line.received_at for line in fill.lines),
            prev.fixmedins_code,
            any(line.received_at for line in prev.lines),
        )
        return hit

    def explain(self, hit: Hit) -> tuple[str, str]:
        fill: Fill = hit.facts["fill"]
        prev: Fill = hit.facts["prev"]
        stock = hit.facts["stock"]
        used_fraction = hit.figures["used_fraction_threshold"]
        carry = hit.figures["carry_tolerance_days"]
        elapsed = fill.day - prev.day
        what_zh, what_en = what(fill)
        prev_zh, prev_en = what(prev)
        dose_zh, dose_en = max_dose(prev)
        same = prev.fixmedins_code == fill.fixmedins_code
        where_zh = "同一机构" if same else inst(fill)
        where_en = "the same institution" if same else inst_en(fill)
        pct, limit_pct = round(hit.facts["used"] * 100), round(used_fraction * 100)
        if hit.facts["by_interval"]:
            zh = [
                f"{day_text(prev.day)} 在 {inst(prev)} 配 {prev_zh}，按{dose_zh}可用 {text(prev.days)} 天；"
                f"仅过 {elapsed} 天（用去约 {pct}%，低于 {limit_pct}%），"
                f"{day_text(fill.day)} 又在 {where_zh} 配 {what_zh}，"
                f"配药前手头尚余约 {text(stock)} 天药量。"
            ]
            en = [
                f"On {day_text(prev.day)} {inst_en(prev)} dispensed {prev_en}, {text(prev.days)} days at {dose_en}; "
                f"only {elapsed} days later (about {pct}% used, below {limit_pct}%), on {day_text(fill.day)}, "
                f"{where_en} dispensed {what_en}, with about {text(stock)} days of supply still on hand."
            ]
        else:
            zh = [
                f"{day_text(fill.day)} 在 {where_zh} 配 {what_zh} 时，按{dose_zh}计手头尚余约 {text(stock)} 天药量"
                f"（含更早配药的结余），超过上次配药量（{day_text(prev.day)}，{text(prev.days)} 天）的 "
                f"{100 - limit_pct}% 再加 {text(carry)} 天容差：上次药量仅可用去约 {pct}%。"
            ]
            en = [
                f"On {day_text(fill.day)} {where_en} dispensed {what_en} while, at {dose_en}, about "
                f"{text(stock)} days of supply were still on hand (earlier purchases included): more than "
                f"{100 - limit_pct}% of the previous purchase ({day_text(prev.day)}, {text(prev.days)} days) plus a "
                f"{text(carry)}-day tolerance, so only about {pct}% of it can have been used."
            ]
        return explained(zh, en, hit.notes)
