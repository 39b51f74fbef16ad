"""The claim-line contract: one field table drives ingestion, the API bridge, the generator,
the sample maker, storage short names and the test helpers; identities are canonical."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rxguard import claimline
from rxguard.ingest import read_batch
from rxguard.ingest.normalize import LineRejected, normalize_record
from rxguard.models import ClaimLine, Rejection
from tests.unit.ingest_helpers import HEADER, record, write_csv, write_jsonl


def _read(path: Path, kb) -> tuple[list[ClaimLine], list[Rejection]]:  # type: ignore[no-untyped-def]
    items = list(read_batch(path, kb))
    return [i for i in items if isinstance(i, ClaimLine)], [i for i in items if isinstance(i, Rejection)]


def test_every_claim_line_attribute_has_one_storage_short_name() -> None:
    # Given the ClaimLine model and the contract's storage names
    attributes = set(ClaimLine.model_fields)
    # Then every attribute has exactly one short name, and no two share one
    assert set(claimline.STORAGE_NAMES) == attributes
    shorts = list(claimline.STORAGE_NAMES.values())
    assert len(shorts) == len(set(shorts))


def test_storage_short_names_keep_the_ones_already_stored() -> None:
    # Given the DynamoDB codec's names (stored items must still decode)
    from rxguard import dynamo

    stored = dict(dynamo._SHORT)
    # Then the contract gives every stored attribute the same short name
    assert {k: claimline.STORAGE_NAMES[k] for k in stored} == stored


def test_the_generator_the_sample_maker_and_the_helpers_use_the_contract_columns() -> None:
    import importlib.util

    from rxguard_tools.synth.generator import FIELDS

    spec = importlib.util.spec_from_file_location("make_samples", Path("scripts/make_samples.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_samples"] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["make_samples"]
    assert FIELDS == claimline.COLUMNS
    assert [c for c in claimline.COLUMNS if c != "init_feedetl_sn"] == module.COLUMNS
    assert [c for c in claimline.COLUMNS if c in HEADER] == HEADER


def test_chinese_header_titles_come_from_the_contract(kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Given a CSV whose header is every column's first Chinese title
    titles = [claimline.BY_NAME[c].aliases[0] for c in HEADER]
    path = tmp_path / "zh.csv"
    write_csv(path, [record()])
    text = path.read_text(encoding="utf-8").split("\n", 1)
    path.write_text(",".join(titles) + "\n" + text[1], encoding="utf-8")
    # When it is read
    lines, rejections = _read(path, kb)
    # Then the line is read as with English names
    assert rejections == [] and lines[0].feedetl_sn == "FD0001"


@pytest.mark.parametrize(
    ("field", "written", "canonical"),
    [
        ("psn_no", "３１０００００００００１０１", "31000000000101"),
        ("psn_no", "3100000000０１０１", "31000000000101"),  # partly full-width
        ("psn_no", "\u300031000000000101 ", "31000000000101"),  # ideographic space trimmed
        ("fixmedins_code", "Ｈ３１０００００１", "H31000001"),
        ("med_list_codg", "ＸＪ０５ＡＦ１０Ａ００１", "XJ05AF10A001"),
    ],
)
def test_identity_fields_are_nfkc_normalised_and_trimmed(kb, field: str, written: str, canonical: str) -> None:  # type: ignore[no-untyped-def]
    # When a line spells an identity in full-width characters
    line = normalize_record(record(**{field: written}), kb, file="f", line=2)
    # Then it is the same identity as the ASCII spelling (the same patient, institution, drug)
    assert getattr(line, field) == canonical


def test_trace_codes_in_a_json_list_are_canonical(kb) -> None:  # type: ignore[no-untyped-def]
    line = normalize_record(record(drug_trac_codg=["８" * 20, " " + "1" * 20]), kb, file="f", line=2)
    assert line.trace_codes == ["8" * 20, "1" * 20]


@pytest.mark.parametrize(
    ("field", "value"),
    [("psn_no", "3100 0000"), ("psn_no", "张三"), ("fixmedins_code", "Ｈ-31"), ("med_list_codg", "ＸＪ０５＃")],
)
def test_an_identity_outside_its_pattern_after_nfkc_is_malformed_naming_the_field(kb, field: str, value: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LineRejected) as caught:
        normalize_record(record(**{field: value}), kb, file="f", line=2)
    assert (caught.value.rejection.field, caught.value.rejection.reason) == (field, "malformed")
    if field == "psn_no":
        assert value not in caught.value.rejection.message


@pytest.mark.parametrize("field", ["psn_no", "feedetl_sn", "fixmedins_name", "med_list_name", "sin_dos_dscr"])
def test_a_lone_surrogate_in_any_text_field_is_a_line_rejection_naming_it(kb, tmp_path: Path, field: str) -> None:  # type: ignore[no-untyped-def]
    # Given a JSON Lines batch whose second line holds a lone surrogate escape in one field
    path = tmp_path / "s.jsonl"
    bad = json.dumps(record(**{"feedetl_sn": "FD2", field: "A\ud800B"}))
    path.write_text(json.dumps(record()) + "\n" + bad + "\n", encoding="utf-8")
    # When it is read
    lines, rejections = _read(path, kb)
    # Then the good line is accepted and the bad one rejected, naming the field
    assert [ln.feedetl_sn for ln in lines] == ["FD0001"]
    assert [(r.line, r.field, r.reason) for r in rejections] == [(2, field, "encoding")]
    rejections[0].model_dump_json().encode("utf-8")  # storable


def test_names_are_checked_but_kept_as_written(kb) -> None:  # type: ignore[no-untyped-def]
    line = normalize_record(record(med_list_name="吸入粉雾剂(Ⅱ)"), kb, file="f", line=2)
    assert line.med_list_name == "吸入粉雾剂(Ⅱ)"


def test_a_reversal_with_init_feedetl_sn_is_accepted(kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Given an original line and its reversal (退费: negative cnt and amount, naming the original)
    reversal = record(feedetl_sn="FD0002", cnt="-1", det_item_fee_sumamt="-18.6", init_feedetl_sn="FD0001")
    lines, rejections = _read(write_jsonl(tmp_path / "r.jsonl", [record(), reversal]), kb)
    # Then both are lines; the reversal names the original
    assert rejections == []
    assert lines[1].init_feedetl_sn == "FD0001" and lines[1].cnt == -1 and lines[1].det_item_fee_sumamt == -18.6
    assert lines[0].init_feedetl_sn is None


def test_the_reversal_column_has_its_chinese_title(kb) -> None:  # type: ignore[no-untyped-def]
    rec = record(feedetl_sn="FD0002", cnt="-1", det_item_fee_sumamt="-18.6")
    rec["原费用明细流水号"] = "FD0001"
    assert normalize_record(rec, kb, file="f", line=2).init_feedetl_sn == "FD0001"


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"cnt": "-1", "det_item_fee_sumamt": "-18.6"}, "cnt", "not_positive"),  # no init_feedetl_sn
        ({"cnt": "-1", "det_item_fee_sumamt": "18.6", "init_feedetl_sn": "FD9"}, "det_item_fee_sumamt", "not_positive"),
        ({"cnt": "-1", "det_item_fee_sumamt": "-18.6", "init_feedetl_sn": "FD0001"}, "init_feedetl_sn", "malformed"),
        (
            {"cnt": "-1", "det_item_fee_sumamt": "-20", "init_feedetl_sn": "FD9"},
            "det_item_fee_sumamt",
            "amount_mismatch",
        ),
    ],
)
def test_bad_reversals_are_rejected(kb, overrides: dict[str, str], field: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LineRejected) as caught:
        normalize_record(record(**overrides), kb, file="f", line=2)
    assert (caught.value.rejection.field, caught.value.rejection.reason) == (field, reason)
