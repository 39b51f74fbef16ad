"""DynamoDB cost of screening: requests and write units per 1,000 lines (issue 7's target:
total write units within 1.25x of one per purchase line and one per trace code).

    python -m bench.workflow_requests            # 10,000 lines
    python -m bench.workflow_requests 50000      # any sizes

A synthetic batch (bench.workflow.synthetic_batch) is prepared into patient chunks
(rxguard.ingest.prepare_batch) and each chunk is screened with rxguard.screening.screen_lines
against `DynamoRepository` on moto (tables from template.yaml, the offline harness's narrow
Query patch), then the ScreenInstitutions step runs once. Every DynamoDB call is counted
from boto3 (`rxguard.dynamo.REQUESTS`); write units are estimated from the size of each
written item (ceil(size / 1 KB) per PutItem, 1 per UpdateItem, per item for BatchWriteItem).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

SIZES = (10_000,)


def _value_size(value: dict[str, Any]) -> int:
    ((kind, raw),) = value.items()
    if kind in ("S", "N"):
        return len(str(raw).encode("utf-8"))
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(v) for k, v in raw.items())
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in raw)
    if kind == "SS":
        return sum(len(x.encode("utf-8")) for x in raw)
    return 1


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB item size: attribute names plus values (UTF-8 bytes)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


class WriteUnits:
    """A botocore hook estimating write units by table."""

    def __init__(self) -> None:
        self.units: Counter[str] = Counter()

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        op = model.name
        if op == "PutItem":
            self.units[params["TableName"]] += max(1, math.ceil(item_size(params["Item"]) / 1024))
        elif op in ("UpdateItem", "DeleteItem"):
            self.units[params["TableName"]] += 1
        elif op == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    item = request.get("PutRequest", {}).get("Item")
                    self.units[table] += max(1, math.ceil(item_size(item) / 1024)) if item else 1


def _quiet_fake_aws() -> None:
    """moto's logging off and fake credentials (kept when the environment has some)."""
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def _tables_and_results(ddb: Any) -> tuple[dict[str, str], Any, Any]:
    """The template's tables (bench-<logical id>: their names by logical id, as
    `dynamo.TableNames`) and a results bucket, on moto."""
    from rxguard import dynamo
    from tests.factories import create_table
    from tests.integration.conftest import TABLES, template_resources

    resources = template_resources()
    names = {}
    for logical_id in TABLES:
        names[logical_id] = f"bench-{logical_id}"
        create_table(ddb, names[logical_id], resources[logical_id]["Properties"])
    tables = dynamo.TableNames(
        purchases=names["PurchasesTable"],
        trace_codes=names["TraceCodesTable"],
        findings=names["FindingsTable"],
        batches=names["BatchesTable"],
        aggregates=names["AggregatesTable"],
    )
    s3 = dynamo.client("s3")
    s3.create_bucket(Bucket="bench-results")
    return names, tables, dynamo.ResultStore("bench-results", s3)


def measure(lines: int) -> dict[str, Any]:
    from moto import mock_aws

    from bench.workflow import synthetic_batch
    from rxguard import dynamo
    from rxguard.ingest import prepare_batch, read_chunk
    from rxguard.kb import get_knowledge_base
    from rxguard.screening import screen_lines
    from rxguard.workflow.contract import ChunkFindings, InstitutionsRequest
    from rxguard.workflow.institutions import screen_institutions
    from rxguard_tools.offline.patches import narrow_hash_key_query

    _quiet_fake_aws()
    kb = get_knowledge_base()
    with tempfile.TemporaryDirectory(prefix="rxguard-bench-") as tmp, mock_aws(), narrow_hash_key_query():
        batch = Path(tmp) / "batch.jsonl"
        synthetic_batch(lines, batch)
        prepared = prepare_batch(batch, kb, Path(tmp) / "out", chunk_size=5000)
        dynamo.reset_clients()
        ddb = dynamo.client("dynamodb")
        units = WriteUnits()
        ddb.meta.events.register("before-parameter-build.dynamodb.*", units)
        _, tables, results = _tables_and_results(ddb)
        dynamo.REQUESTS.reset()
        units.units.clear()
        started = time.perf_counter()
        accepted = trace_codes = 0
        chunk_results = []
        from rxguard.workflow.screen import _update_flags

        for index, chunk in enumerate(prepared.chunks):
            chunk_lines = read_chunk(Path(chunk.path))
            accepted += len(chunk_lines)
            trace_codes += sum(len(x.trace_codes) for x in chunk_lines)
            repo = dynamo.DynamoRepository(tables, ddb)
            outcome = screen_lines(chunk_lines, repo, kb)
            periods = sorted(
                _update_flags(repo, outcome.changes)
                | {f"{x.fee_ocur_time:%Y-%m}" for x in outcome.recorded if x.monitored}
            )
            key = f"r/{index}.json"
            results.put_json(key, ChunkFindings(chunk_key=str(index), activity_periods=periods).model_dump(mode="json"))
            chunk_results.append({"chunk_key": str(index), "ok": True, "result_key": key})
        screen_institutions(
            InstitutionsRequest(batch_id="bench", chunk_results=chunk_results),
            results=results,
            repo=dynamo.DynamoRepository(tables, ddb),
            kb=kb,
        )
        seconds = time.perf_counter() - started
        calls = {k: v for k, v in dynamo.REQUESTS.snapshot().items() if k.startswith("dynamodb.")}
    per_k = 1000 / max(accepted, 1)
    reads = sum(v for k, v in calls.items() if k.split(".")[1] in ("GetItem", "BatchGetItem", "Query", "Scan"))
    writes = sum(
        v for k, v in calls.items() if k.split(".")[1] in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem")
    )
    by_table = {k.removeprefix("bench-"): v for k, v in units.units.items()}
    history_units = by_table.get("PurchasesTable", 0) + by_table.get("TraceCodesTable", 0)
    total_units = sum(by_table.values())
    return {
        "lines": accepted,
        "trace_codes": trace_codes,
        "chunks": len(prepared.chunks),
        "seconds": round(seconds, 1),
        "reads_per_1k_lines": round(reads * per_k, 1),
        "write_requests_per_1k_lines": round(writes * per_k, 1),
        "calls": calls,
        "write_units_by_table": by_table,
        "history_write_units_per_line_and_code": round(history_units / max(accepted + trace_codes, 1), 3),
        "total_write_units_per_line_and_code": round(total_units / max(accepted + trace_codes, 1), 3),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["monthly"]:  # python -m bench.workflow_requests monthly [LINES [HISTORY_MONTHS]]
        n = int(args[1]) if len(args) > 1 else 20_000
        months = int(args[2]) if len(args) > 2 else 1
        print(json.dumps(measure_monthly(n, months), ensure_ascii=False, indent=1))
        return 0
    sizes = [int(a) for a in args] or list(SIZES)
    for n in sizes:
        figures = measure(n)
        print(json.dumps(figures, ensure_ascii=False, indent=1))
        print(
            f"{figures['lines']:>7} lines: {figures['reads_per_1k_lines']} reads and "
            f"{figures['write_requests_per_1k_lines']} write requests per 1,000 lines; write units per "
            f"(line + trace code): purchases+trace codes {figures['history_write_units_per_line_and_code']}, "
            f"all tables {figures['total_write_units_per_line_and_code']} (target <= 1.25); "
            f"{figures['seconds']} s on moto"
        )
    return 0


# ---------------------------------------------------------------- monthly batches after history

LATENCY_S = {"dynamodb": 0.008, "s3": 0.020}  # assumed round trip per request from Lambda, same region


def monthly_population(lines: int, history_months: int, seed: int = 11) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """(the measured month's records, the history months' records) of one synthetic
    population: whole patients, trimmed so that the measured month has about `lines` lines."""
    from rxguard.kb import get_knowledge_base
    from rxguard_tools.synth.generator import grown_records

    def last_month(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        last = max(str(r["fee_ocur_time"])[:7] for r in records)
        return [r for r in records if str(r["fee_ocur_time"])[:7] == last]

    kb, patients, months = get_knowledge_base(), max(200, int(lines / 3.2)), history_months + 1
    records = grown_records(
        lines, kb, patients=patients, seed=seed, months=months, counted=lambda r: len(last_month(r))
    )
    last = max(str(r["fee_ocur_time"])[:7] for r in records)
    batch = last_month(records)
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for r in batch:
        by_patient.setdefault(r["psn_no"], []).append(r)
    chosen: set[str] = set()
    count = 0
    for psn in sorted(by_patient):
        if count >= lines:
            break
        chosen.add(psn)
        count += len(by_patient[psn])
    kept = [r for r in records if r["psn_no"] in chosen]
    batch = [r for r in kept if str(r["fee_ocur_time"])[:7] == last]
    history_by_month: dict[str, list[Any]] = {}
    for r in kept:
        month = str(r["fee_ocur_time"])[:7]
        if month != last:
            history_by_month.setdefault(month, []).append(r)
    return batch, [history_by_month[m] for m in sorted(history_by_month)]


def measure_monthly(lines: int = 20_000, history_months: int = 1, chunk_size: int = 5000) -> dict[str, Any]:
    """A batch of about `lines` lines (one month) screened after `history_months` monthly
    batches of the same patients: DynamoDB requests and write units of the measured batch
    only (secondary indexes included), the stored bytes, and Screen's CPU time outside moto."""
    from moto import mock_aws

    from bench.cost import GSI_FINDINGS, attribute_size, item_size, read_units, write_units
    from rxguard import dynamo
    from rxguard.ingest import prepare_batch, read_chunk
    from rxguard.kb import get_knowledge_base
    from rxguard.screening import screen_lines
    from rxguard.workflow.institutions import InstitutionsRequest, screen_institutions
    from rxguard.workflow.screen import ChunkFindings, _update_flags
    from rxguard_tools.offline.patches import narrow_hash_key_query

    _quiet_fake_aws()
    kb = get_knowledge_base()
    batch_records, history = monthly_population(lines, history_months)
    moto_cpu = [0.0]
    wru: Counter[str] = Counter()
    queries: Counter[str] = Counter()

    from moto.core.botocore_stubber import BotocoreStubber

    original_call = BotocoreStubber.__call__
    cpu_lock = threading.Lock()

    def timed_call(self: Any, event_name: str, request: Any, **kwargs: Any) -> Any:
        """moto's in-process 'server': its CPU time is what a network round trip is on AWS."""
        t0 = time.thread_time()
        try:
            return original_call(self, event_name, request, **kwargs)
        finally:
            with cpu_lock:
                moto_cpu[0] += time.thread_time() - t0

    def count_units(model: Any, params: dict[str, Any], **_: Any) -> None:
        op = model.name
        if op == "Query":
            queries[f"{params['TableName'].removeprefix('bench-')}.{params.get('IndexName', '')}"] += 1
        puts: list[tuple[str, dict[str, Any]]] = []
        if op == "PutItem":
            puts = [(params["TableName"], params["Item"])]
        elif op == "BatchWriteItem":
            requests = [(t, r) for t, rs in params["RequestItems"].items() for r in rs]
            puts = [(t, r["PutRequest"]["Item"]) for t, r in requests if "PutRequest" in r]
        elif op in ("UpdateItem", "DeleteItem"):
            size = item_size(params.get("Key", {})) + sum(
                attribute_size(v) for v in params.get("ExpressionAttributeValues", {}).values()
            )
            wru[params["TableName"].removeprefix("bench-")] += write_units(size)
        for table, item in puts:
            name = table.removeprefix("bench-")
            wru[name] += write_units(item_size(item))
            if name == "FindingsTable":
                for index, projected in GSI_FINDINGS.items():
                    size = projected(item)
                    if size:
                        wru[f"FindingsTable.{index}"] += write_units(size)

    rru: Counter[str] = Counter()
    asked = threading.local()

    def remember(model: Any, params: dict[str, Any], **_: Any) -> None:
        asked.params = params

    def count_reads(model: Any, parsed: dict[str, Any], **_: Any) -> None:
        """Read units from what came back: per item (Get, BatchGet) or per page (Query),
        one per started 4 KB, half when eventually consistent."""
        params = getattr(asked, "params", {}) or {}
        op = model.name
        if op == "GetItem":
            table = params["TableName"]
            found = [(table, parsed.get("Item") or {}, bool(params.get("ConsistentRead")))]
        elif op == "BatchGetItem":
            asked_for = params.get("RequestItems", {})
            found = [
                (t, i, bool(asked_for.get(t, {}).get("ConsistentRead")))
                for t, items in (parsed.get("Responses") or {}).items()
                for i in items
            ]
        elif op in ("Query", "Scan"):
            table = params["TableName"] + (f".{params['IndexName']}" if params.get("IndexName") else "")
            size = sum(item_size(i) for i in parsed.get("Items") or [])
            rru[table.removeprefix("bench-")] += read_units(size, bool(params.get("ConsistentRead")))
            return
        else:
            return
        for table, item, consistent in found:
            rru[table.removeprefix("bench-")] += read_units(item_size(item), consistent)

    with tempfile.TemporaryDirectory(prefix="rxguard-bench-") as tmp, mock_aws(), narrow_hash_key_query():
        dynamo.reset_clients()
        ddb = dynamo.client("dynamodb")
        ddb.meta.events.register("before-parameter-build.dynamodb.*", count_units)
        ddb.meta.events.register("before-parameter-build.dynamodb.*", remember)
        ddb.meta.events.register("after-call.dynamodb.*", count_reads)
        names, tables, results = _tables_and_results(ddb)

        def screen_file(records: list[Any], name: str) -> tuple[int, int, float]:
            path = Path(tmp) / f"{name}.jsonl"
            with path.open("w", encoding="utf-8") as fh:
                for r in records:
                    fh.write(json.dumps({k: v for k, v in r.items() if v != ""}, ensure_ascii=False) + "\n")
            prepared = prepare_batch(path, kb, Path(tmp) / name, chunk_size=chunk_size)
            accepted = codes = 0
            chunk_results = []
            cpu = 0.0
            for index, chunk in enumerate(prepared.chunks):
                chunk_lines = read_chunk(Path(chunk.path))
                accepted += len(chunk_lines)
                codes += sum(len(x.trace_codes) for x in chunk_lines)
                t0 = time.process_time()
                repo = dynamo.DynamoRepository(tables, ddb, writer=f"{name}-{index}", buffered=True)
                outcome = screen_lines(chunk_lines, repo, kb)
                periods = sorted(
                    _update_flags(repo, outcome.changes)
                    | {f"{x.fee_ocur_time:%Y-%m}" for x in outcome.recorded if x.monitored}
                )
                key = f"r/{name}/{index}.json"
                found = ChunkFindings(chunk_key=str(index), activity_periods=periods)
                results.put_json(key, found.model_dump(mode="json"))
                cpu += time.process_time() - t0
                chunk_results.append({"chunk_key": str(index), "ok": True, "result_key": key})
            t0 = time.process_time()
            screen_institutions(
                InstitutionsRequest(batch_id=name, chunk_results=chunk_results),
                results=results,
                repo=dynamo.DynamoRepository(tables, ddb),
                kb=kb,
            )
            cpu += time.process_time() - t0
            return accepted, codes, cpu

        history_lines = 0
        for i, month in enumerate(history):
            history_lines += screen_file(month, f"history{i}")[0]
        # monthly batches are a month apart: past the writer registry's clock-skew margin
        time.sleep(dynamo.REGISTRY_MARGIN.total_seconds() + 0.5)
        BotocoreStubber.__call__ = timed_call  # type: ignore[method-assign]
        dynamo.REQUESTS.reset()
        queries.clear()
        wru.clear()
        rru.clear()
        moto_cpu[0] = 0.0
        try:
            accepted, trace_codes, cpu = screen_file(batch_records, "batch")
        finally:
            BotocoreStubber.__call__ = original_call  # type: ignore[method-assign]
        calls = dict(dynamo.REQUESTS.snapshot())
        stored = {}
        for logical_id, table in names.items():
            size = 0
            items = 0
            for page in ddb.get_paginator("scan").paginate(TableName=table):
                for item in page["Items"]:
                    size += item_size(item) + 100  # DynamoDB's per-item overhead
                    items += 1
                    if logical_id == "FindingsTable":
                        size += sum(projected(item) + 100 for projected in GSI_FINDINGS.values() if projected(item))
            stored[logical_id] = {"items": items, "bytes": size}
    per_k = 1000 / max(accepted, 1)
    ddb_reads = sum(v for k, v in calls.items() if k.startswith("dynamodb.") and k[9:] in dynamo._READ_OPS)
    ddb_writes = sum(v for k, v in calls.items() if k.startswith("dynamodb.") and k[9:] in dynamo._WRITE_OPS)
    s3_requests = sum(v for k, v in calls.items() if k.startswith("s3."))
    our_cpu = max(cpu - moto_cpu[0], 0.0)
    io_wait = ddb_reads * LATENCY_S["dynamodb"] + ddb_writes * LATENCY_S["dynamodb"] + s3_requests * LATENCY_S["s3"]
    return {
        "lines": accepted,
        "trace_codes": trace_codes,
        "history_months": history_months,
        "history_lines": history_lines,
        "dynamodb_requests_per_1k_lines": round((ddb_reads + ddb_writes) * per_k, 1),
        "dynamodb_reads_per_1k_lines": round(ddb_reads * per_k, 1),
        "dynamodb_writes_per_1k_lines": round(ddb_writes * per_k, 1),
        "write_units_per_line": round(sum(wru.values()) / max(accepted, 1), 3),
        "write_units_by_table": dict(sorted(wru.items())),
        "read_units_by_table": {k: round(v, 1) for k, v in sorted(rru.items())},
        "calls": {k: v for k, v in sorted(calls.items())},
        "queries_by_table_index": dict(sorted(queries.items())),
        "stored": stored,
        "stored_bytes_per_line": round(sum(t["bytes"] for t in stored.values()) / max(accepted + history_lines, 1), 1),
        "screen_cpu_seconds": round(cpu, 2),
        "screen_cpu_seconds_outside_moto": round(our_cpu, 2),
        "assumed_io_wait_seconds": round(io_wait, 2),
        "s3_requests": s3_requests,
    }


if __name__ == "__main__":
    sys.exit(main())
