"""The `FindingsStore` contract (rxguard/api/store.py), one set of cases over the
in-memory, SQLite and DynamoDB adapters: filters, newest-first order, pagination,
reviews and their figures, errors, and a review surviving the engine re-writing the
finding. The expected answers are computed from the findings themselves, not from
another adapter."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from contract_helpers import Backend, store_finding

from rxguard.api.errors import Conflict, InvalidField, NotFound
from rxguard.api.models import Review
from rxguard.api.store import FindingQuery, FindingsStore, view
from rxguard.models import Finding
from rxguard.scope import Scope

RULES = ["early-refill", "over-quantity", "trace-code-reuse"]
INSTITUTIONS = ["P4401001", "P4401002", "H6108001"]


def make_findings() -> list[tuple[str, Finding]]:
    """30 findings over 3 institutions, 4 patients, 3 rules, 15 days (two at the same time), with their scopes."""
    out = []
    start = datetime(2026, 2, 1, 9, 0)
    for i in range(30):
        patient = f"SYN{i % 4}"
        line = f"{INSTITUTIONS[i % 3]}/L{i}"
        rule = RULES[i % 3]
        found = store_finding(rule, patient, line, start + timedelta(days=i // 2, hours=(i % 2) * (i % 5 != 0)))
        out.append((Scope.patient(patient), found))
    return out


def seed(backend: Backend) -> list[Finding]:
    by_scope: dict[str, list[Finding]] = {}
    for scope, found in make_findings():
        by_scope.setdefault(scope, []).append(found)
    repo = backend.repo()
    for scope, items in by_scope.items():
        repo.replace_findings(scope, items)
    return [f for _, f in make_findings()]


def all_pages(store: FindingsStore, query: FindingQuery, limit: int) -> list[str]:
    ids: list[str] = []
    token = None
    for _ in range(100):
        items, token = store.query(query, limit, token)
        assert len(items) <= limit
        ids += [f.finding_id for f in items]
        if token is None:
            return ids
    raise AssertionError("pagination did not end")


def expected(findings: list[Finding], query: FindingQuery) -> list[str]:
    """The contract: matching findings, newest first, ties by finding_id."""
    matching = [f for f in findings if query.matches(f)]
    return [f.finding_id for f in sorted(matching, key=lambda f: (-f.occurred_at.timestamp(), f.finding_id))]


QUERIES = [
    FindingQuery(institution="P4401001"),
    FindingQuery(institution="P4401002", rule_id="over-quantity"),
    FindingQuery(institution="H6108001", date_from=date(2026, 2, 3), date_to=date(2026, 2, 9)),
    FindingQuery(institution="P4401001", psn_no="SYN0"),
    FindingQuery(psn_no="SYN1"),
    FindingQuery(psn_no="SYN2", date_from=date(2026, 2, 10)),
    FindingQuery(),
    FindingQuery(rule_id="trace-code-reuse"),
    FindingQuery(date_to=date(2026, 2, 5)),
    FindingQuery(psn_no="SYN1", date_from=date.min, date_to=date.max),  # the calendar's edges (a 500 once)
]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: ",".join(f"{k}={v}" for k, v in vars(q).items() if v) or "all")
@pytest.mark.parametrize("limit", [3, 50])
def test_queries_list_the_matching_findings_newest_first_page_by_page(
    backend: Backend, query: FindingQuery, limit: int
) -> None:
    # Given 30 findings stored through the repository
    findings = seed(backend)
    # When the store is paged through
    got = all_pages(backend.store, query, limit)
    # Then it lists exactly the matching findings, newest first (ties by id)
    want = expected(findings, query)
    assert want, "the query must match something to prove anything"
    indexed = query.institution is not None or query.psn_no is not None
    if indexed or backend.ordered_scan:
        assert got == want
    else:  # DynamoDB answers a regulator's unfiltered listing with a Scan: table order (docs/api.md)
        assert sorted(got) == sorted(want) and len(got) == len(want)


def test_get_answers_the_finding_with_its_review(backend: Backend) -> None:
    findings = seed(backend)
    one = backend.store.get(findings[5].finding_id)
    assert one is not None
    assert one == view(findings[5], None)
    assert one.review is None
    assert backend.store.get("0" * 32) is None


def test_reviews_and_figures_and_status_filters(backend: Backend) -> None:
    findings = seed(backend)
    at = datetime(2026, 3, 1, 12, 0)
    # When four reviews are recorded, one of them changing confirmed to dismissed
    plan = [
        (findings[0], "confirmed"),
        (findings[3], "confirmed"),
        (findings[1], "dismissed"),
        (findings[3], "dismissed"),
    ]
    answers = [backend.store.review(f.finding_id, status, "核实", "auditor", at) for f, status in plan]  # type: ignore[arg-type]
    # Then each answer is the reviewed finding, and the figures count the latest review per finding
    assert [(a.finding_id, a.status, a.review.status if a.review else None) for a in answers] == [
        (f.finding_id, s, s) for f, s in plan
    ]
    figures = backend.store.rule_figures(RULES)
    assert (figures["early-refill"].confirmed, figures["early-refill"].dismissed) == (1, 1)
    assert (figures["over-quantity"].confirmed, figures["over-quantity"].dismissed) == (0, 1)
    assert figures["early-refill"].precision == 0.5
    assert "trace-code-reuse" not in figures or figures["trace-code-reuse"].precision is None
    # And status filters see the reviews
    confirmed = FindingQuery(institution="P4401001", status="confirmed")
    assert all_pages(backend.store, confirmed, 5) == [findings[0].finding_id]
    assert sorted(all_pages(backend.store, FindingQuery(status="dismissed"), 5)) == sorted(
        [findings[1].finding_id, findings[3].finding_id]
    )
    one = backend.store.get(findings[3].finding_id)
    assert one is not None and one.status == "dismissed" and one.review is not None
    assert one.review == Review(status="dismissed", reason="核实", reviewer="auditor", reviewed_at=at)


def test_a_review_survives_the_rules_rewriting_the_finding(backend: Backend) -> None:
    findings = seed(backend)
    backend.store.review(findings[0].finding_id, "confirmed", "核实", "auditor", datetime(2026, 3, 1))
    # When the patient is re-screened and the finding's figures change
    changed = findings[0].model_copy(update={"figures": {"days": 3}})
    others = [f for s, f in make_findings() if s == "patient:SYN0" and f.finding_id != changed.finding_id]
    backend.repo().replace_findings("patient:SYN0", [changed, *others])
    # Then the review and its status are kept, with the new figures
    after = backend.store.get(findings[0].finding_id)
    assert after is not None
    assert after.status == "confirmed" and after.figures == {"days": 3}
    assert after.review is not None and after.review.reason == "核实"


def test_errors(backend: Backend) -> None:
    findings = seed(backend)
    # An unknown finding cannot be reviewed
    with pytest.raises(NotFound):
        backend.store.review("0" * 32, "confirmed", "r", "a", datetime(2026, 3, 1))
    # A superseded one neither
    scope = "patient:SYN1"
    gone = findings[1]
    backend.repo().replace_findings(scope, [f for s, f in make_findings() if s == scope and f != gone])
    with pytest.raises(Conflict):
        backend.store.review(gone.finding_id, "confirmed", "r", "a", datetime(2026, 3, 1))
    assert gone.finding_id not in all_pages(backend.store, FindingQuery(psn_no="SYN1"), 10)
    assert all_pages(backend.store, FindingQuery(psn_no="SYN1", status="superseded"), 10) == [gone.finding_id]
    # A token the API never issued is a 400 naming next_token
    with pytest.raises(InvalidField) as bad:
        backend.store.query(FindingQuery(institution="P4401001"), 2, "bm90IGEga2V5")
    assert bad.value.field == "next_token"
