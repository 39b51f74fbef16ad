"""The logic behind the routes: no HTTP, no boto3.

A request (rxguard shape or national 3101/3102 shape) becomes claim-line records in the
contract of docs/design.md, normalized by the same `normalize_record` as the batch path, then:
- checks: `screening.check_lines` (history + trace codes in two reads, no writes);
- dispensations: `screening.screen_lines(scene=IN)` (conditional writes on the line id:
  a later settlement batch with the same lines counts nothing twice), new findings to
  the alerts topic.
Decision per line: the worst severity of the rules that fire on it, high -> block,
medium -> warn, low -> pass (the hit is still reported, as information).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from functools import partial
from typing import Any, Literal

from rxguard import claimline, screening
from rxguard.alerts import notify_batch
from rxguard.alerts.schema import AlertMessage, pseudonym
from rxguard.api import nhsa
from rxguard.api.access import (
    Caller,
    readable_institution,
    require_finding_access,
    require_institutions,
    require_reviewer,
)
from rxguard.api.audit import AccessRecord, Action, AuditLog, AuditPage, AuditQuery, InMemoryAuditLog, stranger_alert
from rxguard.api.errors import Conflict, Forbidden, InvalidField, NotFound, PayloadTooLarge
from rxguard.api.models import (
    BacktestRequest,
    BacktestResponse,
    CheckResponse,
    Decision,
    DispensationResponse,
    DispensingRequest,
    Disposition,
    DispositionRequest,
    DispositionResponse,
    FindingsPage,
    FindingView,
    LineResult,
    PreviousFill,
    ProposedLine,
    ReviewRequest,
    RuleHit,
    RulesResponse,
    RuleView,
    SubscriptionRequest,
    SubscriptionsResponse,
    SubscriptionView,
)
from rxguard.api.settings import ApiSettings
from rxguard.api.store import FindingQuery, FindingsStore
from rxguard.api.subscriptions import Subscriptions, filter_policy
from rxguard.engine.risk import PatientRisk, patient_risk
from rxguard.ingest.normalize import LineRejected, TimeWindow, normalize_record
from rxguard.kb import KnowledgeBase, KnowledgeBaseError
from rxguard.letters import issue_letters
from rxguard.models import ClaimLine, Finding, OverrideReason, Scene, Severity
from rxguard.repository import FindingChanges, HistoryRepository, TraceSale
from rxguard.scope import Scope

DECISION: dict[Severity, Decision] = {Severity.HIGH: "block", Severity.MEDIUM: "warn", Severity.LOW: "pass"}
NOT_MONITORED = "not monitored"
CHINA = timezone(timedelta(hours=8))
logger = logging.getLogger("rxguard.api")  # not observability's: Powertools objects read the environment at import
_PSEUDONYM = re.compile(r"p-[0-9a-f]{20}")  # claim-line times are China time; no DST, no tz database needed
Shape = Literal["rxguard", "nhsa"]
CheckBody = DispensingRequest | nhsa.NhsaRequest | nhsa.NhsaEnvelope
DispositionBody = DispositionRequest | nhsa.NhsaDispositionRequest | nhsa.NhsaDispositionEnvelope
EVIDENCE_CAP = 5  # evidence line ids a hit lists (the finding keeps them all; GET shows them): a 200-line check < 1 MB
TRIGGER_CAP = 3  # trigger line ids a hit's figures list (with trigger_lines_count)
# Rules a dispenser can wait out: the fill passes once enough of the earlier supply is used.
WAITABLE_RULES = frozenset({"early-refill", "cumulative-oversupply", "cross-institution-repeat"})
# What the next-fill search re-checks: the waitable rules and override-frequency, which the
# supply walk (rxguard.engine.supply) evaluates first to settle which override reasons hold.
# No other rule changes a waitable finding, so the search skips them.
SEARCH_RULES = WAITABLE_RULES | {"override-frequency"}
NEXT_FILL_HORIZON_DAYS = 400  # beyond this, waiting is not the answer (next_fill_on null)
# A continued warning's reason (3103 dspo_way_rea, free text) -> the line's override reason,
# by the first matching words; a reason matching none is counted in the figures only.
OVERRIDE_WORDS: tuple[tuple[OverrideReason, tuple[str, ...]], ...] = (
    ("lost", ("遗失", "丢失", "被盗", "损坏", "lost")),
    ("travel", ("外出", "出差", "旅行", "出国", "返乡", "探亲", "备药", "travel")),
    ("dose_change", ("剂量", "加量", "增量", "调整用量", "dose")),
)

# (access records, warnings, when, answered line ids): `Services.record_check`
CheckWrites = Callable[[Sequence[AccessRecord], Sequence[Finding], datetime, Collection[str]], None]
# (lines, repo, kb[, scenes=...]) -> findings by proposed line id
Checker = Callable[..., dict[str, list[Finding]]]
Screener = Callable[..., Any]  # screening.screen_lines(lines, repo, kb, scene=...) -> ScreenOutcome
# (new and updated findings, batch id, the request's lines by id) -> alerts published
Notifier = Callable[[Sequence[Finding], str, Mapping[str, ClaimLine]], int]
# (rule entries as in rules.yaml, since YYYY-MM) -> the backtest report (docs/planning.md); the
# composition root wires one where a stored history can be re-evaluated (rxguard serve --state)
Planner = Callable[[list[dict[str, Any]], str | None], dict[str, Any]]


def _default_checker(
    lines: Sequence[ClaimLine], repo: HistoryRepository, kb: KnowledgeBase, **kwargs: Any
) -> dict[str, list[Finding]]:
    return screening.check_lines(lines, repo, kb, **kwargs)


def _default_screener(lines: Sequence[ClaimLine], repo: HistoryRepository, kb: KnowledgeBase, scene: Scene) -> Any:
    return screening.screen_lines(lines, repo, kb, scene=scene)


@dataclass
class Services:
    """What the routes need; the composition root (handler, serve, tests) builds it."""

    kb: KnowledgeBase
    repo: HistoryRepository
    store: FindingsStore
    settings: ApiSettings = field(default_factory=ApiSettings)
    notify: Notifier | None = None
    check_lines: Checker = _default_checker
    screen_lines: Screener = _default_screener
    default_admdvs: str | None = None
    clock: Callable[[], datetime] | None = None  # China time, naive (as fee_ocur_time)
    audit: AuditLog | None = field(default_factory=InMemoryAuditLog)  # access audit (docs/security.md)
    national: nhsa.NationalDictionary = field(default_factory=nhsa.dictionary)
    subscriptions: Subscriptions | None = None  # SNS subscriptions (POST/GET/DELETE /v1/subscriptions)
    planner: Planner | None = None  # backtests over the stored history
    # publishes an access alert (the stranger alert): SNS through the outbox on AWS, the local outbox offline
    access_alerts: Callable[[AlertMessage], object] | None = None
    # a check's writes, its access records and the warnings it answered (findings, when, the
    # answered line ids), in one transaction where the adapter can (the local state); None:
    # `audit.record`, then `store.record_warnings`
    record_check: CheckWrites | None = None

    def now(self) -> datetime:
        if self.clock is not None:
            return self.clock()
        return datetime.now(CHINA).replace(tzinfo=None, microsecond=0)


@dataclass
class RequestLine:
    """One drug line of a request as a claim-line record (contract field -> value), with the
    request path each field came from (`lines[0].cnt`, `psn_no`, `data.patient_dtos[0].patn_id`)."""

    record: dict[str, object]
    path: str  # the line: "lines[0]" or "data.patient_dtos[0].fsi_encounter_dtos[0].fsi_order_dtos[1]"
    sources: Mapping[str, str]  # contract field -> request field path
    answer: bool = True  # False: context only (a 3101 order with curr_drord_flag 0)
    task_id: str | None = None


def alerts_notifier(kb: KnowledgeBase, sink: Any, settings: Any = None, counters: Any = None) -> Notifier:
    """Findings of a dispensing -> the alerts topic, as the batch's Notify step does (each
    finding is alerted at most once, however often it is passed). `counters` numbers the
    letters (`rxguard.letters.CounterStore`; the DynamoDB CountersTable on AWS)."""
    letters = partial(issue_letters, counters=counters) if counters is not None else issue_letters

    def notify(findings: Sequence[Finding], batch_id: str, lines: Mapping[str, ClaimLine]) -> int:
        names = {line.fixmedins_code: line.fixmedins_name for line in lines.values() if line.fixmedins_name}
        summary = notify_batch(
            findings,
            batch_id=batch_id,
            kb=kb,
            sink=sink,
            settings=settings,
            institution_names=names,
            lines=lines,
            letters=letters,
        )
        return summary.alerts_published

    return notify


# ------------------------------------------------------------------ parsing


def _time_text(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(CHINA)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def lines_of(body: CheckBody, now: datetime, *, require_sn: bool) -> list[RequestLine]:
    if isinstance(body, DispensingRequest):
        return _rxguard_lines(body, now, require_sn=require_sn)
    return _nhsa_lines(body, now)


# rxguard's request shape speaks the contract's names: a field of the line, else of the visit.
_LINE_FIELDS = tuple(name for name in claimline.COLUMNS if name in ProposedLine.model_fields)
_VISIT_FIELDS = tuple(
    name for name in claimline.COLUMNS if name in DispensingRequest.model_fields and name not in _LINE_FIELDS
)


def _rxguard_lines(body: DispensingRequest, now: datetime, *, require_sn: bool) -> list[RequestLine]:
    time = _time_text(body.fee_ocur_time or now)
    visit: dict[str, object] = {name: getattr(body, name) for name in _VISIT_FIELDS}
    visit["fee_ocur_time"] = time
    visit_sources = {name: name for name in _VISIT_FIELDS}
    out = []
    for i, line in enumerate(body.lines):
        path = f"lines[{i}]"
        if line.feedetl_sn is None and require_sn:
            raise InvalidField(
                f"{path}.feedetl_sn is required to record a dispensing", f"{path}.feedetl_sn", code="missing_field"
            )
        record: dict[str, object] = {**visit, **{name: getattr(line, name) for name in _LINE_FIELDS}}
        record["feedetl_sn"] = line.feedetl_sn or f"check-{i + 1}"
        if line.det_item_fee_sumamt is None:
            record["det_item_fee_sumamt"] = round(line.cnt * line.pric, 2)
        record["dise_codg"] = [*body.dise_codg, *line.dise_codg]
        sources = {**visit_sources, **{name: f"{path}.{name}" for name in _LINE_FIELDS}}
        out.append(RequestLine({k: v for k, v in record.items() if v is not None}, path, sources))
    return out


def _nhsa_lines(body: nhsa.NhsaRequest | nhsa.NhsaEnvelope, now: datetime) -> list[RequestLine]:
    data, prefix = nhsa.nhsa_data(body)
    task_id = data.task_id
    out = []
    for p, patient in enumerate(data.patient_dtos):
        for e, encounter in enumerate(patient.fsi_encounter_dtos):
            for o, order in enumerate(encounter.fsi_order_dtos):
                path = f"{prefix}.patient_dtos[{p}].fsi_encounter_dtos[{e}].fsi_order_dtos[{o}]"
                record, fields = nhsa.order_record(patient, encounter, order, _time_text(now))
                sources = {name: nhsa.resolve_field(path, fields.get(name, name)) for name in claimline.COLUMNS}
                out.append(RequestLine(record, path, sources, answer=order.curr_drord_flag != "0", task_id=task_id))
    return out


def _request_field(line: RequestLine, record_field: str | None) -> str:
    if record_field is None:
        return line.path
    return line.sources.get(record_field, f"{line.path}.{record_field}")


def _work(line: RequestLine) -> int:
    codes = line.record.get("drug_trac_codg")
    if isinstance(codes, list):
        return 1 + len(codes)
    return 1 + (len(codes) // 21 + 1 if isinstance(codes, str) and codes else 0)


def normalize(lines: Sequence[RequestLine], services: Services, *, recording: bool = False) -> list[ClaimLine]:
    """Normalize with the batch path's own rules; a bad line is a 400 naming the field. A line
    recorded (`recording`) more than late_hours after it happened is marked late (received_at)."""
    settings = services.settings
    if len(lines) > settings.max_lines:
        raise PayloadTooLarge(f"{len(lines)} drug lines in one request; at most {settings.max_lines}", None)
    work = sum(_work(line) for line in lines)
    if work > settings.max_work:
        raise PayloadTooLarge(
            f"{len(lines)} drug lines with {work - len(lines)} trace codes in one request: at most "
            f"{settings.max_work} lines + codes, so the answer fits the timeout; split the dispensing",
            None,
        )
    now = services.now()
    # what is recorded must be plausibly dated; a check records nothing and may ask about another day
    window = (
        TimeWindow.around(now, history_days=settings.history_days, skew_minutes=settings.clock_skew_minutes)
        if recording
        else None
    )
    late_after = timedelta(hours=settings.late_hours)
    out: list[ClaimLine] = []
    seen: dict[str, str] = {}
    for i, line in enumerate(lines):
        try:
            claim = normalize_record(
                line.record,
                services.kb,
                file="request",
                line=i + 1,
                default_admdvs=services.default_admdvs,
                window=window,
            )
            if recording and now - claim.fee_ocur_time > late_after:
                claim = claim.model_copy(update={"received_at": now})
        except LineRejected as exc:
            rejection = exc.rejection
            field_name = _request_field(line, rejection.field)
            raise InvalidField(
                f"{field_name}: {rejection.message}", field_name, code=f"invalid_{rejection.reason}"
            ) from exc
        if claim.line_id in seen:
            field_name = _request_field(line, "feedetl_sn")
            raise InvalidField(
                f"{field_name}: line {claim.line_id} appears twice in the request (also {seen[claim.line_id]})",
                field_name,
                code="duplicate_line",
            )
        seen[claim.line_id] = line.path
        out.append(claim)
    return out


# ------------------------------------------------------------------ results


def decision_of(findings: Sequence[Finding]) -> Decision:
    if not findings:
        return "pass"
    return DECISION[max((f.severity for f in findings), key=lambda s: s.rank)]


def worst(decisions: Sequence[Decision]) -> Decision:
    order = {"pass": 0, "warn": 1, "block": 2}
    return max(decisions, key=lambda d: order[d], default="pass")


_SEARCH_KBS: dict[int, tuple[KnowledgeBase, KnowledgeBase]] = {}


def search_kb(kb: KnowledgeBase) -> KnowledgeBase:
    """The knowledge base narrowed to SEARCH_RULES (one per knowledge base, kept: the engine
    cache is keyed by the knowledge base)."""
    cached = _SEARCH_KBS.get(id(kb))
    if cached is None or cached[0] is not kb:
        narrowed = dataclasses.replace(kb, rules={r: d for r, d in kb.rules.items() if r in SEARCH_RULES})
        cached = _SEARCH_KBS[id(kb)] = (kb, narrowed)
    return cached[1]


class _CheckReads(HistoryRepository):
    """A repository a check reads through: a check records nothing."""

    def record_lines(self, lines: Sequence[ClaimLine], bodies: Mapping[str, str] | None = None) -> list[ClaimLine]:
        raise NotImplementedError("a check records nothing")

    def replace_findings(self, scope: str, findings: Sequence[Finding]) -> FindingChanges:
        raise NotImplementedError("a check records nothing")


class _CachedReads(_CheckReads):
    """The history a check reads, read once: the next-fill search re-checks a line on later
    days without reading again, and the previous fill is looked up in what was read (its
    ingredient's lines, `_OneIngredient`)."""

    def __init__(self, repo: HistoryRepository) -> None:
        self.repo = repo
        self.history: dict[str, list[ClaimLine]] = {}
        self.sales: dict[str, list[TraceSale]] = {}

    def load_history(self, psn_nos: Collection[str]) -> dict[str, list[ClaimLine]]:
        missing = sorted(set(psn_nos) - self.history.keys())
        if missing:
            loaded = self.repo.load_history(missing)
            for psn in missing:
                self.history[psn] = list(loaded.get(psn, ()))
        return {p: self.history[p] for p in psn_nos}

    def load_trace_sales(self, codes: Collection[str]) -> dict[str, list[TraceSale]]:
        missing = sorted(set(codes) - self.sales.keys())
        if missing:
            loaded = self.repo.load_trace_sales(missing)
            for code in missing:
                self.sales[code] = list(loaded.get(code, ()))
        return {c: self.sales[c] for c in codes}

    def load_findings(self, scopes: Collection[str]) -> dict[str, list[Finding]]:
        return self.repo.load_findings(scopes)


@dataclass
class Advice:
    """What a dispenser acts on, per answered line: when the fill would pass, and the fill
    each supply finding compares with."""

    next_fill_on: dict[str, date | None] = field(default_factory=dict)  # line id -> day (None: waiting fails)
    previous: dict[tuple[str, str], PreviousFill] = field(default_factory=dict)  # (line id, finding id) -> fill


def _previous_fill(line: ClaimLine, finding: Finding, known: Mapping[str, ClaimLine]) -> PreviousFill | None:
    """The latest evidence line of the same ingredient before `line` (another line)."""
    earlier = [
        known[i]
        for i in finding.evidence
        if i != line.line_id
        and i in known
        and known[i].fee_ocur_time <= line.fee_ocur_time
        and (known[i].atc_code or known[i].med_list_codg) == (line.atc_code or line.med_list_codg)
    ]
    if not earlier:
        return None
    prev = max(earlier, key=lambda ln: (ln.fee_ocur_time, ln.line_id))
    return PreviousFill(
        line_id=prev.line_id,
        dispensed_on=prev.fee_ocur_time.date(),
        quantity=prev.cnt,
        days_supply=None if prev.days_supply is None else round(prev.days_supply, 2),
        fixmedins_code=prev.fixmedins_code,
        fixmedins_name=prev.fixmedins_name,
        prescriber=prev.bilg_dr_codg,
        med_list_codg=prev.med_list_codg,
        med_list_name=prev.med_list_name,
    )


def advise(
    services: Services,
    claims: Sequence[ClaimLine],
    hits: Mapping[str, list[Finding]],
    reads: _CachedReads,
    check: Callable[..., dict[str, list[Finding]]],
    allowed: Collection[str] | None,
    context: Sequence[ClaimLine] = (),
) -> Advice:
    """next_fill_on: the first day (bisection over 1..NEXT_FILL_HORIZON_DAYS days later)
    on which the line, re-checked against the same history with the other lines of the
    request, draws no finding of a waitable rule; None when even the horizon does not
    help. Supply findings are monotone in the waiting time (more of the earlier supply is
    used), which makes bisection exact; the answer is re-checked once.

    Cost: the waitable rules judge one ingredient, so the search re-checks only the lines of
    the claim's ingredient (`_OneIngredient`), and lines of one patient, ingredient and time
    (one fill) share one search."""
    advice = Advice()
    proposed = {c.line_id: c for c in claims}
    views: dict[str, _OneIngredient] = {}
    searched: dict[tuple[str, str, datetime], date | None] = {}
    for claim in claims:
        waitable = [f for f in hits.get(claim.line_id, []) if f.rule_id in WAITABLE_RULES]
        if not waitable:
            continue
        ingredient = claim.atc_code or claim.med_list_codg
        view = views.get(ingredient) or views.setdefault(ingredient, _OneIngredient(reads, ingredient))
        # a previous fill is of the claim's ingredient: looked up among its lines (a proposed line wins)
        known = {**view.lines_of(claim.psn_no), **proposed}
        for finding in waitable:
            prev = _previous_fill(claim, finding, known)
            if prev is not None:
                advice.previous[(claim.line_id, finding.finding_id)] = prev
        group = (claim.psn_no, ingredient, claim.fee_ocur_time)
        if group in searched:
            advice.next_fill_on[claim.line_id] = searched[group]
            continue
        others = [
            c
            for c in (context or claims)
            if c.psn_no == claim.psn_no and c.line_id != claim.line_id and (c.atc_code or c.med_list_codg) == ingredient
        ]

        def passes(
            days: int, claim: ClaimLine = claim, others: list[ClaimLine] = others, view: _OneIngredient = view
        ) -> bool:
            moved = claim.model_copy(update={"fee_ocur_time": claim.fee_ocur_time + timedelta(days=days)})
            found = check([*others, moved], view).get(claim.line_id, [])
            return not any(f.rule_id in WAITABLE_RULES and (allowed is None or f.rule_id in allowed) for f in found)

        days = first_passing_day(passes, _wait_estimate(waitable), NEXT_FILL_HORIZON_DAYS)
        advice.next_fill_on[claim.line_id] = searched[group] = (
            None if days is None else claim.fee_ocur_time.date() + timedelta(days=days)
        )
    return advice


def first_passing_day(passes: Callable[[int], bool], guess: int | None, horizon: int) -> int | None:
    """The least d in 1..horizon with passes(d), given that day 0 fails and passes is monotone
    (fails, then passes); None when even the horizon fails.

    Without a guess: the horizon, then bisection (1 + log2(horizon) probes, 10 for 400 days).
    With one: the guess, then galloping away from it (steps 1, 2, 4...) until the answer is
    bracketed, then bisection: 2 probes when the guess is exact, 2 log2(error) + 2 otherwise.
    The guess only orders the probes; the answer is the same."""
    if guess is None:
        if not passes(horizon):
            return None
        low, high = 0, horizon  # fails at low (today), passes at high
    else:
        probe = min(max(guess, 1), horizon)
        if passes(probe):
            high, step, low = probe, 1, 0
            while high - step > 0:  # gallop down until a failing day
                if not passes(high - step):
                    low = high - step
                    break
                high, step = high - step, step * 2
        else:
            low, step, high = probe, 1, 0
            while high == 0:  # gallop up until a passing day
                if low + step >= horizon:
                    if not passes(horizon):
                        return None
                    high = horizon
                elif passes(low + step):
                    high = low + step
                else:
                    low, step = low + step, step * 2
    while high - low > 1:
        middle = (low + high) // 2
        if passes(middle):
            high = middle
        else:
            low = middle
    return high


def _wait_estimate(findings: Sequence[Finding]) -> int | None:
    """Days to wait before the supply findings would stop firing, estimated from their figures
    (early-refill: the previous supply `used_fraction_threshold` used, the stock beyond the
    carry tolerance run down; cross-institution-repeat: the overlap under its minimum;
    cumulative-oversupply: the stock run down to the threshold). Only a starting point for
    `first_passing_day`, which re-checks: the wait of all of them, or None when one has no estimate."""
    days = []
    for finding in findings:
        f = finding.figures
        try:
            if finding.rule_id == "early-refill":
                previous = float(f["previous_days_supplied"])
                threshold = float(f["used_fraction_threshold"])
                by_interval = threshold * previous - float(f["elapsed_days"])
                by_stock = float(f["stock_before_days"]) - float(f["carry_tolerance_days"]) - (1 - threshold) * previous
                days.append(max(by_interval, by_stock))
            elif finding.rule_id == "cross-institution-repeat":
                days.append(float(f["overlap_days"]) - float(f["min_overlap_days"]))
            elif finding.rule_id == "cumulative-oversupply":
                days.append(float(f["stock_days"]) - float(f["threshold_days"]))
            else:
                return None
        except (KeyError, TypeError, ValueError):
            return None
    return math.ceil(max(days)) if days else None


class _OneIngredient(_CheckReads):
    """The cached history narrowed to one ingredient (what the waitable supply rules read)."""

    def __init__(self, reads: _CachedReads, ingredient: str) -> None:
        self.reads, self.ingredient = reads, ingredient
        self.narrowed: dict[str, list[ClaimLine]] = {}  # filtered once: the search re-checks many times
        self.by_id: dict[str, dict[str, ClaimLine]] = {}

    def load_history(self, psn_nos: Collection[str]) -> dict[str, list[ClaimLine]]:
        missing = [p for p in psn_nos if p not in self.narrowed]
        for p, lines in self.reads.load_history(missing).items() if missing else ():
            self.narrowed[p] = [ln for ln in lines if (ln.atc_code or ln.med_list_codg) == self.ingredient]
        return {p: self.narrowed[p] for p in psn_nos}

    def lines_of(self, psn_no: str) -> dict[str, ClaimLine]:
        """The patient's lines of this ingredient, by id."""
        found = self.by_id.get(psn_no)
        if found is None:
            found = self.by_id[psn_no] = {ln.line_id: ln for ln in self.load_history([psn_no])[psn_no]}
        return found

    def load_trace_sales(self, codes: Collection[str]) -> dict[str, list[TraceSale]]:
        return {c: [] for c in codes}  # trace-code reuse cannot be waited out

    def load_findings(self, scopes: Collection[str]) -> dict[str, list[Finding]]:
        return self.reads.load_findings(scopes)


def _hit(
    finding: Finding,
    kb: KnowledgeBase,
    line_id: str | None = None,
    advice: Advice | None = None,
    described: dict[str, str] | None = None,
) -> RuleHit:
    """The hit of `finding` on line `line_id`. `described` (finding id -> line id) spans one
    answer: the first hit of a finding carries its explanation, figures and mitigations; a
    later hit of the same finding (another line of the answer) names that line in `details_in`
    instead of repeating them (a 200-line check of one drug named 11 findings 734 times)."""
    rule = kb.rules.get(finding.rule_id)
    waitable = finding.rule_id in WAITABLE_RULES and advice is not None and line_id is not None
    triggers = finding.figures.get("trigger_lines")
    first = [*([line_id] if line_id else []), *(triggers if isinstance(triggers, list) else [])]
    details_in = described.get(finding.finding_id) if described is not None else None
    figures: dict[str, Any] | None = None
    if details_in is None:
        if described is not None and line_id is not None:
            described[finding.finding_id] = line_id
        figures = dict(finding.figures)
        if isinstance(triggers, list) and len(triggers) > TRIGGER_CAP:
            figures["trigger_lines"] = capped(triggers, first, TRIGGER_CAP)
            figures["trigger_lines_count"] = len(triggers)
    return RuleHit(
        rule_id=finding.rule_id,
        rule_version=finding.rule_version,
        name_zh=rule.name_zh if rule else finding.rule_id,
        name_en=rule.name_en if rule else finding.rule_id,
        severity=finding.severity,
        decision=DECISION[finding.severity],
        explanation_zh=None if details_in else finding.explanation_zh,
        explanation_en=None if details_in else finding.explanation_en,
        evidence=capped(finding.evidence, first),
        evidence_count=len(finding.evidence),
        figures=figures,
        mitigations=None if details_in else list(finding.mitigations),
        finding_id=finding.finding_id,
        details_in=details_in,
        next_fill_on=advice.next_fill_on.get(line_id) if waitable and advice and line_id else None,
        previous_fill=advice.previous.get((line_id, finding.finding_id)) if advice and line_id else None,
    )


def capped(line_ids: Sequence[str], first: Sequence[str] = (), cap: int = EVIDENCE_CAP) -> list[str]:
    """At most `cap` line ids, sorted: `first` (the line answered, the trigger lines) kept first,
    then the latest ids."""
    if len(line_ids) <= cap:
        return list(line_ids)
    wanted = set(line_ids)
    keep = list(dict.fromkeys(x for x in first if x in wanted))[:cap]
    for line_id in reversed(line_ids):
        if len(keep) >= cap:
            break
        if line_id not in keep:
            keep.append(line_id)
    return sorted(keep)


def line_result(
    line: ClaimLine,
    findings: Sequence[Finding],
    kb: KnowledgeBase,
    advice: Advice | None = None,
    described: dict[str, str] | None = None,
) -> LineResult:
    """A line's answer; `described` (shared by the lines of one answer, see `_hit`) keeps each
    finding's explanation, figures and mitigations to its first hit."""
    ordered = sorted(findings, key=lambda f: (-f.severity.rank, f.rule_id, f.finding_id))
    notes = [] if line.monitored else [NOT_MONITORED]
    return LineResult(
        line_id=line.line_id,
        psn_no=line.psn_no,
        feedetl_sn=line.feedetl_sn,
        med_list_codg=line.med_list_codg,
        monitored=line.monitored,
        days_supply=None if line.days_supply is None else round(line.days_supply, 2),
        decision=decision_of(ordered),
        next_fill_on=advice.next_fill_on.get(line.line_id) if advice else None,
        notes=notes,
        hits=[_hit(f, kb, line.line_id, advice, described) for f in ordered],
    )


def _date_zh(day: date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def nhsa_response(
    answered: Sequence[tuple[ClaimLine, RequestLine]],
    hits: Mapping[str, list[Finding]],
    kb: KnowledgeBase,
    task_id: str,
    national: nhsa.NationalDictionary | None = None,
    advice: Advice | None = None,
) -> nhsa.NhsaResponse:
    """One violation per finding, with a detail per answered order it names."""
    national = national or nhsa.dictionary()
    by_finding: dict[str, tuple[Finding, list[ClaimLine]]] = {}
    for line, _ in answered:
        for finding in hits.get(line.line_id, []):
            entry = by_finding.setdefault(finding.finding_id, (finding, []))
            entry[1].append(line)
    result = []
    for finding, lines in sorted(by_finding.values(), key=lambda e: (-e[0].severity.rank, e[0].rule_id)):
        rule = kb.rules.get(finding.rule_id)
        basis = (rule.legal_basis_zh if rule else "") or (rule.name_zh if rule else finding.rule_id)
        shown = capped(finding.evidence, [lines[0].line_id])
        more = len(finding.evidence) - len(shown)
        evidence = "；证据明细：" + "、".join(shown) + (f"等{len(finding.evidence)}条" if more else "")
        first = lines[0]
        content = finding.explanation_zh
        next_on = advice.next_fill_on.get(first.line_id) if advice and finding.rule_id in WAITABLE_RULES else None
        if next_on is not None:
            content += f"；最早可于{_date_zh(next_on)}购药"
        prev = advice.previous.get((first.line_id, finding.finding_id)) if advice else None
        result.append(
            nhsa.NhsaViolation(
                jr_id=finding.finding_id,
                rule_id=finding.rule_id,
                rule_name=rule.name_zh if rule else finding.rule_id,
                vola_cont=nhsa.truncate(content),
                patn_id=first.psn_no,
                mdtrt_id=first.mdtrt_id,
                judge_result_detail_dtos=[
                    nhsa.NhsaViolationDetail(
                        jrd_id=f"{finding.finding_id}:{ln.feedetl_sn}",
                        patn_id=ln.psn_no,
                        mdtrt_id=ln.mdtrt_id,
                        rx_id=ln.feedetl_sn,
                        vola_amt=round(ln.det_item_fee_sumamt, 2),
                    )
                    for ln in lines
                ],
                vola_amt=round(sum(ln.det_item_fee_sumamt for ln in lines), 2),
                sev_deg=national.sev_deg_of(finding.severity),
                vola_evid=nhsa.truncate(basis + evidence),
                vola_bhvr_type=national.behaviour_type(finding.rule_id),
                task_id=task_id,
                next_fill_on=next_on.isoformat() if next_on else None,
                prev_fill_date=prev.dispensed_on.isoformat() if prev else None,
                prev_fill_cnt=prev.quantity if prev else None,
                prev_fill_medins_id=prev.fixmedins_code if prev else None,
                prev_fill_dr_codg=prev.prescriber if prev else None,
            )
        )
    return nhsa.NhsaResponse(output=nhsa.NhsaOutput(result=result))


# ------------------------------------------------------------------ operations


def _utc(services: Services) -> datetime:
    return services.now().replace(tzinfo=CHINA).astimezone(UTC)


def _access_records(
    services: Services,
    caller: Caller,
    action: Action,
    patients: Sequence[str | None],
    decision: str,
    *,
    institution: str | None = None,
    detail: str | None = None,
) -> list[AccessRecord]:
    """An access record per patient (pseudonymised), or one without a patient."""
    at = _utc(services)
    key = services.settings.pseudonym_key
    acting = institution or (next(iter(sorted(caller.institutions))) if len(caller.institutions) == 1 else None)
    return [
        AccessRecord(
            at=at,
            caller=caller.principal,
            institution=acting,
            patient=pseudonym(p, key) if p else None,
            action=action,
            decision=decision,
            detail=detail,
        )
        for p in (patients or [None])
    ]


def _audit(
    services: Services,
    caller: Caller,
    action: Action,
    patients: Sequence[str | None],
    decision: str,
    *,
    institution: str | None = None,
    detail: str | None = None,
) -> None:
    """Record an access per patient (pseudonymised), or one without a patient."""
    if services.audit is None:
        return
    services.audit.record(
        _access_records(services, caller, action, patients, decision, institution=institution, detail=detail)
    )


@contextmanager
def _audited(
    services: Services, caller: Caller, action: Action, claims: Sequence[ClaimLine], *, patient: str | None = None
) -> Iterator[None]:
    """A refused access is recorded too (decision `denied`), then refused."""
    try:
        yield
    except (Forbidden, NotFound):
        patients = sorted({c.psn_no for c in claims} | ({patient} if patient else set()))
        _audit(services, caller, action, patients, "denied")
        raise


def _audit_lines(
    services: Services, caller: Caller, action: Action, claims: Sequence[ClaimLine], hits: Mapping[str, list[Finding]]
) -> None:
    """One record per patient with the answer's decision; then the stranger alert."""
    if services.audit is None:
        return
    services.audit.record(_line_records(services, caller, action, claims, hits))  # one write for the whole answer
    if action == "check":
        _stranger_alert(services, caller)


def _line_records(
    services: Services, caller: Caller, action: Action, claims: Sequence[ClaimLine], hits: Mapping[str, list[Finding]]
) -> list[AccessRecord]:
    """The access records of an answer: one per patient with the answer's decision for them."""
    by_patient: dict[str, list[Decision]] = {}
    for claim in claims:
        by_patient.setdefault(claim.psn_no, []).append(decision_of(hits.get(claim.line_id, [])))
    institutions = sorted({c.fixmedins_code for c in claims})
    return [
        record
        for psn_no, decisions in sorted(by_patient.items())
        for record in _access_records(
            services, caller, action, [psn_no], worst(decisions), institution=institutions[0] if institutions else None
        )
    ]


def _stranger_alert(services: Services, caller: Caller) -> None:
    """A caller that checked `audit_stranger_limit` patients it never dispensed to within the
    window raises an alert: one `alert` record per window, and a warning for the alarm."""
    assert services.audit is not None
    settings = services.settings
    since = _utc(services) - timedelta(hours=settings.audit_window_hours)
    count, alerted = services.audit.strangers(caller.principal, since)
    if count < settings.audit_stranger_limit or alerted:
        return
    detail = (
        f"{count} patients checked within {settings.audit_window_hours:g} h without a dispensation "
        f"(limit {settings.audit_stranger_limit})"
    )
    _audit(services, caller, "alert", [], "alert", detail=detail)
    logger.warning(
        "access audit alert: a caller checks patients it never dispensed to",
        extra={"caller": caller.principal, "patients": count},
    )
    if services.access_alerts is not None:
        institution = next(iter(sorted(caller.institutions))) if len(caller.institutions) == 1 else None
        message = stranger_alert(
            caller.principal,
            institution,
            count,
            limit=settings.audit_stranger_limit,
            window_hours=settings.audit_window_hours,
            at=_utc(services),
        )
        try:
            services.access_alerts(message)
        except Exception:  # the answer is not refused for it: the message stays in the outbox
            logger.exception("access alert not published now", extra={"message_id": message.message_id})


def _selection(services: Services, body: CheckBody) -> tuple[set[str] | None, Scene]:
    """The rules a 3101 request asks for (`rule_ids`: ours or the platform's codes) and the
    scene of its trigger (`trig_scen`); a bad value is a 400 naming it."""
    if isinstance(body, DispensingRequest):
        return None, Scene.PRE
    data, prefix = nhsa.nhsa_data(body)
    national = services.national
    scene = national.scene_of(data.trig_scen)
    if scene is None:
        known = "、".join(sorted(national.trig_scen, key=lambda c: (len(c), c)))
        raise InvalidField(
            f"{prefix}.trig_scen: unknown trigger scene {data.trig_scen!r} (known: {known})", f"{prefix}.trig_scen"
        )
    if not data.rule_ids:
        return None, scene
    allowed: set[str] = set()
    for i, value in enumerate(data.rule_ids):
        rule_id = national.resolve_rule(str(value))
        if rule_id is None or rule_id not in services.kb.rules:
            raise InvalidField(
                f"{prefix}.rule_ids[{i}]: unknown rule {value!r} (our rule ids and the codes of rules/national.yaml)",
                f"{prefix}.rule_ids[{i}]",
                code="unknown_rule",
            )
        allowed.add(rule_id)
    return allowed, scene


def check(
    services: Services, body: CheckBody, caller: Caller, answer_as: Shape | None = None
) -> CheckResponse | nhsa.NhsaResponse:
    """Pre-dispensing check: records no line; history read once. The findings answered
    are kept as warnings (their jr_id can be fetched and disposed)."""
    now = services.now()
    allowed, scene = _selection(services, body)
    request_lines = lines_of(body, now, require_sn=False)
    claims = normalize(request_lines, services)
    with _audited(services, caller, "check", claims):
        require_institutions(caller, {c.fixmedins_code for c in claims})  # codes as normalized (upper case)
    reads = _CachedReads(services.repo)

    def run(
        lines: Sequence[ClaimLine], repo: HistoryRepository = reads, kb: KnowledgeBase = services.kb
    ) -> dict[str, list[Finding]]:
        if scene is Scene.PRE:
            found = services.check_lines(lines, repo, kb)
        else:
            found = services.check_lines(lines, repo, kb, scenes=(scene,))
        if allowed is None:
            return found
        return {line_id: [f for f in fs if f.rule_id in allowed] for line_id, fs in found.items()}

    hits = run(claims)  # the history read once: the next-fill search below reuses it
    answered = [(c, r) for c, r in zip(claims, request_lines, strict=True) if r.answer]
    search = partial(run, kb=search_kb(services.kb))  # the waitable rules only
    try:
        advice = advise(services, [c for c, _ in answered], hits, reads, search, allowed, claims)
    except Exception:  # the history was read: the access is recorded even when the answer fails
        _audit_lines(services, caller, "check", claims, hits)
        raise
    warnings = list({f.finding_id: f for c, _ in answered for f in hits.get(c.line_id, [])}.values())
    answered_ids = [c.line_id for c, _ in answered]
    if services.record_check is not None and services.audit is not None:
        # the access records and the warnings in one write
        services.record_check(_line_records(services, caller, "check", claims, hits), warnings, now, answered_ids)
        _stranger_alert(services, caller)
    else:
        _audit_lines(services, caller, "check", claims, hits)
        if warnings:
            services.store.record_warnings(warnings, now, answered_ids)
    shape = answer_as or ("rxguard" if isinstance(body, DispensingRequest) else "nhsa")
    if shape == "nhsa":
        task_id = next((r.task_id for r in request_lines if r.task_id), None) or f"rxguard-{now:%Y%m%d%H%M%S}"
        return nhsa_response(answered, hits, services.kb, task_id, services.national, advice)
    described: dict[str, str] = {}
    results = [line_result(c, hits.get(c.line_id, []), services.kb, advice, described) for c, _ in answered]
    return CheckResponse(decision=worst([r.decision for r in results]), checked_at=now, lines=results)


def override_of(reason: str) -> OverrideReason | None:
    text = reason.lower()
    for override, words in OVERRIDE_WORDS:
        if any(word in text for word in words):
            return override
    return None


def with_prescriber_overrides(services: Services, claims: list[ClaimLine]) -> list[ClaimLine]:
    """A line dispensed after its prescriber continued past a warning (3103) carries the
    reason as its override, unless the line states one itself: the override-frequency rule
    counts it and, within its cap, the supply rules weigh it (one store read)."""
    open_lines = [c.line_id for c in claims if c.override_reason is None]
    reasons = services.store.continued_reasons(open_lines) if open_lines else {}
    out = []
    for claim in claims:
        override = override_of(reasons[claim.line_id]) if claim.line_id in reasons else None
        out.append(claim.model_copy(update={"override_reason": override}) if override else claim)
    return out


def dispense(services: Services, body: CheckBody, caller: Caller) -> DispensationResponse:
    """Record a completed dispensing in real time (scene "in")."""
    now = services.now()
    request_lines = lines_of(body, now, require_sn=True)
    claims = normalize(request_lines, services, recording=True)
    with _audited(services, caller, "dispensation", claims):
        require_institutions(caller, {c.fixmedins_code for c in claims})  # codes as normalized (upper case)
    claims = with_prescriber_overrides(services, claims)
    outcome = services.screen_lines(claims, services.repo, services.kb, scene=Scene.IN)
    recorded = {line.line_id for line in outcome.recorded}
    new_findings = list(outcome.changes.new)
    to_alert = [*new_findings, *outcome.changes.updated]
    alerts_sent = None
    if services.notify is not None:
        alerts_sent = 0
        if to_alert:
            first = min(line.line_id for line in claims)
            batch_id = f"api-{now:%Y%m%d}-{first}".replace("/", "_")
            alerts_sent = services.notify(to_alert, batch_id, {c.line_id: c for c in claims})
    scopes = {Scope.patient(c.psn_no) for c in claims} | {Scope.trace(code) for c in claims for code in c.trace_codes}
    current = services.repo.load_findings(scopes)
    by_line: dict[str, list[Finding]] = {}
    for findings in current.values():
        for finding in findings:
            for line_id in finding.evidence:
                by_line.setdefault(line_id, []).append(finding)
    described: dict[str, str] = {}
    results = [line_result(c, by_line.get(c.line_id, []), services.kb, described=described) for c in claims]
    _audit_lines(services, caller, "dispensation", claims, by_line)
    return DispensationResponse(
        decision=worst([r.decision for r in results]),
        recorded=sorted(recorded),
        duplicates=sorted(line.line_id for line in outcome.duplicates),
        new_findings=len(new_findings),
        alerts_sent=alerts_sent,
        lines=results,
    )


def list_findings(
    services: Services,
    caller: Caller,
    *,
    institution: str | None,
    patient: str | None,
    rule: str | None,
    status: str | None,
    date_from: date | None,
    date_to: date | None,
    limit: int | None,
    next_token: str | None,
) -> FindingsPage:
    if date_from and date_to and date_to < date_from:
        raise InvalidField("date_to is before date_from", "date_to")
    if rule is not None and rule not in services.kb.rules:
        raise InvalidField(f"unknown rule {rule!r}", "rule")
    with _audited(services, caller, "findings", [], patient=patient):
        readable = readable_institution(caller, institution)
    query = FindingQuery(
        institution=readable,
        psn_no=patient,
        rule_id=rule,
        status=status,
        date_from=date_from,
        date_to=date_to,
    )
    items, token = services.store.query(query, limit or services.settings.page_size, next_token)
    _audit(
        services,
        caller,
        "findings",
        sorted({i.psn_no for i in items if i.psn_no} | ({patient} if patient else set())),
        "allowed",
    )
    risk = patient_risk_of(services, query) if patient else None
    return FindingsPage(items=items, next_token=token, risk=risk)


def patient_risk_of(services: Services, query: FindingQuery) -> PatientRisk:
    """The risk score of the patient of `query` over all their current findings (every page;
    the other filters of the query do not narrow it, the caller's institution does)."""
    whole = FindingQuery(psn_no=query.psn_no, institution=query.institution)
    findings: list[FindingView] = []
    token: str | None = None
    while True:
        page, token = services.store.query(whole, 500, token)
        findings.extend(page)
        if not token:
            break
    return patient_risk(findings, as_of=services.now())


def get_finding(services: Services, caller: Caller, finding_id: str) -> FindingView:
    found = services.store.get(finding_id)
    if found is None:
        raise NotFound("no such finding", "finding_id")
    with _audited(services, caller, "finding", [], patient=found.psn_no):
        require_finding_access(caller, found.fixmedins_code)
    _audit(services, caller, "finding", [found.psn_no] if found.psn_no else [], "allowed", detail=finding_id)
    return found


def review_finding(services: Services, caller: Caller, finding_id: str, review: ReviewRequest) -> FindingView:
    require_reviewer(caller)
    found = services.store.get(finding_id)
    if found is None:
        raise NotFound("no such finding", "finding_id")
    reviewer = review.reviewer or caller.principal
    return services.store.review(finding_id, review.status, review.reason, reviewer, services.now())


def backtest(services: Services, caller: Caller, body: BacktestRequest) -> BacktestResponse:
    """Try a rule change on the stored history (regulators only; writes nothing)."""
    require_reviewer(caller)
    if services.planner is None:
        raise Conflict("backtests need a stored history to re-evaluate: rxguard serve --state DIR", "rules")
    try:
        report = services.planner(body.rules, body.since)
    except KnowledgeBaseError as exc:
        raise InvalidField(str(exc), f"rules.{exc.entry}.{exc.field}" if exc.entry and exc.field else "rules") from exc
    return BacktestResponse.model_validate(report)


def rules(services: Services) -> RulesResponse:
    figures = services.store.rule_figures(services.kb.rules.keys())
    out = []
    for rule in sorted(services.kb.rules.values(), key=lambda r: r.id):
        fig = figures.get(rule.id)
        confirmed = fig.confirmed if fig else 0
        dismissed = fig.dismissed if fig else 0
        out.append(
            RuleView(
                id=rule.id,
                version=rule.version,
                name_zh=rule.name_zh,
                name_en=rule.name_en,
                severity=rule.severity,
                scenes=[s.value for s in rule.scenes],
                enabled=rule.enabled,
                effective_from=rule.effective_from,
                effective_to=rule.effective_to,
                confirmed=confirmed,
                dismissed=dismissed,
                precision=None if confirmed + dismissed == 0 else round(confirmed / (confirmed + dismissed), 4),
                continued=fig.continued if fig else 0,
                modified=fig.modified if fig else 0,
                continue_rate=None if fig is None or fig.continue_rate is None else round(fig.continue_rate, 4),
                modify_rate=None if fig is None or fig.continue_rate is None else round(1 - fig.continue_rate, 4),
            )
        )
    return RulesResponse(rules=out)


def read_audit(
    services: Services,
    caller: Caller,
    *,
    principal: str | None,
    patient: str | None,
    date_from: date | None,
    date_to: date | None,
    limit: int | None,
    next_token: str | None,
) -> AuditPage:
    """The access log, for the regulator only. `patient` is a psn_no or its pseudonym."""
    require_reviewer(caller)
    if services.audit is None:
        raise NotFound("no access audit is configured for this deployment", None)
    if date_from and date_to and date_to < date_from:
        raise InvalidField("date_to is before date_from", "date_to")
    token = None
    if patient is not None:
        token = patient if _PSEUDONYM.fullmatch(patient) else pseudonym(patient, services.settings.pseudonym_key)
    query = AuditQuery(
        caller=principal,
        patient=token,
        since=_china_day_in_utc(date_from) if date_from else None,
        until=_china_day_in_utc(date_to, end=True) if date_to else None,
    )
    items, more = services.audit.query(query, limit or services.settings.page_size, next_token)
    return AuditPage(items=items, next_token=more)


def _china_day_in_utc(day: date, *, end: bool = False) -> datetime | None:
    """The start (or `end`) of `day` in China's time, in UTC; None (no bound) where UTC falls
    outside the calendar: the first hours of 0001-01-01 (a date_from no record can be before)."""
    try:
        return datetime.combine(day, datetime.max.time() if end else datetime.min.time(), CHINA).astimezone(UTC)
    except OverflowError:
        return None


# ------------------------------------------------------------------ dispositions (3103)


@dataclass(frozen=True)
class _Item:
    finding_id: str
    action: Literal["continue", "modify"]
    reason: str | None
    path: str  # the request field of the item, e.g. "input.data.warns[0]"
    id_field: str
    reason_field: str


def _disposition_items(body: DispositionBody) -> tuple[list[_Item], str | None, Shape]:
    if isinstance(body, DispositionRequest):
        items = [
            _Item(d.finding_id, d.action, d.reason, f"dispositions[{i}]", "finding_id", "reason")
            for i, d in enumerate(body.dispositions)
        ]
        return items, body.warn_type, "rxguard"
    if isinstance(body, nhsa.NhsaDispositionEnvelope):
        data, prefix = body.input.data, "input.data"
    else:
        data, prefix = body.data, "data"
    items = [
        _Item(
            w.warn_rslt_id,
            "continue" if w.dspo_way == "1" else "modify",
            w.dspo_way_rea,
            f"{prefix}.warns[{i}]",
            "warn_rslt_id",
            "dspo_way_rea",
        )
        for i, w in enumerate(data.warns)
    ]
    return items, data.warn_type, "nhsa"


def dispose(
    services: Services, body: DispositionBody, caller: Caller
) -> DispositionResponse | nhsa.NhsaDispositionResponse:
    """Store prescribers' handling of warnings. Every item is checked before any is stored:
    a continue without a reason is a 400 naming the reason field; an id that is neither a
    recorded finding nor a warning a check answered (or not the caller's) is a 404 naming
    the id field."""
    items, warn_type, shape = _disposition_items(body)
    for item in items:
        if item.action == "continue" and not (item.reason or "").strip():
            field_name = f"{item.path}.{item.reason_field}"
            raise InvalidField(
                f"{field_name} is required when the prescriber continues (dspo_way 1 继续执行)",
                field_name,
                code="missing_field",
            )
    found: list[FindingView] = []
    for item in items:
        current = services.store.get(item.finding_id)
        field_name = f"{item.path}.{item.id_field}"
        if current is None:
            raise NotFound(f"{field_name}: no finding or warning {item.finding_id}", field_name)
        try:
            require_finding_access(caller, current.fixmedins_code)
        except NotFound as exc:
            raise NotFound(f"{field_name}: no finding or warning {item.finding_id}", field_name) from exc
        found.append(current)
    now = services.now()
    views = [
        services.store.dispose(
            item.finding_id,
            Disposition(
                action=item.action, reason=item.reason, warn_type=warn_type, disposer=caller.principal, disposed_at=now
            ),
        )
        for item in items
    ]
    if shape == "rxguard":
        return DispositionResponse(items=views)
    return nhsa.NhsaDispositionResponse(
        output=nhsa.NhsaDispositionOutput(
            result=[
                nhsa.NhsaDispositionResult(
                    warn_rslt_id=v.finding_id, dspo_way="1" if item.action == "continue" else "2", rule_id=v.rule_id
                )
                for v, item in zip(views, items, strict=True)
            ]
        )
    )


# ------------------------------------------------------------------ subscriptions


ENDPOINTS = {
    "email": re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
    "sms": re.compile(r"^\+\d{8,15}$"),
    "https": re.compile(r"^https://[^\s]+$"),
    "sqs": re.compile(r"^arn:aws[a-z-]*:sqs:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]+$"),
    "lambda": re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(:[A-Za-z0-9_$-]+)?$"),
}


def _subscriptions(services: Services) -> Subscriptions:
    if services.subscriptions is None:
        raise NotFound("subscriptions are not configured in this deployment", None)
    return services.subscriptions


def _own(caller: Caller, view: SubscriptionView) -> bool:
    wanted = view.filter_policy.get("institution_id") or []
    return caller.reviews or (bool(wanted) and set(wanted) <= set(caller.institutions))


def subscribe(services: Services, caller: Caller, request: SubscriptionRequest) -> SubscriptionView:
    """An SNS subscription with the filter policy of the request. Regulators subscribe to
    anything; an institution only to its own institutions' messages."""
    gateway = _subscriptions(services)
    if not ENDPOINTS[request.protocol].match(request.endpoint):
        raise InvalidField(f"endpoint is not a valid {request.protocol} endpoint", "endpoint")
    if not caller.reviews:
        if not request.filters.institutions:
            raise InvalidField("filters.institutions is required: name your own institution(s)", "filters.institutions")
        require_institutions(caller, request.filters.institutions)
    national = services.national

    def resolve(value: str) -> str | None:
        rule_id = national.resolve_rule(value)
        return rule_id if rule_id in services.kb.rules else None

    policy = filter_policy(request, resolve)
    return gateway.subscribe(request.topic, request.protocol, request.endpoint, policy, caller.principal)


def list_subscriptions(services: Services, caller: Caller) -> SubscriptionsResponse:
    return SubscriptionsResponse(items=[v for v in _subscriptions(services).list() if _own(caller, v)])


def unsubscribe(services: Services, caller: Caller, subscription_id: str) -> SubscriptionsResponse:
    gateway = _subscriptions(services)
    found = next((v for v in gateway.list() if v.subscription_id == subscription_id), None)
    if found is None or not _own(caller, found):
        raise NotFound("no such subscription", "subscription_id")
    gateway.delete(subscription_id)
    return SubscriptionsResponse(items=[found])
