"""institution-outlier (机构/医师超量开药异常): institutions and prescribers whose share of
flagged monitored-drug lines is far above their peers', judged with a method that accounts
for volume instead of a volume floor: funnel-plot control limits (Spiegelhalter 2005,
"Funnel plots for comparing institutional performance", Stat Med 24:1185).
国家医保局《关于进一步加强超量开药智能监管工作的通知》（聚焦三类机构和人员）.

A unit (an institution, or a prescriber `bilg_dr_codg`) is judged each calendar month,
on that month and on the rolling window of `window_months` months ending with it (about
90 days), against its peers: units of the same subject type and institution kind with
lines in that window, in the same prefecture (the first 4 digits of `admdvs`) when it
has at least `min_peers` of them, else everywhere.

- peer rate p0: the peers' pooled flagged share, the unit left out (at least `min_peer_rate`);
- overdispersion phi: the mean squared z-score of the peers (Spiegelhalter's multiplicative
  model, z-scores winsorised at 10%/90%), at least 1;
- the unit's upper control limit at its volume n: p0 + z * sqrt(phi * p0 * (1 - p0) / n),
  z = `z_limit` (3.09: 99.9% one-sided);
- an outlier: share above the limit, at least `min_rate_ratio` x p0, at least `min_rate`
  (20%: a flagged share that matters in practice, whatever the peers) and at least
  `min_flagged` flagged lines. A small unit with most of its lines flagged crosses its
  (wide) limit; a large unit slightly above the peer rate stays under its (narrow) one,
  and under the rate ratio.

A second signal, unchanged: monitored volume grown >= `growth_multiple` over last month
(against max(last month, `growth_baseline_lines`)), >= `peer_multiple` x the peers' median
growth, with >= `min_growth_lines` lines. Severity medium; high with both signals.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from rxguard.engine.common import higher, num
from rxguard.engine.institutions import ActivityAggregate, period_start, previous_period
from rxguard.engine.rules.base import Hit, Parameters, Rule
from rxguard.models import Finding, InstitutionKind, Scene

EVIDENCE_CAP = 1000


class InstitutionOutlierParameters(Parameters):
    z_limit: float = 3.09  # control limit in standard errors (99.9% one-sided)
    min_rate_ratio: float = 2.0  # and at least this multiple of the peer rate
    min_rate: float = 0.2  # and at least this flagged share (practical, not only statistical, significance)
    min_flagged: int = 5  # and at least this many flagged lines
    min_peer_rate: float = 0.01  # the peer rate used is at least this (peers with no flagged line)
    min_peers: int = 5  # peers in the prefecture needed to judge against them, else everywhere
    window_months: int = 3  # rolling window (about 90 days) judged beside the calendar month
    growth_multiple: float = 3.0  # month-over-month monitored volume growth to flag
    peer_multiple: float = 3.0  # and at least this multiple of the peers' median growth
    min_growth_lines: int = 60  # volume growth is judged from this many lines in the month
    growth_baseline_lines: int = 30  # growth is measured against at least this many lines last month


@dataclass(frozen=True)
class Window:
    """A unit's activity over a window: monitored lines, flagged line ids."""

    subject_type: str
    code: str
    kind: InstitutionKind
    region: str
    lines: int
    flagged: tuple[str, ...]

    @property
    def share(self) -> float:
        return len(self.flagged) / self.lines if self.lines else 0.0


@dataclass(frozen=True)
class Judgement:
    window: str  # "month" or "90d"
    months: tuple[str, ...]
    lines: int
    flagged: int
    share: float
    peer_rate: float
    limit: float
    z: float
    phi: float
    peers: int
    peer_scope: str  # "prefecture" or "all"
    outlier: bool


def _winsorised_mean_square(z: list[float]) -> float:
    if not z:
        return 1.0
    ordered = sorted(z)
    lo, hi = ordered[int(0.1 * (len(z) - 1))], ordered[math.ceil(0.9 * (len(z) - 1))]
    return sum(min(max(v, lo), hi) ** 2 for v in z) / len(z)


@dataclass(frozen=True)
class PeerSet:
    """Pooled counts and overdispersion of a set of units (a unit is judged against the set
    without itself: its own lines are taken out of the pooled rate)."""

    units: int
    lines: int
    flagged: int
    phi: float

    @classmethod
    def of(cls, members: Sequence[Window], p: InstitutionOutlierParameters) -> PeerSet:
        n_all = sum(w.lines for w in members)
        x_all = sum(len(w.flagged) for w in members)
        p0 = max(p.min_peer_rate, x_all / n_all if n_all else 0.0)
        var = p0 * (1 - p0)  # 0 when every peer line is flagged: no spread to measure
        z = [(w.share - p0) / math.sqrt(var / w.lines) for w in members if w.lines] if var > 0 else []
        phi = max(1.0, _winsorised_mean_square(z)) if len(z) >= 5 else 1.0
        return cls(len(members), n_all, x_all, phi)


def judge(unit: Window, peers: PeerSet, p: InstitutionOutlierParameters) -> tuple[float, float, float]:
    """(peer rate, upper control limit at the unit's volume, z-score) against the peers."""
    n, x = peers.lines - unit.lines, peers.flagged - len(unit.flagged)
    p0 = max(p.min_peer_rate, x / n if n > 0 else 0.0)
    se = math.sqrt(peers.phi * p0 * (1 - p0) / unit.lines)
    if se <= 0:  # peers wholly flagged: nobody is above them
        return p0, p0, 0.0
    return p0, p0 + p.z_limit * se, (unit.share - p0) / se


def median_without(ordered: Sequence[float], own: float | None) -> float:
    """The median of `ordered` (sorted) without one occurrence of `own` (all of it when
    `own` is None), 1.0 when nothing is left: each unit's peers' median growth without a
    copy and a sort per unit (thousands of prescribers a month)."""
    skip = len(ordered) if own is None else bisect_left(ordered, own)  # `own` is in `ordered`
    n = len(ordered) - (own is not None)
    if n == 0:
        return 1.0

    def at(k: int) -> float:
        return ordered[k if k < skip else k + 1]

    return at(n // 2) if n % 2 else (at(n // 2 - 1) + at(n // 2)) / 2


class InstitutionOutlier(Rule):
    id = "institution-outlier"
    subject_type = "institution"  # or `prescriber`
    scenes = (Scene.POST,)
    behaviour_code = "51"  # 机构/医师异常
    risk_weight = 0.0
    Parameters = InstitutionOutlierParameters

    def findings(self, aggregates: Sequence[ActivityAggregate]) -> list[Finding]:
        return [self.finding(hit) for hit in self.evaluate(aggregates)]

    def evaluate(self, aggregates: Sequence[ActivityAggregate]) -> list[Hit]:
        if not self.enabled:
            return []
        by_key: dict[tuple[str, str, str], ActivityAggregate] = {
            (a.subject_type, a.code, a.period): a for a in aggregates
        }
        periods = sorted({a.period for a in aggregates})
        out: list[Hit] = []
        for period in periods:
            month = [a for a in aggregates if a.period == period]
            if not month:
                continue
            first_day = date(int(period[:4]), int(period[5:7]), 1)
            default = self.params(None)
            windows = {"month": (period,), "90d": _months_back(period, default.window_months)}
            judged: dict[str, dict[tuple[str, str], Judgement]] = {}
            for name, months in windows.items():
                units = _windows(by_key, months)
                judged[name] = self._judge_all(units, name, months)
            growth = self._growth(month, by_key)
            for a in sorted(month, key=lambda a: (a.subject_type, a.kind.value, a.code)):
                if not self.active(first_day, a.admdvs):
                    continue
                p: InstitutionOutlierParameters = self.params(a.admdvs)
                key = (a.subject_type, a.code)
                share_hits = [j for j in (judged["month"].get(key), judged["90d"].get(key)) if j and j.outlier]
                g, peer_g, growth_hit = growth.get(key, (None, 1.0, False))
                if share_hits or growth_hit:
                    in_month = judged["month"].get(key)
                    blamed = windows["month"] if not share_hits or (in_month and in_month.outlier) else windows["90d"]
                    flagged = _flagged_in(by_key, a, blamed)
                    out.append(self._hit(a, p, judged, share_hits, flagged, g, peer_g, growth_hit))
        return out

    def _judge_all(
        self, units: dict[tuple[str, str], Window], name: str, months: tuple[str, ...]
    ) -> dict[tuple[str, str], Judgement]:
        """Each unit against its peers; linear in the units (pooled sums, leave-one-out)."""
        groups: dict[tuple[str, InstitutionKind], list[Window]] = {}
        for w in units.values():
            groups.setdefault((w.subject_type, w.kind), []).append(w)
        out: dict[tuple[str, str], Judgement] = {}
        p0: InstitutionOutlierParameters = self.params(None)
        for members in groups.values():
            regions: dict[str, list[Window]] = {}
            for w in members:
                regions.setdefault(w.region[:4], []).append(w)
            everywhere = PeerSet.of(members, p0)
            local = {code: PeerSet.of(ws, p0) for code, ws in regions.items()}
            for w in members:
                p: InstitutionOutlierParameters = self.params(w.region or None)
                peers, scope = local[w.region[:4]], "prefecture"
                if peers.units - 1 < p.min_peers:
                    peers, scope = everywhere, "all"
                if peers.units < 2 or not w.lines:
                    continue
                rate, limit, z = judge(w, peers, p)
                outlier = (
                    w.share > limit + 1e-12
                    and w.share >= p.min_rate_ratio * rate - 1e-12
                    and w.share >= p.min_rate - 1e-12
                    and len(w.flagged) >= p.min_flagged
                )
                out[(w.subject_type, w.code)] = Judgement(
                    name, months, w.lines, len(w.flagged), w.share, rate, limit, z, peers.phi, peers.units - 1, scope,
                    outlier,
                )  # fmt: skip
        return out

    def _growth(
        self, month: list[ActivityAggregate], by_key: dict[tuple[str, str, str], ActivityAggregate]
    ) -> dict[tuple[str, str], tuple[float | None, float, bool]]:
        out: dict[tuple[str, str], tuple[float | None, float, bool]] = {}
        groups: dict[tuple[str, InstitutionKind], list[ActivityAggregate]] = {}
        for a in month:
            groups.setdefault((a.subject_type, a.kind), []).append(a)
        for members in groups.values():
            growth: dict[str, float] = {}
            for a in members:
                before = by_key.get((a.subject_type, a.code, previous_period(a.period)))
                if before is not None and before.monitored_lines > 0:
                    p: InstitutionOutlierParameters = self.params(a.admdvs)
                    growth[a.code] = a.monitored_lines / max(before.monitored_lines, p.growth_baseline_lines)
            ordered = sorted(growth.values())
            for a in members:
                p = self.params(a.admdvs)
                g = growth.get(a.code)
                peer_g = median_without(ordered, g)
                hit = (
                    g is not None
                    and a.monitored_lines >= p.min_growth_lines
                    and g >= p.growth_multiple
                    and g >= p.peer_multiple * peer_g
                )
                out[(a.subject_type, a.code)] = (g, peer_g, hit)
        return out

    def _hit(
        self,
        a: ActivityAggregate,
        p: InstitutionOutlierParameters,
        judged: dict[str, dict[tuple[str, str], Judgement]],
        share_hits: list[Judgement],
        flagged: tuple[str, ...],
        growth: float | None,
        peer_growth: float,
        growth_hit: bool,
    ) -> Hit:
        severity = self.severity(a.admdvs)
        if share_hits and growth_hit:
            severity = higher(severity)
        key = (a.subject_type, a.code)
        windows = {}
        for name in ("month", "90d"):
            j = judged[name].get(key)
            if j is not None:
                windows[name] = {
                    "months": list(j.months),
                    "lines": j.lines,
                    "flagged_lines": j.flagged,
                    "rate": round(j.share, 3),
                    "peer_rate": round(j.peer_rate, 3),
                    "control_limit": round(min(1.0, j.limit), 3),
                    "z": round(j.z, 2),
                    "overdispersion": round(j.phi, 2),
                    "peers": j.peers,
                    "peers_from": j.peer_scope,
                    "outlier": j.outlier,
                }
        main = share_hits[0] if share_hits else judged["month"].get(key)
        signals = [f"flagged_share_{j.window}" for j in share_hits]
        if growth_hit:
            signals.append("volume_growth")
        return Hit(
            subject=a.scope,
            subject_type=a.subject_type,
            severity=severity,
            occurred_at=period_start(a.period),
            evidence=list(flagged[:EVIDENCE_CAP]),
            figures={
                "period": a.period,
                "institution_kind": a.kind.value,
                "monitored_lines": a.monitored_lines,
                "flagged_lines": len(a.flagged_lines),
                "rate": round(main.share, 3) if main else None,
                "peer_rate": round(main.peer_rate, 3) if main else None,
                "volume": main.lines if main else a.monitored_lines,
                "control_limit": round(min(1.0, main.limit), 3) if main else None,
                "window": main.window if main else "month",
                "windows": windows,
                "growth": None if growth is None else num(growth),
                "peer_median_growth": num(peer_growth),
                "signals": signals,
                "z_limit": p.z_limit,
                "min_rate_ratio": p.min_rate_ratio,
                "min_rate": p.min_rate,
                "min_flagged": p.min_flagged,
                "growth_multiple": p.growth_multiple,
                "evidence_truncated": len(flagged) > EVIDENCE_CAP,
            },
            fixmedins_code=a.fixmedins_code if a.subject_type == "prescriber" else a.code,
            bilg_dr_codg=a.code if a.subject_type == "prescriber" else None,
            admdvs=a.admdvs,
            facts={
                "aggregate": a,
                "main": main,
                "growth": growth,
                "peer_growth": peer_growth,
                "growth_hit": growth_hit,
            },
            id_key=[a.period],
        )

    def explain(self, hit: Hit) -> tuple[str, str]:
        a: ActivityAggregate = hit.facts["aggregate"]
        main: Judgement | None = hit.facts["main"]
        growth, peer_growth = hit.facts["growth"], hit.facts["peer_growth"]
        who_zh = f"医师 {a.code}（{a.fixmedins_code}）" if a.subject_type == "prescriber" else f"机构 {a.code}"
        who_en = (
            f"Prescriber {a.code} (at {a.fixmedins_code})"
            if a.subject_type == "prescriber"
            else f"Institution {a.code}"
        )
        kind_zh = {"hospital": "医院", "pharmacy": "药店"}.get(a.kind.value, "机构")
        zh, en = [], []
        if main is not None and main.outlier:
            span = main.months[0] if len(main.months) == 1 else f"{main.months[0]} 至 {main.months[-1]}"
            span_en = main.months[0] if len(main.months) == 1 else f"{main.months[0]} to {main.months[-1]}"
            where_zh = "同地市" if main.peer_scope == "prefecture" else "全部"
            where_en = "in its prefecture" if main.peer_scope == "prefecture" else "everywhere"
            zh.append(
                f"{who_zh} {span} 重点监控药品明细 {main.lines} 条，其中 {main.flagged} 条（{main.share:.0%}）被判定为"
                f"违规配药；{where_zh}同类{kind_zh}（{main.peers} 家/人）合计比例为 {main.peer_rate:.1%}，"
                f"按其明细量计算的控制上限为 {min(1.0, main.limit):.0%}（漏斗图法），已超出。"
            )
            en.append(
                f"{who_en} had {main.lines} monitored-drug lines in {span_en}; {main.flagged} ({main.share:.0%}) are "
                f"blamed by medium/high findings. Its {main.peers} peer(s) of the same kind ({a.kind.value}) "
                f"{where_en} are at {main.peer_rate:.1%}; at its volume the upper control limit is "
                f"{min(1.0, main.limit):.0%} (funnel plot, Spiegelhalter 2005), which it exceeds."
            )
        if hit.facts["growth_hit"] and growth is not None:
            zh.append(
                f"{who_zh} {a.period} 重点监控药品用量为上月的 {growth:.1f} 倍，同类中位数 {peer_growth:.1f} 倍。"
            )
            en.append(
                f"{who_en}'s monitored-drug volume in {a.period} grew {growth:.1f}x over the previous month "
                f"(peer median {peer_growth:.1f}x)."
            )
        return "".join(zh), " ".join(en)


def next_period(period: str) -> str:
    year, month = int(period[:4]), int(period[5:7])
    return f"{year + 1:04d}-01" if month == 12 else f"{year:04d}-{month + 1:02d}"


def affected_periods(touched: set[str], window_months: int) -> tuple[set[str], set[str]]:
    """For months whose activity changed: the months whose findings may change (the month,
    the next one for growth, and those whose rolling window holds it), and the months of
    activity their judgement reads (their windows, and the month before each for growth)."""
    evaluated: set[str] = set()
    for period in touched:
        current = period
        for _ in range(max(2, window_months)):
            evaluated.add(current)
            current = next_period(current)
    needed = set(evaluated)
    for period in evaluated:
        needed.update(_months_back(period, max(2, window_months)))
    return evaluated, needed


def _months_back(period: str, count: int) -> tuple[str, ...]:
    months = [period]
    for _ in range(max(1, count) - 1):
        months.append(previous_period(months[-1]))
    return tuple(reversed(months))


def _windows(
    by_key: dict[tuple[str, str, str], ActivityAggregate], months: tuple[str, ...]
) -> dict[tuple[str, str], Window]:
    """The window's activity of every unit with lines in it."""
    units: dict[tuple[str, str], list[ActivityAggregate]] = {}
    wanted = set(months)
    for (subject_type, code, period), a in by_key.items():
        if period in wanted:
            units.setdefault((subject_type, code), []).append(a)
    out: dict[tuple[str, str], Window] = {}
    for key, items in units.items():
        latest = max(items, key=lambda a: a.period)
        flagged: tuple[str, ...] = tuple(sorted({x for a in items for x in a.flagged_lines}))
        out[key] = Window(
            latest.subject_type, latest.code, latest.kind, latest.admdvs or "", sum(a.monitored_lines for a in items),
            flagged,
        )  # fmt: skip
    return out


def _flagged_in(
    by_key: dict[tuple[str, str, str], ActivityAggregate], a: ActivityAggregate, months: tuple[str, ...]
) -> tuple[str, ...]:
    ids: set[str] = set()
    for period in months:
        found = by_key.get((a.subject_type, a.code, period))
        if found is not None:
            ids.update(found.flagged_lines)
    return tuple(sorted(ids))
