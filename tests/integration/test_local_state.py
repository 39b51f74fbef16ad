"""What is particular to the SQLite state (rxguard.local.state): several processes writing
one state at once, a locked database, schema versions, institution activity computed from
the stored lines, batch records, counters. The semantics it shares with the other
adapters are the contract of tests/contract/."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rxguard.engine import activity_from_lines, flagged_line_ids
from rxguard.local.state import (
    MIGRATIONS,
    SCHEMA_VERSION,
    STATE_FILE,
    State,
    StateBusy,
    StateError,
    content_batch_id,
    encode_line,
)
from rxguard.models import ClaimLine, Finding, InstitutionKind, Severity
from tests.conftest import CHILD_PYTHONPATH
from tests.factories import make_finding

ROOT = Path(__file__).resolve().parents[2]


def line(
    psn: str, sn: str, *, inst: str = "H31000000001", when: str = "2026-03-01 09:00:00", **extra: object
) -> ClaimLine:
    at = datetime.fromisoformat(when)
    monitored = bool(extra.pop("monitored", True))
    values: dict[str, object] = {
        "feedetl_sn": sn,
        "fixmedins_code": inst,
        "institution_kind": InstitutionKind.from_code(inst),
        "admdvs": "310000",
        "psn_no": psn,
        "mdtrt_id": f"{inst}-{at:%Y%m%d}",
        "med_type": "11",
        "fee_ocur_time": at,
        "med_list_codg": "XA10BA02A001" if monitored else "X0000",
        "cnt": 1,
        "pric": 10.0,
        "det_item_fee_sumamt": 10.0,
        "quantity_units": 30,
        "monitored": monitored,
        "atc_code": "A10BA02" if monitored else None,
    }
    values.update(extra)
    return ClaimLine.model_validate(values)


def finding(rule: str, psn: str, trigger: list[str], severity: Severity = Severity.HIGH) -> Finding:
    text = {"explanation_zh": "说明", "explanation_en": "explanation"}
    at, figures = datetime(2026, 3, 1), {"trigger_lines": trigger}
    return make_finding(rule, psn, trigger, severity=severity, admdvs=None, occurred_at=at, figures=figures, **text)


_WRITER = """
import sys
from datetime import datetime, timedelta
from rxguard.local.state import State
from rxguard.models import ClaimLine, Finding, Severity

directory, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
state = State.open(directory)
repo = state.repository()
start = datetime(2026, 1, 1)
numbers = []
for batch in range(0, count, 50):
    lines = [
        ClaimLine(feedetl_sn=f"{name}{i}", fixmedins_code="H1", institution_kind="hospital", psn_no=f"P{i % 97}",
                  mdtrt_id="v", med_type="11", fee_ocur_time=start + timedelta(minutes=i), med_list_codg="X",
                  cnt=1, pric=1, det_item_fee_sumamt=1, quantity_units=1, trace_codes=[f"{i % 13:020d}"])
        for i in range(batch, min(count, batch + 50))
    ]
    assert len(repo.record_lines(lines)) == len(lines)
    for psn in sorted({x.psn_no for x in lines}):
        found = Finding(finding_id=Finding.make_id("early-refill", psn, [name]), rule_id="early-refill",
                        rule_version=1, severity=Severity.HIGH, subject_type="patient", psn_no=psn,
                        occurred_at=start, evidence=[name], explanation_zh="z", explanation_en="e")
        repo.replace_findings(f"{name}:{psn}", [found])  # a scope per writer: both must stay
    numbers.append(state.next_counter("letters"))
print(",".join(map(str, numbers)))
"""


def test_two_processes_writing_one_state_keep_every_write(tmp_path: Path) -> None:
    # Given a new state directory and two writer processes started together
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), name, "1500"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    # When both record 1,500 lines in batches, replace findings and draw counter numbers at once
    outputs = [p.communicate(timeout=300) for p in procs]
    # Then both succeeded, every line of both is there, and nothing is corrupt
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    with State.open(tmp_path) as state:
        repo = state.repository()
        assert repo.count_lines() == 3000
        history = repo.load_history([f"P{i}" for i in range(97)])
        assert sum(len(v) for v in history.values()) == 3000
        assert {x.feedetl_sn[0] for v in history.values() for x in v} == {"a", "b"}
        assert state.read("PRAGMA integrity_check") == [("ok",)]
        # And every patient has the findings of both writers; the counter numbers are all distinct
        current = repo.load_findings([f"{name}:P{i}" for name in "ab" for i in range(97)])
        assert sorted(len(v) for v in current.values()) == [1] * 194
    numbers = [int(n) for out, _ in outputs for n in out.strip().split(",")]
    assert sorted(numbers) == list(range(1, 61))


def test_a_writer_waits_for_the_lock_then_writes(tmp_path: Path) -> None:
    # Given another process's connection holding the write lock for half a second
    State.open(tmp_path).close()
    holder = sqlite3.connect(tmp_path / STATE_FILE, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, lambda: holder.execute("COMMIT")).start()
    # When rxguard records a line meanwhile (busy timeout 10 s)
    with State.open(tmp_path, busy_timeout=10) as state:
        started = time.monotonic()
        recorded = state.repository().record_lines([line("P1", "1")])
        waited = time.monotonic() - started
    # Then it waited for the lock and wrote
    assert [x.line_id for x in recorded] == ["H31000000001/1"]
    assert waited >= 0.3
    holder.close()


def test_a_writer_that_cannot_get_the_lock_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    State.open(tmp_path).close()
    holder = sqlite3.connect(tmp_path / STATE_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with State.open(tmp_path, busy_timeout=0.2) as state:
            # When the lock stays taken beyond the busy timeout
            with pytest.raises(StateBusy) as busy:
                state.repository().record_lines([line("P1", "1")])
            # Then the error names the file and the cause, and readers still read
            message = str(busy.value)
            assert str(tmp_path / STATE_FILE) in message and "locked by another rxguard process" in message
            assert state.repository().load_history(["P1"]) == {"P1": []}
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with State.open(tmp_path) as state:
        assert state.repository().count_lines() == 0


def test_schema_versions(tmp_path: Path) -> None:
    with State.open(tmp_path) as state:
        assert state.schema_version == SCHEMA_VERSION == max(MIGRATIONS)
    with State.open(tmp_path) as state:  # reopening migrates nothing and keeps the data
        state.repository().record_lines([line("P1", "1")])
    with State.open(tmp_path) as state:
        assert state.repository().count_lines() == 1
    conn = sqlite3.connect(tmp_path / STATE_FILE)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StateError, match="schema version 99 was written by a newer rxguard"):
        State.open(tmp_path)


def test_a_state_of_the_first_version_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    # Given a state written at schema version 1 (the first release), with a line and a counter
    # (written as the first release wrote it: later versions add columns its rows lack)
    first = line("P1", "1")
    conn = sqlite3.connect(tmp_path / STATE_FILE, isolation_level=None)
    conn.executescript(MIGRATIONS[1] + "PRAGMA user_version=1;")
    conn.execute(
        "INSERT INTO lines (line_id, psn_no, t, period, fixmedins_code, bilg_dr_codg, admdvs, monitored, body) "
        "VALUES (?, ?, ?, ?, ?, NULL, ?, 1, ?)",
        (
            first.line_id,
            first.psn_no,
            first.fee_ocur_time.strftime("%Y-%m-%dT%H:%M:%S.%f"),
            first.fee_ocur_time.strftime("%Y-%m"),
            first.fixmedins_code,
            first.admdvs,
            encode_line(first),
        ),
    )
    conn.execute("INSERT INTO counters (name, value) VALUES ('letters', 1)")
    conn.close()
    # When the current rxguard opens it
    with State.open(tmp_path) as state:
        # Then it is migrated to the current version, and the data is still there
        assert state.schema_version == SCHEMA_VERSION > 1
        assert [x.line_id for x in state.repository().load_history(["P1"])["P1"]] == ["H31000000001/1"]
        assert state.next_counter("letters") == 2
        assert state.keep("letter/2026/H1", 7) == 7  # a v2 table


def test_kept_numbers_first_writer_wins(tmp_path: Path) -> None:
    with State.open(tmp_path) as state:
        assert state.kept("letter/H1/2026-03") is None
        assert state.keep("letter/H1/2026-03", 5) == 5
        assert state.keep("letter/H1/2026-03", 6) == 5  # a retry with another number keeps the first
    with State.open(tmp_path) as state:
        assert state.kept("letter/H1/2026-03") == 5


def test_not_a_state_file(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="not an rxguard state database"):
        State.open(tmp_path)


class _Catalogue:
    """The one thing activity_from_lines asks the knowledge base: is the drug monitored."""

    def drug(self, code: str) -> object | None:
        return object() if code == "XA10BA02A001" else None


def test_activity_is_the_aggregate_of_the_stored_lines_and_current_findings(tmp_path: Path) -> None:
    # Given lines of two institutions and three prescribers over two months (one unmonitored,
    # one recorded twice), and findings blaming some of them
    lines = [
        line("P1", "1", bilg_dr_codg="D1"),
        line("P2", "2", bilg_dr_codg="D1", admdvs="130000"),
        line("P3", "3", bilg_dr_codg="D1", admdvs="130000"),
        line("P4", "4", inst="P31000000002", bilg_dr_codg="D1"),
        line("P5", "5", inst="P31000000002", bilg_dr_codg="D2", when="2026-04-02 10:00:00"),
        line("P6", "6", inst="P31000000002", when="2026-04-03 10:00:00"),
        line("P7", "7", monitored=False, bilg_dr_codg="D3"),
    ]
    state = State.open(tmp_path)
    repo = state.repository()
    repo.record_lines(lines)
    repo.record_lines(lines[:2])
    ids = [x.line_id for x in lines]
    repo.replace_findings("patient:P1", [finding("early-refill", "P1", [ids[0], ids[1]])])
    repo.replace_findings("patient:P4", [finding("over-quantity", "P4", [ids[3]], Severity.LOW)])  # low: not blamed
    repo.replace_findings("patient:P5", [finding("frequent-visits", "P5", [ids[4]])])  # not a dispensing rule
    repo.replace_findings("patient:P6", [finding("over-quantity", "P6", [ids[5]], Severity.MEDIUM)])
    # And one blamed line no longer blamed after a re-evaluation
    repo.replace_findings("patient:P1", [finding("early-refill", "P1", [ids[1]])])
    # When the activity of both months is loaded
    got = repo.load_activity(["2026-03", "2026-04"])
    # Then it is what the engine computes from the same lines and the current findings
    current = [f for found in repo.load_findings([f"patient:P{i}" for i in range(1, 8)]).values() for f in found]
    want = activity_from_lines(lines, flagged_line_ids(current), _Catalogue())  # type: ignore[arg-type]
    assert got == want
    by_scope = {(a.scope, a.period): a for a in got}
    assert by_scope[("institution:H31000000001", "2026-03")].flagged_lines == (ids[1],)
    assert by_scope[("institution:H31000000001", "2026-03")].admdvs == "130000"
    assert by_scope[("prescriber:D1", "2026-03")].fixmedins_code == "H31000000001"
    assert by_scope[("institution:P31000000002", "2026-04")].flagged_lines == (ids[5],)
    assert repo.load_activity(["2026-05"]) == []
    state.close()


def test_batch_records_are_claimed_by_content(tmp_path: Path) -> None:
    a = tmp_path / "jan.csv"
    b = tmp_path / "copy-of-jan.csv"
    a.write_bytes(b"psn_no,cnt\n1,2\n")
    b.write_bytes(a.read_bytes())
    batch_id = content_batch_id(a)
    assert content_batch_id(b) == batch_id and batch_id.startswith("sha256:")
    with State.open(tmp_path / "state") as state:
        batches = state.batches()
        now = datetime(2026, 3, 1, 9)
        # The first claim wins; the same file under another name is recognised
        assert batches.claim(batch_id, "run-1", {"file": str(a)}, now).claimed
        second = batches.claim(content_batch_id(b), "run-2", {"file": str(b)}, now)
        assert (second.claimed, second.owner) == (False, "run-1")
        assert batches.claim(batch_id, "run-1", {"file": str(a)}, now).claimed  # the same run again
        # A failed batch may be claimed again
        batches.finish(batch_id, "FAILED", {"status": "FAILED", "lines": 1}, "report.json", now)
        assert batches.get(batch_id)["report"] == {"status": "FAILED", "lines": 1}  # type: ignore[index]
        assert batches.claim(batch_id, "run-3", {"file": str(b)}, now).claimed
        record = batches.get(batch_id)
        assert record is not None and (record["execution_id"], record["status"]) == ("run-3", "RUNNING")
        assert batches.get("sha256:unknown") is None


def test_counters_count_per_name(tmp_path: Path) -> None:
    with State.open(tmp_path) as state:
        assert [state.next_counter("letters-2026") for _ in range(3)] == [1, 2, 3]
        assert state.next_counter("other") == 1
    with State.open(tmp_path) as state:
        assert state.next_counter("letters-2026") == 4


def test_threads_share_a_state(tmp_path: Path) -> None:
    # Given one State used by 8 threads at once (serve's threads)
    with State.open(tmp_path) as state:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                repo = state.repository()
                for i in range(20):
                    repo.record_lines([line(f"T{n}", f"{n}-{i}")])
                    assert len(repo.load_history([f"T{n}"])[f"T{n}"]) == i + 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Then every thread saw its own writes and all 160 lines are there
        assert errors == []
        assert state.repository().count_lines() == 160


def test_a_serving_reader_keeps_unchanged_histories_and_sees_every_line_added(tmp_path: Path) -> None:
    # Given a long-lived reader with a line cache (serve's) and a patient's history read once
    with State.open(tmp_path) as state, State.open(tmp_path) as run:
        serving = state.repository(line_cache=1000)
        serving.record_lines(
            [line("A", "1"), line("A", "2", when="2026-03-02 09:00:00"), line("B", "1", inst="P31000000002")]
        )
        first = serving.load_history(["A", "B"])
        # When it is read again with nothing added
        again = serving.load_history(["A", "B"])
        # Then the same lines come back, the same objects, in lists of their own
        assert [x.line_id for x in again["A"]] == ["H31000000001/1", "H31000000001/2"]
        assert all(x is y for x, y in zip(again["A"], first["A"], strict=True))
        again["A"].clear()
        assert len(serving.load_history(["A"])["A"]) == 2
        # When another process's repository (`rxguard run`) adds a line to A, earlier in time
        run.repository().record_lines([line("A", "0", when="2026-02-01 09:00:00")])
        # Then the next read has it, in order, and B is unchanged
        later = serving.load_history(["A", "B", "C"])
        assert [x.line_id for x in later["A"]] == ["H31000000001/0", "H31000000001/1", "H31000000001/2"]
        assert later["B"][0] is first["B"][0] and later["C"] == []
        # And a line this reader records is seen too
        serving.record_lines([line("B", "2", inst="P31000000002", when="2026-03-05 09:00:00")])
        assert [x.line_id for x in serving.load_history(["B"])["B"]] == ["P31000000002/1", "P31000000002/2"]


def test_the_kept_histories_are_bounded_by_the_line_cache(tmp_path: Path) -> None:
    # Given a reader that may keep 3 lines, When it reads a 2-line history, then another
    with State.open(tmp_path) as state:
        serving = state.repository(line_cache=3)
        serving.record_lines(
            [line("A", "1"), line("A", "2", when="2026-03-02 09:00:00"), line("B", "1", inst="P31000000002")]
        )
        serving.record_lines([line("C", "3"), line("C", "4", when="2026-03-02 09:00:00")])
        a = serving.load_history(["A"])["A"]
        serving.load_history(["C"])
        # Then the first is no longer kept (read again: other objects), yet the same lines
        assert [x.line_id for x in serving.load_history(["A"])["A"]] == [x.line_id for x in a]
        assert sum(len(lines) for _, lines, _ in serving._histories.values()) <= 3


def test_a_serving_reader_reads_no_size_while_nothing_is_committed_and_sees_every_commit(tmp_path: Path) -> None:
    # Given a long-lived reader (serve's) that has read A's history, and SQL traced
    with State.open(tmp_path) as state, State.open(tmp_path) as run:
        serving = state.repository(line_cache=1000)
        serving.record_lines([line("A", "1")])
        first = serving.load_history(["A"])["A"]
        statements: list[str] = []
        state.connection().set_trace_callback(statements.append)
        # When it reads A again with nothing committed to the state (checks write checks.db)
        with state.checks().write("a check") as conn:  # (another file: no commit to the state)
            conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        again = serving.load_history(["A"])["A"]
        # Then the kept lines come back without the history's size read
        assert again[0] is first[0] and not [s for s in statements if "count(*)" in s]
        # When a line is committed by another connection, another thread's, or its own
        writers = [
            lambda n: run.repository().record_lines([line("A", n, when=f"2026-03-{n} 09:00:00")]),
            lambda n: _in_thread(lambda: serving.record_lines([line("A", n, when=f"2026-03-{n} 09:00:00")])),
            lambda n: serving.record_lines([line("A", n, when=f"2026-03-{n} 09:00:00")]),
        ]
        for number, write in enumerate(writers, start=11):
            write(str(number))
            # Then the next read has it
            assert serving.load_history(["A"])["A"][-1].line_id == f"H31000000001/{number}"
        assert [s for s in statements if "count(*)" in s]


def _in_thread(func: Callable[[], object]) -> None:
    thread = threading.Thread(target=func)
    thread.start()
    thread.join()


def test_the_page_cache_is_set_per_state_and_the_cli_keeps_the_orchestrators_small(tmp_path: Path) -> None:
    # Given a state opened at the default and one opened for an orchestrator with workers
    from rxguard.local.backend import SqliteBackend
    from rxguard_tools.local_cli import ORCHESTRATOR_CACHE_MB

    default = State.open(tmp_path / "a")
    small = SqliteBackend(tmp_path / "b", cache_mb=ORCHESTRATOR_CACHE_MB)
    try:
        # Then each connection's page cache is what was asked (KiB, negative), the
        # orchestrator's a quarter of the writers'
        assert default.read("PRAGMA cache_size")[0][0] == -64 * 1024
        assert small.state.read("PRAGMA cache_size")[0][0] == -ORCHESTRATOR_CACHE_MB * 1024
        assert ORCHESTRATOR_CACHE_MB < 64
    finally:
        default.close()
        small.close()


def test_a_results_directory_takes_a_file_by_moving_it_and_the_inputs_take_nothing(tmp_path: Path) -> None:
    # Given a chunk file written beside the results directory (Prepare's working directory)
    from rxguard.errors import BatchInputError
    from rxguard.local.objects import InputFiles, LocalObjects

    results = LocalObjects(tmp_path / "results")
    chunk = tmp_path / "results" / "work" / "chunk-00000.jsonl"
    chunk.parent.mkdir(parents=True)
    chunk.write_bytes(b'{"a":1}\n')
    inode = chunk.stat().st_ino
    # When it is stored under a key
    uri = results.move_file("batches/b/chunks/00000.jsonl", chunk)
    # Then the object is that file, renamed (not copied), and the working file is gone
    stored = results.path("batches/b/chunks/00000.jsonl")
    assert uri == stored.as_uri() and not chunk.exists()
    assert stored.read_bytes() == b'{"a":1}\n' and stored.stat().st_ino == inode
    # and the files given to a run are never written to
    source = tmp_path / "claims.csv"
    source.write_bytes(b"x")
    with pytest.raises(BatchInputError, match="read-only"):
        InputFiles({"claims.csv": source}).move_file("claims.csv", stored)
    assert source.read_bytes() == b"x" and stored.exists()


def test_the_months_flagged_lines_are_read_from_the_flagged_table_out(tmp_path: Path) -> None:
    # Given a state (the plan does not depend on its rows)
    from rxguard.local.state import FLAGGED_LINES_OF_MONTHS

    state = State.open(tmp_path)
    try:
        plan = [row[3] for row in state.read("EXPLAIN QUERY PLAN " + FLAGGED_LINES_OF_MONTHS, ('["2025-09"]',))]
    finally:
        state.close()
    # Then the flagged lines (a few percent of the lines) are scanned and each line looked up
    # by its id: not every line of the months probed against them
    assert plan[0].startswith("SCAN f"), plan
    assert any(step.startswith("SEARCH l") and "line_id=?" in step for step in plan), plan


def test_opening_a_state_retries_when_switching_to_wal_finds_it_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a SQLite that answers "database is locked" at once, twice, to the switch to WAL
    # (two processes opening a new state together; seen in CI)
    real_connect = sqlite3.connect
    refusals = {"left": 2}

    class Refusing:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def execute(self, sql: str, *args: object) -> object:
            if sql == "PRAGMA journal_mode=WAL" and refusals["left"]:
                refusals["left"] -= 1
                raise sqlite3.OperationalError("database is locked")
            return self._conn.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(self._conn, name)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: Refusing(real_connect(*a, **k)))
    # When the state is opened
    state = State.open(tmp_path, busy_timeout=5)
    try:
        # Then it waited the lock out and is in WAL mode
        assert refusals["left"] == 0
        assert state.read("PRAGMA journal_mode")[0][0] == "wal"
    finally:
        state.close()


def _stored(state: State) -> tuple[list[object], list[object]]:
    lines = state.read(
        "SELECT line_id, psn_no, t, period, fixmedins_code, bilg_dr_codg, admdvs, monitored, body"
        " FROM lines ORDER BY id"
    )
    sales = state.read("SELECT code, line_id, t, psn_no, fixmedins_code, sale FROM trace_sales ORDER BY code, line_id")
    return lines, sales


def test_spooled_lines_take_no_lock_and_once_written_are_the_lines_recorded(tmp_path: Path) -> None:
    codes = ["81100000000000000001", "81100000000000000002"]
    batch = [
        line("P1", "1", trace_codes=codes),
        line("P2", "2", when="2026-03-02 10:00:00.250000"),
        line("P1", "1", trace_codes=codes),  # repeated in the call
    ]
    # Given one line stored already, and another process holding the write lock
    State.open(tmp_path / "spooled").repository().record_lines([line("P9", "9")])
    holder = sqlite3.connect(tmp_path / "spooled" / STATE_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        # When a chunk's lines (and the stored one again) are spooled meanwhile
        with State.open(tmp_path / "spooled", busy_timeout=0.2) as state:
            fresh, rows = state.repository().spool_lines([*batch, line("P9", "9")])
            # Then nothing waited or was written: the new lines are known, their rows kept
            assert [x.line_id for x in fresh] == ["H31000000001/1", "H31000000001/2"]
            assert [row[0] for row in rows.lines] == ["H31000000001/1", "H31000000001/2"]
            assert sorted(row[0] for row in rows.sales) == codes
            assert state.repository().count_lines() == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # When the one writer writes the rows
    with State.open(tmp_path / "spooled") as state:
        state.repository().write_lines(rows)
        # Then the state holds what recording the same lines stores, row for row
        with State.open(tmp_path / "recorded") as recorded:
            recorded.repository().record_lines([line("P9", "9")])
            recorded.repository().record_lines(batch)
            assert _stored(state) == _stored(recorded)
        # and the lines are not new any more: spooling them again keeps nothing
        again, none = state.repository().spool_lines(batch)
        assert again == [] and none.lines == [] and none.sales == []
        # And rows of a line stored meanwhile (by serve, say) keep the first one, without an error
        state.repository().write_lines(rows)
        assert state.repository().count_lines() == 3


def test_a_chunk_spools_its_lines_only_where_the_state_can_write_them_later(tmp_path: Path) -> None:
    from rxguard.local.orchestrator import DeferTraceScopes
    from rxguard.repository import InMemoryRepository

    # Given the repository a chunk screens against, over the SQLite state and over memory
    with State.open(tmp_path) as state:
        spooling = DeferTraceScopes(state.repository(), spool=True)
        memory = InMemoryRepository()
        direct = DeferTraceScopes(memory, spool=True)
        # When each records a line
        assert [x.line_id for x in spooling.record_lines([line("P1", "1")])] == ["H31000000001/1"]
        assert [x.line_id for x in direct.record_lines([line("P1", "1")])] == ["H31000000001/1"]
        # Then the state's is spooled for the orchestrator (not written), memory's written at once
        assert spooling.spooled is not None and [row[0] for row in spooling.spooled.lines] == ["H31000000001/1"]
        assert state.repository().count_lines() == 0
        assert direct.spooled is None and list(memory.lines) == ["H31000000001/1"]


def test_a_worker_writes_its_own_lines_once_the_orchestrator_falls_behind(tmp_path: Path) -> None:
    import multiprocessing

    from rxguard.local.backend import SqliteBackend
    from rxguard.local.objects import LocalObjects
    from rxguard.local.orchestrator import SPOOL_BACKLOG, WorkerContext, chunk_repository

    backend = SqliteBackend(tmp_path / "state")
    backlog = multiprocessing.get_context("spawn").Value("q", 0)
    ctx = WorkerContext(kb=None, backend=backend, results=LocalObjects(tmp_path / "results"), backlog=backlog)  # type: ignore[arg-type]
    try:
        # Given an orchestrator with nothing left to write: a chunk's lines are spooled for it
        ahead = chunk_repository(ctx, "w")
        ahead.record_lines([line("P1", "1")])
        assert ahead.spooled is not None and backend.repository().count_lines() == 0  # type: ignore[attr-defined]
        # When it has a chunk's worth of lines left to write
        backlog.value = SPOOL_BACKLOG
        behind = chunk_repository(ctx, "w")
        behind.record_lines([line("P2", "2")])
        # Then the next chunk's worker writes its lines itself
        assert behind.spooled is None and backend.repository().count_lines() == 1  # type: ignore[attr-defined]
        # and in the orchestrator's own process (no backlog) lines are written at once
        alone = chunk_repository(WorkerContext(kb=None, backend=backend, results=ctx.results), "w")  # type: ignore[arg-type]
        alone.record_lines([line("P3", "3")])
        assert alone.spooled is None and backend.repository().count_lines() == 2  # type: ignore[attr-defined]
    finally:
        backend.close()


def test_a_new_state_has_larger_pages_and_an_existing_one_keeps_its_own(tmp_path: Path) -> None:
    from rxguard.local.state import PAGE_SIZE, WAL_CHECKPOINT_BYTES

    # Given a state made now, and one made with SQLite's default 4 KiB pages (an older state)
    with State.open(tmp_path / "new") as new:
        new.repository().record_lines([line("P1", "1")])
    (tmp_path / "old").mkdir()
    old = sqlite3.connect(tmp_path / "old" / STATE_FILE)
    old.execute("PRAGMA page_size=4096")
    old.execute("VACUUM")
    old.close()
    # When both are opened again
    with State.open(tmp_path / "new") as new, State.open(tmp_path / "old") as older:
        older.repository().record_lines([line("P1", "1")])
        # Then the new one has 8 KiB pages, the older one keeps 4 KiB, both work, and both
        # checkpoint after the same bytes of WAL
        assert new.read("PRAGMA page_size") == [(PAGE_SIZE,)] and PAGE_SIZE == 8192
        assert older.read("PRAGMA page_size") == [(4096,)]
        assert new.read("PRAGMA wal_autocheckpoint") == [(WAL_CHECKPOINT_BYTES // PAGE_SIZE,)]
        assert older.read("PRAGMA wal_autocheckpoint") == [(WAL_CHECKPOINT_BYTES // 4096,)]
        assert new.repository().count_lines() == older.repository().count_lines() == 1
        assert older.read("PRAGMA integrity_check") == [("ok",)]


def test_checks_write_checks_db_and_an_older_state_moves_its_audit_and_warnings_there(tmp_path: Path) -> None:
    from rxguard.api.audit import AccessRecord, AuditQuery
    from rxguard.local.audit import SqliteAuditLog
    from rxguard.local.state import CHECK_TABLES, CHECKS_FILE

    at = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    warned = finding("early-refill", "P1", ["L1"])
    record = AccessRecord(at=at, caller="arn:his", institution="P1", patient="p-1", action="check", decision="warn")
    # Given a state written before checks.db existed: the audit, its summary and a check's
    # warning in state.db itself
    with State.open(tmp_path) as state:
        state.repository().record_lines([line("P1", "1")])
    SqliteAuditLog(tmp_path / STATE_FILE).record([record])
    old = sqlite3.connect(tmp_path / STATE_FILE, isolation_level=None)
    old.execute(
        "CREATE TABLE warnings (finding_id TEXT PRIMARY KEY, rule_id TEXT NOT NULL, body TEXT NOT NULL, "
        "lines TEXT NOT NULL, recorded_at TEXT NOT NULL)"
    )
    old.execute(
        "INSERT INTO warnings VALUES (?, ?, ?, ?, ?)",
        (warned.finding_id, warned.rule_id, warned.model_dump_json(), '["L1"]', at.isoformat()),
    )
    old.close()
    assert not (tmp_path / CHECKS_FILE).exists()
    # When the API's stores open it (as `rxguard serve` does), twice
    for _ in range(2):
        with State.open(tmp_path) as state:
            store = state.findings_store()
            log = SqliteAuditLog(state.checks().path)
            # Then the record and the warning are read from checks.db, once each
            got_records = log.query(AuditQuery(caller="arn:his"), 10, None)[0]
            assert [r.model_copy(update={"record_id": ""}) for r in got_records] == [record]
            assert log.strangers("arn:his", at) == (1, False)
            got = store.get(warned.finding_id)
            assert got is not None and got.finding_id == warned.finding_id and got.recorded is False
            # and the state keeps its lines, not those tables
            tables = {row[0] for row in state.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert tables.isdisjoint(CHECK_TABLES) and "lines" in tables
            assert state.repository().count_lines() == 1
    # And a new check's writes leave state.db untouched (its WAL and file unchanged)
    with State.open(tmp_path) as state:
        state.read("PRAGMA wal_checkpoint(TRUNCATE)")
        before = (tmp_path / STATE_FILE).read_bytes()
        store = state.findings_store()
        store.record_warnings([finding("cross-institution-repeat", "P2", ["L2"])], at, ["L2"])
        SqliteAuditLog(state.checks().path).record([record])
        assert (tmp_path / STATE_FILE).read_bytes() == before
        assert os.path.getsize(f"{tmp_path / STATE_FILE}-wal") == 0
        assert len(state.checks().read("SELECT * FROM warnings")) == 2


def test_moving_the_check_tables_again_after_a_crash_between_the_two_files_duplicates_nothing(tmp_path: Path) -> None:
    from rxguard.api.audit import AccessRecord, AuditQuery
    from rxguard.local.audit import SqliteAuditLog
    from rxguard.local.state import CHECKS_FILE

    at = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    records = [
        AccessRecord(at=at, caller="arn:his", institution="P1", patient=f"p-{i}", action="check", decision="pass")
        for i in range(3)
    ]
    # Given the audit in both files, as a crash after checks.db's commit and before state.db's leaves it
    with State.open(tmp_path):
        pass
    SqliteAuditLog(tmp_path / STATE_FILE).record(records)
    copy = sqlite3.connect(tmp_path / CHECKS_FILE)
    sqlite3.connect(tmp_path / STATE_FILE).backup(copy)
    copy.execute("DROP TABLE lines")
    copy.close()
    # When the state is opened for the API
    with State.open(tmp_path) as state:
        log = SqliteAuditLog(state.checks().path)
        # Then each record is there once, and state.db no longer has the table
        assert sorted(r.patient or "" for r in log.query(AuditQuery(), 10, None)[0]) == ["p-0", "p-1", "p-2"]
        assert not state.read("SELECT 1 FROM sqlite_master WHERE name = 'access_audit'")


def test_keeping_a_state_checkpointed_copies_its_wal_and_its_checks_wal_into_the_files(tmp_path: Path) -> None:
    from rxguard.api.audit import AccessRecord
    from rxguard.local.audit import SqliteAuditLog
    from rxguard.local.state import CHECKS_FILE

    at = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    records = [
        AccessRecord(at=at, caller="arn:his", institution="P1", patient=f"p-{i}", action="check", decision="pass")
        for i in range(400)
    ]
    with State.open(tmp_path) as writer, State.open(tmp_path) as keeper:
        # Given writes that stay in the WAL (far below the automatic checkpoint's size)
        writer.repository().record_lines([line("P1", str(i)) for i in range(300)])
        SqliteAuditLog(writer.checks().path, db=writer.checks()).record(records)
        files = (tmp_path / STATE_FILE, tmp_path / CHECKS_FILE)
        sizes = [os.path.getsize(f) for f in files]
        assert all(os.path.getsize(f"{f}-wal") > 0 for f in files)
        # When another State of it keeps it checkpointed (as `rxguard serve`'s parent does)
        stop = threading.Event()
        thread = threading.Thread(target=keeper.keep_checkpointed, args=(stop, 0.01))
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(
                os.path.getsize(f) <= size for f, size in zip(files, sizes, strict=True)
            ):
                time.sleep(0.01)
            grown = [os.path.getsize(f) > size for f, size in zip(files, sizes, strict=True)]
        finally:
            stop.set()
            thread.join(timeout=5)
        # Then both database files took the pages the writer's WAL held, while the writer
        # kept its connections; and the keeper stops when asked
        assert grown == [True, True]
        assert not thread.is_alive()
        assert writer.repository().count_lines() == 300
