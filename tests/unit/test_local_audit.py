"""The SQLite access audit's stranger count (kept per caller and patient as records are
written) equals the definition over the records themselves (`AuditLog.strangers`, which
reads the caller's whole window), in any order of arrival; an existing log gets its
summary filled when opened."""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from rxguard.api.audit import AccessRecord, AuditLog
from rxguard.local.audit import SqliteAuditLog

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
CALLERS = ("arn:his-P1", "arn:his-P2")

records = st.lists(
    st.builds(
        lambda minutes, caller, patient, action, decision: AccessRecord(
            at=T0 + timedelta(minutes=minutes),
            caller=caller,
            institution="P1",
            patient=None if action == "alert" or patient is None else f"p-{patient:020x}",
            action=action,
            decision="alert" if action == "alert" else decision,
        ),
        st.integers(0, 300),
        st.sampled_from(CALLERS),
        st.one_of(st.none(), st.integers(0, 5)),
        st.sampled_from(["check", "check", "dispensation", "findings", "alert"]),
        st.sampled_from(["pass", "block", "denied", "allowed"]),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(records, max_size=4), since=st.integers(0, 300))
def test_the_kept_count_is_the_count_over_the_records(batches: list[list[AccessRecord]], since: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = SqliteAuditLog(Path(tmp))
        for batch in batches:
            log.record(batch)
        at = T0 + timedelta(minutes=since)
        for caller in CALLERS:
            assert log.strangers(caller, at) == AuditLog.strangers(log, caller, at)


def test_a_log_written_before_the_summary_gets_it_filled_when_opened(tmp_path: Path) -> None:
    # Given a log with checks and a dispensation, whose summary table is missing (an older state)
    log = SqliteAuditLog(tmp_path)
    patients = [f"p-{i:020x}" for i in range(3)]
    log.record(
        [
            AccessRecord(at=T0, caller=CALLERS[0], institution="P1", patient=p, action="check", decision="pass")
            for p in patients
        ]
    )
    log.record(
        [
            AccessRecord(
                at=T0, caller=CALLERS[0], institution="P1", patient=patients[0], action="dispensation", decision="pass"
            )
        ]
    )
    with sqlite3.connect(log.path) as conn:
        conn.execute("DROP TABLE access_strangers")
    # When it is opened again, then the count is the count over its records
    assert SqliteAuditLog(tmp_path).strangers(CALLERS[0], T0) == (2, False)


def test_a_page_token_of_non_ascii_digits_is_the_first_page(tmp_path: Path) -> None:
    # Given the in-memory and the SQLite logs with records
    from rxguard.api.audit import AuditQuery, InMemoryAuditLog

    for log in (InMemoryAuditLog(), SqliteAuditLog(tmp_path)):
        log.record(
            [AccessRecord(at=T0, caller="arn:his-P1", institution="P1", patient=None, action="check", decision="pass")]
        )
        # When a page is asked with the token "³" (a digit to str.isdigit, not to int)
        page, _ = log.query(AuditQuery(caller="arn:his-P1"), 10, "³")
        # Then it is the first page, not a server error (schemathesis found the 500)
        assert [r.caller for r in page] == ["arn:his-P1"]
