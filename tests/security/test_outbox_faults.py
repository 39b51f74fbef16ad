"""No lost alert, no stuck batch (issue 15), on the real template, ASL and handlers on moto.

- SNS throttles after 3 publishes: the batch fails after Notify's retries, the alerts not
  sent stay pending in the OutboxTable, and the re-drop (or the sweeper) publishes exactly
  those: every alert of a clean run arrives once, none twice.
- Finalize keeps failing: the state machine marks the batch FAILED itself (MarkFailed) and
  writes its report.
- A batch left RUNNING past its timeout: the sweeper marks it FAILED with a reason and a
  report; a batch still within its timeout is left alone.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from rxguard_tools.offline import Environment
from tests.conftest import NO_LETTERS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "events" / "batches" / "03_yulin_bom.csv"  # refills across institutions: several findings
pytestmark = pytest.mark.slow


@pytest.fixture
def env(env_no_letters: Environment) -> Environment:
    return env_no_letters


class SnsHook:
    """A `before-call.sns` hook on the default boto3 session: `fn(operation, params)` may
    answer instead of SNS (an error). Clients keep a copy of the session's handlers, so the
    hook also goes quiet on exit (a client created meanwhile keeps calling it)."""

    def __init__(self, fn: Callable[[str, dict[str, Any]], Any]) -> None:
        self.fn = fn
        self.lock = threading.Lock()
        self.emitter = boto3._get_default_session()._session.get_component("event_emitter")
        self.active = False

    def __enter__(self) -> SnsHook:
        self.active = True
        self.emitter.register("before-call.sns", self._call, unique_id="rxguard-outbox-fault")
        return self

    def __exit__(self, *exc: object) -> None:
        self.active = False
        self.emitter.unregister("before-call.sns", unique_id="rxguard-outbox-fault")

    def _call(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        with self.lock:
            return self.fn(model.name, params) if self.active else None


def _throttled() -> tuple[Any, dict[str, Any]]:
    http = SimpleNamespace(status_code=400, headers={}, content=b"", text="")
    return http, {
        "Error": {"Code": "Throttling", "Message": "Rate exceeded (injected by tests/security)"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }


def _message_ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["MessageAttributes"]["message_id"]["StringValue"] for m in messages]


def _findings(ids: Iterable[str]) -> set[str]:
    """The per-finding alerts (`finding/<id>`: the same ids in every run of the same input)."""
    return {i for i in ids if i.startswith("finding/")}


def _pending(env: Environment) -> list[dict[str, Any]]:
    answer = env.clients.dynamodb.query(
        TableName=env.name("OutboxTable"),
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "pending"}},
        ConsistentRead=True,
    )
    return list(answer["Items"])


def _batch(env: Environment, batch_id: str) -> dict[str, Any]:
    item = env.clients.dynamodb.get_item(TableName=env.name("BatchesTable"), Key={"batch_id": {"S": batch_id}})
    return {k: v.get("S", v.get("N")) for k, v in item["Item"].items()}


def _report(env: Environment, key: str) -> dict[str, Any]:
    body = env.clients.s3.get_object(Bucket=env.name("ResultsBucket"), Key=key)["Body"]
    return dict(json.loads(body.read()))


@pytest.fixture(scope="module")
def clean_alerts(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The message ids a clean run publishes on the alerts topic."""
    tmp = tmp_path_factory.mktemp("clean")
    with (tmp / "functions.log").open("w") as log, Environment(handler_output=log, base_environment=NO_LETTERS) as env:
        alerts = env.subscribe_queue("AlertsTopic", "alerts")
        (execution,) = env.drop(SAMPLE)
        env.wait(timeout=120)
        assert env.describe(execution).status == "SUCCEEDED"
        ids = _message_ids(env.drain(alerts))
    assert sum(1 for i in ids if i.startswith("finding/")) > 3, "the sample must alert more than the 3 let through"
    return ids


def _throttle_after(allowed: int) -> tuple[SnsHook, dict[str, int]]:
    calls = {"published": 0, "refused": 0}

    def hook(operation: str, params: dict[str, Any]) -> Any:
        if operation != "Publish":
            return None
        if calls["published"] < allowed:
            calls["published"] += 1
            return None
        calls["refused"] += 1
        return _throttled()

    return SnsHook(hook), calls


def test_an_sns_throttle_loses_no_alert_the_redrop_publishes_the_rest_once(
    env: Environment, clean_alerts: list[str]
) -> None:
    alerts = env.subscribe_queue("AlertsTopic", "alerts")
    # Given SNS throttling every publish after the first 3
    hook, calls = _throttle_after(3)
    # When the batch is dropped
    with hook:
        (first,) = env.drop(SAMPLE)
        env.wait(timeout=180)
    first = env.describe(first)
    got_first = _message_ids(env.drain(alerts))
    # Then Notify was retried and the batch failed with the throttling named, 3 alerts sent,
    # and every other alert is recorded and pending (not lost)
    assert first.status == "FAILED"
    assert calls["refused"] >= 2, "Notify was retried by the state machine"
    assert len(got_first) == 3
    pending = {i["message_id"]["S"] for i in _pending(env)}
    assert _findings(pending) == _findings(clean_alerts) - set(got_first)
    assert len(pending) + len(got_first) == len(clean_alerts)  # the digests too (their ids name the batch)
    batch = _batch(env, first.output["batch_id"] if first.output else _only_batch(env))
    assert batch["status"] == "FAILED" and "TransientError" in batch["report"]

    # When SNS is back and the file is dropped again (a new version: a new execution)
    (second,) = env.drop(SAMPLE)
    env.wait(timeout=180)
    second = env.describe(second)
    got_second = _message_ids(env.drain(alerts))
    # Then the re-drop succeeds and publishes exactly the alerts the first run could not:
    # together every alert of a clean run, each once
    assert second.status == "SUCCEEDED", second.cause
    assert _findings(got_first + got_second) == _findings(clean_alerts)
    assert max(Counter(got_first + got_second).values()) == 1  # none twice
    assert set(got_second) >= pending  # the first batch's digests as well
    assert _pending(env) == []


def test_the_sweeper_publishes_what_a_failed_notify_left_pending(env: Environment, clean_alerts: list[str]) -> None:
    alerts = env.subscribe_queue("AlertsTopic", "alerts")
    hook, _ = _throttle_after(3)
    with hook:
        env.drop(SAMPLE)
        env.wait(timeout=180)
    got_first = _message_ids(env.drain(alerts))
    assert len(got_first) == 3 and _pending(env)
    # When the scheduled sweeper runs with SNS back
    answer = _sweep(env)
    # Then it published every pending alert once, and nothing is pending
    got = _message_ids(env.drain(alerts))
    assert answer["outbox_sent"] == len(got) and answer["outbox_pending"] == 0
    assert _findings(got_first + got) == _findings(clean_alerts)
    assert len(got_first + got) == len(clean_alerts) and max(Counter(got_first + got).values()) == 1
    assert _pending(env) == []
    # and a second run publishes nothing again
    assert _sweep(env)["outbox_sent"] == 0 and env.drain(alerts) == []


def _sweep(env: Environment) -> dict[str, Any]:
    route = env.router.route_for(env.name("SweeperFunction"))
    assert route is not None
    payload, errored = env.router.invoke(route, {"id": "sweeper"})
    answer = json.loads(payload)
    assert not errored, answer
    return dict(answer)


def _only_batch(env: Environment) -> str:
    (item,) = env.scan_table("BatchesTable")
    return str(item["batch_id"])


def test_a_finalize_that_keeps_failing_leaves_the_batch_failed_with_a_report(env: Environment) -> None:
    # Given Finalize failing on every invocation, in both modes (complete and failed)
    env.router.inject_failure(env.name("FinalizeFunction"), error="RuntimeError", times=100)
    # When a batch runs
    (execution,) = env.drop(SAMPLE)
    env.wait(timeout=180)
    execution = env.describe(execution)
    # Then the execution fails, and the batch is not left RUNNING: the state machine marked it
    # FAILED itself, with the report's key, and wrote the report with both errors
    assert execution.status == "FAILED"
    batch = _batch(env, _only_batch(env))
    assert batch["status"] == "FAILED", batch
    report = _report(env, batch["report_key"])
    assert report["status"] == "FAILED" and report["batch_id"] == batch["batch_id"]
    assert report["error"]["Error"] == "RuntimeError" and report["finalize_error"]["Error"] == "RuntimeError"
    assert json.loads(batch["report"]) == report


def test_the_sweeper_fails_batches_running_past_their_timeout_with_a_reason_and_a_report(env: Environment) -> None:
    # Given a batch RUNNING for 7 hours (its execution timed out or was stopped) and one for 5 minutes
    now = datetime.now(UTC)
    ddb = env.clients.dynamodb
    for batch_id, started in (("stuck-batch", now - timedelta(hours=7)), ("young-batch", now - timedelta(minutes=5))):
        ddb.put_item(
            TableName=env.name("BatchesTable"),
            Item={
                "batch_id": {"S": batch_id},
                "execution_id": {"S": f"arn:aws:states:execution:{batch_id}"},
                "status": {"S": "RUNNING"},
                "started_at": {"S": started.isoformat()},
                "source": {"S": json.dumps({"bucket": "b", "key": "incoming/x.csv"})},
            },
        )
    # When the sweeper runs (twice: the second finds nothing)
    answer = _sweep(env)
    again = _sweep(env)
    # Then the stuck batch is FAILED with the reason and a report; the young one is left running
    assert answer["batches_failed"] == ["stuck-batch"] and again["batches_failed"] == []
    stuck, young = _batch(env, "stuck-batch"), _batch(env, "young-batch")
    assert young["status"] == "RUNNING"
    assert stuck["status"] == "FAILED" and stuck["report_key"] == "batches/stuck-batch/report.json"
    report = _report(env, stuck["report_key"])
    assert report["status"] == "FAILED" and report["error"]["error"] == "BatchTimedOut"
    assert "arn:aws:states:execution:stuck-batch" in report["error"]["cause"]
    assert report["source"] == {"bucket": "b", "key": "incoming/x.csv"}


def test_on_aws_the_stranger_alert_reaches_the_alerts_topic_through_the_outbox(tmp_path: Path) -> None:
    from tests.conftest import load_event

    # Given the API function on moto with a limit of 3 strangers, and SNS refusing the first
    # publish of the access alert
    callers = load_event("api/callers.json")
    pharmacy = next(c for c, v in callers.items() if v.get("institutions") == ["P4401001"])
    base = {
        **NO_LETTERS,
        "RXGUARD_API_AUTH": "enforce",
        "RXGUARD_API_CALLERS": json.dumps(callers),
        "RXGUARD_AUDIT_STRANGER_LIMIT": "3",
    }
    refused = {"n": 0}

    def refuse_once(operation: str, params: dict[str, Any]) -> Any:
        if operation == "Publish" and refused["n"] == 0 and "access" in str(params.get("body")):
            refused["n"] += 1
            return _throttled()
        return None

    with (
        (tmp_path / "functions.log").open("w") as log,
        Environment(handler_output=log, base_environment=base, parameters={"ApiCallers": json.dumps(callers)}) as env,
        SnsHook(refuse_once),
    ):
        alerts = env.subscribe_queue("AlertsTopic", "alerts")
        route = env.router.route_for(env.name("ApiFunction"))
        assert route is not None
        # When the pharmacy checks 4 patients it never dispensed to
        for n in range(4):
            event = load_event("api/check.json")
            body = json.loads(event["body"])
            body["psn_no"] = f"STRANGER{n}"
            event["body"] = json.dumps(body)
            event["requestContext"]["identity"]["userArn"] = pharmacy
            payload, errored = env.router.invoke(route, event)
            assert not errored and json.loads(payload)["statusCode"] == 200  # SNS refusing is not the caller's error
        # Then the refused alert waits in the outbox, and the sweeper publishes it once
        assert refused["n"] == 1
        assert env.drain(alerts) == []
        assert [i["message_id"]["S"].split("/")[0] for i in _pending(env)] == ["access"]
        _sweep(env)
        [message] = env.drain(alerts)
        assert message["MessageAttributes"]["message_type"]["StringValue"] == "access"
        body = json.loads(message["Body"])
        assert body["caller"] == pharmacy and body["patients_without_dispensation"] == 3
        assert "STRANGER" not in message["Body"] and _pending(env) == []
