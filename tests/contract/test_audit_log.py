"""The access-audit contract over every adapter (in-memory, SQLite state DB, DynamoDB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rxguard.api.audit import AccessRecord, AuditQuery

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def _rec(minutes: int, caller: str = "arn:his-P1", patient: str | None = "p-" + "a" * 20, **over: Any) -> AccessRecord:
    values: dict[str, Any] = dict(
        at=T0 + timedelta(minutes=minutes),
        caller=caller,
        institution="P1",
        patient=patient,
        action="check",
        decision="pass",
    )
    values.update(over)
    return AccessRecord(**values)


def test_records_come_back_newest_first_by_caller_and_by_patient(audit_log: Any) -> None:
    # Given accesses by two callers about two patients
    other = "p-" + "b" * 20
    audit_log.record([_rec(0), _rec(1, patient=other), _rec(2, caller="arn:his-H2", decision="denied")])
    # When the regulator reads by caller, by patient, and both
    by_caller, _ = audit_log.query(AuditQuery(caller="arn:his-P1"), 10, None)
    by_patient, _ = audit_log.query(AuditQuery(patient="p-" + "a" * 20), 10, None)
    both, _ = audit_log.query(AuditQuery(caller="arn:his-H2", patient="p-" + "a" * 20), 10, None)
    # Then each answer holds exactly the matching records, newest first, as recorded
    assert [r.at for r in by_caller] == [T0 + timedelta(minutes=1), T0]
    assert {(r.caller, r.decision) for r in by_patient} == {("arn:his-P1", "pass"), ("arn:his-H2", "denied")}
    assert [r.at for r in by_patient] == [T0 + timedelta(minutes=2), T0]
    assert [(r.caller, r.institution, r.action) for r in both] == [("arn:his-H2", "P1", "check")]
    assert all(r.record_id for r in by_caller)


def test_pages_cover_every_record_once(audit_log: Any) -> None:
    audit_log.record([_rec(i) for i in range(7)])
    seen: list[datetime] = []
    token = None
    while True:
        page, token = audit_log.query(AuditQuery(caller="arn:his-P1"), 3, token)
        seen += [r.at for r in page]
        if token is None:
            break
    assert seen == [T0 + timedelta(minutes=i) for i in reversed(range(7))]


def test_a_time_range_bounds_the_answer(audit_log: Any) -> None:
    audit_log.record([_rec(i * 60) for i in range(5)])
    query = AuditQuery(caller="arn:his-P1", since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3))
    page, _ = audit_log.query(query, 10, None)
    assert [r.at for r in page] == [T0 + timedelta(hours=h) for h in (3, 2, 1)]


def test_strangers_are_patients_checked_and_never_dispensed_to(audit_log: Any) -> None:
    # Given a caller that checked four patients, dispensed to one, and was denied for another
    p = ["p-" + c * 20 for c in "abcd"]
    audit_log.record(
        [
            _rec(0, patient=p[0]),
            _rec(1, patient=p[1]),
            _rec(2, patient=p[2]),
            _rec(3, patient=p[1], action="dispensation"),
            _rec(4, patient=p[3], decision="denied"),
            _rec(5, caller="arn:other", patient=p[2]),
        ]
    )
    # Then two of them are strangers; before the window, none; and no alert is recorded yet
    assert audit_log.strangers("arn:his-P1", T0) == (2, False)
    assert audit_log.strangers("arn:his-P1", T0 + timedelta(minutes=10)) == (0, False)
    audit_log.record([_rec(6, patient=None, action="alert", decision="alert", detail="2 patients")])
    assert audit_log.strangers("arn:his-P1", T0) == (2, True)
