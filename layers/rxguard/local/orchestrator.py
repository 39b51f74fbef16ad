"""The in-process orchestrator of the local deployment (docs/local.md).

It runs the ClaimBatch steps of `statemachines/claim_batch.asl.json` by calling the same
logic functions the Lambda handlers call (`rxguard.workflow`), with the same payload
models, over local adapters: `LocalObjects` for the buckets, a `Backend` for the tables
and the outbox. Per batch: Prepare -> Screen (chunks over a process pool; trace-code
scopes settled once all chunks recorded their sales) -> ScreenInstitutions; once every
batch of the run is screened: Notify -> Finalize per batch (Notify re-reads each finding,
so nothing a later file superseded is alerted), corrections, then the outbox is drained.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import traceback
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from rxguard.alerts.outbox import Outbox, OutboxEntry, record_all
from rxguard.alerts.schema import AlertMessage
from rxguard.alerts.settings import AlertSettings
from rxguard.alerts.sink import NotificationSink
from rxguard.config import Settings
from rxguard.errors import TransientError
from rxguard.ingest.partition import (
    ChunkTask,
    NormalizeTask,
    PartitionChunks,
    SerialMapper,
    TaskMapper,
    TaskOutcome,
    chunk_partition,
    normalize_task,
)
from rxguard.kb import KnowledgeBase, Phase, get_knowledge_base
from rxguard.local.backend import Backend, BackendSpec, open_backend
from rxguard.local.objects import InputFiles, LocalObjects
from rxguard.local.state import LineRows, SqliteRepository
from rxguard.local.workers import exit_with, release_memory, tune_gc, tuned_gc, worker_context
from rxguard.models import ClaimLine, Finding
from rxguard.repository import FindingChanges, HistoryRepository, TraceSale
from rxguard.scope import Scope
from rxguard.workflow import naming
from rxguard.workflow.contract import (
    ChunkFindings,
    ChunkRequest,
    ChunkResult,
    ChunkSupersessions,
    FinalizeRequest,
    FinalizeResult,
    InstitutionsRequest,
    NotifyRequest,
    PrepareOutput,
    PrepareRequest,
    ok_results,
)
from rxguard.workflow.finalize import finalize_batch
from rxguard.workflow.institutions import screen_institutions
from rxguard.workflow.naming import S3ObjectRef
from rxguard.workflow.notify import notify_chunks
from rxguard.workflow.prepare import prepare_object
from rxguard.workflow.screen import screen_chunk
from rxguard.workflow.settings import WorkflowSettings

LOCAL_BUCKET = "local"  # the "bucket" of a local file: the batch id hashes bucket, name and content
TRACES = "traces"  # pseudo chunk key of the trace-code settlement results
SETTLE_SLICE = 20_000  # trace codes settled per transaction after the Map
CHUNK_ATTEMPTS = 3  # the ASL retries a chunk's TransientError (4 attempts on AWS, 3 here)

# (step, payload model in, payload model out): what the parity test compares with the ASL
StepLog = list[tuple[str, str, str]]


# ------------------------------------------------------------------ worker side
class DeferTraceScopes(HistoryRepository):
    """The repository a chunk screens against: everything passes through, except that the
    trace-code scopes are not reconciled here (a code's sales may be spread over chunks
    screened at the same moment); the codes are kept for the settlement after the Map."""

    defers_trace_scopes = True

    def __init__(self, inner: HistoryRepository, *, spool: bool = False) -> None:
        """`spool`: lines are not written here but kept in `spooled` for the orchestrator to
        write (`SqliteRepository.spool_lines`; a repository that cannot spool writes them)."""
        self.inner = inner
        self.codes: set[str] = set()
        self.spooled: LineRows | None = LineRows() if spool and isinstance(inner, SqliteRepository) else None

    def load_history(self, psn_nos: Collection[str]) -> dict[str, list[ClaimLine]]:
        return self.inner.load_history(psn_nos)

    def load_trace_sales(self, codes: Collection[str]) -> dict[str, list[TraceSale]]:
        return self.inner.load_trace_sales(codes)  # screen_lines does not ask: defers_trace_scopes

    def record_lines(self, lines: Sequence[ClaimLine], bodies: Mapping[str, str] | None = None) -> list[ClaimLine]:
        if self.spooled is None or not isinstance(self.inner, SqliteRepository):
            return self.inner.record_lines(lines, bodies)
        fresh, rows = self.inner.spool_lines(lines, bodies)
        self.spooled.lines += rows.lines
        self.spooled.sales += rows.sales
        return fresh

    def load_findings(self, scopes: Collection[str]) -> dict[str, list[Finding]]:
        return self.inner.load_findings(scopes)

    def defer_trace_codes(self, codes: Collection[str]) -> None:
        self.codes.update(codes)

    def replace_findings(self, scope: str, findings: Sequence[Finding]) -> FindingChanges:
        return self.replace_many({scope: findings})

    def replace_many(self, by_scope: Mapping[str, Sequence[Finding]]) -> FindingChanges:
        kept: dict[str, Sequence[Finding]] = {}
        for scope, findings in by_scope.items():
            if scope.startswith("trace:"):
                self.codes.add(scope.removeprefix("trace:"))
            else:
                kept[scope] = findings
        return self.inner.replace_many(kept) if kept else FindingChanges()


@dataclass
class WorkerContext:
    kb: KnowledgeBase
    backend: Backend
    results: LocalObjects
    # the lines spooled by the workers and not yet written by the orchestrator (a shared
    # counter; docs/local.md, The orchestrator writes lines while it keeps up); None: lines
    # are written at once
    backlog: Any = None


# A worker spools its chunk's lines while the orchestrator has fewer than this many left to
# write; past it (the orchestrator's writes falling behind, as at 1M lines, where an insert
# into the larger indexes costs ~40 µs), the worker writes its own and memory stays bounded.
SPOOL_BACKLOG = 5000


_WORKER: dict[str, WorkerContext] = {}


def _init_worker(
    spec: BackendSpec,
    results_root: str,
    rules_dir: str | None,
    phase: str,
    log: str | None,
    orchestrator: int,
    backlog: Any,
) -> None:
    exit_with(orchestrator)  # a killed run leaves no worker behind
    if log is not None:  # the steps' JSON logs go where the run's go, not to the terminal
        from rxguard.observability import logger

        handler: Any = logger.registered_handler
        handler.setStream(open(log, "a", encoding="utf-8"))  # noqa: SIM115 - lives as long as the worker
    _WORKER["ctx"] = WorkerContext(
        kb=get_knowledge_base(Path(rules_dir) if rules_dir else None, Phase(phase)),
        backend=open_backend(spec),
        results=LocalObjects(Path(results_root)),
        backlog=backlog,
    )
    tune_gc()


def chunk_repository(ctx: WorkerContext, writer: str) -> DeferTraceScopes:
    """The repository a chunk screens against: it spools the chunk's lines for the
    orchestrator while the orchestrator's backlog is under SPOOL_BACKLOG, else writes them."""
    spool = ctx.backlog is not None and ctx.backlog.value < SPOOL_BACKLOG
    return DeferTraceScopes(ctx.backend.repository(writer=writer), spool=spool)


def screen_one(event: dict[str, Any]) -> tuple[dict[str, Any], str | None, int, LineRows | None]:
    """The ScreenChunk task: `screen_chunk` with the ASL's Retry (TransientError) and
    Catch (`{chunk_key, ok: false, error}`). Returns the Map item's output; where the trace
    codes the chunk deferred are written (beside the chunk, one a line) and how many: the
    orchestrator does not hold a batch's codes (800,000 at 1M lines); and the rows of the
    chunk's new lines, for the orchestrator to write (None: written here)."""
    ctx = _WORKER["ctx"]
    request = ChunkRequest.model_validate(event)
    error = "States.TaskFailed"
    for attempt in range(CHUNK_ATTEMPTS):
        writer = f"{request.batch_id[:16]}-{request.index}"
        repo = chunk_repository(ctx, writer)
        try:
            result = screen_chunk(request, results=ctx.results, repo=repo, kb=ctx.kb)
            codes_key = f"{request.chunk_key}.codes" if repo.codes else None
            if codes_key is not None:
                ctx.results.put_bytes(codes_key, "\n".join(sorted(repo.codes)).encode("utf-8"), "text/plain")
            if repo.spooled is not None:  # (counted once handed on: the orchestrator subtracts them)
                with ctx.backlog.get_lock():
                    ctx.backlog.value += len(repo.spooled.lines)
            return result.model_dump(mode="json"), codes_key, len(repo.codes), repo.spooled
        except TransientError:
            error = "TransientError"
            time.sleep(0.2 * (attempt + 1))
        except Exception as exc:  # the ASL's Catch on ScreenChunk: the chunk fails, the batch goes on
            error = type(exc).__name__
            traceback.print_exc()
            break
    return {"chunk_key": request.chunk_key, "ok": False, "error": error}, None, 0, None


LETTER_SLICE = 16  # letters a worker task builds and renders (377 letters at 100k lines: 24 tasks)


def html_only(letter: Any, settings: AlertSettings) -> tuple[str, bytes | None]:
    """A letter's HTML; its PDF is rendered after Notify, from the stored HTML (or on demand)."""
    from rxguard.letters.render import render_html

    return render_html(letter, settings.templates_dir), None


def letter_renderer(inline: bool) -> Callable[[Any, AlertSettings], tuple[str, bytes | None]]:
    """How a run renders a letter: HTML and PDF with `pdf="inline"` (no CLI flag sets it), else HTML only."""
    from rxguard.letters import render_letter

    return render_letter if inline else html_only


def letters_part(task: tuple[Sequence[Any], AlertSettings, bool, str]) -> list[Any]:
    """Notify's letters in a worker: build and render a slice of `LetterJob`s (HTML; the PDF
    too with `pdf="inline"`) with the worker's knowledge base, and store their documents
    under the output directory `out` (as `OutboxSink.put_letter` would). The letters come
    back without their HTML and PDF (None: stored), for Notify to announce in order."""
    from rxguard.letters import build_and_render, letter_documents

    jobs, settings, inline, out = task
    letters = LocalObjects(Path(out))
    stored = []
    for letter, html, pdf in build_and_render(jobs, _WORKER["ctx"].kb, settings, letter_renderer(inline)):
        for _, key, body, content_type in letter_documents(letter, html, pdf):
            letters.put_bytes(key, body, content_type)
        stored.append((letter, None, None))
    return stored


def normalize_part(task: NormalizeTask) -> TaskOutcome:
    """Prepare's normalization of one task of records, in a worker (ingest.partition)."""
    return normalize_task(task, _WORKER["ctx"].kb)


def bounded_map[In, Out](pool: Executor, fn: Callable[[In], Out], items: Iterable[In], ahead: int) -> Iterator[Out]:
    """`fn` over `items` on the pool, results in order, at most `ahead` submitted and not
    yet taken (Executor.map would read the whole input first: a 1M-line file in memory)."""
    pending: deque[Future[Out]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


TRIM_EVERY = 16  # Prepare tasks between two `release_memory` (each ~1,000-3,000 lines)


@dataclass(frozen=True)
class PoolMapper:
    """Prepare's normalization and chunking tasks over the worker pool (ingest.TaskMapper);
    `spent(cpu, pid)` is told the CPU each task took in its worker."""

    pool: Executor
    ahead: int
    spent: Callable[[float, int], None]
    # A server's disk is not Lambda's: the spill is plain text (level 0). Compressing it
    # cost a sixth of Prepare's CPU (callgrind, 10k lines: 5.38 -> 4.94 G instructions) and
    # saved little disk: the chunk files it becomes are plain and as large (peak disk of a
    # 100k-line run: 58 MB at level 1, 68 MB plain; the input is 25 MB).
    spill_level: int = 0

    def _map[T, R](self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        for n, (result, cpu, pid) in enumerate(bounded_map(self.pool, partial(timed, fn), tasks, self.ahead), 1):
            self.spent(cpu, pid)
            yield result
            if n % TRIM_EVERY == 0:  # the tasks' and outcomes' buffers, freed, back to the system
                release_memory()

    def normalize(self, tasks: Iterable[NormalizeTask]) -> Iterator[TaskOutcome]:
        return self._map(normalize_part, tasks)

    def chunk(self, tasks: Iterable[ChunkTask]) -> Iterator[PartitionChunks]:
        return self._map(chunk_partition, tasks)


def code_part(code: str, parts: int) -> int:
    """Which of `parts` settlement tasks takes a trace code (a stable hash: CRC-32, which
    spreads the codes evenly and costs a third of a blake2b digest; each task hashes every
    code of the batch, 80,000 at 100k lines)."""
    return zlib.crc32(code.encode()) % parts


def settle_traces(event: dict[str, Any]) -> dict[str, Any]:
    """Reconcile the given trace codes over all their recorded sales (every chunk of the
    batch has recorded its own by now) and write the changes as one more result file."""
    from rxguard.screening import RECORDING_SCENES, engine_for

    ctx = _WORKER["ctx"]
    batch_id, part, parts = str(event["batch_id"]), int(event["part"]), int(event["parts"])
    mine: set[str] = set()
    for key in event["keys"]:  # the codes each chunk deferred; this part takes its share
        text = ctx.results.get_bytes(str(key)).decode("utf-8")
        mine.update(code for code in text.split("\n") if code and (parts == 1 or code_part(code, parts) == part))
    codes = sorted(mine)
    repo = ctx.backend.repository(writer=f"{batch_id[:16]}-t{part}")
    engine = engine_for(ctx.kb, RECORDING_SCENES)
    changes = FindingChanges()
    owners: set[str] = set()
    cited: set[str] = set()  # the evidence of what changed: the lines the result carries
    for start in range(0, len(codes), SETTLE_SLICE):  # memory bounded whatever the batch's codes
        some = codes[start : start + SETTLE_SLICE]
        # most codes were sold once: no finding to judge (replace_many supersedes any they held)
        resold = repo.resold_codes(some)
        sales = repo.load_trace_sales(resold) if resold else {}
        by_scope = {
            str(Scope.trace(code)): engine.evaluate_trace_code(code, sales[code]) if code in resold else []
            for code in some
        }
        step = repo.replace_many(by_scope)  # the SQLite state: one transaction for the slice
        changes.merge(step)
        step_cited = {i for f in [*step.new, *step.updated] for i in f.evidence}
        owners.update(s.psn_no for found in sales.values() for s in found if s.line_id in step_cited)
        cited |= step_cited
    lines = [x for h in (repo.load_history(sorted(owners)) if owners else {}).values() for x in h if x.line_id in cited]
    chunk_key = f"{TRACES}-{part:03d}"
    found = ChunkFindings.of_changes(
        chunk_key,
        changes,
        institutions={x.fixmedins_code: x.fixmedins_name for x in lines if x.fixmedins_name},
        evidence_lines=lines,
    )
    key = naming.result_key(batch_id, chunk_key)
    ctx.results.put_json(key, found.model_dump(mode="json"))
    return ChunkResult(
        chunk_key=chunk_key, lines=0, recorded=0, duplicates=0, findings=found.counts(), result_key=key
    ).model_dump(mode="json")


class InProcess(Executor):
    """A one-worker "pool" in this process (tests, the memory backend, --workers 1)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


# ------------------------------------------------------------------ orchestrator side
@dataclass
class BatchRun:
    """One input file and what became of it."""

    path: Path
    key: str
    batch_id: str = ""
    status: str = "NOT STARTED"
    state: dict[str, Any] = field(default_factory=dict)  # the execution state, as the ASL carries it
    report: dict[str, Any] | None = None
    finalized: FinalizeResult | None = None
    skip_notify: bool = False  # no chunk: the ASL goes from Prepare straight to Finalize


@dataclass
class RunResult:
    batches: list[BatchRun]
    alerts: dict[str, int]  # alerts delivered, by message type
    letters: int  # letter announcements delivered
    corrections: int
    interrupted: list[str]
    cpu_seconds: float
    wall_seconds: float
    steps: StepLog
    phases: dict[str, dict[str, float]] = field(default_factory=dict)


class Progress:
    """What the orchestrator reports as it goes; the CLI shows it (rich), tests ignore it."""

    def batch(self, run: BatchRun, message: str) -> None: ...

    def lines_read(self, n: int) -> None: ...

    def lines_screened(self, n: int) -> None: ...


@dataclass
class LocalOrchestrator:
    backend: Backend
    results: LocalObjects  # the results "bucket": chunk files, manifests, step results (in the state dir)
    out: Path  # where letters go (out/letters/<batch_id>/...)
    kb: KnowledgeBase
    settings: Settings = field(default_factory=Settings)
    alert_settings: AlertSettings = field(default_factory=AlertSettings)
    workers: int = 1
    progress: Progress = field(default_factory=Progress)
    steps: StepLog = field(default_factory=list)
    log_path: str | None = None  # where worker processes write the steps' logs
    pdf: str = "parallel"  # letters' PDFs: "parallel" after Notify, "inline" in Notify, "on-demand" (HTML only)
    pdf_jobs: list[tuple[str, str, str]] = field(default_factory=list)  # (HTML key, PDF key, number) to render
    worker_cpu_seconds: float = 0.0  # CPU of the worker processes' tasks
    crash_after_chunks: int | None = None  # tests: die (os._exit) once this many chunks are screened
    backlog: Any = None  # with worker processes: the lines they spooled and this one has not written
    _chunks_done: int = 0
    phases: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> wall, main and worker CPU
    run_id: str = field(default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:12]}")

    # -------------------------------------------------------------- the run
    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Time a phase of the run: wall, the CPU of this process (the serial part) and of
        the worker processes' tasks. On an idle machine a phase takes about
        max(main, (main + workers) / cores) seconds: `bench.local` reports that estimate."""
        wall, cpu, workers = time.monotonic(), time.process_time(), self.worker_cpu_seconds
        try:
            yield
        finally:
            got = self.phases.setdefault(
                name, {"wall_seconds": 0.0, "main_cpu_seconds": 0.0, "worker_cpu_seconds": 0.0}
            )
            got["wall_seconds"] = round(got["wall_seconds"] + time.monotonic() - wall, 3)
            got["main_cpu_seconds"] = round(got["main_cpu_seconds"] + time.process_time() - cpu, 3)
            got["worker_cpu_seconds"] = round(got["worker_cpu_seconds"] + self.worker_cpu_seconds - workers, 3)

    def run(self, files: Sequence[Path]) -> RunResult:
        with tuned_gc():
            return self._run(files)

    def _run(self, files: Sequence[Path]) -> RunResult:
        cpu0, wall0 = time.process_time(), time.monotonic()
        interrupted = self.mark_interrupted()
        batches = self._name(files)
        inputs = InputFiles({b.key: b.path for b in batches})
        seen = self._known_contents()
        with self._pool() as pool:
            for batch in batches:
                self._screen_batch(batch, inputs, pool, seen)
            sink = OutboxSink(self.backend.outbox(), LocalObjects(self.out))
            for batch in batches:
                if batch.status == "SCREENED":
                    with self._phase("notify"):
                        self._notify(batch, sink, pool)
                        release_memory()
                if batch.status in ("SCREENED", "ERROR"):
                    with self._phase("finalize"):
                        self._finalize(batch)
        if self.pdf == "parallel":
            with self._phase("pdfs"):
                self.render_pdfs()
        with self._phase("deliver"):
            corrections = self._corrections(batches)
            alerts, letters = deliver_pending(self.backend.outbox(), self.out)
        cpu = time.process_time() - cpu0 + self.worker_cpu_seconds
        return RunResult(
            batches,
            alerts,
            letters,
            corrections,
            interrupted,
            round(cpu, 3),
            round(time.monotonic() - wall0, 3),
            self.steps,
            self.phases,
        )

    def mark_interrupted(self) -> list[str]:
        """Batches left RUNNING by a run that was killed become FAILED, with the reason
        (the CLI holds the state's run lock, so no other run is using them)."""
        store = self.backend.batch_records()
        done = []
        for item in self.backend.running_batches():
            batch_id = str(item["batch_id"])
            reason = f"interrupted: left RUNNING by local run {item.get('execution_id') or '?'}"
            report = {"status": "FAILED", "error": {"error": "Interrupted", "cause": reason}}
            store.finish(batch_id, "FAILED", report, naming.report_key(batch_id), datetime.now(UTC))
            done.append(batch_id)
        return done

    def _release_partial(self, batch_id: str) -> None:
        """A PARTIAL batch given again is screened again (its missing chunks, the rest
        counts once): its record becomes FAILED, which Prepare's claim takes over."""
        store = self.backend.batch_records()
        record = store.get(batch_id)
        if record is not None and record.get("status") == "PARTIAL":
            report = {**(record.get("report") or {}), "status": "FAILED", "rerun": "given again after PARTIAL"}
            store.finish(batch_id, "FAILED", report, str(record.get("report_key") or ""), datetime.now(UTC))

    def _name(self, files: Sequence[Path]) -> list[BatchRun]:
        used: set[str] = set()
        out = []
        for n, path in enumerate(files, start=1):
            key = path.name if path.name not in used else f"{n:03d}-{path.name}"
            used.add(key)
            out.append(BatchRun(path=path, key=key))
        return out

    def _pool(self) -> Executor:
        spec = self.backend.spec
        rules_dir = str(self.settings.rules_dir) if self.settings.rules_dir else None
        if self.workers > 1 and spec is not None:
            context = worker_context()
            self.backlog = context.Value("q", 0)  # lines spooled, not yet written (SPOOL_BACKLOG)
            pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=context,
                initializer=_init_worker,
                initargs=(
                    spec,
                    str(self.results.root),
                    rules_dir,
                    self.settings.phase.value,
                    self.log_path,
                    os.getpid(),
                    self.backlog,
                ),
            )
            for _ in range(self.workers):  # start the workers now, while this process reads the file
                pool.submit(os.getpid)
            return pool
        _WORKER["ctx"] = WorkerContext(kb=self.kb, backend=self.backend, results=self.results)
        return InProcess()

    def _log(self, step: str, request: object, output: object) -> None:
        self.steps.append((step, type(request).__name__, type(output).__name__))

    def _workflow_settings(self) -> WorkflowSettings:
        return WorkflowSettings(
            results_bucket="local-results",
            purchases_table="local",
            trace_codes_table="local",
            findings_table="local",
            batches_table="local",
            core=self.settings,
        )

    # -------------------------------------------------------------- steps
    def _known_contents(self) -> dict[str, str]:
        """Content digest -> the name a file of that content was screened under (batches
        not FAILED): the same bytes under another name are the same batch."""
        known: dict[str, str] = {}
        for record in self.backend.all_batches():
            source = record.get("source") or {}
            if record.get("status") != "FAILED" and source.get("bucket") == LOCAL_BUCKET and source.get("etag"):
                known.setdefault(str(source["etag"]), str(source["key"]))
        return known

    def _screen_batch(self, batch: BatchRun, inputs: InputFiles, pool: Executor, seen: dict[str, str]) -> None:
        digest = file_digest(batch.path)
        name = seen.setdefault(digest, batch.key)  # the name its content was first screened under
        if name != batch.key:
            inputs.files[name] = batch.path.resolve()
        ref = S3ObjectRef(bucket=LOCAL_BUCKET, key=name, etag=digest, size=batch.path.stat().st_size)
        batch.batch_id = naming.batch_id_for(ref)
        execution_id = f"local:{self.run_id}:{naming.execution_name(ref)}"
        request = PrepareRequest(source=ref, execution_id=execution_id)
        self._release_partial(batch.batch_id)
        try:
            with self._phase("prepare"):
                prepared = prepare_object(
                    request,
                    ingest=inputs,
                    results=self.results,
                    batches=self.backend.batch_records(),
                    kb=self.kb,
                    settings=self._workflow_settings(),
                    workdir=self.results.root,
                    mapper=self._prepare_mapper(pool),
                )
        except Exception as exc:  # Prepare's Catch -> RecordFailure
            self._fail(batch, {"detail": {"bucket": {"name": LOCAL_BUCKET}, "object": {"key": batch.key}}}, exc)
            return
        self._log("Prepare", request, prepared)
        batch.state = prepared.model_dump(mode="json")
        if prepared.duplicate:  # IsDuplicate -> AlreadyProcessed
            batch.status = "DUPLICATE"
            self.progress.batch(batch, "already processed (same file): nothing to do")
            return
        release_memory()  # the rows that came through the workers' pipes
        self.progress.lines_read(prepared.lines_read)
        self.progress.batch(batch, f"prepared: {prepared.lines_read} lines, {prepared.chunk_count} chunks")
        try:
            if prepared.chunk_count == 0:  # IsDuplicate: no chunk -> Finalize
                batch.status = "SCREENED"
                batch.state["chunk_results"] = []
                batch.skip_notify = True
                return
            with self._phase("screen"):
                chunk_results = self._map(prepared, pool)
            inst_request = InstitutionsRequest(batch_id=prepared.batch_id, chunk_results=chunk_results)
            with self._phase("institutions"):
                inst = screen_institutions(
                    inst_request,
                    results=self.results,
                    repo=self.backend.repository(writer=f"{prepared.batch_id[:16]}-i"),  # type: ignore[arg-type]
                    kb=self.kb,
                )
            self._log("ScreenInstitutions", inst_request, inst)
        except Exception as exc:  # the Map's / ScreenInstitutions' Catch -> RecordFailure
            self._fail(batch, batch.state, exc)
            return
        batch.state["chunk_results"] = chunk_results
        batch.state["institutions"] = {"result": inst.model_dump(mode="json")}
        batch.status = "SCREENED"

    def _prepare_mapper(self, pool: Executor) -> TaskMapper | None:
        """Prepare's passes over the worker processes (in this process without them)."""
        if isinstance(pool, InProcess):
            return SerialMapper(self.kb, spill_level=PoolMapper.spill_level)
        return PoolMapper(pool, ahead=2 * self.workers, spent=self._worker_cpu)

    def _map(self, prepared: PrepareOutput, pool: Executor) -> list[dict[str, Any]]:
        """The Screen Map: one item per chunk (the ASL's ItemSelector), then the trace codes."""
        events = [
            {"batch_id": prepared.batch_id, "chunk_key": c.chunk_key, "lines": c.lines, "index": i}
            for i, c in enumerate(prepared.chunks)
        ]
        # the largest chunks first: the last ones to finish are small, so no worker waits
        # long for another's last chunk (the results keep the Map's order)
        order = sorted(range(len(events)), key=lambda n: -prepared.chunks[n].lines)
        futures = {pool.submit(timed, screen_one, events[n]): n for n in order}
        results: list[dict[str, Any] | None] = [None] * len(events)
        code_keys: list[str] = []
        deferred = 0
        lines = self.backend.repository(writer=f"{prepared.batch_id[:16]}-lines")
        for future in as_completed(futures):
            n = futures.pop(future)  # (the future holds its rows: let them go once written)
            (output, codes_key, count, rows), cpu, pid = future.result()
            del future
            self._worker_cpu(cpu, pid)
            if rows is not None:  # the chunk's lines, spooled for this process to write (docs/local.md)
                if not isinstance(lines, SqliteRepository):
                    raise TypeError(f"a worker spooled lines that {type(lines).__name__} cannot write")
                lines.write_lines(rows)
                with self.backlog.get_lock():
                    self.backlog.value -= len(rows.lines)
                del rows
            results[n] = output
            if codes_key is not None:
                code_keys.append(codes_key)
                deferred += count
            self._log(
                "ScreenChunk",
                ChunkRequest.model_validate(events[n]),
                ChunkResult.model_validate(output) if output.get("ok") else output,
            )
            self.progress.lines_screened(prepared.chunks[n].lines)
            self._chunks_done += 1
            if self.crash_after_chunks is not None and self._chunks_done >= self.crash_after_chunks:
                os._exit(137)  # tests: a run killed between chunks
        parts = max(1, min(self.workers, deferred // 2000 + 1))  # (a code in two chunks counts twice)
        event = {"batch_id": prepared.batch_id, "parts": parts, "keys": sorted(code_keys)}
        settled = [pool.submit(timed, settle_traces, {**event, "part": p}) for p in range(parts) if code_keys]
        out: list[dict[str, Any]] = [r for r in results if r is not None]
        for future in settled:
            output, cpu, pid = future.result()
            self._worker_cpu(cpu, pid)
            out.append(output)
        return out

    def _worker_cpu(self, cpu: float, pid: int) -> None:
        if pid != os.getpid():  # in this process it is in process_time() already
            self.worker_cpu_seconds += cpu

    def _notify(self, batch: BatchRun, sink: NotificationSink, pool: Executor | None = None) -> None:
        if batch.skip_notify:
            return
        request = NotifyRequest(
            batch_id=batch.batch_id,
            chunk_results=batch.state.get("chunk_results") or [],
            institutions=(batch.state.get("institutions") or {}).get("result"),
        )
        try:
            summary = notify_chunks(
                request,
                results=self.results,
                kb=self.kb,
                sink=sink,
                alert_settings=self.alert_settings,
                current=self.backend.findings,
                letters=self._letters(pool),
            )
        except Exception as exc:  # Notify's Catch -> RecordFailure
            self._fail(batch, batch.state, exc)
            return
        self._log("Notify", request, summary)
        batch.state["notify"] = {"summary": summary}

    def _letters(self, pool: Executor | None = None) -> Callable[..., Any]:
        """The letter issuer: numbers from the state's counters; HTML now, the PDF of each
        letter queued for `render_pdfs` (in parallel after Notify, or on demand). With worker
        processes, the letters are built and rendered there, LETTER_SLICE a task, while this
        process stores and announces them in order."""
        from rxguard.letters import issue_letters, letter_keys

        counters = self.backend.letter_counters()  # None: numbers of this process (the memory backend)
        inline = self.pdf == "inline"
        render = letter_renderer(inline)

        def queue_pdf(letter: Any, pdf: bytes | None) -> None:
            if pdf is None:  # rendered by `render_pdfs` from the stored HTML
                keys = letter_keys(letter)
                self.pdf_jobs.append((keys["html"], keys["pdf"], letter.number))

        if pool is not None and not isinstance(pool, InProcess):
            workers = pool

            def build(jobs: Sequence[Any], settings: AlertSettings) -> Iterator[Any]:
                out = str(self.out.resolve())  # (the workers' working directory need not be this one's)
                parts = ((jobs[i : i + LETTER_SLICE], settings, inline, out) for i in range(0, len(jobs), LETTER_SLICE))
                # a few slices ahead, not all: the letters built and not yet announced would all be held here
                for built, cpu, pid in bounded_map(workers, partial(timed, letters_part), parts, 2 * self.workers):
                    self._worker_cpu(cpu, pid)
                    for letter, html, pdf in built:  # stored by the worker (PDF too when inline)
                        if not inline:
                            queue_pdf(letter, None)
                        yield letter, html, pdf

            return partial(issue_letters, counters=counters, build=build)

        def html_now(letter: Any, settings: AlertSettings) -> tuple[str, bytes | None]:
            html, pdf = render(letter, settings)
            queue_pdf(letter, pdf)
            return html, pdf

        return partial(issue_letters, counters=counters, render=html_now)

    def render_pdfs(self) -> int:
        """Render the queued letters' PDFs from their stored HTML (over the pool)."""
        jobs, self.pdf_jobs = self.pdf_jobs, []
        if not jobs:
            return 0
        settings = self.alert_settings
        args = [
            (str(self.out / html), str(self.out / pdf), str(settings.font_path or ""), settings.issuer_name_zh, number)
            for html, pdf, number in jobs
        ]
        done, cpu = render_pdf_files(args, self.workers)
        self.worker_cpu_seconds += cpu
        return done

    def _finalize(self, batch: BatchRun) -> None:
        failed = batch.status == "ERROR"
        request = FinalizeRequest(
            mode="failed" if failed else "complete",
            batch_id=batch.batch_id or None,
            state=batch.state,
            execution_id=f"local:{self.run_id}",
        )
        result = finalize_batch(
            request,
            results=self.results,
            batches=self.backend.batch_records(),
        )
        self._log("RecordFailure" if failed else "Finalize", request, result)
        batch.finalized = result
        batch.status = result.status
        if result.report_key and self.results.exists(result.report_key):
            batch.report = self.results.get_json(result.report_key)
        if result.status == "SUCCEEDED" and batch.batch_id:
            # chunk files are intermediate patient data (on AWS the bucket expires them after 30
            # days): once the batch has succeeded nothing reads them, and a state that keeps them
            # grows by more than each input's size every month
            shutil.rmtree(self.results.path(naming.chunk_key(batch.batch_id, 0)).parent, ignore_errors=True)
        self.progress.batch(batch, f"{result.status}")

    def _fail(self, batch: BatchRun, state: dict[str, Any], exc: BaseException) -> None:
        batch.state = {**state, "error": {"Error": type(exc).__name__, "Cause": str(exc)}}
        batch.status = "ERROR"
        self.progress.batch(batch, f"failed: {type(exc).__name__}: {exc}")

    def _corrections(self, batches: Sequence[BatchRun]) -> int:
        """A correction for each finding this run superseded that was alerted before."""
        from rxguard.alerts.messages import correction

        gone: dict[str, tuple[str, Finding]] = {}
        born: set[str] = set()  # new in this run: notified only if still current, so never alerted
        for batch in batches:
            for entry in ok_results(batch.state.get("chunk_results") or []) + ok_results(
                [(batch.state.get("institutions") or {}).get("result")]
            ):
                found = ChunkSupersessions.model_validate_json(self.results.get_bytes(str(entry["result_key"])))
                born.update(f.finding_id for f in found.new)
                for f in found.superseded:
                    gone[f.finding_id] = (batch.batch_id, f)
        if not gone:
            return 0
        stored = self.backend.findings(list(gone))
        still_gone = {
            i: v
            for i, v in gone.items()
            if i not in born and (s := stored.get(i)) is not None and s.status == "superseded"
        }
        outbox = self.backend.outbox()
        alert_ids = {f"finding/{i}": i for i in still_gone}
        try:
            alerted = {alert_ids[m] for m in outbox.recorded(list(alert_ids))}
        except (NotImplementedError, AttributeError):  # fall back on the alert rule: high findings were alerted
            alerted = {
                i
                for i, (_, f) in still_gone.items()
                if f.severity.rank >= self.alert_settings.alert_min_severity.rank and not self.alert_settings.muted(f)
            }
        entries = [
            OutboxEntry(
                "alerts",
                correction(
                    f,
                    batch_id=batch_id,
                    reason="superseded: later lines of the patient or code no longer produce this finding",
                    key=self.alert_settings.pseudonym_key,
                ),
            )
            for i, (batch_id, f) in sorted(still_gone.items())
            if i in alerted
        ]
        return len(outbox.record(entries))


class OutboxSink(NotificationSink):
    """The local Notify sink: messages go into the outbox (published when the outbox is
    drained), letter documents into files."""

    def __init__(self, outbox: Outbox, letters: LocalObjects) -> None:
        self.box = outbox
        self.letters = letters

    def publish_alert(self, message: AlertMessage) -> bool:
        return bool(self.box.record([OutboxEntry("alerts", message)]))

    def publish_alerts(self, messages: Sequence[AlertMessage]) -> list[bool]:
        return record_all(self.box, "alerts", messages)

    def publish_letter(self, message: AlertMessage) -> bool:
        return bool(self.box.record([OutboxEntry("letters", message)]))

    def publish_letters(self, messages: Sequence[AlertMessage]) -> list[bool]:
        return record_all(self.box, "letters", messages)

    def put_letter(self, key: str, body: bytes, content_type: str) -> str:
        self.letters.put_bytes(key, body, content_type)
        return self.letter_uri(key)

    def letter_uri(self, key: str) -> str:
        return key  # relative to the output directory: out/letters/<batch_id>/...


def deliver_pending(outbox: Outbox, out: Path) -> tuple[dict[str, int], int]:
    """Publish every pending message (this run's and any a failed run left) by appending
    it to out/alerts.jsonl or out/letters.jsonl; each is marked sent once written. Returns
    the alerts written by message type, and the letters written (the messages themselves
    are in the files, not held here: 10,000 of them at 1M lines)."""
    import json

    from rxguard.alerts.outbox import drain

    alerts: Counter[str] = Counter()
    letters = 0
    out.mkdir(parents=True, exist_ok=True)
    files = {topic: (out / f"{topic}.jsonl").open("w", encoding="utf-8") for topic in ("alerts", "letters")}
    try:

        def deliver(entry: OutboxEntry) -> None:
            nonlocal letters
            body = entry.message.body
            row = {
                "message_id": entry.message_id,
                "topic": entry.topic,
                "subject": entry.message.subject,
                "attributes": entry.message.attributes,
                "body": body,
            }
            fh = files.get(entry.topic, files["alerts"])
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            fh.flush()
            if entry.topic == "letters":
                letters += 1
            else:
                alerts[str(body.get("message_type") if isinstance(body, Mapping) else None)] += 1

        drain(outbox, deliver)
    finally:
        for fh in files.values():
            fh.close()
    return dict(sorted(alerts.items())), letters


def render_pdf_files(jobs: Sequence[tuple[str, str, str, str, str]], workers: int) -> tuple[int, float]:
    """Render letters' PDFs from their HTML over `workers` processes; returns how many and
    the CPU seconds the worker processes spent."""
    if not jobs:
        return 0, 0.0
    if workers > 1 and len(jobs) > 1:
        context = worker_context()
        with ProcessPoolExecutor(workers, mp_context=context, initializer=exit_with, initargs=(os.getpid(),)) as pool:
            size = max(1, len(jobs) // (4 * workers))
            done = list(pool.map(timed, [render_pdf_file] * len(jobs), jobs, chunksize=size))
        return sum(r for r, _, _ in done), sum(c for _, c, pid in done if pid != os.getpid())
    return sum(map(render_pdf_file, jobs)), 0.0


def timed(fn: Callable[[Any], Any], arg: Any) -> tuple[Any, float, int]:
    """`fn(arg)` with the CPU seconds it took and the process that ran it (a worker's CPU
    is not in this process's counters: the orchestrator adds it up)."""
    start = time.process_time()
    result = fn(arg)
    return result, time.process_time() - start, os.getpid()


def render_pdf_file(job: tuple[str, str, str, str, str]) -> int:
    """One letter's PDF from its HTML (a worker process: reportlab loads once per worker)."""
    from rxguard.letters.pdf import html_to_pdf

    html_path, pdf_path, font_path, author, subject = job
    html = Path(html_path).read_text(encoding="utf-8")
    pdf = html_to_pdf(html, font_path=Path(font_path) if font_path else None, author=author, subject=subject)
    LocalObjects(Path(pdf_path).parent).put_bytes(Path(pdf_path).name, pdf, "application/pdf")
    return 1


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def iter_findings_json(backend: Backend) -> Iterator[dict[str, Any]]:
    for finding in backend.current_findings():
        yield finding.model_dump(mode="json")


def mapping_or_empty(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
