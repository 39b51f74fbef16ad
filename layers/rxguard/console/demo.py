"""A populated in-memory state for the console: claim files screened with the domain's own
ingestion and engine, batch records and rejected lines kept for the batches page, and the
letters of the findings (their index, as Notify writes it) for the letters lists.

The browser tests use it, and so does `rxguard serve --memory` with files to screen. It
is the in-memory stand-in for `rxguard run --state DIR` (the SQLite state).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from rxguard import screening
from rxguard.alerts import AlertSettings
from rxguard.api.service import Services
from rxguard.console.sources import BatchRecord, ConsoleSources, LetterRecord, MemoryBatches, MemoryLetters
from rxguard.engine.common import finding_scope
from rxguard.ingest import read_batch
from rxguard.models import ClaimLine, Rejection, patient_chunks
from rxguard.repository import InMemoryRepository

CHUNK_LINES = 500


def screen_files(services: Services, sources: ConsoleSources, files: Sequence[Path]) -> list[BatchRecord]:
    """Screen each file as one batch (in time order of the list) into the services'
    in-memory repository; record its batch record and rejected lines; recompute the
    institution findings over everything; record the letters the findings would get."""
    repo = services.repo
    if not isinstance(repo, InMemoryRepository):
        raise TypeError("screen_files fills an in-memory repository; the SQLite state has `rxguard run`")
    batches = sources.batches if isinstance(sources.batches, MemoryBatches) else None
    records = []
    for path in files:
        started = datetime.now(UTC)
        reader = read_batch(path, services.kb)
        lines: list[ClaimLine] = []
        rejections: list[Rejection] = []
        for item in reader:
            (lines if isinstance(item, ClaimLine) else rejections).append(item)  # type: ignore[arg-type]
        new = 0
        chunks = patient_chunks(lines, CHUNK_LINES)
        for chunk in chunks:
            new += len(screening.screen_lines(chunk, repo, services.kb).changes.new)
        record = BatchRecord(
            batch_id=f"{path.stem}-{started:%Y%m%dT%H%M%S%f}",
            status="FAILED" if reader.file_error else ("PARTIAL" if rejections else "SUCCEEDED"),
            file=path.name,
            started_at=started.isoformat(),
            finished_at=datetime.now(UTC).isoformat(),
            lines_read=reader.lines_read,
            accepted=reader.accepted,
            rejected=reader.rejected,
            rejected_by_reason=dict(Counter(r.reason for r in rejections)),
            chunks_total=len(chunks),
            chunks_ok=len(chunks),
            findings_new=new,
            file_error=getattr(reader.file_error, "message", None) if reader.file_error else None,
        )
        if batches is not None:
            batches.put(record, rejections)
        records.append(record)
    current = repo.all_current_findings()
    _, outliers = screening.institution_findings_from_lines(repo.lines.values(), current, services.kb)
    scopes = {finding_scope(f) for f in repo.findings.values() if f.rule_id == "institution-outlier"}
    screening.replace_institution_findings(repo, outliers, scopes | {finding_scope(f) for f in outliers})
    if isinstance(sources.letters, MemoryLetters) and records:
        _letters(services, sources.letters, records[-1].batch_id)
    return records


def _letters(services: Services, letters: MemoryLetters, batch_id: str) -> None:
    """The letters Notify would send for the current findings (grouped by the letters
    package's own rule: one per institution and period; nothing is rendered)."""
    from rxguard.letters import letter_groups

    assert isinstance(services.repo, InMemoryRepository)
    settings = AlertSettings()
    today = date.today().isoformat()
    for addressee, subject, period, group in letter_groups(services.repo.all_current_findings(), settings):
        digest = hashlib.sha256(f"{addressee}:{subject}:{period}".encode()).hexdigest()[:8].upper()
        warning = any(f.severity.value == "high" for f in group)
        letters.add(
            LetterRecord(
                letter_id=f"institution-{subject}-{period[0]}" if addressee == "institution" else f"patient-{digest}",
                number=f"医保监{'警' if warning else '提'}〔{today[:4]}〕{digest}号",
                kind_zh="警示函" if warning else "提醒函",
                addressee_type=addressee,
                institution_id=subject if addressee == "institution" else None,
                batch_id=batch_id,
                finding_ids=tuple(sorted(f.finding_id for f in group)),
                issued_on=today,
            )
        )
