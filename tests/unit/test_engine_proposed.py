"""`Engine.evaluate_patient_lines` (what a check evaluates: only the part of the timeline
that can share a finding with the proposed lines) gives exactly the findings of the whole
timeline's evaluation whose evidence includes a proposed line: ids, rules, severities,
evidence, figures, texts. Over random timelines of several institutions and regions, with
reversals (whole and part), override reasons, long-term prescriptions, split packs,
diagnoses, repeated trace codes, and one or several proposed lines (new ones, or lines
already in the history)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxguard.api.service import search_kb
from rxguard.engine import Engine
from rxguard.engine.factory import days_later, make_line
from rxguard.kb import get_knowledge_base
from rxguard.models import ClaimLine, Finding, Scene

KB = get_knowledge_base()
PSN = "P0001"
DRUGS = [
    "XB01AC04A001",  # clopidogrel, chronic (B01AC, with ticagrelor: duplication)
    "XB01AC24A001",  # ticagrelor, restricted indications
    "XN02AA01A001",  # morphine, acute (N02AA, with oxycodone)
    "XN02AA05A001",  # oxycodone
    "XJ05AF10A001",  # entecavir, restricted (J05AF, with tenofovir)
    "XJ05AF07A001",  # tenofovir
    "XL01ED03A001",  # alectinib, high cost
    None,  # a registration fee (not monitored)
]
INSTITUTIONS = ["P3101001", "P3101002", "H3101001", "H3101002", "H3101003", "P3201001"]
REGIONS = ["310000", "310100", "320100", "320200", "110000"]
CODES = ["81000000000000000001", "81000000000000000002", "81000000000000000003"]

line_spec = st.fixed_dictionaries(
    {
        "drug": st.sampled_from(DRUGS),
        "day": st.integers(0, 120),
        "minute": st.integers(8 * 60, 20 * 60),
        "inst": st.sampled_from(INSTITUTIONS),
        "region": st.sampled_from(REGIONS),
        "packs": st.integers(1, 4),
        "split": st.sampled_from([None, None, None, 7, 14]),  # minimum units (拆零) instead of packs
        "codes": st.lists(st.sampled_from(CODES), max_size=3),
        "override": st.sampled_from([None, None, None, "lost", "travel", "dose_change"]),
        "lt": st.booleans(),
        "dx": st.sampled_from([[], [], ["B18.1"], ["C34.1"], ["I10"], ["I21.0"]]),
        "visit": st.integers(0, 2),
        "doctor": st.sampled_from([None, "D1", "D2", "D3", "D4", "D5"]),
        "ward": st.sampled_from([False, False, False, False, True]),
        # a reversal of an earlier line (whole or part) instead of a purchase
        "reverses": st.one_of(st.none(), st.none(), st.tuples(st.integers(0, 60), st.sampled_from([1.0, 0.5]))),
    }
)


def build(index: int, spec: dict[str, Any], earlier: list[ClaimLine], prefix: str = "S") -> ClaimLine:
    when = days_later("2025-09-01 00:00:00", spec["day"] + spec["minute"] / 1440)
    if spec["reverses"] is not None and earlier:
        original = earlier[spec["reverses"][0] % len(earlier)]
        share = spec["reverses"][1]
        return original.model_copy(
            update={
                "feedetl_sn": f"{prefix}{index:04d}",
                "init_feedetl_sn": original.feedetl_sn,
                "cnt": -original.cnt * share,
                "det_item_fee_sumamt": -round(original.det_item_fee_sumamt * share, 2),
                "quantity_units": -original.quantity_units * share,
                "fee_ocur_time": max(when, original.fee_ocur_time),
                "trace_codes": [],
                "override_reason": None,
            }
        )
    inst = spec["inst"]
    drug = spec["drug"]
    return make_line(
        KB,
        psn_no=PSN,
        fixmedins_code=inst,
        drug_code=drug,
        when=when,
        packs=spec["packs"],
        units=spec["split"] if drug else None,
        feedetl_sn=f"{prefix}{index:04d}",
        mdtrt_id=f"{inst}-{spec['day']}-{spec['visit']}",
        med_type=("21" if spec["ward"] else "11") if inst.startswith("H") else "41",
        trace_codes=spec["codes"] if drug else [],
        override_reason=spec["override"],
        lt_rx_flag=spec["lt"],
        diagnoses=spec["dx"],
        admdvs=spec["region"],
        bilg_dr_codg=spec["doctor"],
        price=None if drug else 3000.0,
    )


def timeline_of(
    specs: list[dict[str, Any]], prefix: str = "S", start: list[ClaimLine] | None = None
) -> list[ClaimLine]:
    lines: list[ClaimLine] = list(start or [])
    for i, spec in enumerate(specs):
        lines.append(build(i, spec, lines, prefix))
    return lines[len(start or []) :]


def _wider_identity_kb() -> Any:
    """The knowledge base with identity-misuse's windows widened to days (wider still in one
    region), so the time window the check keeps is exercised beyond a few hours."""
    from rxguard.kb import RegionOverride

    rule = KB.rules["identity-misuse"]
    wide = rule.model_copy(
        update={
            "parameters": {**rule.parameters, "province_hours": 60.0, "prefecture_hours": 30.0},
            "region_overrides": {"320200": RegionOverride(parameters={"province_hours": 100.0})},
        }
    )
    return dataclasses.replace(KB, rules={**KB.rules, "identity-misuse": wide})


ENGINES = {
    "pre": Engine(KB, (Scene.PRE,)),
    "search": Engine(search_kb(KB), (Scene.PRE,)),
    "in (monthly rules: whole timeline)": Engine(KB, (Scene.IN,)),
    "post": Engine(KB, (Scene.POST,)),
    "pre, identity windows of days": Engine(_wider_identity_kb(), (Scene.PRE,)),
}


def dumped(findings: list[Finding]) -> list[dict[str, Any]]:
    return [f.model_dump(mode="json") for f in findings]


def whole_then_filtered(engine: Engine, timeline: list[ClaimLine], ids: set[str]) -> list[Finding]:
    return [f for f in engine.evaluate_patient(PSN, timeline) if ids & set(f.evidence)]


@pytest.mark.parametrize("name", sorted(ENGINES))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=st.lists(line_spec, max_size=45),
    proposed=st.lists(line_spec, min_size=1, max_size=4),
    resent=st.lists(st.integers(0, 44), max_size=2),
)
def test_the_proposed_lines_get_exactly_the_whole_timelines_findings(
    name: str, history: list[dict[str, Any]], proposed: list[dict[str, Any]], resent: list[int]
) -> None:
    engine = ENGINES[name]
    # Given a patient's history and proposed lines (new ones, possibly reversals of history
    # lines, and some lines of the history itself proposed again)
    past = timeline_of(history)
    new = timeline_of(proposed, "N", past)
    again = [past[i % len(past)] for i in resent] if past else []
    timeline = [*past, *new]
    ids = {line.line_id for line in [*new, *again]}
    # When the check evaluates only what can share a finding with them
    restricted = engine.evaluate_patient_lines(PSN, timeline, ids)
    # Then it is exactly the whole evaluation's findings on them
    assert dumped(restricted) == dumped(whole_then_filtered(engine, timeline, ids))


def _random_spec(rng: random.Random) -> dict[str, Any]:
    """A line spec as `line_spec` draws them, from a seeded generator (a fixed sample)."""
    return {
        "drug": rng.choice(DRUGS),
        "day": rng.randint(0, 120),
        "minute": rng.randint(8 * 60, 20 * 60),
        "inst": rng.choice(INSTITUTIONS),
        "region": rng.choice(REGIONS),
        "packs": rng.randint(1, 4),
        "split": rng.choice([None, None, None, 7, 14]),
        "codes": [rng.choice(CODES) for _ in range(rng.randint(0, 3))],
        "override": rng.choice([None, None, None, "lost", "travel", "dose_change"]),
        "lt": rng.random() < 0.5,
        "dx": rng.choice([[], [], ["B18.1"], ["C34.1"], ["I10"], ["I21.0"]]),
        "visit": rng.randint(0, 2),
        "doctor": rng.choice([None, "D1", "D2", "D3", "D4", "D5"]),
        "ward": rng.random() < 0.2,
        "reverses": None if rng.random() < 0.7 else (rng.randint(0, 60), rng.choice([1.0, 0.5])),
    }


def test_the_generated_timelines_reach_every_rule_family() -> None:
    # Given a fixed sample of timelines drawn like the property's, When each proposes lines,
    # Then every rule family fires on some proposed line and the restricted evaluation
    # equals the whole one there too (else the property above would prove little)
    rng = random.Random(7)
    seen: set[str] = set()
    engine = ENGINES["pre, identity windows of days"]
    for _ in range(200):
        past = timeline_of([_random_spec(rng) for _ in range(rng.randint(10, 45))])
        new = timeline_of([_random_spec(rng) for _ in range(rng.randint(1, 4))], "N", past)
        ids = {line.line_id for line in new}
        found = engine.evaluate_patient_lines(PSN, [*past, *new], ids)
        assert dumped(found) == dumped(whole_then_filtered(engine, [*past, *new], ids))
        seen.update(f.rule_id for f in found)
    families = {
        "over-quantity",
        "early-refill",
        "cross-institution-repeat",
        "cumulative-oversupply",
        "override-frequency",
        "therapeutic-duplication",
        "multi-provider",
        "identity-misuse",
        "indication-mismatch",
        "trace-code-reuse",
    }
    assert families <= seen, sorted(families - seen)
