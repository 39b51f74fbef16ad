"""`DynamoFindingsStore` on the FindingsTable of template.yaml (moto) answers like
`InMemoryFindingsStore` over the same findings: filters, order, pagination, reviews,
review figures; and a review survives the workflow re-writing the finding."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta

import pytest

from rxguard.api.errors import Conflict, InvalidField, NotFound
from rxguard.api.store import FindingQuery, FindingsStore, InMemoryFindingsStore
from rxguard.api.store_dynamo import DynamoFindingsStore
from rxguard.dynamo import DynamoRepository, TableNames
from rxguard.models import Finding, Severity
from rxguard.offline import Environment
from rxguard.repository import HistoryRepository, InMemoryRepository

RULES = ["early-refill", "over-quantity", "trace-code-reuse"]
INSTITUTIONS = ["P4401001", "P4401002", "H6108001"]


def make_findings() -> list[tuple[str, Finding]]:
    """30 findings over 3 institutions, 4 patients, 3 rules, 15 days, with their scopes."""
    out = []
    start = datetime(2026, 2, 1, 9, 0)
    for i in range(30):
        patient = f"SYN{i % 4}"
        line = f"{INSTITUTIONS[i % 3]}/L{i}"
        rule = RULES[i % 3]
        found = Finding(
            finding_id=Finding.make_id(rule, f"patient:{patient}", [line]),
            rule_id=rule,
            rule_version=1,
            severity=Severity.MEDIUM,
            subject_type="patient",
            psn_no=patient,
            fixmedins_code=INSTITUTIONS[i % 3],
            occurred_at=start + timedelta(days=i // 2, hours=i % 2),
            evidence=[line],
            explanation_zh="说明",
            explanation_en="explanation",
        )
        out.append((f"patient:{patient}", found))
    return out


def seed(repo: HistoryRepository, findings: list[tuple[str, Finding]]) -> None:
    by_scope: dict[str, list[Finding]] = {}
    for scope, found in findings:
        by_scope.setdefault(scope, []).append(found)
    for scope, items in by_scope.items():
        repo.replace_findings(scope, items)


@pytest.fixture(scope="module")
def env() -> Iterator[Environment]:
    with Environment() as environment:
        yield environment


@pytest.fixture
def stores(env: Environment) -> Iterator[tuple[FindingsStore, FindingsStore, DynamoRepository]]:
    table = env.name("FindingsTable")
    ddb = env.clients.dynamodb
    for item in ddb.scan(TableName=table, ProjectionExpression="finding_id")["Items"]:  # a clean table per test
        ddb.delete_item(TableName=table, Key={"finding_id": item["finding_id"]})
    purchases = env.name("PurchasesTable")  # and no patient head keeping a copy of the deleted findings
    for item in ddb.scan(TableName=purchases, ProjectionExpression="psn_no, sk")["Items"]:
        ddb.delete_item(TableName=purchases, Key={"psn_no": item["psn_no"], "sk": item["sk"]})
    findings = make_findings()
    memory_repo = InMemoryRepository()
    seed(memory_repo, findings)
    tables = TableNames(
        purchases=env.name("PurchasesTable"),
        trace_codes=env.name("TraceCodesTable"),
        findings=table,
        batches=env.name("BatchesTable"),
        aggregates=env.name("AggregatesTable"),
    )
    dynamo_repo = DynamoRepository(tables, ddb)
    seed(dynamo_repo, findings)
    yield InMemoryFindingsStore(memory_repo), DynamoFindingsStore(table, ddb), dynamo_repo


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


QUERIES = [
    FindingQuery(institution="P4401001"),
    FindingQuery(institution="P4401002", rule_id="over-quantity"),
    FindingQuery(institution="H6108001", date_from=date(2026, 2, 3), date_to=date(2026, 2, 9)),
    FindingQuery(institution="P4401001", psn_no="SYN0"),
    FindingQuery(psn_no="SYN1"),
    FindingQuery(psn_no="SYN2", date_from=date(2026, 2, 10)),
]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: ",".join(f"{k}={v}" for k, v in vars(q).items() if v))
def test_indexed_queries_answer_like_the_in_memory_store_page_by_page(
    stores: tuple[FindingsStore, FindingsStore, DynamoRepository], query: FindingQuery
) -> None:
    memory, dynamo, _ = stores
    # When both stores are paged through three at a time
    expected = all_pages(memory, query, 3)
    got = all_pages(dynamo, query, 3)
    # Then they list the same findings in the same order (newest first)
    assert expected, "the query must match something to prove anything"
    assert got == expected


def test_unfiltered_and_rule_scans_list_the_same_set(
    stores: tuple[FindingsStore, FindingsStore, DynamoRepository],
) -> None:
    memory, dynamo, _ = stores
    for query in (FindingQuery(), FindingQuery(rule_id="trace-code-reuse"), FindingQuery(date_to=date(2026, 2, 5))):
        assert sorted(all_pages(dynamo, query, 4)) == sorted(all_pages(memory, query, 4))


def test_reviews_and_figures_agree_and_survive_a_rewrite(
    stores: tuple[FindingsStore, FindingsStore, DynamoRepository],
) -> None:
    memory, dynamo, dynamo_repo = stores
    findings = [f for _, f in make_findings()]
    at = datetime(2026, 3, 1, 12, 0)
    # When the same reviews go to both stores (one changed from confirmed to dismissed)
    plan = [
        (findings[0], "confirmed"),
        (findings[3], "confirmed"),
        (findings[1], "dismissed"),
        (findings[3], "dismissed"),
    ]
    for store in (memory, dynamo):
        for found, status in plan:
            store.review(found.finding_id, status, "核实", "auditor", at)  # type: ignore[arg-type]
    # Then figures, statuses and status filters agree
    assert dynamo.rule_figures(RULES) == memory.rule_figures(RULES)
    figures = dynamo.rule_figures(RULES)
    assert (figures["early-refill"].confirmed, figures["early-refill"].dismissed) == (1, 1)
    confirmed = FindingQuery(institution="P4401001", status="confirmed")
    assert all_pages(dynamo, confirmed, 5) == all_pages(memory, confirmed, 5) == [findings[0].finding_id]
    one = dynamo.get(findings[3].finding_id)
    assert one is not None and one.status == "dismissed" and one.review is not None
    assert one.review.status == "dismissed"
    # When the workflow re-screens the patient and the finding's figures change
    changed = findings[0].model_copy(update={"figures": {"days": 3}})
    scope_findings = [f for s, f in make_findings() if s == "patient:SYN0" and f.finding_id != changed.finding_id]
    dynamo_repo.replace_findings("patient:SYN0", [changed, *scope_findings])
    # Then the review and its status are kept
    after = dynamo.get(findings[0].finding_id)
    assert after is not None
    assert after.status == "confirmed" and after.figures == {"days": 3}
    assert after.review is not None and after.review.reason == "核实"


def test_errors(stores: tuple[FindingsStore, FindingsStore, DynamoRepository]) -> None:
    _, dynamo, dynamo_repo = stores
    with pytest.raises(NotFound):
        dynamo.review("0" * 32, "confirmed", "r", "a", datetime(2026, 3, 1))
    gone = make_findings()[1]
    dynamo_repo.replace_findings(gone[0], [f for s, f in make_findings() if s == gone[0] and f != gone[1]])
    with pytest.raises(Conflict):
        dynamo.review(gone[1].finding_id, "confirmed", "r", "a", datetime(2026, 3, 1))
    with pytest.raises(InvalidField):
        dynamo.query(FindingQuery(institution="P4401001"), 2, "bm90IGEga2V5")
