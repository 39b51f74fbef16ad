"""The rule catalogue: one module per rule, named after its id, declaring what the rest reads."""

from __future__ import annotations

import importlib

import pytest

from rxguard.api.nhsa import behaviour_type
from rxguard.engine import Engine
from rxguard.engine.rules import CATALOGUE, DISPENSING_RULES, PATIENT_RULES, RULE_IDS, Rule
from rxguard.kb import KnowledgeBaseError, RegionOverride
from rxguard_tools.synth.generator import SCENARIOS
from tests.unit.test_engine import with_rule


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_each_rule_lives_in_the_module_named_after_its_id(rule_id):
    # Given a rule id, When its module is imported by name, Then it holds the rule's class
    module = importlib.import_module(f"rxguard.engine.rules.{rule_id.replace('-', '_')}")
    classes = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Rule) and v is not Rule]
    assert [c.id for c in classes] == [rule_id]
    assert CATALOGUE[rule_id] is classes[0]


def test_every_rule_declares_its_facts_and_the_yaml_stays_within_them(kb):
    for rule_id, cls in CATALOGUE.items():
        assert cls.behaviour_code.isdigit() and len(cls.behaviour_code) == 2
        assert cls.subject_type in {"patient", "institution", "trace_code"}
        assert set(kb.rule(rule_id).scenes) <= set(cls.scenes)
        assert cls.Parameters.model_validate(kb.rule(rule_id).parameters)  # rules.yaml only overrides
    codes = [cls.behaviour_code for cls in CATALOGUE.values()]
    assert len(set(codes)) == len(codes)
    assert behaviour_type("early-refill") == "12" and behaviour_type("no-such-rule") == "99"
    # the national dictionary (rules/national.yaml) answers the same codes as the modules
    for rule_id, cls in CATALOGUE.items():
        assert behaviour_type(rule_id) == cls.behaviour_code, rule_id


def test_lists_elsewhere_are_read_from_the_registry():
    assert "early-refill" in PATIENT_RULES and "trace-code-reuse" not in PATIENT_RULES
    assert "frequent-visits" not in DISPENSING_RULES and "over-quantity" in DISPENSING_RULES
    labelled = {r for rules in SCENARIOS.values() for r in rules}
    assert labelled == set(PATIENT_RULES)  # every patient rule has a synthetic scenario


def test_a_parameter_with_a_wrong_name_or_a_scene_the_rule_cannot_run_in_fails(kb):
    bad = with_rule(kb, "early-refill", parameters={"used_fraktion": 0.5})
    with pytest.raises(KnowledgeBaseError, match=r"early-refill.*parameters\.used_fraktion"):
        Engine(bad)
    bad = with_rule(kb, "institution-outlier", scenes=["pre", "post"])
    with pytest.raises(KnowledgeBaseError, match=r"institution-outlier.*scenes.*pre"):
        Engine(bad)
    regional = with_rule(
        kb, "frequent-visits", region_overrides={"610000": RegionOverride(parameters={"min_visits": True})}
    )
    with pytest.raises(KnowledgeBaseError, match=r"region_overrides\.610000\.parameters\.min_visits"):
        Engine(regional)


def test_defaults_apply_when_rules_yaml_leaves_a_parameter_out(kb):
    # Given rules.yaml without the early-refill parameters, Then the module's defaults hold
    engine = Engine(with_rule(kb, "early-refill", parameters={}))
    assert engine.catalogue["early-refill"].params(None).used_fraction == 0.75
