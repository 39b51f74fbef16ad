"""`rxguard eval` with the offline workflow: the evaluation of `rxguard_tools.synth.evaluate`,
handed the runner that screens the population through the whole workflow on moto
(`rxguard run`). The harness sits above the synthetic tools, so it wires them, not the
reverse."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rxguard_tools.offline.cli import main as run_main
from rxguard_tools.synth import evaluate


def run_workflow(files: Sequence[Path], out_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`rxguard run FILES --out DIR` (the offline workflow on moto); findings from DIR/findings.jsonl."""
    started = time.perf_counter()
    status = run_main([*map(str, files), "--out", str(out_dir), "--quiet"])
    seconds = time.perf_counter() - started
    findings_path = out_dir / "findings.jsonl"
    if not findings_path.is_file():
        raise RuntimeError(f"the offline workflow wrote no {findings_path} (exit status {status})")
    findings = [json.loads(x) for x in findings_path.read_text(encoding="utf-8").splitlines() if x.strip()]
    report: dict[str, Any] = {}
    if (out_dir / "report.json").is_file():
        report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    info = {
        "path": "workflow",
        "exit_status": status,
        "seconds": round(seconds, 1),
        "totals": report.get("totals", {}),
    }
    return findings, info


def main(argv: Sequence[str] | None = None) -> int:
    """`rxguard eval [...]` (arguments: rxguard_tools.synth.evaluate); the workflow path by default."""
    return evaluate.main(argv, workflow=run_workflow)


if __name__ == "__main__":
    sys.exit(main())
