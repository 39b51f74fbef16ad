"""Access audit (issue 15): every check and history read through the API is recorded with
caller, pseudonymised patient, time and decision; the regulator reads it at GET /v1/audit;
a caller that checks many patients it never dispensed to raises an alert."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema

from rxguard.alerts.messages import sns_publish_arguments
from rxguard.alerts.schema import AlertMessage, pseudonym
from rxguard.api.audit import InMemoryAuditLog
from rxguard.api.service import Services
from rxguard.kb import KnowledgeBase
from tests.conftest import ROOT, load_event
from tests.security.test_api_fuzz import AUDITOR, HOSPITAL, PHARMACY, _call, _get, _post, _seed, _services

KEY = "rxguard-offline-pseudonym-key"


def _audited(kb: KnowledgeBase, **over: Any) -> tuple[Services, InMemoryAuditLog]:
    svc = _services(kb, **over)
    svc.audit = InMemoryAuditLog()
    return svc, svc.audit


def _check(svc: Services, psn: str, caller: str = PHARMACY) -> int:
    body = json.loads(load_event("api/check.json")["body"])
    body["psn_no"] = psn
    return _call(svc, _post("api/check.json", body, caller=caller))[0]


def test_a_check_is_recorded_with_caller_pseudonym_time_and_decision(kb: KnowledgeBase) -> None:
    svc, log = _audited(kb)
    assert _check(svc, "SECRET0001") == 200
    [rec] = log.records
    assert (rec.caller, rec.institution, rec.action, rec.decision) == (PHARMACY, "P4401001", "check", "pass")
    assert rec.patient == pseudonym("SECRET0001", KEY) and "SECRET0001" not in rec.model_dump_json()
    assert rec.at.tzinfo is not None


def test_a_refused_check_is_recorded_as_denied(kb: KnowledgeBase) -> None:
    # Given the hospital checks a dispensing in the pharmacy's name
    svc, log = _audited(kb)
    assert _check(svc, "SECRET0002", caller=HOSPITAL) == 403
    assert [(r.caller, r.decision, r.patient) for r in log.records] == [
        (HOSPITAL, "denied", pseudonym("SECRET0002", KEY))
    ]


def test_history_reads_are_recorded(kb: KnowledgeBase) -> None:
    # Given findings of a shared patient; the pharmacy lists them by patient, and reads one
    svc, log = _audited(kb)
    seeded = _seed(svc)
    assert _get(svc, "/v1/findings", PHARMACY, {"patient": ["SHARED01"]})[0] == 200
    mine = seeded["P4401001:SHARED01"].finding_id
    assert _get(svc, f"/v1/findings/{mine}", PHARMACY)[0] == 200
    theirs = seeded["H6108001:ONLYH01"].finding_id
    assert _get(svc, f"/v1/findings/{theirs}", PHARMACY)[0] == 404
    # Then each read is in the log, the refused one as denied
    assert [(r.action, r.decision, r.patient) for r in log.records] == [
        ("findings", "allowed", pseudonym("SHARED01", KEY)),
        ("finding", "allowed", pseudonym("SHARED01", KEY)),
        ("finding", "denied", pseudonym("ONLYH01", KEY)),
    ]


def test_the_regulator_reads_the_log_and_nobody_else_does(kb: KnowledgeBase) -> None:
    svc, _ = _audited(kb)
    _check(svc, "SECRET0003")
    _check(svc, "SECRET0004")
    status, page = _get(svc, "/v1/audit", AUDITOR, {"patient": ["SECRET0003"]})
    assert status == 200
    assert [(i["caller"], i["patient"]) for i in page["items"]] == [(PHARMACY, pseudonym("SECRET0003", KEY))]
    assert len(_get(svc, "/v1/audit", AUDITOR, {"caller": [PHARMACY]})[1]["items"]) == 2
    assert _get(svc, "/v1/audit", PHARMACY)[0] == 403


def test_checking_many_patients_never_dispensed_to_raises_one_alert(kb: KnowledgeBase) -> None:
    # Given a limit of 5 strangers a day; the pharmacy dispenses to one patient and checks six others
    svc, log = _audited(kb, audit_stranger_limit=5)
    dispensation = copy.deepcopy(load_event("api/dispensation.json"))
    dispensation["requestContext"]["identity"]["userArn"] = PHARMACY
    assert _call(svc, dispensation)[0] == 200
    patient = json.loads(dispensation["body"])["psn_no"]
    assert _check(svc, patient) == 200  # a patient it dispensed to: not a stranger
    for n in range(4):
        _check(svc, f"STRANGER{n}")
    assert not [r for r in log.records if r.action == "alert"]
    for n in range(4, 7):
        _check(svc, f"STRANGER{n}")
    # Then one alert names the caller (once per window), and the regulator sees it
    alerts = [r for r in log.records if r.action == "alert"]
    assert [(a.caller, a.decision) for a in alerts] == [(PHARMACY, "alert")]
    assert "5 patients" in (alerts[0].detail or "")


def _strangers(svc: Services, count: int) -> None:
    for n in range(count):
        _check(svc, f"STRANGER{n}")


SCHEMA = json.loads((ROOT / "docs" / "alert-message.schema.json").read_text(encoding="utf-8"))


def test_the_stranger_alert_is_published_as_an_access_alert_without_any_patient(kb: KnowledgeBase) -> None:
    # Given a limit of 3 strangers and a publisher of access alerts
    svc, _ = _audited(kb, audit_stranger_limit=3)
    published: list[AlertMessage] = []
    svc.access_alerts = published.append
    # When the pharmacy checks 5 patients it never dispensed to
    _strangers(svc, 5)
    # Then one access alert is published: it names the caller and its institution, counts the
    # patients, validates against the published schema, and holds no patient (clear or pseudonym)
    [message] = published
    assert message.message_type == "access" and message.attributes["message_type"] == "access"
    assert (message.body["caller"], message.body["institution_id"]) == (PHARMACY, "P4401001")
    assert message.body["patients_without_dispensation"] == 3 and message.body["limit"] == 3
    jsonschema.validate(message.body, SCHEMA)
    text = message.model_dump_json() + json.dumps(sns_publish_arguments(message), ensure_ascii=False)
    for n in range(5):
        assert f"STRANGER{n}" not in text and pseudonym(f"STRANGER{n}", KEY) not in text


def test_a_publisher_that_fails_does_not_fail_the_check(kb: KnowledgeBase) -> None:
    svc, log = _audited(kb, audit_stranger_limit=2)

    def down(message: AlertMessage) -> None:
        raise ConnectionError("SNS down")

    svc.access_alerts = down
    _strangers(svc, 2)
    assert _check(svc, "STRANGER9") == 200  # answered; the alert record is in the log
    assert [r.action for r in log.records].count("alert") == 1


def test_offline_the_access_alert_goes_to_the_state_outbox(kb: KnowledgeBase, tmp_path: Path) -> None:
    # Given the API's services over a local state (`rxguard serve --state DIR`), limit 2
    from rxguard.api.settings import ApiSettings
    from rxguard.bootstrap import local_api_services
    from rxguard.local.state import State

    with State.open(tmp_path / "state") as state:
        base = _services(kb, audit_stranger_limit=2)
        svc = local_api_services(state, base.settings)
        assert isinstance(svc.settings, ApiSettings)
        svc.check_lines, svc.clock = base.check_lines, base.clock
        # When a caller checks 3 strangers
        for n in range(3):
            body = json.loads(load_event("api/check.json")["body"])
            body["psn_no"] = f"STRANGER{n}"
            assert _call(svc, _post("api/check.json", body, caller=PHARMACY))[0] == 200
        # Then the access alert waits in the state's outbox (the next run writes out/alerts.jsonl)
        pending = state.outbox().pending()
        assert [(e.topic, e.message.message_type) for e in pending] == [("alerts", "access")]
        assert "STRANGER" not in pending[0].message.model_dump_json()


def test_the_log_read_from_the_first_day_of_the_calendar_or_to_its_last_is_no_server_error(kb: KnowledgeBase) -> None:
    # Given a recorded check (found by schemathesis: 0001-01-01 at midnight in China's time is
    # before the first day in UTC)
    svc, _ = _audited(kb)
    _check(svc, "SECRET0005")
    # When the regulator reads the log over the whole calendar
    status, page = _get(svc, "/v1/audit", AUDITOR, {"date_from": ["0001-01-01"], "date_to": ["9999-12-31"]})
    # Then it gets the record
    assert status == 200 and len(page["items"]) == 1
