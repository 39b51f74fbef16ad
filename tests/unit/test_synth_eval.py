"""`rxguard eval` scoring: per-rule precision/recall at the documented levels, legitimate
patients flagged by severity, and the engine path end to end on a small population."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rxguard_tools.synth.evaluate import main as eval_main
from rxguard_tools.synth.evaluate import patient_chunks, score


def _labels() -> dict[str, Any]:
    patients = {
        "A": {"profile": "over-quantity", "legitimate": False, "rules": ["over-quantity"], "notes": []},
        "B": {"profile": "over-quantity", "legitimate": False, "rules": ["over-quantity"], "notes": []},
        "C": {"profile": "chronic", "legitimate": True, "rules": [], "notes": []},
        "D": {"profile": "override", "legitimate": True, "rules": [], "notes": []},
    }
    return {
        "patients": patients,
        "institutions": {"H1": {"outlier": True}, "H2": {"outlier": False}},
        "prescribers": {"D1": {"outlier": True}},
        "trace_codes": {"reused": {"1" * 20: ["H1/1", "P1/2"]}},
    }


def _finding(rule: str, severity: str, kind: str = "patient", **kw: Any) -> dict[str, Any]:
    return {"rule_id": rule, "severity": severity, "subject_type": kind, "figures": kw.pop("figures", {}), **kw}


def test_score_counts_medium_and_high_as_flagged_and_low_as_informational() -> None:
    # Given one true hit, one miss, a legitimate patient flagged at medium and another at low
    findings = [
        _finding("over-quantity", "high", psn_no="A"),
        _finding("over-quantity", "low", psn_no="B"),
        _finding("over-quantity", "medium", psn_no="C"),
        _finding("early-refill", "low", psn_no="D"),
        _finding("trace-code-reuse", "high", "trace_code", figures={"trace_code": "1" * 20}, psn_no="C"),
        _finding("trace-code-reuse", "high", "trace_code", figures={"trace_code": "2" * 20}),
        _finding("institution-outlier", "medium", "institution", fixmedins_code="H1"),
    ]
    # When scored against the labels
    result = score(findings, _labels())
    rules = result["rules"]
    # Then precision and recall follow from the subjects at medium/high
    oq = rules["over-quantity"]
    assert (oq["tp"], oq["fp"], oq["fn"]) == (1, 1, 1)
    assert oq["precision"] == 0.5 and oq["recall"] == 0.5 and not oq["meets_target"]
    assert result["misses"]["over-quantity"]["false_negatives"][0]["low"] is True
    # trace codes are scored per code, outliers per institution and prescriber
    assert (rules["trace-code-reuse"]["tp"], rules["trace-code-reuse"]["fp"]) == (1, 1)
    assert rules["institution-outlier"]["recall"] == 0.5 and rules["institution-outlier"]["precision"] == 1.0
    # a rule nobody should trigger and nobody triggers is perfect
    assert rules["frequent-visits"]["precision"] == 1.0 and rules["frequent-visits"]["recall"] is None
    # and legitimate patients are counted once, at their worst severity
    legit = result["legitimate"]
    assert (legit["flagged_medium_high"], legit["flagged_low_only"]) == (1, 1)
    assert legit["by_profile"]["chronic"]["medium_high"] == 1
    assert legit["in_trace_code_findings"] == 1
    assert result["targets"]["no_legitimate_flagged"] is False


class _Line:
    def __init__(self, psn: str) -> None:
        self.psn_no = psn


def test_patient_chunks_keep_each_patient_whole() -> None:
    # Given lines of three patients
    lines = [_Line(p) for p in "aabbbbcaa"]
    # When packed into chunks of about 4 lines
    chunks = patient_chunks(lines, 4)
    # Then no patient is split and no line is lost
    owners = [{ln.psn_no for ln in c} for c in chunks]
    assert sum(len(c) for c in chunks) == len(lines)
    assert all(len([o for o in owners if p in o]) == 1 for p in "abc")


def test_eval_engine_path_writes_a_table_and_json(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    # Given a small population screened by the engine in memory
    out = tmp_path / "eval.json"
    # When rxguard eval runs
    code = eval_main(["--engine", "--patients", "250", "--months", "2", "--seed", "3", "--json", str(out)])
    # Then it prints the table and writes every rule's figures
    assert code == 0
    printed = capsys.readouterr().out
    assert "over-quantity" in printed and "legitimate patients" in printed
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result["rules"]) >= {"over-quantity", "trace-code-reuse", "institution-outlier"}
    assert result["screening"]["path"] == "engine"
    assert result["population"]["patients"] == 250
    assert all(result["rules"][r]["positives"] > 0 for r in ("over-quantity", "early-refill", "pharmacy-spend"))
