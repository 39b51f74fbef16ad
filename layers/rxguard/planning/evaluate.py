"""Every finding the rules would give over the whole stored history, without writing any.

The same rule engine as a batch run (`rxguard.screening`), fed differently: patients are
streamed from the state and judged over their whole timeline (split over worker
processes), then every trace code sold on more than one line, then institution activity,
accumulated while the patients stream by and judged against the flagged lines of the new
patient and trace findings. The result equals what a run of every stored line through
`screen_lines` and the institutions step would store (tests/unit/test_planning.py)."""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rxguard.engine import ActivityAggregate, flagged_line_ids
from rxguard.engine.institutions import aggregate_from_counts
from rxguard.kb import KnowledgeBase
from rxguard.local.state import State
from rxguard.models import ClaimLine, Finding
from rxguard.planning.history import iter_timelines, iter_trace_sales, patient_partition, resolve, shared_codes
from rxguard.scope import Scope
from rxguard.screening import RECORDING_SCENES, engine_for, institution_findings

Unit = tuple[str, str, str]  # (subject_type, code, period)


def _units(line: ClaimLine) -> list[Unit]:
    """The unit-months a monitored line counts for: its institution's, and its prescriber's."""
    period = line.fee_ocur_time.strftime("%Y-%m")
    units: list[Unit] = [("institution", line.fixmedins_code, period)]
    if line.bilg_dr_codg:
        units.append(("prescriber", line.bilg_dr_codg, period))
    return units


@dataclass
class Activity:
    """Monitored lines per institution-month and prescriber-month, accumulated line by
    line and turned into aggregates by `engine.institutions.aggregate_from_counts`, as the
    stores do (the same aggregates as `rxguard.engine.activity_from_lines`)."""

    regions: dict[Unit, Counter[str]] = field(default_factory=dict)  # admdvs ("" unknown) -> lines
    places: dict[Unit, Counter[str]] = field(default_factory=dict)  # a prescriber's institutions
    units_of: dict[str, list[Unit]] = field(default_factory=dict)  # flagged line id -> its units

    def add(self, line: ClaimLine, flagged: set[str]) -> None:
        if not line.monitored:
            return
        units = _units(line)
        for unit in units:
            self.regions.setdefault(unit, Counter())[line.admdvs or ""] += 1
            if unit[0] == "prescriber":
                self.places.setdefault(unit, Counter())[line.fixmedins_code] += 1
        if line.line_id in flagged:
            self.units_of[line.line_id] = units

    def merge(self, other: Activity) -> None:
        for unit, counts in other.regions.items():
            self.regions.setdefault(unit, Counter()).update(counts)
        for unit, places in other.places.items():
            self.places.setdefault(unit, Counter()).update(places)
        self.units_of.update(other.units_of)

    def aggregates(self, flagged: set[str], unit_lookup: dict[str, list[Unit]]) -> list[ActivityAggregate]:
        by_unit: dict[Unit, list[str]] = {}
        for line_id in flagged:
            for unit in unit_lookup.get(line_id, ()):
                by_unit.setdefault(unit, []).append(line_id)
        out = []
        for unit, regions in self.regions.items():
            subject_type, code, period = unit
            subject = Scope.institution(code) if subject_type == "institution" else Scope.prescriber(code)
            out.append(aggregate_from_counts(subject, period, regions, by_unit.get(unit, ()), self.places.get(unit)))
        return sorted(out, key=lambda a: (a.subject_type, a.code, a.period))


@dataclass
class PartResult:
    findings: list[Finding]
    activity: Activity
    lines: int


def _evaluate_patients(state_dir: str, kb: KnowledgeBase, part: int, parts: int, resolve_lines: bool) -> PartResult:
    state = State.open(state_dir)
    try:
        engine = engine_for(kb, RECORDING_SCENES)
        findings: list[Finding] = []
        activity = Activity()
        count = 0
        for psn, timeline in iter_timelines(
            state, patient_partition(state, part, parts), kb if resolve_lines else None
        ):
            found = engine.evaluate_patient(psn, timeline)
            findings.extend(found)
            flagged = flagged_line_ids(found)
            for line in timeline:
                activity.add(line, flagged)
            count += len(timeline)
        return PartResult(findings, activity, count)
    finally:
        state.close()


@dataclass
class Evaluation:
    findings: list[Finding]  # current findings of every scope, by finding_id
    lines: int


def evaluate_history(
    state_dir: str | Path, kb: KnowledgeBase, *, workers: int | None = None, resolve_lines: bool = False
) -> Evaluation:
    """Every finding `kb`'s rules give over the whole history in the state at `state_dir`.
    `resolve_lines` re-resolves each line against `kb`'s monitored list (phase planning)."""
    directory = str(state_dir)
    parts = max(1, workers or min(os.cpu_count() or 1, 8))
    if parts == 1:
        results = [_evaluate_patients(directory, kb, 0, 1, resolve_lines)]
    else:
        # spawn, not fork: `rxguard serve` answers backtests from a server worker (its event loop or a thread)
        with ProcessPoolExecutor(parts, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_evaluate_patients, directory, kb, i, parts, resolve_lines) for i in range(parts)]
            results = [f.result() for f in futures]
    findings: list[Finding] = []
    activity = Activity()
    lines = 0
    for result in results:
        findings.extend(result.findings)
        activity.merge(result.activity)
        lines += result.lines
    state = State.open(directory)
    try:
        engine = engine_for(kb, RECORDING_SCENES)
        trace: list[Finding] = []
        for code, sales in iter_trace_sales(state, shared_codes(state)):
            trace.extend(engine.evaluate_trace_code(code, sales))
        findings.extend(trace)
        flagged = flagged_line_ids(findings)
        missing = [i for i in flagged if i not in activity.units_of]
        lookup = dict(activity.units_of)
        lookup.update(_units_of_lines(state, missing, kb if resolve_lines else None))
        findings.extend(institution_findings(activity.aggregates(flagged, lookup), kb))
    finally:
        state.close()
    unique = {f.finding_id: f for f in findings}
    return Evaluation(findings=[unique[k] for k in sorted(unique)], lines=lines)


def _units_of_lines(state: State, line_ids: Iterable[str], kb: KnowledgeBase | None) -> dict[str, list[Unit]]:
    """The activity units of lines flagged by trace findings that belong to other patients'
    streams (normally all lines are seen while streaming; this covers the rest)."""
    wanted = sorted(set(line_ids))
    if not wanted:
        return {}
    lines = state.repository().load_lines(wanted)
    out: dict[str, list[Unit]] = {}
    for line_id, line in lines.items():
        resolved = resolve(line, kb) if kb is not None else line
        if resolved.monitored:
            out[line_id] = _units(resolved)
    return out
