"""Benchmark of the rule engine: lines per second on one core on a realistic mixed population.

    .venv/bin/python -m bench.engine [--patients 3000] [--months 6] [--seed 7]

The population comes from `rxguard_tools.synth` (legitimate chronic, long-term, acute,
multi-pharmacy patients beside abusive ones), normalized by the ingestion the workflow
uses. Figures (this process is single-threaded, so one core):
- `engine_lines_per_s`: `Engine.evaluate_patient` over every patient's whole timeline;
- `screen_lines_per_s`: `screening.screen_lines` over an InMemoryRepository in
  5,000-line patient chunks, one batch per month (recording, history reads and finding
  replacement included: what the workflow's Screen step does around the engine);
- `check_lines_per_s`: pre-dispensing checks of one proposed line against the history.

Times are CPU seconds of this process (time.process_time), so a busy machine does not
skew them. Figures, not pass/fail. `measure()` returns them as a dict for `make bench`.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers"), str(ROOT / "tools"), str(ROOT)]


def population(patients: int, months: int, seed: int) -> list[Any]:
    """ClaimLines of a synthetic population, sorted by (time, line id)."""
    from rxguard.ingest import LineRejected, normalize_record
    from rxguard.kb import get_knowledge_base
    from rxguard_tools.synth.generator import SynthConfig, generate

    kb = get_knowledge_base()
    pop = generate(SynthConfig(patients=patients, seed=seed, months=months), kb)
    lines = []
    for i, record in enumerate(pop.records, start=1):
        try:
            lines.append(normalize_record(record, kb, file="synth", line=i))
        except LineRejected:
            continue
    lines.sort(key=lambda ln: (ln.fee_ocur_time, ln.line_id))
    return lines


def measure(patients: int = 3000, months: int = 6, seed: int = 7, repeats: int = 3) -> dict[str, Any]:
    from rxguard.engine import Engine
    from rxguard.kb import get_knowledge_base
    from rxguard.repository import InMemoryRepository
    from rxguard.screening import check_lines, screen_lines
    from rxguard_tools.synth.evaluate import patient_chunks  # the Prepare-like partition the evaluation uses

    kb = get_knowledge_base()
    lines = population(patients, months, seed)
    by_patient: dict[str, list[Any]] = {}
    for line in lines:
        by_patient.setdefault(line.psn_no, []).append(line)
    monitored = sum(1 for ln in lines if kb.drug(ln.med_list_codg) is not None)

    engine = Engine(kb)
    best = float("inf")
    findings = 0
    gc.collect()
    for _ in range(repeats):
        started = time.process_time()
        findings = sum(len(engine.evaluate_patient(psn, timeline)) for psn, timeline in by_patient.items())
        best = min(best, time.process_time() - started)

    # screen_lines: one batch a month, 5,000-line patient chunks, on one repository
    months_of: dict[str, list[Any]] = {}
    for line in lines:
        months_of.setdefault(f"{line.fee_ocur_time:%Y-%m}", []).append(line)
    repo = InMemoryRepository()
    started = time.process_time()
    for month in sorted(months_of):
        for chunk in patient_chunks(months_of[month], 5000):
            screen_lines(chunk, repo, kb)
    screen_s = time.process_time() - started

    # check_lines: one proposed monitored line per check against the full history
    proposals = [ln for ln in lines if kb.drug(ln.med_list_codg) is not None][-500:]
    fresh = [p.model_copy(update={"feedetl_sn": f"CHK{i}"}) for i, p in enumerate(proposals)]
    started = time.process_time()
    for proposal in fresh:
        check_lines([proposal], repo, kb)
    check_s = time.process_time() - started

    return {
        "population": {
            "patients": len(by_patient),
            "months": months,
            "seed": seed,
            "lines": len(lines),
            "monitored_lines": monitored,
            "findings": findings,
        },
        "engine_seconds": round(best, 3),
        "engine_lines_per_s": round(len(lines) / best),
        "screen_seconds": round(screen_s, 3),
        "screen_lines_per_s": round(len(lines) / screen_s),
        "check_ms_mean": round(check_s / len(fresh) * 1000, 3),
        "check_lines_per_s": round(len(fresh) / check_s),
        "cores": 1,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    figures = measure(args.patients, args.months, args.seed)
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
