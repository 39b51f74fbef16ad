"""End to end: the real template, the real ClaimBatch ASL on moto's interpreter and the
real handlers of functions/, driven through the offline environment and `rxguard run`."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from rxguard.dynamo import finding_body, scan_purchases, scan_trace_codes
from rxguard_tools.offline import Environment
from rxguard_tools.offline.cli import main, run
from tests.conftest import NO_LETTERS
from tests.factories import write_csv

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "events" / "batches"
SAMPLE = SAMPLES / "03_yulin_bom.csv"  # refills across institutions: several findings per patient


pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _quiet_moto() -> None:
    logging.getLogger("moto").setLevel(logging.CRITICAL)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Environment]:
    with (tmp_path / "functions.log").open("w") as log, Environment(handler_output=log) as environment:
        yield environment


def _counts(env: Environment, alerts) -> dict[str, int]:
    findings = env.scan_table("FindingsTable")
    return {
        "purchases": len(scan_purchases(env.clients.dynamodb, env.name("PurchasesTable"))),
        "trace_codes": len(scan_trace_codes(env.clients.dynamodb, env.name("TraceCodesTable"))),
        "findings": len(findings),
        "current_findings": sum(1 for f in findings if f["status"] != "superseded"),
        "alerts": len(env.drain(alerts)),
    }


def _report(env: Environment, execution) -> dict:
    body = env.clients.s3.get_object(Bucket=env.name("ResultsBucket"), Key=execution.output["report_key"])["Body"]
    return json.loads(body.read())


def test_a_dropped_file_is_screened_alerted_and_reported(env):
    # Given a local queue on the alerts topic
    alerts = env.subscribe_queue("AlertsTopic", "alerts")
    # When a sample batch is dropped into the ingest bucket
    (execution,) = env.drop(SAMPLE)
    env.wait(timeout=120)
    # Then the execution succeeded, findings are in DynamoDB, alerts on the queue, a report in S3
    assert execution.status == "SUCCEEDED", execution.cause
    counts = _counts(env, alerts)
    assert counts["current_findings"] > 0 and counts["alerts"] > 0
    report = _report(env, execution)
    assert report["status"] == "SUCCEEDED"
    assert report["accepted"] == counts["purchases"] > 0
    assert report["findings"]["new"] == counts["current_findings"]
    batch = env.scan_table("BatchesTable")
    assert [b["status"] for b in batch] == ["SUCCEEDED"]


def test_duplicates_and_a_retried_chunk_change_nothing(env_no_letters):
    env = env_no_letters
    # Given one-shot transient failures in Prepare and in the chunk's Screen invocation
    alerts = env.subscribe_queue("AlertsTopic", "alerts")
    env.router.inject_failure("PrepareFunction", error="TransientError")
    env.router.inject_failure("ScreenFunction", error="TransientError")
    # When the file is dropped; its event is delivered again; the file is dropped again (a new
    # version of the object); the same bytes are dropped under another key
    (first,) = env.drop(SAMPLE)
    env.wait(timeout=120)
    after_first = _counts(env, alerts)
    duplicate_event = env.redeliver(first)
    (again,) = env.drop(SAMPLE)
    (copy,) = env.drop(body=SAMPLE.read_bytes(), key="copy-of-" + SAMPLE.name)
    env.wait(timeout=120)
    after_all = _counts(env, alerts)
    # Then the retries show (Prepare in the execution history, Screen in the invocations) and
    # succeed, the duplicate event starts no second execution, and re-drop and copy change no count
    assert first.status == "SUCCEEDED", first.cause
    history = env.history(first)
    failed = [e["taskFailedEventDetails"]["error"] for e in history if e["type"] == "TaskFailed"]
    assert failed == ["TransientError"]
    assert sum(1 for e in history if e["type"] == "TaskSucceeded") >= 4  # Prepare retried, then the rest
    screens = [c for c in env.router.calls if c.logical_id == "ScreenFunction"]
    assert [c.error_type for c in screens[:2]] == ["TransientError", None]
    assert screens[0].event["chunk_key"] == screens[1].event["chunk_key"]
    assert duplicate_event.started_new is False and duplicate_event.arn == first.arn
    assert again.started_new and again.status == "SUCCEEDED", again.cause
    assert copy.started_new and copy.status == "SUCCEEDED", copy.cause
    assert after_first["current_findings"] > 0
    assert {k: v for k, v in after_all.items() if k != "alerts"} == {
        k: v for k, v in after_first.items() if k != "alerts"
    }
    assert after_all["alerts"] == 0  # nothing new to alert
    assert _report(env, again)["findings"]["new"] == _report(env, copy)["findings"]["new"] == 0


def _split_by_time(source: Path, tmp: Path) -> tuple[Path, Path]:
    rows = list(csv.DictReader(io.StringIO(source.read_text(encoding="utf-8-sig"))))
    rows.sort(key=lambda r: r["fee_ocur_time"])
    half = len(rows) // 2
    first, second = ((tmp / name, part) for name, part in (("early.csv", rows[:half]), ("late.csv", rows[half:])))
    return write_csv(*first), write_csv(*second)


def _findings_after(batches: list[Path], tmp: Path) -> list[dict]:
    with (tmp / "functions.log").open("a") as log, Environment(handler_output=log, base_environment=NO_LETTERS) as env:
        for path in batches:
            (execution,) = env.drop(path)
            env.wait(timeout=120)
            assert execution.status == "SUCCEEDED", execution.cause
        items = env.scan_table("FindingsTable")
    current = [finding_body(i["body"]) for i in items if i["status"] != "superseded"]
    return sorted(current, key=lambda f: f["finding_id"])


def test_two_batches_of_the_same_patients_in_either_order_give_the_same_findings(tmp_path):
    # Given one sample split in two batches by time (same patients in both)
    early, late = _split_by_time(SAMPLE, tmp_path)
    # When they arrive in one order in one environment and the other order in another
    forward = _findings_after([early, late], tmp_path)
    backward = _findings_after([late, early], tmp_path)
    # Then the current findings are identical, and some need lines of both batches
    assert forward == backward
    early_ids = {r["fixmedins_code"] + "/" + r["feedetl_sn"] for r in csv.DictReader(early.open(encoding="utf-8"))}
    assert any(set(f["evidence"]) & early_ids and set(f["evidence"]) - early_ids for f in forward), (
        "no finding spans both batches: the split does not test order"
    )


def test_a_malformed_file_ends_in_a_clear_failed_report_and_a_non_zero_exit(tmp_path):
    # Given an unreadable file and a file with some bad lines
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"\x00\x01\x02 not a claim batch \xff\xfe")
    some_bad = SAMPLES / "01_shanghai_his_utf8.csv"
    out = tmp_path / "out"
    stdout = io.StringIO()
    # When both run through `rxguard run`
    code = run([broken, some_bad], out, stdout=stdout, environment=NO_LETTERS)
    # Then the run exits 1, the broken batch is FAILED with the reason in report.json and on
    # stdout, the other SUCCEEDED with its rejected lines in rejected.jsonl under its own name
    report = json.loads((out / "report.json").read_text())
    by_file = {Path(b["file"]).name: b for b in report["batches"]}
    assert code == 1
    assert by_file["broken.csv"]["status"] == "FAILED"
    assert by_file["broken.csv"]["report"]["file_error"] or by_file["broken.csv"]["report"]["error"]
    assert "broken.csv: FAILED" in stdout.getvalue()
    assert by_file[some_bad.name]["status"] == "SUCCEEDED"
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    mine = [r for r in rejected if r["file"] == str(some_bad)]
    assert len(mine) == by_file[some_bad.name]["report"]["rejected"] > 0
    assert all({"file", "line", "field", "reason"} <= r.keys() for r in mine)


def test_usage_errors_are_named():
    # Given / When a missing file / a missing --out
    # Then the usage exit status
    assert main(["no/such/file.csv", "--out", "x"]) == 64
    assert main([str(SAMPLE)]) == 64


def _engine_findings(files: list[Path]) -> list[dict]:
    """The engine alone on the same lines: ingest + screening on an InMemoryRepository."""
    from rxguard import screening
    from rxguard.ingest import read_batch
    from rxguard.kb import get_knowledge_base
    from rxguard.models import ClaimLine
    from rxguard.repository import InMemoryRepository

    kb = get_knowledge_base()
    lines = [x for path in files for x in read_batch(path, kb) if isinstance(x, ClaimLine)]
    repo = InMemoryRepository()
    screening.screen_lines(lines, repo, kb)
    current = [f for f in repo.findings.values() if f.status != "superseded"]
    _, institution = screening.institution_findings_from_lines(lines, current, kb)
    scopes = {screening.finding_scope(f) for f in institution} if hasattr(screening, "finding_scope") else set()
    screening.replace_institution_findings(repo, institution, scopes)
    current = [f for f in repo.findings.values() if f.status != "superseded"]
    return sorted((f.model_dump(mode="json") for f in current), key=lambda f: f["finding_id"])


def test_rxguard_run_finds_exactly_what_the_engine_finds(tmp_path):
    # Given the sample batches of every format
    files = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".csv", ".jsonl", ".json"))
    # When they run offline through the whole workflow and through the engine alone
    stdout, progress = io.StringIO(), io.StringIO()
    code = run(files, tmp_path / "out", stdout=stdout, progress=progress, environment=NO_LETTERS)
    offline = [json.loads(line) for line in (tmp_path / "out" / "findings.jsonl").read_text().splitlines()]
    engine = _engine_findings(files)
    # Then the findings are identical, field by field
    assert code == 0
    assert len(offline) > 0
    assert [f["finding_id"] for f in offline] == [f["finding_id"] for f in engine]
    assert offline == engine
    # and no patient number reaches the terminal in clear, though the summary names patients
    printed = stdout.getvalue() + progress.getvalue()
    assert "First findings (psn_no masked)" in printed and "chunks]" in progress.getvalue()
    assert not [f["psn_no"] for f in offline if f["psn_no"] and f["psn_no"] in printed]
