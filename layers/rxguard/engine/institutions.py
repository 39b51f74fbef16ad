"""institution-outlier: institutions and prescribers far above their peers in a month.

Computed from per-unit monthly aggregates (monitored line count, flagged line ids) so
the DynamoDB workflow, which keeps those aggregates, and in-memory callers share it:
`activity_from_lines` builds them from lines, `evaluate_activity` judges them.

A unit (an institution, or a prescriber `bilg_dr_codg`) is judged in a calendar month
against its peers: units of the same subject type and institution kind in that month.
- flagged share: with at least `min_lines` monitored lines, the share of them blamed by
  medium/high dispensing findings is >= `min_flag_share` and >= `peer_multiple` x the
  median share of the other peers;
- volume growth: with at least `min_growth_lines` monitored lines this month and some
  last month, growth (this month / max(last month, min_lines)) >= `growth_multiple` and
  >= `peer_multiple` x the peers' median growth (so a partial first month of data,
  shared by all peers, flags nobody).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from statistics import median
from typing import Literal

from rxguard.engine.common import RuleSet, higher, make_finding, num
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding, InstitutionKind
from rxguard.scope import Scope

EVIDENCE_CAP = 1000


@dataclass(frozen=True)
class ActivityAggregate:
    """Monitored-drug activity of one institution or prescriber in one calendar month."""

    subject_type: Literal["institution", "prescriber"]
    code: str  # fixmedins_code, or bilg_dr_codg for a prescriber
    period: str  # YYYY-MM
    kind: InstitutionKind  # the institution's kind (a prescriber's main institution)
    monitored_lines: int
    flagged_lines: tuple[str, ...] = ()  # line ids blamed by medium/high findings
    fixmedins_code: str | None = None  # a prescriber's main institution
    admdvs: str | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.subject_type, self.code)


def _period(line: ClaimLine) -> str:
    return f"{line.fee_ocur_time.year:04d}-{line.fee_ocur_time.month:02d}"


def previous_period(period: str) -> str:
    year, month = int(period[:4]), int(period[5:7])
    return f"{year - 1:04d}-12" if month == 1 else f"{year:04d}-{month - 1:02d}"


def activity_from_lines(
    lines: Iterable[ClaimLine], flagged_line_ids: set[str], kb: KnowledgeBase
) -> list[ActivityAggregate]:
    """Aggregate monitored lines per institution-month and prescriber-month."""
    inst: dict[tuple[str, str], list[ClaimLine]] = {}
    doc: dict[tuple[str, str], list[ClaimLine]] = {}
    seen: set[str] = set()
    for line in lines:
        if line.line_id in seen or kb.drug(line.med_list_codg) is None:
            continue
        seen.add(line.line_id)
        period = _period(line)
        inst.setdefault((line.fixmedins_code, period), []).append(line)
        if line.bilg_dr_codg:
            doc.setdefault((line.bilg_dr_codg, period), []).append(line)
    out: list[ActivityAggregate] = []
    for (code, period), group in inst.items():
        out.append(
            ActivityAggregate(
                subject_type="institution",
                code=code,
                period=period,
                kind=group[0].institution_kind,
                monitored_lines=len(group),
                flagged_lines=tuple(sorted(ln.line_id for ln in group if ln.line_id in flagged_line_ids)),
                fixmedins_code=code,
                admdvs=_most(ln.admdvs for ln in group),
            )
        )
    for (code, period), group in doc.items():
        main = _most(ln.fixmedins_code for ln in group) or group[0].fixmedins_code
        out.append(
            ActivityAggregate(
                subject_type="prescriber",
                code=code,
                period=period,
                kind=InstitutionKind.from_code(main),
                monitored_lines=len(group),
                flagged_lines=tuple(sorted(ln.line_id for ln in group if ln.line_id in flagged_line_ids)),
                fixmedins_code=main,
                admdvs=_most(ln.admdvs for ln in group),
            )
        )
    return sorted(out, key=lambda a: (a.subject_type, a.code, a.period))


def _most(values: Iterable[str | None]) -> str | None:
    counts = Counter(values)
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0] or ""))[0]


def most_frequent(counts: Mapping[str, float]) -> str | None:
    """The most frequent value of stored counts, ties broken by the smallest (as `_most`)."""
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def aggregate_from_counts(
    subject: Scope,
    period: str,
    regions: Mapping[str, float],
    flagged: Iterable[str],
    places: Mapping[str, float] | None = None,
    monitored_lines: int | None = None,
) -> ActivityAggregate:
    """One unit-month from the counters a store keeps (DynamoDB aggregates, the SQLite
    state), the same aggregate `activity_from_lines` makes from the lines: `regions` counts
    the unit's monitored lines by admdvs ("" unknown), `places` a prescriber's by institution
    (the main one is the prescriber's institution), `flagged` the lines findings blame."""
    fixmedins_code = subject.key if subject.kind == "institution" else (most_frequent(places or {}) or "")
    return ActivityAggregate(
        subject_type="institution" if subject.kind == "institution" else "prescriber",
        code=subject.key,
        period=period,
        kind=InstitutionKind.from_code(fixmedins_code),
        monitored_lines=int(sum(regions.values())) if monitored_lines is None else monitored_lines,
        flagged_lines=tuple(sorted(flagged)),
        fixmedins_code=fixmedins_code,
        admdvs=most_frequent(regions) or None,
    )


def evaluate_activity(aggregates: Sequence[ActivityAggregate], rules: RuleSet) -> list[Finding]:
    if not rules.has("institution-outlier"):
        return []
    by_key = {(a.subject_type, a.code, a.period): a for a in aggregates}
    groups: dict[tuple[str, InstitutionKind, str], list[ActivityAggregate]] = {}
    for a in aggregates:
        groups.setdefault((a.subject_type, a.kind, a.period), []).append(a)
    out: list[Finding] = []
    for (_, _, period), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].value, kv[0][2])):
        first_day = date(int(period[:4]), int(period[5:7]), 1)
        growth: dict[str, float] = {}
        for a in members:
            before = by_key.get((a.subject_type, a.code, previous_period(period)))
            if before is not None and before.monitored_lines > 0:
                p = rules.params("institution-outlier", a.admdvs)
                growth[a.code] = a.monitored_lines / max(before.monitored_lines, int(p.get("min_lines", 30)))
        for a in members:
            if not rules.active("institution-outlier", first_day, a.admdvs):
                continue
            p = rules.params("institution-outlier", a.admdvs)
            min_lines = int(p.get("min_lines", 30))
            min_share = float(p.get("min_flag_share", 0.30))
            multiple = float(p.get("peer_multiple", 3.0))
            share = len(a.flagged_lines) / a.monitored_lines if a.monitored_lines else 0.0
            peers = [
                len(b.flagged_lines) / b.monitored_lines
                for b in members
                if b is not a and b.monitored_lines >= min_lines
            ]
            peer_share = median(peers) if peers else 0.0
            share_hit = a.monitored_lines >= min_lines and share >= min_share and share >= multiple * peer_share
            g = growth.get(a.code)
            peer_growth = [v for code, v in growth.items() if code != a.code]
            peer_g = median(peer_growth) if peer_growth else 1.0
            growth_hit = (
                g is not None
                and a.monitored_lines >= int(p.get("min_growth_lines", 60))
                and g >= float(p.get("growth_multiple", 3.0))
                and g >= multiple * peer_g
            )
            if share_hit or growth_hit:
                out.append(_finding(a, rules, share, peer_share, len(peers), g, peer_g, share_hit, growth_hit, p))
    return out


def _finding(
    a: ActivityAggregate,
    rules: RuleSet,
    share: float,
    peer_share: float,
    peers: int,
    growth: float | None,
    peer_growth: float,
    share_hit: bool,
    growth_hit: bool,
    p: dict[str, object],
) -> Finding:
    severity = rules.severity("institution-outlier", a.admdvs)
    if share_hit and growth_hit:
        severity = higher(severity)
    who_zh = f"医师 {a.code}（{a.fixmedins_code}）" if a.subject_type == "prescriber" else f"机构 {a.code}"
    who_en = (
        f"Prescriber {a.code} (at {a.fixmedins_code})" if a.subject_type == "prescriber" else f"Institution {a.code}"
    )
    kind_zh = {"hospital": "医院", "pharmacy": "药店"}.get(a.kind.value, "机构")
    zh, en = [], []
    if share_hit:
        zh.append(
            f"{who_zh} {a.period} 重点监控药品明细 {a.monitored_lines} 条，其中 {len(a.flagged_lines)} 条"
            f"（{share:.0%}）被判定为违规配药，同类{kind_zh}中位数为 {peer_share:.0%}（{peers} 家/人）。"
        )
        en.append(
            f"{who_en} had {a.monitored_lines} monitored-drug lines in {a.period}; {len(a.flagged_lines)} "
            f"({share:.0%}) are blamed by medium/high findings, against a median of {peer_share:.0%} among "
            f"{peers} peer(s) of the same kind ({a.kind.value})."
        )
    if growth_hit and growth is not None:
        zh.append(f"{who_zh} {a.period} 重点监控药品用量为上月的 {growth:.1f} 倍，同类中位数 {peer_growth:.1f} 倍。")
        en.append(
            f"{who_en}'s monitored-drug volume in {a.period} grew {growth:.1f}x over the previous month "
            f"(peer median {peer_growth:.1f}x)."
        )
    evidence = list(a.flagged_lines[:EVIDENCE_CAP])
    return make_finding(
        rules.rule("institution-outlier"),
        severity=severity,
        subject_type=a.subject_type,
        subject=a.scope,
        fixmedins_code=a.fixmedins_code if a.subject_type == "prescriber" else a.code,
        bilg_dr_codg=a.code if a.subject_type == "prescriber" else None,
        admdvs=a.admdvs,
        occurred_at=_period_start(a.period),
        evidence=evidence,
        figures={
            "period": a.period,
            "institution_kind": a.kind.value,
            "monitored_lines": a.monitored_lines,
            "flagged_lines": len(a.flagged_lines),
            "flagged_share": round(share, 3),
            "peer_median_share": round(peer_share, 3),
            "peers": peers,
            "growth": None if growth is None else num(growth),
            "peer_median_growth": num(peer_growth),
            "signals": [s for s, hit in (("flagged_share", share_hit), ("volume_growth", growth_hit)) if hit],
            "min_lines": p.get("min_lines", 30),
            "min_flag_share": p.get("min_flag_share", 0.30),
            "peer_multiple": p.get("peer_multiple", 3.0),
            "growth_multiple": p.get("growth_multiple", 3.0),
            "evidence_truncated": len(a.flagged_lines) > EVIDENCE_CAP,
        },
        explanation_zh="".join(zh),
        explanation_en=" ".join(en),
        id_key=[a.period],
    )


def _period_start(period: str) -> datetime:
    return datetime(int(period[:4]), int(period[5:7]), 1)
