"""DynamoRepository on moto, what is particular to DynamoDB: items and write units,
batched reads and writes with retries, activity counters. The semantics shared with the
in-memory and SQLite repositories are the contract of tests/contract/."""

from __future__ import annotations

from typing import Any

from conftest import Stack, make_finding, make_line, tables_of

from rxguard.dynamo import (
    PACK_SLICE_BYTES,
    REGISTRY_PK,
    REQUESTS,
    DynamoRepository,
    line_record,
    pack,
    pack_lines,
    unpack,
    unpack_lines,
)


def _repo(stack: Stack, **kwargs: Any) -> DynamoRepository:
    return DynamoRepository(tables_of(stack), stack.ddb, **kwargs)


def _count_items(stack: Stack, table: str) -> int:
    items = stack.ddb.scan(TableName=table)["Items"]
    return sum(1 for i in items if i.get("psn_no", {}).get("S") != REGISTRY_PK)


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
    # Then the second pass records nothing and the tables hold one packed item per patient
    # (its head) and one per trace-code bucket
    assert [x.line_id for x in first] == [x.line_id for x in lines]
    assert second == []
    assert _count_items(stack, stack.table("PurchasesTable")) == 2
    assert _count_items(stack, stack.table("TraceCodesTable")) == 1
    sales = repo.load_trace_sales(["81234567890123456789"])["81234567890123456789"]
    assert [s.line_id for s in sales] == [lines[0].line_id]


def test_a_patient_month_packs_into_far_less_than_a_write_unit_per_line(stack: Stack) -> None:
    # Given a month of one patient: 8 lines with long optional fields filled in
    lines = [
        make_line(
            "P12345678901234567890",
            f"2026030100012345678{i}",
            time=f"2026-03-{1 + 3 * i:02d} 09:00:00",
            trace_codes=[f"8123456789012345{i:04d}"],
            sin_dos_dscr="每次1片",
            used_frqu_dscr="每日三次",
            rxno=f"RX202603010000{i}",
            bilg_dr_codg="D310000001234",
        )
        for i in range(8)
    ]
    # When they are packed (with their writer) and unpacked
    payload = pack_lines(lines, {x.line_id: "0123456789abcdef-9999" for x in lines})
    # Then every field comes back, and the pack costs under 200 bytes a line (JSON alone: ~600)
    assert unpack_lines("P12345678901234567890", payload) == lines
    raw = sum(len(str(line_record(x)).encode()) for x in lines)
    assert len(payload) < 200 * len(lines) < raw


def test_pack_round_trips_small_and_compressible_data() -> None:
    # Given a tiny value (compression does not pay) and a repetitive one (it does)
    tiny, big = {"a": 1}, [{"name": "阿莫西林胶囊", "n": i} for i in range(500)]
    # When packed and unpacked
    # Then both round-trip, the tiny one raw (`j`), the big one compressed (`z`) and smaller
    assert unpack(pack(tiny)) == tiny and pack(tiny)[:1] == b"j"
    assert unpack(pack(big)) == big and pack(big)[:1] == b"z"
    assert len(pack(big)) < len(str(big).encode()) / 5


def test_a_patient_pack_over_400_kb_is_sliced_and_read_back_whole(stack: Stack) -> None:
    # Given one patient-month of 5,000 lines whose free-text fields do not compress (a pack over 400 KB)
    import random

    rng = random.Random(5)
    lines = [
        make_line(
            "PBIG",
            f"L{i:05d}",
            time=f"2026-03-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00",
            rxno="".join(rng.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(120)),
        )
        for i in range(5000)
    ]
    assert len(pack_lines(lines)) > 400_000 > PACK_SLICE_BYTES
    # When they are recorded
    recorded = _repo(stack).record_lines(lines)
    # Then the head is cut into slices, each item under DynamoDB's 400 KB limit, and a fresh
    # read (one Query for one patient, and BatchGetItem rounds for many) gives every line back
    items = [i for i in stack.ddb.scan(TableName=stack.table("PurchasesTable"))["Items"] if i["psn_no"]["S"] == "PBIG"]
    assert len(items) >= 2 and all(len(i["p"]["B"]) <= PACK_SLICE_BYTES for i in items)
    assert len(recorded) == 5000
    expected = sorted(lines, key=lambda x: (x.fee_ocur_time, x.line_id))
    assert _repo(stack).load_history(["PBIG"])["PBIG"] == expected
    many = _repo(stack).load_history(["PBIG", "P1", "P2", "P3", "P4"])
    assert many["PBIG"] == expected
    # and a retry records nothing again
    assert _repo(stack).record_lines(lines[:10]) == []


def test_recording_a_chunk_takes_a_few_batched_requests_not_one_per_line(stack: Stack) -> None:
    # Given 200 lines of 50 patients without trace codes
    lines = [make_line(f"P{i % 50}", str(i), time=f"2026-03-{1 + i % 28:02d} 09:00:00") for i in range(200)]
    repo = _repo(stack)
    repo.tables = repo.tables.__class__(**{**repo.tables.__dict__, "aggregates": None})  # count purchases only
    REQUESTS.hook(stack.ddb)
    REQUESTS.reset()
    # When they are recorded
    repo.record_lines(lines)
    repo.flush()
    # Then: the registry entry and its "finished" mark, one BatchGetItem for the 50 heads,
    # the registry query, and two BatchWriteItem (25 heads each): 6 requests for 200 lines
    calls = REQUESTS.snapshot()
    assert calls.get("dynamodb.BatchWriteItem") == 2
    assert calls.get("dynamodb.BatchGetItem") == 1
    assert calls.get("dynamodb.PutItem") == 2
    assert calls.get("dynamodb.Query") == 1
    assert REQUESTS.dynamodb_reads + REQUESTS.dynamodb_writes == 6


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
    codes = [f"8{i}23456789012345678{i}" for i in range(6)]  # six trace-code buckets
    _repo(stack).record_lines([make_line(f"P{i}", str(i), trace_codes=[c]) for i, c in enumerate(codes)])
    flaky = _Flaky(stack.ddb)
    repo = DynamoRepository(tables_of(stack), flaky)
    # When the sales are loaded and 4 new findings written through it
    sales = repo.load_trace_sales(codes)
    findings = [make_finding(evidence=(f"H1/{i}",)) for i in range(4)]
    changes = repo.replace_findings("patient:P0001", findings)
    # Then nothing was lost: every code has its sale, every finding is stored
    assert flaky.get_calls >= 2 and flaky.write_calls >= 2
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
    # Then only the code sold before was queried (a patient's findings come with its head),
    # and P1's stored finding is there
    assert counting.findings_queries == 1
    assert [f.psn_no for f in current["patient:P1"]] == ["P1"]
    assert current["patient:P2"] == current["patient:P3"] == current[f"trace:{code_new}"] == []


def test_a_chunk_that_died_after_recording_counts_its_lines_once_when_retried(stack: Stack) -> None:
    # Given a chunk whose first attempt recorded its lines but died before its activity counters
    lines = [make_line(f"P{i}", str(i), bilg_dr_codg="D1") for i in range(4)]
    dead = DynamoRepository(tables_of(stack), stack.ddb, writer="batchA-0")
    dead.tables = dead.tables.__class__(**{**dead.tables.__dict__, "aggregates": None})  # died before the counters
    dead.record_lines(lines)
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
