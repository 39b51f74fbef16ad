"""template.yaml protects the data it declares (docs/security.md, claims T1-T7).

The template is read with the offline loader (short tags become {"Fn::...": ...}); every
assertion walks all resources of a type, so a table, bucket, topic or queue added later
without the data key or TLS-only policy fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from rxguard_tools.offline.cfn import load_template
from tests.conftest import ROOT

TEMPLATE = load_template(ROOT / "template.yaml")
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
KEY = "DataKey"


def of_type(*types: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in RESOURCES.items() if v["Type"] in types}


def refers_to_key(value: Any) -> bool:
    """Ref DataKey or GetAtt DataKey.Arn."""
    return value in ({"Ref": KEY}, {"Fn::GetAtt": [KEY, "Arn"]}, {"Fn::GetAtt": f"{KEY}.Arn"})


def props(resource: dict[str, Any]) -> dict[str, Any]:
    return resource.get("Properties") or {}


def test_the_data_key_is_customer_managed_and_rotated() -> None:
    # Given the template's KMS keys
    keys = of_type("AWS::KMS::Key")
    # Then the data key exists, rotates yearly, and its policy names no wildcard principal
    assert KEY in keys
    key = props(keys[KEY])
    assert key["EnableKeyRotation"] is True
    for statement in key["KeyPolicy"]["Statement"]:
        assert statement["Principal"] != "*" and statement["Principal"] != {"AWS": "*"}, statement["Sid"]


def test_every_table_is_encrypted_with_the_data_key() -> None:
    tables = of_type("AWS::DynamoDB::Table")
    assert tables
    for name, table in tables.items():
        sse = props(table).get("SSESpecification") or {}
        assert sse.get("SSEEnabled") is True and sse.get("SSEType") == "KMS", name
        assert refers_to_key(sse.get("KMSMasterKeyId")), name


def test_every_bucket_uses_the_data_key_blocks_public_access_and_denies_plain_http() -> None:
    buckets = of_type("AWS::S3::Bucket")
    policies = {
        props(p)["Bucket"]["Ref"]: props(p)["PolicyDocument"] for p in of_type("AWS::S3::BucketPolicy").values()
    }
    assert buckets
    for name, bucket in buckets.items():
        p = props(bucket)
        rules = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert all(r["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms" for r in rules), name
        assert all(refers_to_key(r["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]) for r in rules), name
        assert all(r.get("BucketKeyEnabled") is True for r in rules), name
        block = p["PublicAccessBlockConfiguration"]
        assert all(
            block[k] is True
            for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
        ), name
        deny_http = [
            s
            for s in policies[name]["Statement"]
            if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        ]
        assert deny_http and deny_http[0]["Action"] == "s3:*", name
        resources = deny_http[0]["Resource"]
        assert len(resources) == 2, "the bucket and its objects"


def test_every_topic_and_queue_and_log_group_uses_the_data_key() -> None:
    for name, topic in of_type("AWS::SNS::Topic").items():
        assert refers_to_key(props(topic).get("KmsMasterKeyId")), name
    for name, queue in of_type("AWS::SQS::Queue").items():
        assert refers_to_key(props(queue).get("KmsMasterKeyId")), name
    for name, group in of_type("AWS::Logs::LogGroup").items():
        assert refers_to_key(props(group).get("KmsKeyId")), name
        assert props(group).get("RetentionInDays"), name
    assert refers_to_key(TEMPLATE["Globals"]["Function"]["KmsKeyArn"])
    # and the functions log to the declared group (not Lambda's default group, kept forever)
    assert TEMPLATE["Globals"]["Function"]["LoggingConfig"]["LogGroup"] == {"Ref": "FunctionLogGroup"}


def test_retention_is_enforced_by_ttl_and_lifecycle() -> None:
    # Given the documented retention (docs/security.md "What is stored where, and for how long")
    tables = of_type("AWS::DynamoDB::Table")
    # Then history tables expire items by TTL
    for name in ("PurchasesTable", "TraceCodesTable", "AggregatesTable", "IdempotencyTable", "FindingsTable"):
        assert props(tables[name])["TimeToLiveSpecification"]["Enabled"] is True, name
    # and buckets expire by lifecycle rule
    results = {r["Id"]: r for r in props(RESOURCES["ResultsBucket"])["LifecycleConfiguration"]["Rules"]}
    assert (results["ExpireChunkFiles"]["Prefix"], results["ExpireChunkFiles"]["ExpirationInDays"]) == ("chunks/", 30)
    assert (results["ExpireLetters"]["Prefix"], results["ExpireLetters"]["ExpirationInDays"]) == ("letters/", 1826)
    assert results["ExpireBatchReports"]["ExpirationInDays"] == 1826
    ingest = {r["Id"]: r for r in props(RESOURCES["IngestBucket"])["LifecycleConfiguration"]["Rules"]}
    assert ingest["ExpireClaimBatches"]["ExpirationInDays"] == 90
    assert all(r["Status"] == "Enabled" for r in [*results.values(), *ingest.values()])


# Wildcards AWS requires: X-Ray and CloudWatch metrics have no resource-level permissions;
# the log-delivery actions of Step Functions logging are account-level.
WILDCARD_ALLOWED = {
    "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
    "cloudwatch:PutMetricData", "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}  # fmt: skip


def _inline_statements() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, resource in RESOURCES.items():
        p = props(resource)
        for policy in p.get("Policies") or []:
            if isinstance(policy, dict) and "Statement" in policy:
                out += [(name, s) for s in policy["Statement"]]
            if isinstance(policy, dict) and "PolicyDocument" in policy:
                out += [(name, s) for s in policy["PolicyDocument"]["Statement"]]
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            out += [(name, s) for s in p["PolicyDocument"]["Statement"]]
    return out


def test_no_iam_statement_allows_every_action_or_every_resource_except_where_aws_requires() -> None:
    statements = _inline_statements()
    assert statements
    for owner, statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert "*" not in actions and not any(a.endswith(":*") for a in actions), (owner, actions)
        if statement.get("Resource") == "*":
            assert set(actions) <= WILDCARD_ALLOWED, (owner, actions)


def test_functions_use_scoped_policy_templates_only() -> None:
    # Given every function's policies
    for name, fn in of_type("AWS::Serverless::Function").items():
        for policy in props(fn).get("Policies") or []:
            # Then each is a SAM policy template bound to one named resource, the data-key policy,
            # or an inline statement (checked above); never a managed *FullAccess policy or a bare name
            if isinstance(policy, str):
                pytest.fail(f"{name}: AWS managed policy {policy}")
            if "Ref" in policy:
                assert policy == {"Ref": "DataKeyUsePolicy"}, name
                continue
            ((template, args),) = policy.items()
            if template == "Statement":
                continue
            assert isinstance(args, dict) and args, (name, template)
            assert all(isinstance(v, dict) for v in args.values()), (name, template, "bound to a resource")
        assert {"Ref": "DataKeyUsePolicy"} in props(fn)["Policies"], name


def test_the_api_requires_iam_and_never_logs_bodies() -> None:
    api = props(RESOURCES["CheckApi"])
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    assert all(m.get("DataTraceEnabled") is False for m in api["MethodSettings"])
    machine = props(RESOURCES["ClaimBatchStateMachine"])
    assert machine["Logging"]["IncludeExecutionData"] is False


# cfn-lint and checkov themselves run in .ci/run (each takes seconds to start; not repeated here).


def test_every_checkov_skip_in_the_template_has_a_comment() -> None:
    for name, resource in RESOURCES.items():
        for skip in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip", []):
            assert skip["id"].startswith("CKV_") and len(skip.get("comment", "")) > 20, (name, skip)


def test_only_notify_and_the_api_may_delete_in_the_results_bucket() -> None:
    # Given the S3 policy templates that allow DeleteObject / PutLifecycleConfiguration
    broad = {"S3CrudPolicy", "S3WritePolicy", "S3FullAccessPolicy"}
    # When the functions' policies are read
    deleters = {
        name
        for name, fn in of_type("AWS::Serverless::Function").items()
        for policy in props(fn).get("Policies") or []
        if isinstance(policy, dict) and broad & policy.keys()
    }
    # Then only the functions that remove their once-only markers hold them (the alerts sink
    # deletes a marker when a publish fails); Prepare, Screen and Finalize only read and put
    assert deleters <= {"NotifyFunction", "ApiFunction"}


def test_stored_findings_carry_their_expiry_five_years_after_the_line() -> None:
    # Given the findings table as the template declares it, on moto
    from datetime import UTC, datetime, timedelta

    import boto3
    from moto import mock_aws

    from rxguard.dynamo import DynamoRepository, TableNames
    from rxguard.models import Finding, Severity

    table = props(RESOURCES["FindingsTable"])
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    at = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    finding = Finding(
        finding_id=Finding.make_id("over-quantity", "patient:P1", ["H1/1"]),
        rule_id="over-quantity",
        rule_version=1,
        severity=Severity.HIGH,
        subject_type="patient",
        psn_no="P1",
        fixmedins_code="H1",
        occurred_at=at,
        evidence=["H1/1"],
        explanation_zh="说明",
        explanation_en="explanation",
    )
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(
            TableName="findings",
            AttributeDefinitions=table["AttributeDefinitions"],
            KeySchema=table["KeySchema"],
            GlobalSecondaryIndexes=[
                {k: v for k, v in g.items() if k in ("IndexName", "KeySchema", "Projection")}
                for g in table["GlobalSecondaryIndexes"]
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        purchases = TEMPLATE["Resources"]["PurchasesTable"]["Properties"]  # a patient's head keeps a copy
        ddb.create_table(
            TableName="p",
            AttributeDefinitions=purchases["AttributeDefinitions"],
            KeySchema=purchases["KeySchema"],
            BillingMode="PAY_PER_REQUEST",
        )
        # When the workflow's repository stores the finding
        DynamoRepository(TableNames(purchases="p", trace_codes="t", findings="findings"), ddb).replace_findings(
            "patient:P1", [finding]
        )
        (item,) = ddb.scan(TableName="findings")["Items"]
    # Then the item expires (TTL attribute) 1826 days after the line that triggered it
    assert int(item["expires_at"]["N"]) == int((at + timedelta(days=1826)).timestamp())


def test_the_pseudonym_key_comes_from_secrets_manager_never_from_the_template() -> None:
    # Given the functions' environment
    variable = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["RXGUARD_PSEUDONYM_KEY"]
    # Then the key is a deploy-time dynamic reference to the named secret (or absent offline),
    # never a literal value in the template
    condition, value, otherwise = variable["Fn::If"]
    assert condition == "HasPseudonymKeySecret" and otherwise == {"Ref": "AWS::NoValue"}
    assert value == {"Fn::Sub": "{{resolve:secretsmanager:${PseudonymKeySecret}:SecretString}}"}
    assert TEMPLATE["Parameters"]["PseudonymKeySecret"]["Default"] == ""
