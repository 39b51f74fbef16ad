"""trace-code-reuse: a drug traceability code sold more than once (resale, 回流).

Across lines (scope `trace:<code>`): the first sale of a code (earliest time, then
smallest line id) is legitimate; every later sale, by any patient at any institution, is
a finding with evidence [first, later]. The finding is built from the recorded sales
alone (time, line id, patient, institution), never from whichever lines happen to be
loaded, so it does not depend on the order in which batches arrive.

Within a line (scope `patient:<psn_no>`): a code listed twice in one line is a finding
on that line, judged from the line itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from rxguard.engine.common import RuleSet, make_finding, submitter
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding
from rxguard.repository import TraceSale


class TraceRule:
    def __init__(self, rules: RuleSet, kb: KnowledgeBase) -> None:
        self.rules = rules
        self.kb = kb

    def evaluate(
        self, code: str, sales: Sequence[TraceSale], lines: Mapping[str, ClaimLine] | None = None
    ) -> list[Finding]:
        """Findings of one code from its sales. `lines` is accepted for callers that have
        them but not used: the result must not depend on which lines are at hand."""
        del lines
        if not self.rules.has("trace-code-reuse") or not sales:
            return []
        first_sale: dict[str, TraceSale] = {}
        for sale in sales:
            known = first_sale.get(sale.line_id)
            if known is None or sale < known:
                first_sale[sale.line_id] = sale
        if len(first_sale) < 2:
            return []
        ordered = sorted(first_sale.values())
        first = ordered[0]
        out: list[Finding] = []
        for number, sale in enumerate(ordered[1:], start=2):
            if self.rules.active("trace-code-reuse", sale.time.date(), None):
                out.append(self._finding(code, first, sale, number))
        return out

    def _finding(self, code: str, first: TraceSale, sale: TraceSale, number: int) -> Finding:
        same_patient = first.psn_no == sale.psn_no
        same_zh = "同一参保人" if same_patient else "另一参保人"
        same_en = "the same patient" if same_patient else "another patient"
        return make_finding(
            self.rules.rule("trace-code-reuse"),
            severity=self.rules.severity("trace-code-reuse", None),
            subject_type="trace_code",
            subject=f"trace:{code}",
            psn_no=sale.psn_no,
            fixmedins_code=submitter(sale.fixmedins_code, sale.late, first.fixmedins_code, first.late),
            occurred_at=sale.time,
            evidence=[first.line_id, sale.line_id],
            figures={
                "trace_code": code,
                "first_sold_at": _t(first.time),
                "first_institution": first.fixmedins_code,
                "first_line": first.line_id,
                "sold_again_at": _t(sale.time),
                "sale_number": number,
                "same_patient": same_patient,
                "trigger_lines": [sale.line_id],
            },
            explanation_zh=(
                f"药品追溯码 {code} 已于 {_t(first.time)} 由 {first.fixmedins_code} 销售（明细 {first.line_id}），"
                f"{_t(sale.time)} 又由 {sale.fixmedins_code} 向{same_zh}销售（明细 {sale.line_id}），"
                f"为该码第 {number} 次销售：一盒药只能销售一次，疑似回流药。"
            ),
            explanation_en=(
                f"Drug traceability code {code} was first sold on {_t(first.time)} by {first.fixmedins_code} "
                f"(line {first.line_id}); on {_t(sale.time)} {sale.fixmedins_code} sold it again, to {same_en} "
                f"(line {sale.line_id}): sale number {number} of a pack that can be sold only once, a sign of "
                "resold (回流) drugs."
            ),
        )

    def within_lines(self, psn_no: str, timeline: Sequence[ClaimLine]) -> list[Finding]:
        """A code listed more than once in one line (patient scope: judged from the line)."""
        if not self.rules.has("trace-code-reuse"):
            return []
        out: list[Finding] = []
        for line in timeline:
            if len(line.trace_codes) < 2 or len(set(line.trace_codes)) == len(line.trace_codes):
                continue
            if not self.rules.active("trace-code-reuse", line.day, line.admdvs):
                continue
            for code in sorted({c for c in line.trace_codes if line.trace_codes.count(c) > 1}):
                out.append(self._within(psn_no, line, code, line.trace_codes.count(code)))
        return out

    def _within(self, psn_no: str, line: ClaimLine, code: str, times: int) -> Finding:
        drug = self.kb.drugs.get(line.med_list_codg)
        name_zh = drug.generic_name_zh if drug else (line.med_list_name or line.med_list_codg)
        name_en = drug.generic_name_en if drug else (line.med_list_name or line.med_list_codg)
        return make_finding(
            self.rules.rule("trace-code-reuse"),
            severity=self.rules.severity("trace-code-reuse", line.admdvs),
            subject_type="patient",
            subject=f"patient:{psn_no}",
            psn_no=psn_no,
            fixmedins_code=line.fixmedins_code,
            bilg_dr_codg=line.bilg_dr_codg,
            admdvs=line.admdvs,
            occurred_at=line.fee_ocur_time,
            evidence=[line.line_id],
            figures={
                "trace_code": code,
                "times_in_line": times,
                "trigger_lines": [line.line_id],
            },
            explanation_zh=(
                f"{_t(line.fee_ocur_time)} {line.fixmedins_code} 销售 {name_zh} 的明细 {line.line_id} 中，"
                f"药品追溯码 {code} 出现 {times} 次：同一盒药被重复计费。"
            ),
            explanation_en=(
                f"On {_t(line.fee_ocur_time)} {line.fixmedins_code} billed {name_en} in line {line.line_id} "
                f"listing traceability code {code} {times} times: one pack billed more than once."
            ),
            id_key=[line.line_id, f"code:{code}"],
        )


def _t(value: datetime) -> str:
    return value.isoformat(sep=" ", timespec="minutes")
