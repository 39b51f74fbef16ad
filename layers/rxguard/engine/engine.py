"""The rule engine: the rules of the catalogue (engine/rules/), configured by rules/rules.yaml,
over a patient's whole timeline, a traceability code's sales, and institutions' monthly activity. Pure: no I/O
(for checks it keeps the walks of the histories it judged: `Engine.evaluate_patient_lines`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from rxguard.engine.common import RuleSet
from rxguard.engine.fills import Fill, build_fills, is_ward_use
from rxguard.engine.institutions import ActivityAggregate, activity_from_lines
from rxguard.engine.monthly import MonthlyRules
from rxguard.engine.reversals import net_reversals
from rxguard.engine.rules import CATALOGUE, Hit, Rule, check_definitions, flagged_line_ids
from rxguard.engine.rules.cross_institution_repeat import CrossInstitutionRepeat
from rxguard.engine.rules.cumulative_oversupply import CumulativeOversupply
from rxguard.engine.rules.early_refill import EarlyRefill
from rxguard.engine.rules.frequent_visits import FrequentVisits
from rxguard.engine.rules.identity_misuse import IdentityMisuse, Places
from rxguard.engine.rules.indication_mismatch import Diagnoses, IndicationMismatch, diagnoses_of
from rxguard.engine.rules.institution_outlier import InstitutionOutlier
from rxguard.engine.rules.multi_hospital_days import MultiHospitalDays
from rxguard.engine.rules.multi_provider import MultiProvider, ProviderWindow
from rxguard.engine.rules.over_quantity import OverQuantity
from rxguard.engine.rules.override_frequency import OverrideFrequency
from rxguard.engine.rules.pharmacy_spend import PharmacySpend
from rxguard.engine.rules.therapeutic_duplication import TherapeuticDuplication
from rxguard.engine.rules.trace_code_reuse import TraceCodeReuse
from rxguard.engine.supply import Prepared, SupplyRules, Walk
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding, Scene
from rxguard.repository import TraceSale

_R = TypeVar("_R", bound=Rule)
# Walked histories an engine keeps, the latest used. A check and its next-fill search use two;
# a reader whose history lines are the same objects from one request to the next (the local
# state's line cache: `rxguard serve`) keeps more (`Engine.keep_histories`). A kept history pins
# its lines: where every request decodes them again (DynamoDB, Lambda), more would only hold memory.
HISTORIES_KEPT = 32


@dataclass
class _History:
    """A patient's history walked once for the checks against it (`Engine.evaluate_patient_lines`):
    where each rule's walk stands after it, and what tells whether a proposed line would
    change that walk."""

    lines: tuple[ClaimLine, ...]  # the history as given (kept: its lines' identities are the key)
    ids: frozenset[str]  # the ids of its lines (a check's proposed line of one of them replaces it)
    netted: list[ClaimLine]  # its lines, in order, reversals applied
    reversed_ids: set[str]  # the lines its reversals name (a proposed line of these ids is netted)
    by_class: dict[str, list[ClaimLine]]  # its monitored lines by ATC level-4 class
    ready: set[str] = field(default_factory=set)  # the classes walked so far (on demand)
    lock: threading.Lock = field(default_factory=threading.Lock)
    prepared: dict[str, Prepared] = field(default_factory=dict)  # supply walk, by ATC ingredient
    last: dict[str, datetime] = field(default_factory=dict)  # ATC -> its latest fill line
    days: dict[tuple[str, str], set[int]] = field(default_factory=dict)  # (institution, ATC) -> fill days
    visits: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (institution, ATC, visit) -> last day
    class_atcs: dict[str, set[str]] = field(default_factory=dict)  # ATC level 4 -> its ingredients' fills
    covering: dict[str, dict[str, Fill]] = field(default_factory=dict)  # therapeutic-duplication, by class
    providers: dict[str, ProviderWindow] = field(default_factory=dict)  # multi-provider, by class
    places: Places = field(default_factory=Places)  # identity-misuse
    diagnoses: Diagnoses | None = None  # indication-mismatch: its diagnoses (when a check first needs them)
    matching: dict[str, list[int]] = field(default_factory=dict)  # indication-mismatch: drug -> days diagnosed


def _order(line: ClaimLine) -> tuple[object, str]:
    return (line.fee_ocur_time, line.line_id)


def normalize_timeline(psn_no: str, timeline: Iterable[ClaimLine]) -> list[ClaimLine]:
    """This patient's lines, deduplicated by line id (first kept), in (time, line id) order."""
    seen: dict[str, ClaimLine] = {}
    for line in timeline:
        if line.psn_no == psn_no and line.line_id not in seen:
            seen[line.line_id] = line
    return sorted(seen.values(), key=_order)


class Engine:
    """`Engine(kb)`: evaluate the rules of `kb` (optionally only those of some scenes)."""

    def __init__(self, kb: KnowledgeBase, scenes: Collection[Scene] | None = None) -> None:
        self.kb = kb
        check_definitions(kb.rules.values())
        self.rules = RuleSet(kb, scenes)
        self.catalogue: dict[str, Rule] = {rid: cls(self.rules, kb) for rid, cls in CATALOGUE.items()}
        self._supply = SupplyRules(
            self._rule(OverQuantity),
            self._rule(EarlyRefill),
            self._rule(CrossInstitutionRepeat),
            self._rule(CumulativeOversupply),
            self._rule(OverrideFrequency),
        )
        self._monthly = MonthlyRules(
            self._rule(FrequentVisits), self._rule(MultiHospitalDays), self._rule(PharmacySpend)
        )
        self._indication = self._rule(IndicationMismatch)
        self._trace = self._rule(TraceCodeReuse)
        self._outlier = self._rule(InstitutionOutlier)
        self._duplication = self._rule(TherapeuticDuplication)
        self._providers = self._rule(MultiProvider)
        self._identity = self._rule(IdentityMisuse)
        supply = {OverQuantity.id, EarlyRefill.id, CrossInstitutionRepeat.id, CumulativeOversupply.id}
        others = set(self.catalogue) - supply - {OverrideFrequency.id, InstitutionOutlier.id}
        # a check resumes the walks of its history (kept) unless a monthly rule is selected
        self._resumable = not self._monthly.enabled
        # only supply rules among the patient rules (the next-fill search's engine): a proposed
        # line need only come after its own ingredient's history
        self._only_supply = not any(self.catalogue[rid].enabled for rid in others)
        self._histories: OrderedDict[tuple[object, ...], _History] = OrderedDict()
        self.keep_histories = HISTORIES_KEPT
        self._lock = threading.Lock()

    def _rule(self, cls: type[_R]) -> _R:
        rule = self.catalogue[cls.id]
        assert isinstance(rule, cls)
        return rule

    def evaluate_patient(self, psn_no: str, timeline: Sequence[ClaimLine]) -> list[Finding]:
        """Every patient-scope finding over the patient's whole timeline (any order in)."""
        lines = net_reversals(normalize_timeline(psn_no, timeline))
        if not lines:
            return []
        fills = build_fills(lines, self.kb)
        findings = self._supply.evaluate(psn_no, fills)  # first: it settles which override reasons hold
        findings.extend(self._duplication.finding(h) for h in self._duplication.evaluate(psn_no, fills))
        findings.extend(self._providers.finding(h) for h in self._providers.evaluate(psn_no, lines))
        findings.extend(self._identity.finding(h) for h in self._identity.evaluate(psn_no, lines))
        findings.extend(self._indication.findings(psn_no, lines))
        findings.extend(self._trace.within_line_findings(psn_no, lines))
        findings.extend(self._monthly.evaluate(psn_no, lines, flagged_line_ids(findings)))
        return _unique(findings)

    def evaluate_patient_lines(
        self, psn_no: str, timeline: Sequence[ClaimLine], line_ids: Collection[str]
    ) -> list[Finding]:
        """The findings of `evaluate_patient(psn_no, timeline)` whose evidence includes one of
        `line_ids` (the lines a check proposes), exactly (ids, rules, severities, evidence,
        figures), each rule family evaluated over only what can share a finding with them:

        - the supply rules, therapeutic-duplication and multi-provider: the lines of the
          proposed lines' ATC level-4 classes (fills, stock, overrides, episodes are per
          ingredient; duplications and provider windows per class);
        - identity-misuse stays on the whole timeline: of two pairs of the same institutions
          on one day it reports the first in the order the patient's regions first appeared,
          which a time window around the proposed lines does not keep;
        - indication-mismatch and a trace code repeated within a line: the proposed lines
          (a finding's evidence is its line; diagnoses still come from the whole timeline);
        - the monthly rules (in and post scenes) read every other finding (pharmacy-spend's
          flagged lines): when one is selected, the whole timeline is evaluated.

        Without a monthly rule, the walks of the history (the timeline less the proposed
        lines) are kept and resumed over the proposed lines when nothing they settled can
        change (`_resumed`). tests/unit/test_engine_proposed.py proves the equality over
        random timelines, for both paths."""
        wanted = set(line_ids)
        if self._resumable:
            resumed = self._resumed(psn_no, timeline, wanted)
            if resumed is not None:
                return resumed
        return self._evaluated(psn_no, timeline, wanted)

    def evaluate_proposed(
        self, psn_no: str, history: Sequence[ClaimLine], proposed: Sequence[ClaimLine], line_ids: Collection[str]
    ) -> list[Finding]:
        """What a check asks: `evaluate_patient_lines(psn_no, timeline, line_ids)` where the
        timeline is `history` less the lines of `line_ids` (a proposed line replaces a stored
        one of its id), then `proposed` (this patient's proposed lines, all among `line_ids`).
        The same findings; when `history` is one kept (the same line objects as a previous
        check's: the local state's caches), nothing is done per line of the history: it is
        recognised by the identity of its lines and whether a proposed id is in it by its ids."""
        wanted = set(line_ids)
        replaced = True  # a proposed id among the history's: the history less it is another
        if self._resumable:
            known = self._history(psn_no, history)
            replaced = not known.ids.isdisjoint(wanted)
            if not replaced:
                mine = sorted((line for line in proposed if line.psn_no == psn_no), key=_order)
                resumed = self._resume(psn_no, known, mine, wanted)
                if resumed is not None:
                    return resumed
        timeline = [line for line in history if line.line_id not in wanted]
        timeline.extend(proposed)
        if self._resumable and replaced:
            resumed = self._resumed(psn_no, timeline, wanted)
            if resumed is not None:
                return resumed
        return self._evaluated(psn_no, timeline, wanted)

    def _evaluated(self, psn_no: str, timeline: Sequence[ClaimLine], wanted: set[str]) -> list[Finding]:
        lines = net_reversals(normalize_timeline(psn_no, timeline))
        targets = [line for line in lines if line.line_id in wanted]
        if not targets:  # a reversal, or no line: nothing is evidence of them
            return []
        if self._monthly.enabled:
            found = self.evaluate_patient(psn_no, timeline)
        else:
            found = self._around(psn_no, lines, targets)
        return [f for f in found if not wanted.isdisjoint(f.evidence)]

    def _around(self, psn_no: str, lines: list[ClaimLine], targets: list[ClaimLine]) -> list[Finding]:
        kb = self.kb
        classes = set()
        for line in targets:
            drug = kb.drug(line.med_list_codg)
            if drug is not None:
                classes.add(drug.atc_code[:5])
        findings: list[Finding] = []
        if classes:
            related = []
            for line in lines:
                drug = kb.drug(line.med_list_codg)
                if drug is not None and drug.atc_code[:5] in classes:
                    related.append(line)
            fills = build_fills(related, kb)
            findings = self._supply.evaluate(psn_no, fills)  # first: it settles which override reasons hold
            findings.extend(self._duplication.finding(h) for h in self._duplication.evaluate(psn_no, fills))
            findings.extend(self._providers.finding(h) for h in self._providers.evaluate(psn_no, related))
        findings.extend(self._identity.finding(h) for h in self._identity.evaluate(psn_no, lines))
        findings.extend(self._indication.findings(psn_no, lines, targets))
        findings.extend(self._trace.within_line_findings(psn_no, targets))
        return _unique(findings)

    def _resumed(self, psn_no: str, timeline: Sequence[ClaimLine], wanted: set[str]) -> list[Finding] | None:
        """The findings on the proposed lines from the walks of the history (made once, kept)
        resumed over them; None when a proposed line could change what the history's walks
        settled: a reversal, a line netted by a reversal of the history, a line not after the
        whole history (after its own ingredient's last fill for a supply-only engine), a line
        joining one of the history's fills. Then the caller evaluates."""
        history: list[ClaimLine] = []
        proposed: list[ClaimLine] = []
        for line in timeline:
            (proposed if line.line_id in wanted else history).append(line)
        proposed = sorted((line for line in proposed if line.psn_no == psn_no), key=_order)
        if not proposed:
            return []
        return self._resume(psn_no, self._history(psn_no, history), proposed, wanted)

    def _resume(
        self, psn_no: str, known: _History, proposed: list[ClaimLine], wanted: set[str]
    ) -> list[Finding] | None:
        """`_resumed` once the history is walked (`known`, none of whose lines is of `wanted`)
        and the proposed lines (this patient's, in order) are apart."""
        if not proposed:
            return []
        if len({line.line_id for line in proposed}) < len(proposed) or any(line.reverses for line in proposed):
            return None
        if not known.reversed_ids.isdisjoint(wanted):
            return None
        if not self._only_supply and known.netted and proposed[0].fee_ocur_time <= known.netted[-1].fee_ocur_time:
            return None
        self._walk_classes(psn_no, known, proposed)
        by_atc: dict[str, list[ClaimLine]] = {}
        for line in proposed:
            drug = self.kb.drug(line.med_list_codg)
            if drug is None or is_ward_use(line):
                continue
            atc, day = drug.atc_code, line.fee_ocur_time.toordinal()
            last = known.last.get(atc)
            if last is not None and line.fee_ocur_time <= last:
                return None
            if day in known.days.get((line.fixmedins_code, atc), ()):
                return None
            if known.visits.get((line.fixmedins_code, atc, line.mdtrt_id), day - 2) >= day - 1:
                return None
            by_atc.setdefault(atc, []).append(line)
        findings: list[Finding] = []
        classes: dict[str, list[Fill]] = {}
        for atc in sorted(by_atc):
            later = build_fills(by_atc[atc], self.kb)[atc]
            prepared = known.prepared.get(atc) or Prepared(atc, [], Walk())
            findings.extend(self._supply.resume(psn_no, prepared, later))  # first: it marks the overrides
            classes.setdefault(atc[:5], []).extend(later)
        hits: list[Hit] = []
        if self._duplication.enabled:
            for atc4 in sorted(classes):
                members = sorted(classes[atc4], key=lambda f: (f.time, f.line_ids[0]))
                if len(known.class_atcs.get(atc4, set()) | {f.atc for f in members}) >= 2:
                    covering = dict(known.covering.get(atc4, {}))
                    self._duplication.walk(psn_no, atc4, members, covering, hits)
            findings.extend(self._duplication.finding(h) for h in hits)
        if self._providers.enabled:
            for atc4, lines in sorted(self._providers.classes(proposed).items()):
                hits = []
                window = known.providers[atc4].copy() if atc4 in known.providers else ProviderWindow()
                self._providers.walk(psn_no, atc4, window, lines, hits)
                self._providers.close(psn_no, atc4, window, hits)
                findings.extend(self._providers.finding(h) for h in hits)
        if self._identity.enabled:
            hits = []
            self._identity.walk(psn_no, known.places.copy(), proposed, hits)
            findings.extend(self._identity.finding(h) for h in hits)
        if self._indication.enabled and any(
            (drug := self.kb.drug(line.med_list_codg)) is not None and drug.restricted_indications for line in proposed
        ):
            with known.lock:
                if known.diagnoses is None:
                    known.diagnoses = diagnoses_of(known.netted)
            diagnoses = diagnoses_of(proposed, known.diagnoses)
            days = known.matching if diagnoses is known.diagnoses else None  # (kept: the history's alone)
            findings.extend(self._indication.findings(psn_no, proposed, proposed, diagnoses, days))
        findings.extend(self._trace.within_line_findings(psn_no, proposed))
        return [f for f in _unique(findings) if not wanted.isdisjoint(f.evidence)]

    def forget_histories(self) -> None:
        """Drop the histories kept for checks (benchmarks measure a patient's first check)."""
        with self._lock:
            self._histories.clear()

    def _history(self, psn_no: str, history: Sequence[ClaimLine]) -> _History:
        """The history walked, kept per engine by the identity of its lines (immutable: the same
        objects are the same history; the state keeps decoded lines, and the next-fill search
        re-checks against one history many times)."""
        key = (psn_no, *map(id, history))
        with self._lock:
            known = self._histories.get(key)
            if known is not None:
                self._histories.move_to_end(key)
                return known
        ordered = normalize_timeline(psn_no, history)
        netted = net_reversals(ordered)
        by_class: dict[str, list[ClaimLine]] = {}
        for line in netted:
            drug = self.kb.drug(line.med_list_codg)
            if drug is not None:
                by_class.setdefault(drug.atc_code[:5], []).append(line)
        known = _History(
            tuple(history),
            frozenset(line.line_id for line in history),
            netted,
            {line.reverses for line in ordered if line.reverses},
            by_class,
        )
        if self._identity.enabled:
            self._identity.walk(psn_no, known.places, netted, None)
        with self._lock:
            self._histories[key] = known
            while len(self._histories) > self.keep_histories:
                self._histories.popitem(last=False)
        return known

    def _walk_classes(self, psn_no: str, known: _History, proposed: list[ClaimLine]) -> None:
        """Walk the history's lines of the proposed lines' classes, once per class (supply per
        ingredient, therapeutic-duplication, multi-provider): the state kept for the checks."""
        classes = set()
        for line in proposed:
            drug = self.kb.drug(line.med_list_codg)
            if drug is not None:
                classes.add(drug.atc_code[:5])
        with known.lock:
            for atc4 in sorted(classes - known.ready):
                lines = known.by_class.get(atc4, [])
                fills_by_atc = build_fills(lines, self.kb)
                members: list[Fill] = []
                for atc, fills in fills_by_atc.items():
                    known.prepared[atc] = self._supply.prepare(psn_no, atc, fills)
                    known.class_atcs.setdefault(atc4, set()).add(atc)
                    members.extend(fills)
                    for fill in fills:
                        for line in fill.lines:
                            day = line.fee_ocur_time.toordinal()
                            known.last[atc] = max(known.last.get(atc, line.fee_ocur_time), line.fee_ocur_time)
                            known.days.setdefault((fill.fixmedins_code, atc), set()).add(day)
                            visit = (fill.fixmedins_code, atc, line.mdtrt_id)
                            known.visits[visit] = max(known.visits.get(visit, day), day)
                if self._duplication.enabled:
                    members.sort(key=lambda f: (f.time, f.line_ids[0]))
                    self._duplication.walk(psn_no, atc4, members, known.covering.setdefault(atc4, {}), None)
                if self._providers.enabled:
                    for cls, counted in self._providers.classes(lines).items():
                        window = known.providers[cls] = ProviderWindow()
                        self._providers.walk(psn_no, cls, window, counted, None)
                known.ready.add(atc4)

    def evaluate_trace_code(
        self, code: str, sales: Sequence[TraceSale], lines: Mapping[str, ClaimLine] | None = None
    ) -> list[Finding]:
        """Findings of one traceability code from all its recorded sales."""
        del lines  # accepted for callers that have them: the result must not depend on them
        return _unique(self._trace.findings(code, sales))

    def evaluate_institutions(self, lines: Iterable[ClaimLine], flagged_line_ids: set[str]) -> list[Finding]:
        """institution-outlier from lines and the ids of lines blamed by patient/trace findings
        (see `rxguard.engine.flagged_line_ids`)."""
        return self.evaluate_activity(activity_from_lines(lines, flagged_line_ids, self.kb))

    def evaluate_activity(self, aggregates: Sequence[ActivityAggregate]) -> list[Finding]:
        """institution-outlier from monthly aggregates kept by the caller (e.g. DynamoDB)."""
        return _unique(self._outlier.findings(aggregates))


def _unique(findings: list[Finding]) -> list[Finding]:
    out: dict[str, Finding] = {}
    for f in findings:
        out.setdefault(f.finding_id, f)
    return sorted(out.values(), key=lambda f: (f.occurred_at, f.rule_id, f.finding_id))
