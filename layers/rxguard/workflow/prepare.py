"""Prepare: claim the dropped object, validate and normalize its lines, quarantine the
rejected ones, write patient-partitioned chunk files and a manifest (docs/workflow.md)."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_plus

from rxguard.dynamo import BatchStore, ResultStore
from rxguard.ingest import ChunkInfo, TimeWindow, prepare_batch
from rxguard.ingest.partition import TaskMapper
from rxguard.ingest.reader import Opener
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
    mapper: TaskMapper | None = None,
) -> PrepareOutput:
    """The Prepare step. `mapper` normalizes the records (ingest.partition: in this process
    by default, as on Lambda; the local runtime passes its worker pool)."""
    ref = request.source
    batch_id = naming.batch_id_for(ref)
    claim = batches.claim(batch_id, request.execution_id, ref.as_dict(), now())
    if not claim.claimed:
        logger.info("object already claimed by another execution", extra={"batch_id": batch_id})
        return PrepareOutput(
            batch_id=batch_id, duplicate=True, owner=claim.owner, source=ref, started_at=claim.started_at
        )

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        # The object is streamed from S3, never downloaded: the disk holds the compressed spill and
        # one chunk at a time (each is uploaded and deleted as it is written), not ~6x the input.
        opener, size = _object_opener(ingest, ref)
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        chunks: list[ChunkRef] = []

        def upload(info: ChunkInfo) -> None:
            key = naming.chunk_key(batch_id, len(chunks))
            results.move_file(key, Path(info.path))
            chunks.append(ChunkRef(chunk_key=key, lines=info.lines, patients=info.patients))

        result = prepare_batch(
            opener,
            kb,
            out_dir,
            chunk_size=settings.core.chunk_size,
            name=ref.key,
            default_admdvs=settings.core.default_admdvs,
            window=TimeWindow.around(
                now(), history_days=settings.max_line_age_days or None, skew_minutes=settings.clock_skew_minutes
            ),
            size=size,
            on_chunk=upload,
            mapper=mapper,
        )
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


class _StreamingBody(io.RawIOBase):
    """An S3 object's body as a raw stream (the readers buffer it)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


def _object_opener(store: ResultStore, ref: S3ObjectRef) -> tuple[Opener, int]:
    """Opens the object's content from its start (by version when known), and its size. S3
    event keys may arrive URL-encoded: the decoded key is tried when the key is not found."""
    local = getattr(store, "path", None)
    if callable(local) and not hasattr(store, "s3"):  # the local runtime's directories: the file itself
        file = Path(local(ref.key))
        return (lambda: file.open("rb")), file.stat().st_size
    version = {"VersionId": ref.version_id} if ref.version_id else {}
    key = ref.key
    try:
        head = store.s3.head_object(Bucket=store.bucket, Key=key, **version)
    except Exception as exc:
        decoded = unquote_plus(ref.key)
        if decoded == ref.key or not any(code in repr(exc) for code in ("404", "NoSuchKey", "Not Found")):
            raise
        key = decoded
        head = store.s3.head_object(Bucket=store.bucket, Key=key, **version)

    def open_object() -> IO[bytes]:
        body = store.s3.get_object(Bucket=store.bucket, Key=key, **version)["Body"]
        return io.BufferedReader(_StreamingBody(body), 1024 * 1024)

    return open_object, int(head.get("ContentLength") or 0)


def _text(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))
