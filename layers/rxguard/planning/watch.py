"""Drug watch: which drugs deserve a place on the monitored list (docs/planning.md).

Aggregates run as SQL in the state database (GROUP BY and window functions over the
stored lines, monitored or not); Python only ranks the few hundred drugs that result."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rxguard.kb import KnowledgeBase
from rxguard.local.state import State
from rxguard.texttable import table

# thresholds of the reasons (docs/planning.md)
HIGH_SPEND_PERCENTILE = 0.8
FAST_GROWTH_MOM = 0.30
FAST_GROWTH_YOY = 0.50
PATIENT_SHARE = 0.50
HHI_CONCENTRATED = 2500.0
FLAGGED_SHARE = 0.10
TOP_INSTITUTIONS = 3
TOP_PATIENTS = 10


@dataclass
class DrugWatch:
    med_list_codg: str
    name: str | None
    monitored: bool
    months: dict[str, float] = field(default_factory=dict)  # period -> spending
    regions: dict[str, dict[str, float]] = field(default_factory=dict)  # admdvs -> period -> spending
    spend_total: float = 0.0
    flagged_spend: float = 0.0
    top_institutions_share: float = 0.0
    top_patients_share: float = 0.0
    hhi: float = 0.0
    lines: int = 0
    score: float = 0.0
    rank: int = 0
    reasons: list[dict[str, Any]] = field(default_factory=list)

    def spend(self, period: str | None) -> float:
        return self.months.get(period, 0.0) if period else 0.0


def _previous(period: str, months: int) -> str:
    year, month = int(period[:4]), int(period[5:7])
    index = year * 12 + month - 1 - months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _growth(now: float, before: float) -> float | None:
    return (now - before) / before if before > 0 else None


def _percentiles(values: dict[str, float]) -> dict[str, float]:
    """Percentile rank in [0, 1] of each value (ties share the lower rank)."""
    ordered = sorted(values.values())
    n = len(ordered)
    out = {}
    for key, value in values.items():
        below = sum(1 for v in ordered if v < value)
        out[key] = below / (n - 1) if n > 1 else 1.0
    return out


def drug_watch(state: State, kb: KnowledgeBase, *, since: str | None = None, top: int | None = None) -> dict[str, Any]:
    """The watch report: `{"window": ..., "drugs": [...]}` ranked by score."""
    last_row = state.read("SELECT max(period), min(period), count(*) FROM lines")
    last, first, total_lines = last_row[0] if last_row else (None, None, 0)
    if not last:
        return {"window": {"since": since, "last_month": None, "lines": 0}, "drugs": []}
    start = since or _previous(last, 12)  # a year back at least: year-over-year growth needs it
    con = state.connection()
    con.execute("DROP TABLE IF EXISTS temp.watch_lines")
    con.execute(
        "CREATE TEMP TABLE watch_lines AS SELECT line_id, period, coalesce(admdvs, '') AS region, "
        "fixmedins_code AS inst, psn_no, json_extract(body, '$.med_list_codg') AS drug, "
        "json_extract(body, '$.med_list_name') AS name, "
        "coalesce(json_extract(body, '$.det_item_fee_sumamt'), 0.0) AS amount FROM lines WHERE period >= ?",
        (start,),
    )
    try:
        drugs = _collect(con, kb)
    finally:
        con.execute("DROP TABLE IF EXISTS temp.watch_lines")
    _rank(drugs, last)
    ranked = sorted(drugs.values(), key=lambda d: d.rank)
    if top:
        ranked = ranked[:top]
    return {
        "window": {"since": start, "first_month": first, "last_month": last, "lines": total_lines},
        "drugs": [_as_json(d, last) for d in ranked],
    }


def _collect(con: Any, kb: KnowledgeBase) -> dict[str, DrugWatch]:
    drugs: dict[str, DrugWatch] = {}

    def drug(code: str, name: str | None = None) -> DrugWatch:
        found = drugs.get(code)
        if found is None:
            known = kb.drugs.get(code)
            label = known.generic_name_zh if known is not None else name
            found = drugs[code] = DrugWatch(code, label, kb.drug(code) is not None)
        return found

    for code, name, period, spend, n in con.execute(
        "SELECT drug, max(name), period, sum(amount), count(*) FROM watch_lines GROUP BY drug, period"
    ):
        d = drug(code, name)
        d.months[period] = float(spend)
        d.spend_total += float(spend)
        d.lines += int(n)
    for code, region, period, spend in con.execute(
        "SELECT drug, region, period, sum(amount) FROM watch_lines GROUP BY drug, region, period"
    ):
        drug(code).regions.setdefault(region, {})[period] = float(spend)
    for code, spend in con.execute(
        "SELECT drug, sum(amount) FROM watch_lines WHERE line_id IN (SELECT line_id FROM flagged) GROUP BY drug"
    ):
        drug(code).flagged_spend = float(spend)
    # concentration: shares of the top institutions and patients, Herfindahl over institutions
    for code, top_share, hhi in con.execute(
        "WITH s AS (SELECT drug, inst, sum(amount) AS v FROM watch_lines GROUP BY drug, inst), "
        "r AS (SELECT drug, v, sum(v) OVER (PARTITION BY drug) AS t, "
        "row_number() OVER (PARTITION BY drug ORDER BY v DESC, inst) AS n FROM s) "
        "SELECT drug, sum(CASE WHEN n <= ? THEN v ELSE 0 END) / max(t), "
        "sum((v / t) * (v / t)) * 10000 FROM r WHERE t > 0 GROUP BY drug",
        (TOP_INSTITUTIONS,),
    ):
        d = drug(code)
        d.top_institutions_share = float(top_share or 0.0)
        d.hhi = float(hhi or 0.0)
    for code, top_share in con.execute(
        "WITH s AS (SELECT drug, psn_no, sum(amount) AS v FROM watch_lines GROUP BY drug, psn_no), "
        "r AS (SELECT drug, v, sum(v) OVER (PARTITION BY drug) AS t, "
        "row_number() OVER (PARTITION BY drug ORDER BY v DESC, psn_no) AS n FROM s) "
        "SELECT drug, sum(CASE WHEN n <= ? THEN v ELSE 0 END) / max(t) FROM r WHERE t > 0 GROUP BY drug",
        (TOP_PATIENTS,),
    ):
        drug(code).top_patients_share = float(top_share or 0.0)
    return drugs


def _rank(drugs: dict[str, DrugWatch], last: str) -> None:
    previous, year_before = _previous(last, 1), _previous(last, 12)
    spend_last = {c: d.spend(last) for c, d in drugs.items()}
    growth = {}
    for code, d in drugs.items():
        mom = _growth(d.spend(last), d.spend(previous))
        yoy = _growth(d.spend(last), d.spend(year_before))
        growth[code] = max(g for g in (mom, yoy, 0.0) if g is not None)
    concentration = {c: max(d.top_patients_share, d.hhi / 10000) for c, d in drugs.items()}
    p_spend, p_growth, p_conc = _percentiles(spend_last), _percentiles(growth), _percentiles(concentration)
    for code, d in drugs.items():
        flagged = d.flagged_spend / d.spend_total if d.spend_total > 0 else 0.0
        d.score = round(
            100 * (0.35 * p_spend[code] + 0.35 * p_growth[code] + 0.15 * p_conc[code] + 0.15 * min(1.0, flagged / 0.2)),
            2,
        )
        d.reasons = _reasons(d, last, previous, year_before, p_spend[code], flagged)
        if not spend_last[code]:
            d.score = round(d.score * 0.5, 2)  # nothing bought last month: keep it below the active drugs
    for rank, d in enumerate(sorted(drugs.values(), key=lambda d: (-d.score, d.med_list_codg)), start=1):
        d.rank = rank


def _reasons(
    d: DrugWatch, last: str, previous: str, year_before: str, p_spend: float, flagged: float
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    now = d.spend(last)
    if now > 0 and p_spend >= HIGH_SPEND_PERCENTILE:
        out.append(
            {
                "code": "high_spending",
                "zh": f"{last}支出{now:,.0f}元，居前{100 - round(p_spend * 100)}%",
                "en": f"{now:,.0f} yuan in {last}, top {100 - round(p_spend * 100)}% of drugs",
            }
        )
    mom = _growth(now, d.spend(previous))
    yoy = _growth(now, d.spend(year_before))
    if mom is not None and mom >= FAST_GROWTH_MOM:
        out.append(
            {
                "code": "fast_growth",
                "zh": f"支出环比增长{mom:.0%}（{previous} {d.spend(previous):,.0f}元 → {last} {now:,.0f}元）",
                "en": f"spending up {mom:.0%} month over month ({d.spend(previous):,.0f} -> {now:,.0f} yuan)",
            }
        )
    if yoy is not None and yoy >= FAST_GROWTH_YOY:
        out.append(
            {
                "code": "fast_growth",
                "zh": f"支出同比增长{yoy:.0%}",
                "en": f"spending up {yoy:.0%} year over year",
            }
        )
    if d.top_patients_share >= PATIENT_SHARE and d.spend_total > 0:
        out.append(
            {
                "code": "concentrated_patients",
                "zh": f"前{TOP_PATIENTS}名参保人占支出{d.top_patients_share:.0%}",
                "en": f"top {TOP_PATIENTS} patients hold {d.top_patients_share:.0%} of spending",
            }
        )
    if d.hhi >= HHI_CONCENTRATED:
        out.append(
            {
                "code": "concentrated_institutions",
                "zh": f"机构集中度（HHI）{d.hhi:,.0f}",
                "en": f"institution concentration (HHI) {d.hhi:,.0f}",
            }
        )
    if flagged >= FLAGGED_SHARE:
        out.append(
            {
                "code": "flagged_spending",
                "zh": f"{flagged:.0%}的支出被规则标记",
                "en": f"{flagged:.0%} of spending flagged by the rules",
            }
        )
    return out


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def _as_json(d: DrugWatch, last: str) -> dict[str, Any]:
    previous, year_before = _previous(last, 1), _previous(last, 12)
    return {
        "med_list_codg": d.med_list_codg,
        "name": d.name,
        "rank": d.rank,
        "score": d.score,
        "monitored": d.monitored,
        "candidate": not d.monitored and bool(d.reasons),
        "reasons": d.reasons,
        "spend_last_month": round(d.spend(last), 2),
        "spend_total": round(d.spend_total, 2),
        "growth_mom": _round(_growth(d.spend(last), d.spend(previous))),
        "growth_yoy": _round(_growth(d.spend(last), d.spend(year_before))),
        "flagged_share": _round(d.flagged_spend / d.spend_total if d.spend_total > 0 else 0.0),
        "top_institutions_share": _round(d.top_institutions_share),
        "top_patients_share": _round(d.top_patients_share),
        "hhi": round(d.hhi, 1),
        "lines": d.lines,
        "months": [{"period": p, "spend": round(v, 2)} for p, v in sorted(d.months.items())],
        "regions": [
            {"admdvs": r or None, "spend": round(sum(m.values()), 2), "spend_last_month": round(m.get(last, 0.0), 2)}
            for r, m in sorted(d.regions.items())
        ],
    }


def format_watch(report: dict[str, Any], limit: int = 20) -> str:
    header = ("rank", "drug", "name", "monitored", "last month", "MoM", "score", "reasons")
    rows = [
        (
            d["rank"],
            d["med_list_codg"],
            (d["name"] or "")[:16],
            "yes" if d["monitored"] else "no",
            f"{d['spend_last_month']:,.0f}",
            "-" if d["growth_mom"] is None else f"{d['growth_mom']:+.0%}",
            f"{d['score']:.1f}",
            ", ".join(sorted({r["code"] for r in d["reasons"]})) or "-",
        )
        for d in report["drugs"][:limit]
    ]
    lines = table(rows, header)
    window = report["window"]
    head = f"Drug watch: {window.get('since')} .. {window.get('last_month')}, {len(report['drugs'])} drugs"
    return "\n".join([head, *lines])
