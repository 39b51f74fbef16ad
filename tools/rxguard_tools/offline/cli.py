"""`rxguard run FILE... --out DIR`: the whole workflow offline, on moto.

Starts the environment of `template.yaml`, subscribes local queues to the alerts and
letters topics (and one per example filtered subscription of the template), drops each
file into the ingest bucket under the EventBridge rule's prefix, shows progress on
stderr, waits, then writes the output contract of docs/design.md:

    DIR/findings.jsonl   every current finding, sorted by finding_id
    DIR/rejected.jsonl   every rejected line: file, line, field, reason, message
    DIR/report.json      per-batch reports (as Finalize wrote them) and totals
    DIR/letters/         the warning letters of the results bucket
    DIR/logs/functions.log   what the Lambda handlers logged

and prints a summary table. Exit status: 0 when every batch SUCCEEDED, 1 when an
execution or a batch FAILED, 2 when a batch is PARTIAL (and none failed), 64 on usage
errors. Patient numbers are never printed in clear.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rxguard.dynamo import finding_body
from rxguard.models import Finding
from rxguard.texttable import table
from rxguard_tools.offline.environment import PROJECT_ROOT, Environment, Execution, Subscription
from rxguard_tools.summary import findings_tables

EXIT_OK, EXIT_FAILED, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2, 64


@dataclass
class Batch:
    """One input file and what became of it."""

    path: Path
    key: str = ""
    execution: Execution | None = None
    report: dict[str, Any] | None = None
    states: list[str] = field(default_factory=list)
    chunks_total: int | None = None
    chunks_done: int = 0
    shown: str = ""

    @property
    def status(self) -> str:
        if self.report and self.report.get("status"):
            return str(self.report["status"])
        if self.execution is None:
            return "NOT STARTED"
        return self.execution.status


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rxguard run", description="Run the whole ClaimBatch workflow offline (moto) on claim batch files."
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="claim batches (CSV, JSON Lines, JSON)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    parser.add_argument("--template", type=Path, default=PROJECT_ROOT / "template.yaml", help="SAM template")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="template parameter override (repeatable)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the executions")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parse(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse: usage errors and --help
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"rxguard run: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    params: dict[str, str] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"rxguard run: --param {item!r}: expected NAME=VALUE", file=sys.stderr)
            return EXIT_USAGE
        params[name] = value
    progress = None if args.quiet else sys.stderr
    return run(args.files, args.out, template=args.template, parameters=params, timeout=args.timeout, progress=progress)


def run(
    files: Sequence[Path],
    out: Path,
    *,
    template: Path | None = None,
    parameters: dict[str, str] | None = None,
    timeout: float = 3600.0,
    progress: TextIO | None = None,
    stdout: TextIO | None = None,
    environment: dict[str, str] | None = None,
) -> int:
    """Run the files through the offline workflow and write the output contract into `out`.
    `environment`: variables for every handler under the template's own (e.g. settings
    the template leaves unset)."""
    stdout = stdout or sys.stdout
    logging.getLogger("moto").setLevel(logging.CRITICAL)  # moto logs every caught state error
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    template = (template or PROJECT_ROOT / "template.yaml").resolve()
    started = time.monotonic()
    with (
        (out / "logs" / "functions.log").open("w", encoding="utf-8") as log,
        Environment(
            root=template.parent,
            template=template.name,
            parameters=parameters,
            handler_output=log,
            base_environment=environment,
        ) as env,
    ):
        subscriptions = _subscribe(env)
        batches = _drop_all(env, files, progress)
        executions = [b.execution for b in batches if b.execution is not None]

        seen: list[object] = [None]

        def show(current: list[Execution]) -> None:
            state = (len(env.router.calls), [e.status for e in current])
            if progress is None or state == seen[0]:
                return  # nothing new: spare the history reads
            seen[0] = state
            for batch in batches:
                _progress(env, batch, progress)

        env.wait(executions, timeout=timeout, poll=0.5, progress=show)
        for sub in subscriptions:
            env.drain(sub)
        findings = _findings(env)
        rejected = _rejected(env)
        local = {b.key: str(b.path) for b in batches if b.key}
        for row in rejected:  # name the file as the user gave it, not its S3 key
            row["file"] = local.get(str(row.get("file")), row.get("file"))
        for batch in batches:
            batch.report = _report_of(env, batch)
        letters = _letters(env, out / "letters")
        elapsed = time.monotonic() - started
        requests = env.dynamodb_requests()
        skipped = dict(env.skipped)

    _write_jsonl(out / "findings.jsonl", findings)
    _write_jsonl(out / "rejected.jsonl", rejected)
    report = _overall(batches, findings, rejected, subscriptions, letters, elapsed, requests, skipped)
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    _summary(batches, findings, subscriptions, report, out, stdout)
    statuses = {b.status for b in batches}
    if statuses & {"FAILED", "TIMED_OUT", "ABORTED", "NOT STARTED"}:
        return EXIT_FAILED
    if "PARTIAL" in statuses:
        return EXIT_PARTIAL
    return EXIT_OK


# ------------------------------------------------------------------------ steps
def _subscribe(env: Environment) -> list[Subscription]:
    subs = []
    for logical_id in env.of_type("AWS::SNS::Topic"):
        if logical_id in ("AlertsTopic", "LettersTopic"):
            subs.append(env.subscribe_queue(logical_id, logical_id.removesuffix("Topic").lower()))
    for logical_id, topic_arn, policy, scope in env.example_subscriptions():
        subs.append(env.subscribe_queue(topic_arn, logical_id, filter_policy=policy, filter_policy_scope=scope))
    return subs


def _drop_all(env: Environment, files: Sequence[Path], progress: TextIO | None) -> list[Batch]:
    batches: list[Batch] = []
    used: set[str] = set()
    for n, path in enumerate(files, start=1):
        name = path.name if path.name not in used else f"{n:03d}-{path.name}"
        used.add(name)
        batch = Batch(path=path)
        started = env.drop(path, key=name)
        if started:
            batch.execution = started[-1]
            batch.key = started[-1].key
            if progress is not None:
                verb = "started" if started[-1].started_new else "already started (same object)"
                print(f"{path}: {verb} -> s3://{started[-1].bucket}/{batch.key}", file=progress)
        elif progress is not None:
            print(f"{path}: no EventBridge rule matched; nothing started", file=progress)
        batches.append(batch)
    return batches


def _progress(env: Environment, batch: Batch, stream: TextIO) -> None:
    execution = batch.execution
    if execution is None:
        return
    entered = [
        str(e[k]["name"])
        for e in env.history(execution)
        for k in ("stateEnteredEventDetails",)
        if k in e and e.get("type", "").endswith("StateEntered")
    ]
    name = execution.arn.rsplit(":", 1)[-1]
    for call in env.router.calls:
        if isinstance(call.event, dict) and call.event.get("execution_name") == name and isinstance(call.result, dict):
            if isinstance(call.result.get("chunk_count"), int):
                batch.chunks_total = call.result["chunk_count"]
            batch_id = call.result.get("batch_id")
            if batch_id:
                batch.chunks_done = sum(
                    1
                    for c in env.router.calls
                    if isinstance(c.event, dict)
                    and c.event.get("batch_id") == batch_id
                    and "chunk_key" in c.event
                    and c.error_type is None
                )
    chunks = f" [{batch.chunks_done}/{batch.chunks_total} chunks]" if batch.chunks_total else ""
    line = " -> ".join(entered) + chunks + (f" => {execution.status}" if execution.status != "RUNNING" else "")
    if line != batch.shown:
        batch.shown = line
        batch.states = entered
        print(f"{batch.path.name}: {line}", file=stream)


def _findings(env: Environment) -> list[dict[str, Any]]:
    """Current findings of the findings table (superseded ones left out), by finding_id."""
    logical = "FindingsTable" if "FindingsTable" in env.created else None
    if logical is None:
        return []
    out = []
    for item in env.scan_table(logical):
        if item.get("status") == "superseded":
            continue
        data = finding_body(item["body"]) if "body" in item else dict(item)
        data["status"] = item.get("status", data.get("status", "new"))
        out.append(Finding.model_validate(data).model_dump(mode="json"))
    return sorted(out, key=lambda f: str(f["finding_id"]))


def _results_bucket(env: Environment) -> str | None:
    return env.name("ResultsBucket") if "ResultsBucket" in env.created else None


def _rejected(env: Environment) -> list[dict[str, Any]]:
    bucket = _results_bucket(env)
    if bucket is None:
        return []
    rows: list[dict[str, Any]] = []
    for key in env.list_objects(bucket, "batches/"):
        if key.endswith("/rejected.jsonl"):
            body = env.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
            rows.extend(json.loads(line) for line in body.splitlines() if line.strip())
    return sorted(rows, key=lambda r: (str(r.get("file")), r.get("line") or 0, str(r.get("field"))))


def _report_of(env: Environment, batch: Batch) -> dict[str, Any] | None:
    """The batch's report.json, found through the execution's output or its batch id."""
    bucket = _results_bucket(env)
    execution = batch.execution
    if bucket is None or execution is None:
        return None
    keys = []
    if isinstance(execution.output, dict) and execution.output.get("report_key"):
        keys.append(str(execution.output["report_key"]))
    name = execution.arn.rsplit(":", 1)[-1]
    keys.append(f"batches/{name.removeprefix('rx-')}/report.json")
    for key in keys:
        try:
            report: dict[str, Any] = json.loads(env.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            return report
        except env.clients.s3.exceptions.NoSuchKey:
            continue
    return None


def _letters(env: Environment, target: Path) -> list[str]:
    bucket = _results_bucket(env)
    if bucket is None:
        return []
    copied = []
    for key in env.list_objects(bucket):
        if key.startswith("letters/") or "/letters/" in key:
            rel = key[key.index("letters/") + len("letters/") :]
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(env.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            copied.append(rel)
    return copied


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def _overall(
    batches: Sequence[Batch],
    findings: Sequence[dict[str, Any]],
    rejected: Sequence[dict[str, Any]],
    subscriptions: Sequence[Subscription],
    letters: Sequence[str],
    elapsed: float,
    requests: dict[str, int],
    skipped: dict[str, str],
) -> dict[str, Any]:
    per_batch = []
    totals: Counter[str] = Counter()
    for b in batches:
        entry: dict[str, Any] = {
            "file": str(b.path),
            "key": b.key,
            "execution": b.execution.arn if b.execution else None,
            "execution_status": b.execution.status if b.execution else None,
            "status": b.status,
        }
        if b.execution is not None and b.execution.status != "SUCCEEDED":
            entry["error"] = b.execution.error
            entry["cause"] = b.execution.cause
        entry["report"] = b.report
        per_batch.append(entry)
        totals[f"batches_{b.status.lower().replace(' ', '_')}"] += 1
        for k in ("lines_read", "accepted", "rejected"):
            totals[k] += int((b.report or {}).get(k) or 0)
    lines = max(totals["lines_read"], 1)
    return {
        "batches": per_batch,
        "totals": {
            **dict(sorted(totals.items())),
            "findings": len(findings),
            "findings_by_rule": dict(sorted(Counter(str(f["rule_id"]) for f in findings).items())),
            "findings_by_severity": dict(sorted(Counter(str(f["severity"]) for f in findings).items())),
            "rejected_lines": len(rejected),
            "letters": len(letters),
            "wall_seconds": round(elapsed, 2),
            "dynamodb_requests": requests,
            "dynamodb_requests_per_1000_lines": {k: round(v * 1000 / lines, 1) for k, v in requests.items()},
        },
        "subscriptions": {
            s.name: {"received": len(s.received), "filter_policy": s.filter_policy} for s in subscriptions
        },
        "skipped_resources": skipped,
    }


def _summary(
    batches: Sequence[Batch],
    findings: Sequence[dict[str, Any]],
    subscriptions: Sequence[Subscription],
    report: dict[str, Any],
    out: Path,
    stream: TextIO,
) -> None:
    rows = []
    for b in batches:
        r = b.report or {}
        by_rule = (r.get("findings") or {}).get("by_rule") or {}
        rows.append(
            [
                b.path.name,
                b.status,
                r.get("lines_read", "-"),
                r.get("accepted", "-"),
                r.get("rejected", "-"),
                (r.get("findings") or {}).get("new", "-"),
                ", ".join(f"{k} {v}" for k, v in sorted(by_rule.items())) or "-",
            ]
        )
    lines = [
        "",
        "Batches",
        *table(rows, ["file", "status", "read", "accepted", "rejected", "new findings", "by rule"]),
    ]
    lines += findings_tables(findings, f"Findings ({len(findings)} current)")
    lines += ["", "Subscriptions (local SQS queues)"]
    lines += table(
        [
            [
                s.name,
                s.topic_arn.rsplit(":", 1)[-1],
                json.dumps(s.filter_policy) if s.filter_policy else "-",
                len(s.received),
            ]
            for s in subscriptions
        ],
        ["subscription", "topic", "filter policy", "messages"],
    )
    totals = report["totals"]
    lines += [
        "",
        f"{totals['lines_read']} lines in {len(batches)} file(s), {totals['wall_seconds']} s; "
        f"DynamoDB requests {totals['dynamodb_requests']} "
        f"({totals['dynamodb_requests_per_1000_lines']} per 1,000 lines)",
        f"Output: {out}/findings.jsonl, rejected.jsonl ({totals['rejected_lines']} lines), report.json, "
        f"letters/ ({totals['letters']} files), logs/functions.log",
    ]
    failed = [b for b in batches if b.status not in ("SUCCEEDED",)]
    for b in failed:
        r = b.report or {}
        why = (r.get("file_error") or r.get("error") or {}) if isinstance(r, dict) else {}
        detail = json.dumps(why, ensure_ascii=False)[:300] if why else (b.execution.cause if b.execution else "") or ""
        lines.append(f"!! {b.path.name}: {b.status} {detail}")
    print("\n".join(lines), file=stream)
