"""Notify: alert the batch's new and updated findings and render their letters (the
alerts module alerts each finding at most once, however often this runs).

With an outbox (AWS: the OutboxTable; issue 15) every message of the batch is recorded
first, with its finding id; then whatever is pending is published - this batch's messages
and any an earlier Notify left behind (SNS throttled, the Lambda died) - each marked sent
only after SNS acknowledged it. A publish that fails raises (TransientError on throttling:
the state machine retries Notify, which records nothing twice and publishes the rest); what
is still pending when the batch gives up is published by the next Notify or the sweeper."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rxguard.alerts import notify_batch
from rxguard.alerts.outbox import Deliver, Outbox, RecordingSink, drain
from rxguard.dynamo import ResultStore
from rxguard.kb import KnowledgeBase
from rxguard.letters import issue_letters
from rxguard.models import ClaimLine, Finding
from rxguard.observability import logger
from rxguard.workflow.contract import FindingId, NotifyRequest, ok_results


class EvidenceLines(Mapping[str, ClaimLine]):
    """The evidence lines the letters cite, by line id, kept as the values of their JSON
    objects (a tuple; the field names once) and validated when a letter reads them. A
    validated line holds ~4 KB: at a million lines Notify held 150 MB of evidence lines
    (35,714 lines), a third of that now, for no more CPU (a line is validated once, when
    read, instead of once when the results file is read). The last lines read are kept
    (a letter reads a finding's lines twice: its drug, its evidence)."""

    RECENT = 256
    # Text fields whose values repeat across lines (institution, drug, region, patient,
    # dosage): one string each, shared by every line that holds it.
    SHARED = frozenset(
        {
            "fixmedins_code", "fixmedins_name", "institution_kind", "admdvs", "psn_no", "med_type",
            "med_list_codg", "med_list_name", "sin_dos_dscr", "used_frqu_dscr", "bilg_dr_codg",
            "override_reason", "atc_code", "source_file",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        self._rows: dict[str, tuple[tuple[str, ...], tuple[Any, ...]]] = {}
        # per layout of field names: the one tuple of names, and where the shared fields are
        self._layouts: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[int, ...]]] = {}
        self._shared: dict[Any, Any] = {}
        self._recent: dict[str, ClaimLine] = {}

    def add(self, line: Mapping[str, Any]) -> None:
        """A line as a results file holds it (ClaimLine's JSON form); a later one of the same id replaces it."""
        line_id = ClaimLine.id_of(str(line["fixmedins_code"]), str(line["feedetl_sn"]))
        names = tuple(line)
        layout = self._layouts.get(names)
        if layout is None:
            at = tuple(i for i, name in enumerate(names) if name in self.SHARED)
            layout = self._layouts[names] = (names, at)
        names, shared_at = layout
        values = list(line.values())
        share = self._shared.setdefault
        for i in shared_at:
            value = values[i]
            if type(value) is str:  # (numbers are not shared: 1 == 1.0 and 0.0 == -0.0 would merge)
                values[i] = share(value, value)
        self._rows[line_id] = (names, tuple(values))
        self._recent.pop(line_id, None)

    def __getitem__(self, line_id: str) -> ClaimLine:
        line = self._recent.get(line_id)
        if line is None:
            names, values = self._rows[line_id]
            line = ClaimLine.model_validate(dict(zip(names, values, strict=True)))
            if len(self._recent) >= self.RECENT:
                self._recent.clear()
            self._recent[line_id] = line
        return line

    def subset(self, line_ids: Iterable[str]) -> EvidenceLines:
        """These lines (those known), still undecoded: what one letter cites, to build it elsewhere."""
        out = EvidenceLines()
        for line_id in line_ids:
            row = self._rows.get(line_id)
            if row is not None:
                out._rows[line_id] = row
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, line_id: object) -> bool:
        return line_id in self._rows


class _AlertView(BaseModel):
    """What Notify reads of a results file (`ChunkFindings`): the findings it alerts, the
    institution names, and the evidence lines left as JSON objects (`EvidenceLines`)."""

    model_config = ConfigDict(extra="ignore")

    new: list[Finding] = Field(default_factory=list)
    updated: list[Finding] = Field(default_factory=list)
    recovered: list[Finding] = Field(default_factory=list)
    institutions: dict[str, str] = Field(default_factory=dict)
    evidence_lines: list[dict[str, Any]] = Field(default_factory=list)


class _AlertIdsView(_AlertView):
    """`_AlertView` with the findings' ids only: Notify that re-reads each finding as
    stored (`current`) does not hold a second copy of the batch's findings."""

    new: list[FindingId] = Field(default_factory=list)  # type: ignore[assignment]
    updated: list[FindingId] = Field(default_factory=list)  # type: ignore[assignment]
    recovered: list[FindingId] = Field(default_factory=list)  # type: ignore[assignment]


@dataclass
class ToAlert:
    findings: list[Finding] = field(default_factory=list)
    institutions: dict[str, str] = field(default_factory=dict)
    lines: EvidenceLines = field(default_factory=EvidenceLines)


def findings_to_alert(
    results: ResultStore,
    chunk_results: Sequence[Any],
    current: Callable[[Collection[str]], Mapping[str, Finding]] | None = None,
) -> ToAlert:
    """New and updated findings of every screened chunk, once each, in id order, with the
    institution names and evidence lines the letters use (the results files are
    `ChunkFindings`; what Notify does not use is not validated again). With `current`
    (finding ids -> stored findings) each finding is the one stored now, and those
    superseded since are left out (`settled`)."""
    by_id: dict[str, Any] = {}
    out = ToAlert()
    view = _AlertView if current is None else _AlertIdsView
    for entry in ok_results(chunk_results):
        found = view.model_validate_json(results.get_bytes(str(entry["result_key"])))
        for finding in [*found.new, *found.updated, *found.recovered]:
            by_id[finding.finding_id] = finding
        out.institutions.update(found.institutions)
        for line in found.evidence_lines:
            out.lines.add(line)
    ids = sorted(by_id)
    out.findings = [by_id[k] for k in ids] if current is None else settled(ids, current)
    return out


def settled(finding_ids: Sequence[str], current: Callable[[Collection[str]], Mapping[str, Finding]]) -> list[Finding]:
    """The findings as stored now, in the given order: those superseded since their chunk
    reported them, or not stored, are left out."""
    stored = current(finding_ids)
    return [now for i in finding_ids if (now := stored.get(i)) is not None and now.status != "superseded"]


def notify_chunks(
    request: NotifyRequest,
    *,
    results: ResultStore,
    kb: KnowledgeBase,
    sink: Any,
    alert_settings: Any = None,
    current: Callable[[Collection[str]], Mapping[str, Finding]] | None = None,
    counters: Any = None,
    letters: Any = None,
    outbox: Outbox | None = None,
    deliver: Deliver | None = None,
    drain_limit: int | None = None,
) -> dict[str, Any]:
    """`current` (finding ids -> stored findings), when given, re-reads each finding before
    it is alerted: the local orchestrator notifies after every batch of a run is screened,
    so a finding a later file superseded is neither alerted nor cited (docs/local.md).
    `counters` (a `rxguard.letters.CounterStore`: the DynamoDB CountersTable, the local
    state) numbers the letters (docs/letters.md). `letters` replaces the letter issuer
    (the local deployment renders the PDFs after Notify: docs/local.md). `outbox` with
    `deliver` (`AwsNotificationSink.deliver`): messages are recorded in the outbox, then the
    pending ones published (at most `drain_limit` per call; the sweeper publishes the rest)."""
    todo = findings_to_alert(results, [*request.chunk_results, request.institutions], current)
    findings = todo.findings
    if outbox is not None and deliver is None:
        raise ValueError("notify_chunks: an outbox needs a deliver function (the sink that publishes)")
    recording = RecordingSink(outbox, sink) if outbox is not None else None
    summary = notify_batch(
        findings,
        batch_id=request.batch_id,
        kb=kb,
        sink=recording if recording is not None else sink,
        settings=alert_settings,
        institution_names=todo.institutions,
        lines=todo.lines,
        letters=letters
        if letters is not None
        else partial(issue_letters, counters=counters)
        if counters is not None
        else issue_letters,
    )
    out = _as_dict(summary)
    out.setdefault("findings", len(findings))
    if outbox is not None and deliver is not None and recording is not None:
        out["outbox_recorded"] = len(recording.recorded_ids)
        try:
            out["outbox_sent"], out["outbox_pending"] = drain(outbox, deliver, limit=drain_limit)
        except Exception:
            logger.warning(
                "publishing stopped: messages stay pending in the outbox",
                extra={"batch_id": request.batch_id, "recorded": len(recording.recorded_ids)},
            )
            raise
    logger.info(
        "batch notified", extra={"batch_id": request.batch_id, **{k: v for k, v in out.items() if isinstance(v, int)}}
    )
    return out


def _as_dict(summary: Any) -> dict[str, Any]:
    if hasattr(summary, "model_dump"):
        return dict(summary.model_dump(mode="json"))
    if hasattr(summary, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(summary)
    return dict(summary) if isinstance(summary, Mapping) else {"summary": str(summary)}
