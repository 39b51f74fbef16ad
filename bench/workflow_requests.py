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


def measure(lines: int) -> dict[str, Any]:
    from moto import mock_aws

    from bench.workflow import synthetic_batch
    from rxguard import dynamo
    from rxguard.ingest import prepare_batch, read_chunk
    from rxguard.kb import get_knowledge_base
    from rxguard.offline.patches import narrow_hash_key_query
    from rxguard.screening import screen_lines
    from rxguard.workflow.contract import ChunkFindings, InstitutionsRequest
    from rxguard.workflow.institutions import screen_institutions
    from tests.integration.conftest import TABLES, _create_table, template_resources

    logging.getLogger("moto").setLevel(logging.CRITICAL)
    for key, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(key, value)
    kb = get_knowledge_base()
    with tempfile.TemporaryDirectory(prefix="rxguard-bench-") as tmp, mock_aws(), narrow_hash_key_query():
        batch = Path(tmp) / "batch.jsonl"
        synthetic_batch(lines, batch)
        prepared = prepare_batch(batch, kb, Path(tmp) / "out", chunk_size=5000)
        dynamo.reset_clients()
        ddb = dynamo.client("dynamodb")
        units = WriteUnits()
        ddb.meta.events.register("before-parameter-build.dynamodb.*", units)
        resources = template_resources()
        names = {}
        for logical_id in TABLES:
            names[logical_id] = f"bench-{logical_id}"
            _create_table(ddb, names[logical_id], resources[logical_id]["Properties"])
        tables = dynamo.TableNames(
            purchases=names["PurchasesTable"],
            trace_codes=names["TraceCodesTable"],
            findings=names["FindingsTable"],
            batches=names["BatchesTable"],
            aggregates=names["AggregatesTable"],
        )
        s3 = dynamo.client("s3")
        s3.create_bucket(Bucket="bench-results")
        results = dynamo.ResultStore("bench-results", s3)
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


if __name__ == "__main__":
    sys.exit(main())
