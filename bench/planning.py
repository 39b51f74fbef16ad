"""Planning at scale: drug watch and backtest over a state of millions of lines.

    python -m bench.planning [--lines 10000000] [--backtest-lines 1000000] [--dir DIR]

The state is built directly in SQLite (one INSERT ... SELECT over a recursive CTE: a
year of purchases of monitored and unmonitored drugs by 50-line patients), so building
10 million lines takes about a minute instead of a 10-million-line batch run. Figures are
CPU time of this process and its workers (the machine is shared), with wall time beside.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from rxguard.kb import KnowledgeBase, get_knowledge_base
from rxguard.local.state import STATE_FILE, State
from rxguard.planning.backtest import backtest
from rxguard.planning.history import overlay_rule_entries
from rxguard.planning.watch import drug_watch

LINES_PER_PATIENT = 24  # two drugs, each bought every 30 days for a year
UNMONITORED = 40  # unmonitored drug codes beside the catalogue's


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def build_state(directory: Path, lines: int, kb: KnowledgeBase) -> dict[str, Any]:
    """A state with `lines` purchase lines, built by SQL."""
    started, cpu = time.perf_counter(), _cpu()
    drugs = []
    for i, drug in enumerate(sorted(kb.monitored.values(), key=lambda d: d.drug_code)):
        packs_days = drug.days_supply(drug.units_per_pack)
        drugs.append((i, drug.drug_code, drug.atc_code, drug.units_per_pack, packs_days, drug.unit_price_yuan, 1))
    for j in range(UNMONITORED):
        drugs.append((len(drugs), f"XZ99ZZ{j:02d}A001", None, 1, None, 20.0 + j, 0))
    State.open(directory).close()  # the schema
    con = sqlite3.connect(directory / STATE_FILE, isolation_level=None)
    # a bulk load: no journal while loading, the indexes built once at the end
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    indexes = con.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'lines' AND sql IS NOT NULL"
    ).fetchall()
    for (sql,) in indexes:
        con.execute("DROP INDEX " + sql.split()[2])
    con.execute("BEGIN")
    con.execute(
        "CREATE TEMP TABLE d (idx INTEGER PRIMARY KEY, code TEXT, atc TEXT, units REAL, days REAL, price REAL, "
        "monitored INTEGER)"
    )
    con.executemany("INSERT INTO d VALUES (?, ?, ?, ?, ?, ?, ?)", drugs)
    n_drugs = len(drugs)
    patients = max(1, lines // LINES_PER_PATIENT)
    # line i: patient i % P, its k = (i // P)-th purchase: drug k % 2 of the patient's two, each every 30 days
    con.execute(
        f"""
        WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {lines - 1}),
        x AS (
            SELECT i, i % {patients} AS p, i / {patients} AS k,
                   (i / {patients}) % 2 AS pick,
                   CASE WHEN (i % {patients}) % 10 < 6 THEN 'P' ELSE 'H' END AS kind
            FROM c
        ),
        y AS (
            SELECT x.*, d.code, d.atc, d.units, d.days, d.price, d.monitored,
                   printf('%s%09d', kind, 61080000 + (p % 500)) AS inst,
                   printf('61%08d', p) AS psn,
                   strftime('%Y-%m-%dT%H:%M:%S', '2025-01-01',
                            printf('+%d days', ((k / 2) * 30 + k % 2 + p % 7) % 365),
                            printf('+%d hours', 8 + p % 9)) AS t
            FROM x JOIN d ON d.idx = (x.p * 13 + x.pick) % {n_drugs}
        )
        INSERT INTO lines (line_id, psn_no, t, period, fixmedins_code, bilg_dr_codg, admdvs, monitored, body)
        SELECT inst || '/B' || i, psn, replace(t, 'T', 'T') || '.000000', substr(t, 1, 7), inst,
               CASE WHEN kind = 'H' THEN printf('D%05d', p % 3000) END, '610800', monitored,
               json_object(
                   'feedetl_sn', 'B' || i, 'fixmedins_code', inst,
                   'institution_kind', CASE WHEN kind = 'P' THEN 'pharmacy' ELSE 'hospital' END,
                   'admdvs', '610800', 'psn_no', psn, 'mdtrt_id', inst || ':' || substr(t, 1, 10),
                   'med_type', CASE WHEN kind = 'P' THEN '41' ELSE '11' END, 'fee_ocur_time', t,
                   'med_list_codg', code, 'cnt', 1.0, 'pric', price, 'det_item_fee_sumamt', price,
                   'quantity_units', units, 'monitored', json(CASE WHEN monitored THEN 'true' ELSE 'false' END),
                   'atc_code', atc, 'days_supply', days,
                   'bilg_dr_codg', CASE WHEN kind = 'H' THEN printf('D%05d', p % 3000) END
               )
        FROM y
        """
    )
    con.execute("COMMIT")
    for (sql,) in indexes:
        con.execute(sql)
    con.execute("PRAGMA journal_mode=WAL")
    con.close()
    size = sum(f.stat().st_size for f in directory.iterdir())
    return {
        "lines": lines,
        "patients": patients,
        "drugs": len(drugs),
        "build_seconds": round(time.perf_counter() - started, 1),
        "build_cpu_seconds": round(_cpu() - cpu, 1),
        "state_mb": round(size / 1e6),
    }


def measure(lines: int = 10_000_000, backtest_lines: int = 1_000_000, keep: Path | None = None) -> dict[str, Any]:
    kb = get_knowledge_base()
    root = keep or Path(tempfile.mkdtemp(prefix="rxguard-planning-"))
    out: dict[str, Any] = {}
    try:
        for label, n in (("watch", lines), ("backtest", backtest_lines)):
            directory = root / f"state-{n}"
            if not (directory / "state.db").exists():
                out[f"build_{label}"] = build_state(directory, n, kb)
            if label == "watch":
                started, cpu = time.perf_counter(), _cpu()
                with State.open(directory) as state:
                    report = drug_watch(state, kb)
                out["watch"] = {
                    "lines": n,
                    "drugs": len(report["drugs"]),
                    "seconds": round(time.perf_counter() - started, 1),
                    "cpu_seconds": round(_cpu() - cpu, 1),
                    "lines_per_cpu_second": round(n / max(_cpu() - cpu, 1e-9)),
                }
            else:
                trial = overlay_rule_entries(
                    kb, {"rules": [{"id": "early-refill", "parameters": {"used_fraction": 0.6}}]}
                )
                started, cpu = time.perf_counter(), _cpu()
                result = backtest(directory, trial, workers=2)
                spent = _cpu() - cpu
                out["backtest"] = {
                    "lines": result.lines,
                    "findings_after": len(result.after),
                    "seconds": round(time.perf_counter() - started, 1),
                    "cpu_seconds": round(spent, 1),
                    "lines_per_cpu_second": round(result.lines / max(spent, 1e-9)),
                    "workers": 2,
                }
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return out
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.planning")
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--backtest-lines", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, help="keep the built states here (reused when present)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.lines, args.backtest_lines, args.dir), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
