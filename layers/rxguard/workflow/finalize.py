"""Finalize: the batch report (report.json in S3) and the batch status in the batches
table. SUCCEEDED when every chunk of the manifest was screened, PARTIAL when some are
missing (a null Map entry, an `ok: false` entry or fewer results than chunks: moto turns
a failed Map item into null, and the check protects us on AWS too), FAILED when the file
could not be read at all, no chunk was screened, or a step failed (mode `failed`).

`sweep_stuck_batches` (the sweeper, run by EventBridge Scheduler) finalizes in failure mode
every batch still RUNNING past its timeout - an execution that timed out, was stopped, or
whose Finalize kept failing - with the reason and a report, as RecordFailure would have."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rxguard.dynamo import BatchStore, ResultStore
from rxguard.errors import BatchInputError
from rxguard.observability import logger
from rxguard.workflow import naming
from rxguard.workflow.contract import (
    ChunkCounts,
    FinalizeRequest,
    FinalizeResult,
    PrepareOutput,
    Status,
    ok_results,
)

_CAUSE_LIMIT = 2000


def missing_chunks(expected: Sequence[str], chunk_results: Sequence[Any] | None) -> list[str]:
    """Chunks of the manifest without a successful result."""
    done = {str(r["chunk_key"]) for r in ok_results(chunk_results or [])}
    return [key for key in expected if key not in done]


def finalize_batch(
    request: FinalizeRequest,
    *,
    results: ResultStore,
    batches: BatchStore,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    only_if_running: bool = False,
) -> FinalizeResult:
    """`only_if_running` (the sweeper): the status is recorded only over RUNNING, so a batch
    that finished meanwhile keeps its own."""
    state = request.state
    batch_id = request.batch_id or naming.batch_id_from_state(state)
    if batch_id is None:
        if request.mode == "failed":  # nothing to record against: the event itself was unusable
            logger.error("batch failed before it had an id", extra={"error": _error(state)})
            return FinalizeResult(batch_id=None, status="FAILED", report_key=None)
        raise BatchInputError("finalize: no batch_id in the request or the state")

    manifest = _manifest(results, batch_id, state)
    claimed = batches.get(batch_id) or {}
    chunk_results = state.get("chunk_results")
    expected = [c.chunk_key for c in manifest.chunks] if manifest else []
    missing = missing_chunks(expected, chunk_results if isinstance(chunk_results, list) else [])
    institutions = state.get("institutions")
    extra = [institutions.get("result")] if isinstance(institutions, Mapping) else []
    counts = _count(results, [*(chunk_results if isinstance(chunk_results, list) else []), *extra])

    error = _error(state) if request.mode == "failed" else None
    status: Status
    if (
        request.mode == "failed"
        or manifest is None
        or manifest.file_error
        or (expected and len(missing) == len(expected))
    ):
        status = "FAILED"
    elif missing:
        status = "PARTIAL"
    else:
        status = "SUCCEEDED"

    finished = now()
    started_text = str(claimed.get("started_at") or (manifest.started_at if manifest else "")) or None
    report: dict[str, Any] = {
        "batch_id": batch_id,
        "status": status,
        "source": manifest.source.as_dict() if manifest else claimed.get("source"),
        "execution_id": request.execution_id,
        "started_at": started_text,
        "finished_at": finished.isoformat(),
        "duration_seconds": _duration(started_text, finished),
        "file": manifest.file if manifest else None,
        "format": manifest.format if manifest else None,
        "encoding": manifest.encoding if manifest else None,
        "lines_read": manifest.lines_read if manifest else 0,
        "accepted": manifest.accepted if manifest else 0,
        "rejected": manifest.rejected if manifest else 0,
        "rejected_by_reason": manifest.rejected_by_reason if manifest else {},
        "file_error": manifest.file_error if manifest else None,
        "chunks": {
            "total": len(expected),
            "ok": len(expected) - len(missing),
            "missing": len(missing),
            "missing_keys": missing,
        },
        **counts,
        "notify": (state.get("notify") or {}).get("summary") if isinstance(state.get("notify"), Mapping) else None,
        "error": error,
        "rejected_key": naming.rejected_key(batch_id) if manifest else None,
    }
    key = naming.report_key(batch_id)
    if only_if_running:  # the status first: a batch that finished meanwhile keeps its report too
        if not batches.finish_if(batch_id, "RUNNING", status, _summary(report), key, finished):
            logger.info("batch finished meanwhile: left as it is", extra={"batch_id": batch_id})
            return FinalizeResult(batch_id=batch_id, status=status, report_key=None)
        results.put_json(key, report)
    else:
        results.put_json(key, report)
        batches.finish(batch_id, status, _summary(report), key, finished)
    logger.info(
        "batch finalized",
        extra={
            "batch_id": batch_id,
            "status": status,
            "missing_chunks": len(missing),
            "findings_new": counts["findings"]["new"],
        },
    )
    return FinalizeResult(
        batch_id=batch_id, status=status, report_key=key, missing_chunks=missing, findings_new=counts["findings"]["new"]
    )


def sweep_stuck_batches(
    *,
    results: ResultStore,
    batches: BatchStore,
    timeout: timedelta,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[FinalizeResult]:
    """Every batch RUNNING for longer than `timeout` becomes FAILED with the reason
    (`BatchTimedOut`: since when, which execution) and a report.json of what is known (the
    manifest's counts when Prepare wrote one). The state machine's own timeout is shorter,
    so the execution is over when the sweeper acts."""
    at = now()
    swept: list[FinalizeResult] = []
    for batch in batches.running(at - timeout):
        batch_id = batch["batch_id"]
        execution = batch.get("execution_id")
        cause = (
            f"RUNNING since {batch.get('started_at')}, past the {timeout.total_seconds() / 60:g}-minute batch "
            f"timeout: execution {execution} timed out, was stopped, or its Finalize kept failing; "
            "marked FAILED by the sweeper. Re-drop the file to screen it again."
        )
        request = FinalizeRequest(
            mode="failed",
            batch_id=batch_id,
            state={"batch_id": batch_id, "error": {"Error": "BatchTimedOut", "Cause": cause}},
            execution_id=execution,
        )
        result = finalize_batch(request, results=results, batches=batches, now=now, only_if_running=True)
        if result.report_key is not None:
            swept.append(result)
            logger.warning(
                "stuck batch marked FAILED", extra={"batch_id": batch_id, "started_at": batch.get("started_at")}
            )
    return swept


def _manifest(results: ResultStore, batch_id: str, state: Mapping[str, Any]) -> PrepareOutput | None:
    """Prepare's manifest from S3 (the state may be Prepare's output too; S3 is the record)."""
    key = naming.manifest_key(batch_id)
    if results.exists(key):
        return PrepareOutput.model_validate(results.get_json(key))
    if "chunks" in state and "source" in state:
        return PrepareOutput.model_validate(state)
    return None


def _count(results: ResultStore, chunk_results: Sequence[Any]) -> dict[str, Any]:
    by_rule: Counter[str] = Counter()
    by_severity: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    recorded = duplicates = 0
    for entry in ok_results(chunk_results):
        found = ChunkCounts.model_validate_json(results.get_bytes(str(entry["result_key"])))
        recorded += found.recorded
        duplicates += int(entry.get("duplicates", found.duplicates))
        totals["new"] += len(found.new)
        totals["updated"] += len(found.updated)
        totals["superseded"] += len(found.superseded)
        totals["unchanged"] += found.unchanged
        for finding in [*found.new, *found.updated]:
            by_rule[finding.rule_id] += 1
            by_severity[finding.severity.value] += 1
    return {
        "lines": {"recorded": recorded, "duplicates": duplicates},
        "findings": {
            "new": totals["new"],
            "updated": totals["updated"],
            "superseded": totals["superseded"],
            "unchanged": totals["unchanged"],
            "by_rule": dict(sorted(by_rule.items())),
            "by_severity": dict(sorted(by_severity.items())),
        },
    }


def _error(state: Mapping[str, Any]) -> dict[str, str] | None:
    error = state.get("error")
    if not isinstance(error, Mapping):
        return None
    return {"error": str(error.get("Error", "")), "cause": str(error.get("Cause", ""))[:_CAUSE_LIMIT]}


def _duration(started: str | None, finished: datetime) -> float | None:
    if not started:
        return None
    try:
        start = datetime.fromisoformat(started)
    except ValueError:
        return None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return round((finished - start).total_seconds(), 3)


def _summary(report: Mapping[str, Any]) -> dict[str, Any]:
    keep = (
        "status",
        "lines_read",
        "accepted",
        "rejected",
        "rejected_by_reason",
        "file_error",
        "chunks",
        "lines",
        "findings",
        "error",
        "duration_seconds",
    )
    return {k: report[k] for k in keep if k in report}
