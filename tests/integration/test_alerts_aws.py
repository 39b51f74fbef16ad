"""Alerts on moto: the template's example filter policies route each message to the right
subscriber; a retried batch publishes nothing twice; letters land in the results bucket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from rxguard.alerts import AlertSettings, notify_batch
from rxguard.alerts.aws import AwsNotificationSink
from rxguard.letters import issue_letters
from rxguard.models import Finding, Severity
from rxguard_tools.offline.cfn import Resolver, load_template
from tests.conftest import FAKE_AWS
from tests.factories import make_finding

ROOT = Path(__file__).resolve().parents[2]
# The example subscriptions of template.yaml: logical id -> (endpoint parameter, topic).
EXAMPLES = {
    "InspectorsAlertSubscription": "InspectorsAlertEndpoint",
    "InstitutionAlertSubscription": "InstitutionAlertEndpoint",
    "InstitutionLettersSubscription": "InstitutionLettersEndpoint",
    "RegionAlertSubscription": "RegionAlertEndpoint",
    "RuleAlertSubscription": "RuleAlertEndpoint",
}
BUCKET = "rxguard-results"


@dataclass
class Env:
    s3: Any
    sqs: Any
    sink: AwsNotificationSink
    queues: dict[str, str]  # subscription logical id -> queue url

    def drain(self, name: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.queues[name], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not got:
                return out
            for m in got:
                out.append(m)
                self.sqs.delete_message(QueueUrl=self.queues[name], ReceiptHandle=m["ReceiptHandle"])


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    template = load_template(ROOT / "template.yaml")
    with mock_aws():
        s3, sns, sqs = (boto3.client(n, region_name="us-east-1") for n in ("s3", "sns", "sqs"))
        s3.create_bucket(Bucket=BUCKET)
        topics = {name: sns.create_topic(Name=name)["TopicArn"] for name in ("AlertsTopic", "LettersTopic")}
        queues: dict[str, str] = {}
        arns: dict[str, str] = {}
        for logical_id in EXAMPLES:
            url = sqs.create_queue(QueueName=logical_id)["QueueUrl"]
            queues[logical_id] = url
            arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
        # The template's own subscriptions, with their endpoint parameters set to our queues.
        overrides = {param: arns[logical_id] for logical_id, param in EXAMPLES.items()}
        overrides["AlertSubscriptionProtocol"] = "sqs"
        resolver = Resolver.for_template(template, overrides)
        for logical_id in EXAMPLES:
            resource = template["Resources"][logical_id]
            assert resolver.condition(resource["Condition"])  # created because the endpoint is set
            props = resolver.resolve({k: v for k, v in resource["Properties"].items() if k != "TopicArn"})
            topic = resource["Properties"]["TopicArn"]["Ref"]
            sns.subscribe(
                TopicArn=topics[topic],
                Protocol=props["Protocol"],
                Endpoint=props["Endpoint"],
                Attributes={
                    "FilterPolicy": json.dumps(props["FilterPolicy"]),
                    "FilterPolicyScope": props["FilterPolicyScope"],
                    "RawMessageDelivery": "true",
                },
            )
        sink = AwsNotificationSink(sns, s3, topics["AlertsTopic"], topics["LettersTopic"], BUCKET)
        yield Env(s3=s3, sqs=sqs, sink=sink, queues=queues)


def make(rule_id: str, severity: str, institution: str, admdvs: str, psn: str) -> Finding:
    return make_finding(
        rule_id,
        psn,
        (f"{institution}/{rule_id}-1",),
        severity=Severity(severity),
        fixmedins_code=institution,
        admdvs=admdvs,
        occurred_at=datetime(2026, 3, 2, 10),
        figures={"days_supply": 90.0},
        explanation_zh="疑点",
        explanation_en="finding",
    )


# Findings shaped on the template's default filter values.
DEFAULTS = {k: str(v.get("Default")) for k, v in load_template(ROOT / "template.yaml")["Parameters"].items()}
HOSPITAL = DEFAULTS["InstitutionAlertCode"]
PREFIX = DEFAULTS["RegionAlertPrefix"]
RULE = DEFAULTS["RuleAlertRuleId"]
REGION = PREFIX.ljust(6, "0")
DISTRICT_REGION = (PREFIX + "0104")[:6]  # another code under the prefix (a district)
assert DISTRICT_REGION.startswith(PREFIX) and not "130000".startswith(PREFIX) and RULE != "over-quantity"
TRACE = make(RULE, "high", HOSPITAL, REGION, "PSN0001")  # the rule of the rule subscription, high
OVER = make("over-quantity", "medium", HOSPITAL, REGION, "PSN0002")  # same hospital, medium
HEBEI = make("cumulative-oversupply", "high", "P130101005", "130000", "PSN0003")  # other region, high
DISTRICT = make("frequent-visits", "low", "H310104009", DISTRICT_REGION, "PSN0004")  # same region, low
FINDINGS = [TRACE, OVER, HEBEI, DISTRICT]


def kinds(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(message_type, finding id or institution) of each delivered message, sorted."""
    out = []
    for m in messages:
        body = json.loads(m["Body"])
        kind = body["message_type"]
        who = body["finding"]["finding_id"] if kind == "finding" else body.get("institution_id") or ""
        out.append((kind, who))
    return sorted(out)


def test_filter_policies_deliver_each_subscriber_its_messages_once(env: Env, kb) -> None:  # type: ignore[no-untyped-def]
    # Given the template's example subscriptions on moto and a batch of four findings
    settings = AlertSettings()

    # When the batch is notified
    notify_batch(
        FINDINGS,
        batch_id="b1",
        kb=kb,
        sink=env.sink,
        settings=settings,
        issued_on=date(2026, 3, 20),
        letters=issue_letters,
    )

    # Then inspectors get every high finding, of every region, and nothing else
    inspectors = env.drain("InspectorsAlertSubscription")
    assert kinds(inspectors) == sorted([("finding", TRACE.finding_id), ("finding", HEBEI.finding_id)])
    attributes = {m["MessageAttributes"]["region"]["StringValue"]: m["MessageAttributes"] for m in inspectors}
    assert attributes["130000"]["institution_id"]["StringValue"] == "P130101005"
    assert attributes["130000"]["rule_id"]["StringValue"] == "cumulative-oversupply"
    # And the institution gets its high alert and its digest, and the announcement of its letter
    assert kinds(env.drain("InstitutionAlertSubscription")) == sorted(
        [("finding", TRACE.finding_id), ("digest", HOSPITAL)]
    )
    letters = env.drain("InstitutionLettersSubscription")
    assert [json.loads(m["Body"])["letter_id"] for m in letters] == [f"institution-{HOSPITAL}-2026-03"]
    # And the region (prefix 31: Shanghai) gets its high alert and its two institutions' digests
    assert kinds(env.drain("RegionAlertSubscription")) == sorted(
        [("finding", TRACE.finding_id), ("digest", HOSPITAL), ("digest", "H310104009")]
    )
    # And the trace-code-reuse subscriber gets that alert and the digest that counts it
    assert kinds(env.drain("RuleAlertSubscription")) == sorted([("finding", TRACE.finding_id), ("digest", HOSPITAL)])


def test_a_retried_batch_sends_no_duplicates_and_rewrites_the_same_letters(env: Env, kb) -> None:  # type: ignore[no-untyped-def]
    # Given a batch notified once (every subscriber drained)
    first = notify_batch(
        FINDINGS, batch_id="b1", kb=kb, sink=env.sink, issued_on=date(2026, 3, 20), letters=issue_letters
    )
    for name in EXAMPLES:
        env.drain(name)
    keys = sorted(o["Key"] for o in env.s3.list_objects_v2(Bucket=BUCKET, Prefix="letters/")["Contents"])
    index = json.loads(env.s3.get_object(Bucket=BUCKET, Key="letters/b1/index.json")["Body"].read())

    # When the batch is retried (Step Functions retry or a re-run)
    second = notify_batch(
        FINDINGS, batch_id="b1", kb=kb, sink=env.sink, issued_on=date(2026, 3, 20), letters=issue_letters
    )

    # Then no subscriber receives anything again
    assert {name: env.drain(name) for name in EXAMPLES} == {name: [] for name in EXAMPLES}
    assert second.alerts_published == 0 and second.digests_published == 0
    assert second.alerts_duplicate == first.alerts_published
    # And the letters are the same objects, not rendered again: one PDF and one HTML per
    # addressee and period (letters/<period>/), and the index lists each with its findings
    again = sorted(o["Key"] for o in env.s3.list_objects_v2(Bucket=BUCKET, Prefix="letters/")["Contents"])
    assert again == keys
    assert not any(ref.rendered or ref.announced for ref in second.letters)
    assert len(keys) == 2 * len(first.letters) + 1  # + index.json
    assert sorted(e["letter_id"] for e in index["letters"]) == sorted(r.letter_id for r in first.letters)
    assert sorted(
        i for e in index["letters"] if e["addressee_type"] == "institution" for i in e["finding_ids"]
    ) == sorted(f.finding_id for f in FINDINGS)
    for ref in first.letters:
        head = env.s3.head_object(Bucket=BUCKET, Key=ref.locations["pdf"].removeprefix(f"s3://{BUCKET}/"))
        assert head["ContentType"] == "application/pdf"


def test_a_failed_publish_is_published_by_the_retry(env: Env, kb, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # Given SNS failing on the first publish
    real = env.sink.sns.publish
    calls = {"n": 0}

    def flaky(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("SNS throttled")
        return real(**kwargs)

    monkeypatch.setattr(env.sink.sns, "publish", flaky)
    settings = AlertSettings(letters_enabled=False)

    # When the batch fails, then is retried
    with pytest.raises(RuntimeError):
        notify_batch([TRACE], batch_id="b1", kb=kb, sink=env.sink, settings=settings)
    notify_batch([TRACE], batch_id="b1", kb=kb, sink=env.sink, settings=settings)

    # Then the alert that failed was delivered by the retry, exactly once
    assert kinds(env.drain("InspectorsAlertSubscription")) == [("finding", TRACE.finding_id)]
