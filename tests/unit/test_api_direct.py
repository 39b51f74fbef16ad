"""The check routes answered directly (`rxguard.api.resolver._direct`: a valid POST
/v1/checks or /v1/dispensations, rxguard's shape or the national 3101/3102 one, without the
resolver's generic request and response machinery) answer exactly as the resolver does:
the same status, body bytes and headers, the same access records, warnings and recorded
lines, for valid requests, refused ones (403), invalid bodies and queries (400) and
anything the direct path hands back to the resolver."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from rxguard.api import resolver
from rxguard.api.audit import AuditQuery
from rxguard.api.service import Services
from rxguard.api.settings import ApiSettings
from rxguard.api.store import InMemoryFindingsStore
from rxguard.kb import KnowledgeBase
from rxguard.repository import InMemoryRepository
from tests.conftest import ROOT, load_event

CALLERS = json.loads((ROOT / "events/api/callers.json").read_text(encoding="utf-8"))
STRANGER = "arn:aws:iam::123456789012:user/his-P9999999"


def _services(kb: KnowledgeBase) -> Services:
    """Real engine, in-memory adapters, a fixed clock; the sample dispensation as history."""
    repo = InMemoryRepository()
    svc = Services(
        kb=kb,
        repo=repo,
        store=InMemoryFindingsStore(repo),
        settings=ApiSettings.model_validate({"auth_mode": "enforce", "callers": CALLERS}),
        clock=lambda: datetime(2026, 3, 3, 10, 0, 0),
    )
    resolver.handle(load_event("api/dispensation.json"), None, svc)
    return svc


def _body(name: str, change: Callable[[Any], Any] | None = None, **event: Any) -> dict[str, Any]:
    out = copy.deepcopy(load_event(f"api/{name}.json"))
    if change is not None:
        body = json.loads(out["body"])
        out["body"] = json.dumps(change(body) or body, ensure_ascii=False)
    out.update(event)
    return out


def _query(values: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "queryStringParameters": {k: v[-1] for k, v in values.items()},
        "multiValueQueryStringParameters": values,
    }


def _as(caller: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(event: dict[str, Any]) -> dict[str, Any]:
        event["requestContext"]["identity"]["userArn"] = caller
        return event

    return change


def _later(body: dict[str, Any]) -> None:
    body["fee_ocur_time"] = "2026-03-03 10:00:00"


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "check": lambda: _body("check"),
    "check, two days after the history": lambda: _body("check", _later),
    "check, answered in the national shape": lambda: _body("check", _later, **_query({"format": ["nhsa"]})),
    "check, format rxguard": lambda: _body("check", **_query({"format": ["rxguard"]})),
    "check, an unknown format (400)": lambda: _body("check", **_query({"format": ["xml"]})),
    "check, format twice": lambda: _body("check", **_query({"format": ["nhsa", "rxguard"]})),
    "check, another query parameter": lambda: _body("check", **_query({"debug": ["1"]})),
    "check, no line (400)": lambda: _body("check", lambda b: {**b, "lines": []}),
    "check, a number for psn_no (400)": lambda: _body("check", lambda b: {**b, "psn_no": 5}),
    "check, a list body (400)": lambda: _body("check", lambda b: [b]),
    "check, not JSON (400)": lambda: {**_body("check"), "body": "{not json"},
    "check, base64": lambda: {
        **_body("check"),
        "body": base64.b64encode(_body("check")["body"].encode()).decode(),
        "isBase64Encoded": True,
    },
    "check, another institution's caller (403)": lambda: _as(STRANGER)(_body("check")),
    "check, an unknown trigger scene (400 from the service)": lambda: _body(
        "check_3101", lambda b: b["data"].update(trig_scen="99")
    ),
    "3101": lambda: _body("check_3101"),
    "3101, envelope": lambda: _body("check_3101_envelope"),
    "3101, answered in rxguard's shape": lambda: _body("check_3101", **_query({"format": ["rxguard"]})),
    "dispensation, again (duplicates)": lambda: _body("dispensation"),
    "dispensation, new lines": lambda: _body(
        "dispensation",
        lambda b: {**b, "lines": [{**x, "feedetl_sn": f"N-{i}"} for i, x in enumerate(b["lines"])]},
    ),
    "dispensation, format (not taken)": lambda: _body("dispensation", **_query({"format": ["nhsa"]})),
    "dispensation, no serial number (400)": lambda: _body(
        "dispensation", lambda b: {**b, "lines": [{k: v for k, v in b["lines"][0].items() if k != "feedetl_sn"}]}
    ),
    "3102": lambda: _body("dispensation_3102"),
    "the trailing slash": lambda: {**_body("check"), "path": "/v1/checks/"},
}


def _effects(svc: Services) -> Any:
    """What a request leaves: access records (but their random ids), warnings, recorded lines."""
    assert isinstance(svc.store, InMemoryFindingsStore) and isinstance(svc.repo, InMemoryRepository)
    audit = svc.audit.query(AuditQuery(), 1000, None)[0] if svc.audit else []
    return (
        sorted((record.model_dump(exclude={"record_id"}) for record in audit), key=repr),
        {k: v.model_dump() for k, v in sorted(svc.store.warnings.items())},
        dict(sorted(svc.store.warning_lines.items())),
        sorted(
            line.line_id
            for lines in svc.repo.load_history(["SYN0000000001", "SYN0000000002"]).values()
            for line in lines
        ),
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_direct_answer_is_the_resolvers(kb: KnowledgeBase, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the same services and request twice, When answered directly and through the resolver
    answers = {}
    for direct in (True, False):
        monkeypatch.setattr(resolver, "DIRECT", direct)
        svc = _services(kb)
        answer = resolver.handle(CASES[case](), None, svc)
        answers[direct] = (answer["statusCode"], answer["body"], dict(answer.get("multiValueHeaders") or {}),
                           answer.get("headers"), answer["isBase64Encoded"], _effects(svc))  # fmt: skip
    # Then the answers and what they leave are the same, byte for byte
    assert answers[True] == answers[False]


def test_the_cases_reach_the_direct_path_and_its_refusals(kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the cases, When each is answered with the resolver's own path failing
    def no_resolver(*_: Any) -> Any:
        raise AssertionError("through the resolver")

    monkeypatch.setattr(resolver.app, "resolve", no_resolver)
    direct = set()
    for case, event in sorted(CASES.items()):
        try:
            answer = resolver.handle(event(), None, _services(kb))
        except AssertionError:
            continue
        direct.add((case, answer["statusCode"]))
    # Then the valid checks and dispensations and the refusals of the service are answered directly
    assert {status for _, status in direct} == {200, 400, 403}
    assert {case for case, _ in direct} >= {
        "check, two days after the history",
        "3101",
        "3101, envelope",
        "3102",
        "dispensation, new lines",
        "check, another institution's caller (403)",
    }


def test_a_check_that_fails_after_reading_the_history_is_still_audited(
    kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a check whose next-fill search fails after the patient's history was read
    from rxguard.api import service

    svc = _services(kb)
    assert svc.audit is not None

    def checks() -> int:
        assert svc.audit is not None
        return sum(1 for r in svc.audit.query(AuditQuery(), 1000, None)[0] if r.action == "check")

    before = checks()

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the search failed")

    monkeypatch.setattr(service, "advise", broken)
    # When it is asked, directly and through the resolver
    for direct in (True, False):
        monkeypatch.setattr(resolver, "DIRECT", direct)
        answer = resolver.handle(_body("check", _later), None, svc)
        # Then it answers 500 with no detail, and the read of the history is in the audit
        assert answer["statusCode"] == 500
    assert checks() == before + 2  # (records of one instant come in no set order: counted, not sliced)
