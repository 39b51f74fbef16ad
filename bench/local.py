"""Local deployment benchmark: `rxguard run --state` end to end (file in, findings.jsonl,
alerts and HTML letters out) on a synthetic batch of n lines, beside the in-memory engine
on the same batch.

    .venv/bin/python -m bench.local [--lines 10000 100000 1000000] [--workers 2]

Each size: `rxguard synth` makes one claim file of about n lines; `rxguard run` runs it in
a fresh interpreter on a fresh state (`--pdf on-demand`: the PDFs of the letters are a
separate figure, `pdf_seconds_per_letter`), and the engine alone (ingest + screen_lines
on an InMemoryRepository) runs the same file in another. CPU time is the measure on a
shared machine: lines per CPU-second, and the wall time the CPU would take on the cores
used (`lines_per_s_on_cores` = lines / (CPU / cores), an upper bound the wall clock meets
on an idle machine). Peak RSS is the largest process of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import reference_loop_seconds

ROOT = Path(__file__).resolve().parent.parent
LINES_PER_PATIENT = 22.1  # rxguard synth, six months: 101,628 lines for 4,600 patients

_ENGINE_CHILD = """
import json, resource, sys, time
from pathlib import Path
from rxguard import screening
from rxguard.ingest import read_batch
from rxguard.kb import get_knowledge_base
from rxguard.models import ClaimLine
from rxguard.repository import InMemoryRepository
cpu = time.process_time()
kb = get_knowledge_base()
lines = [x for x in read_batch(Path(sys.argv[1]), kb) if isinstance(x, ClaimLine)]
read = time.process_time() - cpu
repo = InMemoryRepository()
screening.screen_lines(lines, repo, kb)
total = time.process_time() - cpu
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"lines": len(lines), "cpu_seconds": total, "ingest_cpu_seconds": read, "peak_rss_mb": peak}))
"""

_PDF_CHILD = """
import json, sys, time
from pathlib import Path
from rxguard.alerts.settings import AlertSettings
from rxguard.letters.pdf import html_to_pdf
settings = AlertSettings.from_env()
pages = sorted(Path(sys.argv[1]).rglob("*.html"))[: int(sys.argv[2])]
cpu = time.process_time()
for page in pages:
    html_to_pdf(page.read_text(encoding="utf-8"), font_path=settings.font_path)
print(json.dumps({"letters": len(pages), "cpu_seconds": time.process_time() - cpu}))
"""


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "layers"), str(ROOT / "tools"), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path}


def make_batch(lines: int, directory: Path, seed: int = 7) -> Path:
    patients = max(40, round(lines / LINES_PER_PATIENT))
    cmd = [sys.executable, "-m", "rxguard_tools.cli", "synth", "--patients", str(patients), "--seed", str(seed)]
    cmd += ["--single-file", "--out", str(directory)]
    subprocess.run(cmd, cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=7200)
    return directory / "claims.csv"


def _children(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float, float, float]:
    """Run `cmd` as a child of a small helper interpreter, so RUSAGE_CHILDREN counts only
    it and its workers (the helper is their subreaper: the forkserver and its workers,
    orphaned when the run exits, are waited by it too): (process, CPU seconds, wall
    seconds, peak RSS MB of the largest process)."""
    helper = (
        "import ctypes, json, os, resource, subprocess, sys, time\n"
        "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphaned workers come back to us\n"
        "t = time.monotonic()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "while True:\n"
        "    try:\n"
        "        os.wait()\n"
        "    except ChildProcessError:\n"
        "        break\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps({'rc': p.returncode, 'out': p.stdout[-4000:], 'err': p.stderr[-4000:],"
        " 'cpu': u.ru_utime + u.ru_stime, 'wall': time.monotonic() - t, 'rss': u.ru_maxrss / 1024}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", helper, *cmd], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    done = subprocess.CompletedProcess(cmd, data["rc"], data["out"], data["err"])
    return done, float(data["cpu"]), float(data["wall"]), float(data["rss"])


def measure(lines: int, workers: int = 2, *, pdf_sample: int = 10) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rxguard-bench-local-") as tmp:
        root = Path(tmp)
        started = time.monotonic()
        batch = make_batch(lines, root / "batch")
        synth_seconds = time.monotonic() - started
        out = root / "out"
        cmd = [
            sys.executable,
            "-m",
            "rxguard_tools.cli",
            "run",
            str(batch),
            "--out",
            str(out),
            "--state",
            str(root / "st"),
        ]
        cmd += ["--workers", str(workers), "--pdf", "on-demand", "--quiet"]
        run, cpu, wall, rss = _children(cmd, timeout=7200)
        if run.returncode != 0:
            raise RuntimeError(f"rxguard run failed ({run.returncode}): {run.stderr[-500:]}")
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        read = int(report["totals"]["lines_read"])
        letters = len((out / "letters.jsonl").read_text(encoding="utf-8").splitlines())
        findings = len((out / "findings.jsonl").read_text(encoding="utf-8").splitlines())
        engine_run, _, _, engine_rss = _children([sys.executable, "-c", _ENGINE_CHILD, str(batch)], 7200)
        engine = json.loads(engine_run.stdout.strip().splitlines()[-1])
        pdf_run = subprocess.run(
            [sys.executable, "-c", _PDF_CHILD, str(out / "letters"), str(pdf_sample)],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        pdf = json.loads(pdf_run.stdout.strip().splitlines()[-1]) if pdf_run.returncode == 0 else {}
    local_rate = read / cpu if cpu else None
    engine_rate = engine["lines"] / engine["cpu_seconds"] if engine.get("cpu_seconds") else None
    return {
        "lines": read,
        "workers": workers,
        "findings": findings,
        "letters": letters,
        "cpu_seconds": round(cpu, 2),
        "wall_seconds": round(wall, 2),
        "lines_per_cpu_s": round(local_rate, 1) if local_rate else None,
        "lines_per_s_on_cores": round(read / (cpu / workers), 1) if cpu else None,
        "lines_per_wall_s": round(read / wall, 1) if wall else None,
        "peak_rss_mb": round(rss, 1),
        "engine_lines_per_cpu_s": round(engine_rate, 1) if engine_rate else None,
        "engine_cpu_seconds": round(engine["cpu_seconds"], 2),
        "engine_peak_rss_mb": round(engine_rss, 1),
        "ratio_to_engine_cpu": round(local_rate / engine_rate, 3) if local_rate and engine_rate else None,
        "pdf_seconds_per_letter": round(pdf["cpu_seconds"] / pdf["letters"], 3) if pdf.get("letters") else None,
        "phases": report["totals"].get("phases"),  # wall, orchestrator CPU and workers' CPU of each step
        "synth_seconds": round(synth_seconds, 1),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "reference_loop_cpu_s": reference_loop_seconds(),  # the core's speed now (bench.reference_loop_seconds)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for n in args.lines:
        print(json.dumps({str(n): measure(n, args.workers)}), flush=True)


if __name__ == "__main__":
    main()
