"""AWS data access for the workflow and the API: DynamoDB (history, findings, batches,
aggregates) and the results bucket. With `rxguard.alerts.aws` and `rxguard_tools.offline` the
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

import base64
import json
import os
import random
import threading
import time
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import cache
from hashlib import blake2b
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from rxguard.engine.common import month_period
from rxguard.engine.institutions import ActivityAggregate, aggregate_from_counts
from rxguard.errors import AWS_THROTTLES, TransientError
from rxguard.models import ClaimLine, Finding
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


@cache
def client(service: str) -> Any:
    """A cached, counted boto3 client (thread-safe; created on first use). boto3 is imported
    here, not with the module: the local runtime uses this module's stores and codecs but
    never a client, and boto3 costs ~0.15-0.35 s to import in each of its processes."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
    return REQUESTS.hook(boto3.client(service, config=config))  # type: ignore[call-overload]


def reset_clients() -> None:
    """Forget cached clients (tests and the offline harness start a fresh moto per run)."""
    client.cache_clear()


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _transient(exc: ClientError, what: str) -> Exception:
    """Throttling and 5xx become TransientError (the state machine retries it)."""
    if _error_code(exc) in AWS_THROTTLES:
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


def _dispensing(line: ClaimLine) -> bool:
    """A line counts for institution-outlier: monitored, and not a reversal (not a dispensing)."""
    return line.monitored and not line.init_feedetl_sn


def activity_period(line: ClaimLine) -> str | None:
    """The month a line counts in for institution-outlier (None for an unmonitored line or a
    reversal)."""
    if not _dispensing(line):
        return None
    return month_period(line.fee_ocur_time.year, line.fee_ocur_time.month)


def activity_periods(lines: Iterable[ClaimLine]) -> set[str]:
    """The months the lines count in (`activity_period` of each, None left out; the text made
    once a month, not once a line)."""
    months = {(x.fee_ocur_time.year, x.fee_ocur_time.month) for x in lines if _dispensing(x)}
    return {month_period(year, month) for year, month in months}


def activity_units(line: ClaimLine) -> list[ActivityKey]:
    """The institution-outlier units a monitored line counts for (none for an unmonitored line
    or a reversal, which is not a dispensing)."""
    period = activity_period(line)
    if period is None:
        return []
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


def _activity_from_item(item: Mapping[str, Any]) -> ActivityAggregate | None:
    subject = Scope.parse(item["subject"]["S"])
    lines = int(float(item.get("monitored_lines", {}).get("N", "0")))
    if lines <= 0 or subject.kind not in ("institution", "prescriber"):
        return None
    regions = {k[2:]: float(v["N"]) for k, v in item.items() if k.startswith("a:") and "N" in v}
    places = {k[2:]: float(v["N"]) for k, v in item.items() if k.startswith("i:") and "N" in v}
    flagged = item.get("flagged", {}).get("SS", [])
    return aggregate_from_counts(subject, item["period"]["S"], regions, flagged, places, monitored_lines=lines)


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
        "body": {"B": pack(body, FINDINGS_DICT)},  # compressed: most of a finding's bytes
        "expires_at": {"N": str(_epoch(finding.occurred_at + FINDING_RETENTION))},  # TTL (docs/security.md)
    }
    if finding.fixmedins_code:
        item["fixmedins_code"] = {"S": finding.fixmedins_code}
    return item


def finding_body(value: Any) -> dict[str, Any]:
    """A FindingsTable item's `body`, as the low-level client (`{"B": ...}`, `{"S": ...}`) or
    a deserializer (bytes, Binary, str) gives it: packed (`B`), or JSON text (items written
    before bodies were packed)."""
    if isinstance(value, Mapping):
        value = value["B"] if "B" in value else value["S"]
    if isinstance(value, str):
        return dict(json.loads(value))
    return dict(unpack(_bytes(getattr(value, "value", value))))


def finding_from_item(item: Mapping[str, Any]) -> Finding:
    """The finding of a FindingsTable item (low-level client form)."""
    data = finding_body(item["body"])
    data["status"] = item["status"]["S"]
    return Finding.model_validate(data)


# ---------------------------------------------------------------- packs (docs/storage-aws.md)

PACK_SLICE_BYTES = 350_000  # payload bytes an item holds; DynamoDB's limit is 400 KB with names and keys
FINDINGS_KEPT_BYTES = 100_000  # a head keeps its patient's findings up to this packed size
HOT_MONTHS = 2  # months a head keeps (the newest and the one before); older months go to archives
HEAD_SK = "h"
ARCHIVE_PREFIX = "m#"
REGISTRY_PK = "~writers"  # the registry partition of PurchasesTable (a psn_no never starts with "~")
REGISTRY_WINDOW = timedelta(minutes=20)  # longer than the Screen Lambda's timeout
REGISTRY_MARGIN = timedelta(seconds=5)  # clock skew between Lambdas (pack reads are strongly consistent)
TRACE_BUCKET_TAIL = 7  # a bucket is a code without its last 7 characters


DICTIONARIES_FILE = Path(__file__).with_name("pack_dictionaries.json")
LINES_DICT, FINDINGS_DICT, SALES_DICT = "L1", "F1", "S1"  # the versions new packs are written with


@cache
def _dictionary(name: str) -> bytes:
    """A frozen preset deflate dictionary (scripts/pack_dictionaries.py made them; a pack
    names the one it was written with, so a new version is added, never edited)."""
    try:
        return str(json.loads(DICTIONARIES_FILE.read_text(encoding="utf-8"))[name]).encode("utf-8")
    except KeyError:
        raise ValueError(f"{DICTIONARIES_FILE.name}: no pack dictionary {name!r}") from None


def pack(data: Any, dictionary: str | None = None) -> bytes:
    """JSON, then compressed when that is smaller. With `dictionary` (a 2-character name):
    raw deflate level 9 primed with that preset dictionary, first bytes `d<name>` (small
    packs compress to about 60-70% of plain zlib's size: the names and common values are
    in the dictionary). Without: zlib level 6, first byte `z`; raw: `j`."""
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if dictionary is not None:
        squeezer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _dictionary(dictionary))
        squeezed = b"d" + dictionary.encode("ascii") + squeezer.compress(raw) + squeezer.flush()
    else:
        squeezed = b"z" + zlib.compress(raw, 6)
    return squeezed if len(squeezed) <= len(raw) else b"j" + raw


def unpack(payload: bytes) -> Any:
    if not payload:
        return None
    kind = payload[:1]
    if kind == b"d":
        opener = zlib.decompressobj(-15, zdict=_dictionary(payload[1:3].decode("ascii")))
        body = opener.decompress(payload[3:]) + opener.flush()
    elif kind == b"z":
        body = zlib.decompress(payload[1:])
    elif kind == b"j":
        body = payload[1:]
    else:
        raise ValueError(f"unknown pack encoding {kind!r}")
    return json.loads(body)


def line_record(line: ClaimLine, writer: str | None = None) -> dict[str, Any]:
    """A line as a compact dict (short names, no psn_no, no defaults) plus its writer."""
    data = line.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
    data.pop("psn_no", None)
    record = {_SHORT.get(k, k): v for k, v in data.items()}
    if writer:
        record["~w"] = writer
    return record


def line_from_record(psn_no: str, record: Mapping[str, Any]) -> tuple[ClaimLine, str | None]:
    data = {_LONG.get(k, k): v for k, v in record.items() if k != "~w"}
    data["psn_no"] = psn_no
    return ClaimLine.model_validate(data), record.get("~w")


def trace_bucket(code: str) -> str:
    """The trace-code bucket of a code: the code without its last characters, so the codes
    of one carton (same product, neighbouring serials) share an item."""
    return "t#" + (code[:-TRACE_BUCKET_TAIL] if len(code) > TRACE_BUCKET_TAIL + 1 else code)


def _slices(payload: bytes) -> list[bytes]:
    return [payload[i : i + PACK_SLICE_BYTES] for i in range(0, max(len(payload), 1), PACK_SLICE_BYTES)] or [b""]


def _month_end(month: str) -> datetime:
    year, mon = (int(x) for x in month.split("-"))
    return datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)


def _hash(key: str) -> str:
    """3 bytes of a keyed hash: enough to tell two writers' packs apart, far too few to
    identify a patient (thousands of patient numbers share each value)."""
    return blake2b(key.encode("utf-8"), digest_size=3, key=b"rxguard-writers").hexdigest()


@dataclass
class _PatientPack:
    """Everything stored for one patient, as read (plus what this instance added)."""

    psn_no: str
    lines: dict[str, ClaimLine] = field(default_factory=dict)
    writers: dict[str, str] = field(default_factory=dict)  # line_id -> writer
    versions: dict[str, str] = field(default_factory=dict)  # sk of each stored base item -> version
    archived: set[str] = field(default_factory=set)  # months in archive items
    findings: dict[str, Finding] | None = None  # the scope's findings, superseded included; None: not kept
    stored: bool = False  # a head existed when read
    dirty: set[str] = field(default_factory=set)  # base sks to write ("h", "m#YYYY-MM")

    def months(self) -> dict[str, list[ClaimLine]]:
        out: dict[str, list[ClaimLine]] = defaultdict(list)
        for line in self.lines.values():
            out[f"{line.fee_ocur_time:%Y-%m}"].append(line)
        return out

    def hot_cutoff(self) -> str:
        months = sorted(self.months())
        return months[-HOT_MONTHS] if len(months) >= HOT_MONTHS else (months[0] if months else "")


@dataclass
class _Bucket:
    key: str
    sales: dict[str, dict[str, str]] = field(default_factory=dict)  # code -> line_id -> "time|psn|fixmedins"
    version: str | None = None
    latest: str = ""  # ISO time of the latest sale (for the TTL)


class DynamoRepository(HistoryRepository):
    """`HistoryRepository` on DynamoDB with packed items (docs/storage-aws.md). One instance
    serves one chunk or one request: it caches what it read, buffers finding writes until
    `flush()` (screen_lines calls it) and writes packs with `BatchWriteItem`, conditionally
    only where another writer may be writing the same pack."""

    def __init__(
        self,
        tables: TableNames,
        dynamodb_client: Any | None = None,
        *,
        history_days: int = 400,
        max_workers: int = 8,
        writer: str | None = None,
        buffered: bool = False,
    ) -> None:
        """`writer` names the unit of work (a chunk of a batch: `<batch>-<index>`, no `#`).
        With it, each line remembers its writer, and the writer's activity counters are
        written whole, so a retried chunk counts each of its lines exactly once. Without
        it (the API's dispensations), counters are incremented with ADD.

        `buffered`: new findings, the patients' packs and their copies of findings are
        written at `flush()` (in batches across scopes, one write per patient) instead of
        at each `record_lines` / `replace_findings`; the caller must call `flush()`
        (screen_lines does)."""
        if writer is not None and "#" in writer:
            raise ValueError("DynamoRepository writer must not contain '#'")
        self.writer = writer
        self.tables = tables
        self.ddb = dynamodb_client if dynamodb_client is not None else client("dynamodb")
        self.history_days = history_days
        self.max_workers = max_workers
        self.buffered = buffered
        self._token = f"{writer or 'api'}.{uuid.uuid4().hex[:12]}"  # names this instance in the registry
        self._version_prefix = base64.urlsafe_b64encode(os.urandom(6)).decode("ascii")  # 8 characters
        self._writes = 0
        self._registered: datetime | None = None
        self._registered_hashes: set[str] = set()
        self._patients: dict[str, _PatientPack] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._scopes: dict[str, dict[str, Finding]] = {}  # non-patient scopes: finding_id -> finding
        self._pending_puts: dict[str, tuple[str, Finding]] = {}  # finding_id -> (scope, new finding) to write
        self._heads_to_flush: set[str] = set()  # patients whose kept findings changed
        self._lines_to_flush: set[str] = set()  # patients with lines recorded, not written yet (buffered)
        self.known_lines: dict[str, ClaimLine] = {}  # lines seen by this instance (loaded or recorded)
        self.sale_owner: dict[str, str] = {}  # line_id -> psn_no, from the trace-code sales loaded
        self._fresh_scopes: set[str] = set()  # trace scopes first sold here: no finding can exist

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

    def _version(self) -> str:
        self._writes += 1
        return f"{self._version_prefix}{self._writes:x}"  # short: every pack item carries one

    def _batch_get(
        self, table: str, keys: list[dict[str, Any]], attempts: int = 8, consistent: bool = False
    ) -> list[dict[str, Any]]:
        """Items of these keys: `BatchGetItem` 100 keys a request (requests in parallel),
        `UnprocessedKeys` retried with backoff."""

        def one(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            request: dict[str, Any] = {table: {"Keys": group, "ConsistentRead": consistent}}
            for attempt in range(attempts):
                try:
                    answer = self.ddb.batch_get_item(RequestItems=request)
                except ClientError as exc:
                    raise _transient(exc, f"BatchGetItem {table}") from exc
                found.extend(answer.get("Responses", {}).get(table, []))
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    return found
                _backoff(attempt)
            raise TransientError(f"BatchGetItem {table}: keys still unprocessed after {attempts} attempts")

        groups = [keys[i : i + 100] for i in range(0, len(keys), 100)]
        return [item for group in self._map(one, groups) for item in group]

    def _batch_write(self, table: str, requests: list[dict[str, Any]], attempts: int = 8) -> None:
        """`BatchWriteItem` 25 requests at a time (in parallel), `UnprocessedItems` retried
        with backoff; still unprocessed after `attempts`: TransientError (the chunk is retried)."""

        def one(group: list[dict[str, Any]]) -> None:
            pending: dict[str, Any] = {table: group}
            for attempt in range(attempts):
                try:
                    answer = self.ddb.batch_write_item(RequestItems=pending)
                except ClientError as exc:
                    raise _transient(exc, f"BatchWriteItem {table}") from exc
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    return
                _backoff(attempt)
            raise TransientError(f"BatchWriteItem {table}: items still unprocessed after {attempts} attempts")

        self._map(one, [requests[i : i + 25] for i in range(0, len(requests), 25)])

    # ------------------------------------------------------------ writer registry
    def _register(self, hashes: set[str]) -> None:
        """Announce the packs this instance is about to write (one PutItem)."""
        hashes = hashes | self._registered_hashes
        if hashes == self._registered_hashes and self._registered is not None:
            return
        if self._registered is None:
            self._registered = datetime.now(UTC)
        self._registered_hashes = hashes
        try:
            self.ddb.put_item(TableName=self.tables.purchases, Item=self._registry_item(None))
        except ClientError as exc:
            raise _transient(exc, "PutItem registry") from exc

    def _registry_item(self, finished: datetime | None) -> dict[str, Any]:
        assert self._registered is not None
        item: dict[str, Any] = {
            "psn_no": {"S": REGISTRY_PK},
            "sk": {"S": f"{self._registered.isoformat()}#{self._token}"},
            "h": {"B": bytes.fromhex("".join(sorted(self._registered_hashes))) or b"\0"},
            "expires_at": {"N": str(_epoch(self._registered + timedelta(days=1)))},
        }
        if finished is not None:
            item["fin"] = {"S": finished.isoformat()}
        return item

    def _contended(self) -> set[str]:
        """Hashes of packs that another writer may be writing now (one consistent Query)."""
        assert self._registered is not None
        since = (self._registered - REGISTRY_WINDOW).isoformat()
        mine = f"{self._registered.isoformat()}#{self._token}"
        out: set[str] = set()
        for item in self._query_all(
            TableName=self.tables.purchases,
            KeyConditionExpression="psn_no = :p AND sk >= :since",
            ExpressionAttributeValues={":p": {"S": REGISTRY_PK}, ":since": {"S": since}},
            ConsistentRead=True,
        ):
            if item["sk"]["S"] == mine:
                continue
            finished = item.get("fin", {}).get("S")
            if finished and datetime.fromisoformat(finished) < self._registered - REGISTRY_MARGIN:
                continue
            raw = item["h"]["B"]
            out.update(raw[i : i + 3].hex() for i in range(0, len(raw) - 2, 3))
        return out & self._registered_hashes

    def flush(self) -> None:
        """Write the buffered findings and the heads whose kept findings changed, then mark
        this writer finished in the registry."""
        self._flush_writes()
        if self._registered is not None:
            try:
                self.ddb.put_item(TableName=self.tables.purchases, Item=self._registry_item(datetime.now(UTC)))
            except ClientError as exc:
                raise _transient(exc, "PutItem registry") from exc

    def _flush_writes(self) -> None:
        """Findings first, then the packs (a pack is the commit marker of its lines: a crash
        in between leaves lines unrecorded, and the retried chunk recomputes)."""
        self._flush_findings()
        heads = sorted(self._heads_to_flush | self._lines_to_flush)
        self._heads_to_flush.clear()
        self._lines_to_flush.clear()
        if heads:
            for psn in heads:
                self._patients[psn].dirty.add(HEAD_SK)
            self._write_patients([self._patients[p] for p in heads], check_lines=True)

    # ------------------------------------------------------------ patient packs
    def _patient_items(self, pp: _PatientPack) -> dict[str, list[dict[str, Any]]]:
        """The items (base + slices) of each dirty base sk of a patient."""
        months = pp.months()
        cutoff = pp.hot_cutoff()
        archived = {m for m in months if m < cutoff}
        out: dict[str, list[dict[str, Any]]] = {}
        for sk in sorted(pp.dirty):
            if sk == HEAD_SK:
                hot = [x for m, group in months.items() if m >= cutoff for x in group]
                lines = sorted(hot, key=lambda x: (x.fee_ocur_time, x.line_id))
                extra: dict[str, Any] = {}
                if archived | pp.archived:
                    extra["am"] = {"SS": sorted(archived | pp.archived)}
                if pp.findings is not None:
                    blob = pack(
                        [f.model_dump(mode="json") for f in sorted(pp.findings.values(), key=_fid)], FINDINGS_DICT
                    )
                    if len(blob) <= FINDINGS_KEPT_BYTES:
                        extra["f"] = {"B": blob}
                        extra["fk"] = {"N": "1"}
                latest = max((x.fee_ocur_time for x in pp.lines.values()), default=datetime.now(UTC))
                expires = self._expires(latest)
            else:
                month = sk.removeprefix(ARCHIVE_PREFIX)
                lines = sorted(months.get(month, []), key=lambda x: (x.fee_ocur_time, x.line_id))
                extra = {}
                expires = self._expires(_month_end(month))
            payload = pack_lines(lines, pp.writers)
            out[sk] = self._sliced(pp.psn_no, sk, payload, extra, expires)
        return out

    def _sliced(
        self, psn_no: str, sk: str, payload: bytes, extra: dict[str, Any], expires: str
    ) -> list[dict[str, Any]]:
        version = self._version()
        parts = _slices(payload)
        base: dict[str, Any] = {
            "psn_no": {"S": psn_no},
            "sk": {"S": sk},
            "p": {"B": parts[0]},
            "v": {"S": version},
            "expires_at": {"N": expires},
            **extra,
        }
        if len(parts) > 1:
            base["np"] = {"N": str(len(parts))}
        items = [base]
        for index, part in enumerate(parts[1:], start=1):
            items.append(
                {
                    "psn_no": {"S": psn_no},
                    "sk": {"S": f"{sk}#{index}"},
                    "p": {"B": part},
                    "v": {"S": version},
                    "expires_at": {"N": expires},
                }
            )
        return items

    def _read_patients(self, psn_nos: Sequence[str], consistent: bool = False) -> dict[str, _PatientPack]:
        """Read the stored packs of these patients: a Query each for a few patients (one
        round trip), else BatchGetItem rounds (heads, then archives and slices)."""
        items: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in psn_nos}
        if len(psn_nos) <= 4:

            def query(psn: str) -> list[dict[str, Any]]:
                return list(
                    self._query_all(
                        TableName=self.tables.purchases,
                        KeyConditionExpression="psn_no = :p",
                        ExpressionAttributeValues={":p": {"S": psn}},
                        ConsistentRead=consistent,
                    )
                )

            for psn, found in zip(psn_nos, self._map(query, list(psn_nos)), strict=True):
                items[psn] = {i["sk"]["S"]: i for i in found}
        else:
            wanted = [(p, HEAD_SK) for p in psn_nos]
            while wanted:
                keys = [{"psn_no": {"S": p}, "sk": {"S": sk}} for p, sk in wanted]
                for item in self._batch_get(self.tables.purchases, keys, consistent=consistent):
                    items[item["psn_no"]["S"]][item["sk"]["S"]] = item
                wanted = sorted({(psn, sk) for psn, by_sk in items.items() for sk in _missing_keys(by_sk)})
        return {psn: self._assemble(psn, by_sk) for psn, by_sk in items.items()}

    def _assemble(self, psn: str, by_sk: Mapping[str, Mapping[str, Any]]) -> _PatientPack:
        return self._assemble_static(psn, by_sk)

    @staticmethod
    def _assemble_static(psn: str, by_sk: Mapping[str, Mapping[str, Any]]) -> _PatientPack:
        out = _PatientPack(psn)
        head = by_sk.get(HEAD_SK)
        if head is None:
            out.findings = {}
            return out
        out.stored = True
        out.archived = set(head.get("am", {}).get("SS", []))
        for sk in [HEAD_SK, *(ARCHIVE_PREFIX + m for m in sorted(out.archived))]:
            base = by_sk.get(sk)
            if base is None:
                raise TransientError("purchases: an archive month named by a head is missing")
            out.versions[sk] = base["v"]["S"]
            payload = _joined(by_sk, sk)
            for record in unpack(payload) or []:
                line, writer = line_from_record(psn, record)
                out.lines.setdefault(line.line_id, line)
                if writer:
                    out.writers.setdefault(line.line_id, writer)
        if "fk" in head:
            out.findings = {
                f.finding_id: f for f in (Finding.model_validate(x) for x in unpack(_bytes(head["f"]["B"])) or [])
            }
        return out

    def _ensure_patients(self, psn_nos: Collection[str], consistent: bool = False) -> None:
        missing = sorted(p for p in set(psn_nos) if p not in self._patients)
        if missing:
            for psn, found in self._read_patients(missing, consistent).items():
                self._patients[psn] = found
                self.known_lines.update(found.lines)

    def _write_patients(
        self, packs: Sequence[_PatientPack], *, check_lines: bool = False, contended: set[str] | None = None
    ) -> None:
        """Write the dirty items of these patients: batched, or conditionally for contended
        ones (re-read, merge, write again on a failed condition)."""
        packs = [p for p in packs if p.dirty]
        if not packs:
            return
        if contended is None:
            self._register({_hash("p:" + p.psn_no) for p in packs})
            contended = self._contended()
        free = [p for p in packs if _hash("p:" + p.psn_no) not in contended]
        busy = [p for p in packs if _hash("p:" + p.psn_no) in contended]
        requests: list[dict[str, Any]] = []
        for p in free:
            for sk, items in self._patient_items(p).items():
                requests.extend({"PutRequest": {"Item": i}} for i in items)
                p.versions[sk] = items[0]["v"]["S"]
            p.archived |= {sk.removeprefix(ARCHIVE_PREFIX) for sk in p.dirty if sk != HEAD_SK}
            p.dirty.clear()
        self._batch_write(self.tables.purchases, requests)
        self._map(lambda p: self._write_contended_patient(p, check_lines), busy)

    def _write_contended_patient(self, pp: _PatientPack, check_lines: bool, attempts: int = 8) -> None:
        for _ in range(attempts):
            try:
                for sk, items in sorted(self._patient_items(pp).items(), key=lambda kv: kv[0] == HEAD_SK):
                    for item in items[1:]:  # slices first, unconditionally: the base commits them
                        self.ddb.put_item(TableName=self.tables.purchases, Item=item)
                    old = pp.versions.get(sk)
                    self.ddb.put_item(
                        TableName=self.tables.purchases,
                        Item=items[0],
                        ConditionExpression="v = :old" if old else "attribute_not_exists(psn_no)",
                        **({"ExpressionAttributeValues": {":old": {"S": old}}} if old else {}),
                    )
                    pp.versions[sk] = items[0]["v"]["S"]
                    pp.dirty.discard(sk)
                    if sk != HEAD_SK:
                        pp.archived.add(sk.removeprefix(ARCHIVE_PREFIX))
                return
            except ClientError as exc:
                if _error_code(exc) != "ConditionalCheckFailedException":
                    raise _transient(exc, "PutItem purchases") from exc
            fresh = self._read_patients([pp.psn_no], consistent=True)[pp.psn_no]
            if check_lines and set(fresh.lines) - set(pp.lines):
                # lines this reconciliation did not see: retry the chunk over all of them
                raise TransientError("purchases: a concurrent writer added lines to a patient being screened")
            added = {i: x for i, x in pp.lines.items() if i not in fresh.lines}
            fresh.lines.update(added)
            fresh.writers.update({i: w for i, w in pp.writers.items() if i in added})
            if check_lines and pp.findings is not None:
                fresh.findings = pp.findings  # ours, reconciled over the same lines
            months = {f"{x.fee_ocur_time:%Y-%m}" for x in added.values()}
            cutoff = fresh.hot_cutoff()
            fresh.dirty = {HEAD_SK, *(ARCHIVE_PREFIX + m for m in months if m < cutoff)}
            pp.lines, pp.writers, pp.versions = fresh.lines, fresh.writers, fresh.versions
            pp.archived, pp.dirty, pp.stored = fresh.archived, fresh.dirty, fresh.stored
            pp.findings = fresh.findings
            self.known_lines.update(fresh.lines)
        raise TransientError("purchases: a patient's pack kept changing while being written")

    # ------------------------------------------------------------ trace-code buckets
    def _ensure_buckets(self, keys: Collection[str], consistent: bool = False) -> None:
        missing = sorted(k for k in set(keys) if k not in self._buckets)
        for key in missing:
            self._buckets[key] = _Bucket(key)
        if not missing:
            return
        for item in self._batch_get(
            self.tables.trace_codes, [{"code": {"S": k}} for k in missing], consistent=consistent
        ):
            bucket = _bucket_from_item(item)
            self._buckets[bucket.key] = bucket
            for sales in bucket.sales.values():
                for line_id, sale in sales.items():
                    self.sale_owner[line_id] = sale.split("|", 2)[1]

    def _bucket_item(self, bucket: _Bucket) -> dict[str, Any]:
        bucket.version = self._version()
        latest = datetime.fromisoformat(bucket.latest) if bucket.latest else datetime.now(UTC)
        return {
            "code": {"S": bucket.key},
            "s": {"B": pack(_sales_by_line(bucket), SALES_DICT)},
            "v": {"S": bucket.version},
            "expires_at": {"N": self._expires(latest)},
        }

    def _write_buckets(self, buckets: Sequence[tuple[_Bucket, dict[str, dict[str, str]]]], contended: set[str]) -> None:
        """Write buckets with their added sales; contended ones conditionally (merge on conflict)."""
        if not buckets:
            return
        free = [b for b, _ in buckets if _hash(b.key) not in contended]
        busy = [(b, added) for b, added in buckets if _hash(b.key) in contended]
        old_versions = {b.key: b.version for b, _ in busy}
        self._batch_write(self.tables.trace_codes, [{"PutRequest": {"Item": self._bucket_item(b)}} for b in free])

        def one(entry: tuple[_Bucket, dict[str, dict[str, str]]]) -> None:
            bucket, added = entry
            old = old_versions[bucket.key]
            for _ in range(8):
                item = self._bucket_item(bucket)
                try:
                    self.ddb.put_item(
                        TableName=self.tables.trace_codes,
                        Item=item,
                        ConditionExpression="v = :old" if old else "attribute_not_exists(code)",
                        **({"ExpressionAttributeValues": {":old": {"S": old}}} if old else {}),
                    )
                    return
                except ClientError as exc:
                    if _error_code(exc) != "ConditionalCheckFailedException":
                        raise _transient(exc, "PutItem trace_codes") from exc
                answer = self._batch_get(self.tables.trace_codes, [{"code": {"S": bucket.key}}], consistent=True)
                fresh = _bucket_from_item(answer[0]) if answer else _Bucket(bucket.key)
                for code, sales in added.items():
                    for line_id, sale in sales.items():
                        fresh.sales.setdefault(code, {}).setdefault(line_id, sale)
                        fresh.latest = max(fresh.latest, sale.split("|", 1)[0])
                bucket.sales, bucket.latest, old = fresh.sales, fresh.latest, fresh.version
            raise TransientError("trace_codes: a bucket kept changing while being written")

        self._map(one, busy)

    # ------------------------------------------------------------ history
    def load_history(self, psn_nos: Collection[str]) -> dict[str, list[ClaimLine]]:
        self._ensure_patients(psn_nos)
        return {
            p: sorted(self._patients[p].lines.values(), key=lambda x: (x.fee_ocur_time, x.line_id))
            for p in sorted(set(psn_nos))
        }

    def load_trace_sales(self, codes: Collection[str]) -> dict[str, list[TraceSale]]:
        wanted = sorted(set(codes))
        self._ensure_buckets({trace_bucket(c) for c in wanted})
        out: dict[str, list[TraceSale]] = {}
        for code in wanted:
            sales = self._buckets[trace_bucket(code)].sales.get(code, {})
            out[code] = _sales_of(code, sales)
        return out

    def record_lines(self, lines: Sequence[ClaimLine], bodies: Mapping[str, str] | None = None) -> list[ClaimLine]:
        del bodies  # the lines are packed here, not stored as JSON
        if not lines:
            return []
        patients = sorted({x.psn_no for x in lines})
        buckets = sorted({trace_bucket(c) for x in lines for c in x.trace_codes})
        # announce first, then read: a writer registering later sees this one (docs/storage-aws.md)
        self._register({_hash("p:" + p) for p in patients} | {_hash(b) for b in buckets})
        self._ensure_patients(patients, consistent=True)
        self._ensure_buckets(buckets, consistent=True)
        outcome: list[tuple[bool, bool]] = []
        for line in lines:
            found = self._patients[line.psn_no]
            if line.line_id in found.lines:
                mine = self.writer is not None and found.writers.get(line.line_id) == self.writer
                outcome.append((False, mine))
                continue
            found.lines[line.line_id] = line
            if self.writer:
                found.writers[line.line_id] = self.writer
            found.dirty.add(HEAD_SK)
            month = f"{line.fee_ocur_time:%Y-%m}"
            if month in found.archived or month < found.hot_cutoff():
                found.dirty.add(ARCHIVE_PREFIX + month)
            outcome.append((True, False))
        # months leaving the head move to their archive items
        for psn in patients:
            found = self._patients[psn]
            if HEAD_SK in found.dirty:
                cutoff = found.hot_cutoff()
                found.dirty |= {ARCHIVE_PREFIX + m for m in found.months() if m < cutoff and m not in found.archived}
        # trace-code sales (every line's, so a retry after a crash completes them), then the packs
        touched: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
        for line in lines:
            for code in dict.fromkeys(line.trace_codes):
                bucket = self._buckets[trace_bucket(code)]
                sales = bucket.sales.setdefault(code, {})
                if not sales:
                    self._fresh_scopes.add(Scope.trace(code))  # first sale ever: no finding can exist yet
                if line.line_id not in sales:
                    sale = TraceSale.of(line, code).encode()  # with a return (退费) or split units (拆零)
                    sales[line.line_id] = sale
                    touched[bucket.key].setdefault(code, {})[line.line_id] = sale
                    bucket.latest = max(bucket.latest, line.fee_ocur_time.isoformat())
                    self.sale_owner[line.line_id] = line.psn_no
        contended = self._contended()
        self._write_buckets([(self._buckets[k], added) for k, added in sorted(touched.items())], contended)
        if self.buffered:  # one write per patient at flush(), with its findings
            self._lines_to_flush.update(p for p in patients if self._patients[p].dirty)
        else:
            self._write_patients([self._patients[p] for p in patients], contended=contended)
        recorded = [line for line, (new, _) in zip(lines, outcome, strict=True) if new]
        self.known_lines.update((x.line_id, x) for x in lines)
        if self.tables.aggregates and self.writer is not None:
            owned = [line for line, (new, mine) in zip(lines, outcome, strict=True) if new or mine]
            self.put_contribution(activity_counts(owned))
        elif self.tables.aggregates and recorded:
            self.add_aggregates(activity_counts(recorded))
        return recorded

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
        out = [f for found in self._scopes.values() for f in found.values() if f.status != "superseded"]
        for pp in self._patients.values():
            if pp.findings is not None:
                out.extend(f for f in pp.findings.values() if f.status != "superseded")
        return out

    # ------------------------------------------------------------ findings
    def _load_scope(self, scope: str) -> dict[str, Finding]:
        """A scope's findings: their ids from `by_scope` (keys only: its copies would cost a
        write unit per finding write), then the items in batches."""
        keys = [
            {"finding_id": item["finding_id"]}
            for item in self._query_all(
                TableName=self.tables.findings,
                IndexName="by_scope",
                KeyConditionExpression="#scope = :s",
                ExpressionAttributeNames={"#scope": "scope"},
                ExpressionAttributeValues={":s": {"S": scope}},
            )
        ]
        items = self._batch_get(self.tables.findings, keys) if keys else []
        return {f.finding_id: f for f in map(finding_from_item, items) if f.finding_id}

    def _scope_findings(self, scope: str) -> dict[str, Finding]:
        """The stored findings of a scope (superseded included), from the patient's head
        when it keeps them, else from the by_scope index (cached)."""
        parsed = Scope.parse(scope)
        if parsed.kind == "patient":
            psn = parsed.key
            self._ensure_patients([psn])
            pp = self._patients[psn]
            if pp.findings is None:
                pp.findings = self._load_scope(scope)
            return pp.findings
        if scope not in self._scopes:
            self._scopes[scope] = {} if scope in self._fresh_scopes else self._load_scope(scope)
        return self._scopes[scope]

    def load_findings(self, scopes: Collection[str]) -> dict[str, list[Finding]]:
        wanted = sorted(set(scopes))
        patients = {s: Scope.parse(s).key for s in wanted if Scope.parse(s).kind == "patient"}
        self._ensure_patients(list(patients.values()))
        queried = [s for s in wanted if s not in patients and s not in self._scopes]
        queried += [s for s, p in patients.items() if self._patients[p].findings is None]
        for scope, found in zip(queried, self._map(self._scope_findings, queried), strict=True):
            if scope not in patients:
                self._scopes[scope] = found
        return {
            s: sorted((f for f in self._scope_findings(s).values() if f.status != "superseded"), key=_fid)
            for s in wanted
        }

    def replace_findings(self, scope: str, findings: Sequence[Finding]) -> FindingChanges:
        current = self._scope_findings(scope)
        now = datetime.now(UTC).isoformat(timespec="seconds")
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
            changes.updated.append(self._changed(scope, merged, old, now))
        for fid, old in sorted(current.items()):
            if fid not in produced and old.status != "superseded":
                gone = old.model_copy(update={"status": "superseded"})
                changes.superseded.append(self._changed(scope, gone, old, now))
        # New ids: deterministic (rule + subject + evidence) and owned by this scope; written
        # in batches at flush(), after a batched read confirms they are really new.
        self._pending_puts.update((f.finding_id, (scope, f)) for f in fresh)
        changes.new.extend(fresh)
        for f in [*fresh, *changes.updated, *changes.superseded]:
            current[f.finding_id] = f
        if Scope.parse(scope).kind == "patient" and (fresh or changes.updated or changes.superseded):
            self._heads_to_flush.add(Scope.parse(scope).key)
        if not self.buffered or len(self._pending_puts) >= 500:
            self._flush_writes()
        return changes

    def _changed(self, scope: str, finding: Finding, old: Finding, now: str) -> Finding:
        """A changed finding: still buffered (not written yet) -> replace it in the buffer."""
        if finding.finding_id in self._pending_puts:
            self._pending_puts[finding.finding_id] = (scope, finding)
            return finding
        return self._update_finding(scope, finding, old, now)

    def _flush_findings(self) -> None:
        pending, self._pending_puts = list(self._pending_puts.values()), {}
        if not pending:
            return
        # a head's copy can be stale after a crash between the two writes: keep a review
        keys = [{"finding_id": {"S": f.finding_id}} for _, f in pending]
        stored = {
            i["finding_id"]["S"]: i["status"]["S"] for i in self._batch_get(self.tables.findings, keys) if "status" in i
        }
        now = datetime.now(UTC).isoformat(timespec="seconds")
        items = []
        for scope, finding in pending:
            status = stored.get(finding.finding_id)
            if status in ("confirmed", "dismissed"):
                finding = finding.model_copy(update={"status": status})
                self._scope_findings(scope)[finding.finding_id] = finding
            items.append({"PutRequest": {"Item": _finding_item(scope, finding, now)}})
        self._batch_write(self.tables.findings, items)

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
        return finding_from_item(item) if item else None


def _fid(finding: Finding) -> str:
    return finding.finding_id


def _bytes(value: Any) -> bytes:
    return bytes(value) if not isinstance(value, str) else value.encode("latin-1")


def pack_lines(lines: Sequence[ClaimLine], writers: Mapping[str, str] | None = None) -> bytes:
    """A pack of lines (one patient's: psn_no is not repeated)."""
    writers = writers or {}
    return pack([line_record(x, writers.get(x.line_id)) for x in lines], LINES_DICT)


def unpack_lines(psn_no: str, payload: bytes) -> list[ClaimLine]:
    return [line_from_record(psn_no, r)[0] for r in unpack(payload) or []]


def _missing_keys(by_sk: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Keys a patient's read still needs: archives its head names, slices of any pack."""
    head = by_sk.get(HEAD_SK)
    if head is None:
        return []
    bases = [HEAD_SK, *(ARCHIVE_PREFIX + m for m in head.get("am", {}).get("SS", []))]
    wanted = [sk for sk in bases if sk not in by_sk]
    for sk in bases:
        if sk in by_sk:
            count = int(by_sk[sk].get("np", {}).get("N", "1"))
            wanted += [f"{sk}#{i}" for i in range(1, count) if f"{sk}#{i}" not in by_sk]
    return wanted


def _joined(by_sk: Mapping[str, Mapping[str, Any]], sk: str) -> bytes:
    base = by_sk[sk]
    count = int(base.get("np", {}).get("N", "1"))
    parts = [_bytes(base["p"]["B"])]
    for i in range(1, count):
        part = by_sk.get(f"{sk}#{i}")
        if part is None or part["v"]["S"] != base["v"]["S"]:
            raise TransientError("purchases: a slice of a pack is missing or from another write")
        parts.append(_bytes(part["p"]["B"]))
    return b"".join(parts)


def _sales_by_line(bucket: _Bucket) -> dict[str, list[Any]]:
    """A bucket's sales as stored: `line_id -> [sale, [code tails]]`. A line's codes share the
    bucket's prefix and the sale, so each is stored once; a sale's institution (always the
    line id's) is `=`."""
    prefix = len(bucket.key) - 2  # the code characters the bucket key holds ("t#" + prefix)
    out: dict[str, list[Any]] = {}
    for code, sales in sorted(bucket.sales.items()):
        for line_id, sale in sales.items():
            parts = sale.split("|")
            if len(parts) > 2 and parts[2] == line_id.split("/", 1)[0]:
                parts[2] = "="
            entry = out.setdefault(line_id, ["|".join(parts), []])
            entry[1].append(code[prefix:])
    return out


def _bucket_from_item(item: Mapping[str, Any]) -> _Bucket:
    key = item["code"]["S"]
    sales: dict[str, dict[str, str]] = {}
    if "s" in item:
        prefix = key[2:]
        for line_id, (stored, tails) in (unpack(_bytes(item["s"]["B"])) or {}).items():
            parts = stored.split("|")
            if len(parts) > 2 and parts[2] == "=":
                parts[2] = line_id.split("/", 1)[0]
            sale = "|".join(parts)
            for tail in tails:
                sales.setdefault(prefix + tail, {})[line_id] = sale
    else:  # the first packed layout: code -> line_id -> sale
        sales = unpack(_bytes(item["c"]["B"])) or {}
    latest = max((s.split("|", 1)[0] for by_line in sales.values() for s in by_line.values()), default="")
    return _Bucket(key, sales, item.get("v", {}).get("S"), latest)


def _sales_of(code: str, sales: Mapping[str, str]) -> list[TraceSale]:
    out = []
    for line_id, value in sales.items():
        out.append(TraceSale.decode(code, line_id, value))  # returns (退费) and split units (拆零) kept
    return sorted(out)


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
        self._finish(batch_id, status, report, report_key, now, None)

    def finish_if(
        self, batch_id: str, expected: str, status: str, report: Mapping[str, Any], report_key: str, now: datetime
    ) -> bool:
        """`finish`, only over the `expected` status (the sweeper: RUNNING); False when not."""
        return self._finish(batch_id, status, report, report_key, now, expected)

    def _finish(
        self,
        batch_id: str,
        status: str,
        report: Mapping[str, Any],
        report_key: str,
        now: datetime,
        expected: str | None,
    ) -> bool:
        values: dict[str, Any] = {
            ":st": {"S": status},
            ":fin": {"S": now.isoformat()},
            ":rk": {"S": report_key},
            ":rep": {"S": _bounded_json(report)},
        }
        condition: dict[str, Any] = {}
        if expected is not None:
            values[":expected"] = {"S": expected}
            condition = {"ConditionExpression": "#st = :expected"}
        try:
            self.ddb.update_item(
                TableName=self.table,
                Key={"batch_id": {"S": batch_id}},
                UpdateExpression="SET #st = :st, finished_at = :fin, report_key = :rk, report = :rep",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=values,
                **condition,
            )
        except ClientError as exc:
            if expected is not None and _error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise _transient(exc, "UpdateItem batches") from exc
        return True

    def running(self, started_before: datetime) -> list[dict[str, str]]:
        """Batches still RUNNING that started before a time (the sweeper's Scan: one item a
        batch, a small table; docs/workflow.md)."""
        out: list[dict[str, str]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "#st = :running AND started_at < :before",
            "ProjectionExpression": "batch_id, started_at, execution_id",
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {":running": {"S": "RUNNING"}, ":before": {"S": started_before.isoformat()}},
        }
        while True:
            try:
                page = self.ddb.scan(**kwargs)
            except ClientError as exc:
                raise _transient(exc, "Scan batches") from exc
            out += [{k: v["S"] for k, v in item.items() if "S" in v} for item in page.get("Items", [])]
            if not page.get("LastEvaluatedKey"):
                return sorted(out, key=lambda b: b.get("started_at", ""))
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


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

    def move_file(self, key: str, path: Path, content_type: str = "application/x-ndjson") -> str:
        """`upload_file`, then the local file is removed (a store on the same disk moves it)."""
        uri = self.upload_file(key, path, content_type)
        path.unlink()
        return uri

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


# ---------------------------------------------------------------- whole-table views (tests, tools)


def scan_purchases(ddb: Any, table: str) -> list[tuple[str, str]]:
    """(psn_no, line_id) of every stored line, sorted: a Scan of the packs, for tests and
    operators (the workflow never scans)."""
    items: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for page in ddb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            if item["psn_no"]["S"] != REGISTRY_PK:
                items[item["psn_no"]["S"]][item["sk"]["S"]] = item
    out: list[tuple[str, str]] = []
    for psn, by_sk in items.items():
        out.extend((psn, line_id) for line_id in DynamoRepository._assemble_static(psn, by_sk).lines)
    return sorted(out)


def scan_trace_codes(ddb: Any, table: str) -> list[str]:
    """Every trace code with a recorded sale, sorted (a Scan of the buckets; tests and tools)."""
    codes: set[str] = set()
    for page in ddb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            codes.update(code for code, sales in _bucket_from_item(item).sales.items() if sales)
    return sorted(codes)


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
