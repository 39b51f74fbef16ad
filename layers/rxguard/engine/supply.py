"""The supply rules: over-quantity, early-refill, cumulative-oversupply, cross-institution-repeat.

They walk each ingredient's fills in time order and keep the stock on hand: the supply
bought and not yet usable at the label maximum dose, consumed oldest first (FIFO) at
one day of supply per calendar day. See docs/rules.md for the semantics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from rxguard.engine.common import RuleSet, higher, lower, make_finding, num, submitter, text
from rxguard.engine.fills import Fill
from rxguard.models import Finding, Severity

_BASIS = {
    "acute": ("急性用药", "acute drug"),
    "chronic": ("慢性病用药", "chronic drug"),
    "long_term": ("长期处方", "long-term prescription"),
    "discharge": ("出院带药", "discharge medication"),
    "one_pack": ("最小包装", "one whole pack"),
}
_OVERRIDE = {
    "lost": ("药品遗失", "medication lost"),
    "travel": ("外出旅行", "travel"),
    "dose_change": ("剂量调整", "dose change"),
}


def _date(day: int) -> str:
    return date.fromordinal(day).isoformat()


def _inst(fill: Fill) -> str:
    name = fill.lines[0].fixmedins_name
    return f"{name}（{fill.fixmedins_code}）" if name else fill.fixmedins_code


def _inst_en(fill: Fill) -> str:
    name = fill.lines[0].fixmedins_name
    return f"{name} ({fill.fixmedins_code})" if name else fill.fixmedins_code


_UNIT_EN = {
    "片": "tablets",
    "粒": "capsules",
    "支": "units",
    "瓶": "bottles",
    "袋": "sachets",
    "贴": "patches",
    "吸": "puffs",
    "揿": "puffs",
}


def _what(fill: Fill) -> tuple[str, str]:
    drug = fill.drug
    units = text(fill.units)
    unit_en = _UNIT_EN.get(drug.min_unit, drug.min_unit)
    return (
        f"{drug.generic_name_zh} {units}{drug.min_unit}",
        f"{units} {unit_en} of {drug.generic_name_en} ({drug.atc_code})",
    )


def _max_dose(fill: Fill) -> tuple[str, str]:
    drug = fill.drug
    dose = f"{text(drug.max_daily_dose)}{drug.max_daily_dose_unit}"
    return f"说明书最大日剂量 {dose}/日", f"the label maximum dose of {dose}/day"


def allowed_days(
    fill: Fill, acute: float, chronic: float, long_term: float, discharge: float, pack: bool
) -> tuple[float, str]:
    """Days one fill may supply, and why: acute / chronic / long-term, then the discharge
    and one-pack allowances where they are larger."""
    if fill.long_term:
        allowed, basis = float(long_term), "long_term"
    elif fill.chronic:
        allowed, basis = float(chronic), "chronic"
    else:
        allowed, basis = float(acute), "acute"
    if fill.discharge and discharge > allowed:
        allowed, basis = float(discharge), "discharge"
    if pack and fill.pack_days > allowed:
        allowed, basis = fill.pack_days, "one_pack"
    return allowed, basis


def _mitigate(severity: Severity, fill: Fill, mitigations: list[str], zh: list[str], en: list[str]) -> Severity:
    """Override reasons make a supply finding informational; discharge lowers it a step."""
    if fill.override:
        mitigations.append(f"override_reason:{fill.override}")
        reason_zh, reason_en = _OVERRIDE.get(fill.override, (fill.override, fill.override))
        zh.append(f"该次配药申报了特殊原因“{reason_zh}”，仅作提示。")
        en.append(f"The dispensing declares the override reason '{reason_en}': informational only.")
        return Severity.LOW
    if fill.discharge:
        mitigations.append("dscg_tkdrug_flag")
        zh.append("该次为出院带药，风险等级下调。")
        en.append("It is discharge medication, so the severity is lowered.")
        return lower(severity)
    return severity


@dataclass
class _Episode:
    atc: str
    anchor: Fill
    stock_at_anchor: float
    threshold: float
    allowed: float
    basis: str
    tolerance: float
    triggers: list[Fill] = field(default_factory=list)
    contributors: dict[str, Fill] = field(default_factory=dict)
    peak: float = 0.0
    peak_fill: Fill | None = None


class SupplyRules:
    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules

    def evaluate(self, psn_no: str, fills_by_atc: dict[str, list[Fill]]) -> list[Finding]:
        out: list[Finding] = []
        for atc in sorted(fills_by_atc):
            self._ingredient(psn_no, atc, fills_by_atc[atc], out)
        return out

    # --- one ingredient --------------------------------------------------------------

    def _ingredient(self, psn_no: str, atc: str, fills: list[Fill], out: list[Finding]) -> None:
        rules = self.rules
        queue: list[list[Any]] = []  # [fill, remaining days], oldest first
        active: list[Fill] = []  # earlier fills whose own coverage has not ended
        prev: Fill | None = None
        episode: _Episode | None = None
        for fill in fills:
            on = date.fromordinal(fill.day)
            admdvs = fill.admdvs
            if prev is not None:
                _consume(queue, fill.day - prev.day)
            stock_before = sum(r for _, r in queue)
            if fill.override == "lost":
                queue.clear()  # the lost supply is no longer on hand
            if (
                rules.has("over-quantity")
                and rules.active("over-quantity", on, admdvs)
                and rules.applies("over-quantity", fill.drug)
            ):
                found = self._over_quantity(psn_no, fill)
                if found:
                    out.append(found)
            if (
                prev is not None
                and rules.has("early-refill")
                and rules.active("early-refill", on, admdvs)
                and rules.applies("early-refill", fill.drug)
            ):
                found = self._early_refill(psn_no, fill, prev, stock_before)
                if found:
                    out.append(found)
            active = [f for f in active if f.end > fill.day]
            if (
                active
                and rules.has("cross-institution-repeat")
                and rules.active("cross-institution-repeat", on, admdvs)
                and rules.applies("cross-institution-repeat", fill.drug)
            ):
                found = self._cross_institution(psn_no, fill, active)
                if found:
                    out.append(found)
            active.append(fill)
            queue.append([fill, fill.days])
            if rules.has("cumulative-oversupply") and rules.applies("cumulative-oversupply", fill.drug):
                episode = self._cumulative_step(
                    psn_no, atc, fill, queue, episode, out, rules.active("cumulative-oversupply", on, admdvs)
                )
            prev = fill
        if episode is not None:
            out.append(self._cumulative_finding(psn_no, episode))

    # --- over-quantity -----------------------------------------------------------------

    def _over_quantity(self, psn_no: str, fill: Fill) -> Finding | None:
        p = self.rules.params("over-quantity", fill.admdvs)
        allowed, basis = allowed_days(
            fill,
            p.get("acute_max_days", 7),
            p.get("chronic_max_days", 30),
            p.get("long_term_max_days", 84),
            p.get("discharge_max_days", 30),
            bool(p.get("pack_allowance", True)),
        )
        tolerance = float(p.get("tolerance", 0.0))
        if fill.days <= allowed * (1 + tolerance) + 1e-9:
            return None
        rule = self.rules.rule("over-quantity")
        severity = self.rules.severity("over-quantity", fill.admdvs)
        ratio = fill.days / allowed if allowed else float("inf")
        if ratio >= float(p.get("high_ratio", 2.0)):
            severity = higher(severity)
        what_zh, what_en = _what(fill)
        dose_zh, dose_en = _max_dose(fill)
        basis_zh, basis_en = _BASIS[basis]
        zh = [
            f"{_date(fill.day)} {_inst(fill)} 一次配 {what_zh}，按{dose_zh}至少可用 {text(fill.days)} 天，"
            f"超过允许的 {text(allowed)} 天（{basis_zh}）。"
        ]
        en = [
            f"On {_date(fill.day)} {_inst_en(fill)} dispensed {what_en}: at {dose_en} it lasts at least "
            f"{text(fill.days)} days, more than the {text(allowed)} days allowed ({basis_en})."
        ]
        mitigations: list[str] = []
        if fill.long_term_ignored:
            zh.append("处方标记为长期处方，但该药品不在长期处方适用范围内，不适用84天上限。")
            en.append("The line is flagged as a long-term prescription, but the drug is not eligible for one.")
        severity = _mitigate(severity, fill, mitigations, zh, en)
        figures: dict[str, Any] = {
            "ingredient_atc": fill.atc,
            "drug_code": fill.drug.drug_code,
            "dispensed_on": _date(fill.day),
            "quantity_units": num(fill.units),
            "days_supplied": num(fill.days),
            "allowed_days": num(allowed),
            "limit_basis": basis,
            "ratio": num(ratio) if allowed else None,
            "max_daily_dose": fill.drug.max_daily_dose,
            "max_daily_dose_unit": fill.drug.max_daily_dose_unit,
            "trigger_lines": fill.line_ids,
            **fill.prescribed(),
        }
        return make_finding(
            rule,
            severity=severity,
            subject_type="patient",
            subject=f"patient:{psn_no}",
            psn_no=psn_no,
            fixmedins_code=fill.fixmedins_code,
            bilg_dr_codg=fill.lines[0].bilg_dr_codg,
            admdvs=fill.admdvs,
            occurred_at=fill.time,
            evidence=fill.line_ids,
            figures=figures,
            mitigations=mitigations,
            explanation_zh="".join(zh),
            explanation_en=" ".join(en),
        )

    # --- early-refill ------------------------------------------------------------------

    def _early_refill(self, psn_no: str, fill: Fill, prev: Fill, stock_before: float) -> Finding | None:
        if fill.override == "dose_change" or prev.days <= 0:
            return None  # a documented dose change restarts the clock: not flagged
        p = self.rules.params("early-refill", fill.admdvs)
        used_fraction = float(p.get("used_fraction", 0.75))
        carry = float(p.get("carry_tolerance_days", 14))
        grace = float(p.get("grace_days", 0))
        elapsed = fill.day - prev.day
        # share of the previous supply usable by now; leftover older stock beyond the
        # carry tolerance counts as not yet used
        by_interval = (elapsed + grace) / prev.days
        by_stock = 1.0 - (stock_before - carry) / prev.days
        used = min(by_interval, by_stock)
        if used >= used_fraction - 1e-9:
            return None
        used = max(0.0, used)
        rule = self.rules.rule("early-refill")
        severity = self.rules.severity("early-refill", fill.admdvs)
        if used < float(p.get("high_used_fraction", 0.25)):
            severity = higher(severity)
        what_zh, what_en = _what(fill)
        prev_zh, prev_en = _what(prev)
        dose_zh, dose_en = _max_dose(prev)
        same = prev.fixmedins_code == fill.fixmedins_code
        where_zh = "同一机构" if same else _inst(fill)
        where_en = "the same institution" if same else _inst_en(fill)
        pct, limit_pct = round(used * 100), round(used_fraction * 100)
        if by_interval <= by_stock:
            zh = [
                f"{_date(prev.day)} 在 {_inst(prev)} 配 {prev_zh}，按{dose_zh}可用 {text(prev.days)} 天；"
                f"仅过 {elapsed} 天（用去约 {pct}%，低于 {limit_pct}%），"
                f"{_date(fill.day)} 又在 {where_zh} 配 {what_zh}，"
                f"配药前手头尚余约 {text(stock_before)} 天药量。"
            ]
            en = [
                f"On {_date(prev.day)} {_inst_en(prev)} dispensed {prev_en}, {text(prev.days)} days at {dose_en}; "
                f"only {elapsed} days later (about {pct}% used, below {limit_pct}%), on {_date(fill.day)}, "
                f"{where_en} dispensed {what_en}, with about {text(stock_before)} days of supply still on hand."
            ]
        else:
            zh = [
                f"{_date(fill.day)} 在 {where_zh} 配 {what_zh} 时，按{dose_zh}计手头尚余约 {text(stock_before)} 天药量"
                f"（含更早配药的结余），超过上次配药量（{_date(prev.day)}，{text(prev.days)} 天）的 "
                f"{100 - limit_pct}% 再加 {text(carry)} 天容差：上次药量仅可用去约 {pct}%。"
            ]
            en = [
                f"On {_date(fill.day)} {where_en} dispensed {what_en} while, at {dose_en}, about "
                f"{text(stock_before)} days of supply were still on hand (earlier purchases included): more than "
                f"{100 - limit_pct}% of the previous purchase ({_date(prev.day)}, {text(prev.days)} days) plus a "
                f"{text(carry)}-day tolerance, so only about {pct}% of it can have been used."
            ]
        mitigations: list[str] = []
        severity = _mitigate(severity, fill, mitigations, zh, en)
        figures: dict[str, Any] = {
            "ingredient_atc": fill.atc,
            "previous_dispensed_on": _date(prev.day),
            "previous_days_supplied": num(prev.days),
            "dispensed_on": _date(fill.day),
            "days_supplied": num(fill.days),
            "elapsed_days": elapsed,
            "used_fraction": round(used, 2),
            "used_fraction_threshold": used_fraction,
            "stock_before_days": num(stock_before),
            "carry_tolerance_days": num(carry),
            "trigger_lines": fill.line_ids,
            **fill.prescribed(),
        }
        return make_finding(
            rule,
            severity=severity,
            subject_type="patient",
            subject=f"patient:{psn_no}",
            psn_no=psn_no,
            fixmedins_code=submitter(
                fill.fixmedins_code,
                any(line.received_at for line in fill.lines),
                prev.fixmedins_code,
                any(line.received_at for line in prev.lines),
            ),
            bilg_dr_codg=fill.lines[0].bilg_dr_codg,
            admdvs=fill.admdvs,
            occurred_at=fill.time,
            evidence=[*prev.line_ids, *fill.line_ids],
            figures=figures,
            mitigations=mitigations,
            explanation_zh="".join(zh),
            explanation_en=" ".join(en),
        )

    # --- cross-institution-repeat --------------------------------------------------------

    def _cross_institution(self, psn_no: str, fill: Fill, active: list[Fill]) -> Finding | None:
        p = self.rules.params("cross-institution-repeat", fill.admdvs)
        min_days = float(p.get("min_overlap_days", 3))
        min_fraction = float(p.get("min_overlap_fraction", 0.10))
        covering: list[tuple[Fill, float]] = []
        for other in active:
            if other.fixmedins_code == fill.fixmedins_code:
                continue
            overlap = min(other.end, fill.end) - fill.day
            if overlap >= max(min_days, min_fraction * other.days) - 1e-9 and overlap > 0:
                covering.append((other, overlap))
        if not covering:
            return None
        main, overlap = max(covering, key=lambda c: (c[1], c[0].line_ids[0]))
        rule = self.rules.rule("cross-institution-repeat")
        severity = self.rules.severity("cross-institution-repeat", fill.admdvs)
        what_zh, what_en = _what(fill)
        prev_zh, prev_en = _what(main)
        zh = [
            f"{_date(main.day)} 在 {_inst(main)} 配 {prev_zh}（可用至 {_date(int(main.end))}）；"
            f"覆盖期内 {_date(fill.day)} 又在另一机构 {_inst(fill)} 配同成分药品 {what_zh}，重叠 {text(overlap)} 天。"
        ]
        en = [
            f"On {_date(main.day)} {_inst_en(main)} dispensed {prev_en} (covering until {_date(int(main.end))}); "
            f"while still covered, on {_date(fill.day)} another institution, {_inst_en(fill)}, dispensed the same "
            f"ingredient: {what_en}, overlapping by {text(overlap)} days."
        ]
        mitigations: list[str] = []
        if fill.override or fill.discharge:
            severity = _mitigate(severity, fill, mitigations, zh, en)
        elif main.discharge:
            mitigations.append("dscg_tkdrug_flag")
            zh.append("先前一次为出院带药，仅作提示。")
            en.append("The earlier dispensing was discharge medication: informational only.")
            severity = Severity.LOW
        figures: dict[str, Any] = {
            "ingredient_atc": fill.atc,
            "institutions": sorted({fill.fixmedins_code, *(c[0].fixmedins_code for c in covering)}),
            "covering_dispensed_on": _date(main.day),
            "covering_days_supplied": num(main.days),
            "covering_until": _date(int(main.end)),
            "dispensed_on": _date(fill.day),
            "days_supplied": num(fill.days),
            "overlap_days": num(overlap),
            "min_overlap_days": num(max(min_days, min_fraction * main.days)),
            "trigger_lines": fill.line_ids,
        }
        evidence = [*fill.line_ids]
        for other, _ in covering:
            evidence.extend(other.line_ids)
        return make_finding(
            rule,
            severity=severity,
            subject_type="patient",
            subject=f"patient:{psn_no}",
            psn_no=psn_no,
            fixmedins_code=fill.fixmedins_code,
            bilg_dr_codg=fill.lines[0].bilg_dr_codg,
            admdvs=fill.admdvs,
            occurred_at=fill.time,
            evidence=evidence,
            figures=figures,
            mitigations=mitigations,
            explanation_zh="".join(zh),
            explanation_en=" ".join(en),
        )

    # --- cumulative-oversupply ---------------------------------------------------------

    def _cumulative_step(
        self,
        psn_no: str,
        atc: str,
        fill: Fill,
        queue: list[list[Any]],
        episode: _Episode | None,
        out: list[Finding],
        active: bool,
    ) -> _Episode | None:
        p = self.rules.params("cumulative-oversupply", fill.admdvs)
        tolerance = float(p.get("tolerance_days", 30))
        allowed, basis = 0.0, "acute"
        for held, _ in queue:
            a, b = allowed_days(
                held,
                p.get("acute_allowed_days", 7),
                p.get("chronic_allowed_days", 30),
                p.get("long_term_allowed_days", 84),
                p.get("discharge_allowed_days", 30),
                bool(p.get("pack_allowance", True)),
            )
            if a > allowed:
                allowed, basis = a, b
        stock = sum(r for _, r in queue)
        threshold = allowed + tolerance
        if not active or stock <= threshold + 1e-9:
            if episode is not None:
                out.append(self._cumulative_finding(psn_no, episode))
            return None
        if episode is None:
            episode = _Episode(atc, fill, stock, threshold, allowed, basis, tolerance)
        episode.triggers.append(fill)
        for held, remaining in queue:
            if remaining > 0:
                episode.contributors[held.line_ids[0]] = held
        if stock > episode.peak:
            episode.peak, episode.peak_fill = stock, fill
        return episode

    def _cumulative_finding(self, psn_no: str, ep: _Episode) -> Finding:
        rule = self.rules.rule("cumulative-oversupply")
        anchor = ep.anchor
        severity = self.rules.severity("cumulative-oversupply", anchor.admdvs)
        contributors = sorted(ep.contributors.values(), key=lambda f: (f.time, f.line_ids[0]))
        institutions = sorted({f.fixmedins_code for f in contributors})
        peak_fill = ep.peak_fill or anchor
        drug = anchor.drug
        basis_zh, basis_en = _BASIS[ep.basis]
        zh = [
            f"{drug.generic_name_zh}（{anchor.atc}）在 {len(institutions)} 家机构共 {len(contributors)} 次配药，"
            f"按说明书最大日剂量计，{_date(anchor.day)} 配药后手头存药达 {text(ep.stock_at_anchor)} 天，"
            f"{_date(peak_fill.day)} 最多达 {text(ep.peak)} 天，超过允许的 {text(ep.allowed)} 天（{basis_zh}）"
            f"加 {text(ep.tolerance)} 天容差。"
        ]
        en = [
            f"{drug.generic_name_en} ({anchor.atc}) was dispensed {len(contributors)} times at "
            f"{len(institutions)} institution(s); at the label maximum dose the stock on hand reached "
            f"{text(ep.stock_at_anchor)} days on {_date(anchor.day)} and peaked at {text(ep.peak)} days on "
            f"{_date(peak_fill.day)}, beyond the {text(ep.allowed)} days allowed ({basis_en}) plus "
            f"{text(ep.tolerance)} days of tolerance."
        ]
        mitigations: list[str] = []
        if all(f.override or f.discharge for f in ep.triggers):
            lowered = Severity.LOW
            for f in ep.triggers:
                lowered = max(lowered, _mitigate(severity, f, mitigations, [], []), key=lambda s: s.rank)
            severity = lowered
            zh.append("超量配药均申报了特殊原因或为出院带药，风险等级下调。")
            en.append("Every dispensing that raised the stock declared an override reason or was discharge medication.")
        figures: dict[str, Any] = {
            "ingredient_atc": anchor.atc,
            "first_exceeded_on": _date(anchor.day),
            "stock_days": num(ep.stock_at_anchor),
            "peak_stock_days": num(ep.peak),
            "peak_on": _date(peak_fill.day),
            "allowed_days": num(ep.allowed),
            "tolerance_days": num(ep.tolerance),
            "threshold_days": num(ep.threshold),
            "fills": len(contributors),
            "institutions": institutions,
            "days_supplied_total": num(sum(f.days for f in contributors)),
            "trigger_lines": sorted(i for f in ep.triggers for i in f.line_ids),
        }
        evidence = [i for f in contributors for i in f.line_ids]
        return make_finding(
            rule,
            severity=severity,
            subject_type="patient",
            subject=f"patient:{psn_no}",
            psn_no=psn_no,
            fixmedins_code=anchor.fixmedins_code,
            bilg_dr_codg=anchor.lines[0].bilg_dr_codg,
            admdvs=anchor.admdvs,
            occurred_at=anchor.time,
            evidence=evidence,
            figures=figures,
            mitigations=sorted(set(mitigations)),
            explanation_zh="".join(zh),
            explanation_en=" ".join(en),
            id_key=["episode", *anchor.line_ids],
        )


def _consume(queue: list[list[Any]], days: float) -> None:
    """Use `days` of supply, oldest first."""
    while days > 0 and queue:
        head = queue[0]
        if head[1] > days:
            head[1] -= days
            return
        days -= head[1]
        queue.pop(0)
