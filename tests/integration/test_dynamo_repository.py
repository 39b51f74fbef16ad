"""DynamoRepository on moto, what is particular to DynamoDB: items and write units,
batched reads and writes with retries, activity counters. The semantics shared with the
in-memory and SQLite repositories are the contract of tests/contract/."""

from __future__ import annotations

from typing import Any

from conftest import Stack, make_finding, make_line, tables_of

from rxguard.dynamo import REQUESTS, DynamoRepository, encode_line, purchase_sort_key


def _repo(stack: Stack, **kwargs: Any) -> DynamoRepository:
    return DynamoRepository(tables_of(stack), stack.ddb, **kwargs)


def _count_items(stack: Stack, table: str) -> int:
    return int(stack.ddb.scan(TableName=table, Select="COUNT")["Count"])


def test_recording_the_same_lines_twice_counts_them_once(stack: Stack) -> None:
    # Given three lines of two patients, one sold with a traceability code
    lines = [
        make_line("P1", "1", trace_codes=["81234567890123456789"]),
        make_line("P1", "2", time="2026-03-20 10:00:00"),
        make_line("P2", "3"),
    ]
    repo = _repo(stack)
    # When they are recorded, then recorded again (a retried chunk / a re-dropped file)
    first = repo.record_lines(lines)
    second = _repo(stack).record_lines(lines)
    # Then the second pass records nothing and the tables hold one item per line and per code
    assert [x.line_id for x in first] == [x.line_id for x in lines]
    assert second == []
    assert _count_items(stack, stack.table("PurchasesTable")) == 3
    assert _count_items(stack, stack.table("TraceCodesTable")) == 1
    sales = repo.load_trace_sales(["81234567890123456789"])["81234567890123456789"]
    assert [s.line_id for s in sales] == [lines[0].line_id]


def test_a_purchase_item_fits_one_write_unit(stack: Stack) -> None:
    # Given a line with long optional fields filled in
    line = make_line(
        "P12345678901234567890",
        "20260301000123456789",
        trace_codes=["81234567890123456789", "81234567890123456790"],
        sin_dos_dscr="每次1片",
        used_frqu_dscr="每日三次",
        rxno="RX2026030100001",
        bilg_dr_codg="D310000001234",
    )
    # When it is encoded as a purchase item
    size = sum(len(x.encode()) for x in ("psn_no", line.psn_no, "sk", purchase_sort_key(line), "d", encode_line(line)))
    # Then the item (names + values + the TTL number + the writer) stays below 1 KB: one write unit
    assert size + len("expires_at") + 21 + len("w") + len("0123456789abcdef-9999") < 1024


def test_each_new_line_costs_one_write_and_a_repeat_one_failed_conditional_write(stack: Stack) -> None:
    # Given 20 lines without trace codes
    lines = [make_line(f"P{i % 5}", str(i), time=f"2026-03-{1 + i:02d} 09:00:00") for i in range(20)]
    repo = _repo(stack)
    repo.tables = repo.tables.__class__(**{**repo.tables.__dict__, "aggregates": None})  # count purchases only
    REQUESTS.hook(stack.ddb)
    REQUESTS.reset()
    # When they are recorded
    repo.record_lines(lines)
    # Then exactly one PutItem per line was sent, and no read
    assert REQUESTS.snapshot().get("dynamodb.PutItem") == 20
    assert REQUESTS.dynamodb_reads == 0


class _Flaky:
    """A DynamoDB client that leaves half of each batch unprocessed on its first call."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.get_calls = 0
        self.write_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.get_calls += 1
        if self.get_calls == 1:
            ((table, req),) = RequestItems.items()
            keys = req["Keys"]
            answer = self.real.batch_get_item(RequestItems={table: {"Keys": keys[: len(keys) // 2]}})
            answer["UnprocessedKeys"] = {table: {"Keys": keys[len(keys) // 2 :]}}
            return dict(answer)
        return dict(self.real.batch_get_item(RequestItems=RequestItems))

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.write_calls += 1
        if self.write_calls == 1:
            ((table, reqs),) = RequestItems.items()
            self.real.batch_write_item(RequestItems={table: reqs[: len(reqs) // 2]})
            return {"UnprocessedItems": {table: reqs[len(reqs) // 2 :]}}
        return dict(self.real.batch_write_item(RequestItems=RequestItems))


def test_unprocessed_keys_and_items_are_retried(stack: Stack) -> None:
    # Given 6 trace codes recorded, and a client that leaves half of the first batch unprocessed
    codes = [f"8123456789012345678{i}" for i in range(6)]
    _repo(stack).record_lines([make_line(f"P{i}", str(i), trace_codes=[c]) for i, c in enumerate(codes)])
    flaky = _Flaky(stack.ddb)
    repo = DynamoRepository(tables_of(stack), flaky)
    # When the sales are loaded and 4 new findings written through it
    sales = repo.load_trace_sales(codes)
    findings = [make_finding(evidence=(f"H1/{i}",)) for i in range(4)]
    changes = repo.replace_findings("patient:P0001", findings)
    # Then nothing was lost: every code has its sale, every finding is stored
    assert flaky.get_calls == 2 and flaky.write_calls == 2
    assert all(len(sales[c]) == 1 for c in codes)
    assert len(changes.new) == 4
    assert len(_repo(stack).load_findings(["patient:P0001"])["patient:P0001"]) == 4


def test_activity_counts_only_newly_recorded_monitored_lines(stack: Stack) -> None:
    # Given two monitored lines of one institution and prescriber in March, one unmonitored
    lines = [
        make_line("P1", "1", bilg_dr_codg="D1"),
        make_line("P2", "2", units=30, bilg_dr_codg="D1"),
        make_line("P3", "3", atc=None, drug="X00"),
    ]
    repo = _repo(stack)
    # When they are recorded twice and one of them is flagged twice
    repo.record_lines(lines)
    repo.record_lines(lines)
    unit = ("2026-03", "institution:H31000000001")
    repo.update_flags({unit: {lines[0].line_id}}, {})
    repo.update_flags({unit: {lines[0].line_id}}, {})
    # Then the month's activity counts each monitored line once, for the institution and
    # the prescriber, with the flagged line once
    activity = {a.scope: a for a in repo.load_activity(["2026-03"])}
    assert activity["institution:H31000000001"].monitored_lines == 2
    assert activity["institution:H31000000001"].flagged_lines == (lines[0].line_id,)
    assert activity["institution:H31000000001"].admdvs == "310000"
    assert activity["prescriber:D1"].monitored_lines == 2
    assert activity["prescriber:D1"].fixmedins_code == "H31000000001"
    # And removing the flag clears it
    repo.update_flags({}, {unit: {lines[0].line_id}})
    assert {a.scope: a for a in repo.load_activity(["2026-03"])}["institution:H31000000001"].flagged_lines == ()


class _QueryCounter:
    """A DynamoDB client that counts Query calls on the findings index."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.findings_queries = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def query(self, **kwargs: Any) -> Any:
        if kwargs.get("IndexName") == "by_scope":
            self.findings_queries += 1
        return self.real.query(**kwargs)


def test_findings_of_new_patients_and_new_trace_codes_are_not_queried(stack: Stack) -> None:
    # Given a patient with a finding already stored, and a chunk with that patient and two new ones
    code_old, code_new = "81234567890123456789", "81234567890123456790"
    _repo(stack).record_lines([make_line("P1", "1", trace_codes=[code_old])])
    _repo(stack).replace_findings("patient:P1", [make_finding(psn_no="P1", evidence=("H1/1",))])
    chunk = [
        make_line("P1", "2", time="2026-04-01 09:00:00", trace_codes=[code_old]),
        make_line("P2", "3", trace_codes=[code_new]),
        make_line("P3", "4"),
    ]
    counting = _QueryCounter(stack.ddb)
    repo = DynamoRepository(tables_of(stack), counting)
    # When the chunk is recorded and the findings of its scopes loaded
    repo.record_lines(chunk)
    repo.load_history(["P1", "P2", "P3"])
    scopes = ["patient:P1", "patient:P2", "patient:P3", f"trace:{code_old}", f"trace:{code_new}"]
    current = repo.load_findings(scopes)
    # Then only the scopes with a past (P1 and the code sold before) were queried, and
    # P1's stored finding is there
    assert counting.findings_queries == 2
    assert [f.psn_no for f in current["patient:P1"]] == ["P1"]
    assert current["patient:P2"] == current["patient:P3"] == current[f"trace:{code_new}"] == []


def test_a_chunk_that_died_after_recording_counts_its_lines_once_when_retried(stack: Stack) -> None:
    # Given a chunk whose first attempt recorded its lines but died before its activity counters
    lines = [make_line(f"P{i}", str(i), bilg_dr_codg="D1") for i in range(4)]
    dead = DynamoRepository(tables_of(stack), stack.ddb, writer="batchA-0")
    for line in lines:
        dead._record_one(line)
    # When the chunk is retried (same writer), retried again, and the lines re-sent by another batch
    DynamoRepository(tables_of(stack), stack.ddb, writer="batchA-0").record_lines(lines)
    DynamoRepository(tables_of(stack), stack.ddb, writer="batchA-0").record_lines(lines)
    DynamoRepository(tables_of(stack), stack.ddb, writer="batchB-0").record_lines(lines)
    # Then the month's activity counts each line exactly once, for the institution and the prescriber
    activity = {a.scope: a.monitored_lines for a in _repo(stack).load_activity(["2026-03"])}
    assert activity == {"institution:H31000000001": 4, "prescriber:D1": 4}


def test_a_chunks_counters_are_packed_into_few_items_and_read_back_whole(stack: Stack) -> None:
    # Given two chunks whose monitored lines name 300 prescribers in one month
    first = [make_line(f"P{i}", f"a{i}", bilg_dr_codg=f"D{i:03d}") for i in range(300)]
    second = [make_line(f"Q{i}", f"b{i}", bilg_dr_codg=f"D{i:03d}") for i in range(0, 300, 2)]
    # When each chunk records its lines (twice, as a retry would)
    for writer, lines in (("batchA-0", first), ("batchA-1", second), ("batchA-1", second)):
        DynamoRepository(tables_of(stack), stack.ddb, writer=writer).record_lines(lines)
    # Then each writer's 301 unit counters sit in one item (write units are billed per item)
    items = stack.ddb.scan(TableName=tables_of(stack).aggregates)["Items"]
    assert len(items) == 2
    # And the month's activity adds both chunks per unit, every line once
    activity = {a.scope: a.monitored_lines for a in _repo(stack).load_activity(["2026-03"])}
    assert activity["institution:H31000000001"] == 450
    assert activity["prescriber:D000"] == 2
    assert activity["prescriber:D001"] == 1
    assert len(activity) == 301
