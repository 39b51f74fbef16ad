"""institution-outlier in the workflow: the DynamoDB path keeps per unit-month activity
(monitored lines, region and institution mix, the set of flagged lines) and, once a batch's
chunks are screened, re-evaluates the months it touched (and the following months, whose
growth compares with them) against all peers of those months.

- `flag_deltas` (per chunk, after screening): which lines became / stopped being flagged
  (trigger lines of medium/high dispensing findings), by unit-month.
- `screen_institutions` (the ScreenInstitutions state): evaluate, replace the findings of
  every unit of those months, keep their findings of other months.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Protocol

from rxguard.dynamo import ActivityKey, ResultStore, activity_units
from rxguard.engine import flagged_line_ids, trigger_lines
from rxguard.engine.institutions import ActivityAggregate
from rxguard.engine.rules.institution_outlier import InstitutionOutlierParameters, affected_periods
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding
from rxguard.observability import logger
from rxguard.repository import FindingChanges
from rxguard.scope import Scope
from rxguard.screening import institution_findings
from rxguard.workflow import naming
from rxguard.workflow.contract import (
    INSTITUTIONS,
    ChunkCounts,
    ChunkFindings,
    ChunkResult,
    InstitutionsRequest,
    ok_results,
)


def flag_deltas(
    changes: FindingChanges, current: Iterable[Finding], lines: Mapping[str, ClaimLine]
) -> tuple[dict[ActivityKey, set[str]], dict[ActivityKey, set[str]]]:
    """(added, removed) flagged line ids by unit-month, from a reconciliation's changes.
    `current` are all current findings of the scopes reconciled (a line stays flagged while
    any of them blames it); `lines` resolves line ids to lines."""
    now_flagged = flagged_line_ids(current)
    touched = {i for f in [*changes.new, *changes.updated, *changes.superseded] for i in trigger_lines(f)}
    added: dict[ActivityKey, set[str]] = defaultdict(set)
    removed: dict[ActivityKey, set[str]] = defaultdict(set)
    for line_id in sorted(touched):
        line = lines.get(line_id)
        if line is None:
            continue
        target = added if line_id in now_flagged else removed
        for unit in activity_units(line):
            target[unit].add(line_id)
    return dict(added), dict(removed)


def next_period(period: str) -> str:
    year, month = int(period[:4]), int(period[5:7])
    return f"{year + 1:04d}-01" if month == 12 else f"{year:04d}-{month + 1:02d}"


class ActivityRepository(Protocol):
    """What ScreenInstitutions needs of a repository: the DynamoDB one keeps the activity
    as aggregates, the local state derives it from the stored lines."""

    def load_activity(self, periods: Collection[str]) -> list[ActivityAggregate]: ...

    def load_findings(self, scopes: Collection[str]) -> dict[str, list[Finding]]: ...

    def replace_findings(self, scope: str, findings: Sequence[Finding]) -> FindingChanges: ...

    def replace_many(self, by_scope: Mapping[str, Sequence[Finding]]) -> FindingChanges: ...

    def flush(self) -> None: ...


def screen_institutions(
    request: InstitutionsRequest, *, results: ResultStore, repo: ActivityRepository, kb: KnowledgeBase
) -> ChunkResult:
    touched: set[str] = set()
    for entry in ok_results(request.chunk_results):  # the months only: no finding is built
        touched.update(ChunkCounts.model_validate_json(results.get_bytes(str(entry["result_key"]))).activity_periods)
    rule = kb.rules.get("institution-outlier")
    window = InstitutionOutlierParameters.model_validate(rule.parameters).window_months if rule else 1
    evaluated, needed = affected_periods(touched, window)
    activity = repo.load_activity(needed) if evaluated else []
    found = [f for f in institution_findings(activity, kb) if f.figures.get("period") in evaluated]
    by_scope: dict[str, list[Finding]] = defaultdict(list)
    for a in activity:
        if a.period in evaluated:
            by_scope.setdefault(a.scope, [])
    for finding in found:
        by_scope[Scope.of(finding)].append(finding)
    current = repo.load_findings(by_scope)
    changes = repo.replace_many(  # one transaction on the local state (thousands of units at 1M lines)
        {
            scope: [*(f for f in current[scope] if f.figures.get("period") not in evaluated), *by_scope[scope]]
            for scope in sorted(by_scope)
        }
    )
    repo.flush()
    out = ChunkFindings.of_changes(INSTITUTIONS, changes)
    key = naming.result_key(request.batch_id, INSTITUTIONS)
    results.put_json(key, out.model_dump(mode="json"))
    counts = out.counts()
    changed = {name: counts[name] for name in ("new", "updated", "superseded")}
    logger.info(
        "institutions screened",
        extra={"batch_id": request.batch_id, "months": sorted(evaluated), "units": len(by_scope), **changed},
    )
    return ChunkResult(chunk_key=INSTITUTIONS, lines=0, recorded=0, duplicates=0, findings=counts, result_key=key)
