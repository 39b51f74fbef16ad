"""The ClaimBatch state machine's payloads: what each Lambda task receives and returns,
and the files the steps hand each other in the results bucket. One module, so that the
steps (`prepare`, `screen`, `institutions`, `notify`, `finalize`), the handlers, the local
orchestrator and the tests agree on one shape and never import each other for it.

    Prepare     PrepareRequest -> PrepareOutput (chunks: ChunkRef, also the manifest file)
    Screen      ChunkRequest   -> ChunkResult | ChunkFailure (the Map's Catch); ChunkFindings file
    ScreenInstitutions  InstitutionsRequest -> ChunkResult; ChunkFindings file
    Notify      NotifyRequest  -> the alerts summary
    Finalize    FinalizeRequest -> FinalizeResult

`statemachines/claim_batch.asl.json` builds these (ItemSelector, Parameters, the ChunkFailed
Pass state); `tests/unit/test_workflow_contract.py` checks the two agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rxguard.models import ClaimLine, Finding, Severity
from rxguard.repository import FindingChanges
from rxguard.workflow.naming import S3ObjectRef

INSTITUTIONS = "institutions"  # the pseudo chunk key of the ScreenInstitutions step's result

Status = Literal["SUCCEEDED", "PARTIAL", "FAILED"]


# ---------------------------------------------------------------- Prepare


class PrepareRequest(BaseModel):
    """What Prepare is asked to do; also the Powertools idempotency key (source + execution)."""

    model_config = ConfigDict(frozen=True)

    source: S3ObjectRef
    execution_id: str


class ChunkRef(BaseModel):
    """One chunk file of the manifest: the Map's items."""

    chunk_key: str
    lines: int
    patients: int = 0


class PrepareOutput(BaseModel):
    """Prepare's result: the state machine's input to the Map (chunks) and to Finalize;
    also stored as the batch's manifest."""

    batch_id: str
    duplicate: bool = False
    owner: str | None = None  # the execution that owns the batch (differs from us when duplicate)
    source: S3ObjectRef
    started_at: str
    chunk_count: int = 0
    chunks: list[ChunkRef] = Field(default_factory=list)
    file: str | None = None
    format: str | None = None
    encoding: str | None = None
    lines_read: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    file_error: str | None = None
    manifest_key: str | None = None
    rejected_key: str | None = None


# ---------------------------------------------------------------- Screen (one Map item)


class ChunkRequest(BaseModel):
    """One Map item (the ASL's ItemSelector)."""

    model_config = ConfigDict(extra="ignore")

    batch_id: str
    chunk_key: str
    lines: int = 0
    index: int = 0


class ChunkResult(BaseModel):
    """One Map item's output (kept small: the Map output is inline in the execution state)."""

    chunk_key: str
    ok: bool = True
    lines: int
    recorded: int
    duplicates: int
    findings: dict[str, int] = Field(default_factory=dict)  # new / updated / superseded / unchanged
    result_key: str


class ChunkFailure(BaseModel):
    """A Map item whose task still failed after its retries: the ChunkFailed Pass state's
    output (`{chunk_key, ok: false, error}`, error being the Lambda errorType)."""

    chunk_key: str
    ok: Literal[False] = False
    error: str


class ChunkFindings(BaseModel):
    """The results file of a chunk (and of ScreenInstitutions): what its screening changed."""

    chunk_key: str
    recorded: int = 0
    duplicates: int = 0
    new: list[Finding] = Field(default_factory=list)
    updated: list[Finding] = Field(default_factory=list)
    superseded: list[Finding] = Field(default_factory=list)
    unchanged: int = 0
    institutions: dict[str, str] = Field(default_factory=dict)  # fixmedins_code -> name, for the letters
    evidence_lines: list[ClaimLine] = Field(default_factory=list)  # this chunk's lines cited by new/updated findings

    @classmethod
    def of_changes(cls, chunk_key: str, changes: FindingChanges, **more: Any) -> ChunkFindings:
        """The results file of what a screening changed (`more`: recorded, institutions, ...)."""
        return cls(chunk_key=chunk_key, **vars(changes), **more)  # new, updated, superseded, unchanged

    def counts(self) -> dict[str, int]:
        """The ChunkResult's `findings`: how many findings are new, updated, superseded, unchanged."""
        changed = {"new": len(self.new), "updated": len(self.updated), "superseded": len(self.superseded)}
        return {**changed, "unchanged": self.unchanged}

    activity_periods: list[str] = Field(default_factory=list)  # months whose institution activity changed
    # A retry after an attempt that reconciled but never wrote this file: the current findings
    # citing the chunk's lines, for Notify (alerts are once-only, so nothing is announced twice)
    recovered: list[Finding] = Field(default_factory=list)


class _Counted(BaseModel):
    """A finding as Finalize counts it (its other fields are not read)."""

    rule_id: str
    severity: Severity


class _Skipped(BaseModel):
    """An entry counted, not read."""


class ChunkCounts(BaseModel):
    """What Finalize and ScreenInstitutions read of a results file: the counts, each new or
    updated finding's rule and severity, and the months touched. The findings and evidence
    lines themselves are not validated again (at 1M lines they are ~15,000 findings and
    their lines; Notify reads them)."""

    recorded: int = 0
    duplicates: int = 0
    new: list[_Counted] = Field(default_factory=list)
    updated: list[_Counted] = Field(default_factory=list)
    superseded: list[_Skipped] = Field(default_factory=list)
    unchanged: int = 0
    activity_periods: list[str] = Field(default_factory=list)


class FindingId(BaseModel):
    """A finding of a results file read by its id alone (the rest is not validated)."""

    finding_id: str


class ChunkSupersessions(BaseModel):
    """What the local run's corrections read of a results file: the ids of the new findings
    and the superseded findings (the rest is not validated again)."""

    new: list[FindingId] = Field(default_factory=list)
    superseded: list[Finding] = Field(default_factory=list)


def ok_results(chunk_results: Iterable[Any]) -> list[Mapping[str, Any]]:
    """The Map results of chunks that were screened: null entries (moto turns a failed
    DISTRIBUTED Map item into null) and ChunkFailure entries (`ok: false`) left out."""
    return [r for r in chunk_results if isinstance(r, Mapping) and r.get("ok") is True and r.get("result_key")]


# ---------------------------------------------------------------- ScreenInstitutions, Notify


class InstitutionsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    batch_id: str
    chunk_results: list[Any] = Field(default_factory=list)  # Map output: ChunkResult, ChunkFailure or null


class NotifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    batch_id: str
    chunk_results: list[Any] = Field(default_factory=list)  # Map output: ChunkResult, ChunkFailure or null
    institutions: dict[str, Any] | None = None  # the ScreenInstitutions result


# ---------------------------------------------------------------- Finalize


class FinalizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    mode: Literal["complete", "failed"] = "complete"
    batch_id: str | None = None
    state: dict[str, Any] = Field(default_factory=dict)  # the whole execution state at this point
    execution_id: str | None = None


class FinalizeResult(BaseModel):
    batch_id: str | None
    status: Status
    report_key: str | None
    missing_chunks: list[str] = Field(default_factory=list)
    findings_new: int = 0
