"""The synthetic population: reproducible, in the input contract, labelled, and shaped
as its profiles and scenarios promise (checked against the rule parameters, not the engine)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from rxguard.ingest import normalize_record
from rxguard_tools.synth import SCENARIOS, SynthConfig, generate, write_population
from rxguard_tools.synth.cli import main as synth_main

SMALL = SynthConfig(patients=400, seed=11, months=4, start=date(2026, 1, 1))


@pytest.fixture(scope="module")
def population(kb):  # type: ignore[no-untyped-def]
    return generate(SMALL, kb)


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    # Given two runs with one seed and one run with another
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        code = synth_main(["--patients", "150", "--seed", str(seed), "--months", "2", "--out", str(tmp_path / name)])
        assert code == 0
    # When the files are compared
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    # Then the same seed reproduces every byte and another seed changes the claims
    assert a == b
    assert set(a) == {"claims-2026-01.csv", "claims-2026-02.csv", "labels.json"}
    assert a["claims-2026-01.csv"] != c["claims-2026-01.csv"]


def test_every_record_is_accepted_by_ingestion_and_amounts_add_up(population, kb) -> None:  # type: ignore[no-untyped-def]
    # Given the generated records
    records = population.records
    # When each is normalized as the workflow's ingestion does
    lines = [normalize_record(r, kb, file="synth", line=i + 1) for i, r in enumerate(records)]
    # Then none is rejected, line ids are unique, and monitored lines carry days of supply
    assert len({ln.line_id for ln in lines}) == len(lines)
    assert all(abs(ln.det_item_fee_sumamt - ln.cnt * ln.pric) <= 0.01 for ln in lines)
    monitored = [ln for ln in lines if ln.monitored]
    assert monitored and all(ln.days_supply is not None for ln in monitored)
    assert {ln.med_type for ln in lines} >= {"11", "14", "21", "41"}
    assert max(len(ln.trace_codes) for ln in lines) <= 30  # large quantities are split over lines
    # unmonitored drugs and services are there too
    assert len(monitored) < len(lines)


def test_trace_codes_are_20_digits_unique_except_the_labelled_resales(population) -> None:  # type: ignore[no-untyped-def]
    # Given the trace codes on every line
    sales: dict[str, list[str]] = defaultdict(list)
    for r in population.records:
        for code in filter(None, r["drug_trac_codg"].split(",")):
            sales[code].append(f"{r['fixmedins_code']}/{r['feedetl_sn']}")
    reused = population.labels["trace_codes"]["reused"]
    # Then every code is 20 digits, and exactly the labelled codes are on several lines, on the
    # labelled lines: resold packs, refunded packs sold again, split packs
    legit = population.labels["trace_codes"]
    assert all(len(c) == 20 and c.isdigit() for c in sales)
    twice = {c: sorted(v) for c, v in sales.items() if len(v) > 1}
    expected = {c: sorted(v) for group in (reused, legit["returned"], legit["split"]) for c, v in group.items()}
    assert twice == expected
    assert reused and legit["returned"] and legit["split"]
    per_line = population.labels["counts"]["trace_codes_per_monitored_line"]
    assert 1.2 <= per_line <= 1.9


def test_labels_cover_every_scenario_and_the_pill_mill(population) -> None:  # type: ignore[no-untyped-def]
    # Given the labels
    labels = population.labels
    profiles = Counter(p["profile"] for p in labels["patients"].values() if not p["legitimate"])
    # Then every abusive scenario is present with its rule set, and one institution and one prescriber are outliers
    assert set(profiles) == set(SCENARIOS)
    assert all(n >= SMALL.min_per_scenario for n in profiles.values())
    for p in labels["patients"].values():
        assert p["rules"] == ([] if p["legitimate"] else sorted(SCENARIOS[p["profile"]]))
    outliers = [c for c, i in labels["institutions"].items() if i["outlier"]]
    bad = [c for c, i in labels["prescribers"].items() if i["outlier"]]
    assert len(outliers) == 2 and len(bad) == 1  # the pill mill and the small shop of the override abusers
    assert labels["prescribers"][bad[0]]["institution"] in outliers
    assert labels["counts"]["patients"] == SMALL.patients


def _by_patient(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        out[r["psn_no"]].append(r)
    return out


def _visits(rows: list[dict[str, Any]]) -> Counter[str]:
    """Outpatient visits at hospitals per month."""
    seen = {(r["fee_ocur_time"][:7], r["mdtrt_id"]) for r in rows if r["med_type"] in ("11", "14")}
    return Counter(month for month, _ in seen)


def _spend(rows: list[dict[str, Any]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for r in rows:
        if r["fixmedins_code"].startswith("P"):
            out[r["fee_ocur_time"][:7]] += r["det_item_fee_sumamt"]
    return out


def _hopping_days(rows: list[dict[str, Any]]) -> int:
    per_day: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r["fixmedins_code"].startswith("H"):
            per_day[r["fee_ocur_time"][:10]].add(r["fixmedins_code"])
    return max(Counter(d[:7] for d, h in per_day.items() if len(h) >= 3).values(), default=0)


def test_legitimate_patients_stay_inside_the_monthly_thresholds(population, kb) -> None:  # type: ignore[no-untyped-def]
    # Given the rule parameters and the legitimate patients' lines
    visits_min = kb.rule("frequent-visits").params_for(None)["min_visits"]
    spend_max = kb.rule("pharmacy-spend").params_for(None)["max_monthly_yuan"]
    rows = _by_patient(population.records)
    legit = [p for p, i in population.labels["patients"].items() if i["legitimate"]]
    # Then no legitimate patient reaches the visit, spending or hospital-hopping thresholds
    assert max(max(_visits(rows[p]).values(), default=0) for p in legit) < visits_min
    assert max(max(_spend(rows[p]).values(), default=0) for p in legit) <= spend_max
    assert max(_hopping_days(rows[p]) for p in legit) < 3
    # and near-threshold profiles exist (dialysis: 12+ visits; high spenders: > 4000 yuan)
    dialysis = [p for p in legit if population.labels["patients"][p]["profile"] == "dialysis"]
    assert dialysis and max(max(_visits(rows[p]).values()) for p in dialysis) >= 12


def test_legitimate_fills_stay_within_the_days_a_prescription_may_cover(population, kb) -> None:  # type: ignore[no-untyped-def]
    # Given the over-quantity limits of the rule base
    p = kb.rule("over-quantity").params_for(None)
    legit = {psn for psn, i in population.labels["patients"].items() if i["legitimate"]}
    # When every monitored legitimate line without an override reason is measured at the label maximum dose
    worst = 0.0
    for r in population.records:
        drug = kb.drug(r["med_list_codg"])
        if drug is None or r["psn_no"] not in legit or r["override_reason"]:
            continue
        units = r["cnt"] if r["trdn_flag"] else r["cnt"] * drug.units_per_pack  # 拆零: cnt is in minimum units
        days = drug.days_supply(units)
        if r["lt_rx_flag"] and drug.long_term_rx_eligible:
            allowed = p["long_term_max_days"]
        elif drug.chronic or r["dscg_tkdrug_flag"]:
            allowed = p["chronic_max_days"] if drug.chronic else p["discharge_max_days"]
        else:
            allowed = p["acute_max_days"]
        allowed = max(allowed, drug.days_supply(drug.units_per_pack))  # one whole pack
        worst = max(worst, days / allowed)
    # Then none exceeds its limit, and some come close (near-threshold cases test precision)
    assert 0.8 <= worst <= 1.0


def test_abusive_patients_cross_the_thresholds_of_their_rules(population, kb) -> None:  # type: ignore[no-untyped-def]
    # Given the abusive patients of the visit, hopping and spending scenarios
    rows = _by_patient(population.records)
    labels = population.labels["patients"]
    spend_max = kb.rule("pharmacy-spend").params_for(None)["max_monthly_yuan"]
    # Then each crosses its threshold clearly
    for psn, info in labels.items():
        if info["profile"] == "frequent-visits":
            assert max(_visits(rows[psn]).values()) >= 16
        elif info["profile"] == "hospital-hopping":
            assert _hopping_days(rows[psn]) >= 4
            assert max(_visits(rows[psn]).values()) < 15  # and not frequent visits as well
        elif info["profile"] == "pharmacy-spend":
            assert max(_spend(rows[psn]).values()) > spend_max * 1.15


def test_indication_mismatch_patients_never_have_a_matching_diagnosis(population, kb) -> None:  # type: ignore[no-untyped-def]
    # Given the indication-mismatch patients
    rows = _by_patient(population.records)
    targets = [p for p, i in population.labels["patients"].items() if i["profile"] == "indication-mismatch"]
    assert targets
    for psn in targets:
        restricted = {
            r["med_list_codg"] for r in rows[psn] if (d := kb.drug(r["med_list_codg"])) and d.restricted_indications
        }
        dx = {c for r in rows[psn] for c in r["dise_codg"].split(";") if c}
        # Then at least one restricted drug has no diagnosis of its payment scope anywhere in the timeline
        assert any(not kb.drug(code).indication_allowed(dx) for code in restricted)


def test_jsonl_output_and_labels_file(tmp_path: Path, population) -> None:  # type: ignore[no-untyped-def]
    # When the population is written as one JSON Lines file
    files = write_population(population, tmp_path, fmt="jsonl", split="none")
    # Then it holds every record and labels.json names it
    rows = [json.loads(x) for x in files[0].read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(population.records)
    labels = json.loads((tmp_path / "labels.json").read_text(encoding="utf-8"))
    assert labels["files"] == ["claims.jsonl"]
