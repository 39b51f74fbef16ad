"""Faults on the offline workflow end in the state of a clean run (docs/security.md, R1-R6).

Each test runs the real template, ASL and handlers on moto (rxguard_tools.offline.Environment),
injects one fault, and compares what is stored - purchases, trace codes, current findings
(id, rule, status, evidence) - with a clean run of the same input. Faults are injected
with a botocore `before-call` hook on the handlers' DynamoDB clients (they come from the
default boto3 session, created lazily after the hook is registered).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from rxguard.dynamo import finding_body, scan_purchases, scan_trace_codes
from rxguard_tools.offline import Environment
from rxguard_tools.offline.environment import REGION
from tests.factories import write_csv

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "events" / "batches" / "03_yulin_bom.csv"  # refills across institutions: several findings
NO_LETTERS = {"RXGUARD_ALERTS_CONFIG": '{"letters_enabled": false}'}  # PDF rendering is slow; alerts stay
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _quiet_moto() -> None:
    logging.getLogger("moto").setLevel(logging.CRITICAL)


Snapshot = dict[str, Any]


def snapshot(env: Environment) -> Snapshot:
    findings = env.scan_table("FindingsTable")
    current = {
        f["finding_id"]: (f.get("rule_id"), f["status"], tuple(sorted(finding_body(f["body"])["evidence"])))
        for f in findings
        if f["status"] != "superseded"
    }
    return {
        "purchases": scan_purchases(env.clients.dynamodb, env.name("PurchasesTable")),
        "trace_codes": scan_trace_codes(env.clients.dynamodb, env.name("TraceCodesTable")),
        "findings": current,
    }


class Hook:
    """A `before-call.dynamodb` hook on the default boto3 session, removed on exit."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.lock = threading.Lock()
        self.fired = 0
        self.emitter = boto3._get_default_session()._session.get_component("event_emitter")

    def __enter__(self) -> Hook:
        self.emitter.register("before-call.dynamodb", self._call, unique_id="rxguard-security-fault")
        return self

    def __exit__(self, *exc: object) -> None:
        self.emitter.unregister("before-call.dynamodb", unique_id="rxguard-security-fault")

    def _call(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        with self.lock:
            answer = self.fn(model.name, params)
            if answer is not None:
                self.fired += 1
            return answer


def _error(code: str) -> tuple[Any, dict[str, Any]]:
    http = SimpleNamespace(status_code=400, headers={}, content=b"", text="")
    return http, {
        "Error": {"Code": code, "Message": "injected by tests/security"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }


def run(
    files: list[Path], tmp: Path, *, hook: Callable[..., Any] | None = None, concurrent: bool = False,
    between: Callable[[Environment], None] | None = None,
) -> tuple[Snapshot, list[Any], Hook | None]:  # fmt: skip
    with (
        (tmp / "functions.log").open("a") as log,
        Environment(handler_output=log, base_environment=NO_LETTERS) as env,
    ):
        installed = Hook(hook) if hook else None
        executions: list[Any] = []
        try:
            if installed:
                installed.__enter__()
            for path in files:
                executions += env.drop(path)
                if not concurrent:
                    env.wait(timeout=120)
                    if between is not None:
                        between(env)
            env.wait(timeout=120)
        finally:
            if installed:
                installed.__exit__()
        return snapshot(env), [env.describe(e) for e in executions], installed


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Snapshot, str]:
    tmp = tmp_path_factory.mktemp("clean")
    state, executions, _ = run([SAMPLE], tmp)
    assert [e.status for e in executions] == ["SUCCEEDED"]
    assert state["findings"] and state["purchases"], "the sample must produce findings for the comparison to mean much"
    return state, (tmp / "functions.log").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def clean(clean_run: tuple[Snapshot, str]) -> Snapshot:
    return clean_run[0]


def test_a_whole_workflow_run_logs_no_patient_number_or_trace_code(clean_run: tuple[Snapshot, str]) -> None:
    # Given every psn_no and trace code of the sample batch
    from rxguard.ingest import read_batch
    from rxguard.kb import get_knowledge_base
    from rxguard.models import ClaimLine

    lines = [x for x in read_batch(SAMPLE, get_knowledge_base()) if isinstance(x, ClaimLine)]
    secrets = {x.psn_no for x in lines} | {c for x in lines for c in x.trace_codes}
    # When the whole workflow ran on it (Prepare, Screen, Notify, Finalize: everything they logged)
    log = clean_run[1]
    # Then the functions did log, and none of those identifiers appears in their output
    assert len(log.splitlines()) > 4 and secrets
    leaked = sorted(s for s in secrets if s in log)
    assert leaked == [], f"{len(leaked)} identifiers in the function logs"


def test_throttled_dynamodb_calls_are_retried_to_the_clean_result(clean: Snapshot, tmp_path: Path) -> None:
    # Given DynamoDB answering ProvisionedThroughputExceededException to the handlers' first 3 calls
    # (Prepare: its idempotency record, the batches table) and to the first 3 calls on the purchases
    # table (Screen). The hook answers before the SDK's own retries: the workflow's retries must absorb it.
    left = {"any": 3, "purchases": 3}

    def throttle(op: str, params: dict[str, Any]) -> Any:
        if left["any"] > 0:
            left["any"] -= 1
            return _error("ProvisionedThroughputExceededException")
        if left["purchases"] > 0 and "PurchasesTable" in _body(params):
            left["purchases"] -= 1
            return _error("ProvisionedThroughputExceededException")
        return None

    # When the sample batch is dropped
    state, executions, hook = run([SAMPLE], tmp_path, hook=throttle)
    # Then every throttled call was retried and the stored state is the clean run's
    assert hook is not None and hook.fired == 6
    assert [e.status for e in executions] == ["SUCCEEDED"], [e.cause for e in executions]
    assert state == clean


def _body(params: dict[str, Any]) -> str:
    """The JSON body of a DynamoDB request (before-call sees the serialized request)."""
    body = params.get("body") or b""
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)


def test_partially_applied_batch_write_is_completed(clean: Snapshot, tmp_path: Path) -> None:
    # Given the first BatchWriteItem applying only its first item and returning the rest as UnprocessedItems
    raw = boto3.session.Session(region_name=REGION)  # a session without the hook
    seen = {"n": 0}

    def partial(op: str, params: dict[str, Any]) -> Any:
        if op != "BatchWriteItem" or seen["n"]:
            return None
        seen["n"] += 1
        items = _from_wire(json.loads(_body(params))["RequestItems"])
        table, requests = next(iter(items.items()))
        client = raw.client("dynamodb")
        client.batch_write_item(RequestItems={table: requests[:1]})
        rest = {table: requests[1:], **{t: r for t, r in items.items() if t != table}}
        http = SimpleNamespace(status_code=200, headers={})
        return http, {
            "UnprocessedItems": {t: r for t, r in rest.items() if r},
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }

    # When the sample batch is dropped
    state, executions, hook = run([SAMPLE], tmp_path, hook=partial)
    # Then the unprocessed items were written and the stored state is the clean run's
    if hook is not None and hook.fired == 0:
        pytest.fail("the workflow issued no BatchWriteItem: this fault is not exercised (update the test)")
    assert [e.status for e in executions] == ["SUCCEEDED"], [e.cause for e in executions]
    assert state == clean


def _from_wire(value: Any) -> Any:
    """DynamoDB JSON as sent (binary values base64 text) back to what boto3 takes (bytes)."""
    if isinstance(value, dict):
        if set(value) == {"B"} and isinstance(value["B"], str):
            return {"B": base64.b64decode(value["B"])}
        return {k: _from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_wire(v) for v in value]
    return value


class Crash(Exception):
    """Stands for the Lambda dying mid-chunk (out of memory, timeout): not a retried error type."""


def test_a_screen_crash_mid_chunk_is_reported_and_a_rerun_converges_to_the_clean_result(
    clean: Snapshot, tmp_path: Path
) -> None:
    # Given the Screen Lambda dying when it writes the patients' packs (after announcing itself
    # in the writer registry and writing the trace-code buckets: lines are half-recorded)
    writes = {"n": 0, "crashed": False}

    def crash(op: str, params: dict[str, Any]) -> Any:
        if op == "BatchWriteItem" and "PurchasesTable" in _body(params) and not writes["crashed"]:
            writes["n"] += 1
            writes["crashed"] = True
            raise Crash("simulated crash writing the purchases packs")
        return None

    # When the batch is dropped (the crash happens), then dropped again after the operator sees PARTIAL
    with (
        (tmp_path / "functions.log").open("a") as log,
        Environment(handler_output=log, base_environment=NO_LETTERS) as env,
    ):
        with Hook(crash):
            (first,) = env.drop(SAMPLE)
            env.wait(timeout=120)
        first = env.describe(first)
        partial = snapshot(env)
        (second,) = env.drop(SAMPLE)  # a new version of the object: a new execution
        env.wait(timeout=120)
        second = env.describe(second)
        state = snapshot(env)
    # Then the crash was not silent (the batch is not SUCCEEDED with missing lines),
    assert writes["crashed"]
    report_status = (first.output or {}).get("status") if isinstance(first.output, dict) else None
    assert first.status != "SUCCEEDED" or report_status in ("PARTIAL", "FAILED"), (first.status, first.output)
    assert partial["purchases"] != clean["purchases"]  # some lines were missing after the crash
    # and the rerun completed the chunk without counting any line twice
    assert second.status == "SUCCEEDED", second.cause
    assert state == clean


def _interleave(source: Path, tmp: Path) -> tuple[Path, Path]:
    """Two batches of the same patients: odd and even rows of the sample."""
    text = source.read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    first, second = ((tmp / name, part) for name, part in (("odd.csv", rows[0::2]), ("even.csv", rows[1::2])))
    return write_csv(*first), write_csv(*second)


def test_two_executions_on_the_same_patients_at_once_give_the_clean_result(clean: Snapshot, tmp_path: Path) -> None:
    # Given the sample split into two batches sharing every patient
    odd, even = _interleave(SAMPLE, tmp_path)
    # When both are dropped at once (two executions screening the same patients concurrently)
    state, executions, _ = run([odd, even], tmp_path, concurrent=True)
    # Then both succeed and the stored state is that of the whole sample in one clean run
    assert [e.status for e in executions] == ["SUCCEEDED", "SUCCEEDED"], [e.cause for e in executions]
    assert state == clean


def test_duplicate_out_of_order_and_day_later_redrops_change_nothing(clean: Snapshot, tmp_path: Path) -> None:
    # Given the sample dropped twice in quick succession (two versions of the object)
    with (
        (tmp_path / "functions.log").open("a") as log,
        Environment(handler_output=log, base_environment=NO_LETTERS) as env,
    ):
        (first,) = env.drop(SAMPLE)
        (second,) = env.drop(SAMPLE)
        env.wait(timeout=120)
        # When the first version's event arrives again after the second (duplicate, out of order),
        again = env.redeliver(first)
        env.wait(timeout=120)
        after_events = snapshot(env)
        # and a day later, the idempotency records gone (TTL), the same file is dropped once more
        table = env.name("IdempotencyTable")
        for item in env.clients.dynamodb.scan(TableName=table)["Items"]:
            env.clients.dynamodb.delete_item(TableName=table, Key={"id": item["id"]})
        (later,) = env.drop(SAMPLE)
        env.wait(timeout=120)
        state = snapshot(env)
        statuses = [env.describe(e).status for e in (first, second, later)]
    # Then the duplicate started no execution, every run succeeded, and nothing was counted twice
    assert again.started_new is False
    assert statuses == ["SUCCEEDED"] * 3
    assert after_events == clean
    assert state == clean
