"""Request and response models of the API (the OpenAPI document is generated from them).

Field names follow the claim-line contract (docs/design.md, national interfaces 2204/3505), so
an HIS that uploads fee details speaks the same words here. The national 3101/3102 shapes
live in `rxguard.api.nhsa`.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from rxguard.engine.risk import PatientRisk
from rxguard.models import OverrideReason, Severity

CHINA = timezone(timedelta(hours=8))


def _in_china_time(value: datetime) -> datetime:
    """Claim-line times carry no zone and are China time: answers say so (RFC 3339 +08:00)."""
    return value.replace(tzinfo=CHINA) if value.tzinfo is None else value.astimezone(CHINA)


ChinaTime = Annotated[datetime, AfterValidator(_in_china_time)]
Decision = Literal["pass", "warn", "block"]
ReviewStatus = Literal["confirmed", "dismissed"]
DispositionAction = Literal["continue", "modify"]  # 3103 dspo_way 1 继续执行 / 2 返回修改
FindingStatus = Literal["new", "confirmed", "dismissed", "superseded"]

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:/\-]+$")]
Text = Annotated[str, Field(max_length=200)]
Institution = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]{1,39}$")]
DrugCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,49}$")]
Diagnosis = Annotated[str, Field(pattern=r"^[A-Za-z0-9.+\-]{1,20}$")]


class ProposedLine(BaseModel):
    """One drug line of a proposed (checks) or completed (dispensations) dispensing."""

    model_config = ConfigDict(extra="forbid")

    feedetl_sn: Code | None = Field(
        default=None,
        description="fee-detail serial number, unique within the institution; required for dispensations, "
        "generated for checks when absent",
    )
    med_list_codg: DrugCode = Field(description="national drug code (医保药品编码)")
    med_list_name: Text | None = None
    cnt: float = Field(gt=0, le=100000, description="quantity in packs, or in minimum units when trdn_flag")
    trdn_flag: bool = Field(default=False, description="拆零: cnt is in minimum units")
    pric: float = Field(ge=0, le=1e7, description="unit price, yuan")
    det_item_fee_sumamt: float | None = Field(default=None, ge=0, le=1e9, description="line total; cnt x pric")
    sin_dos_dscr: Text | None = None
    used_frqu_dscr: Text | None = None
    prd_days: float | None = Field(default=None, gt=0, le=3650)
    rxno: Code | None = None
    bilg_dr_codg: Code | None = Field(default=None, description="prescriber")
    dise_codg: list[Diagnosis] = Field(
        default_factory=list, max_length=50, description="diagnoses of this line (ICD-10), added to the visit's"
    )
    dscg_tkdrug_flag: bool = Field(default=False, description="出院带药 discharge medication")
    lt_rx_flag: bool = Field(default=False, description="长期处方 long-term prescription")
    override_reason: OverrideReason | None = Field(default=None, description="lost | travel | dose_change")
    drug_trac_codg: list[Annotated[str, Field(pattern=r"^\d{20}$")]] = Field(
        default_factory=list, max_length=100, description="drug traceability codes (20 digits)"
    )


class DispensingRequest(BaseModel):
    """A dispensing for one patient at one institution (rxguard's own shape)."""

    model_config = ConfigDict(extra="forbid")

    psn_no: Code = Field(description="insured person (人员编号)")
    fixmedins_code: Institution = Field(description="institution (定点医药机构编号); H... hospital, P... pharmacy")
    fixmedins_name: Text | None = None
    admdvs: Annotated[str, Field(pattern=r"^\d{6}$")] | None = Field(default=None, description="region code")
    mdtrt_id: Code | None = Field(default=None, description="visit id; institution + day when absent")
    setl_id: Code | None = None
    med_type: Annotated[str, Field(pattern=r"^\d{2,4}$")] = Field(
        default="41", description="11 outpatient, 14 chronic outpatient, 41 pharmacy purchase, 21 inpatient"
    )
    fee_ocur_time: datetime | None = Field(
        default=None,
        description="time of the dispensing; without a zone it is China time (UTC+8); now when absent (checks)",
    )
    dise_codg: list[Diagnosis] = Field(
        default_factory=list, max_length=50, description="diagnoses of the visit (ICD-10)"
    )
    lines: list[ProposedLine] = Field(min_length=1, description="drug lines (at most 200 a request)")


class DispensedLine(ProposedLine):
    """A drug line of a completed dispensing: its fee-detail serial number is its identity."""

    feedetl_sn: Code = Field(description="fee-detail serial number, unique within the institution (the line id)")


class DispensationRequest(DispensingRequest):
    """A completed dispensing (rxguard's own shape); recorded idempotently on the line ids."""

    lines: list[DispensedLine] = Field(min_length=1, description="drug lines (at most 200 a request)")  # type: ignore[assignment]


class PreviousFill(BaseModel):
    """The fill a supply finding compares with (NCPDP 530-FU date, 531-FV quantity,
    529-FT pharmacy, 533-FX prescriber analogues)."""

    line_id: str
    dispensed_on: date = Field(description="530-FU: date of the previous fill")
    quantity: float = Field(description="531-FV: quantity of the previous fill (as billed)")
    days_supply: float | None = Field(default=None, description="days the previous fill lasts at the label maximum")
    fixmedins_code: str = Field(description="529-FT: the institution that dispensed it")
    fixmedins_name: str | None = None
    prescriber: str | None = Field(default=None, description="533-FX: its prescriber (bilg_dr_codg)")
    med_list_codg: str
    med_list_name: str | None = None


class RuleHit(BaseModel):
    """A rule that fires on a line: what, how serious, why, on which lines."""

    rule_id: str
    rule_version: int
    name_zh: str
    name_en: str
    severity: Severity
    decision: Decision
    explanation_zh: str | None = Field(
        description="why, in Chinese; null when `details_in` names the line whose hit of this finding explains it"
    )
    explanation_en: str | None = Field(description="why, in English; null as explanation_zh")
    evidence: list[str] = Field(
        description="line ids fixmedins_code/feedetl_sn, the proposed ones included; at most 5: the line answered "
        "and the trigger lines first (GET /v1/findings/{id} lists them all)"
    )
    evidence_count: int = Field(description="how many evidence lines the finding has (evidence shows at most 5)")
    figures: dict[str, Any] | None = Field(default=None, description="the rule's figures; null as explanation_zh")
    mitigations: list[str] | None = Field(default=None, description="null as explanation_zh")
    finding_id: str = Field(description="the jr_id: GET /v1/findings/{id} answers it, POST /v1/dispositions uses it")
    details_in: str | None = Field(
        default=None,
        description="set when this finding was already given on an earlier line of this answer: that line's id, "
        "whose hit of the same finding_id carries the explanations, figures and mitigations (not repeated here)",
    )
    next_fill_on: date | None = Field(
        default=None,
        description="supply rules: the first day this line would pass the supply rules (null: waiting does not help)",
    )
    previous_fill: PreviousFill | None = Field(default=None, description="supply rules: the fill compared with")


class LineResult(BaseModel):
    line_id: str = Field(description="fixmedins_code/feedetl_sn")
    psn_no: str
    feedetl_sn: str
    med_list_codg: str
    monitored: bool
    days_supply: float | None = None
    decision: Decision
    next_fill_on: date | None = Field(
        default=None, description="the first day the line would pass every supply rule that fires on it"
    )
    notes: list[str] = Field(default_factory=list, description='e.g. "not monitored"')
    hits: list[RuleHit] = Field(default_factory=list)


class CheckResponse(BaseModel):
    decision: Decision = Field(description="the worst decision of the lines")
    checked_at: ChinaTime
    lines: list[LineResult]


class DispensationResponse(BaseModel):
    decision: Decision
    recorded: list[str] = Field(description="line ids recorded by this request")
    duplicates: list[str] = Field(description="line ids already recorded before (counted once)")
    new_findings: int
    alerts_sent: int | None = Field(default=None, description="None when alerts are not wired")
    lines: list[LineResult]


class Review(BaseModel):
    status: ReviewStatus
    reason: str
    reviewer: str
    reviewed_at: ChinaTime


class Disposition(BaseModel):
    """A prescriber's handling of a warning (3103): continue (with a reason) or modify."""

    action: DispositionAction
    reason: str | None = None
    warn_type: str | None = None
    disposer: str
    disposed_at: ChinaTime


class FindingView(BaseModel):
    finding_id: str
    rule_id: str
    rule_version: int
    severity: Severity
    subject_type: str
    psn_no: str | None = None
    fixmedins_code: str | None = None
    bilg_dr_codg: str | None = None
    admdvs: str | None = None
    occurred_at: ChinaTime
    evidence: list[str]
    figures: dict[str, Any] = Field(default_factory=dict)
    mitigations: list[str] = Field(default_factory=list)
    explanation_zh: str
    explanation_en: str
    status: FindingStatus
    review: Review | None = None
    disposition: Disposition | None = Field(default=None, description="the prescriber's handling (3103)")
    recorded: bool = Field(
        default=True, description="false: a warning a check answered (its lines are not recorded yet)"
    )


class FindingsPage(BaseModel):
    items: list[FindingView]
    next_token: str | None = Field(default=None, description="opaque; pass as next_token for the next page")
    risk: PatientRisk | None = Field(
        default=None,
        description="with ?patient=: the patient's risk score 0-100 over all their current findings, with its parts",
    )


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: ReviewStatus
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    reviewer: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="defaults to the caller's identity"
    )


class BacktestRequest(BaseModel):
    """A rule change to try on the stored history (docs/planning.md): entries as in
    rules/rules.yaml, each merged over today's definition of its id."""

    model_config = ConfigDict(extra="forbid")

    rules: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=50)]
    since: Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")] | None = None


class BacktestResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    since: str | None = None
    lines: int
    findings_before: int
    findings_after: int
    rules: dict[str, dict[str, Any]]
    totals: dict[str, int]


class RuleView(BaseModel):
    id: str
    version: int
    name_zh: str
    name_en: str
    severity: Severity
    scenes: list[str]
    enabled: bool
    effective_from: date
    effective_to: date | None = None
    confirmed: int = Field(description="findings of this rule confirmed by a reviewer")
    dismissed: int = Field(description="findings of this rule dismissed by a reviewer")
    precision: float | None = Field(description="confirmed / (confirmed + dismissed); null before any review")
    continued: int = Field(default=0, description="warnings the prescriber continued past (3103 dspo_way 1)")
    modified: int = Field(default=0, description="warnings after which the prescriber modified the order (dspo_way 2)")
    continue_rate: float | None = Field(
        default=None, description="continued / (continued + modified): the alert-fatigue measure; null before any"
    )
    modify_rate: float | None = Field(default=None, description="modified / (continued + modified)")


class RulesResponse(BaseModel):
    rules: list[RuleView]


class DispositionItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    finding_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] = Field(
        description="the jr_id / finding_id of the warning"
    )
    action: DispositionAction
    reason: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(
        default=None, description="required when continuing"
    )


class DispositionRequest(BaseModel):
    """The prescriber's handling of warnings (rxguard's shape of 3103)."""

    model_config = ConfigDict(extra="forbid")

    warn_type: Annotated[str, Field(max_length=16)] | None = None
    dispositions: list[DispositionItem] = Field(min_length=1, max_length=200)


class DispositionResponse(BaseModel):
    items: list[FindingView]


class SubscriptionFilters(BaseModel):
    """What a subscriber receives; every given filter must match (SNS filter policy)."""

    model_config = ConfigDict(extra="forbid")

    region_prefix: Annotated[str, Field(pattern=r"^\d{2,6}$")] | None = Field(
        default=None, description="admdvs prefix: 31 Shanghai, 3101 a city, 310104 a district"
    )
    institutions: list[Institution] = Field(default_factory=list, max_length=50, description="fixmedins_code")
    rules: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=20, description="our rule ids or the platform's rule codes"
    )
    severities: list[Severity] = Field(default_factory=list, max_length=3)
    message_types: list[Literal["finding", "digest", "letter", "correction"]] = Field(
        default_factory=list, max_length=4
    )


class SubscriptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: Literal["alerts", "letters"] = "alerts"
    protocol: Literal["email", "sms", "https", "sqs", "lambda"]
    endpoint: Annotated[str, Field(min_length=3, max_length=512)] = Field(
        description="an email address, a phone number in E.164 (+8613800000000), an https URL, a queue or function ARN"
    )
    filters: SubscriptionFilters = Field(default_factory=SubscriptionFilters)


class SubscriptionView(BaseModel):
    subscription_id: str
    topic: Literal["alerts", "letters"]
    protocol: str
    endpoint: str = Field(description="email addresses and phone numbers masked")
    filter_policy: dict[str, Any]
    pending_confirmation: bool = Field(description="email and https endpoints confirm the subscription first")


class SubscriptionsResponse(BaseModel):
    items: list[SubscriptionView]


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. invalid_field, too_large, not_found, forbidden")
    message: str
    field: str | None = Field(default=None, description='the offending field, e.g. "lines[0].cnt"')


class ErrorResponse(BaseModel):
    error: ErrorDetail
