"""The real API handler (functions/api/app.py) on the template's resources in moto, through
the offline Lambda router: DynamoDB round trips per check, dispensings and the findings
store on the FindingsTable (listing, pagination, review, precision)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from rxguard_tools.offline import Environment
from tests.conftest import load_event

AUDITOR = "arn:aws:iam::123456789012:role/bureau-auditor"


@pytest.fixture(scope="module")
def env() -> Iterator[Environment]:
    callers = load_event("api/callers.json")
    base = {"RXGUARD_API_AUTH": "enforce", "RXGUARD_API_CALLERS": json.dumps(callers)}
    with Environment(base_environment=base, parameters={"ApiCallers": json.dumps(callers)}) as environment:
        yield environment


def invoke(env: Environment, event: dict[str, Any]) -> tuple[int, Any]:
    route = env.router.route_for(env.name("ApiFunction"))
    assert route is not None
    payload, errored = env.router.invoke(route, event)
    answer = json.loads(payload)
    assert not errored, answer
    return answer["statusCode"], json.loads(answer["body"])


def with_body(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(event)
    body = json.loads(out["body"])
    body.update(changes)
    out["body"] = json.dumps(body, ensure_ascii=False)
    return out


def get(env: Environment, path: str, query: dict[str, str] | None = None, caller: str = AUDITOR) -> tuple[int, Any]:
    event = load_event("api/rules.json")
    event["path"] = event["resource"] = path
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    event["requestContext"]["identity"]["userArn"] = caller
    return invoke(env, event)


def test_check_after_a_dispensing_takes_two_dynamodb_round_trips(env: Environment) -> None:
    # Given a recorded dispensing at pharmacy P4401001
    status, recorded = invoke(env, load_event("api/dispensation.json"))
    assert status == 200 and len(recorded["recorded"]) == 2
    # When the same pharmacy checks a refill four days later, its request counted
    check = with_body(load_event("api/check.json"), fee_ocur_time="2026-03-05 10:00:00")
    before = env.dynamodb_requests()
    status, answer = invoke(env, check)
    after = env.dynamodb_requests()
    # Then the refill is flagged from the history in DynamoDB
    assert status == 200
    metformin = next(line for line in answer["lines"] if line["med_list_codg"] == "XA10BA02A001")
    refill = next(h for h in metformin["hits"] if h["rule_id"] == "early-refill")
    # And the answer says when the refill would pass and which fill it compares with
    assert refill["next_fill_on"] > "2026-03-05" and metformin["next_fill_on"] >= refill["next_fill_on"]
    assert refill["previous_fill"]["fixmedins_code"] == "P4401001"
    assert refill["previous_fill"]["dispensed_on"] < "2026-03-05"
    # And the check cost at most two reads of the history (the next-fill search reuses them) and
    # one write: the warnings it answered, so that their jr_id can be fetched and disposed; the
    # access audit appends one record and reads the caller's recent ones once (the stranger alert)
    assert after["reads"] - before["reads"] <= 2 + 1
    assert after["writes"] - before["writes"] == 1 + 1
    status, fetched = get(env, f"/v1/findings/{refill['finding_id']}")
    assert status == 200 and fetched["recorded"] is False and fetched["rule_id"] == "early-refill"


def test_repeated_dispensing_records_nothing_twice(env: Environment) -> None:
    event = with_body(load_event("api/dispensation.json"), psn_no="SYN0000000077")
    _, first = invoke(env, event)
    _, again = invoke(env, event)
    assert len(first["recorded"]) == 2
    assert first["alerts_sent"] >= 1  # the over-quantity of oseltamivir is high: alerted on SNS
    assert again["alerts_sent"] == 0
    assert again["recorded"] == [] and again["duplicates"] == first["recorded"]
    assert again["new_findings"] == 0


def test_findings_are_listed_reviewed_and_counted_on_dynamodb(env: Environment) -> None:
    # Given the findings of a dispensing at P4401001 (its 5 packs of oseltamivir are over quantity)
    invoke(env, with_body(load_event("api/dispensation.json"), psn_no="SYN0000000088"))
    # When the auditor pages through the pharmacy's findings one at a time
    ids: list[str] = []
    query = {"institution": "P4401001", "limit": "1"}
    for _ in range(20):
        status, page = get(env, "/v1/findings", query)
        assert status == 200
        ids += [f["finding_id"] for f in page["items"]]
        if not page["next_token"]:
            break
        query = {**query, "next_token": page["next_token"]}
    # Then each comes once, newest first, and the same set comes from the unfiltered scan
    assert ids and len(ids) == len(set(ids))
    _, everything = get(env, "/v1/findings", {"limit": "100"})
    assert set(ids) <= {f["finding_id"] for f in everything["items"]}
    _, by_patient = get(env, "/v1/findings", {"patient": "SYN0000000088"})
    assert by_patient["items"] and {f["psn_no"] for f in by_patient["items"]} == {"SYN0000000088"}
    # When one is confirmed, then dismissed on second thought, and another confirmed
    target = by_patient["items"][0]
    review = load_event("api/review.json")
    review["path"] = review["resource"] = f"/v1/findings/{target['finding_id']}"
    assert invoke(env, review)[0] == 200
    status, reviewed = invoke(env, with_body(review, status="dismissed", reason="处方有长期处方备案"))
    # Then the finding carries the latest review and the rule's figures count it once
    assert status == 200 and reviewed["status"] == "dismissed"
    _, one = get(env, f"/v1/findings/{target['finding_id']}")
    assert one["review"]["status"] == "dismissed" and one["review"]["reason"] == "处方有长期处方备案"
    _, rules = get(env, "/v1/rules")
    rule = next(r for r in rules["rules"] if r["id"] == target["rule_id"])
    assert (rule["confirmed"], rule["dismissed"], rule["precision"]) == (0, 1, 0.0)
    # And a pharmacy cannot see a finding of the hospital's sample
    assert (
        get(env, f"/v1/findings/{target['finding_id']}", caller="arn:aws:iam::123456789012:user/his-H6108001")[0] == 404
    )


def test_unsigned_or_unknown_caller_is_refused(env: Environment) -> None:
    event = load_event("api/check.json")
    event["requestContext"]["identity"] = {"userArn": None, "caller": None, "sourceIp": "10.0.0.9"}
    status, answer = invoke(env, event)
    assert (status, answer["error"]["code"]) == (403, "forbidden")
