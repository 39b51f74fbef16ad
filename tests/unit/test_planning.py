"""Drug watch, backtests and phase planning over a real SQLite state (docs/planning.md)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rxguard import screening
from rxguard.kb import KnowledgeBase, Phase, get_knowledge_base
from rxguard.local.state import State
from rxguard.models import ClaimLine, Finding, InstitutionKind
from rxguard.planning.backtest import backtest, phase_plan
from rxguard.planning.history import overlay_rule_entries, with_phase
from rxguard.planning.watch import drug_watch
from rxguard_tools.planning_cli import backtest_main, watch_main
from rxguard_tools.synth.evaluate import patient_chunks, read_lines
from rxguard_tools.synth.generator import SynthConfig, generate
from rxguard_tools.synth.output import write_population


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return get_knowledge_base()


@pytest.fixture(scope="module")
def population_lines(kb: KnowledgeBase, tmp_path_factory: pytest.TempPathFactory) -> list[ClaimLine]:
    out = tmp_path_factory.mktemp("population")
    config = SynthConfig(patients=120, seed=11, months=4, start=datetime(2025, 1, 1).date(), abusive_share=0.3)
    files = write_population(generate(config, kb), out, fmt="csv", split="month")
    batches, _ = read_lines(files, kb)
    return [line for batch in batches for line in batch]


def real_run(lines: list[ClaimLine], repo: object, kb: KnowledgeBase) -> None:
    """What the batch run does to a state: screen patient chunks, then the institutions step."""
    for chunk in patient_chunks(lines, 300):
        screening.screen_lines(chunk, repo, kb)  # type: ignore[arg-type]
    periods = sorted({x.fee_ocur_time.strftime("%Y-%m") for x in lines})
    activity = repo.load_activity(periods)  # type: ignore[attr-defined]
    found = screening.institution_findings(activity, kb)
    scopes = {a.scope for a in activity}
    screening.replace_institution_findings(repo, found, scopes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def state_dir(population_lines: list[ClaimLine], kb: KnowledgeBase, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("state")
    with State.open(directory) as state:
        real_run(population_lines, state.repository(), kb)
    return directory


def keyed(findings: list[Finding]) -> dict[str, tuple[str, str]]:
    return {f.finding_id: (f.rule_id, f.severity.value) for f in findings}


def test_unchanged_rules_report_no_change(state_dir: Path, kb: KnowledgeBase) -> None:
    result = backtest(state_dir, kb, workers=2)
    assert result.before, "the population must have findings for the test to mean anything"
    assert not result.changed, {r: c.as_json() for r, c in result.rules.items() if c.added or c.removed}
    assert keyed(result.after) == keyed(result.before)
    assert result.lines > 1000


def test_changed_threshold_equals_a_real_run_with_the_new_rules(
    state_dir: Path, population_lines: list[ClaimLine], kb: KnowledgeBase, tmp_path: Path
) -> None:
    trial = overlay_rule_entries(kb, {"rules": [{"id": "early-refill", "parameters": {"used_fraction": 0.3}}]})
    assert trial.rule("early-refill").parameters["used_fraction"] == 0.3
    assert (
        trial.rule("early-refill").parameters["carry_tolerance_days"]
        == kb.rule("early-refill").parameters["carry_tolerance_days"]
    )  # merged, not replaced
    result = backtest(state_dir, trial, workers=2)
    with State.open(tmp_path / "rerun") as fresh:
        real_run(population_lines, fresh.repository(), trial)
        rerun = fresh.repository().all_current_findings()
    assert keyed(result.after) == keyed(rerun)
    change = result.rules["early-refill"].as_json()
    assert change["removed"] + change["severity_changed"] > 0  # the lower threshold really changed something
    assert all(c.added == c.removed == 0 for r, c in result.rules.items() if r in ("pharmacy-spend", "over-quantity"))


def test_reviews_feed_flips_and_precision(state_dir: Path, kb: KnowledgeBase, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "reviewed"
    shutil.copytree(state_dir, copy)
    trial = overlay_rule_entries(kb, {"rules": [{"id": "early-refill", "enabled": False}]})
    with State.open(copy) as state:
        store = state.findings_store()
        refills = [f for f in state.repository().all_current_findings() if f.rule_id == "early-refill"]
        assert len(refills) >= 2
        store.review(refills[0].finding_id, "confirmed", "seen the patient", "inspector", datetime(2025, 6, 1))
        store.review(refills[1].finding_id, "dismissed", "documented travel", "inspector", datetime(2025, 6, 1))
    result = backtest(copy, trial, workers=1).as_json()["rules"]["early-refill"]
    assert result["removed"] == len(refills)
    assert result["added"] == 0
    assert result["confirmed_lost"] == 1 and result["dismissed_avoided"] == 1
    assert result["precision_before"] == 0.5 and result["precision_after"] is None
    assert result["spending_before"] > 0 and result["spending_after"] == 0


def _line(n: int, psn: str, drug: str, when: datetime, amount: float, inst: str = "P61080001") -> ClaimLine:
    return ClaimLine(
        feedetl_sn=f"W{n:06d}",
        fixmedins_code=inst,
        institution_kind=InstitutionKind.from_code(inst),
        admdvs="610800",
        psn_no=psn,
        mdtrt_id=f"{inst}:{when.date()}",
        med_type="41",
        fee_ocur_time=when,
        med_list_codg=drug,
        cnt=1,
        pric=amount,
        det_item_fee_sumamt=amount,
        quantity_units=1,
    )


def test_watch_ranks_the_drug_whose_spending_was_made_to_grow(kb: KnowledgeBase, tmp_path: Path) -> None:
    steady = [f"XSTEADY{i:02d}" for i in range(8)]
    grower = "XGROWER01"
    lines: list[ClaimLine] = []
    n = 0
    for month in range(1, 7):
        day = datetime(2025, month, 10, 9)
        for i, drug in enumerate(steady):  # steady drugs: ~the same spending every month
            for p in range(10):
                n += 1
                lines.append(_line(n, f"61{p:08d}", drug, day + timedelta(hours=p), 100.0 + i))
        buyers = 2 if month < 6 else 4
        amount = 150.0 if month < 6 else 1500.0  # the last month grows tenfold
        for p in range(buyers):
            n += 1
            lines.append(_line(n, f"62{p:08d}", grower, day + timedelta(hours=p), amount))
    with State.open(tmp_path / "s") as state:
        state.repository().record_lines(lines)
        report = drug_watch(state, kb)
    first = report["drugs"][0]
    assert first["med_list_codg"] == grower
    codes = {r["code"] for r in first["reasons"]}
    assert {"fast_growth", "concentrated_patients"} <= codes
    assert first["growth_mom"] == pytest.approx((4 * 1500 - 2 * 150) / (2 * 150), rel=1e-6)
    assert first["candidate"] is True and first["monitored"] is False
    assert report["window"]["last_month"] == "2025-06"
    steady_ranks = [d["rank"] for d in report["drugs"] if d["med_list_codg"] in steady]
    assert min(steady_ranks) > 1


def test_phase_plan_flags_no_more_with_a_shorter_list(state_dir: Path, kb: KnowledgeBase) -> None:
    plan = phase_plan(state_dir, kb, workers=1)["phases"]
    assert plan["pilot"]["monitored_drugs"] < plan["province"]["monitored_drugs"] < plan["full"]["monitored_drugs"]
    assert plan["pilot"]["findings"] <= plan["full"]["findings"]
    full = backtest(state_dir, with_phase(kb, Phase.FULL), workers=1, resolve_lines=True)
    assert plan["full"]["findings"] == len(full.after)


def test_cli_writes_json_and_names_a_missing_state(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "try.yaml"
    rules.write_text("rules:\n  - id: early-refill\n    parameters: {used_fraction: 0.3}\n", encoding="utf-8")
    out = tmp_path / "bt.json"
    assert backtest_main(["--state", str(state_dir), "--rules", str(rules), "--json", str(out), "--workers", "1"]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report["rules"]) >= {"pharmacy-spend", "early-refill"}
    assert report["rules"]["early-refill"]["removed"] > 0
    assert report["totals"]["removed"] == report["rules"]["early-refill"]["removed"]
    watch_json = tmp_path / "watch.json"
    assert watch_main(["--state", str(state_dir), "--json", str(watch_json)]) == 0
    assert json.loads(watch_json.read_text(encoding="utf-8"))["drugs"][0]["rank"] == 1
    with pytest.raises(SystemExit):
        watch_main(["--state", str(tmp_path / "nothing")])
    assert "no rxguard state here" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: early-refill\n    severity: catastrophic\n", encoding="utf-8")
    assert backtest_main(["--state", str(state_dir), "--rules", str(bad)]) == 1
    assert "early-refill" in capsys.readouterr().err


def test_backtest_route_answers_regulators_and_names_bad_fields(state_dir: Path, kb: KnowledgeBase) -> None:
    from rxguard.planning.backtest import state_planner
    from tests.conftest import load_event
    from tests.unit.test_api import AUDITOR, PHARMACY, call, services, with_body

    svc = services(kb)
    event = load_event("api/backtest.json")

    def as_caller(arn: str, body: Any) -> dict[str, Any]:
        out = with_body(event, body)
        out["requestContext"] = {**out.get("requestContext", {}), "identity": {"userArn": arn}}
        return out

    trial = {"rules": [{"id": "early-refill", "parameters": {"used_fraction": 0.3}}]}
    status, body = call(svc, as_caller(AUDITOR, trial))
    assert status == 409 and "rxguard serve --state" in body["error"]["message"]  # no stored history here
    svc.planner = state_planner(state_dir, kb, workers=1)
    status, body = call(svc, as_caller(PHARMACY, trial))
    assert status == 403
    status, body = call(svc, as_caller(AUDITOR, trial))
    assert status == 200, body
    assert body["rules"]["early-refill"]["removed"] > 0
    status, body = call(svc, as_caller(AUDITOR, {"rules": [{"id": "early-refill", "severity": "catastrophic"}]}))
    assert status == 400 and body["error"]["field"] == "rules.early-refill.severity"
    status, body = call(svc, as_caller(AUDITOR, {"rules": [], "since": "2025-13"}))
    assert status == 400


def test_serve_over_a_state_answers_backtests(state_dir: Path, tmp_path: Path) -> None:
    import shutil

    from rxguard.api.resolver import handle
    from rxguard.api.settings import ApiSettings
    from rxguard_tools.offline.serve import open_local_with_planner
    from tests.conftest import load_event

    copy = tmp_path / "served"
    shutil.copytree(state_dir, copy)
    site = open_local_with_planner(copy, ApiSettings.model_validate({"auth_mode": "open"}))
    try:
        event = load_event("api/backtest.json")
        event["body"] = json.dumps({"rules": [{"id": "early-refill", "parameters": {"used_fraction": 0.3}}]})
        answer = handle(event, None, site.services)
        assert answer["statusCode"] == 200, answer["body"]
        assert json.loads(answer["body"])["rules"]["early-refill"]["removed"] > 0
    finally:
        site.close()


def test_a_rule_base_error_crosses_a_process_boundary_whole() -> None:
    import pickle

    from rxguard.kb import KnowledgeBaseError

    error = pickle.loads(pickle.dumps(KnowledgeBaseError("try.yaml", "early-refill", "parameters", "bad value")))
    assert (error.file, error.entry, error.field) == ("try.yaml", "early-refill", "parameters")
    assert str(error) == "try.yaml, entry early-refill, field parameters: bad value"
