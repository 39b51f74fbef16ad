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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from rxguard import screening
from rxguard.alerts import notify_batch
from rxguard.api import nhsa
from rxguard.api.access import (
    Caller,
    readable_institution,
    require_finding_access,
    require_institutions,
    require_reviewer,
)
from rxguard.api.errors import InvalidField, NotFound, PayloadTooLarge
from rxguard.api.models import (
    CheckResponse,
    Decision,
    DispensationResponse,
    DispensingRequest,
    FindingsPage,
    FindingView,
    LineResult,
    ReviewRequest,
    RuleHit,
    RulesResponse,
    RuleView,
)
from rxguard.api.settings import ApiSettings
from rxguard.api.store import FindingQuery, FindingsStore
from rxguard.engine.risk import PatientRisk, patient_risk
from rxguard.ingest.normalize import LineRejected, normalize_record
from rxguard.kb import KnowledgeBase
from rxguard.letters import issue_letters
from rxguard.models import ClaimLine, Finding, Scene, Severity
from rxguard.repository import HistoryRepository
from rxguard.scope import Scope

DECISION: dict[Severity, Decision] = {Severity.HIGH: "block", Severity.MEDIUM: "warn", Severity.LOW: "pass"}
NOT_MONITORED = "not monitored"
CHINA = timezone(timedelta(hours=8))  # claim-line times are China time; no DST, no tz database needed
Shape = Literal["rxguard", "nhsa"]
CheckBody = DispensingRequest | nhsa.NhsaRequest | nhsa.NhsaEnvelope

Checker = Callable[[Sequence[ClaimLine], HistoryRepository, KnowledgeBase], dict[str, list[Finding]]]
Screener = Callable[..., Any]  # screening.screen_lines(lines, repo, kb, scene=...) -> ScreenOutcome
# (new and updated findings, batch id, the request's lines by id) -> alerts published
Notifier = Callable[[Sequence[Finding], str, Mapping[str, ClaimLine]], int]


def _default_checker(
    lines: Sequence[ClaimLine], repo: HistoryRepository, kb: KnowledgeBase
) -> dict[str, list[Finding]]:
    return screening.check_lines(lines, repo, kb)


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

    def now(self) -> datetime:
        if self.clock is not None:
            return self.clock()
        return datetime.now(CHINA).replace(tzinfo=None, microsecond=0)


@dataclass
class RequestLine:
    """One drug line of a request, as a claim-line record, with where it came from."""

    record: dict[str, object]
    path: str  # "lines[0]" or "data.patient_dtos[0].fsi_encounter_dtos[0].fsi_order_dtos[1]"
    fields: Mapping[str, str]  # record field -> request field (relative to path; "../" = parent)
    answer: bool = True  # False: context only (a 3101 order with curr_drord_flag 0)
    task_id: str | None = None


def alerts_notifier(kb: KnowledgeBase, sink: Any, settings: Any = None) -> Notifier:
    """Findings of a dispensing -> the alerts topic, as the batch's Notify step does (each
    finding is alerted at most once, however often it is passed)."""

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
            letters=issue_letters,
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


def _rxguard_lines(body: DispensingRequest, now: datetime, *, require_sn: bool) -> list[RequestLine]:
    time = _time_text(body.fee_ocur_time or now)
    out = []
    for i, line in enumerate(body.lines):
        path = f"lines[{i}]"
        if line.feedetl_sn is None and require_sn:
            raise InvalidField(
                f"{path}.feedetl_sn is required to record a dispensing", f"{path}.feedetl_sn", code="missing_field"
            )
        total = line.det_item_fee_sumamt
        if total is None:
            total = round(line.cnt * line.pric, 2)
        record: dict[str, object] = {
            "feedetl_sn": line.feedetl_sn or f"check-{i + 1}",
            "fixmedins_code": body.fixmedins_code,
            "fixmedins_name": body.fixmedins_name,
            "admdvs": body.admdvs,
            "psn_no": body.psn_no,
            "mdtrt_id": body.mdtrt_id,
            "setl_id": body.setl_id,
            "med_type": body.med_type,
            "fee_ocur_time": time,
            "med_list_codg": line.med_list_codg,
            "med_list_name": line.med_list_name,
            "cnt": line.cnt,
            "trdn_flag": line.trdn_flag,
            "pric": line.pric,
            "det_item_fee_sumamt": total,
            "sin_dos_dscr": line.sin_dos_dscr,
            "used_frqu_dscr": line.used_frqu_dscr,
            "prd_days": line.prd_days,
            "rxno": line.rxno,
            "bilg_dr_codg": line.bilg_dr_codg,
            "dise_codg": [*body.dise_codg, *line.dise_codg],
            "dscg_tkdrug_flag": line.dscg_tkdrug_flag,
            "lt_rx_flag": line.lt_rx_flag,
            "override_reason": line.override_reason,
            "drug_trac_codg": line.drug_trac_codg,
        }
        visit_fields = (
            "fixmedins_code",
            "fixmedins_name",
            "admdvs",
            "psn_no",
            "mdtrt_id",
            "setl_id",
            "med_type",
            "fee_ocur_time",
        )
        fields = {f: f"../{f}" for f in visit_fields}
        out.append(RequestLine({k: v for k, v in record.items() if v is not None}, path, fields))
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
                out.append(RequestLine(record, path, fields, answer=order.curr_drord_flag != "0", task_id=task_id))
    return out


def _request_field(line: RequestLine, record_field: str | None) -> str:
    if record_field is None:
        return line.path
    relative = line.fields.get(record_field, record_field)
    return nhsa.resolve_field(line.path, relative) if relative.startswith("../") else f"{line.path}.{relative}"


def normalize(lines: Sequence[RequestLine], services: Services) -> list[ClaimLine]:
    """Normalize with the batch path's own rules; a bad line is a 400 naming the field."""
    if len(lines) > services.settings.max_lines:
        raise PayloadTooLarge(f"{len(lines)} drug lines in one request; at most {services.settings.max_lines}", None)
    out: list[ClaimLine] = []
    seen: dict[str, str] = {}
    for i, line in enumerate(lines):
        try:
            claim = normalize_record(
                line.record, services.kb, file="request", line=i + 1, default_admdvs=services.default_admdvs
            )
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


EVIDENCE_CAP = 5  # evidence lines a hit lists (with their total; the finding keeps them all): a 200-line check < 1 MB
TRIGGER_CAP = 3  # trigger lines a hit's figures list (with their total)


def capped(line_ids: Sequence[str], first: Sequence[str] = (), cap: int = EVIDENCE_CAP) -> list[str]:
    """At most `cap` line ids, sorted: `first` (the line answered, the trigger lines) kept first."""
    if len(line_ids) <= cap:
        return list(line_ids)
    wanted = set(line_ids)
    keep = list(dict.fromkeys(x for x in first if x in wanted))[:cap]
    for line_id in reversed(line_ids):  # then the most recent ids (line ids sort by institution, serial)
        if len(keep) >= cap:
            break
        if line_id not in keep:
            keep.append(line_id)
    return sorted(keep)


def _hit(finding: Finding, kb: KnowledgeBase, line_id: str | None = None) -> RuleHit:
    rule = kb.rules.get(finding.rule_id)
    figures = dict(finding.figures)
    triggers = figures.get("trigger_lines")
    first = [*([line_id] if line_id else []), *(triggers if isinstance(triggers, list) else [])]
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
        explanation_zh=finding.explanation_zh,
        explanation_en=finding.explanation_en,
        evidence=capped(finding.evidence, first),
        evidence_count=len(finding.evidence),
        figures=figures,
        mitigations=list(finding.mitigations),
        finding_id=finding.finding_id,
    )


def line_result(line: ClaimLine, findings: Sequence[Finding], kb: KnowledgeBase) -> LineResult:
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
        notes=notes,
        hits=[_hit(f, kb, line.line_id) for f in ordered],
    )


def nhsa_response(
    answered: Sequence[tuple[ClaimLine, RequestLine]],
    hits: Mapping[str, list[Finding]],
    kb: KnowledgeBase,
    task_id: str,
) -> nhsa.NhsaResponse:
    """One violation per finding, with a detail per answered order it names."""
    by_finding: dict[str, tuple[Finding, list[ClaimLine]]] = {}
    for line, _ in answered:
        for finding in hits.get(line.line_id, []):
            entry = by_finding.setdefault(finding.finding_id, (finding, []))
            entry[1].append(line)
    result = []
    for finding, lines in sorted(by_finding.values(), key=lambda e: (-e[0].severity.rank, e[0].rule_id)):
        rule = kb.rules.get(finding.rule_id)
        basis = (rule.legal_basis_zh if rule else "") or (rule.name_zh if rule else finding.rule_id)
        evidence = "；证据明细：" + "、".join(finding.evidence)
        first = lines[0]
        result.append(
            nhsa.NhsaViolation(
                jr_id=finding.finding_id,
                rule_id=finding.rule_id,
                rule_name=rule.name_zh if rule else finding.rule_id,
                vola_cont=nhsa.truncate(finding.explanation_zh),
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
                sev_deg=nhsa.SEV_DEG[finding.severity],
                vola_evid=nhsa.truncate(basis + evidence),
                vola_bhvr_type=nhsa.behaviour_type(finding.rule_id),
                task_id=task_id,
            )
        )
    return nhsa.NhsaResponse(output=nhsa.NhsaOutput(result=result))


# ------------------------------------------------------------------ operations


def check(
    services: Services, body: CheckBody, caller: Caller, answer_as: Shape | None = None
) -> CheckResponse | nhsa.NhsaResponse:
    """Pre-dispensing check: records nothing; two repository reads at most."""
    now = services.now()
    request_lines = lines_of(body, now, require_sn=False)
    claims = normalize(request_lines, services)
    require_institutions(caller, {c.fixmedins_code for c in claims})  # codes as normalized (upper case)
    hits = services.check_lines(claims, services.repo, services.kb)
    answered = [(c, r) for c, r in zip(claims, request_lines, strict=True) if r.answer]
    shape = answer_as or ("rxguard" if isinstance(body, DispensingRequest) else "nhsa")
    if shape == "nhsa":
        task_id = next((r.task_id for r in request_lines if r.task_id), None) or f"rxguard-{now:%Y%m%d%H%M%S}"
        return nhsa_response(answered, hits, services.kb, task_id)
    results = [line_result(c, hits.get(c.line_id, []), services.kb) for c, _ in answered]
    return CheckResponse(decision=worst([r.decision for r in results]), checked_at=now, lines=results)


def dispense(services: Services, body: CheckBody, caller: Caller) -> DispensationResponse:
    """Record a completed dispensing in real time (scene "in")."""
    now = services.now()
    request_lines = lines_of(body, now, require_sn=True)
    claims = normalize(request_lines, services)
    require_institutions(caller, {c.fixmedins_code for c in claims})  # codes as normalized (upper case)
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
    results = [line_result(c, by_line.get(c.line_id, []), services.kb) for c in claims]
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
    query = FindingQuery(
        institution=readable_institution(caller, institution),
        psn_no=patient,
        rule_id=rule,
        status=status,
        date_from=date_from,
        date_to=date_to,
    )
    items, token = services.store.query(query, limit or services.settings.page_size, next_token)
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
    require_finding_access(caller, found.fixmedins_code)
    return found


def review_finding(services: Services, caller: Caller, finding_id: str, review: ReviewRequest) -> FindingView:
    require_reviewer(caller)
    found = services.store.get(finding_id)
    if found is None:
        raise NotFound("no such finding", "finding_id")
    reviewer = review.reviewer or caller.principal
    return services.store.review(finding_id, review.status, review.reason, reviewer, services.now())


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
            )
        )
    return RulesResponse(rules=out)
