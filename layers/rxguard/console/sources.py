"""What the console reads beyond the API's interfaces: batch records, letters, activity.

The API's `Services` (findings store, history repository, knowledge base) cover findings,
reviews and patient histories. Batches, letters and monthly activity have no API yet, so
the console asks for them through these small protocols. Each has an in-memory
implementation here (filled by `rxguard.console.demo` and the tests); the SQLite state
and DynamoDB provide their own over their tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rxguard.engine import flagged_line_ids
from rxguard.engine.institutions import ActivityAggregate, activity_from_lines
from rxguard.kb import KnowledgeBase
from rxguard.models import Rejection
from rxguard.repository import HistoryRepository, InMemoryRepository


@dataclass(frozen=True)
class BatchRecord:
    """One batch, with the fields of the Finalize report (workflow/finalize.py)."""

    batch_id: str
    status: str  # RUNNING | SUCCEEDED | PARTIAL | FAILED
    file: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    lines_read: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    chunks_total: int = 0
    chunks_ok: int = 0
    findings_new: int = 0
    file_error: str | None = None

    @property
    def progress(self) -> float:
        """Share of the batch's chunks screened (1.0 when finished or without chunks)."""
        if self.status in ("SUCCEEDED", "PARTIAL", "FAILED") or self.chunks_total == 0:
            return 1.0
        return self.chunks_ok / self.chunks_total

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> BatchRecord:
        """From a Finalize report (report.json of the workflow, or `rxguard run`'s)."""
        chunks = report.get("chunks") or {}
        return cls(
            batch_id=str(report["batch_id"]),
            status=str(report.get("status") or "RUNNING"),
            file=report.get("file"),
            started_at=report.get("started_at"),
            finished_at=report.get("finished_at"),
            lines_read=int(report.get("lines_read") or 0),
            accepted=int(report.get("accepted") or 0),
            rejected=int(report.get("rejected") or 0),
            rejected_by_reason=dict(report.get("rejected_by_reason") or {}),
            chunks_total=int(chunks.get("total") or 0),
            chunks_ok=int(chunks.get("ok") or 0),
            findings_new=int(report.get("findings_new") or (report.get("findings") or {}).get("new") or 0),
            file_error=report.get("file_error"),
        )


@dataclass(frozen=True)
class LetterRecord:
    """One warning letter and the findings it cites (the letters index of a batch)."""

    letter_id: str
    number: str
    kind_zh: str
    addressee_type: str  # institution | patient
    institution_id: str | None
    batch_id: str
    finding_ids: tuple[str, ...]
    issued_on: str | None = None


class BatchSource(Protocol):
    def batches(self) -> list[BatchRecord]:
        """Every batch, newest first."""
        ...

    def rejections(self, batch_id: str) -> list[Rejection] | None:
        """The rejected lines of a batch (None: no such batch)."""
        ...


class LetterSource(Protocol):
    def letters(self) -> list[LetterRecord]: ...


class ActivitySource(Protocol):
    def activity(self) -> list[ActivityAggregate]:
        """Monthly monitored lines and flagged lines per institution and prescriber."""
        ...


class MemoryBatches:
    def __init__(self) -> None:
        self._batches: dict[str, BatchRecord] = {}
        self._rejections: dict[str, list[Rejection]] = {}

    def put(self, record: BatchRecord, rejections: Sequence[Rejection] = ()) -> None:
        self._batches[record.batch_id] = record
        self._rejections[record.batch_id] = list(rejections)

    def batches(self) -> list[BatchRecord]:
        return sorted(self._batches.values(), key=lambda b: (b.started_at or "", b.batch_id), reverse=True)

    def rejections(self, batch_id: str) -> list[Rejection] | None:
        return None if batch_id not in self._batches else list(self._rejections.get(batch_id, []))


class MemoryLetters:
    def __init__(self, letters: Iterable[LetterRecord] = ()) -> None:
        self._letters = list(letters)

    def add(self, letter: LetterRecord) -> None:
        self._letters.append(letter)

    def add_index(self, index: dict[str, Any], issued_on: str | None = None) -> None:
        """The letters of a batch's `letters/<batch_id>/index.json`."""
        for entry in index.get("letters", []):
            letter_id = str(entry["letter_id"])
            institution = letter_id.removeprefix("institution-") if letter_id.startswith("institution-") else None
            self.add(
                LetterRecord(
                    letter_id=letter_id,
                    number=str(entry.get("number", "")),
                    kind_zh=str(entry.get("kind_zh", "")),
                    addressee_type=str(entry.get("addressee_type", "")),
                    institution_id=institution,
                    batch_id=str(index.get("batch_id", "")),
                    finding_ids=tuple(entry.get("finding_ids", [])),
                    issued_on=issued_on,
                )
            )

    def letters(self) -> list[LetterRecord]:
        return list(self._letters)


class RepositoryActivity:
    """Activity computed from an in-memory repository's lines and current findings (the
    in-memory path; the SQLite and DynamoDB states keep the aggregates themselves)."""

    def __init__(self, repo: InMemoryRepository, kb: KnowledgeBase) -> None:
        self.repo = repo
        self.kb = kb

    def activity(self) -> list[ActivityAggregate]:
        current = self.repo.all_current_findings()
        return activity_from_lines(self.repo.lines.values(), flagged_line_ids(current), self.kb)


class StateBatches:
    """Batch records of the SQLite state (rxguard.local.state: the `batches` table, each
    with its Finalize report); rejected lines from the report's `rejected_key` file."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def _records(self) -> list[tuple[BatchRecord, dict[str, Any]]]:
        out = []
        for row in self.state.batches().all():
            report = dict(row.get("report") or {})
            report.setdefault("batch_id", row["batch_id"])
            report["status"] = row.get("status") or report.get("status")
            report.setdefault("started_at", row.get("started_at"))
            report.setdefault("finished_at", row.get("finished_at"))
            source = row.get("source") or {}
            report.setdefault("file", source.get("file") or source.get("key") or source.get("name"))
            out.append((BatchRecord.from_report(report), report))
        return out

    def batches(self) -> list[BatchRecord]:
        records = [record for record, _ in self._records()]
        return sorted(records, key=lambda b: (b.started_at or "", b.batch_id), reverse=True)

    def rejections(self, batch_id: str) -> list[Rejection] | None:
        """From the report's `rejected_key` when it names a file, else where the local run
        keeps them: `<state dir>/results/batches/<batch_id>/rejected.jsonl`."""
        from pathlib import Path

        from rxguard.ingest import read_rejections
        from rxguard.workflow import naming

        for record, report in self._records():
            if record.batch_id == batch_id:
                candidates = [Path(str(report["rejected_key"]))] if report.get("rejected_key") else []
                candidates.append(Path(self.state.path).parent / "results" / naming.rejected_key(batch_id))
                path = next((c for c in candidates if c.is_file()), None)
                return read_rejections(path) if path is not None else []
        return None


class StateActivity:
    """Monthly activity of the SQLite state (`SqliteRepository.load_activity` over every month it holds)."""

    def __init__(self, repo: Any) -> None:
        self.repo = repo

    def activity(self) -> list[ActivityAggregate]:
        periods = [row[0] for row in self.repo.state.read("SELECT DISTINCT period FROM lines WHERE monitored = 1")]
        return list(self.repo.load_activity(periods))


@dataclass
class ConsoleSources:
    """Everything optional the console reads; absent sources show an explanatory note."""

    batches: BatchSource | None = None
    letters: LetterSource | None = None
    activity: ActivitySource | None = None
    # audit(principal, action, subject token): every read of a patient's history
    audit: Callable[[str, str, str], None] | None = None

    @classmethod
    def for_repository(cls, repo: HistoryRepository, kb: KnowledgeBase) -> ConsoleSources:
        """In memory: computed activity and empty batch and letter lists (filled by
        rxguard.console.demo). The SQLite state (a repository with `.state` and
        `load_activity`): its batch records and activity."""
        if isinstance(repo, InMemoryRepository):
            return cls(batches=MemoryBatches(), letters=MemoryLetters(), activity=RepositoryActivity(repo, kb))
        state = getattr(repo, "state", None)
        if state is not None and hasattr(repo, "load_activity") and hasattr(state, "batches"):
            return cls(batches=StateBatches(state), letters=None, activity=StateActivity(repo))
        return cls()
