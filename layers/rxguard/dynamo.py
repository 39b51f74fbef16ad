"""AWS data access for the workflow and the API: DynamoDB (history, findings, batches,
aggregates) and the results bucket. With `rxguard.alerts.aws` and `rxguard.offline` the
only modules that touch boto3 (docs/workflow.md "Tables" has the design).

- `DynamoRepository` implements `HistoryRepository`: purchases and trace-code sales are
  written conditionally on the line id (a retried chunk or a re-dropped file never counts
  twice), reads are batched per chunk (Query per patient in a small thread pool,
  BatchGetItem for trace codes), unprocessed keys/items are retried with backoff.
- `BatchStore` claims an S3 object for one execution and records the batch status.
- `ResultStore` reads and writes objects of the results bucket.
- `RequestCounter` counts every boto3 request (by service and operation) for benchmarks.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from rxguard.engine.institutions import ActivityAggregate
from rxguard.errors import TransientError
from rxguard.models import ClaimLine, Finding, InstitutionKind
from rxguard.repository import FindingChanges, HistoryRepository, TraceSale
from rxguard.scope import Scope

# ---------------------------------------------------------------- request counting

_READ_OPS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}
_WRITE_OPS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


class RequestCounter:
    """Counts boto3 requests by `service.Operation`; `hook(client)` attaches it to a client.

    Batch operations also count their items (`dynamodb.items_read` / `items_written`),
    which is what write units follow.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def hook(self, client: Any) -> Any:
        client.meta.events.register("before-parameter-build.*.*", self._before_call)
        return client

    def _before_call(self, model: Any, params: Mapping[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        op = model.name
        with self._lock:
            self.calls[f"{service}.{op}"] += 1
            if service == "dynamodb":
                if op == "BatchWriteItem":
                    self.calls["dynamodb.items_written"] += sum(len(v) for v in params.get("RequestItems", {}).values())
                elif op == "BatchGetItem":
                    self.calls["dynamodb.items_read"] += sum(
                        len(v.get("Keys", [])) for v in params.get("RequestItems", {}).values()
                    )
                elif op in _WRITE_OPS:
                    self.calls["dynamodb.items_written"] += 1

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.calls)

    @property
    def dynamodb_reads(self) -> int:
        with self._lock:
            return sum(n for k, n in self.calls.items() if k.startswith("dynamodb.") and k[9:] in _READ_OPS)

    @property
    def dynamodb_writes(self) -> int:
        with self._lock:
            return sum(n for k, n in self.calls.items() if k.startswith("dynamodb.") and k[9:] in _WRITE_OPS)


REQUESTS = RequestCounter()  # the process-wide counter every client made here is hooked to

_BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)


@cache
def client(service: str) -> Any:
    """A cached, counted boto3 client (thread-safe; created on first use)."""
    return REQUESTS.hook(boto3.client(service, config=_BOTO_CONFIG))  # type: ignore[call-overload]


def reset_clients() -> None:
    """Forget cached clients (tests and the offline harness start a fresh moto per run)."""
    client.cache_clear()


_THROTTLES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "SlowDown",
    "InternalError",
}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _transient(exc: ClientError, what: str) -> Exception:
    """Throttling and 5xx become TransientError (the state machine retries it)."""
    if _error_code(exc) in _THROTTLES:
        return TransientError(f"{what}: {_error_code(exc)}")
    return exc


def _backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> None:
    time.sleep(random.uniform(0, min(cap, base * 2**attempt)))


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class TableNames:
    purchases: str
    trace_codes: str
    findings: str
    batches: str | None = None
    aggregates: str | None = None

    @classmethod
    def of(cls, settings: Any) -> TableNames:
        """From settings naming each table `<name>_table` (the workflow's, a handler's environment)."""
        return cls(**{f.name: getattr(settings, f"{f.name}_table") for f in fields(cls)})


# ClaimLine field -> short attribute name in the compact JSON body of a purchase item.
# psn_no is the partition key and is not repeated; fields at their default are left out.
_SHORT = {
    "feedetl_sn": "sn",
    "fixmedins_code": "fc",
    "fixmedins_name": "fn",
    "institution_kind": "ik",
    "admdvs": "ad",
    "mdtrt_id": "mi",
    "setl_id": "si",
    "med_type": "mt",
    "fee_ocur_time": "t",
    "med_list_codg": "dc",
    "med_list_name": "dn",
    "cnt": "n",
    "trdn_flag": "tf",
    "pric": "pr",
    "det_item_fee_sumamt": "am",
    "quantity_units": "qu",
    "sin_dos_dscr": "sd",
    "used_frqu_dscr": "uf",
    "prd_days": "pd",
    "rxno": "rx",
    "bilg_dr_codg": "dr",
    "diagnoses": "dx",
    "dscg_tkdrug_flag": "dg",
    "lt_rx_flag": "lt",
    "override_reason": "or",
    "trace_codes": "tc",
    "monitored": "mo",
    "atc_code": "atc",
    "days_supply": "ds",
    "source_file": "sf",
    "source_line": "sl",
}
_LONG = {v: k for k, v in _SHORT.items()}


def encode_line(line: ClaimLine) -> str:
    """The compact JSON body of a purchase item (no psn_no, short names, no defaults)."""
    data = line.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
    data.pop("psn_no", None)
    body = {_SHORT.get(k, k): v for k, v in data.items()}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def decode_line(psn_no: str, body: str) -> ClaimLine:
    data = {_LONG.get(k, k): v for k, v in json.loads(body).items()}
    data["psn_no"] = psn_no
    return ClaimLine.model_validate(data)


def purchase_sort_key(line: ClaimLine) -> str:
    """`<ATC or drug code>#<fee time>#<line id>`: deterministic, so a re-sent line hits the same item."""
    return f"{line.atc_code or line.med_list_codg}#{line.fee_ocur_time.isoformat()}#{line.line_id}"


def _epoch(at: datetime) -> int:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp())


ActivityKey = tuple[str, str]  # (period "YYYY-MM", "institution:<code>" | "prescriber:<code>")
_PACKED_PREFIX = "~packed#"  # aggregates items holding a writer's counters for many units
_PACKED_ITEM_BYTES = 200_000  # well under DynamoDB's 400 KB item limit


def _merge_activity(merged: dict[str, dict[str, Any]], period: Any, subject: str, values: Mapping[str, Any]) -> None:
    """Add one contribution (counters `N`, flagged-line sets `SS`) to a unit-month."""
    into = merged.setdefault(subject, {"period": period, "subject": {"S": subject}})
    for name, value in values.items():
        if name in ("period", "subject"):
            continue
        if "N" in value:
            total = float(into.get(name, {"N": "0"})["N"]) + float(value["N"])
            into[name] = {"N": repr(total)}
        elif "SS" in value:
            into[name] = {"SS": sorted(set(into.get(name, {"SS": []})["SS"]) | set(value["SS"]))}


def activity_units(line: ClaimLine) -> list[ActivityKey]:
    """The institution-outlier units a monitored line counts for (none for an unmonitored line
    or a reversal, which is not a dispensing)."""
    if not line.monitored or line.reverses is not None:
        return []
    period = f"{line.fee_ocur_time:%Y-%m}"
    units: list[ActivityKey] = [(period, Scope.institution(line.fixmedins_code))]
    if line.bilg_dr_codg:
        units.append((period, Scope.prescriber(line.bilg_dr_codg)))
    return units


def activity_counts(lines: Sequence[ClaimLine]) -> dict[ActivityKey, dict[str, float]]:
    """Counters per unit-month of monitored lines: `monitored_lines`, `a:<admdvs>` (the
    region mix) and, for prescribers, `i:<fixmedins_code>` (where they prescribe)."""
    out: dict[ActivityKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for line in lines:
        for unit in activity_units(line):
            counters = out[unit]
            counters["monitored_lines"] += 1
            counters[f"a:{line.admdvs or ''}"] += 1
            if Scope.parse(unit[1]).kind == "prescriber":
                counters[f"i:{line.fixmedins_code}"] += 1
    return {k: dict(v) for k, v in out.items()}


def _most(counts: Mapping[str, float]) -> str | None:
    """The most frequent value, ties broken by the smallest (the engine's rule)."""
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def _activity_from_item(item: Mapping[str, Any]) -> ActivityAggregate | None:
    subject = Scope.parse(item["subject"]["S"])
    subject_type, code = subject.kind, subject.key
    lines = int(float(item.get("monitored_lines", {}).get("N", "0")))
    if lines <= 0 or subject_type not in ("institution", "prescriber"):
        return None
    regions = {k[2:]: float(v["N"]) for k, v in item.items() if k.startswith("a:") and "N" in v}
    places = {k[2:]: float(v["N"]) for k, v in item.items() if k.startswith("i:") and "N" in v}
    fixmedins_code = code if subject_type == "institution" else (_most(places) or "")
    return ActivityAggregate(
        subject_type="institution" if subject_type == "institution" else "prescriber",
        code=code,
        period=item["period"]["S"],
        kind=InstitutionKind.from_code(fixmedins_code),
        monitored_lines=lines,
        flagged_lines=tuple(sorted(item.get("flagged", {}).get("SS", []))),
        fixmedins_code=fixmedins_code,
        admdvs=_most(regions) or None,
    )


FINDING_RETENTION = timedelta(days=1826)  # 5 years after the line that triggered it (case-file retention)


def _finding_item(scope: str, finding: Finding, now: str) -> dict[str, Any]:
    body = finding.model_dump(mode="json", exclude={"status"})
    item: dict[str, Any] = {
        "finding_id": {"S": finding.finding_id},
        "scope": {"S": scope},
        "status": {"S": finding.status},
        "rule_id": {"S": finding.rule_id},
        "severity": {"S": finding.severity.value},
        "occurred_at": {"S": finding.occurred_at.isoformat()},
        "updated_at": {"S": now},
        "body": {"S": json.dumps(body, ensure_ascii=False, separators=(",", ":"))},
        "expires_at": {"N": str(_epoch(finding.occurred_at + FINDING_RETENTION))},  # TTL (docs/security.md)
    }
    if finding.fixmedins_code:
        item["fixmedins_code"] = {"S": finding.fixmedins_code}
    return item


def _finding_from_item(item: Mapping[str, Any]) -> Finding:
    data = json.loads(item["body"]["S"])
    data["status"] = item["status"]["S"]
    return Finding.model_validate(data)


class DynamoRepository(HistoryRepository):
    """`HistoryRepository` on DynamoDB. One instance serves one chunk or one request
    (it caches the findings of the scopes it loaded, so replace_findings need not re-read)."""

    def __init__(
        self,
        tables: TableNames,
        dynamodb_client: Any | None = None,
        *,
        history_days: int = 400,
        max_workers: int = 8,
        writer: str | None = None,
    ) -> None:
        """`writer` names the unit of work (a chunk of a batch: `<batch>-<index>`, no `#`).
        With it, each purchase item remembers its writer, and the writer's activity
        counters are one item per unit-month written whole, so a retried chunk (even one
        that died after recording lines) counts each of its lines exactly once. Without it
        (the API's dispensations), counters are incremented with ADD."""
        if writer is not None and "#" in writer:
            raise ValueError("DynamoRepository writer must not contain '#'")
        self.writer = writer
        self.tables = tables
        self.ddb = dynamodb_client if dynamodb_client is not None else client("dynamodb")
        self.history_days = history_days
        self.max_workers = max_workers
        self._scopes: dict[str, dict[str, Finding]] = {}  # scope -> finding_id -> finding (superseded included)
        self.known_lines: dict[str, ClaimLine] = {}  # lines seen by this instance (loaded or recorded)
        self.sale_owner: dict[str, str] = {}  # line_id -> psn_no, from the trace-code sales loaded
        # Scopes that cannot have stored findings: a trace code first sold by this instance
        # (its item did not exist), a patient whose every stored line this instance recorded.
        # Their findings are not queried (most scopes of a batch are new).
        self._fresh_scopes: set[str] = set()
        self._recorded_ids: set[str] = set()

    # ------------------------------------------------------------ helpers
    def _map(self, func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1 or self.max_workers <= 1:
            return [func(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(items))) as pool:
            return list(pool.map(func, items))

    def _query_all(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        while True:
            try:
                page = self.ddb.query(**kwargs)
            except ClientError as exc:
                raise _transient(exc, f"Query {kwargs.get('TableName')}") from exc
            yield from page.get("Items", [])
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def _expires(self, at: datetime) -> str:
        return str(_epoch(at + timedelta(days=self.history_days)))

    # ------------------------------------------------------------ history
    def load_history(self, psn_nos: Collection[str]) -> dict[str, list[ClaimLine]]:
        def one(psn_no: str) -> list[ClaimLine]:
            items = self._query_all(
                TableName=self.tables.purchases,
                KeyConditionExpression="psn_no = :p",
                ExpressionAttributeValues={":p": {"S": psn_no}},
                ProjectionExpression="#d",
                ExpressionAttributeNames={"#d": "d"},
            )
            lines = [decode_line(psn_no, item["d"]["S"]) for item in items]
            return sorted(lines, key=lambda x: (x.fee_ocur_time, x.line_id))

        patients = sorted(set(psn_nos))
        history = dict(zip(patients, self._map(one, patients), strict=True))
        for psn_no, lines in history.items():
            self.known_lines.update((x.line_id, x) for x in lines)
            if lines and all(x.line_id in self._recorded_ids for x in lines):
                self._fresh_scopes.add(Scope.patient(psn_no))
        return history

    def load_trace_sales(self, codes: Collection[str]) -> dict[str, list[TraceSale]]:
        wanted = sorted(set(codes))
        out: dict[str, list[TraceSale]] = {c: [] for c in wanted}
        for start in range(0, len(wanted), 100):
            keys: list[dict[str, Any]] = [{"code": {"S": c}} for c in wanted[start : start + 100]]
            for item in self._batch_get(self.tables.trace_codes, keys):
                code = item["code"]["S"]
                out[code] = _sales_from_item(code, item)
                self.sale_owner.update((sale.line_id, sale.psn_no) for sale in out[code])
        return out

    def _batch_get(self, table: str, keys: list[dict[str, Any]], attempts: int = 8) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {table: {"Keys": keys}}
        for attempt in range(attempts):
            try:
                answer = self.ddb.batch_get_item(RequestItems=request)
            except ClientError as exc:
                raise _transient(exc, f"BatchGetItem {table}") from exc
            yield from answer.get("Responses", {}).get(table, [])
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                return
            _backoff(attempt)
        raise TransientError(f"BatchGetItem {table}: keys still unprocessed after {attempts} attempts")

    def record_lines(self, lines: Sequence[ClaimLine]) -> list[ClaimLine]:
        outcome = self._map(self._record_one, list(lines))
        recorded = [line for line, (new, _) in zip(lines, outcome, strict=True) if new]
        self.known_lines.update((x.line_id, x) for x in lines)
        self._recorded_ids.update(x.line_id for x in recorded)
        if self.tables.aggregates and self.writer is not None:
            owned = [line for line, (new, mine) in zip(lines, outcome, strict=True) if new or mine]
            self.put_contribution(activity_counts(owned))
        elif self.tables.aggregates and recorded:
            self.add_aggregates(activity_counts(recorded))
        return recorded

    def _record_one(self, line: ClaimLine) -> tuple[bool, bool]:
        """(newly recorded, recorded earlier by this same writer)."""
        # Trace-code sales first, the purchase last: the purchase item is the commit marker,
        # so a retry after a crash in between re-puts the sales (idempotent) and then the line.
        for code in line.trace_codes:
            self._record_sale(code, line)
        item: dict[str, Any] = {
            "psn_no": {"S": line.psn_no},
            "sk": {"S": purchase_sort_key(line)},
            "d": {"S": encode_line(line)},
            "expires_at": {"N": self._expires(line.fee_ocur_time)},
        }
        extra: dict[str, Any] = {}
        if self.writer is not None:
            item["w"] = {"S": self.writer}
            extra["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            self.ddb.put_item(
                TableName=self.tables.purchases,
                Item=item,
                ConditionExpression="attribute_not_exists(psn_no)",
                **extra,
            )
        except ClientError as exc:
            if _error_code(exc) == "ConditionalCheckFailedException":
                # already recorded: a retried chunk or a re-dropped file
                old: dict[str, Any] = dict(exc.response.get("Item") or {})  # type: ignore[call-overload]
                return False, self.writer is not None and old.get("w", {}).get("S") == self.writer
            raise _transient(exc, "PutItem purchases") from exc
        return True, False

    def _record_sale(self, code: str, line: ClaimLine) -> None:
        sale = TraceSale.of(line, code).encode()
        try:
            self.ddb.put_item(
                TableName=self.tables.trace_codes,
                Item={
                    "code": {"S": code},
                    "s": {"M": {line.line_id: {"S": sale}}},
                    "expires_at": {"N": self._expires(line.fee_ocur_time)},
                },
                ConditionExpression="attribute_not_exists(#code)",
                ExpressionAttributeNames={"#code": "code"},
            )
            self._fresh_scopes.add(Scope.trace(code))  # first sale ever: no finding can exist yet
            return
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise _transient(exc, "PutItem trace_codes") from exc
        try:  # the code was sold before (that is the reuse finding): add this sale once
            self.ddb.update_item(
                TableName=self.tables.trace_codes,
                Key={"code": {"S": code}},
                UpdateExpression="SET #s.#line = :sale, expires_at = :exp",
                ConditionExpression="attribute_not_exists(#s.#line)",
                ExpressionAttributeNames={"#s": "s", "#line": line.line_id},
                ExpressionAttributeValues={
                    ":sale": {"S": sale},
                    ":exp": {"N": self._expires(line.fee_ocur_time)},
                },
            )
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise _transient(exc, "UpdateItem trace_codes") from exc

    # ------------------------------------------------------------ aggregates
    def add_aggregates(self, counts: Mapping[tuple[str, str], Mapping[str, float]]) -> None:
        """ADD the counters, one UpdateItem per (period, subject)."""

        def one(entry: tuple[tuple[str, str], Mapping[str, float]]) -> None:
            (period, subject), counters = entry
            names = {f"#c{i}": name for i, name in enumerate(counters)}
            values: dict[str, Any] = {f":c{i}": {"N": repr(float(v))} for i, v in enumerate(counters.values())}
            try:
                self.ddb.update_item(
                    TableName=self.tables.aggregates,
                    Key={"period": {"S": period}, "subject": {"S": subject}},
                    UpdateExpression="ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(counters))),
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
            except ClientError as exc:
                raise _transient(exc, "UpdateItem aggregates") from exc

        self._map(one, [(k, v) for k, v in counts.items() if v])

    def put_contribution(self, counts: Mapping[ActivityKey, Mapping[str, float]]) -> None:
        """This writer's counters, packed per month into a few dense items
        (`~packed#<writer>#<part>`, a map of unit -> counters), written whole: idempotent
        however often the chunk runs. Packed because write units are billed per started KB
        of each item: one ~100-byte item per unit-month cost a whole unit each (17% of the
        batch's writes on a 5,000-line chunk), a dense item costs its size."""
        by_period: dict[str, dict[str, Mapping[str, float]]] = defaultdict(dict)
        for (period, subject), counters in counts.items():
            if counters:
                by_period[period][subject] = counters
        items: list[dict[str, Any]] = []
        for period, units in sorted(by_period.items()):
            part: dict[str, Any] = {}
            size = 0
            for subject, counters in sorted(units.items()):
                entry = {"M": {name: {"N": repr(float(value))} for name, value in sorted(counters.items())}}
                entry_size = len(subject) + sum(len(name) + 24 for name in counters)
                if part and size + entry_size > _PACKED_ITEM_BYTES:
                    items.append(self._packed_item(period, len(items), part))
                    part, size = {}, 0
                part[subject] = entry
                size += entry_size
            if part:
                items.append(self._packed_item(period, len(items), part))

        def one(item: dict[str, Any]) -> None:
            try:
                self.ddb.put_item(TableName=self.tables.aggregates, Item=item)
            except ClientError as exc:
                raise _transient(exc, "PutItem aggregates") from exc

        self._map(one, items)

    def _packed_item(self, period: str, index: int, units: dict[str, Any]) -> dict[str, Any]:
        return {
            "period": {"S": period},
            "subject": {"S": f"{_PACKED_PREFIX}{self.writer}#{index:04d}"},
            "units": {"M": units},
        }

    def update_flags(self, added: Mapping[ActivityKey, set[str]], removed: Mapping[ActivityKey, set[str]]) -> None:
        """Add / remove line ids in the `flagged` set of unit-months (set semantics: idempotent)."""
        ops = [("ADD", k, v) for k, v in added.items() if v] + [("DELETE", k, v) for k, v in removed.items() if v]

        def one(op: tuple[str, ActivityKey, set[str]]) -> None:
            verb, (period, subject), ids = op
            try:
                self.ddb.update_item(
                    TableName=self.tables.aggregates,
                    Key={"period": {"S": period}, "subject": {"S": subject}},
                    UpdateExpression=f"{verb} flagged :ids",
                    ExpressionAttributeValues={":ids": {"SS": sorted(ids)}},
                )
            except ClientError as exc:
                raise _transient(exc, "UpdateItem aggregates") from exc

        if self.tables.aggregates:
            self._map(one, ops)

    def load_activity(self, periods: Collection[str]) -> list[ActivityAggregate]:
        """Every unit's activity in these months (one Query per month)."""
        if not self.tables.aggregates:
            return []

        def one(period: str) -> list[ActivityAggregate]:
            items = self._query_all(
                TableName=self.tables.aggregates,
                KeyConditionExpression="#period = :p",
                ExpressionAttributeNames={"#period": "period"},
                ExpressionAttributeValues={":p": {"S": period}},
            )
            merged: dict[str, dict[str, Any]] = {}
            for item in items:
                if item["subject"]["S"].startswith(_PACKED_PREFIX):
                    parts = [(unit, counters["M"]) for unit, counters in item.get("units", {}).get("M", {}).items()]
                else:
                    parts = [(item["subject"]["S"].split("#", 1)[0], item)]
                for subject, values in parts:
                    _merge_activity(merged, item["period"], subject, values)
            return [a for a in map(_activity_from_item, merged.values()) if a is not None]

        found = [a for group in self._map(one, sorted(set(periods))) for a in group]
        return sorted(found, key=lambda a: (a.subject_type, a.code, a.period))

    def resolve_lines(self, line_ids: Collection[str]) -> dict[str, ClaimLine]:
        """The lines with these ids among those seen, loading the history of the patients
        known to own the others (trace-code sales name them)."""
        missing = [i for i in line_ids if i not in self.known_lines]
        owners = sorted({self.sale_owner[i] for i in missing if i in self.sale_owner})
        if owners:
            self.load_history(owners)
        return {i: self.known_lines[i] for i in line_ids if i in self.known_lines}

    def cached_findings(self) -> list[Finding]:
        """Current findings of every scope this instance loaded or replaced."""
        return [f for found in self._scopes.values() for f in found.values() if f.status != "superseded"]

    # ------------------------------------------------------------ findings
    def _load_scope(self, scope: str) -> dict[str, Finding]:
        items = self._query_all(
            TableName=self.tables.findings,
            IndexName="by_scope",
            KeyConditionExpression="#scope = :s",
            ExpressionAttributeNames={"#scope": "scope"},
            ExpressionAttributeValues={":s": {"S": scope}},
        )
        return {f.finding_id: f for f in map(_finding_from_item, items)}

    def load_findings(self, scopes: Collection[str]) -> dict[str, list[Finding]]:
        wanted = sorted(set(scopes))
        for scope in wanted:
            if scope in self._fresh_scopes:
                self._scopes.setdefault(scope, {})
        missing = [s for s in wanted if s not in self._scopes]
        for scope, found in zip(missing, self._map(self._load_scope, missing), strict=True):
            self._scopes[scope] = found
        return {
            s: sorted((f for f in self._scopes[s].values() if f.status != "superseded"), key=lambda f: f.finding_id)
            for s in wanted
        }

    def replace_findings(self, scope: str, findings: Sequence[Finding]) -> FindingChanges:
        if scope not in self._scopes:
            self._scopes[scope] = {} if scope in self._fresh_scopes else self._load_scope(scope)
        current = self._scopes[scope]
        now = datetime.now(UTC).isoformat()
        changes = FindingChanges()
        fresh: list[Finding] = []
        produced = {f.finding_id for f in findings}
        for finding in findings:
            old = current.get(finding.finding_id)
            if old is None:
                fresh.append(finding.model_copy(update={"status": "new"}))
                continue
            status = old.status if old.status in ("confirmed", "dismissed") else "new"
            merged = finding.model_copy(update={"status": status})
            if merged == old:
                changes.unchanged += 1
                continue
            changes.updated.append(self._update_finding(scope, merged, old, now))
        for fid, old in current.items():
            if fid not in produced and old.status != "superseded":
                gone = old.model_copy(update={"status": "superseded"})
                changes.superseded.append(self._update_finding(scope, gone, old, now))
        # New ids: the id is deterministic (rule + subject + evidence) and owned by this
        # scope, so an unconditional batched put is idempotent.
        self._batch_write(self.tables.findings, [{"PutRequest": {"Item": _finding_item(scope, f, now)}} for f in fresh])
        changes.new.extend(fresh)
        for f in [*fresh, *changes.updated, *changes.superseded]:
            current[f.finding_id] = f
        return changes

    def _update_finding(self, scope: str, finding: Finding, old: Finding, now: str) -> Finding:
        """Write a changed finding unless a reviewer changed its status since we read it;
        then keep the review and write again (once)."""
        for _ in range(2):
            try:
                self.ddb.put_item(
                    TableName=self.tables.findings,
                    Item=_finding_item(scope, finding, now),
                    ConditionExpression="#st = :old",
                    ExpressionAttributeNames={"#st": "status"},
                    ExpressionAttributeValues={":old": {"S": old.status}},
                )
                return finding
            except ClientError as exc:
                if _error_code(exc) != "ConditionalCheckFailedException":
                    raise _transient(exc, "PutItem findings") from exc
            stored = self.get_finding(finding.finding_id)
            if stored is None:
                raise TransientError("PutItem findings: finding vanished while being updated")
            old = stored
            if finding.status != "superseded" and stored.status in ("confirmed", "dismissed"):
                finding = finding.model_copy(update={"status": stored.status})
        raise TransientError("PutItem findings: status kept changing while being updated")

    def get_finding(self, finding_id: str) -> Finding | None:
        try:
            answer = self.ddb.get_item(TableName=self.tables.findings, Key={"finding_id": {"S": finding_id}})
        except ClientError as exc:
            raise _transient(exc, "GetItem findings") from exc
        item = answer.get("Item")
        return _finding_from_item(item) if item else None

    def _batch_write(self, table: str, requests: list[dict[str, Any]], attempts: int = 8) -> None:
        for start in range(0, len(requests), 25):
            pending: dict[str, Any] = {table: requests[start : start + 25]}
            for attempt in range(attempts):
                try:
                    answer = self.ddb.batch_write_item(RequestItems=pending)
                except ClientError as exc:
                    raise _transient(exc, f"BatchWriteItem {table}") from exc
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    break
                _backoff(attempt)
            else:
                raise TransientError(f"BatchWriteItem {table}: items still unprocessed after {attempts} attempts")


def _sales_from_item(code: str, item: Mapping[str, Any]) -> list[TraceSale]:
    sales = []
    for line_id, value in item.get("s", {}).get("M", {}).items():
        sales.append(TraceSale.decode(code, line_id, value["S"]))
    return sorted(sales)


# ---------------------------------------------------------------- batches


@dataclass(frozen=True)
class Claim:
    claimed: bool  # False: another execution owns this object (a duplicate event)
    started_at: str
    owner: str  # execution id that owns the batch


class BatchStore:
    """The batches table: one item per S3 object version (batch_id)."""

    def __init__(self, table: str, dynamodb_client: Any | None = None) -> None:
        self.table = table
        self.ddb = dynamodb_client if dynamodb_client is not None else client("dynamodb")

    def claim(self, batch_id: str, execution_id: str, source: Mapping[str, str | None], now: datetime) -> Claim:
        """Claim the batch for this execution: first claim wins; the same execution (a
        retried Prepare) and a re-drop after FAILED claim again."""
        item: dict[str, Any] = {
            "batch_id": {"S": batch_id},
            "execution_id": {"S": execution_id},
            "status": {"S": "RUNNING"},
            "started_at": {"S": now.isoformat()},
            "source": {"S": json.dumps(dict(source), separators=(",", ":"))},
        }
        try:
            self.ddb.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(batch_id) OR execution_id = :me OR #st = :failed",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={":me": {"S": execution_id}, ":failed": {"S": "FAILED"}},
            )
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise _transient(exc, "PutItem batches") from exc
            existing = self.get(batch_id) or {}
            return Claim(False, str(existing.get("started_at", "")), str(existing.get("execution_id", "")))
        return Claim(True, now.isoformat(), execution_id)

    def get(self, batch_id: str) -> dict[str, Any] | None:
        try:
            answer = self.ddb.get_item(TableName=self.table, Key={"batch_id": {"S": batch_id}}, ConsistentRead=True)
        except ClientError as exc:
            raise _transient(exc, "GetItem batches") from exc
        item = answer.get("Item")
        if not item:
            return None
        out: dict[str, Any] = {}
        for key, value in item.items():
            if "S" in value:
                out[key] = value["S"]
            elif "N" in value:
                out[key] = float(value["N"])
        for key in ("source", "report"):
            if key in out:
                out[key] = json.loads(out[key])
        return out

    def finish(self, batch_id: str, status: str, report: Mapping[str, Any], report_key: str, now: datetime) -> None:
        """Record the final status and the report's counts (the report itself is in S3)."""
        values: dict[str, Any] = {
            ":st": {"S": status},
            ":fin": {"S": now.isoformat()},
            ":rk": {"S": report_key},
            ":rep": {"S": _bounded_json(report)},
        }
        try:
            self.ddb.update_item(
                TableName=self.table,
                Key={"batch_id": {"S": batch_id}},
                UpdateExpression="SET #st = :st, finished_at = :fin, report_key = :rk, report = :rep",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            raise _transient(exc, "UpdateItem batches") from exc


def _bounded_json(data: Mapping[str, Any], limit: int = 300_000) -> str:
    """JSON for an item attribute; whole or a marker (an item is at most 400 KB)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text.encode("utf-8")) <= limit else json.dumps({"truncated": True, "status": data.get("status")})


# ---------------------------------------------------------------- results bucket


class ResultStore:
    """Objects of one bucket (the results bucket; Prepare also reads the ingest bucket)."""

    def __init__(self, bucket: str, s3_client: Any | None = None) -> None:
        self.bucket = bucket
        self.s3 = s3_client if s3_client is not None else client("s3")

    def put_bytes(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> str:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        except ClientError as exc:
            raise _transient(exc, "PutObject") from exc
        return f"s3://{self.bucket}/{key}"

    def put_json(self, key: str, data: Any) -> str:
        body = json.dumps(data, ensure_ascii=False, indent=1, default=str).encode("utf-8")
        return self.put_bytes(key, body, "application/json")

    def upload_file(self, key: str, path: Path, content_type: str = "application/x-ndjson") -> str:
        return self.put_bytes(key, path.read_bytes(), content_type)

    def get_bytes(self, key: str) -> bytes:
        try:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            raise _transient(exc, f"GetObject {key}") from exc

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _transient(exc, f"HeadObject {key}") from exc
        return True

    def download(self, key: str, path: Path, version_id: str | None = None) -> Path:
        """Stream an object to a local file (Prepare reads the dropped batch into /tmp)."""
        extra = {"VersionId": version_id} if version_id else {}
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=key, **extra)
        except ClientError as exc:
            raise _transient(exc, f"GetObject {key}") from exc
        with path.open("wb") as out:
            for chunk in answer["Body"].iter_chunks(1 << 20):
                out.write(chunk)
        return path


# ---------------------------------------------------------------- letter numbers (rxguard.letters.numbers)


class DynamoCounterStore:
    """Counters on the CountersTable (key `name`, number `value`): one UpdateItem ADD per
    number (atomic, no read), kept numbers as conditional puts (first writer wins)."""

    def __init__(self, table: str, dynamodb_client: Any) -> None:
        self.table = table
        self.ddb = dynamodb_client

    def next_counter(self, name: str) -> int:
        answer = self.ddb.update_item(
            TableName=self.table,
            Key={"name": {"S": name}},
            UpdateExpression="ADD #v :one",
            ExpressionAttributeNames={"#v": "value"},
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["value"]["N"])

    def kept(self, name: str) -> int | None:
        item = self.ddb.get_item(TableName=self.table, Key={"name": {"S": name}}, ConsistentRead=True).get("Item")
        return None if not item or "value" not in item else int(item["value"]["N"])

    def keep(self, name: str, value: int) -> int:
        try:
            self.ddb.put_item(
                TableName=self.table,
                Item={"name": {"S": name}, "value": {"N": str(value)}},
                ConditionExpression="attribute_not_exists(#n)",
                ExpressionAttributeNames={"#n": "name"},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            kept = self.kept(name)
            if kept is None:  # deleted between the two calls: cannot happen without an operator
                raise
            return kept
        return value
