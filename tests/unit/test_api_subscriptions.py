"""Subscriptions (POST/GET/DELETE /v1/subscriptions) through the resolver with the
in-memory gateway; the filter policies on SNS (moto) deliver each subscriber its messages;
email and SMS subscribers get Chinese text."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from rxguard.alerts import AlertSettings, InMemorySink, notify_batch
from rxguard.alerts.messages import readable, sns_publish_arguments
from rxguard.api.resolver import handle
from rxguard.api.service import Services
from rxguard.api.settings import ApiSettings
from rxguard.api.store import InMemoryFindingsStore
from rxguard.api.subscriptions import InMemorySubscriptions
from rxguard.kb import KnowledgeBase
from rxguard.models import Finding, Severity
from rxguard.repository import InMemoryRepository
from rxguard.scope import Scope
from tests.conftest import ROOT, load_event

CALLERS = json.loads((ROOT / "events/api/callers.json").read_text(encoding="utf-8"))
PHARMACY = "arn:aws:iam::123456789012:user/his-P4401001"
AUDITOR = "arn:aws:iam::123456789012:role/bureau-auditor"


def make(kb: KnowledgeBase) -> Services:
    repo = InMemoryRepository()
    return Services(
        kb=kb,
        repo=repo,
        store=InMemoryFindingsStore(repo),
        settings=ApiSettings.model_validate({"auth_mode": "enforce", "callers": CALLERS}),
        subscriptions=InMemorySubscriptions(),
    )


def request(svc: Services, method: str, path: str, body: Any = None, caller: str = AUDITOR) -> tuple[int, Any]:
    event = load_event("api/rules.json")
    event.update(httpMethod=method, path=path, resource=path, queryStringParameters=None)
    event["multiValueQueryStringParameters"] = None
    event["requestContext"] = {
        **event["requestContext"],
        "httpMethod": method,
        "resourcePath": path,
        "identity": {"userArn": caller},
    }
    event["body"] = json.dumps(body, ensure_ascii=False) if body is not None else None
    answer = handle(event, None, svc)
    return answer["statusCode"], json.loads(answer["body"])


def test_a_regulator_subscribes_with_filters_and_national_rule_codes(kb: KnowledgeBase) -> None:
    svc = make(kb)
    body = {
        "protocol": "email",
        "endpoint": "inspector@example.cn",
        "filters": {"region_prefix": "31", "rules": ["CLKY002", "over-quantity"], "severities": ["high", "medium"]},
    }
    status, created = request(svc, "POST", "/v1/subscriptions", body)
    assert status == 200, created
    assert created["filter_policy"] == {
        "region": [{"prefix": "31"}],
        "rule_id": ["early-refill", "over-quantity"],
        "severity": ["high", "medium"],
    }
    assert created["endpoint"] == "i***@example.cn" and created["pending_confirmation"] is True
    _, listed = request(svc, "GET", "/v1/subscriptions")
    assert [s["subscription_id"] for s in listed["items"]] == [created["subscription_id"]]
    status, _ = request(svc, "DELETE", f"/v1/subscriptions/{created['subscription_id']}")
    assert status == 200
    status, error = request(svc, "DELETE", f"/v1/subscriptions/{created['subscription_id']}")
    assert status == 404 and error["error"]["field"] == "subscription_id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"protocol": "email", "endpoint": "not-an-address"}, "endpoint"),
        ({"protocol": "sms", "endpoint": "13800000000"}, "endpoint"),  # E.164 needs +86
        ({"protocol": "sms", "endpoint": "+8613800000000", "filters": {"rules": ["NOPE"]}}, "filters.rules[0]"),
        ({"protocol": "sms", "endpoint": "+8613800000000", "filters": {"region_prefix": "3"}}, "filters.region_prefix"),
    ],
)
def test_bad_subscriptions_are_400_naming_the_field(kb: KnowledgeBase, body: dict[str, Any], field: str) -> None:
    status, error = request(make(kb), "POST", "/v1/subscriptions", body)
    assert status == 400 and error["error"]["field"] == field, error


def test_an_institution_subscribes_to_its_own_messages_only(kb: KnowledgeBase) -> None:
    svc = make(kb)
    sms = {"protocol": "sms", "endpoint": "+8613800000000"}
    status, error = request(svc, "POST", "/v1/subscriptions", sms, caller=PHARMACY)
    assert status == 400 and error["error"]["field"] == "filters.institutions"
    other = {**sms, "filters": {"institutions": ["H6108001"]}}
    assert request(svc, "POST", "/v1/subscriptions", other, caller=PHARMACY)[0] == 403
    own = {**sms, "filters": {"institutions": ["P4401001"], "message_types": ["digest", "letter"]}}
    status, created = request(svc, "POST", "/v1/subscriptions", own, caller=PHARMACY)
    assert status == 200 and created["endpoint"] == "+86138****0000"
    request(svc, "POST", "/v1/subscriptions", {"protocol": "email", "endpoint": "a@b.cn"})  # the bureau's
    _, mine = request(svc, "GET", "/v1/subscriptions", caller=PHARMACY)
    assert [s["subscription_id"] for s in mine["items"]] == [created["subscription_id"]]
    _, everything = request(svc, "GET", "/v1/subscriptions")
    assert len(everything["items"]) == 2


def finding(rule: str, severity: Severity, institution: str, admdvs: str) -> Finding:
    return Finding(
        finding_id=Finding.make_id(rule, Scope.patient("SYN1"), [f"{institution}/1"]),
        rule_id=rule,
        rule_version=1,
        severity=severity,
        subject_type="patient",
        psn_no="310101199001010011",
        fixmedins_code=institution,
        admdvs=admdvs,
        occurred_at=datetime(2026, 3, 5, 10, 0),
        evidence=[f"{institution}/1"],
        explanation_zh="310101199001010011前次供药42天，7天后再次购药，前次药量仅用去17%。",
        explanation_en="early",
    )


def test_email_and_sms_get_chinese_text_and_queues_the_json(kb: KnowledgeBase) -> None:
    sink = InMemorySink()
    f = finding("early-refill", Severity.HIGH, "P4401001", "310104")
    notify_batch([f], batch_id="b", kb=kb, sink=sink, settings=AlertSettings(letters_enabled=False))
    for message in [*sink.alerts]:
        subject, email, sms = readable(message)
        assert subject.startswith("【医保智能监管】") and "\n" not in subject and len(subject) < 100
        assert not any(word in subject for word in ("rxguard", "finding", "digest"))
        assert "提前购药" in email and "310101199001010011" not in email + sms + subject
        assert len(sms) <= 70
        arguments = sns_publish_arguments(message)
        structured = json.loads(arguments["Message"])
        assert arguments["MessageStructure"] == "json" and structured["default"] == message.body_json()
        assert structured["email"] == email and structured["sms"] == sms
    digest = next(m for m in sink.alerts if m.message_type == "digest")
    assert "疑点汇总" in readable(digest)[0] and "高风险1项" in readable(digest)[0]


def test_filter_policies_on_sns_deliver_each_subscriber_its_messages(kb: KnowledgeBase) -> None:
    import boto3
    from moto import mock_aws

    from rxguard.alerts.aws import AwsNotificationSink
    from rxguard.api.store_dynamo import AwsSubscriptions

    with mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="results")
        alerts = sns.create_topic(Name="alerts")["TopicArn"]
        letters = sns.create_topic(Name="letters")["TopicArn"]
        svc = make(kb)
        svc.subscriptions = AwsSubscriptions(sns, {"alerts": alerts, "letters": letters})
        queues = {}
        for name, filters in (
            ("shanghai-high", {"region_prefix": "31", "severities": ["high"]}),
            ("pharmacy-digests", {"institutions": ["P4401001"], "message_types": ["digest"]}),
            ("trace", {"rules": ["CLKY008"]}),  # the platform's code of trace-code-reuse
        ):
            url = sqs.create_queue(QueueName=name)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            status, created = request(
                svc, "POST", "/v1/subscriptions", {"protocol": "sqs", "endpoint": arn, "filters": filters}
            )
            assert status == 200, created
            queues[name] = url
        sink = AwsNotificationSink(sns, s3, alerts, letters, "results")
        findings = [
            finding("early-refill", Severity.HIGH, "P4401001", "310104"),
            finding("trace-code-reuse", Severity.HIGH, "H1301010001", "130100"),
            finding("over-quantity", Severity.MEDIUM, "H3101040009", "310104"),
        ]
        notify_batch(findings, batch_id="b", kb=kb, sink=sink, settings=AlertSettings(letters_enabled=False))

        def received(name: str) -> list[tuple[str, str]]:
            out = []
            for m in sqs.receive_message(QueueUrl=queues[name], MaxNumberOfMessages=10).get("Messages", []):
                body = json.loads(m["Body"])
                out.append((body["message_type"], body.get("finding", {}).get("rule_id") or body["institution_id"]))
            return sorted(out)

        assert received("shanghai-high") == [("digest", "P4401001"), ("finding", "early-refill")]
        assert received("pharmacy-digests") == [("digest", "P4401001")]
        assert received("trace") == [("digest", "H1301010001"), ("finding", "trace-code-reuse")]
        _, listed = request(svc, "GET", "/v1/subscriptions")
        assert len(listed["items"]) == 3 and all(s["filter_policy"] for s in listed["items"])
        assert request(svc, "DELETE", f"/v1/subscriptions/{listed['items'][0]['subscription_id']}")[0] == 200
        assert len(request(svc, "GET", "/v1/subscriptions")[1]["items"]) == 2
