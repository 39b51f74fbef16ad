"""The domain models shared by every part of rxguard.

`ClaimLine` is the normalized form of one claim line (docs/design.md "Claim-line format"),
`Rejection` the record of a line that could not be normalized, `Finding` the output of
a rule. Everything else (ingestion, engine, repositories, API, letters) speaks these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field


class InstitutionKind(StrEnum):
    HOSPITAL = "hospital"  # fixmedins_code starts with H
    PHARMACY = "pharmacy"  # fixmedins_code starts with P
    OTHER = "other"

    @classmethod
    def from_code(cls, code: str) -> InstitutionKind:
        head = code[:1].upper()
        if head == "H":
            return cls.HOSPITAL
        if head == "P":
            return cls.PHARMACY
        return cls.OTHER


class Severity(StrEnum):
    LOW = "low"  # informational
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return {"low": 0, "medium": 1, "high": 2}[self.value]


class Scene(StrEnum):
    PRE = "pre"  # 事前提醒: proposed line, not yet recorded
    IN = "in"  # 事中审核: real-time recording of a dispensing
    POST = "post"  # 事后监管: post-payment batch screening


OverrideReason = Literal["lost", "travel", "dose_change"]


_KEPT = ("line_id", "day")  # ClaimLine's cached properties: a copy with an update computes them again


class ClaimLine(BaseModel):
    """One normalized claim line. Immutable; serialised as one JSON object per line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feedetl_sn: str
    fixmedins_code: str
    fixmedins_name: str | None = None
    institution_kind: InstitutionKind
    admdvs: str | None = None
    psn_no: str
    mdtrt_id: str  # the visit; institution + day when the source has none
    setl_id: str | None = None
    med_type: str
    fee_ocur_time: datetime
    med_list_codg: str
    med_list_name: str | None = None
    cnt: float  # as billed (packs, or minimum units when trdn_flag)
    trdn_flag: bool = False
    pric: float
    det_item_fee_sumamt: float
    quantity_units: float  # in minimum units (片, 粒, 支, ml ...)
    sin_dos_dscr: str | None = None
    used_frqu_dscr: str | None = None
    prd_days: float | None = None
    rxno: str | None = None
    bilg_dr_codg: str | None = None
    diagnoses: list[str] = Field(default_factory=list)
    dscg_tkdrug_flag: bool = False
    lt_rx_flag: bool = False
    override_reason: OverrideReason | None = None
    init_feedetl_sn: str | None = None  # reversal (退费): feedetl_sn of the original line it cancels, same institution
    trace_codes: list[str] = Field(default_factory=list)
    # Knowledge-base facts resolved at normalization time (None for unmonitored drugs).
    monitored: bool = False
    atc_code: str | None = None
    days_supply: float | None = None  # at the label maximum daily dose
    # Where the line came from.
    source_file: str | None = None
    source_line: int | None = None
    # A late line (recorded through the API more than late_hours after fee_ocur_time): when it
    # arrived, China time. A finding it causes names its institution, not an earlier seller.
    received_at: datetime | None = None

    @cached_property
    def line_id(self) -> str:
        """Globally unique line id: `fixmedins_code/feedetl_sn`. Computed once per line (the
        engine, screening and the state read it ~10 times a line); `model_copy` forgets it."""
        return self.id_of(self.fixmedins_code, self.feedetl_sn)

    @staticmethod
    def id_of(fixmedins_code: str, feedetl_sn: str) -> str:
        """The line id of an institution's serial number (`line_id`, without a ClaimLine)."""
        return f"{fixmedins_code}/{feedetl_sn}"

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; with `update`, the cached line id and day are computed again from the copy's fields."""
        copy = super().model_copy(update=update, deep=deep)
        if update:
            for kept in _KEPT:
                copy.__dict__.pop(kept, None)
        return copy

    @cached_property
    def day(self) -> date:
        """The day of `fee_ocur_time` (kept once computed, like `line_id`)."""
        return self.fee_ocur_time.date()

    @property
    def reverses(self) -> str | None:
        """For a reversal (退费) line, the line id of the original line it cancels."""
        return f"{self.fixmedins_code}/{self.init_feedetl_sn}" if self.init_feedetl_sn else None


class Rejection(BaseModel):
    """A line (or a whole file, line=None) that was not accepted, and why."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int | None  # 1-based physical line (CSV/JSONL) or element index + 1 (JSON doc)
    field: str | None  # the offending field, None for whole-line or whole-file errors
    reason: str  # machine-readable code, e.g. "missing", "not_positive", "duplicate"
    message: str  # human-readable, names the value where that is not personal data
    line_id: str | None = None  # fixmedins_code/feedetl_sn when readable


class Finding(BaseModel):
    """The output of a rule: deterministic id, subject, evidence, figures, explanation."""

    model_config = ConfigDict(frozen=True)

    finding_id: str
    rule_id: str
    rule_version: int
    severity: Severity
    subject_type: Literal["patient", "institution", "prescriber", "trace_code"]
    psn_no: str | None = None
    fixmedins_code: str | None = None
    bilg_dr_codg: str | None = None
    admdvs: str | None = None
    occurred_at: datetime  # time of the line that triggered the finding
    evidence: list[str]  # line ids `fixmedins_code/feedetl_sn`, sorted
    figures: dict[str, Any] = Field(default_factory=dict)
    mitigations: list[str] = Field(default_factory=list)  # e.g. ["lt_rx_flag"]
    explanation_zh: str
    explanation_en: str
    status: Literal["new", "confirmed", "dismissed", "superseded"] = "new"

    @staticmethod
    def make_id(rule_id: str, subject: str, evidence: list[str]) -> str:
        """Deterministic id from rule + subject + evidence lines (order-insensitive)."""
        key = "\x1f".join([rule_id, subject, *sorted(evidence)])
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def patient_chunks[Line: ClaimLine](lines: Sequence[Line], size: int) -> list[list[Line]]:
    """Lines grouped by patient (each patient's lines in one chunk, as the workflow's
    Prepare partitions), packed into chunks of about `size` lines, in a stable order."""
    by_patient: dict[str, list[Line]] = {}
    for line in lines:
        by_patient.setdefault(line.psn_no, []).append(line)
    chunks: list[list[Line]] = [[]]
    for psn in sorted(by_patient):
        if chunks[-1] and len(chunks[-1]) + len(by_patient[psn]) > size:
            chunks.append([])
        chunks[-1].extend(by_patient[psn])
    return [c for c in chunks if c]
