"""The offline machinery on a throwaway stack (tests/e2e/fixtures): template loading,
resource creation from the template, Lambda routing (errors -> Retry/Catch), Map nulls,
EventBridge routing with derived execution names, and the DynamoDB Query patch."""

from __future__ import annotations

import json
import random
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from rxguard_tools.offline import Environment, load_template
from rxguard_tools.offline.cfn import Resolver, TemplateError
from rxguard_tools.offline.patches import narrow_hash_key_query

FIXTURES = Path(__file__).parent / "fixtures"


def test_short_tags_load_in_long_form_and_resolve_against_defaults_and_overrides():
    # Given the fixture template with !Ref, !Sub, !GetAtt, !If, !Equals and parameters
    template = load_template(FIXTURES / "template.yaml")
    # When it is resolved with one parameter overridden
    resolver = Resolver.for_template(template, {"Greeting": "hi"}, stack_name="s")
    # Then short tags are long-form and intrinsics evaluate against parameters and pseudo parameters
    assert template["Resources"]["OutBucket"]["Properties"]["BucketName"] == {
        "Fn::Sub": "${AWS::StackName}-out-${AWS::AccountId}"
    }
    assert resolver.resolve(template["Resources"]["OutBucket"]["Properties"]["BucketName"]) == "s-out-123456789012"
    assert resolver.ref("Greeting") == "hi" and resolver.ref("Prefix") == "drop/"
    assert resolver.condition("AlwaysTrue") is False  # overridden greeting
    assert resolver.resolve({"Fn::Join": ["-", ["a", {"Ref": "AWS::Region"}]]}) == "a-us-east-1"
    assert resolver.resolve({"Fn::Select": [1, {"Fn::Split": [",", "x,y,z"]}]}) == "y"
    assert resolver.resolve({"k": {"Ref": "AWS::NoValue"}, "j": 1}) == {"j": 1}
    with pytest.raises(TemplateError, match="Nope"):
        resolver.resolve({"Ref": "Nope"})


def test_not_a_template_is_a_clear_error(tmp_path):
    # Given a YAML file without Resources
    path = tmp_path / "t.yaml"
    path.write_text("a: 1\n")
    # When / Then loading names the file
    with pytest.raises(TemplateError, match=r"t\.yaml.*Resources"):
        load_template(path)


@pytest.fixture
def env():
    with Environment(root=FIXTURES) as environment:
        yield environment


def test_resources_are_created_from_the_template(env):
    # Given the fixture stack is up
    ddb = env.clients.dynamodb
    # Then the table has the template's keys, GSI and TTL, the conditional queue is absent,
    # the alarm is skipped with a note and functions got Globals + own environment
    table = ddb.describe_table(TableName=env.name("WorkTable"))["Table"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["by_kind"]
    ttl = ddb.describe_time_to_live(TableName=env.name("WorkTable"))["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"
    assert "NeverCreated" not in env.created and "SomeAlarm" in env.skipped
    assert env.name("OutBucket") == "rxguard-out-123456789012"
    work = env.clients.awslambda.get_function_configuration(FunctionName=env.name("WorkFunction"))
    assert work["Environment"]["Variables"]["GREETING"] == "hello-work"
    assert work["Environment"]["Variables"]["TABLE"] == env.name("WorkTable")
    assert env.rule_prefixes == {env.name("InBucket"): ["drop/"]}
    subs = env.clients.sns.list_subscriptions_by_topic(TopicArn=env.arn("NewsTopic"))["Subscriptions"]
    assert [s["Endpoint"] for s in subs] == [env.identity("NewsQueue").attrs["Arn"]]


def test_dropped_object_runs_the_state_machine_with_real_handlers_and_map_nulls(env):
    # Given an unfiltered local subscription
    everything = env.subscribe_queue("NewsTopic", "all")
    # When a file with one always-failing item is dropped
    (execution,) = env.drop(body=b"a\nb\nfail\nc\n", key="x.txt")
    env.wait()
    # Then the handlers ran in-process with the template's environment (import time too),
    # the failed Map item became null, and the report reached S3, SNS and the filtered queue
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.key == "drop/x.txt"
    assert execution.output == {"key": "drop/x.txt", "items": 4, "missing": 1}
    items = env.scan_table("WorkTable")
    assert sorted(i["text"] for i in items) == ["a", "b", "c"]
    assert {i["greeting"] for i in items} == {"hello-work"}
    report = env.clients.s3.get_object(Bucket=env.name("OutBucket"), Key="report.json")["Body"].read()
    assert json.loads(report)["missing"] == 1
    assert len(env.drain(everything)) == 1
    filtered = env.clients.sqs.receive_message(QueueUrl=env.name("NewsQueue"))["Messages"]
    assert json.loads(filtered[0]["Body"])["items"] == 4  # severity=high passed the template's filter
    work = env.router.route_for("WorkFunction")
    assert work is not None and (work.invocations, work.errors) == (4, 1)


def test_the_same_object_starts_at_most_one_execution(env):
    # Given a dropped file that ran
    first = env.drop(body=b"a\n", key="same.txt")
    env.wait()
    # When the very same object is put again (same key, same ETag)
    second = env.drop(body=b"a\n", key="same.txt")
    # Then no second execution starts; a different object does start one
    assert [e.started_new for e in first + second] == [True, False]
    assert first[0].arn == second[0].arn
    (other,) = env.drop(body=b"b\n", key="same.txt")
    assert other.started_new and other.arn != first[0].arn
    env.wait()
    arn = env.arn("Machine")
    assert len(env.clients.stepfunctions.list_executions(stateMachineArn=arn)["executions"]) == 2


def test_handler_errors_are_lambda_errors_that_retry_and_catch_see(env):
    # Given a one-shot TransientError injected in Split for one file (the ASL retries TransientError)
    env.router.inject_failure(
        "SplitFunction", error="TransientError", times=1, when=lambda e: e["detail"]["object"]["key"] == "drop/ok.txt"
    )
    # When a file is dropped, and then an empty file whose handler raises ValueError
    (ok,) = env.drop(body=b"a\n", key="ok.txt")
    (bad,) = env.drop(body=b"\n", key="empty.txt")
    env.wait()
    # Then the first run shows the failed attempt and the retry in its history and succeeds,
    # the second is caught with the handler's own error type and message
    assert ok.status == "SUCCEEDED"
    kinds = [(e["type"], e.get("taskFailedEventDetails", {}).get("error")) for e in env.history(ok)]
    assert ("TaskFailed", "TransientError") in kinds
    assert [k for k, _ in kinds].count("TaskScheduled") == 2  # Split attempted twice (Report is a direct Lambda task)
    assert bad.status == "FAILED" and bad.error == "SplitFailed"
    failed = [e for e in env.history(bad) if e["type"] == "TaskFailed"]
    assert failed[0]["taskFailedEventDetails"]["error"] == "ValueError"
    assert "empty file" in json.loads(failed[0]["taskFailedEventDetails"]["cause"])["errorMessage"]


def _random_table(ddb, rng: random.Random) -> str:
    ddb.create_table(
        TableName="t",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
            {"AttributeName": "r", "AttributeType": "N"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}, {"AttributeName": "r", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for n in range(300):
        item = {"pk": {"S": f"p{rng.randrange(12)}"}, "sk": {"S": f"s{n:04d}"}, "v": {"N": str(rng.randrange(50))}}
        if rng.random() < 0.8:  # some items are not in the index
            item["g"] = {"S": f"g{rng.randrange(5)}"}
            item["r"] = {"N": str(rng.randrange(100))}
        ddb.put_item(TableName="t", Item=item)
    return "t"


def _queries(rng: random.Random) -> list[dict]:
    out = []
    for _ in range(40):
        p = f"p{rng.randrange(14)}"  # some partitions do not exist
        q: dict = {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": p}}}
        if rng.random() < 0.4:
            q["KeyConditionExpression"] += " AND sk > :s"
            q["ExpressionAttributeValues"][":s"] = {"S": f"s{rng.randrange(300):04d}"}
        if rng.random() < 0.3:
            q = {
                "IndexName": "by_g",
                "KeyConditionExpression": "g = :g AND r < :r",
                "ExpressionAttributeValues": {
                    ":g": {"S": f"g{rng.randrange(6)}"},
                    ":r": {"N": str(rng.randrange(100))},
                },
            }
        if rng.random() < 0.3:
            q["FilterExpression"] = "v > :v"
            q["ExpressionAttributeValues"][":v"] = {"N": str(rng.randrange(50))}
        q["ScanIndexForward"] = rng.random() < 0.5
        q["Limit"] = rng.choice([3, 10, 1000])
        out.append(q)
    return out


def _all_pages(ddb, query: dict) -> list[list[dict]]:
    pages, kwargs = [], dict(query, TableName="t")
    while True:
        page = ddb.query(**kwargs)
        pages.append([page["Items"], page.get("LastEvaluatedKey"), page["Count"], page["ScannedCount"]])
        if "LastEvaluatedKey" not in page:
            return pages
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@pytest.mark.parametrize("seed", [7])
def test_patched_query_answers_exactly_as_moto_does(seed):
    # Given the same random table (partitions, range keys, a sparse GSI) and random queries
    rng = random.Random(seed)
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        _random_table(ddb, rng)
        queries = _queries(rng)
        # When they run on moto as it is and with the patch (between writes and updates too)
        plain = [_all_pages(ddb, q) for q in queries]
        with narrow_hash_key_query():
            patched = [_all_pages(ddb, q) for q in queries]
            ddb.update_item(
                TableName="t",
                Key={"pk": {"S": "p1"}, "sk": {"S": "s0001"}},
                UpdateExpression="SET g = :g, r = :r",
                ExpressionAttributeValues={":g": {"S": "g0"}, ":r": {"N": "1"}},
            )
            ddb.delete_item(TableName="t", Key={"pk": {"S": "p2"}, "sk": {"S": "s0002"}})
            ddb.put_item(TableName="t", Item={"pk": {"S": "p3"}, "sk": {"S": "s0003"}, "g": {"S": "g1"}})
            after_patched = [_all_pages(ddb, q) for q in queries]
        after_plain = [_all_pages(ddb, q) for q in queries]
    # Then every page (items, order, last key, counts) is the same
    assert patched == plain
    assert after_patched == after_plain
    assert any(p[0][0] for p in plain) and any(not p[0][0] for p in plain)  # non-trivial queries


def test_an_index_query_does_not_rebuild_its_grouping_after_writes(monkeypatch):
    # Given a table with a GSI of 2,000 items and the patch counting how often it groups the table
    from rxguard_tools.offline import patches

    built = {"n": 0}
    original = patches._IndexGroups.__init__

    def counting(self, *args, **kwargs):
        built["n"] += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(patches._IndexGroups, "__init__", counting)
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(
            TableName="f",
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("id", "scope")],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "by_scope",
                    "KeySchema": [{"AttributeName": "scope", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        for i in range(2000):
            ddb.put_item(TableName="f", Item={"id": {"S": f"f{i}"}, "scope": {"S": f"s{i % 50}"}})

        def by_scope(scope: str) -> list[dict[str, dict[str, str]]]:
            query = {"KeyConditionExpression": "#s = :s", "ExpressionAttributeNames": {"#s": "scope"}}
            values = {":s": {"S": scope}}
            answer = ddb.query(TableName="f", IndexName="by_scope", **query, ExpressionAttributeValues=values)
            return list(answer["Items"])

        with patches.narrow_hash_key_query():
            # When writes (puts moving items between scopes, deletes) alternate with queries
            for i in range(100):
                ddb.put_item(TableName="f", Item={"id": {"S": f"f{i}"}, "scope": {"S": "moved"}})
                ddb.delete_item(TableName="f", Key={"id": {"S": f"f{1000 + i}"}})
                by_scope("moved")
            moved, s1 = by_scope("moved"), by_scope("s1")
    # Then the table was grouped once, and the grouping followed every write
    assert built["n"] == 1
    assert sorted(i["id"]["S"] for i in moved) == sorted(f"f{i}" for i in range(100))
    assert sorted(i["id"]["S"] for i in s1) == sorted(
        f"f{i}" for i in range(2000) if i % 50 == 1 and i >= 100 and not 1000 <= i < 1100
    )
