"""The `HistoryRepository` contract (rxguard/repository.py), one set of cases over the
in-memory, SQLite and DynamoDB adapters: conditional recording on the line id, histories
and trace-code sales in time order, findings replaced per scope with reviews kept."""

from __future__ import annotations

from datetime import datetime

from contract_helpers import Backend, make_finding, make_line

from rxguard.models import Severity

CODE = "81234567890123456789"


def _ids(findings: list) -> list[str]:  # type: ignore[type-arg]
    return sorted(f.finding_id for f in findings)


def test_recording_the_same_lines_twice_counts_them_once(backend: Backend) -> None:
    # Given three lines of two patients, one sold with a traceability code
    lines = [
        make_line("P1", "1", trace_codes=[CODE]),
        make_line("P1", "2", time="2026-03-20 10:00:00"),
        make_line("P2", "3"),
    ]
    # When they are recorded, then recorded again (a retried chunk / a re-dropped file)
    first = backend.repo().record_lines(lines)
    second = backend.repo().record_lines(lines)
    # Then the first call returns them all, in order, and the second nothing
    assert [x.line_id for x in first] == [x.line_id for x in lines]
    assert second == []
    # And each line and sale is stored once
    repo = backend.repo()
    assert [x.line_id for x in repo.load_history(["P1"])["P1"]] == [lines[0].line_id, lines[1].line_id]
    assert [s.line_id for s in repo.load_trace_sales([CODE])[CODE]] == [lines[0].line_id]


def test_a_line_repeated_in_one_call_is_recorded_once(backend: Backend) -> None:
    line = make_line("P1", "1")
    recorded = backend.repo().record_lines([line, line, make_line("P1", "2")])
    assert [x.line_id for x in recorded] == [line.line_id, make_line("P1", "2").line_id]
    assert len(backend.repo().load_history(["P1"])["P1"]) == 2


def test_only_the_new_lines_of_a_mixed_batch_are_returned(backend: Backend) -> None:
    old = make_line("P1", "1")
    backend.repo().record_lines([old])
    new = make_line("P1", "2", time="2026-03-02 09:00:00")
    assert [x.line_id for x in backend.repo().record_lines([old, new])] == [new.line_id]


def test_history_round_trips_every_field_in_time_order(backend: Backend) -> None:
    # Given a patient's lines recorded out of time order, with optional fields set
    late = make_line("P1", "2", time="2026-04-01 08:00:00", lt_rx_flag=True, override_reason="travel")
    early = make_line("P1", "1", time="2026-03-01 08:00:00", trace_codes=[CODE], bilg_dr_codg="D1")
    same_time = make_line("P1", "0", time="2026-03-01 08:00:00")
    other = make_line("P9", "7")
    backend.repo().record_lines([late, early, other, same_time])
    # When the history is loaded for two patients and an unknown one
    history = backend.repo().load_history(["P1", "P9", "P404"])
    # Then the lines come back identical, by time then line id, and the unknown patient is empty
    assert history["P1"] == [same_time, early, late]
    assert history["P9"] == [other]
    assert history["P404"] == []


def test_a_trace_code_sold_twice_keeps_both_sales_once(backend: Backend) -> None:
    # Given one code sold by a hospital to P1 and later by a pharmacy to P2
    a = make_line("P1", "1", trace_codes=[CODE])
    b = make_line("P2", "9", fixmedins_code="P31000000009", time="2026-03-05 10:00:00", trace_codes=[CODE])
    # When both are recorded, and the second again
    backend.repo().record_lines([b])
    backend.repo().record_lines([a])
    backend.repo().record_lines([b])
    # Then the code has exactly two sales, in time order, with who sold it to whom
    sales = backend.repo().load_trace_sales([CODE, "00000000000000000000"])
    assert [(s.time, s.line_id, s.psn_no, s.fixmedins_code) for s in sales[CODE]] == [
        (datetime(2026, 3, 1, 9), a.line_id, "P1", a.fixmedins_code),
        (datetime(2026, 3, 5, 10), b.line_id, "P2", "P31000000009"),
    ]
    assert sales["00000000000000000000"] == []


def test_only_codes_sold_by_two_lines_are_resold(backend: Backend) -> None:
    # Given a code sold by two lines, one sold by one line (and that line recorded twice),
    # and a code never sold
    once, never = "81234567890123456780", "81234567890123456781"
    backend.repo().record_lines(
        [make_line("P1", "1", trace_codes=[CODE, once]), make_line("P2", "2", trace_codes=[CODE])]
    )
    backend.repo().record_lines([make_line("P1", "1", trace_codes=[CODE, once])])
    # Then only the first can make a trace-code finding
    assert backend.repo().resold_codes([CODE, once, never]) == {CODE}
    assert backend.repo().resold_codes([]) == set()


def test_findings_are_inserted_updated_superseded_and_reviews_kept(backend: Backend) -> None:
    # Given two findings of a patient, one of them confirmed by a reviewer
    keep = make_finding(evidence=("H1/1",))
    drop = make_finding(evidence=("H1/2",))
    first = backend.repo().replace_findings("patient:P0001", [keep, drop])
    assert (_ids(first.new), first.updated, first.superseded) == (_ids([keep, drop]), [], [])
    backend.store.review(keep.finding_id, "confirmed", "核实", "auditor", datetime(2026, 3, 2))
    # When the scope is re-evaluated: `keep` again with new figures, `drop` no longer produced
    changed = keep.model_copy(update={"figures": {"days_early": 12}})
    changes = backend.repo().replace_findings("patient:P0001", [changed])
    # Then `keep` is updated and stays confirmed, `drop` is superseded (kept, not deleted)
    assert [(f.finding_id, f.status, f.figures) for f in changes.updated] == [
        (keep.finding_id, "confirmed", {"days_early": 12})
    ]
    assert [(f.finding_id, f.status) for f in changes.superseded] == [(drop.finding_id, "superseded")]
    assert changes.new == [] and changes.unchanged == 0
    current = backend.repo().load_findings(["patient:P0001"])["patient:P0001"]
    assert [(f.finding_id, f.status, f.figures) for f in current] == [
        (keep.finding_id, "confirmed", {"days_early": 12})
    ]
    gone = backend.store.get(drop.finding_id)
    assert gone is not None and gone.status == "superseded"


def test_replacing_with_the_same_findings_changes_nothing(backend: Backend) -> None:
    findings = [make_finding(evidence=("H1/1",)), make_finding("over-quantity", evidence=("H1/3",))]
    backend.repo().replace_findings("patient:P0001", findings)
    changes = backend.repo().replace_findings("patient:P0001", findings)
    assert (changes.new, changes.updated, changes.superseded, changes.unchanged) == ([], [], [], 2)


def test_a_superseded_finding_produced_again_is_current_again(backend: Backend) -> None:
    # Given a finding superseded by an empty re-evaluation
    found = make_finding(evidence=("H1/1",))
    backend.repo().replace_findings("patient:P0001", [found])
    emptied = backend.repo().replace_findings("patient:P0001", [])
    assert [f.status for f in emptied.superseded] == ["superseded"]
    assert backend.repo().replace_findings("patient:P0001", []).superseded == []  # superseded once only
    # When the rules produce it again (a late line)
    back = backend.repo().replace_findings("patient:P0001", [found])
    # Then it is updated back to new, and listed again
    assert [(f.finding_id, f.status) for f in back.updated] == [(found.finding_id, "new")]
    assert _ids(backend.repo().load_findings(["patient:P0001"])["patient:P0001"]) == [found.finding_id]


def test_findings_are_loaded_per_scope_current_only(backend: Backend) -> None:
    a = make_finding(psn_no="P1", evidence=("H1/1",))
    b = make_finding(psn_no="P2", evidence=("H1/2",), severity=Severity.LOW)
    c = make_finding(psn_no="P2", evidence=("H1/3",))
    backend.repo().replace_findings("patient:P1", [a])
    backend.repo().replace_findings("patient:P2", [b, c])
    backend.repo().replace_findings("patient:P2", [c])
    found = backend.repo().load_findings(["patient:P1", "patient:P2", "patient:P3"])
    assert {k: _ids(v) for k, v in found.items()} == {
        "patient:P1": [a.finding_id],
        "patient:P2": [c.finding_id],
        "patient:P3": [],
    }
    assert found["patient:P1"] == [a]


def test_a_sequence_of_operations_gives_the_same_answers_everywhere(backend: Backend) -> None:
    # Given lines recorded in two batches (one line repeated) and a scope replaced round after round
    batches = [
        [make_line("P1", "1", trace_codes=[CODE]), make_line("P2", "2")],
        [
            make_line("P1", "1", trace_codes=[CODE]),
            make_line("P3", "3", time="2026-02-01 08:00:00", trace_codes=[CODE]),
        ],
    ]
    rounds = [
        [make_finding(evidence=("H1/1",)), make_finding(evidence=("H1/2",))],
        [make_finding(evidence=("H1/1",), figures={"days_early": 3}), make_finding(evidence=("H1/9",))],
        [],
    ]
    recorded = [[x.line_id for x in backend.repo().record_lines(b)] for b in batches]
    changes = [backend.repo().replace_findings("patient:P1", r) for r in rounds]
    # Then each answer is what the contract says, on every adapter
    assert recorded == [["H31000000001/1", "H31000000001/2"], ["H31000000001/3"]]
    sales = backend.repo().load_trace_sales([CODE])[CODE]
    assert [s.line_id for s in sales] == ["H31000000001/3", "H31000000001/1"]
    first, second, _ = rounds
    assert [(_ids(c.new), _ids(c.updated), _ids(c.superseded), c.unchanged) for c in changes] == [
        (_ids(first), [], [], 0),
        ([second[1].finding_id], [second[0].finding_id], [first[1].finding_id], 0),
        ([], [], _ids(second), 0),
    ]
    assert backend.repo().load_findings(["patient:P1"]) == {"patient:P1": []}


def test_replacing_many_scopes_at_once_is_replacing_them_one_by_one(backend: Backend) -> None:
    # Given three scopes with findings: one to keep, one to change, one to empty
    a = make_finding(psn_no="P1", evidence=("H1/1",))
    b = make_finding(psn_no="P2", evidence=("H1/2",))
    c = make_finding(psn_no="P3", evidence=("H1/3",))
    before = {"patient:P1": [a], "patient:P2": [b], "patient:P3": [c]}
    backend.repo().replace_many(before)
    # When they are replaced together, with a fourth scope that never had a finding
    changed = b.model_copy(update={"figures": {"days_early": 4}})
    fresh = make_finding(psn_no="P4", evidence=("H1/4",))
    after = {"patient:P1": [a], "patient:P2": [changed], "patient:P3": [], "patient:P5": [], "patient:P4": [fresh]}
    changes = backend.repo().replace_many(after)
    # Then the changes are those of one replace_findings a scope, merged in the order given
    assert [f.finding_id for f in changes.new] == [fresh.finding_id]
    assert [(f.finding_id, f.figures) for f in changes.updated] == [(b.finding_id, {"days_early": 4})]
    assert [(f.finding_id, f.status) for f in changes.superseded] == [(c.finding_id, "superseded")]
    assert changes.unchanged == 1
    found = backend.repo().load_findings(list(after))
    assert {k: _ids(v) for k, v in found.items()} == {
        "patient:P1": [a.finding_id],
        "patient:P2": [b.finding_id],
        "patient:P3": [],
        "patient:P5": [],
        "patient:P4": [fresh.finding_id],
    }


def test_trace_sales_keep_returns_and_split_pack_units(backend: Backend) -> None:
    # Given a pack sold, returned by a reversal (退费) naming the sale, and a split-pack (拆零) sale
    sold = make_line("P1", "1", trace_codes=[CODE])
    back = make_line("P1", "2", time="2026-03-02 09:00:00", trace_codes=[CODE]).model_copy(
        update={"cnt": -2, "det_item_fee_sumamt": -25.0, "quantity_units": -60, "init_feedetl_sn": "1"}
    )
    part = make_line("P2", "3", time="2026-03-03 09:00:00", trace_codes=[CODE], units=10).model_copy(
        update={"trdn_flag": True}
    )
    backend.repo().record_lines([sold, back, part])
    # When the code's sales are loaded
    sales = backend.repo().load_trace_sales([CODE])[CODE]
    # Then each sale says what it was: a sale, the return of the first line, 10 units of a pack
    assert [(s.line_id, s.returns, s.split_units) for s in sales] == [
        (sold.line_id, None, None),
        (back.line_id, sold.line_id, None),
        (part.line_id, None, 10.0),
    ]
    assert sales[2].drug_code == part.med_list_codg


def test_trace_sales_keep_the_late_mark_of_a_late_api_dispensation(backend: Backend) -> None:
    # Given a code sold on time by a batch, then a late API dispensation (received 4 days after
    # its sale) and a late return of it, and a late split-pack sale
    on_time = make_line("P1", "1", trace_codes=[CODE])
    late = make_line("P2", "2", time="2026-03-02 09:00:00", trace_codes=[CODE]).model_copy(
        update={"received_at": datetime(2026, 3, 6, 9)}
    )
    late_return = make_line("P2", "3", time="2026-03-02 10:00:00", trace_codes=[CODE]).model_copy(
        update={"cnt": -2, "det_item_fee_sumamt": -25.0, "quantity_units": -60, "init_feedetl_sn": "2",
                "received_at": datetime(2026, 3, 6, 9)}
    )  # fmt: skip
    late_split = make_line("P3", "4", time="2026-03-03 09:00:00", trace_codes=[CODE], units=10).model_copy(
        update={"trdn_flag": True, "received_at": datetime(2026, 3, 7, 9)}
    )
    backend.repo().record_lines([on_time, late, late_return, late_split])
    # When the code's sales are loaded (by a new repository: from storage)
    sales = backend.repo().load_trace_sales([CODE])[CODE]
    # Then the late ones are still marked late, beside what else they say
    assert [(s.line_id, s.late, s.returns, s.split_units) for s in sales] == [
        (on_time.line_id, False, None, None),
        (late.line_id, True, None, None),
        (late_return.line_id, True, late.line_id, None),
        (late_split.line_id, True, None, 10.0),
    ]


def test_a_line_sent_again_with_another_time_is_still_recorded_once(backend: Backend) -> None:
    # Given a line recorded through the API (time: when the request arrived)
    api = make_line("P1", "1", time="2026-03-01 10:00:00", trace_codes=[CODE])
    backend.repo().record_lines([api])
    # When the settlement batch brings the same line id 5 s later in its own time (issue 15)
    batch = make_line("P1", "1", time="2026-03-01 10:00:05", trace_codes=[CODE])
    again = backend.repo().record_lines([batch])
    # Then nothing is recorded twice: one line, one sale
    repo = backend.repo()
    assert again == []
    assert [x.line_id for x in repo.load_history(["P1"])["P1"]] == [api.line_id]
    assert [s.line_id for s in repo.load_trace_sales([CODE])[CODE]] == [api.line_id]


def test_a_line_sent_again_in_another_month_after_older_history_is_still_recorded_once(backend: Backend) -> None:
    # Given a patient with months of history (older months leave a pack's newest items) and
    # a line recorded through the API just before midnight at the end of a month
    older = [make_line("P1", f"h{m}", time=f"2026-0{m}-10 09:00:00") for m in (1, 2, 3)]
    backend.repo().record_lines(older)
    api = make_line("P1", "1", time="2026-03-31 23:59:58", trace_codes=[CODE])
    backend.repo().record_lines([api])
    # When the settlement batch brings the same line id in the next month's first seconds
    batch = make_line("P1", "1", time="2026-04-01 00:00:03", trace_codes=[CODE])
    again = backend.repo().record_lines([batch, make_line("P1", "2", time="2026-04-02 09:00:00")])
    # Then only the other line is new; the history holds the API's line once
    history = backend.repo().load_history(["P1"])["P1"]
    assert [x.line_id for x in again] == [make_line("P1", "2").line_id]
    assert [x.line_id for x in history].count(api.line_id) == 1
    assert len(history) == 5
    assert [s.line_id for s in backend.repo().load_trace_sales([CODE])[CODE]] == [api.line_id]
