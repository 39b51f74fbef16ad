"""Benchmark of the local state (SQLite, rxguard.local.state): the repository calls of the
hot path, in CPU seconds of this process (time.process_time; SQLite runs in-process).

    .venv/bin/python -m bench.state [--patients 3000] [--months 6] [--seed 7]

On a synthetic population (bench.engine.population), in 1,000-line patient chunks as the
local orchestrator screens them:
- `record_lines_per_s`: `record_lines` of new lines (one transaction per chunk), and of
  the same lines again (every one a duplicate);
- `load_history_lines_per_s`: `load_history` of each chunk's patients (one query);
- `replace_findings_per_s`: `replace_many` of every scope's findings, new, then unchanged;
- `screen_lines_per_s`: `screening.screen_lines` on the SQLite repository, against the
  same on the in-memory repository (the ratio is what the state costs the engine).

Figures, not pass/fail. `measure()` returns them as a dict.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers"), str(ROOT / "tools"), str(ROOT)]


def _cpu(func: Any) -> tuple[float, Any]:
    started = time.process_time()
    out = func()
    return time.process_time() - started, out


def measure(patients: int = 3000, months: int = 6, seed: int = 7, chunk: int = 1000) -> dict[str, Any]:
    from bench.engine import population
    from rxguard.engine import finding_scope
    from rxguard.kb import get_knowledge_base
    from rxguard.local.state import State
    from rxguard.repository import InMemoryRepository
    from rxguard.screening import screen_lines
    from rxguard_tools.synth.evaluate import patient_chunks as _chunks

    kb = get_knowledge_base()
    lines = population(patients, months, seed)
    chunks = _chunks(lines, chunk)
    out: dict[str, Any] = {"lines": len(lines), "patients": patients, "chunks": len(chunks), "chunk_lines": chunk}
    with tempfile.TemporaryDirectory() as tmp:
        state = State.open(Path(tmp) / "raw")
        repo = state.repository()
        seconds, _ = _cpu(lambda: [repo.record_lines(c) for c in chunks])
        out["record_lines_per_s"] = round(len(lines) / seconds)
        seconds, again = _cpu(lambda: [repo.record_lines(c) for c in chunks])
        assert not any(again)
        out["record_duplicates_per_s"] = round(len(lines) / seconds)
        patient_sets = [sorted({x.psn_no for x in c}) for c in chunks]
        seconds, loaded = _cpu(lambda: [repo.load_history(p) for p in patient_sets])
        assert sum(len(v) for h in loaded for v in h.values()) == len(lines)
        out["load_history_lines_per_s"] = round(len(lines) / seconds)
        out["load_history_ms_per_chunk"] = round(seconds / len(chunks) * 1000, 2)

        # findings of the population (the engine in memory), then stored per scope
        memory = InMemoryRepository()
        for c in chunks:
            screen_lines(c, memory, kb)
        by_scope: dict[str, list[Any]] = {}
        for finding in memory.all_current_findings():
            by_scope.setdefault(finding_scope(finding), []).append(finding)
        scopes = sorted(by_scope)
        groups = [scopes[i : i + 200] for i in range(0, len(scopes), 200)]
        n_findings = sum(len(v) for v in by_scope.values())
        seconds, _ = _cpu(lambda: [repo.replace_many({s: by_scope[s] for s in g}) for g in groups])
        out["findings"] = n_findings
        out["replace_new_findings_per_s"] = round(n_findings / seconds)
        seconds, changes = _cpu(lambda: [repo.replace_many({s: by_scope[s] for s in g}) for g in groups])
        assert sum(c.unchanged for c in changes) == n_findings
        out["replace_unchanged_findings_per_s"] = round(n_findings / seconds)
        seconds, _ = _cpu(lambda: [repo.replace_findings(s, by_scope[s]) for s in scopes])
        out["replace_findings_one_scope_per_call_per_s"] = round(len(scopes) / seconds)
        state.close()

        # screen_lines end to end, SQLite against in-memory: the whole population as one
        # batch, then one batch a month (each month's chunks re-read the earlier months)
        months_of: dict[str, list[Any]] = {}
        for line in lines:
            months_of.setdefault(f"{line.fee_ocur_time:%Y-%m}", []).append(line)
        plans = {
            "one_batch": chunks,
            "monthly": [c for m in sorted(months_of) for c in _chunks(months_of[m], chunk)],
        }
        for name, batches in plans.items():
            memory = InMemoryRepository()
            mem_s, _ = _cpu(lambda: [screen_lines(c, memory, kb) for c in batches])  # noqa: B023
            state = State.open(Path(tmp) / name)
            sqlite_repo = state.repository()
            sql_s, _ = _cpu(lambda: [screen_lines(c, sqlite_repo, kb) for c in batches])  # noqa: B023
            assert sqlite_repo.all_current_findings() == memory.all_current_findings()
            out[f"screen_{name}_memory_lines_per_s"] = round(len(lines) / mem_s)
            out[f"screen_{name}_sqlite_lines_per_s"] = round(len(lines) / sql_s)
            out[f"screen_{name}_sqlite_over_memory_cpu"] = round(sql_s / mem_s, 2)
            out["state_bytes_per_line"] = round((Path(tmp) / name / "state.db").stat().st_size / len(lines))
            state.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--chunk", type=int, default=1000)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.patients, args.months, args.seed, args.chunk), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
