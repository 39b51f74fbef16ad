"""What the local orchestrator needs from a state, behind one small interface.

`Backend` gathers the adapters the steps take (history repository, batch store, outbox)
and the reads the orchestrator itself makes (findings by id, all current findings, the
batches left RUNNING). `MemoryBackend` keeps everything in this process (tests, the
in-memory comparison of the benchmarks); `SqliteBackend` opens the persistent state of
`rxguard.local.state` under a directory and can be re-opened by worker processes from
its `spec`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rxguard.alerts.outbox import InMemoryOutbox, Outbox
from rxguard.dynamo import BatchStore, Claim
from rxguard.engine import ActivityAggregate
from rxguard.kb import KnowledgeBase
from rxguard.models import Finding
from rxguard.repository import HistoryRepository, InMemoryRepository


@dataclass(frozen=True)
class BackendSpec:
    """Picklable: how a worker process opens the same state."""

    kind: str
    path: str


class Backend(ABC):
    location: str  # where the state lives, for people
    spec: BackendSpec | None  # None: only usable in this process

    @abstractmethod
    def repository(self, writer: str | None = None) -> HistoryRepository: ...

    @abstractmethod
    def batch_records(self) -> BatchStore: ...

    @abstractmethod
    def outbox(self) -> Outbox: ...

    @abstractmethod
    def findings(self, finding_ids: Collection[str]) -> dict[str, Finding]:
        """Stored findings by id (superseded included)."""

    @abstractmethod
    def current_findings(self) -> Iterator[Finding]:
        """Every current (not superseded) finding, by finding_id."""

    @abstractmethod
    def all_batches(self) -> list[dict[str, Any]]:
        """Every batch record (`batch_id`, `execution_id`, `status`, `source`, ...)."""

    def letter_counters(self) -> Any:
        """The letters' document numbers (`rxguard.letters.CounterStore` with kept numbers),
        None for a counter of this process (the in-memory backend)."""
        return None

    def running_batches(self) -> list[dict[str, Any]]:
        """Batch records still RUNNING."""
        return [b for b in self.all_batches() if b.get("status") == "RUNNING"]

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""


class MemoryBatchStore(BatchStore):
    """`BatchStore` semantics on a dict: first claim wins; the same execution, or a new
    one after FAILED, claims again."""

    def __init__(self) -> None:  # no DynamoDB client: every method is overridden
        self.items: dict[str, dict[str, Any]] = {}

    def claim(self, batch_id: str, execution_id: str, source: Mapping[str, str | None], now: datetime) -> Claim:
        old = self.items.get(batch_id)
        if old is not None and old["execution_id"] != execution_id and old["status"] != "FAILED":
            return Claim(False, str(old["started_at"]), str(old["execution_id"]))
        self.items[batch_id] = {
            "batch_id": batch_id,
            "execution_id": execution_id,
            "status": "RUNNING",
            "started_at": now.isoformat(),
            "source": dict(source),
        }
        return Claim(True, now.isoformat(), execution_id)

    def get(self, batch_id: str) -> dict[str, Any] | None:
        item = self.items.get(batch_id)
        return json.loads(json.dumps(item)) if item is not None else None

    def finish(self, batch_id: str, status: str, report: Mapping[str, Any], report_key: str, now: datetime) -> None:
        item = self.items.setdefault(batch_id, {"batch_id": batch_id, "execution_id": "", "started_at": ""})
        item.update(status=status, finished_at=now.isoformat(), report_key=report_key, report=dict(report))


class MemoryRepository(InMemoryRepository):
    """The in-memory repository plus the institution activity ScreenInstitutions reads,
    derived from the lines and the current findings (as the SQLite state does)."""

    def __init__(self, kb: KnowledgeBase) -> None:
        super().__init__()
        self.kb = kb

    def load_activity(self, periods: Collection[str]) -> list[ActivityAggregate]:
        from rxguard.engine import activity_from_lines, flagged_line_ids

        wanted = set(periods)
        lines = [x for x in self.lines.values() if f"{x.fee_ocur_time:%Y-%m}" in wanted]
        found = activity_from_lines(lines, flagged_line_ids(self.all_current_findings()), self.kb)
        return sorted(found, key=lambda a: (a.subject_type, a.code, a.period))


class MemoryBackend(Backend):
    """Everything in this process: one repository shared by all steps."""

    spec = None

    def __init__(self, kb: KnowledgeBase) -> None:
        self.location = "memory (nothing kept after the run)"
        self.repo = MemoryRepository(kb)
        self.batches = MemoryBatchStore()
        self._outbox = InMemoryOutbox()

    def repository(self, writer: str | None = None) -> HistoryRepository:
        return self.repo

    def batch_records(self) -> BatchStore:
        return self.batches

    def outbox(self) -> Outbox:
        return self._outbox

    def findings(self, finding_ids: Collection[str]) -> dict[str, Finding]:
        return {i: self.repo.findings[i] for i in finding_ids if i in self.repo.findings}

    def current_findings(self) -> Iterator[Finding]:
        return iter(self.repo.all_current_findings())

    def all_batches(self) -> list[dict[str, Any]]:
        return [b for b in map(self.batches.get, self.batches.items) if b is not None]


def open_backend(spec: BackendSpec) -> Backend:
    if spec.kind == "sqlite":
        return SqliteBackend(Path(spec.path))
    raise ValueError(f"unknown state kind {spec.kind!r}")


class SqliteBackend(Backend):
    """The persistent state under a directory (`rxguard.local.state`, SQLite in WAL mode)."""

    def __init__(self, directory: Path, *, cache_mb: int | None = None) -> None:
        """`cache_mb`: SQLite's page cache of each connection this process opens (None: the
        state's default, at which the worker processes open their own)."""
        from rxguard.local.state import DEFAULT_CACHE_MB, State

        self.directory = Path(directory)
        self.state = State.open(self.directory, cache_mb=DEFAULT_CACHE_MB if cache_mb is None else cache_mb)
        self.location = str(self.directory.resolve())
        self.spec = BackendSpec("sqlite", str(self.directory))
        self._batches = self.state.batches()
        self._outbox = self.state.outbox()

    def repository(self, writer: str | None = None) -> HistoryRepository:
        return self.state.repository()

    def batch_records(self) -> BatchStore:
        return self._batches  # type: ignore[return-value]  # BatchStore semantics, not its class

    def letter_counters(self) -> Any:
        return self.state  # next_counter, kept, keep: numbers run on across runs (docs/letters.md)

    def outbox(self) -> Outbox:
        return self._outbox

    def findings(self, finding_ids: Collection[str]) -> dict[str, Finding]:
        wanted = sorted(set(finding_ids))
        out: dict[str, Finding] = {}
        repo = self.state.repository()
        for start in range(0, len(wanted), 5000):  # one query per 5,000 ids
            out.update(repo.get_findings(wanted[start : start + 5000]))
        return out

    def current_findings(self) -> Iterator[Finding]:
        return self.state.repository().iter_current_findings()

    def all_batches(self) -> list[dict[str, Any]]:
        return self._batches.all()

    def close(self) -> None:
        self.state.close()
