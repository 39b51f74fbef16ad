"""The engine's view of storage: purchase histories, trace-code sales, findings.

`HistoryRepository` is the contract; `InMemoryRepository` (here) serves unit tests, the
pre-dispensing checks in tests and benchmarks; `rxguard.dynamo.DynamoRepository`
implements it on DynamoDB for the workflow and the API. Business logic never imports
boto3: only the DynamoDB implementation does.

Reconciliation unit ("scope"): the findings of one scope are a deterministic function
of all lines known for it, so storing them is a replace, and late or repeated batches
converge to the same set (order independence). Scopes are `rxguard.scope.Scope` values
(patient, trace code, institution, prescriber), stored as their text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from rxguard.models import ClaimLine, Finding


@dataclass(frozen=True, order=True)
class TraceSale:
    """One sale of a traceability code (ordered by time, then line id).

    A reversal (退费) line's "sale" returns the pack: `returns` names the line it cancels.
    A split-pack sale (拆零, trdn_flag) sells `split_units` minimum units of the pack of
    `drug_code`; the engine adds them up against the pack size."""

    time: datetime
    line_id: str
    code: str
    psn_no: str
    fixmedins_code: str
    late: bool = field(default=False, compare=False)  # the line arrived late (ClaimLine.received_at)
    returns: str | None = None
    drug_code: str | None = None
    split_units: float | None = None

    @classmethod
    def of(cls, line: ClaimLine, code: str) -> TraceSale:
        """The sale of `code` that `line` makes (or returns)."""
        late = bool(line.received_at)
        head = (line.fee_ocur_time, line.line_id, code, line.psn_no, line.fixmedins_code, late)
        if line.reverses:
            return cls(*head, returns=line.reverses)
        if line.trdn_flag:
            return cls(*head, drug_code=line.med_list_codg, split_units=line.quantity_units)
        return cls(*head)

    def encode(self) -> str:
        """`time|psn_no|fixmedins_code[|r=<line>|p=<drug>:<units>][|l=1]`: how adapters store
        a sale (`l=1`: it arrived late, so a finding it causes names its submitter)."""
        head = f"{self.time.isoformat()}|{self.psn_no}|{self.fixmedins_code}"
        if self.returns:
            head = f"{head}|r={self.returns}"
        elif self.split_units is not None:
            head = f"{head}|p={self.drug_code}:{self.split_units!r}"
        return f"{head}|l=1" if self.late else head

    @classmethod
    def decode(cls, code: str, line_id: str, text: str) -> TraceSale:
        time_text, rest = text.split("|", 1)
        extra: dict[str, Any] = {}
        for _ in range(2):  # at most a return or split units, then the late mark
            head, _, tail = rest.rpartition("|")
            if not head or "=" not in tail:  # an institution code never holds "="
                break
            rest = head
            if tail == "l=1":
                extra["late"] = True
            elif tail.startswith("r="):
                extra["returns"] = tail[2:]
            elif tail.startswith("p="):
                drug, _, units = tail[2:].rpartition(":")
                extra["drug_code"], extra["split_units"] = drug, float(units)
        psn_no, fixmedins_code = rest.rsplit("|", 1)
        return cls(datetime.fromisoformat(time_text), line_id, code, psn_no, fixmedins_code, **extra)


@dataclass
class FindingChanges:
    """What a reconciliation of one or more scopes changed."""

    new: list[Finding] = field(default_factory=list)  # never seen before: alert these
    updated: list[Finding] = field(default_factory=list)  # same id, figures changed
    superseded: list[Finding] = field(default_factory=list)  # no longer produced by the rules
    unchanged: int = 0

    def merge(self, more: FindingChanges) -> None:
        """Add the changes of `more` (another scope's) to these."""
        self.new.extend(more.new)
        self.updated.extend(more.updated)
        self.superseded.extend(more.superseded)
        self.unchanged += more.unchanged


class HistoryRepository(ABC):
    """Storage as the rule engine sees it. Implementations batch their reads."""

    # True for a repository under which the trace-code scopes are settled after the whole
    # batch is recorded (the local runtime's workers, docs/local.md): `screen_lines` then
    # hands it the batch's codes (`defer_trace_codes`) instead of judging them.
    defers_trace_scopes: ClassVar[bool] = False

    def defer_trace_codes(self, codes: Collection[str]) -> None:
        """Keep these trace codes for the settlement after the batch (`defers_trace_scopes`)."""
        raise NotImplementedError(f"{type(self).__name__} settles trace codes as it screens")

    @abstractmethod
    def load_history(self, psn_nos: Collection[str]) -> dict[str, list[ClaimLine]]:
        """All recorded lines of these patients, each list in time order (one batched read)."""

    @abstractmethod
    def load_trace_sales(self, codes: Collection[str]) -> dict[str, list[TraceSale]]:
        """Recorded sales of these traceability codes, each list in time order."""

    def resold_codes(self, codes: Collection[str]) -> set[str]:
        """The codes among these with recorded sales by at least two lines: only they can
        make a trace-code finding (a code one line sold has none). An adapter that can
        count without reading the sales overrides it."""
        return {code for code, sales in self.load_trace_sales(codes).items() if len({s.line_id for s in sales}) > 1}

    @abstractmethod
    def record_lines(self, lines: Sequence[ClaimLine], bodies: Mapping[str, str] | None = None) -> list[ClaimLine]:
        """Record lines and their trace-code sales, conditionally on the line id: a line
        already recorded is not recorded again. Returns the lines newly recorded.
        `bodies`: the JSON of some of the lines as they were read (compact, by line id),
        which an adapter that stores that JSON may keep as is instead of encoding again."""

    @abstractmethod
    def load_findings(self, scopes: Collection[str]) -> dict[str, list[Finding]]:
        """Current (not superseded) findings of these scopes."""

    @abstractmethod
    def replace_findings(self, scope: str, findings: Sequence[Finding]) -> FindingChanges:
        """Make `findings` the current findings of `scope`: insert new ones (conditional
        on finding_id), update changed ones, mark the missing ones superseded. Reviews
        (confirmed / dismissed) of a finding that is produced again are kept."""

    def replace_many(self, by_scope: Mapping[str, Sequence[Finding]]) -> FindingChanges:
        """`replace_findings` for each scope, in the order given, the changes merged. An
        adapter that can do them together (one transaction, one read) overrides it."""
        changes = FindingChanges()
        for scope, findings in by_scope.items():
            changes.merge(self.replace_findings(scope, findings))
        return changes

    def flush(self) -> None:  # noqa: B027 - optional hook, a no-op for unbuffered adapters
        """Write whatever the adapter buffered (the DynamoDB one batches new findings across
        scopes). `screen_lines` calls it at the end; a caller of `replace_findings` outside
        it calls it when done."""


class InMemoryRepository(HistoryRepository):
    """A dict-backed repository with the same semantics as the DynamoDB one."""

    def __init__(self) -> None:
        self.lines: dict[str, ClaimLine] = {}
        self.by_patient: dict[str, list[ClaimLine]] = defaultdict(list)
        self.trace_sales: dict[str, list[TraceSale]] = defaultdict(list)
        self.findings: dict[str, Finding] = {}  # by finding_id, superseded included
        self.scope_of: dict[str, str] = {}  # finding_id -> scope
        self.in_scope: dict[str, set[str]] = defaultdict(set)  # scope -> finding ids (index of scope_of)
        self.reads = 0  # round trips, for benchmarks and the two-round-trip contract
        self.writes = 0

    def load_history(self, psn_nos: Collection[str]) -> dict[str, list[ClaimLine]]:
        self.reads += 1
        return {p: sorted(self.by_patient.get(p, ()), key=_line_order) for p in psn_nos}

    def load_trace_sales(self, codes: Collection[str]) -> dict[str, list[TraceSale]]:
        self.reads += 1
        return {c: sorted(self.trace_sales.get(c, ())) for c in codes}

    def record_lines(self, lines: Sequence[ClaimLine], bodies: Mapping[str, str] | None = None) -> list[ClaimLine]:
        self.writes += 1
        recorded = []
        for line in lines:
            if line.line_id in self.lines:
                continue
            self.lines[line.line_id] = line
            self.by_patient[line.psn_no].append(line)
            for code in dict.fromkeys(line.trace_codes):
                self.trace_sales[code].append(TraceSale.of(line, code))
            recorded.append(line)
        return recorded

    def load_findings(self, scopes: Collection[str]) -> dict[str, list[Finding]]:
        self.reads += 1
        wanted = set(scopes)
        out: dict[str, list[Finding]] = {s: [] for s in wanted}
        for scope in wanted:
            for fid in sorted(self.in_scope.get(scope, ())):
                finding = self.findings[fid]
                if finding.status != "superseded":
                    out[scope].append(finding)
        return out

    def replace_findings(self, scope: str, findings: Sequence[Finding]) -> FindingChanges:
        self.writes += 1
        changes = FindingChanges()
        current = {f.finding_id for f in findings}
        for finding in findings:
            old = self.findings.get(finding.finding_id)
            if old is None:
                changes.new.append(finding)
                self.findings[finding.finding_id] = finding
            else:
                status = old.status if old.status in ("confirmed", "dismissed") else "new"
                merged = finding.model_copy(update={"status": status})
                if merged != old:
                    changes.updated.append(merged)
                    self.findings[finding.finding_id] = merged
                else:
                    changes.unchanged += 1
            previous = self.scope_of.get(finding.finding_id)
            if previous is not None and previous != scope:
                self.in_scope[previous].discard(finding.finding_id)
            self.scope_of[finding.finding_id] = scope
            self.in_scope[scope].add(finding.finding_id)
        for fid in sorted(self.in_scope.get(scope, ())):
            old = self.findings[fid]
            if fid not in current and old.status != "superseded":
                gone = old.model_copy(update={"status": "superseded"})
                self.findings[fid] = gone
                changes.superseded.append(gone)
        return changes

    def all_current_findings(self) -> list[Finding]:
        return sorted((f for f in self.findings.values() if f.status != "superseded"), key=lambda f: f.finding_id)


def _line_order(line: ClaimLine) -> tuple[datetime, str]:
    return (line.fee_ocur_time, line.line_id)


def iter_codes(lines: Iterable[ClaimLine]) -> set[str]:
    return {code for line in lines for code in line.trace_codes}
