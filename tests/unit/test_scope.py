"""`Scope`: the text of each scope is the key every store already holds, and parse reads it back."""

from __future__ import annotations

import pickle

import pytest

from rxguard.api.store import view
from rxguard.console.readmodel import subject_key
from rxguard.ingest import read_batch
from rxguard.models import ClaimLine, Finding
from rxguard.repository import InMemoryRepository
from rxguard.scope import Scope
from rxguard.screening import screen_lines
from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("scope", "text", "kind", "key"),
    [
        (Scope.patient("P001"), "patient:P001", "patient", "P001"),
        (Scope.trace("81234567890123456789"), "trace:81234567890123456789", "trace", "81234567890123456789"),
        (Scope.institution("H31000000001"), "institution:H31000000001", "institution", "H31000000001"),
        (Scope.prescriber("D001:x"), "prescriber:D001:x", "prescriber", "D001:x"),
    ],
)
def test_constructors_give_todays_text_and_parse_reads_it_back(scope: Scope, text: str, kind: str, key: str):
    assert str(scope) == text and scope == text and hash(scope) == hash(text)
    assert (scope.kind, scope.key) == (kind, key)
    assert Scope.parse(text) == scope and isinstance(Scope.parse(text), Scope)
    assert pickle.loads(pickle.dumps(scope)).kind == kind


@pytest.mark.parametrize("text", ["", "patient", "visit:1", "Patient:1", ":P001"])
def test_parse_rejects_what_is_not_a_scope(text: str):
    with pytest.raises(ValueError, match="not a scope"):
        Scope.parse(text)


def _finding(subject_type: str, **extra: object) -> Finding:
    data: dict[str, object] = {
        "finding_id": "f",
        "rule_id": "over-quantity",
        "rule_version": 1,
        "severity": "medium",
        "subject_type": subject_type,
        "psn_no": "P9",
        "fixmedins_code": "H1",
        "bilg_dr_codg": "D7",
        "occurred_at": "2026-03-01T00:00:00",
        "evidence": ["H1/1"],
        "figures": {"trace_code": "T5"},
        "explanation_zh": "",
        "explanation_en": "",
    }
    data.update(extra)
    return Finding.model_validate(data)


@pytest.mark.parametrize(
    ("subject_type", "text"),
    [
        ("patient", "patient:P9"),
        ("trace_code", "trace:T5"),
        ("prescriber", "prescriber:D7"),
        ("institution", "institution:H1"),
    ],
)
def test_a_finding_belongs_to_the_scope_of_its_subject(subject_type: str, text: str):
    assert Scope.of(_finding(subject_type)) == text


def test_screening_reports_scopes_as_values(kb):
    # Given the lines of a sample batch
    sample_lines = [
        x for x in read_batch(ROOT / "events" / "batches" / "01_shanghai_his_utf8.csv", kb) if isinstance(x, ClaimLine)
    ]
    # When they are screened, Then every re-evaluated scope is a Scope of a patient or a trace code
    outcome = screen_lines(sample_lines, InMemoryRepository(), kb)
    assert outcome.scopes and all(isinstance(s, Scope) for s in outcome.scopes)
    assert {s.kind for s in outcome.scopes} <= {"patient", "trace"}
    assert {s.key for s in outcome.scopes if s.kind == "patient"} == {line.psn_no for line in sample_lines}
    codes = {code for line in sample_lines for code in line.trace_codes}
    assert codes and {s.key for s in outcome.scopes if s.kind == "trace"} == codes


def test_a_chunk_that_defers_its_trace_codes_still_names_their_scopes(kb):
    from rxguard.local.orchestrator import DeferTraceScopes

    # Given the lines of a sample batch, screened as a chunk of the local Map (codes settled later)
    sample_lines = [
        x for x in read_batch(ROOT / "events" / "batches" / "01_shanghai_his_utf8.csv", kb) if isinstance(x, ClaimLine)
    ]
    repo = DeferTraceScopes(InMemoryRepository())
    outcome = screen_lines(sample_lines, repo, kb)
    # Then the codes are kept for the settlement, and the scopes the lines touch (what a
    # retried chunk reads back its findings by) still include each code's
    codes = {code for line in sample_lines for code in line.trace_codes}
    assert codes and repo.codes == codes
    assert {s.key for s in outcome.scopes if s.kind == "trace"} == codes
    assert all(isinstance(s, Scope) for s in outcome.scopes)


def test_the_api_view_of_a_finding_has_the_same_scope() -> None:
    # Given a finding and the API's view of it (the console groups by this key)
    finding = _finding("prescriber")
    # Then both name the same scope
    assert Scope.of(view(finding, None)) == Scope.of(finding) == subject_key(view(finding, None)) == "prescriber:D7"
