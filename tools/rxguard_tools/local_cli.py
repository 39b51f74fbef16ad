"""`rxguard run FILE... --state DIR --out DIR`: screen claim batches against a persistent
local state (docs/local.md). (`rxguard run --simulate-aws FILE... --out DIR` runs the
real ASL on moto instead: rxguard_tools.cli sends it to rxguard_tools.offline.cli, docs/offline.md.)

Writes DIR/findings.jsonl (every current finding of the state), rejected.jsonl,
report.json, alerts.jsonl, letters.jsonl, letters/ and logs/run.log; prints per batch
its status and counts, the findings by rule and severity, and where the state lives.
Exit status: 0 every batch SUCCEEDED (or already processed), 1 a batch FAILED, 2 a batch
PARTIAL, 64 usage errors. Patient numbers are never printed in clear.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from rxguard.local.backend import Backend
from rxguard.local.orchestrator import BatchRun, Progress, RunResult
from rxguard.models import Finding
from rxguard.texttable import table
from rxguard_tools.summary import SHOWN, findings_tables, most_severe_first

EXIT_OK, EXIT_FAILED, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2, 64


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rxguard run",
        description="Screen claim batches against a persistent local state (docs/local.md).",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="claim batches (CSV, JSON Lines, JSON)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    parser.add_argument(
        "--state", type=Path, metavar="DIR", help="state directory, kept between runs (default: OUT/state)"
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="worker processes for the chunks (default: cores)"
    )
    parser.add_argument(
        "--pdf",
        choices=("parallel", "on-demand"),
        default="on-demand",
        help="letters' PDFs: later, on demand (default: rxguard run --render-pdfs OUT), or rendered over "
        "the workers after Notify (parallel: ~0.1 s of CPU a letter, more than screening its lines); "
        "the HTML letters are always written",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["--render-pdfs"]:
        return render_pdfs_on_demand(args_in[1:])
    try:
        args = _parse(args_in)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"rxguard run: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    if args.workers < 1:
        print("rxguard run: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    state = args.state if args.state is not None else args.out / "state"
    show = not args.quiet and sys.stderr.isatty()
    return run(
        args.files, args.out, state=state, workers=args.workers, progress=sys.stderr if show else None, pdf=args.pdf
    )


ORCHESTRATOR_CACHE_MB = 16


def render_pdfs_on_demand(argv: Sequence[str]) -> int:
    """`rxguard run --render-pdfs OUT [--workers N]`: the PDF of every HTML letter under
    OUT/letters that has none yet (a run with --pdf on-demand left them)."""
    from rxguard.alerts.settings import AlertSettings
    from rxguard.local.orchestrator import render_pdf_files

    parser = argparse.ArgumentParser(prog="rxguard run --render-pdfs")
    parser.add_argument("out", type=Path, metavar="OUT")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    settings = AlertSettings.from_env()
    font = str(settings.font_path or "")
    jobs = [
        (str(html), str(html.with_suffix(".pdf")), font, settings.issuer_name_zh, "")
        for html in sorted((args.out / "letters").rglob("*.html"))
        if not html.with_suffix(".pdf").exists()
    ]
    done, _ = render_pdf_files(jobs, max(1, args.workers))
    print(f"{done} PDF letter(s) rendered under {args.out / 'letters'}")
    return EXIT_OK


def run(
    files: Sequence[Path],
    out: Path,
    *,
    state: Path,
    workers: int = 1,
    progress: TextIO | None = None,
    stdout: TextIO | None = None,
    crash_after_chunks: int | None = None,
    backend: Backend | None = None,
    pdf: str = "parallel",
) -> int:
    """Screen `files` against the state in `state` and write the output contract to `out`."""
    from rxguard.alerts.settings import AlertSettings
    from rxguard.config import Settings
    from rxguard.kb import get_knowledge_base
    from rxguard.local.backend import SqliteBackend
    from rxguard.local.objects import LocalObjects
    from rxguard.local.orchestrator import LocalOrchestrator

    stdout = stdout or sys.stdout
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env()
    kb = get_knowledge_base(settings.rules_dir, settings.phase)
    with _run_lock(state, progress), (out / "logs" / "run.log").open("a", encoding="utf-8") as log, _logs_to(log):
        # With worker processes this one only reads a batch's months and findings: a small
        # page cache (it filled its 64 MB scanning a month's lines: 64 MB more of peak memory)
        cache_mb = ORCHESTRATOR_CACHE_MB if workers > 1 else None
        backend = backend if backend is not None else SqliteBackend(state, cache_mb=cache_mb)
        try:
            with _progress(progress) as shown:
                orchestrator = LocalOrchestrator(
                    backend=backend,
                    results=LocalObjects(state / "results"),
                    out=out,
                    kb=kb,
                    settings=settings,
                    alert_settings=AlertSettings.from_env(),
                    workers=workers,
                    progress=shown,
                    crash_after_chunks=crash_after_chunks,
                    log_path=str(out / "logs" / "run.log"),
                    pdf=pdf,
                )
                result = orchestrator.run(files)
            findings = _write_findings(out / "findings.jsonl", backend.current_findings())
            location = backend.location
        finally:
            backend.close()
    rejected = _write_rejected(out / "rejected.jsonl", result.batches, LocalObjects(state / "results"))
    report = _report(result, findings, rejected, location)
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    _summary(result, findings, report, out, stdout)
    if pdf == "on-demand" and result.letters:
        print(f"Letters' PDFs: not rendered by this run; `rxguard run --render-pdfs {out}` renders them", file=stdout)
    statuses = {b.status for b in result.batches}
    if statuses & {"FAILED", "ERROR", "NOT STARTED"}:
        return EXIT_FAILED
    if "PARTIAL" in statuses:
        return EXIT_PARTIAL
    return EXIT_OK


@contextlib.contextmanager
def _run_lock(state: Path, progress: TextIO | None) -> Iterator[None]:
    """One `rxguard run` per state at a time (serve may run beside it): a batch found
    RUNNING by the next run was left by a run that died."""
    with (state / "run.lock").open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"rxguard run: another run is using {state}; waiting for it to finish", file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _logs_to(stream: TextIO) -> Iterator[None]:
    """The step functions log (Powertools JSON) to out/logs/run.log, not the terminal."""
    from rxguard.observability import logger

    handler: Any = logger.registered_handler
    old = handler.setStream(stream)
    try:
        yield
    finally:
        handler.setStream(old)


class RichProgress(Progress):
    """Lines read and screened, rate and ETA on stderr (rich); batch messages above the bar."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self.console = Console(file=stream)
        self.bar = Bar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]} lines/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.bar.add_task("screened", total=0, rate="-")
        self.read = 0
        self.started = time.monotonic()

    def batch(self, run: BatchRun, message: str) -> None:
        self.console.print(f"{run.path.name}: {message}")

    def lines_read(self, n: int) -> None:
        self.read += n
        self.bar.update(self.task, total=self.read, description=f"read {self.read:,} · screened")

    def lines_screened(self, n: int) -> None:
        self.bar.advance(self.task, n)
        done = self.bar.tasks[0].completed
        self.bar.update(self.task, rate=f"{done / max(time.monotonic() - self.started, 1e-9):,.0f}")


@contextlib.contextmanager
def _progress(stream: TextIO | None) -> Iterator[Progress]:
    if stream is None:
        yield Progress()
        return
    shown = RichProgress(stream)
    with shown.bar:
        yield shown


# ------------------------------------------------------------------ output
def _write_findings(path: Path, findings: Iterable[Finding], top: int = SHOWN) -> list[dict[str, Any]]:
    """Write findings.jsonl one finding at a time (a state's findings are never all held).
    Returns what the summary needs of each: its id, rule and severity; in full only the
    `top` most severe, which it shows."""
    brief: list[dict[str, Any]] = []
    best: list[tuple[tuple[int, str], int, dict[str, Any]]] = []  # the most severe so far (a few)
    with path.open("w", encoding="utf-8") as fh:
        for finding in findings:
            row = finding.model_dump(mode="json")
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            brief.append({"finding_id": row["finding_id"], "rule_id": row["rule_id"], "severity": row["severity"]})
            best.append((most_severe_first(row), len(brief) - 1, row))
            if len(best) > 8 * top:
                best = sorted(best)[:top]
    for _, index, row in sorted(best)[:top]:
        brief[index] = row
    return brief


def _write_rejected(path: Path, batches: Sequence[BatchRun], results: Any) -> int:
    """Write rejected.jsonl: each batch's rejected lines, with the file as the user gave
    it, one at a time; returns how many."""
    from rxguard.workflow import naming

    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for batch in batches:
            if not batch.batch_id or batch.status == "DUPLICATE":
                continue
            key = naming.rejected_key(batch.batch_id)
            if not results.exists(key):
                continue
            with results.path(key).open(encoding="utf-8") as rows:
                for line in rows:
                    if line.strip():
                        row = json.loads(line)
                        row["file"] = str(batch.path)  # as the user gave it
                        fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
                        count += 1
    return count


def _report(result: RunResult, findings: Sequence[dict[str, Any]], rejected: int, location: str) -> dict[str, Any]:
    totals: Counter[str] = Counter()
    per_batch = []
    for b in result.batches:
        per_batch.append(
            {"file": str(b.path), "key": b.key, "batch_id": b.batch_id, "status": b.status, "report": b.report}
        )
        totals[f"batches_{b.status.lower()}"] += 1
        for k in ("lines_read", "accepted", "rejected"):
            totals[k] += int((b.report or {}).get(k) or 0)
    lines = totals["lines_read"]
    return {
        "state": location,
        "batches": per_batch,
        "interrupted_batches_marked_failed": result.interrupted,
        "totals": {
            **dict(sorted(totals.items())),
            "findings": len(findings),
            "findings_by_rule": dict(sorted(Counter(str(f["rule_id"]) for f in findings).items())),
            "findings_by_severity": dict(sorted(Counter(str(f["severity"]) for f in findings).items())),
            "rejected_lines": rejected,
            "alerts_published": sum(result.alerts.values()),
            "alerts_by_type": dict(sorted(result.alerts.items())),
            "corrections": result.corrections,
            "letters_published": result.letters,
            "cpu_seconds": result.cpu_seconds,
            "wall_seconds": result.wall_seconds,
            "lines_per_cpu_second": round(lines / result.cpu_seconds, 1) if result.cpu_seconds else None,
            "phases": result.phases,
        },
    }


def _summary(
    result: RunResult, findings: Sequence[dict[str, Any]], report: dict[str, Any], out: Path, stream: TextIO
) -> None:
    rows = []
    for b in result.batches:
        r = b.report or {}
        f = r.get("findings") or {}
        by_rule = f.get("by_rule") or {}
        status = "ALREADY PROCESSED" if b.status == "DUPLICATE" else b.status
        rows.append(
            [
                b.path.name,
                status,
                r.get("lines_read", "-"),
                r.get("accepted", "-"),
                r.get("rejected", "-"),
                f.get("new", "-"),
                f.get("superseded", "-"),
                ", ".join(f"{k} {v}" for k, v in sorted(by_rule.items())) or "-",
            ]
        )
    lines = ["", "Batches"]
    lines += table(rows, ["file", "status", "read", "accepted", "rejected", "new", "superseded", "by rule"])
    lines += findings_tables(findings, f"Findings of the state ({len(findings)} current)")
    t = report["totals"]
    lines += [
        "",
        f"{t['lines_read']} lines in {len(result.batches)} file(s): {t['cpu_seconds']} s CPU, "
        f"{t['wall_seconds']} s wall ({t['lines_per_cpu_second'] or '-'} lines per CPU-second)",
        f"Alerts published {t['alerts_published']} {t['alerts_by_type']}, letters {t['letters_published']}",
        f"State: {report['state']}  (kept: the next run screens against it; `rxguard serve --state` reads it)",
        f"Output: {out}/findings.jsonl, rejected.jsonl ({t['rejected_lines']} lines), report.json, "
        "alerts.jsonl, letters.jsonl, letters/, logs/run.log",
    ]
    if result.interrupted:
        lines.append(f"Marked FAILED (left RUNNING by an interrupted run): {len(result.interrupted)} batch(es)")
    for b in result.batches:
        if b.status not in ("SUCCEEDED", "DUPLICATE"):
            r = b.report or {}
            why = r.get("file_error") or r.get("error") or b.state.get("error") or {}
            lines.append(f"!! {b.path.name}: {b.status} {json.dumps(why, ensure_ascii=False)[:300]}")
    print("\n".join(lines), file=stream)
