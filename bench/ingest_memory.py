"""Ingestion benchmark: peak memory and speed of `prepare_batch` on 100k and 1,000,000 lines.

    .venv/bin/python -m bench.ingest_memory [--lines 100000 1000000] [--chunk-size 5000] [--format csv|json|both]

Generates CSV batches in a temporary directory, runs `prepare_batch` in a fresh
subprocess per size (so each peak RSS is its own), and prints peak RSS (ru_maxrss) and
lines/s. Flat memory means the peak barely moves while the file grows ten-fold.
`measure(lines)` returns the figures as a dict for the `make bench` report.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "feedetl_sn,fixmedins_code,fixmedins_name,admdvs,psn_no,mdtrt_id,med_type,fee_ocur_time,med_list_codg,"
    "med_list_name,cnt,trdn_flag,pric,det_item_fee_sumamt,dise_codg,drug_trac_codg"
)
# (code, name, price a pack): monitored drugs of rules/drugs.json and two unmonitored ones
PRODUCTS = [
    ("XC08CA01A001", "苯磺酸氨氯地平片", 32.0),
    ("XC10AA05A001", "阿托伐他汀钙片", 42.0),
    ("XJ05AF10A001", "恩替卡韦片", 18.6),
    ("XA10AE04A001", "甘精胰岛素注射液", 78.0),
    ("XA10BA02A001", "盐酸二甲双胍片", 21.6),
    ("XJ01CA04B001", "阿莫西林胶囊", 12.5),
    ("XN02BE01B001", "对乙酰氨基酚片", 6.8),
]


def csv_row(rng: random.Random, n: int, patients: int, sn_digits: int = 9) -> str:
    """One synthetic claim line of HEADER's columns (line n, one of `patients` patients)."""
    code, name, price = PRODUCTS[rng.randrange(len(PRODUCTS))]
    inst = ("H", "P")[n & 1] + f"{310000 + rng.randrange(40):08d}"
    cnt = rng.randint(1, 3)
    day, hour, minute = rng.randint(1, 28), rng.randint(8, 17), rng.randint(0, 59)
    trace = f"8{n:019d}" if not code.endswith("B001") else ""
    return (
        f"FD{n:0{sn_digits}d},{inst},机构{inst[-2:]},310000,{310000000000 + rng.randrange(patients)},,"
        f"{'41' if inst[0] == 'P' else '11'},2025-10-{day:02d} {hour:02d}:{minute:02d}:00,{code},{name},"
        f"{cnt},0,{price},{round(cnt * price, 2)},I10,{trace}\n"
    )


def generate(path: Path, lines: int, seed: int = 1, fmt: str = "csv") -> int:
    """Write a batch of `lines` claim lines (about 8 lines a patient) as CSV or as a platform
    JSON document (`fmt="json"`); returns its size."""
    rng = random.Random(seed)
    patients = max(1, lines // 8)
    columns = HEADER.split(",")
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER + "\n" if fmt == "csv" else '{"infno": "2204", "input": {"feedetail": [\n')
        rows: list[str] = []
        for n in range(lines):
            rows.append(csv_row(rng, n, patients))
            if fmt == "json":
                element = dict(zip(columns, rows[-1].rstrip("\n").split(","), strict=True))
                rows[-1] = ("" if n == 0 else ",\n") + json.dumps(element, ensure_ascii=False)
            if len(rows) == 10_000:
                out.write("".join(rows))
                rows.clear()
        out.write("".join(rows))
        if fmt == "json":
            out.write("\n]}}\n")
    return path.stat().st_size


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from rxguard.ingest import prepare_batch
from rxguard.kb import get_knowledge_base
kb = get_knowledge_base()
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start, cpu_start = time.perf_counter(), time.process_time()
result = prepare_batch(Path(sys.argv[1]), kb, Path(sys.argv[2]), chunk_size=int(sys.argv[3]))
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
print(json.dumps({
    "seconds": seconds,
    "cpu_seconds": cpu,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_before_mb": baseline / 1024,
    "lines_read": result.lines_read,
    "accepted": result.accepted,
    "rejected": result.rejected,
    "chunks": len(result.chunks),
}))
"""


def measure(lines: int, chunk_size: int = 5000, fmt: str = "csv") -> dict[str, Any]:
    """Generate a `lines`-line batch (CSV, or `fmt="json"` for a platform document), run
    prepare_batch on it in a subprocess, return the figures: lines, format, file_mb, seconds,
    lines_per_s, peak_rss_mb (whole process), rss_before_mb (interpreter + knowledge base),
    chunks."""
    with tempfile.TemporaryDirectory(prefix="rxguard-bench-") as tmp:
        batch = Path(tmp) / f"batch.{fmt}"
        started = time.perf_counter()
        size = generate(batch, lines, fmt=fmt)
        generated = time.perf_counter() - started
        env_path = [str(ROOT / "layers"), str(ROOT / "tools"), str(ROOT)]
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(batch), str(Path(tmp) / "out"), str(chunk_size)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": ":".join(env_path), "PATH": "/usr/bin:/bin"},
        )
        figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures.update(
        {
            "lines": lines,
            "format": fmt,
            "file_mb": round(size / 1e6, 1),
            "generate_seconds": round(generated, 1),
            "lines_per_s": round(figures["lines_read"] / figures["seconds"]),
            "lines_per_cpu_s": round(figures["lines_read"] / max(figures["cpu_seconds"], 1e-9)),
            "cpu_seconds": round(figures["cpu_seconds"], 1),
            "seconds": round(figures["seconds"], 1),
            "peak_rss_mb": round(figures["peak_rss_mb"], 1),
            "rss_before_mb": round(figures["rss_before_mb"], 1),
        }
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--format", choices=["csv", "json", "both"], default="csv")
    args = parser.parse_args(argv)
    print("prepare_batch: peak RSS and speed by file size (UTF-8)")
    titles = (
        "format",
        "lines",
        "file MB",
        "seconds",
        "lines/s",
        "lines/cpu-s",
        "peak RSS MB",
        "start RSS MB",
        "chunks",
    )
    widths = (6, 10, 8, 8, 9, 12, 12, 13, 7)
    print(" ".join(t.rjust(w) for t, w in zip(titles, widths, strict=True)))
    for fmt in ("csv", "json") if args.format == "both" else (args.format,):
        for lines in args.lines:
            f = measure(lines, args.chunk_size, fmt)
            print(
                f"{fmt:>6} {f['lines']:>10} {f['file_mb']:>8} {f['seconds']:>8} {f['lines_per_s']:>9} "
                f"{f['lines_per_cpu_s']:>12} "
                f"{f['peak_rss_mb']:>12} {f['rss_before_mb']:>13} {f['chunks']:>7}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
