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


def line_specs(
    drugs: list[str | None] = DRUGS, institutions: list[str] = INSTITUTIONS, days: tuple[int, int] = (0, 120)
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "drug": st.sampled_from(drugs),
            "day": st.integers(*days),
            "minute": st.integers(8 * 60, 20 * 60),
            "inst": st.sampled_from(institutions),
            "region": st.sampled_from(REGIONS),
            "packs": st.integers(1, 4),
            "split": st.sampled_from([None, None, None, 7, 14]),  # minimum units (拆零) instead of packs
            "codes": st.lists(st.sampled_from(CODES), max_size=3),
            "override": st.sampled_from([None, None, None, "lost", "travel", "dose_change"]),
            "lt": st.booleans(),
            "dx": st.sampled_from([[], [], ["B18.1"], ["C34.1"], ["I10"], ["I21.0"]]),
            "visit": st.integers(0, 2),
            "stay": st.booleans(),  # a visit id kept across days (joins lines a day apart at most)
            "doctor": st.sampled_from([None, "D1", "D2", "D3", "D4", "D5"]),
            "ward": st.sampled_from([False, False, False, False, True]),
            # a reversal of an earlier line (whole or part) instead of a purchase
            "reverses": st.one_of(st.none(), st.none(), st.tuples(st.integers(0, 60), st.sampled_from([1.0, 0.5]))),
        }
    )


line_spec = line_specs()


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
        mdtrt_id=f"{inst}-stay-{spec['visit']}" if spec.get("stay") else f"{inst}-{spec['day']}-{spec['visit']}",
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


ENGINE_ARGS: dict[str, tuple[Any, tuple[Scene, ...]]] = {
    "pre": (KB, (Scene.PRE,)),
    "search": (search_kb(KB), (Scene.PRE,)),
    "in (monthly rules: whole timeline)": (KB, (Scene.IN,)),
    "post": (KB, (Scene.POST,)),
    "pre, identity windows of days": (_wider_identity_kb(), (Scene.PRE,)),
}
ENGINES = {name: Engine(*args) for name, args in ENGINE_ARGS.items()}


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
        "stay": rng.random() < 0.3,
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


# Checks after a history (what a check at the counter is): crowded, one class at two
# institutions (lines on the history's last days, in the same visit or not, many overrides:
# the supply walks and what would change them), or spread over every drug, institution and
# region (duplication, multi-provider, identity-misuse, indication, trace codes)
KINDS = {
    "crowded": (["XB01AC04A001", "XB01AC24A001", None], ["P3101001", "H3101001"]),
    "spread": (DRUGS, INSTITUTIONS),
}
offsets = st.sampled_from([0, 0, 0, 1, 1, 2, 10, 30])  # days after the history's last day


def _checks_after(kind: str) -> Any:
    drugs, institutions = KINDS[kind]
    visit = {"visit": 0} if kind == "crowded" else {}
    history = line_specs(drugs, institutions, days=(0, 40)).map(lambda spec: {**spec, **visit})
    later = line_specs(drugs, institutions).map(lambda spec: {**spec, **visit, "reverses": None})
    return st.tuples(
        st.lists(history, max_size=30),
        st.lists(st.lists(st.tuples(later, offsets), min_size=1, max_size=3), min_size=1, max_size=4),
        st.booleans(),
    )


RESUMING = ["search", "pre", "pre, identity windows of days", "in (monthly rules: whole timeline)"]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("name", RESUMING)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_checks_resuming_one_prepared_history_get_the_whole_timelines_findings(
    name: str, kind: str, data: st.DataObject
) -> None:
    # Given an engine, which walks a history once and resumes those walks for lines after it
    # (on the history's last days too), and several checks against the same history; with
    # `resend`, a history line a reversal of the history names is proposed again (the
    # reversal must still net it)
    history, checks, resend = data.draw(_checks_after(kind))
    engine = _fresh(name)
    past = timeline_of(history)
    reversed_ids = {line.reverses for line in past if line.reverses}
    again = [line for line in past if line.line_id in reversed_ids][-1:] if resend else []
    last_day = max((spec["day"] for spec in history), default=0)
    for n, proposed in enumerate(checks):
        new = timeline_of([{**spec, "day": last_day + offset} for spec, offset in proposed], f"N{n}-", past)
        ids = {line.line_id for line in [*new, *again]}
        # When each is evaluated (the first prepares the history, the others reuse it)
        restricted = engine.evaluate_patient_lines(PSN, [*past, *new], ids)
        # Then each gets exactly the whole evaluation's findings on its lines
        assert dumped(restricted) == dumped(whole_then_filtered(engine, [*past, *new], ids))
        # And so does a check's entry, the history as stored and the proposed lines apart (a
        # proposed line of a history id replacing it; the history kept: the same line objects)
        assert dumped(engine.evaluate_proposed(PSN, past, [*new, *again], ids)) == dumped(restricted)


def _fresh(name: str) -> Engine:
    """A new engine like ENGINES[name] (nothing kept from other examples)."""
    return Engine(*ENGINE_ARGS[name])


def test_the_search_engine_resumes_the_walk_when_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given lines proposed after a history (the next-fill search's case), When checked twice,
    # Then the history is walked once and both checks resume it (the other test's property
    # then covers the resumed path, not only the fallback)
    from rxguard.engine import supply

    calls = {"prepare": 0, "resume": 0}
    for name in calls:
        original = getattr(supply.SupplyRules, name)

        def counted(self: Any, *args: Any, _original: Any = original, _name: str = name) -> Any:
            calls[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(supply.SupplyRules, name, counted)
    engine = Engine(search_kb(KB), (Scene.PRE,))
    rng = random.Random(3)
    past = timeline_of([{**_random_spec(rng), "drug": "XB01AC04A001", "reverses": None} for _ in range(12)])
    for n in range(2):
        new = timeline_of([{**_random_spec(rng), "drug": "XB01AC04A001", "day": 130 + n, "reverses": None}])
        new = [line.model_copy(update={"feedetl_sn": f"M{n}"}) for line in new]
        ids = {line.line_id for line in new}
        assert dumped(engine.evaluate_patient_lines(PSN, [*past, *new], ids)) == dumped(
            whole_then_filtered(engine, [*past, *new], ids)
        )
    assert calls == {"prepare": 1, "resume": 2}


CLOPIDOGREL = "XB01AC04A001"  # 28 days a pack


def _bought(sn: str, day: float, visit: str | None = None, **extra: Any) -> ClaimLine:
    return make_line(
        KB, psn_no=PSN, fixmedins_code="P3101001", drug_code=CLOPIDOGREL, feedetl_sn=sn,
        when=days_later("2025-09-01 09:00:00", day), mdtrt_id=visit, **{"admdvs": "310000", **extra},
    )  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [
        "same day, another visit",  # joins the history's last fill (same institution and day)
        "next day, same visit",  # joins it through the visit id (a day apart)
        "a history reversal names it",  # a resent line the history refunds: netted away
        "override run going on",  # override-frequency's run started in the history
    ],
)
def test_what_would_change_the_historys_walk_is_evaluated_whole(case: str) -> None:
    # Given the search engine and a history whose walk it keeps
    engine = Engine(search_kb(KB), (Scene.PRE,))
    past = [_bought("S1", 0), _bought("S2", 20, visit="V2")]
    if case == "same day, another visit":
        new = [_bought("N1", 20.2, visit="V9")]
    elif case == "next day, same visit":
        new = [_bought("N1", 21, visit="V2")]
    elif case == "a history reversal names it":
        last = _bought("S3", 22)
        refund = last.model_copy(
            update={"feedetl_sn": "R3", "init_feedetl_sn": "S3", "cnt": -1.0, "det_item_fee_sumamt": -38.0,
                    "quantity_units": -28.0, "fee_ocur_time": days_later(last.fee_ocur_time, 0.1)}
        )  # fmt: skip
        past += [last, refund]
        new = [last]
    else:
        past = [_bought(f"S{i}", 3 * i, override_reason="travel") for i in range(4)]
        new = [_bought("N1", 12, override_reason="travel")]
    timeline = past + [line for line in new if line not in past]
    ids = {line.line_id for line in new}
    engine.evaluate_patient_lines(PSN, [*past[:1], _bought("X0", 40)], {"P3101001/X0"})  # another history kept
    # When a proposed line would join, be netted by, or extend what the history's walk settled
    found = engine.evaluate_patient_lines(PSN, timeline, ids)
    # Then the answer is still the whole timeline's (and it is not empty: the case matters)
    assert dumped(found) == dumped(whole_then_filtered(engine, timeline, ids))
    assert found or case == "a history reversal names it"
    if case == "a history reversal names it":  # the resent line is refunded: nothing on it
        assert whole_then_filtered(engine, timeline, ids) == []
        assert dumped(Engine(search_kb(KB)).evaluate_patient_lines(PSN, [*past[:2], last], ids)) != []


def test_checks_against_one_kept_history_do_not_see_each_other() -> None:
    # Given a history of clopidogrel, and a first check proposing ticagrelor (same class)
    # that duplicates it, at a region far from the history's
    engine = Engine(KB, (Scene.PRE,))
    past = [_bought("S1", 0), _bought("S2", 28)]
    first = _bought("N1", 40, admdvs="110000").model_copy(
        update={"med_list_codg": "XB01AC24A001", "atc_code": "B01AC24", "diagnoses": ["I21.0"]}
    )
    found = engine.evaluate_patient_lines(PSN, [*past, first], {first.line_id})
    assert "therapeutic-duplication" in {f.rule_id for f in found}
    # When a second check against the same history proposes clopidogrel an hour later
    second = _bought("N2", 40 + 1 / 24)
    found = engine.evaluate_patient_lines(PSN, [*past, second], {second.line_id})
    # Then it is judged against the history alone: the first check's line is not in it
    assert dumped(found) == dumped(whole_then_filtered(engine, [*past, second], {second.line_id}))
    assert not {"therapeutic-duplication", "identity-misuse", "multi-provider"} & {f.rule_id for f in found}


def test_an_engine_keeps_the_latest_histories_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from rxguard.engine import supply

    walked: list[str] = []
    original = supply.SupplyRules.prepare

    def counted(self: Any, psn_no: str, atc: str, fills: Any) -> Any:
        walked.append(fills[0].line_ids[0])
        return original(self, psn_no, atc, fills)

    monkeypatch.setattr(supply.SupplyRules, "prepare", counted)
    # Given an engine keeping 3 histories, and checks against 4 histories in turn
    engine = Engine(search_kb(KB), (Scene.PRE,))
    engine.keep_histories = 3
    histories = [[_bought(f"H{i}", 0)] for i in range(4)]
    proposed = _bought("N1", 40)

    def check(history: list[ClaimLine]) -> None:
        engine.evaluate_patient_lines(PSN, [*history, proposed], {proposed.line_id})

    for history in histories:
        check(history)
    assert len(walked) == 4
    # When the latest is checked again, Then its walk is reused; the oldest was dropped: walked again
    check(histories[3])
    assert len(walked) == 4
    check(histories[0])
    assert walked[-1] == "P3101001/H0" and len(walked) == 5


def test_screening_sets_how_many_histories_every_engine_keeps(monkeypatch: pytest.MonkeyPatch) -> None:
    from rxguard import screening

    monkeypatch.setattr(screening, "_ENGINES", {})
    monkeypatch.setattr(screening, "_KEEP", [])
    before = screening.engine_for(KB, (Scene.PRE,))
    assert before.keep_histories == 32  # the default: a check and its search, a few threads
    screening.keep_histories(500)  # rxguard serve: the state's cached lines are the same objects
    assert before.keep_histories == 500
    assert screening.engine_for(search_kb(KB), (Scene.PRE,)).keep_histories == 500
