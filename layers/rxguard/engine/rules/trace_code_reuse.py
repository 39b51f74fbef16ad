"""trace-code-reuse (追溯码重复销售): a drug traceability code sold more than once (resale, 回流).

Across lines (scope `trace:<code>`): the first sale of a code (earliest time, then
smallest line id) is legitimate; every later sale, by any patient at any institution, is
a finding with evidence [first, later]. The finding is built from the recorded sales
alone (time, line id, patient, institution), never from whichever lines happen to be
loaded, so it does not depend on the order in which batches arrive.

Within a line (scope `patient:<psn_no>`): a code listed twice in one line is a finding
on that line, judged from the line itself.
《医疗保障基金使用监督管理条例》；国家医保局药品追溯码信息采集应用."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rxguard.engine.common import submitter
from rxguard.engine.rules.base import Hit, Parameters, Rule
from rxguard.models import ClaimLine, Finding
from rxguard.repository import TraceSale
from rxguard.scope import Scope


class TraceCodeReuseParameters(Parameters):
    pass


def _t(value: datetime) -> str:
    return value.isoformat(sep=" ", timespec="minutes")


class TraceCodeReuse(Rule):
    id = "trace-code-reuse"
    subject_type = "trace_code"  # and `patient` for a code repeated within one line
    behaviour_code = "31"  # 追溯码重复销售（倒卖回流）
    dispensing = True
    risk_weight = 1.0
    Parameters = TraceCodeReuseParameters

    def findings(self, code: str, sales: Sequence[TraceSale]) -> list[Finding]:
        return [self.finding(hit) for hit in self.evaluate(code, sales)]

    def evaluate(self, code: str, sales: Sequence[TraceSale]) -> list[Hit]:
        """Hits of one code from its sales, in time order. The pack is out from its first
        sale until a reversal returns it; a split-pack sale (拆零) joins the sales holding
        the pack while their units stay within one pack; any other sale while the pack is
        out is a resale. A sale later cancelled by a reversal is no finding."""
        if not self.enabled or not sales:
            return []
        first_sale: dict[str, TraceSale] = {}
        for sale in sales:
            known = first_sale.get(sale.line_id)
            if known is None or sale < known:
                first_sale[sale.line_id] = sale
        if len(first_sale) < 2:
            return []
        ordered = sorted(first_sale.values())
        cancelled = {s.returns for s in ordered if s.returns}
        holders: list[TraceSale] = []  # the sales the pack is out with (several: a split pack)
        units = 0.0
        number = 0
        out: list[Hit] = []
        for sale in ordered:
            if sale.returns is not None:
                kept = [h for h in holders if h.line_id != sale.returns]
                if len(kept) != len(holders):
                    holders, units = kept, sum(self._units(h) for h in kept)
                continue
            number += 1
            if not holders:
                holders, units = [sale], self._units(sale)
                continue
            if self._fits(holders, units, sale):
                holders.append(sale)
                units += self._units(sale)
                continue
            if sale.line_id not in cancelled and self.active(sale.time.date(), None):
                out.append(self._sold_again(code, holders[0], sale, number))
        return out

    def _pack(self, sale: TraceSale) -> float | None:
        drug = self.kb.drugs.get(sale.drug_code) if sale.drug_code else None
        return float(drug.units_per_pack) if drug is not None else None

    def _units(self, sale: TraceSale) -> float:
        """Minimum units of the pack a sale takes (a whole pack unless split)."""
        pack = self._pack(sale)
        if sale.split_units is None or pack is None:
            return float("inf")
        return sale.split_units

    def _fits(self, holders: list[TraceSale], units: float, sale: TraceSale) -> bool:
        """A split sale of the same product that keeps the pack's units within the pack."""
        pack = self._pack(sale)
        if pack is None or sale.split_units is None:
            return False
        if any(h.drug_code != sale.drug_code or h.split_units is None for h in holders):
            return False
        return units + sale.split_units <= pack + 1e-9

    def _sold_again(self, code: str, first: TraceSale, sale: TraceSale, number: int) -> Hit:
        return Hit(
            subject=Scope.trace(code),
            severity=self.severity(None),
            occurred_at=sale.time,
            evidence=[first.line_id, sale.line_id],
            figures={
                "trace_code": code,
                "first_sold_at": _t(first.time),
                "first_institution": first.fixmedins_code,
                "first_line": first.line_id,
                "sold_again_at": _t(sale.time),
                "sale_number": number,
                "same_patient": first.psn_no == sale.psn_no,
                "trigger_lines": [sale.line_id],
            },
            psn_no=sale.psn_no,
            fixmedins_code=submitter(sale.fixmedins_code, sale.late, first.fixmedins_code, first.late),
            notes=["sold_again"],
            facts={"first": first, "sale": sale},
        )

    def within_line_findings(self, psn_no: str, timeline: Sequence[ClaimLine]) -> list[Finding]:
        return [self.finding(hit) for hit in self.within_lines(psn_no, timeline)]

    def within_lines(self, psn_no: str, timeline: Sequence[ClaimLine]) -> list[Hit]:
        """A code listed more than once in one line (patient scope: judged from the line)."""
        if not self.enabled:
            return []
        out: list[Hit] = []
        for line in timeline:
            if len(line.trace_codes) < 2 or len(set(line.trace_codes)) == len(line.trace_codes):
                continue
            if not self.active(line.day, line.admdvs):
                continue
            for code in sorted({c for c in line.trace_codes if line.trace_codes.count(c) > 1}):
                times = line.trace_codes.count(code)
                out.append(
                    Hit(
                        subject=Scope.patient(psn_no),
                        subject_type="patient",
                        severity=self.severity(line.admdvs),
                        occurred_at=line.fee_ocur_time,
                        evidence=[line.line_id],
                        figures={"trace_code": code, "times_in_line": times, "trigger_lines": [line.line_id]},
                        psn_no=psn_no,
                        fixmedins_code=line.fixmedins_code,
                        bilg_dr_codg=line.bilg_dr_codg,
                        admdvs=line.admdvs,
                        notes=["within_line"],
                        facts={"line": line},
                        id_key=[line.line_id, f"code:{code}"],
                    )
                )
        return out

    def explain(self, hit: Hit) -> tuple[str, str]:
        code = hit.figures["trace_code"]
        if "within_line" in hit.notes:
            line: ClaimLine = hit.facts["line"]
            times = hit.figures["times_in_line"]
            drug = self.kb.drugs.get(line.med_list_codg)
            name_zh = drug.generic_name_zh if drug else (line.med_list_name or line.med_list_codg)
            name_en = drug.generic_name_en if drug else (line.med_list_name or line.med_list_codg)
            return (
                f"{_t(line.fee_ocur_time)} {line.fixmedins_code} 销售 {name_zh} 的明细 {line.line_id} 中，"
                f"药品追溯码 {code} 出现 {times} 次：同一盒药被重复计费。",
                f"On {_t(line.fee_ocur_time)} {line.fixmedins_code} billed {name_en} in line {line.line_id} "
                f"listing traceability code {code} {times} times: one pack billed more than once.",
            )
        first: TraceSale = hit.facts["first"]
        sale: TraceSale = hit.facts["sale"]
        number = hit.figures["sale_number"]
        same = hit.figures["same_patient"]
        same_zh = "同一参保人" if same else "另一参保人"
        same_en = "the same patient" if same else "another patient"
        return (
            f"药品追溯码 {code} 已于 {_t(first.time)} 由 {first.fixmedins_code} 销售（明细 {first.line_id}），"
            f"{_t(sale.time)} 又由 {sale.fixmedins_code} 向{same_zh}销售（明细 {sale.line_id}），"
            f"为该码第 {number} 次销售：一盒药只能销售一次，疑似回流药。",
            f"Drug traceability code {code} was first sold on {_t(first.time)} by {first.fixmedins_code} "
            f"(line {first.line_id}); on {_t(sale.time)} {sale.fixmedins_code} sold it again, to {same_en} "
            f"(line {sale.line_id}): sale number {number} of a pack that can be sold only once, a sign of "
            "resold (回流) drugs.",
        )
