"""`make bench` = `python -m bench`: one report, Markdown + JSON, with every figure of issue 7.

    python -m bench [--quick] [--out bench/out] [--skip SECTION ...]

Sections (each degrades to "not available: <why>" when its module has not landed or
fails; the report is always written):

  engine      engine lines/s on one core                      bench.engine.measure()
  history     check and screen CPU time at 60, 240, 960 and 3,000 history lines of one
              patient, and the size of a 200-line check answer  bench.history.measure()
  workflow    offline workflow wall time, 10k and 100k lines  bench.workflow.measure(n)
  cost        DynamoDB units per 1,000 lines and AWS cost per million lines at several
              batch sizes, with the floor and the target       bench.cost (+ bench.chart)
  storage     a month screened after history of the same patients on moto: requests,
              write units, stored bytes, cost per million lines with 400 days of storage
              and PITR, by batch size and by history depth (+ docs/bench-storage-cost.png)
                                                             bench.workflow_requests, bench.cost
  datalake    the same month on Parquet with DuckDB: three rules as SQL, cost and speed
                                                             bench.datalake.measure()
  api         check latency p50/p99 and DynamoDB round trips  bench.api.measure()
  coldstart   CPU time of importing each functions/<name>/app.py from the built layer
              in a fresh interpreter                           bench.coldstart.measure_built()
  ingest      peak memory of ingestion, 100k and 1,000,000 lines  bench.ingest_memory.measure(n)
  local       `rxguard run --state` end to end at 10k, 100k, 1M lines: lines/s, peak RSS,
              ratio to the in-memory engine on the same batch  bench.local.measure(n)

Writes bench/out/bench-<UTC time>.{md,json}, bench/out/latest.{md,json}, copies the
Markdown to docs/benchmarks.md and draws docs/bench-chart.png. `--quick` uses smaller
sizes (for a smoke run; the figures are then marked quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import reference_loop_seconds

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SECTIONS = (
    "engine",
    "history",
    "workflow",
    "cost",
    "storage",
    "datalake",
    "api",
    "serve",
    "coldstart",
    "ingest",
    "local",
)
LOCAL_TARGET_LINES_PER_S = 10_000  # end to end on 2 cores, 100k lines
LOCAL_TARGET_1M_SECONDS = 120.0
LOCAL_TARGET_RSS_MB = 1024.0

COLD_START_TARGET_MS = 250.0  # issue 14: CPU ms of importing app.py from the built layer
CHECK_P99_TARGET_MS = 5.0
CHECK_ROUND_TRIPS_TARGET = 2
SERVE_P99_TARGET_MS = 50.0  # rxguard serve --state, 20 clients x 50 checks (issue 11)
FLAT_MEMORY_RATIO = 1.25  # peak RSS at 10x the lines may grow at most this much


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "load_average_1min": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
        "reference_loop_cpu_s": reference_loop_seconds(),
    }


# --- sections ---------------------------------------------------------------------------


def section_engine(quick: bool) -> dict[str, Any]:
    from bench import engine

    figures: dict[str, Any] = engine.measure(patients=600 if quick else 3000, repeats=1 if quick else 3)
    return figures


def section_history(quick: bool) -> dict[str, Any]:
    from bench import history

    figures: dict[str, Any] = history.measure((60, 240, 960) if quick else history.SIZES, repeats=2 if quick else 5)
    return figures


SIZES: dict[str, tuple[int, ...]] = {}  # --workflow-sizes, --cost-sizes


def section_workflow(quick: bool) -> dict[str, Any]:
    from bench import workflow

    sizes = SIZES.get("workflow") or ((2_000, 10_000) if quick else (10_000, 100_000))
    runs = {}
    for n in sizes:
        runs[str(n)] = workflow.measure(n)
    return {"runs": runs}


def section_cost(quick: bool) -> dict[str, Any]:
    from bench import cost

    sizes = SIZES.get("cost") or ((1_000, 5_000) if quick else (1_000, 5_000, 20_000))
    points = []
    for n in sizes:
        usage = cost.measure_usage(n)
        model = cost.cost_per_million(usage)
        points.append(
            {
                "lines": usage.lines,
                "usd_per_million": model["total_usd_per_million_lines"],
                "lines_per_s": round(usage.lines / usage.wall_seconds, 1) if usage.wall_seconds else None,
                "wall_seconds": round(usage.wall_seconds, 1),
                "status": usage.status,
                "model": model,
                "usage": usage.as_dict(),
            }
        )
    largest = max(points, key=lambda p: p["lines"])
    out: dict[str, Any] = {"points": points, "largest": largest["lines"], **largest["model"]}
    out["chart"] = draw_chart(out)
    return out


def draw_chart(cost_section: dict[str, Any]) -> str:
    """docs/bench-chart.png from the cost section's points; the path, or why not."""
    try:
        from bench import chart, cost

        points = cost_section["points"]
        codes = points[-1]["model"]["trace_codes_per_line"]
        floor = cost.floor_per_million(codes)
        path = chart.render(
            points,
            DOCS / "bench-chart.png",
            floor=floor,
            target=floor * cost.TARGET_MULTIPLE,
            codes_per_line=codes,
            floor_15=cost.floor_per_million(cost.FLOOR_CODES_PER_LINE),
            title="rxguard: estimated AWS cost per million lines and offline throughput, by batch size",
        )
        return str(path.relative_to(ROOT))
    except Exception as exc:  # the figures stand without the picture
        return f"not available: {type(exc).__name__}: {exc}"


def section_api(quick: bool) -> dict[str, Any]:
    from bench import api

    figures: dict[str, Any] = api.measure(checks=100 if quick else 300)
    return figures


def section_serve(quick: bool) -> dict[str, Any]:
    from bench import serve

    figures: dict[str, Any] = serve.measure(requests=10 if quick else 50)
    figures["baseline_do_nothing_app"] = serve.baseline(requests=10 if quick else 50)
    return figures


def function_environments() -> dict[str, dict[str, str]]:
    """Each function's environment as the offline mode resolves template.yaml (Globals
    merged under the function's own variables), by its CodeUri folder name."""
    from rxguard_tools.offline import Environment

    env = Environment()  # not entered: nothing is started, only the template is resolved
    env._plan()
    out: dict[str, dict[str, str]] = {}
    for resource in env.resources.values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        settings = env._function_settings(resource.get("Properties") or {})
        folder = str(settings.get("CodeUri", "")).rstrip("/").rsplit("/", 1)[-1]
        out[folder] = dict(settings["Environment"]["Variables"])
    return out


def section_coldstart(quick: bool) -> dict[str, Any]:
    """Each function's import from the built layer (bench.coldstart: `make -C layers
    build-RxguardLayer` for this machine's CPU), as CPU time in a fresh interpreter; the
    heaviest imports of the slowest function from `-X importtime` on the same layer."""
    from bench import coldstart

    figures = coldstart.measure_built(runs=3 if quick else 5)
    functions = {k: v for k, v in figures["functions"].items() if not k.startswith("(")}
    worst = max(functions, key=lambda k: functions[k]["import_cpu_ms_median"]) if functions else None
    heaviest: list[dict[str, Any]] = []
    if worst is not None:
        app = ROOT / "functions" / worst
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-X", "importtime", "-c", coldstart.CHILD, str(app), figures["layer"],
             sysconfig.get_paths()["purelib"]],
            env={"AWS_DEFAULT_REGION": "us-east-1", **function_environments().get(worst, {})},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=str(app),
        )  # fmt: skip
        heaviest = heaviest_imports(proc.stderr)
    return {**figures, "heaviest_imports": heaviest, "profiled": worst}


def heaviest_imports(importtime: str, top: int = 4) -> list[dict[str, Any]]:
    """Third-party and layer packages with the largest cumulative import time (-X importtime)."""
    best: dict[str, int] = {}
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        try:
            micros = int(cumulative.strip())
        except ValueError:
            continue
        package = name.strip().split(".")[0]
        if package in ("app", "app_under_test", "encodings", "site") or not package:
            continue
        best[package] = max(best.get(package, 0), micros)
    ranked = sorted(best.items(), key=lambda kv: -kv[1])[:top]
    return [{"package": k, "cumulative_ms": round(v / 1000, 1)} for k, v in ranked]


def section_ingest(quick: bool) -> dict[str, Any]:
    from bench import ingest_memory

    sizes = (20_000, 200_000) if quick else (100_000, 1_000_000)
    runs = {}
    for n in sizes:
        # from a small fresh interpreter: a child forked from this (large) process would
        # inherit its peak RSS (ru_maxrss survives fork and exec) and hide the real peak
        code = f"import json; from bench import ingest_memory as m; print(json.dumps(m.measure({n})))"
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=3600, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"bench.ingest_memory.measure({n}) failed: {proc.stderr.strip()[-300:]}")
        runs[str(n)] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ingest_memory is not None
    small, large = (runs[str(n)] for n in sizes)
    growth = large["peak_rss_mb"] / small["peak_rss_mb"] if small.get("peak_rss_mb") else None
    return {
        "runs": runs,
        "peak_growth_at_10x_lines": round(growth, 2) if growth else None,
        "flat": growth is not None and growth <= FLAT_MEMORY_RATIO,
    }


STORAGE_TARGET_USD = 1.50  # issue 14: per million lines, 400 days of storage and PITR included
STORAGE_HEADLINE = (20_000, 1)  # the benchmark: a 20k-line month after a month of history


def section_storage(quick: bool) -> dict[str, Any]:
    """Packed storage (docs/storage-aws.md): a month's batch screened after history of the
    same patients; requests, write units, storage and the full cost per million lines, by
    batch size (after one month) and by history depth (a fixed month size), and the chart."""
    from bench import chart, cost, workflow_requests

    sizes = (2_000, 5_000) if quick else (2_000, 5_000, 20_000)
    depth_lines = 2_000 if quick else 5_000
    depths = (0, 1, 2) if quick else (0, 1, 3, 6)
    wanted = [(n, 1) for n in sizes]
    wanted += [(depth_lines, m) for m in depths if (depth_lines, m) not in wanted]
    runs = []
    for lines, months in wanted:
        figures = workflow_requests.measure_monthly(lines, months)
        figures["series_depth"] = lines == depth_lines
        runs.append({**figures, "cost": cost.monthly_batch_cost(figures)})
    try:
        drawn = str(
            chart.render_storage_cost(
                runs, DOCS / "bench-storage-cost.png", target=STORAGE_TARGET_USD, depth_lines=depth_lines
            ).relative_to(ROOT)
        )
    except ModuleNotFoundError as exc:
        drawn = f"not drawn: {exc.name} is not installed"
    prices = {k: {"usd": v.usd, "unit": v.unit, "source": v.source} for k, v in cost.PRICES.items()}
    return {
        "runs": runs,
        "chart": drawn,
        "depth_lines": depth_lines,
        "prices": prices,
        "prices_read_on": cost.PRICES_READ_ON,
    }


def section_datalake(quick: bool) -> dict[str, Any]:
    """The data-lake alternative on the storage section's headline batch (bench.datalake)."""
    from bench import datalake

    lines, months = (5_000, 1) if quick else STORAGE_HEADLINE
    return datalake.measure(lines, months)


def section_local(quick: bool) -> dict[str, Any]:
    from bench import local

    sizes = (2_000, 10_000) if quick else (10_000, 100_000, 1_000_000)
    runs = {str(n): local.measure(n, workers=2) for n in sizes}
    peak = max(r["peak_rss_mb"] for r in runs.values())
    return {"runs": runs, "workers": 2, "peak_rss_mb": peak}


RUNNERS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "engine": section_engine,
    "history": section_history,
    "workflow": section_workflow,
    "cost": section_cost,
    "storage": section_storage,
    "datalake": section_datalake,
    "api": section_api,
    "serve": section_serve,
    "coldstart": section_coldstart,
    "ingest": section_ingest,
    "local": section_local,
}


def run_section(name: str, quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        figures = RUNNERS[name](quick)
        result = {"available": True, **figures}
    except ModuleNotFoundError as exc:
        result = {"available": False, "why": f"module {exc.name} has not landed"}
    except Exception as exc:
        result = {"available": False, "why": f"{type(exc).__name__}: {exc}".strip()[:500]}
        traceback.print_exc()
    result["section_seconds"] = round(time.perf_counter() - started, 1)
    print(f"bench: {name} done in {result['section_seconds']} s", file=sys.stderr, flush=True)
    return result


# --- the Markdown report -----------------------------------------------------------------


def _na(section: dict[str, Any]) -> str | None:
    return None if section.get("available") else f"not available: {section.get('why')}"


def _section(out: list[str], title: str, section: dict[str, Any], *table: str) -> bool:
    """Add a section's heading, then "not available: why" or its table's header lines
    (`table`); True when it has figures."""
    out += [f"## {title}", ""]
    if (na := _na(section)) is not None:
        out += [na, ""]
        return False
    out += table
    return True


def _g(d: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in d:
            return d[key]
    return "?"


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    s = report["sections"]
    out = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (`python -m bench{' --quick' if report['quick'] else ''}`) on "
        f"{m['date_utc']} UTC; machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}, "
        f"Python {m['python']}, load average {m.get('load_average_1min')} at the start, reference loop "
        f"{m.get('reference_loop_cpu_s')} s of CPU (`bench.reference_loop_seconds`: the core's speed; this VM's "
        "varies by up to 2x from hour to hour, so figures of two reports compare after dividing by it). "
        "Offline figures run on moto in one process: they show how the code "
        "scales and what it asks of AWS, not AWS latencies. How each figure is measured: "
        "[measurement.md](measurement.md).",
        "",
    ]
    if report["quick"]:
        out += ["**Quick run: smaller sizes than the issue asks for.**", ""]
    shortfalls: list[str] = []

    e = s.get("engine", {})
    if _section(out, "Engine throughput (one core)", e):
        pop = e.get("population", {})
        out += [
            "| figure | value |",
            "|---|---|",
            f"| engine alone (evaluate_patient over whole timelines) | {_g(e, 'engine_lines_per_s')} lines/s |",
            f"| screen_lines on an in-memory repository (monthly batches, 5,000-line chunks) | "
            f"{_g(e, 'screen_lines_per_s')} lines/s |",
            f"| pre-dispensing check_lines, mean | {_g(e, 'check_ms_mean')} ms |",
            f"| population | {pop.get('patients', '?')} patients, {pop.get('lines', '?')} lines, "
            f"{pop.get('months', '?')} months |",
            "",
        ]

    h = s.get("history", {})
    if _section(
        out,
        "Cost against one patient's history (CPU, one core)",
        h,
        "| history lines | check ms | x smallest | again, history kept, ms | screen one line ms | x smallest |",
        "|---|---|---|---|---|---|",
    ):
        for r in h.get("rows", []):
            out.append(
                f"| {r['history_lines']:,} | {r['check_cpu_ms']} | {r['check_ratio_to_smallest']} | "
                f"{r.get('check_again_cpu_ms', '-')} | {r['screen_cpu_ms']} | {r['screen_ratio_to_smallest']} |"
            )
        a = h.get("answer_200_lines", {})
        out += [
            "",
            f"A {a.get('proposed_lines')}-line check against {a.get('history_lines')} history lines answers "
            f"{a.get('bytes', 0):,} bytes ({a.get('evidence_entries', 0):,} evidence entries; a hit lists at most "
            "5 evidence lines and their total).",
            "",
        ]
        if a.get("bytes", 0) >= 1_000_000:
            shortfalls.append(f"a 200-line check answers {a.get('bytes', 0):,} bytes (target: under 1 MB)")

    w = s.get("workflow", {})
    if _section(
        out,
        "Offline workflow wall time",
        w,
        "| lines | status | wall s | s per 1k lines | DynamoDB read calls /1k | write calls /1k | handler s |",
        "|---:|---|---:|---:|---:|---:|---|",
    ):
        for n, r in sorted(w["runs"].items(), key=lambda kv: int(kv[0])):
            handlers = ", ".join(
                f"{k.replace('Function', '')} {v}" for k, v in (r.get("handler_seconds") or {}).items()
            )
            out.append(
                f"| {int(n):,} | {r.get('status')} | {r.get('wall_seconds')} | {r.get('seconds_per_1000_lines')} | "
                f"{r.get('dynamodb_reads_per_1000_lines')} | {r.get('dynamodb_writes_per_1000_lines')} | {handlers} |"
            )
            if r.get("status") not in ("SUCCEEDED", None):
                shortfalls.append(f"the offline workflow ended {r.get('status')} on {int(n):,} lines")
        out.append("")

    c = s.get("cost", {})
    if _section(out, "DynamoDB units and AWS cost per million lines", c):
        per_k = c["per_1000_lines"]
        comps = c["components_usd_per_million_lines"]
        out += [
            f"Measured on the {c['largest']:,}-line batch ({c['trace_codes_per_line']} trace codes a line); "
            f"prices: US East list prices read on {c['prices_read_on']} (sources below).",
            "",
            "| per 1,000 lines | value |",
            "|---|---:|",
            f"| DynamoDB write request units | {per_k['dynamodb_wru']} |",
            f"| DynamoDB items written | {per_k['dynamodb_items_written']} |",
            f"| DynamoDB write calls | {per_k['dynamodb_write_calls']} |",
            f"| DynamoDB read request units | {per_k['dynamodb_rru']} |",
            f"| DynamoDB read calls | {per_k['dynamodb_read_calls']} |",
            f"| Lambda GB-seconds | {per_k['lambda_gb_seconds']} |",
            f"| Step Functions transitions | {per_k['sfn_transitions']} |",
            f"| SNS publishes | {per_k['sns_publishes']} |",
            f"| S3 requests | {per_k['s3_requests']} |",
            "",
            "| component | USD per million lines |",
            "|---|---:|",
        ]
        out += [f"| {k.replace('_', ' ')} | {v:.4f} |" for k, v in comps.items()]
        ratio = c["ratio_to_floor"]
        ratio15 = round(c["total_usd_per_million_lines"] / c["floor_usd_per_million_lines"], 2)
        out += [
            f"| **total** | **{c['total_usd_per_million_lines']:.4f}** |",
            f"| floor: one WRU per line and per trace code at {c['trace_codes_per_line']} codes a line | "
            f"{c['floor_at_measured_codes_usd']:.4f} |",
            f"| floor at 1.5 codes a line (the issue's figure) | {c['floor_usd_per_million_lines']:.4f} |",
            f"| target: {c['target_multiple']}x floor | "
            f"{c['target_multiple'] * c['floor_at_measured_codes_usd']:.4f} |",
            "",
            f"Ratio to the floor at the measured codes a line: **{ratio}x** "
            f"({'within' if c['within_target'] else 'ABOVE'} the {c['target_multiple']}x target); "
            f"to the issue's $1.56 floor at 1.5 codes a line: {ratio15}x.",
            "",
            "By batch size (the chart):",
            "",
            "| lines | status | USD per million lines | offline lines/s | wall s |",
            "|---:|---|---:|---:|---:|",
        ]
        out += [
            f"| {p['lines']:,} | {p['status']} | {p['usd_per_million']:.4f} | {p['lines_per_s']} | "
            f"{p['wall_seconds']} |"
            for p in c["points"]
        ]
        out += ["", f"![cost and throughput by batch size](bench-chart.png) ({c.get('chart')})", ""]
        out += ["Prices:", ""]
        out += [f"- {k}: ${v['usd']:.10g} per {v['unit']} — {v['source']}" for k, v in c["prices"].items()]
        out.append("")
        if not c["within_target"]:
            top = sorted(comps.items(), key=lambda kv: -kv[1])[:3]
            writes_ratio = comps["dynamodb_writes"] / c["floor_at_measured_codes_usd"]
            shortfalls.append(
                f"AWS cost is {ratio}x the floor (target {c['target_multiple']}x); largest components: "
                + ", ".join(f"{k} ${v:.2f}/M" for k, v in top)
                + f". Why: DynamoDB writes alone are {writes_ratio:.2f}x the floor ({per_k['dynamodb_wru']} WRU "
                f"per 1,000 lines against {1000 * (1 + c['trace_codes_per_line']):.0f} for one per line and per "
                "code: findings, aggregates and batch records add the rest); Lambda compute is the handlers' "
                "time on moto, where every DynamoDB call costs moto's Python time instead of a network round "
                "trip, and Notify renders PDF letters; S3 PUTs are mostly letters"
            )

    st = s.get("storage", {})
    if _section(out, "DynamoDB storage and the full AWS cost: a month after history (docs/storage-aws.md)", st):
        runs = st["runs"]
        out += [
            "Targets (issue 14, on a 20,000-line month screened after a month of history of the same "
            "patients): <= 100 DynamoDB requests per 1,000 lines, <= 0.8 write units a line (secondary "
            "indexes included), <= $1.50 per million lines with 400 days of storage and PITR. "
            "`python -m bench.workflow_requests monthly LINES MONTHS` measures one column; the cost model is "
            "`bench.cost.monthly_batch_cost` (each table at its class's prices: Purchases, TraceCodes and "
            "Findings are Standard-IA).",
            "",
            "| figure | "
            + " | ".join(f"{r['lines']:,} lines after {r['history_months']} month(s)" for r in runs)
            + " |",
            "|---|" + "---:|" * len(runs),
        ]
        rows = [
            ("DynamoDB requests / 1,000 lines", "dynamodb_requests_per_1k_lines"),
            ("reads / 1,000 lines", "dynamodb_reads_per_1k_lines"),
            ("writes / 1,000 lines", "dynamodb_writes_per_1k_lines"),
            ("write units a line (indexes included)", "write_units_per_line"),
            ("stored bytes a line (tables, indexes, 100 B an item)", "stored_bytes_per_line"),
            ("Screen CPU s outside moto", "screen_cpu_seconds_outside_moto"),
            ("assumed I/O wait s (8 ms a DynamoDB, 20 ms an S3 request)", "assumed_io_wait_seconds"),
        ]
        out += [f"| {label} | " + " | ".join(str(r.get(key)) for r in runs) + " |" for label, key in rows]
        names = list(runs[0]["cost"]["components_usd_per_million_lines"])
        out += [
            f"| USD per million lines: {n.replace('_', ' ')} | "
            + " | ".join(f"{r['cost']['components_usd_per_million_lines'][n]:.4f}" for r in runs)
            + " |"
            for n in names
        ]
        out += [
            "| **USD per million lines, total** | "
            + " | ".join(f"**{r['cost']['total_usd_per_million_lines']:.4f}**" for r in runs)
            + " |",
            "",
        ]
        head = next(
            (r for r in runs if (r["lines"] >= 20_000 and r["history_months"] == 1)),
            max(runs, key=lambda r: (r["history_months"] == 1, r["lines"])),
        )
        by_table = head["cost"].get("dynamodb_by_table_usd_per_million_lines", {})
        if by_table:
            parts = ["writes", "index_writes", "reads", "storage_400d", "pitr_400d"]
            out += [
                f"DynamoDB by table, USD per million lines ({head['lines']:,} lines after "
                f"{head['history_months']} month; class from template.yaml):",
                "",
                "| table | class | " + " | ".join(p.replace("_", " ") for p in parts) + " |",
                "|---|---|" + "---:|" * len(parts),
            ]
            classes = head["cost"].get("table_classes", {})
            for table, costs in by_table.items():
                if sum(costs.values()) < 0.00005:
                    continue
                out.append(
                    f"| {table} | {classes.get(table, '').replace('STANDARD_INFREQUENT_ACCESS', 'Standard-IA')} | "
                    + " | ".join(f"{costs.get(p, 0.0):.4f}" for p in parts)
                    + " |"
                )
            out.append("")
        out += ["![cost per million lines by batch size and history depth](bench-storage-cost.png)", ""]
        prices = st.get("prices") or {}
        if prices:
            out += [
                f"Prices (one table, `bench.cost.PRICES`, US East (N. Virginia) list prices, read on "
                f"{st.get('prices_read_on')}; China regions are priced in CNY on amazonaws.cn and differ):",
                "",
                "| price | USD | unit | source |",
                "|---|---:|---|---|",
            ]
            out += [f"| {k} | {v['usd']:.10g} | {v['unit']} | {v['source']} |" for k, v in prices.items()]
            out.append("")
        if head["dynamodb_requests_per_1k_lines"] > 100:
            shortfalls.append(
                f"{head['dynamodb_requests_per_1k_lines']} DynamoDB requests per 1,000 lines (target 100)"
            )
        if head["write_units_per_line"] > 0.8:
            shortfalls.append(f"{head['write_units_per_line']} write units a line (target 0.8)")
        for r in runs:
            if r["history_months"] > 1 and r["cost"]["total_usd_per_million_lines"] > STORAGE_TARGET_USD:
                shortfalls.append(
                    f"after {r['history_months']} months of history ({r['lines']:,}-line month): "
                    f"${r['cost']['total_usd_per_million_lines']:.2f} per million lines, {r['write_units_per_line']} "
                    "write units a line (a month leaving each returning patient's head is one more item a batch; "
                    "docs/storage-aws.md)"
                )
        if head["cost"]["total_usd_per_million_lines"] > STORAGE_TARGET_USD:
            shortfalls.append(
                f"${head['cost']['total_usd_per_million_lines']:.2f} per million lines with storage and PITR "
                f"(target ${STORAGE_TARGET_USD:.2f})"
            )

    out += ["## The data-lake alternative: batch rules on Parquet with DuckDB", ""]
    lake = s.get("datalake", {})
    if (na := _na(lake)) is not None:
        out += [na, ""]
    else:
        out += [
            f"The same {lake['lines']:,}-line month after {lake['history_months']} month(s) of history "
            f"({lake['history_lines']:,} lines), ingested as Prepare does, written as Parquet (zstd) with DuckDB "
            f"{lake['duckdb']} and screened by three rules written as SQL (`bench/datalake.py`, one DuckDB thread):",
            "",
            "| rule (rough SQL reading) | SQL hits | engine findings | SQL hits in the engine's evidence | "
            "engine findings SQL found | CPU ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for rule, r in lake["rules"].items():
            out.append(
                f"| {rule} | {r['sql_hits']} | {r['engine_findings']} | {r['sql_hits_in_engine_evidence']} | "
                f"{r['engine_findings_found_by_sql']} | {r['cpu_ms']} |"
            )
        usd = lake["usd_per_million_lines"]
        out += [
            "",
            f"Parquet: {lake['parquet_bytes_per_line']} bytes a line (DynamoDB above: tables, indexes and item "
            f"overhead). Writing the month as Parquet: {lake['write_month_parquet_cpu_s']} CPU s; the three rules: "
            f"{lake['rules_cpu_s']} CPU s ({lake['lines_per_cpu_second']:,} lines per CPU second, write included); "
            f"the engine's 14 rules over the same lines in memory: {lake['engine_cpu_s_same_lines']} CPU s.",
            "",
            f"Cost of that path per million lines: S3 storage for 400 days ${usd['s3_storage_400d']:.4f}, S3 requests "
            f"${usd['s3_requests']:.4f}, DuckDB in a 2 GB Lambda ${usd['duckdb_in_lambda']:.4f} (or Athena at $5 "
            f"per TB scanned, 10 MB minimum a query: ${usd['or_athena']:.4f}); total "
            f"**${usd['total_with_duckdb_in_lambda']:.4f}**, against the DynamoDB path's total above.",
            "",
            "Limits of this reading: three of the fourteen rules, simplified (no carried-over stock, no dose "
            "changes, no reversals netted, no mitigations, severities or explanations); the agreement figures "
            "say how close the simplification lands on this synthetic population, not on real claims. "
            "Trace-code reuse, identity misuse and institution outliers would be further SQL over the same files.",
            "",
            "Why DynamoDB stays for the check API: a pre-dispensing check (事前提醒) must see the patient's "
            "purchase at another pharmacy a minute ago and answer in a few milliseconds; each dispensation is "
            "a single-line write. Parquet on S3 has no point lookup by patient (a query reads whole row groups, "
            "tens of milliseconds a GET before any compute; Athena answers in seconds), and small appends "
            "mean one object per request or a buffer (Firehose: 60 s or more) that the next check cannot "
            "see - exactly the cross-institution case the check exists for; trace-code reuse needs an "
            "immediate, conditional record of each sale. DynamoDB gives one-round-trip reads of a patient's "
            "packed history and conditional writes. The data lake fits the monthly batch and the "
            "regulators' analytics (cheaper storage, SQL over all months); a split - batches screened "
            "from Parquet, the check API on DynamoDB holding only the months the rules look back on - "
            "would need the two stores kept in step, which this release does not do.",
            "",
        ]

    a = s.get("api", {})
    if _section(out, "Check API", a):
        out += ["| figure | value |", "|---|---:|"]
        out += [f"| {k.replace('_', ' ')} | {v} |" for k, v in a.items() if k not in ("available", "section_seconds")]
        out.append("")
        p99 = a.get("check_p99_ms_memory")
        trips = a.get("dynamodb_round_trips_per_check_max")
        if isinstance(p99, int | float) and p99 > CHECK_P99_TARGET_MS:
            shortfalls.append(
                f"check p99 compute {p99} ms > {CHECK_P99_TARGET_MS} ms (p50 {a.get('check_p50_ms_memory')} ms; "
                "measured in one process on a shared, loaded machine: the tail includes waits for a core)"
            )
        if isinstance(trips, int | float) and trips > CHECK_ROUND_TRIPS_TARGET:
            shortfalls.append(f"a check makes {trips} DynamoDB round trips (target <= {CHECK_ROUND_TRIPS_TARGET})")
        out += [
            f"Targets: p99 compute <= {CHECK_P99_TARGET_MS} ms (in-memory figure: the compute without network), "
            f"<= {CHECK_ROUND_TRIPS_TARGET} DynamoDB round trips per check.",
            "",
        ]

    sv = s.get("serve", {})
    if _section(out, "`rxguard serve --state` under concurrent clients", sv):
        lat, base = sv.get("latency_ms", {}), sv.get("baseline_do_nothing_app", {})
        blat = base.get("latency_ms", {})
        out += [
            f"{sv.get('clients')} keep-alive clients x {sv.get('requests_per_client')} checks of one refill for a "
            f"patient with a year of history (median {sv.get('history_lines_median')} lines), load generator in "
            "its own processes; the do-nothing app is the same load on serve's uvicorn answering a fixed 1 kB.",
            "",
            "| figure | rxguard serve | do-nothing app |",
            "|---|---:|---:|",
            f"| errors | {sv.get('errors')} of {sv.get('requests')} | {base.get('errors')} of {base.get('requests')} |",
            *(f"| latency {q} (ms) | {lat.get(q)} | {blat.get(q)} |" for q in ("p50", "p95", "p99", "max")),
            f"| server CPU per request (ms) | {sv.get('server_cpu_ms_per_request')} | "
            f"{base.get('server_cpu_ms_per_request')} |",
            f"| client CPU per request (ms) | {sv.get('client_cpu_ms_per_request')} | "
            f"{base.get('client_cpu_ms_per_request')} |",
            f"| other processes during the run (cores of {sv.get('cores')}) | {sv.get('other_processes_cores')} | "
            f"{base.get('other_processes_cores')} |",
            f"| load average (1, 5, 15 min) | {sv.get('load_average')} | {base.get('load_average')} |",
            f"| CPU-bound mean latency: clients x CPU a request / cores (ms) | {sv.get('cpu_bound_mean_ms')} | - |",
            "",
            f"Target: 0 errors, p99 <= {SERVE_P99_TARGET_MS:g} ms. Closed loop: the mean latency cannot be below "
            "the CPU-bound figure even on an idle machine.",
            "",
        ]
        p99 = lat.get("p99")
        if (isinstance(p99, int | float) and p99 > SERVE_P99_TARGET_MS) or sv.get("errors"):
            shortfalls.append(
                f"serve p99 {p99} ms > {SERVE_P99_TARGET_MS:g} ms with {sv.get('errors')} errors "
                f"({sv.get('server_cpu_ms_per_request')} ms of server CPU a check: CPU-bound mean "
                f"{sv.get('cpu_bound_mean_ms')} ms; the do-nothing app's p99 {blat.get('p99')} ms on the same machine)"
            )

    cs = s.get("coldstart", {})
    target = cs.get("target_ms", COLD_START_TARGET_MS)
    if _section(
        out,
        "Cold start per function, from the built layer",
        cs,
        f"| function | import CPU ms, median | min | max | wall ms, median | process CPU ms | <= {target:.0f} ms |",
        "|---|---:|---:|---:|---:|---:|---|",
    ):
        for name, f in cs["functions"].items():
            cpu = f["import_cpu_ms_median"]
            if name.startswith("("):
                out.append(f"| {name} | {cpu} | {f['import_cpu_ms_min']} | | | | reference |")
                continue
            out.append(
                f"| {name} | {cpu} | {f['import_cpu_ms_min']} | {f['import_cpu_ms_max']} | "
                f"{f['import_wall_ms_median']} | {f['process_cpu_ms_median']} | "
                f"{'yes' if f['within_target'] else 'NO'} |"
            )
            if not f["within_target"]:
                shortfalls.append(
                    f"cold start of functions/{name}: {cpu} ms of CPU importing app.py from the built layer "
                    f"(target {target:.0f})"
                )
        boto = (cs["functions"].get("(boto3 alone)") or {}).get("import_cpu_ms_median")
        if boto and any(not f.get("within_target", True) for f in cs["functions"].values()):
            shortfalls.append(
                f"boto3 alone (the runtime's, which every handler here needs) takes {boto} ms of CPU on this "
                "machine at this load: most of the cold start is the AWS SDK, pydantic and Powertools"
            )
        out += [
            "",
            f"The layer is built by its own recipe (`make -C layers build-RxguardLayer`, as `sam build` runs it; "
            f"wheels for this machine's CPU, `PLATFORM={cs.get('platform')}`: Lambda's arm64 wheels cannot load "
            f"here), {cs.get('layer_mb')} MB with compiled bytecode. Each run is a fresh `python -I -S` with "
            "Lambda's path order (function folder, layer, the runtime's boto3 - here this virtual environment's) "
            "and the function's environment from template.yaml; the figure is the CPU time of importing "
            "`app.py` (Lambda's INIT), median of the runs. Measured on this shared machine, not in Lambda: CPU time "
            "still rises with the load (caches, frequency), so read the boto3 line as the floor under the same "
            "conditions. `python -m bench.coldstart` runs it alone.",
            "",
        ]
        if cs.get("heaviest_imports"):
            out += [
                f"Where the time goes (`python -X importtime` on the built layer, functions/{cs.get('profiled')}, "
                "wall ms, nested imports included): "
                + ", ".join(f"{h['package']} {h['cumulative_ms']}" for h in cs["heaviest_imports"])
                + ".",
                "",
            ]

    ing = s.get("ingest", {})
    if _section(
        out,
        "Ingestion peak memory",
        ing,
        "| lines | file MB | seconds | lines/s | peak RSS MB | start RSS MB |",
        "|---:|---:|---:|---:|---:|---:|",
    ):
        for n, r in ing["runs"].items():
            out.append(
                f"| {int(n):,} | {r.get('file_mb')} | {r.get('seconds')} | {r.get('lines_per_s')} | "
                f"{r.get('peak_rss_mb')} | {r.get('rss_before_mb')} |"
            )
        out += [
            "",
            f"Peak RSS grows {ing['peak_growth_at_10x_lines']}x for 10x the lines: "
            f"{'flat' if ing['flat'] else 'NOT flat'} (flat = at most {FLAT_MEMORY_RATIO}x).",
            "",
        ]
        if not ing["flat"]:
            shortfalls.append(f"ingestion peak memory grows {ing['peak_growth_at_10x_lines']}x for 10x the lines")

    loc = s.get("local", {})
    if _section(out, "Local deployment (`rxguard run --state`)", loc):
        out += [
            "End to end: file in, findings.jsonl, alerts and HTML letters out, on a fresh state, "
            f"{loc.get('workers', 2)} worker processes (`--pdf on-demand`; a letter's PDF is the last column). "
            "CPU time is the measure on this shared machine; lines/s on the cores = lines / (CPU / workers).",
            "",
            "| lines | CPU s | wall s | lines per CPU-s | lines/s on the cores | peak RSS MB | engine lines per CPU-s "
            "| ratio to engine | findings | letters | PDF CPU s a letter |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in loc["runs"].values():
            out.append(
                f"| {int(r['lines']):,} | {r['cpu_seconds']} | {r['wall_seconds']} | {r['lines_per_cpu_s']:,} | "
                f"{r['lines_per_s_on_cores']:,} | {r['peak_rss_mb']} | {r['engine_lines_per_cpu_s']:,} | "
                f"{r['ratio_to_engine_cpu']} | {r['findings']:,} | {r['letters']:,} | {r['pdf_seconds_per_letter']} |"
            )
        out.append("")
        hundred = next((r for n, r in loc["runs"].items() if int(n) == 100_000), None)
        million = next((r for n, r in loc["runs"].items() if int(n) == 1_000_000), None)
        if hundred and hundred["lines_per_s_on_cores"] < LOCAL_TARGET_LINES_PER_S:
            shortfalls.append(
                f"local run at 100k lines: {hundred['lines_per_s_on_cores']:,} lines/s on 2 cores "
                f"(target {LOCAL_TARGET_LINES_PER_S:,})"
            )
        if million and million["cpu_seconds"] / 2 > LOCAL_TARGET_1M_SECONDS:
            shortfalls.append(
                f"local run of 1M lines: {million['cpu_seconds'] / 2:.0f} s of CPU on 2 cores "
                f"(target {LOCAL_TARGET_1M_SECONDS:.0f} s)"
            )
        if loc["peak_rss_mb"] > LOCAL_TARGET_RSS_MB:
            shortfalls.append(f"local run peak RSS {loc['peak_rss_mb']} MB (target < 1 GB)")

    out += ["## Where the figures fall short", ""]
    dates = sorted({sec.get("measured_on") for sec in s.values() if sec.get("available") and sec.get("measured_on")})
    if len(dates) > 1:
        out += [
            "Sections were measured in separate runs on this machine: "
            + ", ".join(f"{name} {sec.get('measured_on')}" for name, sec in s.items() if sec.get("available"))
            + " (UTC).",
            "",
        ]
    missing = [f"{name}: {_na(sec)}" for name, sec in s.items() if _na(sec)]
    if not shortfalls and not missing:
        out += ["Every measured figure meets its target.", ""]
    out += [f"- {x}" for x in shortfalls + missing]
    out.append("")
    report["shortfalls"] = shortfalls
    return "\n".join(out)


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several: each section from the first report that has it, each
    section stamped with the date it was measured; workflow runs of all reports combined."""
    merged: dict[str, Any] = {"sections": {}}
    for rep in reports:
        when = rep.get("machine", {}).get("date_utc")
        for name, sec in (rep.get("sections") or {}).items():
            if not sec.get("available"):
                continue
            sec = {**sec, "measured_on": sec.get("measured_on") or when}
            have = merged["sections"].get(name)
            if have is None:
                merged["sections"][name] = sec
            elif name == "workflow":
                have["runs"] = {**sec.get("runs", {}), **have.get("runs", {})}
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--skip", nargs="*", choices=SECTIONS, default=[], help="sections to leave out")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, default=None, help="run only these sections")
    parser.add_argument("--no-docs", action="store_true", help="do not copy the report to docs/benchmarks.md")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=[],
        help="earlier report JSONs: sections not run now are taken from them (marked with their date); "
        "workflow runs of different sizes are combined",
    )
    parser.add_argument("--workflow-sizes", type=int, nargs="+", help="batch sizes of the workflow section")
    parser.add_argument("--cost-sizes", type=int, nargs="+", help="batch sizes of the cost section and chart")
    args = parser.parse_args(argv)
    if args.workflow_sizes:
        SIZES["workflow"] = tuple(args.workflow_sizes)
    if args.cost_sizes:
        SIZES["cost"] = tuple(args.cost_sizes)
    wanted = [n for n in (args.only or SECTIONS) if n not in args.skip]
    previous = merge_reports([json.loads(p.read_text(encoding="utf-8")) for p in args.merge])
    report: dict[str, Any] = {"machine": machine(), "quick": args.quick, "sections": {}}
    for name in SECTIONS:
        earlier = (previous.get("sections") or {}).get(name)
        if name in wanted:
            report["sections"][name] = run_section(name, args.quick)
        elif earlier and earlier.get("available"):
            report["sections"][name] = earlier
        else:
            report["sections"][name] = {"available": False, "why": "skipped on the command line"}
        report["sections"][name].setdefault("measured_on", report["machine"]["date_utc"])
    cost_section = report["sections"]["cost"]
    if "cost" not in wanted and cost_section.get("available") and not args.no_docs:
        cost_section["chart"] = draw_chart(cost_section)  # redrawn from the merged figures
    markdown = render_markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for stem in (f"bench-{stamp}", "latest"):
        (args.out / f"{stem}.md").write_text(markdown, encoding="utf-8")
        (args.out / f"{stem}.json").write_text(
            json.dumps(report, ensure_ascii=False, indent=1, default=str) + "\n", encoding="utf-8"
        )
    if not args.no_docs:
        shutil.copyfile(args.out / "latest.md", DOCS / "benchmarks.md")
    print(markdown)
    print(
        f"written: {args.out / 'latest.md'}, {args.out / 'latest.json'}"
        + ("" if args.no_docs else ", docs/benchmarks.md")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
