"""trace-code-reuse and indication-mismatch."""

from __future__ import annotations

import pytest

from rxguard.engine import Engine
from rxguard.engine.factory import make_line
from rxguard.models import Severity
from rxguard.repository import TraceSale

ENTECAVIR = "XJ05AF10A001"  # restricted to B18.0, B18.1
CLOPIDOGREL = "XB01AC04A001"  # unrestricted
CODE = "81234567890123456789"


@pytest.fixture(scope="module")
def engine(kb):  # type: ignore[no-untyped-def]
    return Engine(kb)


def sale(line, code: str = CODE) -> TraceSale:  # type: ignore[no-untyped-def]
    return TraceSale(line.fee_ocur_time, line.line_id, code, line.psn_no, line.fixmedins_code)


# --- trace-code-reuse ------------------------------------------------------------------


def test_single_sale_is_legitimate(kb, engine):
    line = make_line(kb, drug_code=CLOPIDOGREL, trace_codes=[CODE])
    assert engine.evaluate_trace_code(CODE, [sale(line)], {line.line_id: line}) == []


def test_second_sale_is_a_finding_with_first_and_later_as_evidence(kb, engine):
    # Given a code sold to patient A, then sold again by another pharmacy to patient B
    first = make_line(
        kb, drug_code=CLOPIDOGREL, psn_no="A", fixmedins_code="P3101001", when="2025-10-01 10:00:00", trace_codes=[CODE]
    )
    later = make_line(
        kb, drug_code=CLOPIDOGREL, psn_no="B", fixmedins_code="P3101002", when="2025-10-20 10:00:00", trace_codes=[CODE]
    )
    lines = {first.line_id: first, later.line_id: later}
    # When the code's sales are evaluated, in either order
    found = engine.evaluate_trace_code(CODE, [sale(later), sale(first)], lines)
    # Then one high finding about the later sale
    assert len(found) == 1
    f = found[0]
    assert f.evidence == sorted([first.line_id, later.line_id])
    assert (f.psn_no, f.fixmedins_code, f.subject_type) == ("B", "P3101002", "trace_code")
    assert f.severity is Severity.HIGH
    assert f.figures["trace_code"] == CODE and f.figures["first_line"] == first.line_id
    assert f.figures["same_patient"] is False and f.figures["trigger_lines"] == [later.line_id]
    assert CODE in f.explanation_zh and "P3101001" in f.explanation_en


def test_each_later_sale_is_its_own_finding(kb, engine):
    lines = [make_line(kb, drug_code=CLOPIDOGREL, when=f"2025-10-0{d} 10:00:00", trace_codes=[CODE]) for d in (1, 2, 3)]
    found = engine.evaluate_trace_code(CODE, [sale(x) for x in lines], {x.line_id: x for x in lines})
    assert sorted(f.figures["sale_number"] for f in found) == [2, 3]
    assert all(lines[0].line_id in f.evidence for f in found)


def test_code_twice_in_one_line_is_a_finding_on_the_patient(kb, engine):
    # Given one line listing the same code twice (one pack billed twice)
    line = make_line(kb, drug_code=CLOPIDOGREL, packs=2, trace_codes=[CODE, CODE])
    # When the patient is evaluated (the line alone shows it, whatever else is loaded)
    found = [f for f in engine.evaluate_patient("P0001", [line]) if f.rule_id == "trace-code-reuse"]
    # Then one finding on that line
    assert len(found) == 1 and found[0].evidence == [line.line_id]
    assert found[0].figures["times_in_line"] == 2 and found[0].subject_type == "patient"
    # And the code's own sales (the same line twice) are not a second finding
    assert engine.evaluate_trace_code(CODE, [sale(line), sale(line)], {line.line_id: line}) == []


def test_trace_reuse_without_line_details(kb, engine):
    # Given only the sales (the lines of other patients are not loaded)
    a = TraceSale(make_line(kb).fee_ocur_time, "P1/1", CODE, "A", "P1")
    b = TraceSale(make_line(kb, when="2025-10-02 10:00:00").fee_ocur_time, "P2/9", CODE, "B", "P2")
    found = engine.evaluate_trace_code(CODE, [b, a])
    assert [f.evidence for f in found] == [["P1/1", "P2/9"]]


# --- indication-mismatch ---------------------------------------------------------------


def test_restricted_drug_without_matching_diagnosis_is_flagged(kb, engine):
    line = make_line(kb, drug_code=ENTECAVIR, diagnoses=["I10"], when="2025-10-01 10:00:00")
    found = [f for f in engine.evaluate_patient("P0001", [line]) if f.rule_id == "indication-mismatch"]
    assert len(found) == 1
    f = found[0]
    assert f.evidence == [line.line_id] and f.severity is Severity.MEDIUM
    assert f.figures["restricted_indications"] == ["B18.0", "B18.1"] and f.figures["diagnoses"] == ["I10"]
    assert "恩替卡韦" in f.explanation_zh and "B18.0" in f.explanation_en


@pytest.mark.parametrize("dx", ["B18.1", "b18.0", "B18.10"])
def test_matching_diagnosis_on_the_line_passes(kb, engine, dx):
    line = make_line(kb, drug_code=ENTECAVIR, diagnoses=[dx])
    assert not engine.evaluate_patient("P0001", [line])


def test_diagnosis_on_another_line_of_the_same_visit_passes(kb, engine):
    fee = make_line(kb, fixmedins_code="H3101001", mdtrt_id="V1", diagnoses=["B18.1"])
    drug = make_line(kb, drug_code=ENTECAVIR, fixmedins_code="H3101001", mdtrt_id="V1")
    assert not engine.evaluate_patient("P0001", [fee, drug])


@pytest.mark.parametrize(("days_apart", "flagged"), [(365, False), (366, True)])
def test_diagnosis_within_the_lookback_passes(kb, engine, days_apart, flagged):
    # Given the hospital diagnosis, then a pharmacy purchase without one, days_apart later
    from rxguard.engine.factory import days_later

    visit = make_line(kb, fixmedins_code="H3101001", when="2025-01-01 09:00:00", diagnoses=["B18.1"])
    buy = make_line(
        kb, drug_code=ENTECAVIR, fixmedins_code="P3101001", when=days_later("2025-01-01 09:00:00", days_apart)
    )
    found = [f for f in engine.evaluate_patient("P0001", [visit, buy]) if f.rule_id == "indication-mismatch"]
    assert bool(found) is flagged


def test_unrestricted_drug_needs_no_diagnosis(kb, engine):
    assert not engine.evaluate_patient("P0001", [make_line(kb, drug_code=CLOPIDOGREL)])
