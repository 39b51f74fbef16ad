"""Time plausibility (issue 15): no blame by backdating.

Lines dated in the future beyond the clock skew, or older than the history keeps, are
rejected with a reason; a dispensation recorded through the API more than late_hours after
it happened is accepted but marked late (received_at), and a finding it causes names the
institution that submitted it, not the seller it put second.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rxguard.api.resolver import handle
from rxguard.api.service import Services
from rxguard.api.settings import ApiSettings
from rxguard.api.store import InMemoryFindingsStore
from rxguard.ingest import TimeWindow, read_batch
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Rejection
from rxguard.repository import InMemoryRepository
from tests.conftest import load_event
from tests.security.corpus import csv_text, rec

NOW = datetime(2026, 3, 1, 10, 0, 0)  # China time
CODE = "81234567890123456789"


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        ("2026-03-01 10:09:00", None),  # within the 10-minute skew
        ("2026-03-01 10:11:00", "future_time"),
        ("2027-01-01 00:00:00", "future_time"),
        ("2025-01-26 10:00:00", None),  # 399 days
        ("2025-01-20 10:00:00", "too_old"),  # 405 days
        ("1995-01-01 00:00:00", "too_old"),
    ],
)
def test_a_batch_line_outside_the_plausible_window_is_rejected_with_a_reason(
    kb: KnowledgeBase, tmp_path: Path, when: str, reason: str | None
) -> None:
    # Given a batch whose second line is dated `when`, read at NOW with a 400-day history
    path = tmp_path / "b.csv"
    path.write_text(csv_text([rec(1), rec(2, fee_ocur_time=when)]).replace("2026-01-05", "2026-02-28"), "utf-8")
    window = TimeWindow.around(NOW, history_days=400)
    items = list(read_batch(path, kb, window=window))
    # Then it is accepted, or rejected naming fee_ocur_time with the reason
    rejections = [(i.line, i.field, i.reason) for i in items if isinstance(i, Rejection)]
    assert rejections == ([] if reason is None else [(3, "fee_ocur_time", reason)])
    assert sum(isinstance(i, ClaimLine) for i in items) == (2 if reason is None else 1)


def test_without_an_age_bound_an_archive_replays_but_the_future_is_still_refused(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    path = tmp_path / "b.csv"
    path.write_text(
        csv_text([rec(1, fee_ocur_time="2001-01-01 00:00:00"), rec(2, fee_ocur_time="2027-01-01 00:00:00")])
    )
    items = list(read_batch(path, kb, window=TimeWindow.around(NOW, history_days=None)))
    assert [(i.line, i.reason) for i in items if isinstance(i, Rejection)] == [(3, "future_time")]


def _services(kb: KnowledgeBase, repo: InMemoryRepository) -> Services:
    return Services(
        kb=kb,
        repo=repo,
        store=InMemoryFindingsStore(repo),
        settings=ApiSettings(auth_mode="open"),
        clock=lambda: NOW,
    )


def _dispense(svc: Services, institution: str, sn: str, when: datetime, psn: str) -> tuple[int, Any]:
    event = copy.deepcopy(load_event("api/dispensation.json"))
    body = json.loads(event["body"])
    body.update(fixmedins_code=institution, psn_no=psn, fee_ocur_time=when.strftime("%Y-%m-%d %H:%M:%S"))
    body["lines"] = [body["lines"][0] | {"feedetl_sn": sn, "drug_trac_codg": [CODE]}]
    event["body"] = json.dumps(body, ensure_ascii=False)
    answer = handle(event, None, svc)
    return answer["statusCode"], json.loads(answer["body"])


@pytest.mark.parametrize(
    ("age", "status", "code"),
    [
        (timedelta(minutes=-11), 400, "invalid_future_time"),
        (timedelta(days=401), 400, "invalid_too_old"),
    ],
)
def test_an_implausibly_dated_dispensation_is_refused_naming_the_time(
    kb: KnowledgeBase, age: timedelta, status: int, code: str
) -> None:
    svc = _services(kb, InMemoryRepository())
    got, answer = _dispense(svc, "P4401001", "S1", NOW - age, "PSN1")
    assert (got, answer["error"]["code"], answer["error"]["field"]) == (status, code, "fee_ocur_time")


def test_a_dispensation_older_than_late_hours_is_recorded_marked_late(kb: KnowledgeBase) -> None:
    repo = InMemoryRepository()
    svc = _services(kb, repo)
    status, _ = _dispense(svc, "P4401001", "S1", NOW - timedelta(hours=73), "PSN1")
    on_time, _ = _dispense(svc, "P4401001", "S2", NOW - timedelta(hours=71), "PSN2")
    assert (status, on_time) == (200, 200)
    assert repo.lines["P4401001/S1"].received_at == NOW
    assert repo.lines["P4401001/S2"].received_at is None


def test_a_backdated_sale_is_blamed_on_the_institution_that_submitted_it(kb: KnowledgeBase) -> None:
    # Given pharmacy P4401001 sold a pack (trace code) on time, two days ago
    repo = InMemoryRepository()
    svc = _services(kb, repo)
    assert _dispense(svc, "P4401001", "HONEST", NOW - timedelta(days=2), "PSN1")[0] == 200
    # When hospital H6108001 records today a sale of the same pack dated five days ago (before it)
    status, _ = _dispense(svc, "H6108001", "LATE", NOW - timedelta(days=5), "PSN2")
    # Then the trace-code-reuse finding names the late submitter, not the honest seller it put second
    assert status == 200
    reuse = [f for f in repo.findings.values() if f.rule_id == "trace-code-reuse" and f.status != "superseded"]
    assert [f.fixmedins_code for f in reuse] == ["H6108001"]
    assert set(reuse[0].evidence) == {"P4401001/HONEST", "H6108001/LATE"}


def test_an_on_time_earlier_sale_still_blames_the_later_seller(kb: KnowledgeBase) -> None:
    repo = InMemoryRepository()
    svc = _services(kb, repo)
    assert _dispense(svc, "H6108001", "FIRST", NOW - timedelta(hours=30), "PSN2")[0] == 200
    assert _dispense(svc, "P4401001", "AGAIN", NOW - timedelta(hours=2), "PSN1")[0] == 200
    reuse = [f for f in repo.findings.values() if f.rule_id == "trace-code-reuse" and f.status != "superseded"]
    assert [f.fixmedins_code for f in reuse] == ["P4401001"]
