"""trace-code-reuse: a drug traceability code sold more than once (resale, 回流).

The first sale of a code (earliest time, then smallest line id) is legitimate; every
later sale, by any patient at any institution, is a finding with evidence [first,
later]. A code listed twice in one line is a finding on that line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from rxguard.engine.common import RuleSet, make_finding
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
        if not self.rules.has("trace-code-reuse") or not sales:
            return []
        count: dict[str, int] = {}
        first_sale: dict[str, TraceSale] = {}
        for sale in sales:
            count[sale.line_id] = count.get(sale.line_id, 0) + 1
            known = first_sale.get(sale.line_id)
            if known is None or (sale.time, sale.line_id) < (known.time, known.line_id):
                first_sale[sale.line_id] = sale
        lines = lines or {}
        for line_id in count:
            known_line = lines.get(line_id)
            if known_line is not None:
                count[line_id] = max(count[line_id], known_line.trace_codes.count(code))
        ordered = sorted(first_sale.values(), key=lambda s: (s.time, s.line_id))
        if len(ordered) == 1 and count[ordered[0].line_id] < 2:
            return []
        first = ordered[0]
        out: list[Finding] = []
        for number, sale in enumerate(ordered):
            if number == 0 and count[sale.line_id] < 2:
                continue
            line: ClaimLine | None = lines.get(sale.line_id)
            admdvs = line.admdvs if line else None
            if not self.rules.active("trace-code-reuse", sale.time.date(), admdvs):
                continue
            out.append(self._finding(code, first, sale, number, count[sale.line_id], line, lines.get(first.line_id)))
        return out

    def _finding(
        self,
        code: str,
        first: TraceSale,
        sale: TraceSale,
        number: int,
        times_in_line: int,
        line: ClaimLine | None,
        first_line: ClaimLine | None,
    ) -> Finding:
        rule = self.rules.rule("trace-code-reuse")
        drug = self.kb.drug(line.med_list_codg) if line else None
        name_zh = drug.generic_name_zh if drug else (line.med_list_name if line and line.med_list_name else "药品")
        name_en = drug.generic_name_en if drug else (line.med_list_name if line and line.med_list_name else "a drug")
        admdvs = line.admdvs if line else None
        if number == 0:
            zh = (
                f"追溯码 {code} 在同一条销售明细中出现 {times_in_line} 次"
                f"（{_t(sale.time)}，{sale.fixmedins_code}，{name_zh}）。"
            )
            en = (
                f"Traceability code {code} appears {times_in_line} times in one sale line "
                f"({_t(sale.time)}, {sale.fixmedins_code}, {name_en})."
            )
        else:
            same = "同一参保人" if first.psn_no == sale.psn_no else "另一参保人"
            same_en = "the same patient" if first.psn_no == sale.psn_no else "another patient"
            zh = (
                f"追溯码 {code} 已于 {_t(first.time)} 在 {first.fixmedins_code} 销售，"
                f"{_t(sale.time)} 又在 {sale.fixmedins_code} 向{same}销售（{name_zh}），"
                f"第 {number + 1} 次销售，疑似回流药。"
            )
            en = (
                f"Traceability code {code} was first sold on {_t(first.time)} at {first.fixmedins_code}; "
                f"on {_t(sale.time)} {sale.fixmedins_code} sold it again, to {same_en} ({name_en}): sale number "
                f"{number + 1}, a sign of resold (回流) drugs."
            )
        return make_finding(
            rule,
            severity=self.rules.severity("trace-code-reuse", admdvs),
            subject_type="trace_code",
            subject=f"trace:{code}",
            psn_no=sale.psn_no,
            fixmedins_code=sale.fixmedins_code,
            bilg_dr_codg=line.bilg_dr_codg if line else None,
            admdvs=admdvs,
            occurred_at=sale.time,
            evidence=[first.line_id, sale.line_id],
            figures={
                "trace_code": code,
                "first_sold_at": first.time.isoformat(sep=" "),
                "first_institution": first.fixmedins_code,
                "first_line": first.line_id,
                "sale_number": number + 1,
                "times_in_line": times_in_line,
                "same_patient": first.psn_no == sale.psn_no,
                "drug_code": first_line.med_list_codg if first_line else (line.med_list_codg if line else None),
                "trigger_lines": [sale.line_id],
            },
            explanation_zh=zh,
            explanation_en=en,
        )


def _t(value: datetime) -> str:
    return value.isoformat(sep=" ", timespec="minutes")
