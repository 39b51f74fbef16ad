"""Order independence: splitting and permuting lines across batches (and resending some)
through screen_lines on one repository gives the same current findings as one batch."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxguard.engine.factory import days_later, make_line
from rxguard.kb import get_knowledge_base
from rxguard.repository import InMemoryRepository
from rxguard.screening import institution_findings_from_lines, screen_lines

KB = get_knowledge_base()
DRUGS = [
    "XB01AC04A001",  # clopidogrel, chronic
    "XN02AX02A001",  # tramadol, acute
    "XJ05AF10A001",  # entecavir, restricted
    "XL01ED03A001",  # alectinib, high cost
    None,  # a registration fee
]
INSTITUTIONS = ["P3101001", "P3101002", "H3101001", "H3101002", "H3101003"]
CODES = ["81000000000000000001", "81000000000000000002", "81000000000000000003"]

line_spec = st.fixed_dictionaries(
    {
        "psn": st.sampled_from(["A", "B", "C"]),
        "drug": st.sampled_from(DRUGS),
        "day": st.integers(0, 75),
        "hour": st.integers(8, 18),
        "inst": st.sampled_from(INSTITUTIONS),
        "packs": st.integers(1, 3),
        "codes": st.lists(st.sampled_from(CODES), max_size=2),
        "override": st.sampled_from([None, None, None, "lost", "travel", "dose_change"]),
        "lt": st.booleans(),
        "dx": st.sampled_from([[], [], ["B18.1"], ["C34.1"], ["I10"]]),
        "visit": st.integers(0, 2),
    }
)


def build(index: int, spec: dict[str, Any]):  # type: ignore[no-untyped-def]
    kind_med = "41" if spec["inst"].startswith("P") else "11"
    return make_line(
        KB,
        psn_no=spec["psn"],
        fixmedins_code=spec["inst"],
        drug_code=spec["drug"],
        when=days_later("2025-09-01 00:00:00", spec["day"] + spec["hour"] / 24),
        packs=spec["packs"],
        feedetl_sn=f"S{index:04d}",
        mdtrt_id=f"{spec['inst']}-{spec['day']}-{spec['visit']}",
        med_type=kind_med,
        trace_codes=spec["codes"] if spec["drug"] else [],
        override_reason=spec["override"],
        lt_rx_flag=spec["lt"],
        diagnoses=spec["dx"],
        price=None if spec["drug"] else 3000.0,
    )


def current(repo: InMemoryRepository) -> dict[str, dict[str, Any]]:
    return {f.finding_id: f.model_dump(mode="json") for f in repo.all_current_findings()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(line_spec, min_size=1, max_size=40),
    data=st.data(),
)
def test_batches_in_any_split_and_order_give_the_same_findings(specs, data):
    # Given lines of three patients with shared trace codes
    lines = [build(i, spec) for i, spec in enumerate(specs)]
    one = InMemoryRepository()
    screen_lines(lines, one, KB)
    # When the same lines arrive permuted, split into batches, some of them sent twice
    order = data.draw(st.permutations(lines))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(order)), max_size=4)))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    resent = data.draw(st.lists(st.sampled_from(lines), max_size=3))
    many = InMemoryRepository()
    for batch in [*batches, resent]:
        screen_lines(batch, many, KB)
    # Then the current findings are identical, institution outliers included
    assert current(many) == current(one)
    _, inst_one = institution_findings_from_lines(one.lines.values(), one.all_current_findings(), KB)
    _, inst_many = institution_findings_from_lines(many.lines.values(), many.all_current_findings(), KB)
    assert inst_one == inst_many
