"""Benchmark of the check API: latency of POST /v1/checks through the resolver with the
in-memory repository and on moto (the real handler through the offline Lambda router),
DynamoDB round trips per check, and the cold-start import time of functions/api/app.py.

    .venv/bin/python -m bench.api [--checks 300]

Figures, not pass/fail. `measure()` returns them as a dict for `make bench`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers"), str(ROOT / "tools"), str(ROOT)]

DRUGS = ["XA10BA02A001", "XJ05AH02A001", "XR03AC02A001", "XA10BA02A002"]


def _event(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    from rxguard.api.serve import proxy_event

    return proxy_event(method, path, {"Content-Type": "application/json"}, json.dumps(body))


def _dispensing(patient: int, day: int, sn: str) -> dict[str, Any]:
    return {
        "psn_no": f"BENCH{patient:07d}",
        "fixmedins_code": f"P44010{patient % 7:02d}",
        "med_type": "41",
        "fee_ocur_time": f"2026-02-{day:02d} 10:00:00",
        "lines": [
            {
                "feedetl_sn": f"{sn}-{patient}-{i}",
                "med_list_codg": code,
                "cnt": 1,
                "pric": 10.0,
                "drug_trac_codg": [f"{patient:010d}{day:02d}{i:08d}"],
            }
            for i, code in enumerate(DRUGS[: 1 + patient % 3])
        ],
    }


def _check(patient: int) -> dict[str, Any]:
    body = _dispensing(patient, 27, "CHK")
    body["fixmedins_code"] = "P4401099"
    for line in body["lines"]:
        line.pop("feedetl_sn")
    return body


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return round(p50 * 1000, 2), round(p99 * 1000, 2)


def _time_checks(invoke: Callable[[dict[str, Any]], dict[str, Any]], patients: int, checks: int) -> list[float]:
    samples = []
    for n in range(checks):
        event = _event("POST", "/v1/checks", _check(n % patients))
        start = time.perf_counter()
        answer = invoke(event)
        samples.append(time.perf_counter() - start)
        if answer.get("statusCode") != 200:
            raise RuntimeError(f"check failed: {answer.get('body', answer)}")
    return samples


def measure_memory(patients: int = 200, checks: int = 300) -> dict[str, Any]:
    from rxguard.api.resolver import handle
    from rxguard.api.service import Services
    from rxguard.api.settings import ApiSettings
    from rxguard.api.store import InMemoryFindingsStore
    from rxguard.kb import get_knowledge_base
    from rxguard.repository import InMemoryRepository

    repo = InMemoryRepository()
    svc = Services(
        kb=get_knowledge_base(), repo=repo, store=InMemoryFindingsStore(repo), settings=ApiSettings(auth_mode="open")
    )
    for p in range(patients):
        for day in (1, 10, 20):
            handle(_event("POST", "/v1/dispensations", _dispensing(p, day, f"D{day}")), None, svc)
    reads = repo.reads
    samples = _time_checks(lambda e: handle(e, None, svc), patients, checks)
    p50, p99 = _percentiles(samples)
    return {
        "check_p50_ms_memory": p50,
        "check_p99_ms_memory": p99,
        "repository_reads_per_check_memory": round((repo.reads - reads) / checks, 2),
        "history_lines_memory": len(repo.lines),
    }


def measure_moto(patients: int = 40, checks: int = 100) -> dict[str, Any]:
    from rxguard_tools.offline import Environment

    quiet = {"RXGUARD_API_AUTH": "open", "POWERTOOLS_LOG_LEVEL": "WARNING"}
    # the handlers' stdout (metrics and logs, as Lambda would ship them) is not the report
    with Environment(base_environment=quiet, handler_output=io.StringIO()) as env:
        route = env.router.route_for(env.name("ApiFunction"))
        assert route is not None

        def invoke(event: dict[str, Any]) -> dict[str, Any]:
            payload, _ = env.router.invoke(route, event)
            answer: dict[str, Any] = json.loads(payload)
            return answer

        for p in range(patients):
            for day in (1, 10, 20):
                invoke(_event("POST", "/v1/dispensations", _dispensing(p, day, f"D{day}")))
        per_check: list[int] = []
        samples: list[float] = []
        for n in range(checks):
            before = env.dynamodb_requests()
            samples += _time_checks(invoke, patients, 1) if n == 0 else []
            if n:
                event = _event("POST", "/v1/checks", _check(n % patients))
                start = time.perf_counter()
                invoke(event)
                samples.append(time.perf_counter() - start)
            after = env.dynamodb_requests()
            per_check.append(after["reads"] - before["reads"] + after["writes"] - before["writes"])
    p50, p99 = _percentiles(samples[1:])  # the first check pays the handler's cold start
    return {
        "check_p50_ms_moto": p50,
        "check_p99_ms_moto": p99,
        "dynamodb_round_trips_per_check_max": max(per_check),
        "dynamodb_round_trips_per_check_mean": round(statistics.mean(per_check), 2),
    }


COLD_START = """
import importlib.util, sys, time
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("api_app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(time.perf_counter() - start)
"""


def measure_cold_start(runs: int = 5) -> dict[str, Any]:
    """Import of functions/api/app.py (layer, Powertools, pydantic models, resolver) in a
    fresh interpreter, as on a Lambda cold start (the knowledge base loads on first request)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "layers"),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_DEFAULT_REGION": "cn-northwest-1",
        "RXGUARD_RESULTS_BUCKET": "bench",
        "RXGUARD_PURCHASES_TABLE": "p",
        "RXGUARD_TRACE_CODES_TABLE": "t",
        "RXGUARD_FINDINGS_TABLE": "f",
        "RXGUARD_BATCHES_TABLE": "b",
    }
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", COLD_START, str(ROOT / "functions/api/app.py")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return {"cold_start_import_ms_median": round(statistics.median(times) * 1000, 1), "cold_start_runs": runs}


def measure(checks: int = 300) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    figures.update(measure_cold_start())
    figures.update(measure_memory(checks=checks))
    figures.update(measure_moto(checks=max(20, checks // 3)))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.api")
    parser.add_argument("--checks", type=int, default=300)
    args = parser.parse_args(argv)
    figures = measure(args.checks)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
