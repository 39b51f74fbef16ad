"""AWS cost per million claim lines, from requests counted on the offline workflow.

    python -m bench.cost                  # 10,000 lines, default chunk size
    python -m bench.cost 20000 --chunk 2000

One synthetic batch (rxguard_tools.synth, trimmed to the line count) runs through the real
ClaimBatch state machine and handlers on moto (rxguard_tools.offline.Environment). Every AWS
call the handlers make through boto3's default session is counted by service and
operation (a botocore `before-parameter-build` hook, which sees the API parameters);
DynamoDB request units are computed from the calls themselves: a write costs one WRU per started KB of each item
written (BatchWriteItem per item, transactions twice), a read one RRU per started 4 KB
(strongly consistent) or half of that (eventually consistent) of the items returned,
at least one unit per item or per Query page. Item size = attribute names + values as
DynamoDB counts them (strings in UTF-8 bytes, numbers about 1 byte per 2 digits).

Lambda GB-seconds = each handler's measured time on this machine x its MemorySize in
template.yaml (in-process on moto: DynamoDB calls here cost moto's Python time, not a
network round trip, so treat the Lambda line as an order of magnitude). Step Functions
transitions = the parent execution's state entries (from its history) + two per
Distributed Map item (child start and its Task). S3: the bureau's upload counts as one
PUT. Prices: PRICES below, public list prices, US East (N. Virginia), with their pages
and the date they were read. China regions (cn-north-1, cn-northwest-1) are priced in
CNY on amazonaws.cn and differ.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PRICES_READ_ON = "2026-11-23"
REGION = "us-east-1"


@dataclass(frozen=True)
class Price:
    usd: float  # per unit
    unit: str
    source: str


PRICES: dict[str, Price] = {
    "lambda_gb_second": Price(
        0.0000133334, "GB-second, Arm", "https://aws.amazon.com/lambda/pricing/ (Arm, first 7.5 billion GB-s a month)"
    ),
    "lambda_request": Price(0.20 / 1e6, "request", "https://aws.amazon.com/lambda/pricing/ ($0.20 per 1M requests)"),
    "dynamodb_wru": Price(
        0.625 / 1e6,
        "write request unit",
        "https://aws.amazon.com/dynamodb/pricing/on-demand/ ($0.625 per million WRU, Standard table class)",
    ),
    "dynamodb_rru": Price(
        0.125 / 1e6,
        "read request unit",
        "https://aws.amazon.com/dynamodb/pricing/on-demand/ ($0.125 per million RRU, Standard table class)",
    ),
    "sfn_transition": Price(
        0.025 / 1000,
        "state transition",
        "https://aws.amazon.com/step-functions/pricing/ (Standard workflows, $0.025 per 1,000 transitions)",
    ),
    "sns_publish": Price(
        0.50 / 1e6, "publish (64 KB chunk)", "https://aws.amazon.com/sns/pricing/ (standard topics, $0.50 per 1M)"
    ),
    "s3_put": Price(
        0.005 / 1000, "PUT/COPY/POST/LIST", "https://aws.amazon.com/s3/pricing/ (S3 Standard, $0.005 per 1,000)"
    ),
    "s3_get": Price(
        0.0004 / 1000, "GET and other", "https://aws.amazon.com/s3/pricing/ (S3 Standard, $0.0004 per 1,000)"
    ),
    # The seven below were not re-read on PRICES_READ_ON: AWS list prices unchanged since 2023
    # (Standard-IA: since the on-demand price cut of November 2024) on the pages named
    # (re-check before quoting).
    "dynamodb_ia_wru": Price(
        0.78125 / 1e6,
        "write request unit, Standard-IA",
        "https://aws.amazon.com/dynamodb/pricing/on-demand/ (Standard-IA table class: 1.25x the Standard request "
        "prices, as the China regions' page lists them: 0.0725 vs 0.058 CNY)",
    ),
    "dynamodb_ia_rru": Price(
        0.15625 / 1e6,
        "read request unit, Standard-IA",
        "https://aws.amazon.com/dynamodb/pricing/on-demand/ (Standard-IA table class, 1.25x Standard)",
    ),
    "dynamodb_ia_storage_gb_month": Price(
        0.10,
        "GB-month, Standard-IA",
        "https://aws.amazon.com/dynamodb/pricing/on-demand/ (Standard-IA table class: 60% below Standard's $0.25)",
    ),
    "dynamodb_storage_gb_month": Price(
        0.25, "GB-month", "https://aws.amazon.com/dynamodb/pricing/on-demand/ (Standard table class, after 25 GB)"
    ),
    "dynamodb_pitr_gb_month": Price(
        0.20, "GB-month", "https://aws.amazon.com/dynamodb/pricing/on-demand/ (continuous backups, PITR)"
    ),
    "kms_request": Price(0.03 / 10_000, "request", "https://aws.amazon.com/kms/pricing/ ($0.03 per 10,000)"),
    "logs_ingest_gb": Price(0.50, "GB ingested", "https://aws.amazon.com/cloudwatch/pricing/ (Logs, standard)"),
}

RETENTION_DAYS = 400  # HistoryRetentionDays: how long a line's bytes are stored (and backed up)
DAYS_PER_MONTH = 30.4


def table_classes() -> dict[str, str]:
    """The table class of each DynamoDB table of template.yaml (`STANDARD` unless set)."""
    from rxguard_tools.offline.cfn import load_template

    resources = load_template(ROOT / "template.yaml")["Resources"]
    return {
        logical_id: str((r.get("Properties") or {}).get("TableClass", "STANDARD"))
        for logical_id, r in resources.items()
        if isinstance(r, dict) and r.get("Type") == "AWS::DynamoDB::Table"
    }


def _table_prices(table: str, classes: Mapping[str, str]) -> tuple[float, float, float]:
    """(per WRU, per RRU, per GB-month of storage) for a table or one of its indexes
    (`Table.index`: an index is billed at its table's class)."""
    p = {k: v.usd for k, v in PRICES.items()}
    if classes.get(table.split(".", 1)[0]) == "STANDARD_INFREQUENT_ACCESS":
        return p["dynamodb_ia_wru"], p["dynamodb_ia_rru"], p["dynamodb_ia_storage_gb_month"]
    return p["dynamodb_wru"], p["dynamodb_rru"], p["dynamodb_storage_gb_month"]


def monthly_batch_cost(figures: Mapping[str, Any], memory_mb: int = 1024) -> dict[str, Any]:
    """USD per million lines of a monthly batch measured by
    `bench.workflow_requests.measure_monthly`, each component shown: writes (tables and
    secondary indexes) and reads at each table's class price (template.yaml `TableClass`),
    storage and PITR of the lines' bytes for RETENTION_DAYS (the stored bytes of each table
    over every line stored, history included), Lambda GB-seconds from Screen's CPU time
    outside moto plus an assumed round trip per request, Lambda/Step Functions/S3 requests
    per chunk, KMS (DynamoDB caches its data key: a few requests per table and hour, taken
    as five per chunk) and CloudWatch Logs (a few hundred bytes per chunk and per batch)."""
    p = {k: v.usd for k, v in PRICES.items()}
    classes = table_classes()
    lines = max(int(figures["lines"]), 1)
    scale = 1e6 / lines
    chunks = max(1, math.ceil(lines / 5000))
    months = RETENTION_DAYS / DAYS_PER_MONTH
    stored_lines = max(int(figures.get("history_lines", 0)) + lines, 1)
    by_table: dict[str, dict[str, float]] = {}
    for table, units in figures["write_units_by_table"].items():
        wru, _, _ = _table_prices(table, classes)
        key = "index_writes" if "." in table else "writes"
        entry = by_table.setdefault(table.split(".", 1)[0], {})
        entry[key] = entry.get(key, 0.0) + units * wru * scale
    rru_by_table = figures.get("read_units_by_table") or {}
    for table, units in rru_by_table.items():
        _, rru, _ = _table_prices(table, classes)
        entry = by_table.setdefault(table.split(".", 1)[0], {})
        entry["reads"] = entry.get("reads", 0.0) + units * rru * scale
    for table, stored in figures["stored"].items():
        if not stored["bytes"]:
            continue
        _, _, gb_month = _table_prices(table, classes)
        gb_per_million = stored["bytes"] / stored_lines * 1e6 / 2**30
        entry = by_table.setdefault(table, {})
        entry["storage_400d"] = gb_per_million * months * gb_month
        entry["pitr_400d"] = gb_per_million * months * p["dynamodb_pitr_gb_month"]
    if not rru_by_table:  # older figures: ~2 RRU a batched read at Standard prices
        reads = float(figures["dynamodb_reads_per_1k_lines"]) * lines / 1000
        by_table.setdefault("all", {})["reads"] = reads * 2 * p["dynamodb_rru"] * scale
    gb_s = (float(figures["screen_cpu_seconds_outside_moto"]) + float(figures["assumed_io_wait_seconds"])) * (
        memory_mb / 1024
    )

    def total(part: str) -> float:
        return sum(t.get(part, 0.0) for t in by_table.values())

    components = {
        "dynamodb_writes_tables": total("writes"),
        "dynamodb_writes_indexes": total("index_writes"),
        "dynamodb_reads": total("reads"),
        "dynamodb_storage_400d": total("storage_400d"),
        "dynamodb_pitr_400d": total("pitr_400d"),
        "lambda_compute": gb_s * p["lambda_gb_second"] * scale,
        "lambda_requests": (chunks + 4) * p["lambda_request"] * scale,
        "step_functions": (12 + 2 * chunks) * p["sfn_transition"] * scale,
        "s3_requests": (figures.get("s3_requests", 0) + 3 * chunks) * p["s3_put"] * scale,
        "sns": 0.0,  # alerts scale with findings: see the workflow cost section
        "kms": chunks * 5 * p["kms_request"] * scale,
        "cloudwatch_logs": (chunks * 2000 + 5000) / 2**30 * p["logs_ingest_gb"] * scale,
    }
    wru = sum(figures["write_units_by_table"].values())
    return {
        "components_usd_per_million_lines": {k: round(v, 4) for k, v in components.items()},
        "total_usd_per_million_lines": round(sum(components.values()), 4),
        "dynamodb_by_table_usd_per_million_lines": {
            t: {k: round(v, 4) for k, v in sorted(parts.items())} for t, parts in sorted(by_table.items())
        },
        "table_classes": {t: c for t, c in classes.items() if t in by_table},
        "write_units_per_line": round(wru / lines, 3),
        "retention_days": RETENTION_DAYS,
    }


FLOOR_CODES_PER_LINE = 1.5  # the floor: one WRU per purchase line and per trace code
TARGET_MULTIPLE = 1.25

_DDB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
_DDB_READS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}
_S3_PUT = {
    "PutObject",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "ListObjects",
    "ListObjectsV2",
}
_S3_GET = {"GetObject", "HeadObject", "SelectObjectContent"}


# --- DynamoDB item sizes ------------------------------------------------------------------


def attribute_size(value: Mapping[str, Any]) -> int:
    """Bytes of one attribute value in DynamoDB JSON, as DynamoDB sizes it (approximately)."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(str(v).encode("utf-8"))
    if kind == "N":
        digits = len(str(v).lstrip("-").replace(".", "").lstrip("0")) or 1
        return math.ceil(digits / 2) + 1
    if kind == "B":
        return len(v) if isinstance(v, bytes | bytearray) else math.ceil(len(str(v)) * 3 / 4)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(attribute_size({kind[0]: x}) for x in v)
    if kind == "L":
        return 3 + sum(attribute_size(x) + 1 for x in v)
    if kind == "M":
        return 3 + sum(len(k.encode("utf-8")) + attribute_size(x) + 1 for k, x in v.items())
    return len(json.dumps(v))


def item_size(item: Mapping[str, Any]) -> int:
    return sum(len(name.encode("utf-8")) + attribute_size(value) for name, value in item.items())


def _projected(names: tuple[str, ...] | None, keys: tuple[str, ...]) -> Any:
    """Size of an item's copy in a secondary index: its key attributes and the table's key,
    plus the projected attributes (None: ALL); 0 when the item lacks an index key (sparse)."""

    def size(item: Mapping[str, Any]) -> int:
        if any(k not in item for k in keys):
            return 0
        kept = item if names is None else {k: v for k, v in item.items() if k in (*keys, "finding_id", *names)}
        return item_size(kept)

    return size


def _gsi_of(logical_id: str) -> dict[str, Any]:
    """A table's secondary indexes as template.yaml declares them: name -> projected size.
    Each write of an item carrying the index key writes the index too, billed like a table
    write of the projected size (at least one unit)."""
    from rxguard_tools.offline.cfn import load_template

    table = load_template(ROOT / "template.yaml")["Resources"][logical_id]["Properties"]
    out = {}
    for gsi in table.get("GlobalSecondaryIndexes", []):
        keys = tuple(k["AttributeName"] for k in gsi["KeySchema"])
        projection = gsi.get("Projection", {})
        kind = projection.get("ProjectionType", "KEYS_ONLY")
        names = None if kind == "ALL" else tuple(projection.get("NonKeyAttributes", []))
        out[gsi["IndexName"]] = _projected(names, keys)
    return out


GSI_FINDINGS = _gsi_of("FindingsTable")


def write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return float(units) if consistent else units / 2


@dataclass
class Usage:
    """What one run used, counted from the calls."""

    lines: int = 0
    trace_codes: int = 0
    chunks: int = 0
    calls: Counter[str] = field(default_factory=Counter)  # "service.Operation" -> calls
    dynamodb_wru: float = 0.0
    dynamodb_rru: float = 0.0
    dynamodb_items_written: int = 0
    lambda_requests: int = 0
    lambda_gb_seconds: float = 0.0
    lambda_seconds_by_function: dict[str, float] = field(default_factory=dict)
    sfn_transitions: int = 0
    sns_publishes: int = 0
    s3_puts: int = 0
    s3_gets: int = 0
    wall_seconds: float = 0.0
    status: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["calls"] = dict(sorted(self.calls.items()))
        return out


class CallCounter:
    """botocore hooks on boto3's default session: calls by service/operation, DynamoDB units."""

    def __init__(self) -> None:
        self.usage = Usage()
        self._lock = threading.Lock()

    def install(self) -> None:
        import boto3

        emitter = boto3._get_default_session()._session.get_component("event_emitter")
        emitter.register("before-parameter-build", self._before, unique_id="rxguard-bench-cost-before")
        emitter.register("after-call.dynamodb", self._after, unique_id="rxguard-bench-cost-after")
        self._emitter = emitter

    def uninstall(self) -> None:
        self._emitter.unregister("before-parameter-build", unique_id="rxguard-bench-cost-before")
        self._emitter.unregister("after-call.dynamodb", unique_id="rxguard-bench-cost-after")

    def _before(self, model: Any, params: Mapping[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        op = model.name
        with self._lock:
            u = self.usage
            u.calls[f"{service}.{op}"] += 1
            if service == "sns" and op == "Publish":
                u.sns_publishes += 1
            elif service == "sns" and op == "PublishBatch":
                u.sns_publishes += len(params.get("PublishBatchRequestEntries", []))
            elif service == "s3" and op in _S3_PUT:
                u.s3_puts += 1
            elif service == "s3" and op in _S3_GET:
                u.s3_gets += 1
            elif service == "dynamodb" and op in _DDB_WRITES:
                self._writes(op, params)

    def _writes(self, op: str, params: Mapping[str, Any]) -> None:
        u = self.usage
        if op == "PutItem":
            sizes = [item_size(params.get("Item", {}))]
        elif op == "UpdateItem":
            values = params.get("ExpressionAttributeValues", {})
            sizes = [item_size(params.get("Key", {})) + sum(attribute_size(v) for v in values.values())]
        elif op == "DeleteItem":
            sizes = [item_size(params.get("Key", {}))]
        elif op == "BatchWriteItem":
            sizes = []
            for requests in params.get("RequestItems", {}).values():
                for r in requests:
                    if "PutRequest" in r:
                        sizes.append(item_size(r["PutRequest"]["Item"]))
                    else:
                        sizes.append(item_size(r.get("DeleteRequest", {}).get("Key", {})))
        else:  # TransactWriteItems: two units per item
            sizes = []
            for t in params.get("TransactItems", []):
                ((_, body),) = t.items()
                size = item_size(body.get("Item") or body.get("Key") or {})
                sizes += [size, size]
        u.dynamodb_wru += sum(write_units(s) for s in sizes)
        u.dynamodb_items_written += len(sizes)

    def _after(self, model: Any, parsed: Mapping[str, Any], **_: Any) -> None:
        op = model.name
        if op not in _DDB_READS:
            return
        with self._lock:
            u = self.usage
            if op == "GetItem":
                u.dynamodb_rru += read_units(item_size(parsed.get("Item") or {}), False)
            elif op == "BatchGetItem":
                for items in (parsed.get("Responses") or {}).values():
                    u.dynamodb_rru += sum(read_units(item_size(i), False) for i in items)
            elif op in ("Query", "Scan"):
                size = sum(item_size(i) for i in parsed.get("Items") or [])
                u.dynamodb_rru += read_units(size, False)
            else:
                for r in parsed.get("Responses") or []:
                    u.dynamodb_rru += 2 * read_units(item_size(r.get("Item") or {}), True)


# --- the run ------------------------------------------------------------------------------


def synthetic_batch(lines: int, path: Path, seed: int = 11) -> tuple[int, int]:
    """A JSON Lines batch of exactly `lines` synthetic lines; returns (lines, trace codes).

    Whole patients are drawn (in a seeded order) from a population of at least 2,000, so
    small batches keep the population's mix (about 8% abusive) instead of the generator's
    per-scenario minimum dominating; the last patient may be cut to hit the count."""
    import random

    from rxguard.kb import get_knowledge_base
    from rxguard_tools.synth import SynthConfig, generate

    kb = get_knowledge_base()
    patients = max(2000, lines // 20)
    while True:
        records = generate(SynthConfig(patients=patients, seed=seed), kb).records
        if len(records) >= lines:
            break
        patients = int(patients * lines / max(len(records), 1) * 1.1) + 10
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_patient.setdefault(r["psn_no"], []).append(r)
    order = sorted(by_patient)
    random.Random(seed).shuffle(order)
    chosen: list[dict[str, Any]] = []
    for psn in order:
        if len(chosen) >= lines:
            break
        chosen.extend(by_patient[psn])
    chosen = sorted(chosen[:lines], key=lambda r: (r["fee_ocur_time"], r["fixmedins_code"], r["feedetl_sn"]))
    codes = 0
    with path.open("w", encoding="utf-8") as fh:
        for r in chosen:
            fh.write(json.dumps({k: v for k, v in r.items() if v != ""}, ensure_ascii=False) + "\n")
            codes += len([c for c in str(r["drug_trac_codg"]).split(",") if c])
    return len(chosen), codes


def _memory_by_function(env: Any) -> dict[str, int]:
    template = env.template
    default = int(((template.get("Globals") or {}).get("Function") or {}).get("MemorySize", 128))
    out = {}
    for logical_id, resource in template["Resources"].items():
        if isinstance(resource, dict) and resource.get("Type") == "AWS::Serverless::Function":
            size = (resource.get("Properties") or {}).get("MemorySize", default)
            out[logical_id] = int(size) if isinstance(size, int | str) and str(size).isdigit() else default
    return out


def measure_usage(lines: int, chunk_size: int | None = None, *, timeout: float = 7200.0) -> Usage:
    """Run one synthetic batch of `lines` lines through the offline workflow and count."""
    from rxguard_tools.offline import Environment

    logging.getLogger("moto").setLevel(logging.CRITICAL)
    parameters = {"ScreenChunkSize": str(chunk_size)} if chunk_size else None
    counter = CallCounter()
    with tempfile.TemporaryDirectory(prefix="rxguard-cost-") as tmp:
        batch = Path(tmp) / f"batch-{lines}.jsonl"
        n, codes = synthetic_batch(lines, batch)
        with open(os.devnull, "w") as sink, Environment(parameters=parameters, handler_output=sink) as env:
            counter.install()
            try:
                started = time.perf_counter()
                (execution,) = env.drop(batch)
                env.wait([execution], timeout=timeout, poll=0.5)
                wall = time.perf_counter() - started
                history = env.history(execution)
            finally:
                counter.uninstall()
            memory = _memory_by_function(env)
            usage = counter.usage
            usage.lines, usage.trace_codes, usage.wall_seconds = n, codes, wall
            usage.s3_puts += 1  # the bureau's upload of the batch
            output = execution.output if isinstance(execution.output, dict) else {}
            usage.status = str(output.get("status", execution.status))
            entered = [e for e in history if str(e.get("type", "")).endswith("StateEntered")]
            map_items = sum(1 for e in history if e.get("type") in ("MapIterationStarted", "MapRunStarted"))
            usage.chunks = int(output.get("chunks") or 0) or _chunks_from(output) or map_items
            usage.sfn_transitions = len(entered) + 2 * usage.chunks
            for call in env.router.calls:
                seconds = usage.lambda_seconds_by_function.get(call.logical_id, 0.0) + call.seconds
                usage.lambda_seconds_by_function[call.logical_id] = seconds
                usage.lambda_requests += 1
                usage.lambda_gb_seconds += call.seconds * memory.get(call.logical_id, 1024) / 1024
    usage.lambda_seconds_by_function = {k: round(v, 2) for k, v in sorted(usage.lambda_seconds_by_function.items())}
    return usage


def _chunks_from(output: Mapping[str, Any]) -> int:
    for key in ("chunks_total", "chunk_count"):
        if isinstance(output.get(key), int):
            return int(output[key])
    counts = output.get("counts")
    if isinstance(counts, Mapping) and isinstance(counts.get("chunks"), int):
        return int(counts["chunks"])
    return 0


# --- the cost model -----------------------------------------------------------------------


def floor_per_million(codes_per_line: float = FLOOR_CODES_PER_LINE) -> float:
    """One WRU per purchase line and per trace code, per million lines (USD)."""
    return (1 + codes_per_line) * 1e6 * PRICES["dynamodb_wru"].usd


def cost_per_million(usage: Usage) -> dict[str, Any]:
    """Each component's USD per million lines, the total, the floor and the ratio."""
    if usage.lines <= 0:
        raise ValueError("no lines measured")
    scale = 1e6 / usage.lines
    p = {k: v.usd for k, v in PRICES.items()}
    components = {
        "dynamodb_writes": usage.dynamodb_wru * p["dynamodb_wru"] * scale,
        "dynamodb_reads": usage.dynamodb_rru * p["dynamodb_rru"] * scale,
        "lambda_compute": usage.lambda_gb_seconds * p["lambda_gb_second"] * scale,
        "lambda_requests": usage.lambda_requests * p["lambda_request"] * scale,
        "step_functions": usage.sfn_transitions * p["sfn_transition"] * scale,
        "sns": usage.sns_publishes * p["sns_publish"] * scale,
        "s3_put": usage.s3_puts * p["s3_put"] * scale,
        "s3_get": usage.s3_gets * p["s3_get"] * scale,
    }
    total = sum(components.values())
    codes_per_line = usage.trace_codes / usage.lines
    floor = floor_per_million(FLOOR_CODES_PER_LINE)
    floor_here = floor_per_million(codes_per_line)
    return {
        "components_usd_per_million_lines": {k: round(v, 4) for k, v in components.items()},
        "total_usd_per_million_lines": round(total, 4),
        "floor_usd_per_million_lines": round(floor, 4),
        "floor_at_measured_codes_usd": round(floor_here, 4),
        "trace_codes_per_line": round(codes_per_line, 3),
        "ratio_to_floor": round(total / floor_here, 2),
        "target_multiple": TARGET_MULTIPLE,
        "within_target": total <= TARGET_MULTIPLE * floor_here,
        "per_1000_lines": {
            "dynamodb_wru": round(usage.dynamodb_wru * 1000 / usage.lines, 1),
            "dynamodb_rru": round(usage.dynamodb_rru * 1000 / usage.lines, 1),
            "dynamodb_items_written": round(usage.dynamodb_items_written * 1000 / usage.lines, 1),
            "dynamodb_write_calls": round(_ddb(usage, _DDB_WRITES) * 1000 / usage.lines, 1),
            "dynamodb_read_calls": round(_ddb(usage, _DDB_READS) * 1000 / usage.lines, 1),
            "lambda_gb_seconds": round(usage.lambda_gb_seconds * 1000 / usage.lines, 3),
            "sfn_transitions": round(usage.sfn_transitions * 1000 / usage.lines, 2),
            "sns_publishes": round(usage.sns_publishes * 1000 / usage.lines, 1),
            "s3_requests": round((usage.s3_puts + usage.s3_gets) * 1000 / usage.lines, 2),
        },
        "prices": {k: {"usd": v.usd, "unit": v.unit, "source": v.source} for k, v in PRICES.items()},
        "prices_read_on": PRICES_READ_ON,
        "region": REGION,
    }


def _ddb(usage: Usage, ops: set[str]) -> int:
    return sum(n for k, n in usage.calls.items() if k.startswith("dynamodb.") and k.split(".", 1)[1] in ops)


def measure(lines: int = 10_000, chunk_size: int | None = None) -> dict[str, Any]:
    usage = measure_usage(lines, chunk_size)
    return {"usage": usage.as_dict(), **cost_per_million(usage), "chunk_size": chunk_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("lines", type=int, nargs="?", default=10_000)
    parser.add_argument("--chunk", type=int, default=None, help="ScreenChunkSize (default: the template's)")
    args = parser.parse_args(argv)
    figures = measure(args.lines, args.chunk)
    print(json.dumps(figures, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
