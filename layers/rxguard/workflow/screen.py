"""Screen one chunk: read its lines, screen them against the stored history (the engine
records lines idempotently and reconciles findings), keep the changes for Notify/Finalize."""

from __future__ import annotations

from rxguard.dynamo import DynamoRepository, ResultStore, activity_periods
from rxguard.engine.rules import trigger_lines
from rxguard.ingest import read_chunk_bodies
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding, Scene
from rxguard.observability import logger
from rxguard.repository import FindingChanges, HistoryRepository
from rxguard.screening import screen_lines
from rxguard.workflow import naming
from rxguard.workflow.contract import ChunkFindings, ChunkRequest, ChunkResult
from rxguard.workflow.institutions import flag_deltas


def screen_chunk(
    request: ChunkRequest, *, results: ResultStore, repo: HistoryRepository, kb: KnowledgeBase
) -> ChunkResult:
    key = naming.result_key(request.batch_id, request.chunk_key)
    started = f"{key}.started"
    lost = results.exists(started) and not results.exists(key)  # an earlier attempt died mid-way
    if not lost:
        results.put_bytes(started, b"", "text/plain")
    lines, bodies = read_chunk_bodies(results.get_bytes(request.chunk_key))
    outcome = screen_lines(lines, repo, kb, scene=Scene.POST, bodies=bodies)
    changes = outcome.changes
    recovered: list[Finding] = []
    if lost:
        ids = {x.line_id for x in lines}
        listed = {f.finding_id for f in [*changes.new, *changes.updated, *changes.superseded]}
        current = [f for found in repo.load_findings(outcome.scopes).values() for f in found]
        recovered = sorted(
            (f for f in current if f.finding_id not in listed and ids & set(f.evidence)), key=lambda f: f.finding_id
        )
    periods = activity_periods(outcome.recorded)
    if isinstance(repo, DynamoRepository):  # keep institution activity (the in-memory path derives it)
        periods |= _update_flags(repo, changes, recovered)
    found = ChunkFindings(
        chunk_key=request.chunk_key,
        recorded=len(outcome.recorded),
        duplicates=len(outcome.duplicates),
        new=list(changes.new),
        updated=list(changes.updated),
        superseded=list(changes.superseded),
        unchanged=changes.unchanged,
        institutions={x.fixmedins_code: x.fixmedins_name for x in lines if x.fixmedins_name},
        evidence_lines=_cited(lines, [*changes.new, *changes.updated, *recovered]),
        activity_periods=sorted(periods),
        recovered=recovered,
    )
    if results.exists(key):  # a retried chunk: keep what the earlier attempt already reported
        found = _merge(ChunkFindings.model_validate(results.get_json(key)), found)
    results.put_json(key, found.model_dump(mode="json"))
    counts = {
        "new": len(found.new),
        "updated": len(found.updated),
        "superseded": len(found.superseded),
        "unchanged": found.unchanged,
    }
    logger.info("chunk screened", extra={"chunk_key": request.chunk_key, "lines": len(lines), **counts})
    return ChunkResult(
        chunk_key=request.chunk_key,
        lines=len(lines),
        recorded=found.recorded,
        duplicates=len(lines) - found.recorded,
        findings=counts,
        result_key=key,
    )


def _update_flags(repo: DynamoRepository, changes: FindingChanges, recovered: list[Finding] | None = None) -> set[str]:
    """Flag changes of the chunk's reconciliation; after a lost attempt, the recovered
    findings are treated as changed too (set ADD/DELETE is idempotent)."""
    if recovered:
        changes = FindingChanges(new=changes.new, updated=[*changes.updated, *recovered], superseded=changes.superseded)
    touched = {i for f in [*changes.new, *changes.updated, *changes.superseded] for i in trigger_lines(f)}
    lines = repo.resolve_lines(touched)
    added, removed = flag_deltas(changes, repo.cached_findings(), lines)
    repo.update_flags(added, removed)
    return {period for period, _ in [*added, *removed]}


def _cited(lines: list[ClaimLine], findings: list[Finding]) -> list[ClaimLine]:
    cited = {line_id for f in findings for line_id in f.evidence}
    return [x for x in lines if x.line_id in cited]


def _merge(earlier: ChunkFindings, later: ChunkFindings) -> ChunkFindings:
    def union(a: list[Finding], b: list[Finding]) -> list[Finding]:
        by_id = {f.finding_id: f for f in a}
        by_id.update({f.finding_id: f for f in b})
        return sorted(by_id.values(), key=lambda f: f.finding_id)

    new = union(earlier.new, later.new)
    new_ids = {f.finding_id for f in new}
    return ChunkFindings(
        chunk_key=later.chunk_key,
        recorded=earlier.recorded + later.recorded,
        duplicates=later.duplicates - earlier.recorded if later.duplicates >= earlier.recorded else later.duplicates,
        new=new,
        updated=[f for f in union(earlier.updated, later.updated) if f.finding_id not in new_ids],
        superseded=union(earlier.superseded, later.superseded),
        unchanged=max(0, later.unchanged - len(earlier.new)),
        institutions={**earlier.institutions, **later.institutions},
        evidence_lines=list({x.line_id: x for x in [*earlier.evidence_lines, *later.evidence_lines]}.values()),
        activity_periods=sorted(set(earlier.activity_periods) | set(later.activity_periods)),
        recovered=union(earlier.recovered, later.recovered),
    )
