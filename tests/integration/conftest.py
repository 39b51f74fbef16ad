"""moto fixtures for the workflow's integration tests. Tables and buckets are created from
template.yaml's own definitions (key schemas, indexes), so the template and the tests
cannot drift (docs/style.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from tests.conftest import FAKE_AWS
from tests.factories import create_table, make_finding, make_line

__all__ = ["Stack", "make_finding", "make_line", "tables_of"]  # the makers, for the integration tests

ROOT = Path(__file__).resolve().parents[2]


class _TagTolerantLoader(yaml.SafeLoader):
    """Reads CloudFormation short tags (!Ref, !GetAtt, ...) as plain values."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_TagTolerantLoader.add_multi_constructor("!", _any_tag)


def template_resources() -> dict[str, Any]:
    text = (ROOT / "template.yaml").read_text(encoding="utf-8")
    return dict(yaml.load(text, Loader=_TagTolerantLoader)["Resources"])


TABLES = {
    "PurchasesTable": "RXGUARD_PURCHASES_TABLE",
    "TraceCodesTable": "RXGUARD_TRACE_CODES_TABLE",
    "FindingsTable": "RXGUARD_FINDINGS_TABLE",
    "BatchesTable": "RXGUARD_BATCHES_TABLE",
    "AggregatesTable": "RXGUARD_AGGREGATES_TABLE",
    "IdempotencyTable": "RXGUARD_IDEMPOTENCY_TABLE",
}


@dataclass
class Stack:
    env: dict[str, str]
    ddb: Any
    s3: Any
    sns: Any
    sqs: Any
    ingest_bucket: str
    results_bucket: str
    alerts_queue_url: str
    letters_queue_url: str

    def table(self, logical_id: str) -> str:
        return self.env[TABLES[logical_id]]


def _subscribe(sns: Any, sqs: Any, topic_arn: str, name: str) -> str:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return str(url)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """moto with the template's tables, the two buckets and the two topics (each with a queue)."""
    powertools = {"POWERTOOLS_METRICS_NAMESPACE": "Rxguard", "POWERTOOLS_SERVICE_NAME": "rxguard"}
    for key, value in {**FAKE_AWS, "AWS_REGION": "us-east-1", **powertools}.items():
        monkeypatch.setenv(key, value)
    from rxguard import dynamo

    dynamo.reset_clients()
    with mock_aws():
        ddb = boto3.client("dynamodb")
        s3 = boto3.client("s3")
        sns = boto3.client("sns")
        sqs = boto3.client("sqs")
        resources = template_resources()
        env: dict[str, str] = {}
        for logical_id, var in TABLES.items():
            name = f"rxguard-{logical_id}"
            create_table(ddb, name, resources[logical_id]["Properties"])
            env[var] = name
        s3.create_bucket(Bucket="rxguard-ingest")
        s3.create_bucket(Bucket="rxguard-results")
        alerts = sns.create_topic(Name="rxguard-alerts")["TopicArn"]
        letters = sns.create_topic(Name="rxguard-letters")["TopicArn"]
        env.update(
            RXGUARD_RESULTS_BUCKET="rxguard-results",
            RXGUARD_ALERTS_TOPIC_ARN=alerts,
            RXGUARD_LETTERS_TOPIC_ARN=letters,
            RXGUARD_CHUNK_SIZE="50",
        )
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield Stack(
            env=env,
            ddb=ddb,
            s3=s3,
            sns=sns,
            sqs=sqs,
            ingest_bucket="rxguard-ingest",
            results_bucket="rxguard-results",
            alerts_queue_url=_subscribe(sns, sqs, alerts, "alerts-tap"),
            letters_queue_url=_subscribe(sns, sqs, letters, "letters-tap"),
        )
    dynamo.reset_clients()


def tables_of(stack: Stack) -> Any:
    from rxguard.dynamo import TableNames

    return TableNames(
        purchases=stack.table("PurchasesTable"),
        trace_codes=stack.table("TraceCodesTable"),
        findings=stack.table("FindingsTable"),
        batches=stack.table("BatchesTable"),
        aggregates=stack.table("AggregatesTable"),
    )


os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
