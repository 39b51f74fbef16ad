"""Each workflow handler invoked directly on moto with the sample events of events/."""

from __future__ import annotations

import copy
import importlib.util
import json
import uuid
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT, Stack, make_finding

from rxguard.dynamo import scan_purchases
from tests.conftest import load_event

BATCH = ROOT / "events" / "batches" / "01_shanghai_his_utf8.csv"


@dataclass
class Context:
    """The parts of the Lambda context that the handlers and Powertools read."""

    function_name: str = "rxguard-fn"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:rxguard-fn"
    aws_request_id: str = ""

    def __post_init__(self) -> None:
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def handler(name: str) -> ModuleType:
    """functions/<name>/app.py, imported under a unique module name (all four are `app`)."""
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"rxguard_fn_{name}_app", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def drop(stack: Stack, body: bytes, key: str = "incoming/01_shanghai_his_utf8.csv") -> dict[str, Any]:
    """Put a batch in the ingest bucket; the EventBridge event S3 would send for it."""
    answer = stack.s3.put_object(Bucket=stack.ingest_bucket, Key=key, Body=body)
    event = copy.deepcopy(load_event("workflow/s3_object_created.json"))
    event["detail"]["bucket"]["name"] = stack.ingest_bucket
    event["detail"]["object"].update(key=key, size=len(body), etag=answer["ETag"].strip('"'))
    event["detail"]["object"].pop("version-id")
    return event


def prepare(stack: Stack, event: dict[str, Any], execution: str = "exec-1") -> dict[str, Any]:
    payload = {
        "detail": event["detail"],
        "execution_id": f"arn:aws:states:::execution:sm:{execution}",
        "execution_name": execution,
    }
    return dict(handler("prepare").lambda_handler(payload, Context()))


def s3_json(stack: Stack, key: str) -> Any:
    return json.loads(stack.s3.get_object(Bucket=stack.results_bucket, Key=key)["Body"].read())


def batch_item(stack: Stack, batch_id: str) -> dict[str, Any]:
    item = stack.ddb.get_item(TableName=stack.table("BatchesTable"), Key={"batch_id": {"S": batch_id}})["Item"]
    return {k: next(iter(v.values())) for k, v in item.items()}


def test_prepare_writes_chunks_rejected_lines_and_a_manifest(stack: Stack) -> None:
    # Given a sample batch dropped in the ingest bucket
    event = drop(stack, BATCH.read_bytes())
    # When Prepare runs for it
    out = prepare(stack, event)
    # Then every accepted line is in exactly one chunk file, the manifest says so, the
    # rejected lines are quarantined and the batch is claimed by this execution
    assert out["duplicate"] is False
    assert out["lines_read"] == out["accepted"] + out["rejected"] > 0
    assert out["chunk_count"] == len(out["chunks"]) >= 2  # RXGUARD_CHUNK_SIZE=50 in the fixture
    stored = [
        stack.s3.get_object(Bucket=stack.results_bucket, Key=c["chunk_key"])["Body"].read() for c in out["chunks"]
    ]
    assert sum(len(body.splitlines()) for body in stored) == out["accepted"] == sum(c["lines"] for c in out["chunks"])
    assert s3_json(stack, out["manifest_key"])["chunks"] == out["chunks"]
    rejected = stack.s3.get_object(Bucket=stack.results_bucket, Key=out["rejected_key"])["Body"].read().splitlines()
    assert len(rejected) == out["rejected"]
    claim = batch_item(stack, out["batch_id"])
    assert (claim["status"], claim["execution_id"]) == ("RUNNING", "arn:aws:states:::execution:sm:exec-1")


def test_the_same_object_in_another_execution_is_a_no_op(stack: Stack) -> None:
    # Given a batch prepared by one execution
    event = drop(stack, BATCH.read_bytes())
    first = prepare(stack, event, "exec-1")
    # When the same object arrives again: a retry in the same execution, then a second execution
    retry = prepare(stack, event, "exec-1")
    second = prepare(stack, event, "exec-2")
    # Then the retry gets the same manifest, the second execution is told it is a duplicate
    assert retry["duplicate"] is False and retry["chunks"] == first["chunks"]
    assert second["duplicate"] is True and second["chunk_count"] == 0 and second["batch_id"] == first["batch_id"]
    assert batch_item(stack, first["batch_id"])["execution_id"].endswith("exec-1")


def test_a_new_version_of_the_object_is_a_new_batch(stack: Stack) -> None:
    # Given a batch prepared, then the file replaced by a different content under the same key
    first = prepare(stack, drop(stack, BATCH.read_bytes()), "exec-1")
    changed = BATCH.read_bytes() + b"\n"  # same lines, another ETag
    second = prepare(stack, drop(stack, changed), "exec-2")
    # Then the second one is not a duplicate: another ETag, another batch
    assert second["duplicate"] is False and second["batch_id"] != first["batch_id"]


def _finalize(state: dict[str, Any], mode: str = "complete") -> dict[str, Any]:
    event = {"mode": mode, "state": state, "execution_id": "arn:aws:states:::execution:sm:exec-1"}
    if mode == "complete":
        event["batch_id"] = state["batch_id"]
    return dict(handler("finalize").lambda_handler(event, Context()))


def _screened(stack: Stack, batch_id: str, chunk_key: str, findings: list[Any]) -> dict[str, Any]:
    """A Map result as ScreenChunk returns it, with its results file."""
    from rxguard.workflow import naming
    from rxguard.workflow.contract import ChunkFindings

    key = naming.result_key(batch_id, chunk_key)
    body = ChunkFindings(chunk_key=chunk_key, recorded=5, new=findings).model_dump_json()
    stack.s3.put_object(Bucket=stack.results_bucket, Key=key, Body=body.encode())
    return {
        "chunk_key": chunk_key,
        "ok": True,
        "lines": 5,
        "recorded": 5,
        "duplicates": 0,
        "findings": {"new": len(findings)},
        "result_key": key,
    }


def test_finalize_reports_null_and_failed_map_results_as_missing_chunks(stack: Stack) -> None:
    # Given a prepared batch whose Map returned a result for the first chunk only:
    # null for the second (moto's lost item), ok:false for the third, nothing for the rest
    state = prepare(stack, drop(stack, BATCH.read_bytes()))
    keys = [c["chunk_key"] for c in state["chunks"]]
    assert len(keys) >= 2
    findings = [make_finding(evidence=("H1/1",)), make_finding("over-quantity", evidence=("H1/2",))]
    state["chunk_results"] = [_screened(stack, state["batch_id"], keys[0], findings), None]
    if len(keys) > 2:
        state["chunk_results"].append({"chunk_key": keys[2], "ok": False, "error": "TransientError"})
    # When Finalize runs
    out = _finalize(state)
    # Then the batch is PARTIAL, naming every chunk without a result, in the report and the table
    assert out["status"] == "PARTIAL"
    assert out["missing_chunks"] == keys[1:]
    report = s3_json(stack, out["report_key"])
    assert report["chunks"] == {"total": len(keys), "ok": 1, "missing": len(keys) - 1, "missing_keys": keys[1:]}
    assert report["findings"]["by_rule"] == {"early-refill": 1, "over-quantity": 1}
    assert report["findings"]["by_severity"] == {"high": 2}
    assert report["lines_read"] == state["lines_read"]
    assert batch_item(stack, state["batch_id"])["status"] == "PARTIAL"


def test_finalize_succeeds_when_every_chunk_has_a_result(stack: Stack) -> None:
    # Given a prepared batch and a result for every chunk
    state = prepare(stack, drop(stack, BATCH.read_bytes()))
    state["chunk_results"] = [_screened(stack, state["batch_id"], c["chunk_key"], []) for c in state["chunks"]]
    # When Finalize runs
    out = _finalize(state)
    # Then the batch SUCCEEDED with the counts of the manifest and the chunks
    report = s3_json(stack, out["report_key"])
    assert (out["status"], out["missing_chunks"]) == ("SUCCEEDED", [])
    assert report["lines"]["recorded"] == 5 * len(state["chunks"])
    assert report["rejected_by_reason"] == state["rejected_by_reason"]
    assert report["duration_seconds"] is not None and report["duration_seconds"] >= 0


def test_an_unreadable_file_ends_failed_with_the_reason(stack: Stack) -> None:
    # Given a binary file dropped as a batch
    state = prepare(stack, drop(stack, bytes(range(256)) * 8, key="incoming/broken.csv"))
    # When Finalize runs on Prepare's output (no chunks, so no Map)
    out = _finalize(state)
    # Then the batch is FAILED and the report says why
    report = s3_json(stack, out["report_key"])
    assert out["status"] == "FAILED"
    assert report["file_error"]
    assert batch_item(stack, state["batch_id"])["status"] == "FAILED"


def test_record_failure_works_from_the_original_event_alone(stack: Stack) -> None:
    # Given Prepare failed: the state is the original event plus the caught error
    event = drop(stack, BATCH.read_bytes())
    state = {**event, "error": {"Error": "TransientError", "Cause": '{"errorMessage": "PutObject: SlowDown"}'}}
    # When RecordFailure (Finalize, mode failed) runs
    out = _finalize(state, mode="failed")
    # Then the batch (its id derived from the object) is FAILED with the error recorded
    from rxguard.workflow.naming import S3ObjectRef, batch_id_for

    assert out["batch_id"] == batch_id_for(S3ObjectRef.from_detail(event["detail"]))
    report = s3_json(stack, out["report_key"])
    assert out["status"] == "FAILED"
    assert report["error"]["error"] == "TransientError"
    assert "SlowDown" in report["error"]["cause"]


def test_a_re_drop_after_a_failed_batch_is_processed_again(stack: Stack) -> None:
    # Given a batch that failed
    event = drop(stack, BATCH.read_bytes())
    first = prepare(stack, event, "exec-1")
    _finalize({**first, "error": {"Error": "States.Timeout", "Cause": ""}}, mode="failed")
    # When the same object is started again by another execution
    again = prepare(stack, event, "exec-2")
    # Then it is claimed and prepared, not skipped
    assert again["duplicate"] is False and again["chunk_count"] == first["chunk_count"]


def _messages(stack: Stack, url: str) -> list[dict[str, Any]]:
    out = []
    while True:
        got = stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        if not got.get("Messages"):
            return out
        out.extend(got["Messages"])


def test_notify_alerts_each_finding_once_however_often_it_runs(stack: Stack) -> None:
    # Given a screened chunk with a new high-severity finding
    batch_id = "0123456789abcdef0123456789abcdef01234567"
    chunk = f"chunks/{batch_id}/00000.jsonl"
    result = _screened(stack, batch_id, chunk, [make_finding(evidence=("H31000000001/1",))])
    event = {"batch_id": batch_id, "chunk_results": [result, None]}
    # When Notify runs, and runs again (a retried state)
    first = handler("notify").lambda_handler(event, Context())
    after_first = _messages(stack, stack.alerts_queue_url)
    handler("notify").lambda_handler(event, Context())
    after_second = _messages(stack, stack.alerts_queue_url)
    # Then the first run announced the finding on the alerts topic and the second nothing
    assert first["findings"] == 1
    assert any("early-refill" in m["Body"] for m in after_first)
    assert after_second == []


def _screen_all(stack: Stack, state: dict[str, Any]) -> list[dict[str, Any]]:
    screen = handler("screen")
    items = [
        {"batch_id": state["batch_id"], "chunk_key": c["chunk_key"], "lines": c["lines"], "index": i}
        for i, c in enumerate(state["chunks"])
    ]
    return [dict(screen.lambda_handler(item, Context())) for item in items]


def test_screen_records_every_accepted_line_once_and_a_retry_changes_nothing(stack: Stack) -> None:
    # Given a prepared sample batch
    state = prepare(stack, drop(stack, BATCH.read_bytes()))
    # When every chunk is screened, then every chunk again (a retried Map)
    first = _screen_all(stack, state)
    purchases = len(scan_purchases(stack.ddb, stack.table("PurchasesTable")))
    findings = stack.ddb.scan(TableName=stack.table("FindingsTable"), Select="COUNT")["Count"]
    again = _screen_all(stack, state)
    # Then each accepted line was recorded once and the sample's findings were stored; the
    # retried chunks report what the first attempt did (a retry does not change the batch
    # report) and the tables did not move
    assert sum(r["recorded"] for r in first) == state["accepted"] == purchases
    assert sum(r["findings"]["new"] for r in first) == findings > 0
    assert again == first
    assert len(scan_purchases(stack.ddb, stack.table("PurchasesTable"))) == purchases
    assert stack.ddb.scan(TableName=stack.table("FindingsTable"), Select="COUNT")["Count"] == findings
    assert all(r["ok"] for r in first)


def test_a_copy_of_a_screened_file_under_another_key_records_nothing_new(stack: Stack) -> None:
    # Given a sample batch fully screened
    _screen_all(stack, prepare(stack, drop(stack, BATCH.read_bytes())))
    findings = stack.ddb.scan(TableName=stack.table("FindingsTable"), Select="COUNT")["Count"]
    # When the same content is dropped under another key (a new batch) and screened
    copy_state = prepare(stack, drop(stack, BATCH.read_bytes(), key="incoming/copy.csv"), "exec-2")
    results = _screen_all(stack, copy_state)
    # Then every line is a duplicate and no finding is new
    assert copy_state["duplicate"] is False
    assert sum(r["recorded"] for r in results) == 0
    assert sum(r["duplicates"] for r in results) == copy_state["accepted"]
    assert sum(r["findings"]["new"] for r in results) == 0
    assert stack.ddb.scan(TableName=stack.table("FindingsTable"), Select="COUNT")["Count"] == findings


def test_a_chunk_retried_after_dying_mid_way_still_hands_its_findings_to_notify(stack: Stack, kb: Any) -> None:
    # Given a prepared batch and a results store that fails writing the first chunk's results
    # file once (the Lambda died after reconciling findings, before reporting them)
    from conftest import tables_of

    from rxguard.dynamo import DynamoRepository, ResultStore
    from rxguard.workflow.contract import ChunkRequest
    from rxguard.workflow.notify import findings_to_alert
    from rxguard.workflow.screen import screen_chunk

    state = prepare(stack, drop(stack, BATCH.read_bytes()))
    chunk = state["chunks"][1]

    class DiesOnce(ResultStore):
        died = False

        def put_json(self, key: str, data: Any) -> str:
            if "/results/" in key and not DiesOnce.died:
                DiesOnce.died = True
                raise TimeoutError("Task timed out")
            return super().put_json(key, data)

    request = ChunkRequest(batch_id=state["batch_id"], chunk_key=chunk["chunk_key"], lines=chunk["lines"])
    store = DiesOnce(stack.results_bucket, stack.s3)
    with pytest.raises(TimeoutError):
        screen_chunk(request, results=store, repo=DynamoRepository(tables_of(stack), stack.ddb), kb=kb)
    stored = {item["finding_id"]["S"] for item in stack.ddb.scan(TableName=stack.table("FindingsTable"))["Items"]}
    # When the Map retries the chunk
    result = screen_chunk(request, results=store, repo=DynamoRepository(tables_of(stack), stack.ddb), kb=kb)
    # Then nothing is new any more, but the findings the dead attempt stored reach Notify
    todo = findings_to_alert(store, [result.model_dump()])
    assert stored
    assert result.findings["new"] == 0
    assert {f.finding_id for f in todo.findings} == stored


@pytest.mark.parametrize(
    "key",
    [
        "incoming/" + "医保结算明细" * 15 + ".csv",  # a 270-byte basename (S3 allows 1,024 bytes a key)
        "incoming/..",
        "incoming/.",
        "incoming/a/../../etc/passwd",
        "incoming/",
    ],
    ids=["basename_over_255_bytes", "dot_dot", "dot", "traversal", "prefix_only"],
)
def test_s3_keys_are_opaque_ids_never_local_file_names(stack: Stack, key: str) -> None:
    # Given a good batch dropped under a key no file system would take as a file name
    event = drop(stack, BATCH.read_bytes(), key=key)
    # When Prepare runs for it
    out = prepare(stack, event)
    # Then its lines are read like any other batch's, and the key is the file named in the report
    assert out["file_error"] is None
    assert out["accepted"] > 0 and out["file"] == key
