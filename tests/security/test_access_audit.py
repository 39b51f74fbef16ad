"""Access audit (issue 15): every check and history read through the API is recorded with
caller, pseudonymised patient, time and decision; the regulator reads it at GET /v1/audit;
a caller that checks many patients it never dispensed to raises an alert."""

from __future__ import annotations

import copy
import json
from typing import Any

from rxguard.alerts.schema import pseudonym
from rxguard.api.audit import InMemoryAuditLog
from rxguard.api.service import Services
from rxguard.kb import KnowledgeBase
from tests.conftest import load_event
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
