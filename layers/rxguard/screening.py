"""Screening over a `HistoryRepository`: the engine applied to stored history.

- `screen_lines`: record lines (in-process and post-payment scenes), re-evaluate every
  touched scope over its whole timeline and replace its findings. Findings are a
  function of all lines known for a scope, so batches may arrive split, repeated or in
  any order and the stored findings converge to the same set.
- `check_lines`: pre-dispensing check of proposed lines against history; records nothing.
- `institution_findings`: institution-outlier from monthly aggregates.

Two batched reads per call (history of the patients, sales of the trace codes).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rxguard.engine import ActivityAggregate, Engine, activity_from_lines, finding_scope, flagged_line_ids
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding, Scene
from rxguard.repository import FindingChanges, HistoryRepository, TraceSale
from rxguard.scope import Scope

# Scenes that record lines: the stored findings cover the rules of all of them, so they
# do not depend on which scene happened to record a line.
RECORDING_SCENES = frozenset({Scene.IN, Scene.POST})

_ENGINES: dict[tuple[int, frozenset[Scene] | None], tuple[KnowledgeBase, Engine]] = {}


_KEEP: list[int] = []  # histories each engine keeps for checks, when set (`keep_histories`)


def engine_for(kb: KnowledgeBase, scenes: Collection[Scene] | None = None) -> Engine:
    """A cached engine for this knowledge base and scenes (its caches persist across calls)."""
    key = (id(kb), frozenset(scenes) if scenes is not None else None)
    cached = _ENGINES.get(key)
    if cached is None or cached[0] is not kb:
        cached = (kb, Engine(kb, scenes))
        if _KEEP:
            cached[1].keep_histories = _KEEP[0]
        _ENGINES[key] = cached
    return cached[1]


def keep_histories(count: int) -> None:
    """How many walked histories every engine keeps for checks (`Engine.evaluate_patient_lines`):
    worth more than the default only where a patient's history lines are the same objects from
    one check to the next (the local state's line cache, `rxguard serve`)."""
    _KEEP[:] = [max(2, count)]
    for _, engine in _ENGINES.values():
        engine.keep_histories = _KEEP[0]


@dataclass
class ScreenOutcome:
    recorded: list[ClaimLine] = field(default_factory=list)  # newly recorded lines
    duplicates: list[ClaimLine] = field(default_factory=list)  # already recorded (or repeated in the input)
    changes: FindingChanges = field(default_factory=FindingChanges)
    evaluated: list[Scope] = field(default_factory=list)  # scopes re-evaluated here
    deferred: list[str] = field(default_factory=list)  # trace codes whose scopes are settled later

    @property
    def scopes(self) -> list[Scope]:
        """The scopes the lines touch: those re-evaluated, then the deferred codes' (made only
        when asked: a chunk of 5,000 lines has ~15,000 codes)."""
        return [*self.evaluated, *(Scope.trace(code) for code in self.deferred)]


def _dedupe(lines: Iterable[ClaimLine]) -> tuple[list[ClaimLine], list[ClaimLine]]:
    seen: dict[str, ClaimLine] = {}
    repeated: list[ClaimLine] = []
    for line in lines:
        if line.line_id in seen:
            repeated.append(line)
        else:
            seen[line.line_id] = line
    return list(seen.values()), repeated


def _sales_by_code(lines: Iterable[ClaimLine]) -> dict[str, list[TraceSale]]:
    """The sales the given lines make, by code (one per line and code)."""
    out: dict[str, list[TraceSale]] = {}
    for line in lines:
        for code in dict.fromkeys(line.trace_codes):
            out.setdefault(code, []).append(TraceSale.of(line, code))
    return out


def _sales_with(stored: Sequence[TraceSale], extra: Sequence[TraceSale]) -> list[TraceSale]:
    """Stored sales of a code plus those of lines not stored yet."""
    known = {s.line_id for s in stored}
    return sorted([*stored, *(s for s in extra if s.line_id not in known)])


def with_returned_codes(batch: Sequence[ClaimLine], repo: HistoryRepository) -> list[ClaimLine]:
    """A reversal (退费) that lists no traceability code returns its original's packs: all
    the original's codes for a whole reversal, the last `|cnt|` of them for a part (whole
    packs). Looked up in the batch, else in the recorded history (one read, only when such a
    reversal is in the batch); a reversal whose original is not known yet keeps no code."""
    bare = [line for line in batch if line.reverses is not None and not line.trace_codes]
    if not bare:
        return list(batch)
    known = {line.line_id: line for line in batch}
    missing = sorted({line.psn_no for line in bare if line.reverses not in known})
    for lines in (repo.load_history(missing) if missing else {}).values():
        known.update((line.line_id, line) for line in lines)
    out: list[ClaimLine] = []
    for line in batch:
        original = known.get(line.reverses) if line.reverses is not None and not line.trace_codes else None
        if original is not None and original.trace_codes and original.cnt > 0:
            whole = abs(line.cnt) >= original.cnt - 1e-9
            packs = 0 if line.trdn_flag or original.trdn_flag else int(abs(line.cnt) + 1e-9)
            codes = list(original.trace_codes) if whole else list(original.trace_codes[-packs:]) if packs else []
            if codes:
                line = line.model_copy(update={"trace_codes": codes})
        out.append(line)
    return out


def screen_lines(
    lines: Sequence[ClaimLine],
    repo: HistoryRepository,
    kb: KnowledgeBase,
    scene: Scene = Scene.POST,
    bodies: Mapping[str, str] | None = None,
) -> ScreenOutcome:
    """Record `lines`, re-evaluate their patients and trace codes, replace their findings.

    `scene` (in or post) names who records; the stored findings always cover the rules of
    every recording scene, so they depend only on the lines. Idempotent. `bodies`: the
    lines' JSON as read (`ingest.read_chunk_bodies`), for `record_lines`."""
    if scene is Scene.PRE:
        raise ValueError("screen_lines records lines; use check_lines for pre-dispensing checks")
    batch, repeated = _dedupe(lines)
    read = batch
    batch = with_returned_codes(batch, repo)
    if bodies:  # a line given its returned codes is not the line read: its JSON is made again
        bodies = {
            x.line_id: bodies[x.line_id] for x, y in zip(read, batch, strict=True) if x is y and x.line_id in bodies
        }
    recorded = repo.record_lines(batch, bodies)
    recorded_ids = {line.line_id for line in recorded}
    duplicates = [line for line in batch if line.line_id not in recorded_ids] + repeated
    patients = sorted({line.psn_no for line in batch})
    codes = sorted({code for line in batch for code in line.trace_codes})
    history = repo.load_history(patients) if patients else {}
    defer = repo.defers_trace_scopes
    sales = repo.load_trace_sales(codes) if codes and not defer else {}
    engine = engine_for(kb, RECORDING_SCENES)
    outcome = ScreenOutcome(recorded=recorded, duplicates=duplicates)
    by_patient: dict[str, list[ClaimLine]] = {}
    for line in batch:
        by_patient.setdefault(line.psn_no, []).append(line)
    by_scope: dict[str, list[Finding]] = {}
    for psn in patients:
        timeline = list(history.get(psn, ()))
        timeline.extend(by_patient[psn])  # history first: a stored line wins over a resent one
        scope = Scope.patient(psn)
        by_scope[scope] = engine.evaluate_patient(psn, timeline)
        outcome.evaluated.append(scope)
    if defer:  # the codes' scopes are settled after the batch (the repository keeps the codes)
        repo.defer_trace_codes(codes)
        outcome.deferred = codes
    else:
        batch_sales = _sales_by_code(batch)  # per code once (not the whole batch per code)
        for code in codes:
            scope = Scope.trace(code)
            by_scope[scope] = engine.evaluate_trace_code(code, _sales_with(sales.get(code, ()), batch_sales[code]))
            outcome.evaluated.append(scope)
    outcome.changes = repo.replace_many(by_scope)  # one transaction where the adapter can
    repo.flush()
    return outcome


def check_lines(
    proposed: Sequence[ClaimLine],
    repo: HistoryRepository,
    kb: KnowledgeBase,
    scenes: Collection[Scene] = (Scene.PRE,),
) -> dict[str, list[Finding]]:
    """Pre-dispensing check: by proposed line id, the findings (rules of the `pre` scene,
    or of the given scenes: a 3101 trigger at settlement) whose evidence includes it,
    judged against the recorded history. Records nothing. The engine evaluates only the part
    of each patient's timeline that can share a finding with the proposed lines
    (`Engine.evaluate_proposed`: the same findings as the whole timeline's; a history whose
    lines are the same objects as a previous check's is not gone through again)."""
    batch, _ = _dedupe(proposed)
    ids = {line.line_id for line in batch}
    out: dict[str, list[Finding]] = {line.line_id: [] for line in batch}
    if not batch:
        return out
    patients = sorted({line.psn_no for line in batch})
    codes = sorted({code for line in batch for code in line.trace_codes})
    history = repo.load_history(patients)
    sales = repo.load_trace_sales(codes) if codes else {}
    engine = engine_for(kb, scenes)
    findings: list[Finding] = []
    for psn in patients:
        mine = [line for line in batch if line.psn_no == psn]
        # only what can involve them; nothing per history line when the history is one kept
        findings.extend(engine.evaluate_proposed(psn, history.get(psn, ()), mine, ids))
    batch_sales = _sales_by_code(batch)
    for code in codes:
        stored = [s for s in sales.get(code, ()) if s.line_id not in ids]
        findings.extend(engine.evaluate_trace_code(code, _sales_with(stored, batch_sales.get(code, []))))
    for finding in findings:
        for line_id in finding.evidence:
            if line_id in ids:
                out[line_id].append(finding)
    return out


def institution_findings(aggregates: Sequence[ActivityAggregate], kb: KnowledgeBase) -> list[Finding]:
    """institution-outlier from per-unit monthly aggregates (institutions and prescribers)."""
    return engine_for(kb, RECORDING_SCENES).evaluate_activity(aggregates)


def institution_findings_from_lines(
    lines: Iterable[ClaimLine], findings: Iterable[Finding], kb: KnowledgeBase
) -> tuple[list[ActivityAggregate], list[Finding]]:
    """Aggregates and institution-outlier findings from lines and the current patient and
    trace findings (the in-memory path; the DynamoDB path keeps the aggregates itself)."""
    aggregates = activity_from_lines(lines, flagged_line_ids(findings), kb)
    return aggregates, institution_findings(aggregates, kb)


def replace_institution_findings(
    repo: HistoryRepository, findings: Sequence[Finding], scopes: Iterable[str]
) -> FindingChanges:
    """Replace the findings of every given institution/prescriber scope (scopes without a
    finding now get theirs superseded)."""
    grouped: dict[str, list[Finding]] = {scope: [] for scope in scopes}
    for finding in findings:
        grouped.setdefault(finding_scope(finding), []).append(finding)
    changes = repo.replace_many({scope: grouped[scope] for scope in sorted(grouped)})
    repo.flush()
    return changes
