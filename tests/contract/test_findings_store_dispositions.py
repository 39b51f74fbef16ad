"""The FindingsStore contract for warnings and dispositions (3101 jr_id, 3103; docs/api.md),
run over every adapter (`backend`: memory, SQLite state, DynamoDB on moto)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from contract_helpers import Backend, store_finding

from rxguard.api.errors import NotFound
from rxguard.api.models import Disposition
from rxguard.api.store import FindingQuery
from rxguard.models import Finding
from rxguard.scope import Scope

AT = datetime(2026, 3, 5, 10, 0)


def finding(rule: str, psn: str, line: str) -> Finding:
    return store_finding(rule, psn, line, AT - timedelta(days=1))


def disposition(action: str, reason: str | None = None) -> Disposition:
    return Disposition.model_validate(
        {"action": action, "reason": reason, "warn_type": "1", "disposer": "his-P4401001", "disposed_at": AT}
    )


def test_a_warning_is_fetched_disposed_and_never_listed(backend: Backend) -> None:
    store = backend.store
    warning = finding("early-refill", "SYN1", "P4401001/check-1")
    # Given a check answered this warning
    store.record_warnings([warning], AT)
    # Then its jr_id is fetched, marked as not recorded
    got = store.get(warning.finding_id)
    assert got is not None and got.recorded is False and got.rule_id == "early-refill"
    # And it is not a current finding: no listing shows it
    assert store.query(FindingQuery(), 50)[0] == []
    assert store.query(FindingQuery(psn_no="SYN1"), 50)[0] == []
    # When the prescriber continues with a reason
    disposed = store.dispose(warning.finding_id, disposition("continue", "外出备药"))
    # Then the disposition is kept with it and counted for its rule
    assert disposed.disposition is not None and disposed.disposition.reason == "外出备药"
    again = store.get(warning.finding_id)
    assert again is not None and again.disposition is not None and again.disposition.action == "continue"
    figures = store.rule_figures(["early-refill"])["early-refill"]
    assert (figures.continued, figures.modified, figures.continue_rate) == (1, 0, 1.0)


def test_disposing_again_replaces_and_moves_the_counts(backend: Backend) -> None:
    store, repo = backend.store, backend.repo()
    recorded = finding("over-quantity", "SYN2", "P4401001/FD-9")
    other = finding("over-quantity", "SYN3", "P4401001/FD-10")
    repo.replace_findings(Scope.patient("SYN2"), [recorded])
    repo.replace_findings(Scope.patient("SYN3"), [other])
    # Given a recorded finding continued, then modified; another modified
    store.dispose(recorded.finding_id, disposition("continue", "剂量调整"))
    store.dispose(recorded.finding_id, disposition("modify"))
    store.dispose(other.finding_id, disposition("modify"))
    # Then it counts once, as the latest disposition says
    figures = store.rule_figures(["over-quantity"])["over-quantity"]
    assert (figures.continued, figures.modified) == (0, 2)
    # And the listing shows the finding with its disposition; it is recorded
    items, _ = store.query(FindingQuery(psn_no="SYN2"), 10)
    assert [i.finding_id for i in items] == [recorded.finding_id]
    assert items[0].recorded is True and items[0].disposition is not None and items[0].disposition.action == "modify"


def test_a_recorded_finding_takes_precedence_over_a_warning(backend: Backend) -> None:
    store, repo = backend.store, backend.repo()
    warning = finding("early-refill", "SYN4", "P4401001/FD-1")
    store.record_warnings([warning], AT)
    # When the dispensing is recorded and the same finding is produced
    repo.replace_findings(Scope.patient("SYN4"), [warning.model_copy(update={"figures": {"days": 3}})])
    got = store.get(warning.finding_id)
    # Then GET shows the recorded finding
    assert got is not None and got.recorded is True and got.figures == {"days": 3}


def test_unknown_ids_are_not_found(backend: Backend) -> None:
    store = backend.store
    assert store.get("0" * 32) is None
    with pytest.raises(NotFound):
        store.dispose("0" * 32, disposition("modify"))


def test_a_continued_warning_gives_its_lines_the_reason_until_modified(
    backend: Backend,
) -> None:
    store = backend.store
    # Given a warning on a proposed line (evidence: a history line and the proposed one)
    warning = finding("early-refill", "SYN5", "P4401002/RX-1").model_copy(
        update={"evidence": ["P4401001/FD-1", "P4401002/RX-1"]}
    )
    store.record_warnings([warning], AT, answered=["P4401002/RX-1"])
    assert store.continued_reasons(["P4401002/RX-1"]) == {}
    # When the prescriber continues with a reason
    store.dispose(warning.finding_id, disposition("continue", "出差备药"))
    # Then the proposed line (not the history line) carries the reason
    assert store.continued_reasons(["P4401002/RX-1", "P4401001/FD-1", "X/Y"]) == {"P4401002/RX-1": "出差备药"}
    # And a later "modify" withdraws it
    store.dispose(warning.finding_id, disposition("modify"))
    assert store.continued_reasons(["P4401002/RX-1"]) == {}
