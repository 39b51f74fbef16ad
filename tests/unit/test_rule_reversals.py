"""Reversals (退费) and split packs (拆零): refunds net out of supply, spending, visits and
trace codes in any arrival order; split sales of one pack share its trace code."""

from __future__ import annotations

from pathlib import Path

from rxguard.engine import Engine
from rxguard.engine.factory import days_later, make_line
from rxguard.ingest import read_batch
from rxguard.models import ClaimLine, Rejection, Severity
from rxguard.repository import InMemoryRepository, TraceSale
from rxguard.screening import screen_lines
from tests.unit.ingest_helpers import record, write_jsonl

CLOPIDOGREL = "XB01AC04A001"  # 28 tablets of 75 mg a pack, 75 mg a day: 28 days a pack
CODE = "81234567890123456789"
T0 = "2025-09-01 09:00:00"


def buy(kb, day, packs=1, sn=None, psn="P0001", inst="P3101001", **kw):  # type: ignore[no-untyped-def]
    return make_line(
        kb, drug_code=CLOPIDOGREL, psn_no=psn, fixmedins_code=inst, when=days_later(T0, day), packs=packs,
        feedetl_sn=sn, **kw,
    )  # fmt: skip


def refund(kb, original: ClaimLine, day: float, packs: float | None = None, sn: str = "R1", **kw):  # type: ignore[no-untyped-def]
    """A reversal of `packs` packs (all of them by default) of `original`, `day` days after T0."""
    return buy(
        kb, day, packs=-(packs if packs is not None else original.cnt), sn=sn, psn=original.psn_no,
        inst=original.fixmedins_code, init_feedetl_sn=original.feedetl_sn, **kw,
    )  # fmt: skip


def rules_of(findings):  # type: ignore[no-untyped-def]
    return sorted((f.rule_id, f.severity.value) for f in findings)


# --- supply ----------------------------------------------------------------------------


def test_a_refunded_purchase_no_longer_makes_the_next_one_early(kb):
    # Given 28 days bought on day 0, then 28 days more on day 3
    engine = Engine(kb)
    first, second = buy(kb, 0, sn="A1"), buy(kb, 3, sn="A2")
    assert ("early-refill", "high") in rules_of(engine.evaluate_patient("P0001", [first, second]))
    # When the first purchase is refunded on day 1, Then the second one is an ordinary purchase
    netted = engine.evaluate_patient("P0001", [first, refund(kb, first, 1), second])
    assert rules_of(netted) == []


def test_a_partial_refund_keeps_the_rest_of_the_supply(kb):
    # Given 28 days bought on day 0 and 28 more on day 12 (12/28 used: early)
    engine = Engine(kb)
    first, second = buy(kb, 0, sn="A1"), buy(kb, 12, sn="A2")
    assert "early-refill" in {f.rule_id for f in engine.evaluate_patient("P0001", [first, second])}
    # When half the pack is refunded: 14 days were kept, 12 of them used (86%): not early
    assert engine.evaluate_patient("P0001", [first, refund(kb, first, 1, packs=0.5), second]) == []
    # and when a quarter is refunded: 21 days kept, 12 used (57%): still early
    found = engine.evaluate_patient("P0001", [first, refund(kb, first, 1, packs=0.25), second])
    early = [f for f in found if f.rule_id == "early-refill"]
    assert len(early) == 1 and early[0].figures["previous_days_supplied"] == 21


def test_a_refund_that_arrives_before_its_original_is_held_and_applied(kb):
    # Given the same three lines screened in two different orders and batchings
    first, second = buy(kb, 0, sn="A1"), buy(kb, 3, sn="A2")
    back = refund(kb, first, 1)
    in_order = InMemoryRepository()
    screen_lines([first], in_order, kb)
    outcome = screen_lines([second], in_order, kb)
    assert [f.rule_id for f in outcome.changes.new] == ["early-refill"]
    withdrawn = screen_lines([back], in_order, kb)  # the refund comes last: the finding is withdrawn
    assert [f.rule_id for f in withdrawn.changes.superseded] == ["early-refill"]
    reversed_order = InMemoryRepository()
    screen_lines([back], reversed_order, kb)  # the refund first: held, nothing to cancel yet
    screen_lines([second], reversed_order, kb)
    screen_lines([first], reversed_order, kb)
    # Then both end with the same (empty) set of current findings
    assert in_order.all_current_findings() == reversed_order.all_current_findings() == []


def test_refunds_net_out_of_pharmacy_spending_and_visits(kb):
    engine = Engine(kb)
    # Given 8,400 yuan of purchases at a pharmacy in one month (limit 8,000)
    lines = [
        make_line(kb, drug_code=None, psn_no="P1", fixmedins_code="P3101001", when=days_later(T0, d), price=1400.0,
                  feedetl_sn=f"S{d}")
        for d in range(6)
    ]  # fmt: skip
    assert rules_of(engine.evaluate_patient("P1", lines)) == [("pharmacy-spend", "medium")]
    # When one 1,400-yuan line is refunded, Then the month's spending is 7,000: no finding
    back = make_line(
        kb, drug_code=None, psn_no="P1", fixmedins_code="P3101001", when=days_later(T0, 7), price=-1400.0,
        feedetl_sn="R1", init_feedetl_sn="S0", cnt=-1, pric=1400.0,
    )  # fmt: skip
    assert engine.evaluate_patient("P1", [*lines, back]) == []
    # Given 15 outpatient visits in a month, one of them wholly refunded: 14 visits remain
    visits = [
        make_line(
            kb, drug_code=None, psn_no="P2", fixmedins_code="H3101001", when=days_later(T0, d), feedetl_sn=f"V{d}"
        )
        for d in range(15)
    ]
    assert "frequent-visits" in {f.rule_id for f in engine.evaluate_patient("P2", visits)}
    cancel = make_line(
        kb, drug_code=None, psn_no="P2", fixmedins_code="H3101001", when=days_later(T0, 3), price=-20.0,
        feedetl_sn="R2", init_feedetl_sn="V3", cnt=-1, pric=20.0,
    )  # fmt: skip
    assert engine.evaluate_patient("P2", [*visits, cancel]) == []


# --- trace codes -----------------------------------------------------------------------


def sales(*lines: ClaimLine) -> list[TraceSale]:
    return [TraceSale.of(line, code) for line in lines for code in line.trace_codes]


def test_a_returned_pack_may_be_sold_again(kb):
    engine = Engine(kb)
    sold = buy(kb, 0, packs=1, sn="A1", psn="A", trace_codes=[CODE])
    again = buy(kb, 9, packs=1, sn="B1", psn="B", inst="P3101002", trace_codes=[CODE])
    assert [f.rule_id for f in engine.evaluate_trace_code(CODE, sales(sold, again))] == ["trace-code-reuse"]
    # the pack is returned (the refund lists its code) before the second sale: no resale
    back = refund(kb, sold, 2, trace_codes=[CODE])
    assert engine.evaluate_trace_code(CODE, sales(sold, back, again)) == []
    # a return after the second sale does not excuse it
    late = refund(kb, sold, 12, trace_codes=[CODE])
    assert [f.rule_id for f in engine.evaluate_trace_code(CODE, sales(sold, again, late))] == ["trace-code-reuse"]


def test_a_refunded_resale_is_withdrawn(kb):
    engine = Engine(kb)
    sold = buy(kb, 0, packs=1, sn="A1", psn="A", trace_codes=[CODE])
    again = buy(kb, 9, packs=1, sn="B1", psn="B", inst="P3101002", trace_codes=[CODE])
    undone = refund(kb, again, 10, trace_codes=[CODE], sn="R9")
    assert engine.evaluate_trace_code(CODE, sales(sold, again, undone)) == []


def test_split_pack_sales_within_the_pack_share_its_code(kb):
    engine = Engine(kb)
    pack = kb.drugs[CLOPIDOGREL].units_per_pack  # 28 tablets

    def split(units, sn, psn, day):  # type: ignore[no-untyped-def]
        return buy(kb, day, units=units, sn=sn, psn=psn, trace_codes=[CODE])

    # Given one pack sold in parts to two patients: 16 + 12 tablets = the pack
    a, b = split(16, "S1", "A", 0), split(12, "S2", "B", 1)
    assert a.trdn_flag and engine.evaluate_trace_code(CODE, sales(a, b)) == []
    # When one more tablet is sold under the same code, Then that sale is the reuse
    c = split(1, "S3", "C", 2)
    found = engine.evaluate_trace_code(CODE, sales(a, b, c))
    assert [f.figures["trigger_lines"] for f in found] == [[c.line_id]]
    assert found[0].severity is Severity.HIGH and found[0].figures["sale_number"] == 3
    assert pack == 28
    # and a whole pack sold under a code already split is a reuse too
    whole = buy(kb, 3, packs=1, sn="W1", psn="D", trace_codes=[CODE])
    assert [f.figures["trigger_lines"] for f in engine.evaluate_trace_code(CODE, sales(a, whole))] == [[whole.line_id]]


def test_trace_sales_round_trip_through_the_stored_text(kb):
    back = refund(kb, buy(kb, 0, packs=1, sn="A1"), 1, trace_codes=[CODE])
    part = buy(kb, 0, units=3, sn="S1", trace_codes=[CODE])
    plain = buy(kb, 0, packs=1, sn="X1", trace_codes=[CODE])
    for line in (back, part, plain):
        sale = TraceSale.of(line, CODE)
        assert TraceSale.decode(CODE, line.line_id, sale.encode()) == sale


# --- ingestion ---------------------------------------------------------------------------


def test_ingestion_accepts_a_refund_naming_its_original_and_rejects_other_negative_lines(kb, tmp_path: Path):
    path = write_jsonl(
        tmp_path / "b.jsonl",
        [
            record(feedetl_sn="F1"),
            record(feedetl_sn="F2", cnt="-2", det_item_fee_sumamt="-37.2", init_feedetl_sn="F1"),
            record(feedetl_sn="F3", cnt="-2", det_item_fee_sumamt="-37.2"),
        ],
    )
    items = list(read_batch(path, kb))
    lines = [i for i in items if isinstance(i, ClaimLine)]
    rejected = [i for i in items if isinstance(i, Rejection)]
    assert [ln.feedetl_sn for ln in lines] == ["F1", "F2"]
    assert lines[1].reverses == f"{lines[0].fixmedins_code}/F1" and lines[1].cnt == -2
    assert [(r.field, r.reason) for r in rejected] == [("cnt", "not_positive")]


def test_a_reversal_without_codes_returns_its_originals_packs(kb):
    # Given a pack sold to A, refunded by a reversal that lists no code, then sold to B
    repo = InMemoryRepository()
    sold = buy(kb, 0, packs=1, sn="A1", psn="A", trace_codes=[CODE])
    screen_lines([sold], repo, kb)
    screen_lines([refund(kb, sold, 1)], repo, kb)  # no drug_trac_codg on the refund
    outcome = screen_lines([buy(kb, 9, packs=1, sn="B1", psn="B", inst="P3101002", trace_codes=[CODE])], repo, kb)
    # Then the refund returned the code: the second sale is no resale
    assert outcome.changes.new == [] and repo.all_current_findings() == []


def test_a_chunk_is_recorded_with_its_json_as_read_but_a_reversal_given_codes_anew(kb, tmp_path: Path):
    # Given a chunk with a pack sold to A and a reversal of it that lists no code
    from rxguard.ingest import read_chunk_bodies, write_chunk
    from rxguard.local.state import State

    sold = buy(kb, 0, packs=1, sn="A1", psn="A", trace_codes=[CODE])
    lines, bodies = read_chunk_bodies(write_chunk([sold, refund(kb, sold, 1)]))
    assert [ClaimLine.model_validate_json(bodies[x.line_id]) for x in lines] == lines
    # When it is screened on the local state with the JSON it was read with
    with State.open(tmp_path / "st") as state:
        screen_lines(lines, state.repository(), kb, bodies=bodies)
        stored = dict(state.read("SELECT line_id, body FROM lines"))
        history = state.repository().load_history(["A"])["A"]
    # Then the sale is stored as read, and the reversal with the code it returned (made anew)
    assert stored[sold.line_id] == bodies[sold.line_id]
    assert stored[lines[1].line_id] != bodies[lines[1].line_id]
    assert [x.trace_codes for x in history] == [[CODE], [CODE]]
