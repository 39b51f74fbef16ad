"""Ingestion: formats and encodings (the sample batches in events/), normalization."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from rxguard.ingest import LineRejected, normalize_record, read_batch
from rxguard.models import ClaimLine, InstitutionKind, Rejection
from rxguard_tools.validate_cli import main as validate_main
from tests.unit.ingest_helpers import (
    ENTECAVIR,
    HEADER,
    UNMONITORED,
    csv_text,
    record,
    write_csv,
    write_document,
    write_jsonl,
)

BATCHES = Path(__file__).resolve().parents[2] / "events" / "batches"
SAMPLES = {
    "01_shanghai_his_utf8.csv": ("csv", "utf-8"),
    "02_hebei_his_gb18030.csv": ("csv", "gb18030"),
    "03_yulin_bom.csv": ("csv", "utf-8-sig"),
    "04_pharmacy_pos.jsonl": ("jsonl", "utf-8"),
    "05_platform_feedetail.json": ("json", "utf-8"),
}
# The bad lines documented in events/batches/README.md, by file: (feedetl_sn or None, reason, field).
SAMPLE_BAD_LINES = {
    "01_shanghai_his_utf8.csv": {
        ("missing", "psn_no"),
        ("malformed", "drug_trac_codg"),
        ("duplicate", "feedetl_sn"),
        ("encoding", None),
    },
    "02_hebei_his_gb18030.csv": {("not_positive", "cnt"), ("ragged_row", None)},
    "03_yulin_bom.csv": {("amount_mismatch", "det_item_fee_sumamt")},
    "04_pharmacy_pos.jsonl": {("bad_time", "fee_ocur_time"), ("too_long", None)},
    "05_platform_feedetail.json": {("unknown_field_type", "cnt")},
}


def _run(path: Path, kb, **kwargs) -> tuple[list[ClaimLine], list[Rejection], object]:  # type: ignore[no-untyped-def]
    reader = read_batch(path, kb, **kwargs)
    items = list(reader)
    return [i for i in items if isinstance(i, ClaimLine)], [i for i in items if isinstance(i, Rejection)], reader


def _physical_data_lines(path: Path, fmt: str) -> int:
    """Independent count of claim lines: non-blank physical lines (minus the CSV header),
    or elements of the JSON document."""
    if fmt == "json":
        return len(json.loads(path.read_text(encoding="utf-8"))["input"]["feedetail"])
    lines = [ln for ln in path.read_bytes().split(b"\n") if ln.strip()]
    return len(lines) - (1 if fmt == "csv" else 0)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_sample_batch_is_detected_and_every_line_accounted_for(kb, name: str) -> None:
    # Given a sample batch of events/batches
    path = BATCHES / name
    fmt, encoding = SAMPLES[name]
    # When it is read
    lines, rejections, reader = _run(path, kb)
    # Then format and encoding are detected from the content, every line ends as a claim
    # line or a rejection, and the rejections are exactly the documented bad lines
    assert (reader.format, reader.encoding) == (fmt, encoding)
    assert reader.file_error is None
    assert len(lines) + len(rejections) == reader.lines_read == _physical_data_lines(path, fmt)
    assert {(r.reason, r.field) for r in rejections} == SAMPLE_BAD_LINES[name]
    assert len(rejections) == len(SAMPLE_BAD_LINES[name])
    assert all(r.file == name and r.line is not None and r.line >= 1 for r in rejections)


def test_gb18030_sample_decodes_chinese_names(kb) -> None:
    # Given the Hebei batch exported in GB18030 (nobody tells us the encoding)
    lines, _, _ = _run(BATCHES / "02_hebei_his_gb18030.csv", kb)
    # When its lines are read
    names = {ln.fixmedins_name for ln in lines}
    # Then the Chinese institution names come out right
    assert "石家庄仁济医院" in names and "邯郸惠民药房" in names


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "gbk", "gb2312", "utf-16"])
def test_csv_encodings_give_the_same_lines(kb, tmp_path: Path, encoding: str) -> None:
    # Given the same two lines with Chinese text in several encodings
    recs = [record(), record(feedetl_sn="FD0002", fixmedins_name="石家庄百姓大药房", fixmedins_code="P13000001")]
    reference = write_csv(tmp_path / "ref.csv", recs)
    path = write_csv(tmp_path / f"batch-{encoding}.csv", recs, encoding=encoding)
    # When each is read
    expected, _, _ = _run(reference, kb, name="x")
    lines, rejections, _ = _run(path, kb, name="x")
    # Then every encoding gives the same normalized lines
    assert rejections == []
    assert [ln.model_dump() for ln in lines] == [ln.model_dump() for ln in expected]
    assert lines[1].fixmedins_name == "石家庄百姓大药房"


def test_stray_nul_bytes_in_a_gb18030_file_do_not_make_it_utf16(kb, tmp_path: Path) -> None:
    # Given a header and two lines of stray bytes (NULs, a character GB18030 writes in four
    # bytes that are not UTF-8): a short file where UTF-16 looked as plausible as text
    rows = ["\x00\x00\x00\x00\x01\x80", "", "", "\x00"]
    path = tmp_path / "nul.csv"
    path.write_bytes(("\n".join([",".join(HEADER), *rows]) + "\n").encode("gb18030"))
    # When it is read
    lines, rejections, reader = _run(path, kb, name="x")
    # Then it is GB18030 text with two bad lines, each rejected alone, not a file without a header
    assert reader.file_error is None and reader.encoding == "gb18030"  # type: ignore[attr-defined]
    assert lines == [] and [r.line for r in rejections] == [2, 5]
    # and a UTF-16 file without a BOM is still told by its zero bytes
    recs = [record(), record(feedetl_sn="FD0002", fixmedins_name="石家庄百姓大药房", fixmedins_code="P13000001")]
    assert len(_run(write_csv(tmp_path / "u16.csv", recs, encoding="utf-16-le"), kb, name="x")[0]) == 2


@pytest.mark.parametrize("sep", [",", "\t", "|", ";"])
def test_csv_delimiters(kb, tmp_path: Path, sep: str) -> None:
    # Given a batch separated by tabs, pipes or semicolons (diagnoses then use ',')
    path = write_csv(tmp_path / "b.csv", [record(dise_codg="I10,E11.9")], sep=sep)
    # When it is read
    lines, rejections, _ = _run(path, kb)
    # Then the columns are found
    assert rejections == [] and lines[0].diagnoses == ["I10", "E11.9"]


def test_chinese_column_titles_and_unknown_columns(kb, tmp_path: Path) -> None:
    # Given a CSV with Chinese column titles, upper-case names and an extra column
    header = ["费用明细流水号", "定点医药机构编号", "人员编号", "MED_TYPE", "费用发生时间"]
    header += ["医保药品编码", "数量", "单价", "明细项目费用总额", "备注"]
    path = tmp_path / "zh.csv"
    path.write_text(
        ",".join(header) + "\nFD1,P31000001,31000000000101,41,2025-09-02 09:10:00,XJ05AF10A001,1,18.6,18.6,无\n",
        encoding="gb18030",
    )
    # When it is read
    lines, rejections, _ = _run(path, kb)
    # Then the titles map to the fields and the remark is ignored
    assert rejections == []
    assert (lines[0].feedetl_sn, lines[0].fixmedins_code, lines[0].institution_kind) == (
        "FD1",
        "P31000001",
        InstitutionKind.PHARMACY,
    )


def test_json_lines_and_document_and_list_read_the_same(kb, tmp_path: Path) -> None:
    # Given the same records as JSON Lines, a platform document, a one-line document and a top-level list
    recs = [record(), record(feedetl_sn="FD0002", cnt=1, pric=18.6, det_item_fee_sumamt=18.6)]
    paths = [
        write_jsonl(tmp_path / "a.jsonl", recs),
        write_document(tmp_path / "b.json", recs),
        write_document(tmp_path / "c.json", recs, indent=None),
    ]
    (tmp_path / "d.json").write_text(json.dumps(recs), encoding="utf-8")
    paths.append(tmp_path / "d.json")
    # When each is read
    results = [_run(p, kb, name="x") for p in paths]
    # Then the formats are told apart by content and give the same lines
    assert [r[2].format for r in results] == ["jsonl", "json", "json", "json"]
    dumps = [[ln.model_dump() for ln in r[0]] for r in results]
    assert all(d == dumps[0] for d in dumps) and len(dumps[0]) == 2


def test_json_document_in_gb18030(kb, tmp_path: Path) -> None:
    # Given a platform document encoded in GB18030
    path = tmp_path / "doc.json"
    doc = {"input": {"feedetail": [record(fixmedins_name="石家庄仁济医院")]}}
    path.write_bytes(json.dumps(doc, ensure_ascii=False).encode("gb18030"))
    # When it is read
    lines, rejections, reader = _run(path, kb)
    # Then it is transcoded on the fly
    assert reader.encoding == "gb18030" and rejections == []
    assert lines[0].fixmedins_name == "石家庄仁济医院"


# --- normalization -----------------------------------------------------------------------


def _norm(kb, **overrides) -> ClaimLine:  # type: ignore[no-untyped-def]
    return normalize_record(record(**overrides), kb, file="f.csv", line=7)


def test_quantity_and_days_of_supply_of_a_monitored_drug(kb) -> None:
    # Given entecavir: 28 tablets of 0.5 mg a pack, at most 1 mg a day
    # When 2 packs are sold, and when 10 single tablets are sold (拆零)
    packs = _norm(kb, cnt="2", pric="18.6", det_item_fee_sumamt="37.2")
    tablets = _norm(kb, cnt="10", trdn_flag="1", pric="0.66", det_item_fee_sumamt="6.6")
    # Then 56 tablets last 28 days at the maximum dose; 10 tablets last 5 days
    assert (packs.quantity_units, packs.days_supply, packs.monitored, packs.atc_code) == (56, 28, True, "J05AF10")
    assert (tablets.quantity_units, tablets.days_supply, tablets.trdn_flag) == (10, 5, True)


def test_unmonitored_drug_is_kept_without_days(kb) -> None:
    # Given a drug that is not on the monitored list
    line = _norm(kb, med_list_codg=UNMONITORED, cnt="3", pric="12.5", det_item_fee_sumamt="37.5")
    # Then the line is kept (it counts for visits and spending) with the count as billed
    assert (line.monitored, line.quantity_units, line.days_supply, line.atc_code) == (False, 3, None, None)


def test_phase_decides_what_is_monitored(tmp_path: Path) -> None:
    # Given the pilot list, which does not hold amlodipine (a provincial-phase drug)
    from rxguard.kb import get_knowledge_base

    pilot = get_knowledge_base(phase="pilot")
    # When an amlodipine line is normalized
    line = normalize_record(
        record(med_list_codg="XC08CA01A001", cnt="1", pric="32", det_item_fee_sumamt="32"), pilot, file="f", line=2
    )
    # Then it is kept as unmonitored
    assert line.monitored is False and line.days_supply is None


def test_lists_flags_defaults_and_kind(kb) -> None:
    # Given a line with two trace codes (one repeated), diagnoses in mixed case, flags and no visit id
    code = "81234567890123456789"
    line = _norm(
        kb,
        drug_trac_codg=f"{code},{code}, 89999999999999999999",
        dise_codg=" b18.1; i10 ,e11.9",
        dscg_tkdrug_flag="1",
        lt_rx_flag="0",
        admdvs="",
        override_reason="出差",
        fixmedins_code="P61080001",
    )
    # Then lists are split and cleaned (repeats kept for the engine), defaults are filled in
    assert line.trace_codes == [code, code, "89999999999999999999"]
    assert line.diagnoses == ["B18.1", "I10", "E11.9"]
    assert (line.dscg_tkdrug_flag, line.lt_rx_flag, line.trdn_flag) == (True, False, False)
    assert line.mdtrt_id == "P61080001:2025-09-02"
    assert line.admdvs is None
    assert line.override_reason == "travel"
    assert line.institution_kind is InstitutionKind.PHARMACY
    assert line.line_id == "P61080001/FD0001" and (line.source_file, line.source_line) == ("f.csv", 7)


def test_default_admdvs_applies_only_when_missing(kb) -> None:
    # Given a batch default region
    # When one line has no region and one has its own
    own = normalize_record(record(admdvs="130000"), kb, file="f", line=2, default_admdvs="610800")
    default = normalize_record(record(admdvs=""), kb, file="f", line=3, default_admdvs="610800")
    # Then the line's own region wins
    assert (own.admdvs, default.admdvs) == ("130000", "610800")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-09-02 09:10:00", datetime(2025, 9, 2, 9, 10)),
        ("2025-09-02T09:10:00", datetime(2025, 9, 2, 9, 10)),
        ("2025/9/2 9:10", datetime(2025, 9, 2, 9, 10)),
        ("2025/09/02 09:10:05", datetime(2025, 9, 2, 9, 10, 5)),
        ("20250902091000", datetime(2025, 9, 2, 9, 10)),
        ("2025-09-02T01:10:00Z", datetime(2025, 9, 2, 9, 10)),  # UTC -> China time
        ("2025-09-02T09:10:00+08:00", datetime(2025, 9, 2, 9, 10)),
    ],
)
def test_time_forms(kb, text: str, expected: datetime) -> None:
    # Given a time in one of the accepted forms
    line = _norm(kb, fee_ocur_time=text)
    # Then it is read as a naive China-time datetime
    assert line.fee_ocur_time == expected and line.fee_ocur_time.tzinfo is None


def test_json_types_are_accepted(kb) -> None:
    # Given a JSON record with numbers, booleans for flags and lists for codes
    rec = record(cnt=2, pric=18.6, det_item_fee_sumamt=37.2, med_type=11, feedetl_sn=123, lt_rx_flag=True)
    rec["drug_trac_codg"] = ["81234567890123456789"]
    rec["dise_codg"] = ["b18.1"]
    # When it is normalized
    line = normalize_record(rec, kb, file="f.jsonl", line=1)
    # Then numbers become codes where codes are expected
    assert (line.feedetl_sn, line.med_type, line.lt_rx_flag) == ("123", "11", True)
    assert line.trace_codes == ["81234567890123456789"] and line.diagnoses == ["B18.1"]


def test_chunk_round_trip_keeps_every_field(kb) -> None:
    # Given a normalized line
    from rxguard.ingest import read_chunk, write_chunk

    line = _norm(kb, drug_trac_codg="81234567890123456789", override_reason="lost")
    # When it is written to a chunk and read back
    again = read_chunk(write_chunk([line, line]))
    # Then it is the same line, validated by the model
    assert again == [line, line]


def test_line_id_is_kept_once_and_follows_a_copy_with_other_codes(kb) -> None:
    # Given a normalized line whose id has been read (and kept)
    line = _norm(kb)
    assert line.line_id == f"{line.fixmedins_code}/{line.feedetl_sn}"
    # When it is copied with another serial number, another institution, or another time
    moved = line.model_copy(update={"feedetl_sn": "OTHER1"})
    elsewhere = line.model_copy(update={"fixmedins_code": "H99999999999"})
    later = line.model_copy(update={"fee_ocur_time": datetime(2026, 3, 1, 9, 0)})
    # Then each copy's id is its own codes', and the kept id is not a field
    assert moved.line_id == f"{line.fixmedins_code}/OTHER1"
    assert elsewhere.line_id == f"H99999999999/{line.feedetl_sn}"
    assert later.line_id == line.line_id
    assert "line_id" not in line.model_dump() and "line_id" not in json.loads(line.model_dump_json())
    # and a line equals the same line read again, whether or not its id was read
    from rxguard.ingest import read_chunk, write_chunk

    assert read_chunk(write_chunk([line])) == [line]


def test_normalize_record_raises_line_rejected(kb) -> None:
    # Given a record without a time (the API reuses normalize_record for request lines)
    with pytest.raises(LineRejected) as info:
        normalize_record(record(fee_ocur_time=""), kb, file="request", line=3)
    # Then the rejection names file, line, field and reason
    r = info.value.rejection
    assert (r.file, r.line, r.field, r.reason, r.line_id) == (
        "request",
        3,
        "fee_ocur_time",
        "missing",
        "H31000001/FD0001",
    )


# --- the validate command ------------------------------------------------------------------


def test_validate_command_summarises_and_exits_zero_on_bad_lines(capsys) -> None:
    # Given the sample batches (with bad lines, but no bad file)
    files = [str(BATCHES / n) for n in sorted(SAMPLES)]
    # When they are validated
    code = validate_main(files)
    out = capsys.readouterr().out
    # Then each file is summarised with its rejections as file:line field reason
    assert code == 0
    assert "encoding gb18030" in out and "format jsonl" in out
    assert f"{BATCHES / '03_yulin_bom.csv'}:" in out and "det_item_fee_sumamt amount_mismatch" in out


def test_validate_command_exits_one_on_a_file_rejected_whole(tmp_path: Path, capsys) -> None:
    # Given a good batch and an empty file
    good = write_csv(tmp_path / "good.csv", [record()])
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    # When both are validated
    code = validate_main([str(good), str(empty), "--json"])
    summaries = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    # Then the exit code says a file was rejected whole, and the good one was still read
    assert code == 1
    assert summaries[0]["accepted"] == 1 and summaries[1]["file_error"]["reason"] == "empty"


def test_entecavir_code_constant_matches_the_catalogue(kb) -> None:
    # Given the test helpers' drug codes
    # Then the monitored one is in the catalogue and the other is not (guards the fixtures)
    assert kb.drug(ENTECAVIR) is not None and kb.drug(UNMONITORED) is None


def test_every_scenario_line_of_the_samples_readme_is_accepted(kb) -> None:
    # Given the line ids the sample README lists per scenario
    import re

    readme = (BATCHES / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`([HP]\d{8}/FD\d{13})`", readme))
    # When every sample batch is read
    accepted = {ln.line_id for name in SAMPLES for ln in _run(BATCHES / name, kb)[0]}
    # Then each listed line is there, accepted
    assert len(listed) > 50 and listed <= accepted


def test_exports_as_spreadsheets_write_them(kb, tmp_path: Path) -> None:
    # Given Excel's "Unicode text" (UTF-16, tabs), a `sep=;` first line, and old-Mac CR line ends
    recs = [record(), record(feedetl_sn="FD2", fixmedins_name="石家庄仁济医院")]
    unicode_text = write_csv(tmp_path / "a.txt", recs, encoding="utf-16", sep="\t")
    sep_line = tmp_path / "b.csv"
    sep_line.write_text("sep=;\n" + csv_text(recs, sep=";"), encoding="utf-8")
    old_mac = tmp_path / "c.csv"
    old_mac.write_bytes(csv_text(recs).replace("\n", "\r").encode("gb18030"))
    for path in (unicode_text, sep_line, old_mac):
        # When each is read
        lines, rejections, reader = _run(path, kb)
        # Then both lines come out, with the Chinese name intact and nothing else counted
        assert rejections == [] and reader.lines_read == 2, path.name
        assert lines[1].fixmedins_name == "石家庄仁济医院"
    assert _run(sep_line, kb)[0][0].source_line == 3  # physical lines still count the directive


def test_spreadsheet_number_and_time_forms(kb) -> None:
    # Given amounts with a currency sign and thousands separator, and a Chinese date-time
    line = _norm(kb, cnt="1,000", trdn_flag="1", pric="¥0.66", det_item_fee_sumamt="￥660.00",
                 fee_ocur_time="2025年9月2日 9:10:00")  # fmt: skip
    # Then they are read as numbers and a time
    assert (line.cnt, line.pric, line.det_item_fee_sumamt) == (1000, 0.66, 660)
    assert line.fee_ocur_time == datetime(2025, 9, 2, 9, 10)


def test_document_with_the_list_deeper_down(kb, tmp_path: Path) -> None:
    # Given a platform message with the fee details under data.input.feedetail
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"code": 0, "data": {"input": {"feedetail": [record()]}}}), encoding="utf-8")
    # When it is read
    lines, rejections, _ = _run(path, kb)
    # Then the list is found
    assert rejections == [] and [ln.feedetl_sn for ln in lines] == ["FD0001"]


def test_json_keys_in_other_case_or_chinese(kb) -> None:
    # Given a JSON record with upper-case and Chinese keys
    rec = {k.upper(): v for k, v in record().items()}
    rec["人员编号"] = rec.pop("PSN_NO")
    # When it is normalized
    line = normalize_record(rec, kb, file="f.jsonl", line=1)
    # Then the keys are recognised
    assert line.psn_no == "31000000000101" and line.feedetl_sn == "FD0001"


def test_codes_are_upper_cased(kb) -> None:
    # Given codes typed in lower case
    line = _norm(kb, fixmedins_code="p31000001", med_list_codg="xj05af10a001")
    # Then they are the catalogue's codes (the drug is recognised as monitored) and the line id is canonical
    assert (line.fixmedins_code, line.med_list_codg, line.monitored) == ("P31000001", "XJ05AF10A001", True)
    assert line.line_id == "P31000001/FD0001" and line.institution_kind is InstitutionKind.PHARMACY


def test_bad_default_region_is_refused_up_front(kb, tmp_path: Path, capsys) -> None:
    # Given a default region that is not a 6-digit code
    path = write_csv(tmp_path / "b.csv", [record(admdvs="")])
    # When the batch is read or validated with it, Then it is refused before any line is judged
    with pytest.raises(ValueError, match="default_admdvs"):
        read_batch(path, kb, default_admdvs="31")
    assert validate_main([str(path), "--default-admdvs", "31"]) == 2
    assert "6-digit" in capsys.readouterr().err
