"""The data-lake alternative, measured: batch screening on Parquet with DuckDB (issue 14).

    python -m bench.datalake                  # the 20k-line month after a month of history
    python -m bench.datalake 20000 3          # lines, history months

The same population as the storage benchmark (`bench.workflow_requests.monthly_population`):
the history months and the measured month are ingested by rxguard.ingest (so the lines carry
the knowledge base's ATC code, monitored flag and days of supply, as Prepare gives them to
Screen), written as Parquet (zstd), then three rules are run as SQL over history + month:

- over-quantity: a monitored fill supplying more days than allowed (acute 7, chronic 30,
  discharge 30, long-term prescription 84; one whole pack always allowed);
- early-refill: a fill of an ingredient before 75% of the previous fill of it (any
  institution) can have been used;
- cross-institution-repeat: a fill of an ingredient at one institution while a fill of it
  at another still covers at least 3 days and 10% of that fill.

A rough reading of the engine's rules (engine/rules/*.py): no carried-over stock, no
documented dose changes, no reversals netted, no mitigations, no severities, no explanations.
The engine runs the same lines (in-memory repository) for the agreement figures: the share of
SQL hits among the engine's evidence lines for that rule, and the share of the engine's
findings that SQL found.

Figures: Parquet bytes per line (history + month), DuckDB CPU seconds (one thread) to write
the month's Parquet and to run the three rules, and the cost per million lines of that path:
S3 storage for 400 days, S3 requests, and either DuckDB in a Lambda (its CPU seconds at
2 GB) or Athena (per TB scanned, 10 MB minimum per query). Prices: bench.cost.PRICES.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

RULES_SQL = {
    "over-quantity": """
        SELECT l.psn_no, l.line_id
        FROM month l JOIN drugs d ON d.drug_code = l.med_list_codg
        WHERE l.monitored AND l.init_feedetl_sn IS NULL AND l.days_supply > 0
          AND l.days_supply > greatest(
                CASE WHEN l.lt_rx_flag THEN 84 WHEN l.dscg_tkdrug_flag THEN 30
                     WHEN d.chronic THEN 30 ELSE 7 END,
                l.days_supply * d.units_per_pack / nullif(l.quantity_units, 0))
    """,
    "early-refill": """
        WITH fills AS (
            SELECT psn_no, line_id, atc_code, fee_ocur_time AS t, days_supply, in_month,
                   lag(fee_ocur_time) OVER w AS prev_t, lag(days_supply) OVER w AS prev_days
            FROM every_line
            WHERE monitored AND init_feedetl_sn IS NULL AND atc_code IS NOT NULL AND days_supply > 0
            WINDOW w AS (PARTITION BY psn_no, atc_code ORDER BY fee_ocur_time, line_id)
        )
        SELECT psn_no, line_id FROM fills
        WHERE in_month AND prev_t IS NOT NULL
          AND date_diff('second', prev_t, t) / 86400.0 < 0.75 * prev_days
    """,
    "cross-institution-repeat": """
        WITH fills AS (
            SELECT psn_no, line_id, atc_code, fixmedins_code, fee_ocur_time AS t, days_supply, in_month
            FROM every_line
            WHERE monitored AND init_feedetl_sn IS NULL AND atc_code IS NOT NULL AND days_supply > 0
        )
        SELECT DISTINCT b.psn_no, b.line_id
        FROM fills b JOIN fills a
          ON a.psn_no = b.psn_no AND a.atc_code = b.atc_code AND a.fixmedins_code <> b.fixmedins_code
         AND a.t <= b.t AND a.t > b.t - INTERVAL 400 DAY
        WHERE b.in_month
          AND a.days_supply - date_diff('second', a.t, b.t) / 86400.0 >= greatest(3, 0.10 * a.days_supply)
    """,
}

LAMBDA_MEMORY_GB = 2.0  # DuckDB in a Lambda: 2 GB (a month of a large province streams through)
ATHENA_USD_PER_TB = 5.0  # https://aws.amazon.com/athena/pricing/ (SQL queries, per TB scanned, 10 MB minimum)
S3_STANDARD_GB_MONTH = 0.023  # https://aws.amazon.com/s3/pricing/ (S3 Standard, first 50 TB)


def _ingested(records: list[dict[str, Any]], tmp: Path, name: str) -> list[list[Any]]:
    """The records as Prepare gives them to Screen: patient chunks of validated, kb-enriched
    ClaimLines."""
    from rxguard.ingest import prepare_batch, read_chunk
    from rxguard.kb import get_knowledge_base

    path = tmp / f"{name}.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({k: v for k, v in r.items() if v != ""}, ensure_ascii=False) + "\n")
    prepared = prepare_batch(path, get_knowledge_base(), tmp / name, chunk_size=5000)
    return [read_chunk(Path(chunk.path)) for chunk in prepared.chunks]


def _write_parquet(con: Any, lines: list[Any], path: Path, tmp: Path, in_month: bool) -> float:
    """Lines -> Parquet (zstd) through DuckDB; returns the CPU seconds it took."""
    rows = tmp / (path.stem + ".rows.jsonl")
    with rows.open("w", encoding="utf-8") as fh:
        for x in lines:
            data = x.model_dump(mode="json")
            data["line_id"], data["in_month"] = x.line_id, in_month
            fh.write(json.dumps(data, ensure_ascii=False) + "\n")
    started = time.process_time()
    con.execute(
        f"COPY (SELECT * FROM read_json_auto('{rows}', timestampformat='%Y-%m-%dT%H:%M:%S')) "
        f"TO '{path}' (FORMAT parquet, COMPRESSION zstd)"
    )
    return time.process_time() - started


def _engine_findings(batches: list[list[list[Any]]]) -> list[Any]:
    """The engine over the same chunks, batch after batch (in-memory repository)."""
    from rxguard import screening
    from rxguard.kb import get_knowledge_base
    from rxguard.repository import InMemoryRepository

    kb = get_knowledge_base()
    repo = InMemoryRepository()
    for chunks in batches:
        for chunk in chunks:
            screening.screen_lines(chunk, repo, kb)
    return repo.all_current_findings()


def measure(lines: int = 20_000, history_months: int = 1) -> dict[str, Any]:
    import duckdb

    from bench.cost import PRICES
    from bench.workflow_requests import monthly_population
    from rxguard.kb import get_knowledge_base

    logging.getLogger("rxguard").setLevel(logging.WARNING)
    batch_records, history_records = monthly_population(lines, history_months)
    with tempfile.TemporaryDirectory(prefix="rxguard-lake-") as name:
        tmp = Path(name)
        month_chunks = _ingested(batch_records, tmp, "month")
        history_chunks = [_ingested(r, tmp, f"history{i}") for i, r in enumerate(history_records)]
        month = [x for chunk in month_chunks for x in chunk]
        history = [[x for chunk in h for x in chunk] for h in history_chunks]
        con = duckdb.connect()
        con.execute("SET threads = 1")  # CPU figures comparable with one Lambda vCPU
        history_path, month_path = tmp / "history.parquet", tmp / "month.parquet"
        _write_parquet(con, [x for h in history for x in h], history_path, tmp, False)
        write_cpu = _write_parquet(con, month, month_path, tmp, True)
        drugs = tmp / "drugs.jsonl"
        drugs.write_text(
            "".join(
                json.dumps({"drug_code": d.drug_code, "chronic": d.chronic, "units_per_pack": d.units_per_pack}) + "\n"
                for d in get_knowledge_base().drugs.values()
            ),
            encoding="utf-8",
        )
        con.execute(f"CREATE TABLE drugs AS SELECT * FROM read_json_auto('{drugs}')")
        con.execute(f"CREATE VIEW month AS SELECT * FROM read_parquet('{month_path}')")
        con.execute(
            f"CREATE VIEW every_line AS SELECT * FROM read_parquet(['{history_path}', '{month_path}'], "
            "union_by_name = true)"
        )
        hits: dict[str, set[str]] = {}
        query_cpu: dict[str, float] = {}
        query_wall: dict[str, float] = {}
        for rule, sql in RULES_SQL.items():
            started, wall = time.process_time(), time.perf_counter()
            rows = con.execute(sql).fetchall()
            query_cpu[rule] = time.process_time() - started
            query_wall[rule] = time.perf_counter() - wall
            hits[rule] = {line_id for _, line_id in rows}
        parquet_bytes = history_path.stat().st_size + month_path.stat().st_size
        stored_lines = len(month) + sum(len(h) for h in history)
        started = time.process_time()
        findings = _engine_findings([*history_chunks, month_chunks])
        engine_cpu = time.process_time() - started
    month_ids = {x.line_id for x in month}
    evidence: dict[str, set[str]] = defaultdict(set)
    engine_count: dict[str, int] = defaultdict(int)
    found_by_sql: dict[str, int] = defaultdict(int)
    for f in findings:
        if f.rule_id in RULES_SQL and month_ids & set(f.evidence):
            engine_count[f.rule_id] += 1
            evidence[f.rule_id] |= set(f.evidence)
            found_by_sql[f.rule_id] += bool(hits[f.rule_id] & set(f.evidence))
    rules = {
        rule: {
            "sql_hits": len(hits[rule]),
            "engine_findings": engine_count[rule],
            "sql_hits_in_engine_evidence": round(len(hits[rule] & evidence[rule]) / len(hits[rule]), 3)
            if hits[rule]
            else None,
            "engine_findings_found_by_sql": round(found_by_sql[rule] / engine_count[rule], 3)
            if engine_count[rule]
            else None,
            "cpu_ms": round(query_cpu[rule] * 1000, 1),
            "wall_ms": round(query_wall[rule] * 1000, 1),
        }
        for rule in RULES_SQL
    }
    n = len(month)
    scale = 1e6 / n
    months = 400 / 30.4
    cpu = write_cpu + sum(query_cpu.values())
    lambda_usd = cpu * LAMBDA_MEMORY_GB * PRICES["lambda_gb_second"].usd * scale
    scanned_tb = max(parquet_bytes, 10 * 2**20) * len(RULES_SQL) / 2**40
    athena_usd = scanned_tb * ATHENA_USD_PER_TB * scale
    storage_usd = parquet_bytes / stored_lines * 1e6 / 2**30 * months * S3_STANDARD_GB_MONTH
    requests_usd = (2 * PRICES["s3_put"].usd + 2 * history_months * PRICES["s3_get"].usd) * scale
    return {
        "lines": n,
        "history_months": history_months,
        "history_lines": stored_lines - n,
        "parquet_bytes_per_line": round(parquet_bytes / stored_lines, 1),
        "write_month_parquet_cpu_s": round(write_cpu, 3),
        "rules_cpu_s": round(sum(query_cpu.values()), 3),
        "lines_per_cpu_second": round(n / cpu) if cpu else None,
        "engine_cpu_s_same_lines": round(engine_cpu, 2),
        "rules": rules,
        "usd_per_million_lines": {
            "s3_storage_400d": round(storage_usd, 4),
            "s3_requests": round(requests_usd, 4),
            "duckdb_in_lambda": round(lambda_usd, 4),
            "or_athena": round(athena_usd, 4),
            "total_with_duckdb_in_lambda": round(storage_usd + requests_usd + lambda_usd, 4),
        },
        "duckdb": duckdb.__version__,
        "limits": "rough SQL readings of 3 of the 14 rules; no check API (see docs/benchmarks.md)",
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    lines = int(args[0]) if args else 20_000
    months = int(args[1]) if len(args) > 1 else 1
    print(json.dumps(measure(lines, months), indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "bench")
    sys.exit(main())
