"""institution-outlier (机构/医师超量开药异常): institutions and prescribers far above their
peers in a month. 国家医保局《关于进一步加强超量开药智能监管工作的通知》（聚焦三类机构和人员）.

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

from collections.abc import Sequence
from datetime import date
from statistics import median

from rxguard.engine.common import higher, num
from rxguard.engine.institutions import ActivityAggregate, period_start, previous_period
from rxguard.engine.rules.base import Hit, Parameters, Rule
from rxguard.models import Finding, InstitutionKind, Scene

EVIDENCE_CAP = 1000


class InstitutionOutlierParameters(Parameters):
    min_lines: int = 30  # institutions or prescribers with fewer monitored lines are not judged
    min_flag_share: float = 0.30  # the flagged share must be at least this
    peer_multiple: float = 3.0  # and at least this multiple of the peer median share
    growth_multiple: float = 3.0  # month-over-month monitored volume growth to flag
    min_growth_lines: int = 60


class InstitutionOutlier(Rule):
    id = "institution-outlier"
    subject_type = "institution"  # or `prescriber`
    scenes = (Scene.POST,)
    behaviour_code = "51"  # 机构/医师异常
    Parameters = InstitutionOutlierParameters

    def findings(self, aggregates: Sequence[ActivityAggregate]) -> list[Finding]:
        return [self.finding(hit) for hit in self.evaluate(aggregates)]

    def evaluate(self, aggregates: Sequence[ActivityAggregate]) -> list[Hit]:
        if not self.enabled:
            return []
        by_key = {(a.subject_type, a.code, a.period): a for a in aggregates}
        groups: dict[tuple[str, InstitutionKind, str], list[ActivityAggregate]] = {}
        for a in aggregates:
            groups.setdefault((a.subject_type, a.kind, a.period), []).append(a)
        out: list[Hit] = []
        for (_, _, period), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].value, kv[0][2])):
            first_day = date(int(period[:4]), int(period[5:7]), 1)
            growth: dict[str, float] = {}
            for a in members:
                before = by_key.get((a.subject_type, a.code, previous_period(period)))
                if before is not None and before.monitored_lines > 0:
                    p: InstitutionOutlierParameters = self.params(a.admdvs)
                    growth[a.code] = a.monitored_lines / max(before.monitored_lines, p.min_lines)
            for a in members:
                if not self.active(first_day, a.admdvs):
                    continue
                p = self.params(a.admdvs)
                share = len(a.flagged_lines) / a.monitored_lines if a.monitored_lines else 0.0
                peers = [
                    len(b.flagged_lines) / b.monitored_lines
                    for b in members
                    if b is not a and b.monitored_lines >= p.min_lines
                ]
                peer_share = median(peers) if peers else 0.0
                share_hit = (
                    a.monitored_lines >= p.min_lines
                    and share >= p.min_flag_share
                    and share >= p.peer_multiple * peer_share
                )
                g = growth.get(a.code)
                peer_growth = [v for code, v in growth.items() if code != a.code]
                peer_g = median(peer_growth) if peer_growth else 1.0
                growth_hit = (
                    g is not None
                    and a.monitored_lines >= p.min_growth_lines
                    and g >= p.growth_multiple
                    and g >= p.peer_multiple * peer_g
                )
                if share_hit or growth_hit:
                    out.append(self._hit(a, p, share, peer_share, len(peers), g, peer_g, share_hit, growth_hit))
        return out

    def _hit(
        self,
        a: ActivityAggregate,
        p: InstitutionOutlierParameters,
        share: float,
        peer_share: float,
        peers: int,
        growth: float | None,
        peer_growth: float,
        share_hit: bool,
        growth_hit: bool,
    ) -> Hit:
        severity = self.severity(a.admdvs)
        if share_hit and growth_hit:
            severity = higher(severity)
        return Hit(
            subject=a.scope,
            subject_type=a.subject_type,
            severity=severity,
            occurred_at=period_start(a.period),
            evidence=list(a.flagged_lines[:EVIDENCE_CAP]),
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
                "min_lines": p.min_lines,
                "min_flag_share": p.min_flag_share,
                "peer_multiple": p.peer_multiple,
                "growth_multiple": p.growth_multiple,
                "evidence_truncated": len(a.flagged_lines) > EVIDENCE_CAP,
            },
            fixmedins_code=a.fixmedins_code if a.subject_type == "prescriber" else a.code,
            bilg_dr_codg=a.code if a.subject_type == "prescriber" else None,
            admdvs=a.admdvs,
            facts={
                "aggregate": a,
                "share": share,
                "peer_share": peer_share,
                "growth": growth,
                "peer_growth": peer_growth,
            },
            id_key=[a.period],
        )

    def explain(self, hit: Hit) -> tuple[str, str]:
        a: ActivityAggregate = hit.facts["aggregate"]
        share, peer_share = hit.facts["share"], hit.facts["peer_share"]
        growth, peer_growth = hit.facts["growth"], hit.facts["peer_growth"]
        peers = hit.figures["peers"]
        signals = hit.figures["signals"]
        who_zh = f"医师 {a.code}（{a.fixmedins_code}）" if a.subject_type == "prescriber" else f"机构 {a.code}"
        who_en = (
            f"Prescriber {a.code} (at {a.fixmedins_code})"
            if a.subject_type == "prescriber"
            else f"Institution {a.code}"
        )
        kind_zh = {"hospital": "医院", "pharmacy": "药店"}.get(a.kind.value, "机构")
        zh, en = [], []
        if "flagged_share" in signals:
            zh.append(
                f"{who_zh} {a.period} 重点监控药品明细 {a.monitored_lines} 条，其中 {len(a.flagged_lines)} 条"
                f"（{share:.0%}）被判定为违规配药，同类{kind_zh}中位数为 {peer_share:.0%}（{peers} 家/人）。"
            )
            en.append(
                f"{who_en} had {a.monitored_lines} monitored-drug lines in {a.period}; {len(a.flagged_lines)} "
                f"({share:.0%}) are blamed by medium/high findings, against a median of {peer_share:.0%} among "
                f"{peers} peer(s) of the same kind ({a.kind.value})."
            )
        if "volume_growth" in signals and growth is not None:
            zh.append(
                f"{who_zh} {a.period} 重点监控药品用量为上月的 {growth:.1f} 倍，同类中位数 {peer_growth:.1f} 倍。"
            )
            en.append(
                f"{who_en}'s monitored-drug volume in {a.period} grew {growth:.1f}x over the previous month "
                f"(peer median {peer_growth:.1f}x)."
            )
        return "".join(zh), " ".join(en)
