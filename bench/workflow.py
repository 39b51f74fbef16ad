"""Offline workflow benchmark: wall time and DynamoDB requests per 1,000 lines.

    python -m bench.workflow              # 10,000 and 100,000 lines
    python -m bench.workflow 20000        # any sizes

One synthetic batch (rxguard_tools.synth: a population with realistic refills, chronic
patients and abuse patterns; trimmed to the exact line count) is dropped into the
ingest bucket of the offline environment and runs through the real ClaimBatch state
machine and handlers on moto. DynamoDB requests are counted from the boto3 calls of the
handlers' clients (a botocore `before-call.dynamodb` hook on the default session), by
operation; reads = GetItem, BatchGetItem, Query, Scan; writes = PutItem, UpdateItem,
DeleteItem, BatchWriteItem (a batch call counts once; items are listed separately).
Wall time is moto's, in one process: it says how the offline mode scales, not what AWS
Lambda would take.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = (10_000, 100_000)


def synthetic_batch(lines: int, path: Path, seed: int = 1) -> int:
    """Write `lines` claim lines (JSON Lines) of a synthetic population to `path`."""
    from rxguard.kb import get_knowledge_base
    from rxguard_tools.synth.generator import grown_records

    records = grown_records(lines, get_knowledge_base(), patients=max(20, lines // 18), seed=seed)
    with path.open("w", encoding="utf-8") as fh:
        for record in records[:lines]:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return lines


def measure(lines: int, *, letters: bool = True, timeout: float = 7200.0) -> dict[str, Any]:
    """Run one batch of `lines` synthetic lines offline; figures as a dict."""
    from rxguard_tools.offline import Environment

    logging.getLogger("moto").setLevel(logging.CRITICAL)
    environment = {} if letters else {"RXGUARD_ALERTS_CONFIG": '{"letters_enabled": false}'}
    with tempfile.TemporaryDirectory(prefix="rxguard-bench-") as tmp:
        batch = Path(tmp) / f"synthetic-{lines}.jsonl"
        synthetic_batch(lines, batch)
        with open(os.devnull, "w") as sink, Environment(handler_output=sink, base_environment=environment) as env:
            started, cpu_started = time.perf_counter(), time.process_time()
            (execution,) = env.drop(batch)
            env.wait([execution], timeout=timeout, poll=0.5)
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_started  # all threads of this process: meaningful on a busy machine
            requests = env.dynamodb_requests()
            by_operation = dict(sorted(env.requests.items()))
            seconds_by_function: dict[str, float] = {}
            for call in env.router.calls:
                seconds_by_function[call.logical_id] = seconds_by_function.get(call.logical_id, 0.0) + call.seconds
            output = execution.output if isinstance(execution.output, dict) else {}
    per_k = 1000 / lines
    return {
        "lines": lines,
        "status": output.get("status", execution.status),
        "letters": letters,
        "wall_seconds": round(wall, 1),
        "seconds_per_1000_lines": round(wall * per_k, 2),
        "cpu_seconds": round(cpu, 1),
        "cpu_seconds_per_1000_lines": round(cpu * per_k, 2),
        "dynamodb_reads": requests["reads"],
        "dynamodb_writes": requests["writes"],
        "dynamodb_reads_per_1000_lines": round(requests["reads"] * per_k, 1),
        "dynamodb_writes_per_1000_lines": round(requests["writes"] * per_k, 1),
        "dynamodb_requests_by_operation": by_operation,
        "handler_seconds": {k: round(v, 1) for k, v in sorted(seconds_by_function.items())},
        "findings_new": output.get("findings_new"),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    sizes = [int(a.replace("_", "")) for a in args if not a.startswith("-")] or list(SIZES)
    letters = "--no-letters" not in args
    print("offline workflow (moto, one process): wall time and DynamoDB requests per 1,000 lines")
    for size in sizes:
        result = measure(size, letters=letters)
        print(
            f"{result['lines']:>8} lines  {result['status']:<9}  {result['wall_seconds']:>8.1f} s  "
            f"({result['seconds_per_1000_lines']} s/1k, CPU {result['cpu_seconds_per_1000_lines']} s/1k)  "
            f"DynamoDB reads {result['dynamodb_reads_per_1000_lines']}/1k, "
            f"writes {result['dynamodb_writes_per_1000_lines']}/1k"
        )
        print("    " + json.dumps(result, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
