"""Knowledge base: the reference catalogue imports whole, phases, and bad files fail clearly."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from rxguard.engine.rules import RULE_IDS
from rxguard.kb import KnowledgeBaseError, Phase, import_catalogue, load_knowledge_base

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "rules" / "reference" / "monitored_drugs.csv"


def test_catalogue_holds_every_reference_row(kb):
    # Given the reference list, When the knowledge base loads, Then every product is in it
    with REFERENCE.open(encoding="utf-8") as handle:
        codes = {row["drug_code"] for row in csv.DictReader(handle)}
    assert len(codes) == 120
    assert set(kb.drugs) == codes
    assert set(kb.rules) == set(RULE_IDS)  # one rules.yaml entry per rule module


def test_import_is_repeatable(tmp_path):
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    import_catalogue(REFERENCE, out1)
    import_catalogue(REFERENCE, out2)
    assert out1.read_bytes() == out2.read_bytes()
    assert (
        json.loads(out1.read_text(encoding="utf-8"))["drugs"]
        == json.loads((ROOT / "rules" / "drugs.json").read_text(encoding="utf-8"))["drugs"]
    )


@pytest.mark.parametrize(
    ("phase", "minimum", "maximum"), [("pilot", 50, 99), ("province", 100, 119), ("full", 120, 120)]
)
def test_phases_select_cumulative_lists(phase, minimum, maximum):
    kb = load_knowledge_base(phase=phase)
    assert minimum <= len(kb.monitored) <= maximum
    if phase != "pilot":
        assert set(load_knowledge_base(phase="pilot").monitored) <= set(kb.monitored)


def test_days_supply_at_label_maximum(kb):
    entecavir = kb.drugs["XJ05AF10A001"]  # 0.5 mg tablets, label max 1 mg/day
    assert entecavir.days_supply(28) == pytest.approx(14.0)


def test_indication_prefix_matching(kb):
    drug = kb.drugs["XA10BJ06A001"]  # semaglutide, restricted to E11
    assert drug.indication_allowed(["E11.9"])
    assert not drug.indication_allowed(["E66.0"])
    assert kb.drugs["XA10BA02A001"].indication_allowed([])  # metformin: unrestricted


def test_region_override_replaces_parameters(kb):
    from rxguard.kb import RuleDefinition

    rule = RuleDefinition.model_validate(
        {
            **kb.rule("frequent-visits").model_dump(),
            "region_overrides": {"610000": {"parameters": {"min_visits": 10}, "severity": "high"}},
        }
    )
    assert rule.params_for("610800")["min_visits"] == 10  # Yulin, province-level override
    assert rule.severity_for("610800") == "high"
    assert rule.params_for("310000")["min_visits"] == 15


def _copy_rules(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", target)
    return target


def test_bad_drug_entry_names_file_entry_and_field(tmp_path):
    rules = _copy_rules(tmp_path)
    data = json.loads((rules / "drugs.json").read_text(encoding="utf-8"))
    data["drugs"][3]["max_daily_dose"] = -1
    (rules / "drugs.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(KnowledgeBaseError) as err:
        load_knowledge_base(rules)
    assert err.value.file.endswith("drugs.json")
    assert err.value.entry == data["drugs"][3]["drug_code"]
    assert err.value.field == "max_daily_dose"


def test_bad_rule_entry_names_file_entry_and_field(tmp_path):
    rules = _copy_rules(tmp_path)
    text = (rules / "rules.yaml").read_text(encoding="utf-8")
    (rules / "rules.yaml").write_text(text.replace("severity: high", "severity: urgent", 1), encoding="utf-8")
    with pytest.raises(KnowledgeBaseError) as err:
        load_knowledge_base(rules)
    assert err.value.file.endswith("rules.yaml")
    assert err.value.entry == "cumulative-oversupply"
    assert err.value.field == "severity"


def test_too_few_drugs_for_a_phase_fails(tmp_path):
    rules = _copy_rules(tmp_path)
    data = json.loads((rules / "drugs.json").read_text(encoding="utf-8"))
    data["drugs"] = data["drugs"][:40]
    (rules / "drugs.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match="phase pilot has"):
        load_knowledge_base(rules, Phase.PILOT)


def test_import_rejects_ragged_row(tmp_path):
    src = tmp_path / "cat.csv"
    lines = REFERENCE.read_text(encoding="utf-8").splitlines()
    lines[5] = lines[5] + ",extra"
    src.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match="line 6"):
        import_catalogue(src, tmp_path / "out.json")


def test_a_rule_is_active_from_its_first_to_its_last_day_of_each_region(kb):
    from datetime import date

    from rxguard.kb import RuleDefinition

    # Given a rule off everywhere but in Shanghai's province code, for the first half of 2025
    rule = RuleDefinition.model_validate(
        {
            **kb.rule("over-quantity").model_dump(),
            "enabled": False,
            "effective_from": date(2025, 1, 1),
            "effective_to": date(2025, 6, 30),
            "region_overrides": {"310000": {"enabled": True}},
        }
    )
    # Then its window in a Shanghai district is those days, both ends included
    assert rule.window("310101") == (date(2025, 1, 1), date(2025, 6, 30))
    assert rule.active(date(2025, 1, 1), "310101") and rule.active(date(2025, 6, 30), "310101")
    assert not rule.active(date(2024, 12, 31), "310101") and not rule.active(date(2025, 7, 1), "310101")
    # and elsewhere (or with no region) it is never active
    for region in ("610800", None):
        first, last = rule.window(region)
        assert first > last
        assert not rule.active(date(2025, 3, 1), region)
    # With no last day, it stays active
    open_ended = rule.model_copy(update={"effective_to": None})
    assert open_ended.active(date(2099, 12, 31), "310101")
