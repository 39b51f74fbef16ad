"""Prepare: claim the dropped object, validate and normalize its lines, quarantine the
rejected ones, write patient-partitioned chunk files and a manifest (docs/workflow.md)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from rxguard.dynamo import BatchStore, ResultStore
from rxguard.ingest import prepare_batch
from rxguard.kb import KnowledgeBase
from rxguard.observability import logger
from rxguard.workflow import naming
from rxguard.workflow.contract import ChunkRef, PrepareOutput, PrepareRequest
from rxguard.workflow.naming import S3ObjectRef
from rxguard.workflow.settings import WorkflowSettings


def prepare_object(
    request: PrepareRequest,
    *,
    ingest: ResultStore,
    results: ResultStore,
    batches: BatchStore,
    kb: KnowledgeBase,
    settings: WorkflowSettings,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    workdir: Path | None = None,
) -> PrepareOutput:
    ref = request.source
    batch_id = naming.batch_id_for(ref)
    claim = batches.claim(batch_id, request.execution_id, ref.as_dict(), now())
    if not claim.claimed:
        logger.info("object already claimed by another execution", extra={"batch_id": batch_id})
        return PrepareOutput(
            batch_id=batch_id, duplicate=True, owner=claim.owner, source=ref, started_at=claim.started_at
        )

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        local = Path(tmp) / "object"  # S3 keys are opaque ids, never local file names (`incoming/..`, 1,024 bytes)
        _download(ingest, ref, local)
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        result = prepare_batch(
            local,
            kb,
            out_dir,
            chunk_size=settings.core.chunk_size,
            name=ref.key,
            default_admdvs=settings.core.default_admdvs,
        )
        chunks = []
        for index, info in enumerate(result.chunks):
            key = naming.chunk_key(batch_id, index)
            results.upload_file(key, Path(info.path))
            chunks.append(ChunkRef(chunk_key=key, lines=info.lines, patients=info.patients))
        rejected_key = naming.rejected_key(batch_id)
        rejected_path = Path(result.rejected_path) if result.rejected_path else None
        if rejected_path is not None and rejected_path.exists():
            results.upload_file(rejected_key, rejected_path)
        else:
            results.put_bytes(rejected_key, b"", "application/x-ndjson")

    file_error = result.file_error
    output = PrepareOutput(
        batch_id=batch_id,
        owner=request.execution_id,
        source=ref,
        started_at=claim.started_at,
        chunk_count=len(chunks),
        chunks=chunks,
        file=ref.key,
        format=_text(getattr(result, "format", None)),
        encoding=_text(getattr(result, "encoding", None)),
        lines_read=result.lines_read,
        accepted=result.accepted,
        rejected=result.rejected,
        rejected_by_reason=dict(result.rejected_by_reason),
        file_error=f"{file_error.reason}: {file_error.message}" if file_error is not None else None,
        manifest_key=naming.manifest_key(batch_id),
        rejected_key=rejected_key,
    )
    results.put_json(naming.manifest_key(batch_id), output.model_dump(mode="json"))
    logger.info(
        "batch prepared",
        extra={
            "batch_id": batch_id,
            "lines_read": output.lines_read,
            "accepted": output.accepted,
            "rejected": output.rejected,
            "chunks": output.chunk_count,
            "file_error": output.file_error,
        },
    )
    return output


def _download(store: ResultStore, ref: S3ObjectRef, path: Path) -> None:
    """Read the object by version when known; S3 event keys may arrive URL-encoded."""
    try:
        store.download(ref.key, path, ref.version_id)
    except Exception as exc:
        decoded = unquote_plus(ref.key)
        if decoded == ref.key or "NoSuchKey" not in repr(exc):
            raise
        store.download(decoded, path, ref.version_id)


def _text(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))
