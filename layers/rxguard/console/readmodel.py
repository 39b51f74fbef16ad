"""What each console page shows, computed from the API's interfaces and the console's sources.

No HTTP here and no templates: plain data for the pages (and for the tests). Every read
of findings goes through `FindingsStore.query/get`, every read of a history through
`HistoryRepository.load_history`, so the console shows what the API would answer.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from rxguard.api.models import FindingView, Review
from rxguard.api.service import Services
from rxguard.api.store import FindingQuery, RuleFigures
from rxguard.engine import trigger_lines
from rxguard.engine.institutions import ActivityAggregate
from rxguard.kb import RuleDefinition
from rxguard.models import ClaimLine, Finding
from rxguard.scope import Scope

PAGE = 500  # findings per store page while reading the whole queue
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2}


# ------------------------------------------------------------------ findings and risk


@dataclass(frozen=True)
class QueueFilter:
    region: str | None = None  # admdvs prefix: 31 (Shanghai), 3101, 310101
    institution: str | None = None
    rule: str | None = None
    severity: str | None = None
    status: str | None = None  # None: open (new) and reviewed, never superseded
    date_from: date | None = None
    date_to: date | None = None

    def store_query(self, institution: str | None) -> FindingQuery:
        return FindingQuery(
            institution=institution,
            rule_id=self.rule,
            status=self.status,
            date_from=self.date_from,
            date_to=self.date_to,
        )

    def keeps(self, finding: FindingView) -> bool:
        if self.region and not (finding.admdvs or "").startswith(self.region):
            return False
        return not (self.severity and finding.severity.value != self.severity)


def all_findings(services: Services, query: FindingQuery) -> list[FindingView]:
    """Every finding the store answers for `query`, page by page."""
    out: list[FindingView] = []
    token: str | None = None
    while True:
        items, token = services.store.query(query, PAGE, token)
        out.extend(items)
        if token is None:
            return out


@dataclass(frozen=True)
class Risk:
    score: float  # 0-100
    parts: dict[str, Any]
    source: str  # "patient_risk" or "severity" (the fallback order)


def _as_finding(view: FindingView) -> Finding:
    data = view.model_dump(exclude={"review"})
    data["occurred_at"] = view.occurred_at.replace(tzinfo=None)
    return Finding.model_validate(data)


def _load_patient_risk() -> Callable[..., Any] | None:
    try:  # rxguard/engine/risk.py (helper "rules"); until it exists the queue orders by severity
        from rxguard.engine.risk import patient_risk  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return patient_risk  # type: ignore[no-any-return,unused-ignore]


def _score_of(result: Any) -> tuple[float, dict[str, Any]]:
    """`patient_risk` returns a score 0-100 with its parts: an object, a mapping or a pair."""
    if isinstance(result, int | float):
        return float(result), {}
    if isinstance(result, dict):
        return float(result.get("score", 0.0)), dict(result.get("parts", {}))
    if isinstance(result, tuple):
        return float(result[0]), dict(result[1]) if len(result) > 1 and isinstance(result[1], dict) else {}
    parts = getattr(result, "parts", {})
    return float(result.score), dict(parts) if isinstance(parts, dict) else {"parts": parts}


def severity_risk(findings: Sequence[FindingView]) -> Risk:
    """The fallback: worst severity, then number of open findings (a stand-in for the
    patient risk score until rxguard.engine.risk lands)."""
    worst = max((SEVERITY_RANK[f.severity.value] for f in findings), default=0)
    open_ = sum(1 for f in findings if f.status == "new")
    rules = len({f.rule_id for f in findings})
    score = worst * 30 + min(open_, 20) * 1.5 + min(rules, 5) * 2  # at most 60 + 30 + 10
    return Risk(score, {"worst_severity": worst, "open_findings": open_, "rules": rules}, "severity")


def risk_of(findings: Sequence[FindingView]) -> Risk:
    """The risk of one subject (patient) from all its findings and their reviews."""
    scorer = _load_patient_risk()
    if scorer is None:
        return severity_risk(findings)
    reviews: dict[str, Review] = {f.finding_id: f.review for f in findings if f.review is not None}
    score, parts = _score_of(scorer([_as_finding(f) for f in findings], reviews))
    return Risk(round(score, 1), parts, "patient_risk")


def subject_key(finding: FindingView) -> str:
    if finding.subject_type == "patient" and not finding.psn_no:  # a patient hidden from this reader
        return Scope.institution(str(finding.fixmedins_code))
    return Scope.of(finding)


@dataclass
class QueueRow:
    finding: FindingView
    risk: Risk


def review_queue(services: Services, flt: QueueFilter, institution: str | None) -> list[QueueRow]:
    """Findings ordered by their subject's risk (highest first), then severity, then recency.

    The risk of a patient is computed over ALL its current findings (not only the
    filtered ones), so a filter never changes a patient's place relative to another."""
    shown = [f for f in all_findings(services, flt.store_query(institution)) if flt.keeps(f)]
    subjects = {subject_key(f) for f in shown}
    every = all_findings(services, FindingQuery(institution=institution))
    by_subject: dict[str, list[FindingView]] = defaultdict(list)
    for f in every:
        key = subject_key(f)
        if key in subjects:
            by_subject[key].append(f)
    risks = {key: risk_of(group) for key, group in by_subject.items()}
    rows = [QueueRow(f, risks.get(subject_key(f)) or severity_risk([f])) for f in shown]
    rows.sort(
        key=lambda r: (
            -r.risk.score,
            -SEVERITY_RANK[r.finding.severity.value],
            -r.finding.occurred_at.timestamp(),
            r.finding.finding_id,
        )
    )
    return rows


# ------------------------------------------------------------------ one finding


@dataclass
class EvidenceLine:
    line_id: str
    line: ClaimLine | None  # None: not in the patient's history (another patient's sale)
    trigger: bool


def evidence_lines(services: Services, finding: FindingView) -> list[EvidenceLine]:
    triggers = set(trigger_lines(_as_finding(finding)))
    known: dict[str, ClaimLine] = {}
    if finding.psn_no:
        for line in services.repo.load_history([finding.psn_no]).get(finding.psn_no, []):
            known[line.line_id] = line
    return [EvidenceLine(lid, known.get(lid), lid in triggers) for lid in finding.evidence]


def rule_parameters(services: Services, finding: FindingView) -> tuple[dict[str, Any], int | None]:
    """The rule's parameters for the finding's region, and the current version when it
    differs from the version the finding was made under (None when the same)."""
    rule = services.kb.rules.get(finding.rule_id)
    if rule is None:
        return {}, None
    params = rule.params_for(finding.admdvs)
    return dict(params), (rule.version if rule.version != finding.rule_version else None)


# ------------------------------------------------------------------ patient timeline


@dataclass
class Fill:
    line: ClaimLine
    ingredient: str  # row label
    start: datetime
    end: datetime  # start + days of supply (at the label maximum dose)
    overlap_days: float = 0.0  # days this fill overlaps earlier supply of the same ingredient
    early_refill: bool = False  # blamed by an early-refill finding
    flagged_by: list[str] = field(default_factory=list)  # rule ids whose findings blame this line
    reversal: bool = False  # negative quantity: cancels (part of) an earlier line
    reversed_line: str | None = None
    lane: int = 0  # sub-row within the ingredient's row: overlapping fills sit side by side, not on top


@dataclass
class Timeline:
    fills: list[Fill]
    unmonitored: list[ClaimLine]
    institutions: list[str]
    ingredients: list[str]
    lanes: dict[str, int] = field(default_factory=dict)  # ingredient -> number of sub-rows


def ingredient_of(line: ClaimLine, services: Services, lang: str) -> str:
    drug = services.kb.drug(line.med_list_codg)
    if drug is None:
        return line.med_list_name or line.med_list_codg
    name = drug.generic_name_zh if lang == "zh" else drug.generic_name_en
    return f"{name} ({drug.atc_code})"


def timeline(services: Services, psn_no: str, findings: Sequence[FindingView], lang: str = "zh") -> Timeline:
    history = services.repo.load_history([psn_no]).get(psn_no, [])
    blamed: dict[str, list[str]] = defaultdict(list)
    for f in findings:
        for lid in trigger_lines(_as_finding(f)):
            blamed[lid].append(f.rule_id)
    fills: list[Fill] = []
    unmonitored: list[ClaimLine] = []
    for line in history:
        reversed_line = getattr(line, "init_feedetl_sn", None)
        reversal = line.cnt < 0 or reversed_line is not None
        if line.days_supply is None and not reversal:
            unmonitored.append(line)
            continue
        days = max(line.days_supply or 0.0, 0.0)
        fills.append(
            Fill(
                line=line,
                ingredient=ingredient_of(line, services, lang),
                start=line.fee_ocur_time,
                end=line.fee_ocur_time + timedelta(days=days),
                early_refill="early-refill" in blamed.get(line.line_id, []),
                flagged_by=sorted(set(blamed.get(line.line_id, []))),
                reversal=reversal,
                reversed_line=f"{line.fixmedins_code}/{reversed_line}" if reversed_line else None,
            )
        )
    by_ingredient: dict[str, list[Fill]] = defaultdict(list)
    for fill in fills:
        if not fill.reversal:
            by_ingredient[fill.ingredient].append(fill)
    for group in by_ingredient.values():
        group.sort(key=lambda x: (x.start, x.line.line_id))
        covered_until: datetime | None = None
        lane_ends: list[datetime] = []
        for fill in group:
            if covered_until is not None and fill.start < covered_until:
                fill.overlap_days = round((min(covered_until, fill.end) - fill.start).total_seconds() / 86400, 1)
            covered_until = fill.end if covered_until is None else max(covered_until, fill.end)
            free = next((i for i, end in enumerate(lane_ends) if end <= fill.start), None)
            if free is None:
                lane_ends.append(fill.end)
                free = len(lane_ends) - 1
            lane_ends[free] = fill.end
            fill.lane = free
    return Timeline(
        fills=fills,
        unmonitored=unmonitored,
        institutions=sorted({f.line.fixmedins_code for f in fills}),
        ingredients=sorted(by_ingredient) + sorted({f.ingredient for f in fills if f.reversal} - set(by_ingredient)),
        lanes={name: 1 + max((f.lane for f in group), default=0) for name, group in by_ingredient.items()},
    )


def timeline_chart(tl: Timeline) -> dict[str, Any]:
    """The data of the Rx graph (console.js draws it with an ECharts custom series)."""
    return {
        "ingredients": tl.ingredients,
        "lanes": [tl.lanes.get(name, 1) for name in tl.ingredients],
        "institutions": tl.institutions,
        "fills": [
            {
                "row": tl.ingredients.index(f.ingredient),
                "start": f.start.isoformat(),
                "end": f.end.isoformat(),
                "institution": f.line.fixmedins_code,
                "line_id": f.line.line_id,
                "days": round(f.line.days_supply or 0.0, 1),
                "overlap": f.overlap_days,
                "early": f.early_refill,
                "reversal": f.reversal,
                "override": f.line.override_reason,
                "flagged": f.flagged_by,
                "lane": f.lane,
            }
            for f in tl.fills
        ],
    }


# ------------------------------------------------------------------ institutions


@dataclass
class FunnelPoint:
    code: str
    lines: int
    flagged: int

    @property
    def share(self) -> float:
        return self.flagged / self.lines if self.lines else 0.0


@dataclass
class Funnel:
    points: list[FunnelPoint]
    mean: float  # pooled flagged share of all institutions
    limits: list[dict[str, float]]  # n, lower/upper 95% and 99.8%

    def position(self, code: str) -> str:
        """above99 / above95 / within / below95 for the institution's point."""
        point = next((p for p in self.points if p.code == code), None)
        if point is None or point.lines == 0:
            return "none"
        sd = math.sqrt(self.mean * (1 - self.mean) / point.lines)
        if point.share > self.mean + 3.09 * sd:
            return "above99"
        if point.share > self.mean + 1.96 * sd:
            return "above95"
        if point.share < self.mean - 1.96 * sd:
            return "below95"
        return "within"


def funnel(activity: Iterable[ActivityAggregate]) -> Funnel:
    """Flagged share of monitored lines per institution against the pooled share, with
    binomial control limits (95% and 99.8%) by volume: the funnel plot of peer comparison."""
    lines: Counter[str] = Counter()
    flagged: Counter[str] = Counter()
    for agg in activity:
        if agg.subject_type != "institution":
            continue
        lines[agg.code] += agg.monitored_lines
        flagged[agg.code] += len(agg.flagged_lines)
    points = [FunnelPoint(code, lines[code], flagged[code]) for code in sorted(lines)]
    total = sum(lines.values())
    mean = sum(flagged.values()) / total if total else 0.0
    top = max(lines.values(), default=1)
    limits = []
    steps = 40
    for i in range(1, steps + 1):
        n = max(1.0, top * i / steps)
        sd = math.sqrt(mean * (1 - mean) / n)
        limits.append(
            {
                "n": round(n, 1),
                "lo95": max(0.0, mean - 1.96 * sd),
                "hi95": min(1.0, mean + 1.96 * sd),
                "lo99": max(0.0, mean - 3.09 * sd),
                "hi99": min(1.0, mean + 3.09 * sd),
            }
        )
    return Funnel(points, mean, limits)


@dataclass
class ReportCard:
    code: str
    monthly: list[tuple[str, int, int]]  # period, monitored lines, flagged lines
    funnel: Funnel | None
    top_rules: list[tuple[str, int]]
    prescribers: list[tuple[str, int, int]]  # code, monitored lines, flagged lines
    findings: list[FindingView]


def report_card(
    services: Services, code: str, activity: Sequence[ActivityAggregate] | None, findings: list[FindingView]
) -> ReportCard:
    monthly: dict[str, list[int]] = {}
    doctors: dict[str, list[int]] = {}
    for agg in activity or ():
        if agg.subject_type == "institution" and agg.code == code:
            slot = monthly.setdefault(agg.period, [0, 0])
            slot[0] += agg.monitored_lines
            slot[1] += len(agg.flagged_lines)
        elif agg.subject_type == "prescriber" and agg.fixmedins_code == code:
            slot = doctors.setdefault(agg.code, [0, 0])
            slot[0] += agg.monitored_lines
            slot[1] += len(agg.flagged_lines)
    if not doctors:  # no activity source: prescribers named on the findings
        for f in findings:
            if f.bilg_dr_codg:
                doctors.setdefault(f.bilg_dr_codg, [0, 0])[1] += 1
    rules = Counter(f.rule_id for f in findings)
    return ReportCard(
        code=code,
        monthly=[(p, v[0], v[1]) for p, v in sorted(monthly.items())],
        funnel=funnel(activity) if activity else None,
        top_rules=rules.most_common(10),
        prescribers=sorted(((d, v[0], v[1]) for d, v in doctors.items()), key=lambda x: (-x[2], -x[1], x[0]))[:10],
        findings=findings,
    )


# ------------------------------------------------------------------ rules


@dataclass(frozen=True, kw_only=True)
class RuleRow(RuleFigures):
    """A rule as the console lists it: its definition, its findings in the view, and
    its review and disposition figures (precision, continue and modify rates: RuleFigures)."""

    rule: RuleDefinition  # id, names, version, severity, enabled
    open: int
    per_month: dict[str, int]


def rule_rows(services: Services, findings: Sequence[FindingView]) -> tuple[list[RuleRow], list[str]]:
    figures = services.store.rule_figures(services.kb.rules.keys())
    months = sorted({f.occurred_at.strftime("%Y-%m") for f in findings})
    per: dict[str, Counter[str]] = defaultdict(Counter)
    open_: Counter[str] = Counter()
    for f in findings:
        per[f.rule_id][f.occurred_at.strftime("%Y-%m")] += 1
        if f.status == "new":
            open_[f.rule_id] += 1
    rows = [
        RuleRow(
            rule=rule,
            open=open_[rule.id],
            per_month={m: per[rule.id][m] for m in months},
            **asdict(figures.get(rule.id, RuleFigures())),
        )
        for rule in sorted(services.kb.rules.values(), key=lambda r: r.id)
    ]
    return rows, months
