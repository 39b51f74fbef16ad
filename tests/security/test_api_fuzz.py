"""Hostile API requests and cross-institution reads (docs/security.md, claims A1-A4).

Requests go through the real resolver (`rxguard.api.resolver.handle`) with in-memory
services: every malformed request is a 4xx naming what is wrong, never a 500; an
institution never sees another institution's findings, whatever it asks.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxguard.api.resolver import handle
from rxguard.api.service import Services
from rxguard.api.settings import ApiSettings
from rxguard.api.store import InMemoryFindingsStore
from rxguard.kb import KnowledgeBase
from rxguard.models import Finding
from rxguard.repository import InMemoryRepository
from tests.conftest import ROOT, load_event
from tests.factories import make_finding

CALLERS = json.loads((ROOT / "events/api/callers.json").read_text(encoding="utf-8"))
PHARMACY = "arn:aws:iam::123456789012:user/his-P4401001"
HOSPITAL = "arn:aws:iam::123456789012:user/his-H6108001"
AUDITOR = "arn:aws:iam::123456789012:role/bureau-auditor"
POSTS = ["api/check.json", "api/check_3101.json", "api/dispensation.json", "api/dispensation_3102.json"]


class NoFindings:
    """The engine stand-in: the API's own validation is what is fuzzed here."""

    def __call__(self, lines: Any, repo: Any, kb: Any) -> dict[str, list[Finding]]:
        return {}


def _services(kb: KnowledgeBase, **over: Any) -> Services:
    repo = InMemoryRepository()
    return Services(
        kb=kb,
        repo=repo,
        store=InMemoryFindingsStore(repo),
        settings=ApiSettings.model_validate({"auth_mode": "enforce", "callers": CALLERS, **over}),
        check_lines=NoFindings(),
        clock=lambda: datetime(2026, 3, 1, 10, 0, 0),
    )


def _call(svc: Services, event: dict[str, Any]) -> tuple[int, Any]:
    answer = handle(event, None, svc)
    return answer["statusCode"], json.loads(answer["body"])


def _post(name: str, body: Any, caller: str | None = None) -> dict[str, Any]:
    event = copy.deepcopy(load_event(name))
    event["body"] = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    if caller:
        event["requestContext"]["identity"]["userArn"] = caller
    return event


def _assert_client_error(status: int, answer: Any) -> None:
    assert status != 500 and 400 <= status < 500, (status, answer)
    error = answer["error"]
    assert error["code"] and error["message"]
    # a validation error names the field (a whole-body error such as invalid_json may not)
    if error["code"].startswith(("invalid_field", "missing_field", "unknown_field")):
        assert error.get("field") or "body" in error["message"], answer


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(POSTS), body=json_values)
def test_random_json_bodies_are_4xx_never_500(kb: KnowledgeBase, name: str, body: Any) -> None:
    # Given any JSON value as the body of a check or dispensation
    svc = _services(kb, auth_mode="open")
    # When posted
    status, answer = _call(svc, _post(name, body))
    # Then the answer is a client error with a code (a random value is never a valid request)
    _assert_client_error(status, answer)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


HOSTILE_VALUES = [
    None, True, -1, 0, 1e308, -1e308, 10**40, "", " ", "x" * 100_000, "\u202eevil", "P\u200b001",
    "=cmd|' /C calc'!A0", "../../etc/passwd", "'; DROP TABLE findings; --", "\x00", "😀" * 50,
    [], {}, [[[[[[]]]]]], {"$ne": None},
]  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(POSTS), data=st.data(), value=st.sampled_from(HOSTILE_VALUES))
def test_one_hostile_value_anywhere_in_a_valid_request_never_gives_500(
    kb: KnowledgeBase, name: str, data: st.DataObject, value: Any
) -> None:
    # Given a valid sample request with one value replaced by a hostile one
    body = json.loads(load_event(name)["body"])
    path = data.draw(st.sampled_from(_paths(body)))
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = copy.deepcopy(value)
    svc = _services(kb, auth_mode="open")
    # When posted
    status, answer = _call(svc, _post(name, body))
    # Then it is accepted or refused with a 4xx, never a server error
    assert status == 200 or (400 <= status < 500), (status, answer, path)
    if status != 200:
        _assert_client_error(status, answer)


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000,
        '{"psn_no": ' + "[" * 50_000 + "]" * 50_000 + "}",
        "\ufeff{}",
        "\x00" * 64,
        '{"psn_no": "a", "psn_no": {"b": 1}}',
        '{"lines": NaN}',
        '{"lines": [' + ",".join(["{}"] * 5000) + "]}",
        "null",
        '"just a string"',
        "\ud800" * 3,
        '{"psn_no": "' + "x" * 300_000 + '"}',
    ],
    ids=[
        "deep-array",
        "deep-field",
        "bom",
        "nul",
        "dup-keys",
        "nan",
        "many-empty-lines",
        "null",
        "string",
        "lone-surrogate",
        "oversized",
    ],
)
@pytest.mark.parametrize("name", POSTS)
def test_malformed_raw_bodies_are_4xx(kb: KnowledgeBase, name: str, raw: str) -> None:
    # Given a raw body that is not a sensible request
    svc = _services(kb, auth_mode="open")
    # When posted
    status, answer = _call(svc, _post(name, raw))
    # Then it is refused as a client error with a code
    _assert_client_error(status, answer)


def test_unauthenticated_and_ungranted_callers_are_refused(kb: KnowledgeBase) -> None:
    # Given a request with no identity, and one from a principal with no grant
    svc = _services(kb)
    anonymous = _post("api/check.json", json.loads(load_event("api/check.json")["body"]))
    anonymous["requestContext"]["identity"] = {}
    stranger = _post("api/check.json", json.loads(load_event("api/check.json")["body"]), caller="arn:aws:iam::1:user/x")
    # When they call the API
    # Then both are 403 before anything is read
    assert _call(svc, anonymous)[0] == 403
    assert _call(svc, stranger)[0] == 403


# ------------------------------------------------------------------ cross-institution reads


def _seed(svc: Services) -> dict[str, Finding]:
    out = {}
    for inst, psn, day in [("P4401001", "SHARED01", 1), ("H6108001", "SHARED01", 2), ("H6108001", "ONLYH01", 3)]:
        evidence = [f"{inst}/S{day}"]
        text = {"explanation_zh": "说明", "explanation_en": "explanation", "figures": {}}
        at = datetime(2026, 2, day, 9)
        f = make_finding("early-refill", psn, evidence, fixmedins_code=inst, admdvs=None, occurred_at=at, **text)
        svc.repo.replace_findings(f"patient:{psn}:{inst}", [f])
        out[f"{inst}:{psn}"] = f
    return out


def _get(svc: Services, path: str, caller: str, query: dict[str, list[str]] | None = None) -> tuple[int, Any]:
    event = copy.deepcopy(load_event("api/rules.json"))
    event["requestContext"]["identity"]["userArn"] = caller
    event["path"] = event["resource"] = path
    if query:
        event["multiValueQueryStringParameters"] = query
        event["queryStringParameters"] = {k: v[-1] for k, v in query.items()}
    return _call(svc, event)


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"patient": ["SHARED01"]},
        {"patient": ["ONLYH01"]},
        {"rule": ["early-refill"]},
        {"institution": ["H6108001"]},
        {"institution": ["h6108001"]},
        {"institution": ["H6108001 "]},
        {"institution": ["*"]},
        {"institution": ["P4401001", "H6108001"]},
        {"institution": ["H6108001", "P4401001"]},
        {"institution": [""]},
        {"limit": ["1000000"]},
    ],
    ids=lambda q: "&".join(f"{k}={'|'.join(v)}" for k, v in q.items()) or "none",
)
def test_an_institution_never_sees_another_institutions_findings(
    kb: KnowledgeBase, query: dict[str, list[str]]
) -> None:
    # Given findings of a pharmacy and a hospital, one patient shared by both
    svc = _services(kb)
    seeded = _seed(svc)
    # When the pharmacy lists findings with any filter
    status, answer = _get(svc, "/v1/findings", PHARMACY, query)
    # Then it gets its own findings only, or a 4xx; never the hospital's or its patients
    assert status == 200 or 400 <= status < 500, (status, answer)
    if status == 200:
        items = answer["items"]
        assert {i["fixmedins_code"] for i in items} <= {"P4401001"}
        assert "ONLYH01" not in json.dumps(answer)
        assert seeded["H6108001:SHARED01"].finding_id not in json.dumps(answer)


def test_an_institution_can_neither_read_nor_review_another_institutions_finding(kb: KnowledgeBase) -> None:
    # Given a hospital finding
    svc = _services(kb)
    theirs = _seed(svc)["H6108001:ONLYH01"]
    # When the pharmacy reads it, and tries to review it
    read_status, _ = _get(svc, f"/v1/findings/{theirs.finding_id}", PHARMACY)
    review = copy.deepcopy(load_event("api/review.json"))
    review["path"] = review["resource"] = f"/v1/findings/{theirs.finding_id}"
    review["requestContext"]["identity"]["userArn"] = PHARMACY
    review_status, _ = _call(svc, review)
    # Then it does not exist for the pharmacy (404) and the review is forbidden; the owner still reads it
    assert read_status == 404
    assert review_status in (403, 404)
    assert _get(svc, f"/v1/findings/{theirs.finding_id}", HOSPITAL)[0] == 200
    assert svc.store.get(theirs.finding_id).status == "new"  # type: ignore[attr-defined]


def test_a_deployment_without_grants_fails_closed(kb: KnowledgeBase) -> None:
    # Given the API settings of a deployment that set no RXGUARD_API_AUTH and no callers
    settings = ApiSettings.from_env({})
    repo = InMemoryRepository()
    svc = Services(
        kb=kb, repo=repo, store=InMemoryFindingsStore(repo), settings=settings, check_lines=NoFindings(),
        clock=lambda: datetime(2026, 3, 1, 10, 0, 0),
    )  # fmt: skip
    # When a signed caller (the regulator's role of the samples) lists findings or posts a check
    listing, _ = _get(svc, "/v1/findings", AUDITOR)
    check, _ = _call(svc, _post("api/check.json", json.loads(load_event("api/check.json")["body"])))
    # Then both are refused: no grant, no access (never "open" by default)
    assert settings.auth_mode == "enforce"
    assert (listing, check) == (403, 403)


# ------------------------------------------------------------------ issue 15: former 500s and misleading 400s


def _with_type(event: dict[str, Any], content_type: str) -> dict[str, Any]:
    event["headers"] = {"content-type": content_type, "Host": "api.example"}
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    return event


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", None),
        ("multipart/form-data", "--x\r\n"),
        ("multipart/form-data; boundary=", ""),
        ("application/x-www-form-urlencoded", "psn_no=P1&lines=1"),
        ("application/xml", "<a/>"),
    ],
    ids=["text-plain", "multipart-no-boundary", "multipart-empty-boundary", "curl-form-default", "xml"],
)
@pytest.mark.parametrize("name", POSTS)
def test_a_body_that_is_not_json_is_415_naming_the_content_type(
    kb: KnowledgeBase, name: str, content_type: str, body: str | None
) -> None:
    # Given a valid request body, or the body curl sends with -d, under a content type that is not JSON
    raw = body if body is not None else load_event(name)["body"]
    event = _with_type(_post(name, raw, caller=AUDITOR), content_type)
    # When posted
    status, answer = _call(_services(kb), event)
    # Then it is 415, naming the content type (curl's default form encoding gets the hint)
    assert status == 415, answer
    assert answer["error"]["field"] == "Content-Type" and content_type.split(";")[0] in answer["error"]["message"]
    if "urlencoded" in content_type:
        assert "application/json" in answer["error"]["message"] and "psn_no" not in answer["error"]["message"]


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd+json"]
)
def test_json_content_types_are_read_whatever_their_case_and_parameters(kb: KnowledgeBase, content_type: str) -> None:
    event = _with_type(_post("api/check.json", load_event("api/check.json")["body"], caller=PHARMACY), content_type)
    assert _call(_services(kb), event)[0] == 200


@pytest.mark.parametrize("digits", [4301, 5000, 100_000])
@pytest.mark.parametrize("name", POSTS)
def test_a_huge_integer_is_400_naming_the_problem(kb: KnowledgeBase, name: str, digits: int) -> None:
    # Given a valid request whose quantity is an integer of thousands of digits
    raw = re.sub(r'"(cnt|pric)":\s*"?[0-9.]+"?', r'"\1": ' + "9" * digits, load_event(name)["body"], count=1)
    assert "9" * digits in raw
    # When posted
    status, answer = _call(_services(kb, auth_mode="open"), _post(name, raw))
    # Then it is a 400 that says why (json.loads refused it with a 500 before)
    assert status == 400 and "digits" in answer["error"]["message"], answer


@pytest.mark.parametrize("param", ["institution", "patient", "rule", "next_token"])
@pytest.mark.parametrize("caller", [AUDITOR, PHARMACY])
def test_an_empty_query_value_is_400_naming_the_parameter(kb: KnowledgeBase, param: str, caller: str) -> None:
    status, answer = _get(_services(kb), "/v1/findings", caller, {param: [""]})
    assert status == 400 and answer["error"]["field"] == param, answer


def test_rules_without_a_grant_are_403(kb: KnowledgeBase) -> None:
    svc = _services(kb)
    assert _get(svc, "/v1/rules", "arn:aws:iam::1:user/stranger")[0] == 403
    assert _get(svc, "/v1/rules", PHARMACY)[0] == 200 and _get(svc, "/v1/rules", AUDITOR)[0] == 200


@pytest.mark.parametrize("spelling", ["X-Rxguard-Caller", "x-rxguard-caller", "X-RXGUARD-CALLER", "x-RxGuard-caller"])
def test_the_local_caller_header_is_case_insensitive(spelling: str) -> None:
    from rxguard.api.serve import proxy_event

    event = proxy_event("GET", "/v1/rules", {spelling: PHARMACY}, None)
    assert event["requestContext"]["identity"]["userArn"] == PHARMACY
