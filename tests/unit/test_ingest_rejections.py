"""Ingestion: every rejection reason names file, line and field; whole-file rejections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rxguard.ingest import read_batch
from rxguard.models import ClaimLine, Rejection
from tests.unit.ingest_helpers import HEADER, csv_text, record, write_csv, write_document, write_jsonl

SECRET_PSN = "31000000009999"


def _read(path: Path, kb) -> tuple[list[ClaimLine], list[Rejection], Any]:  # type: ignore[no-untyped-def]
    reader = read_batch(path, kb)
    items = list(reader)
    return [i for i in items if isinstance(i, ClaimLine)], [i for i in items if isinstance(i, Rejection)], reader


# (overrides of the bad record, expected field, expected reason)
LINE_CASES = [
    ({"psn_no": ""}, "psn_no", "missing"),
    ({"feedetl_sn": " "}, "feedetl_sn", "missing"),
    ({"med_list_codg": ""}, "med_list_codg", "missing"),
    ({"det_item_fee_sumamt": ""}, "det_item_fee_sumamt", "missing"),
    ({"med_type": "outpatient"}, "med_type", "malformed"),
    ({"fixmedins_code": "12345"}, "fixmedins_code", "malformed"),
    ({"med_list_codg": "阿莫西林"}, "med_list_codg", "malformed"),
    ({"cnt": "two"}, "cnt", "malformed"),
    ({"pric": "nan"}, "pric", "malformed"),
    ({"trdn_flag": "2"}, "trdn_flag", "malformed"),
    ({"lt_rx_flag": "yes"}, "lt_rx_flag", "malformed"),
    ({"admdvs": "3100"}, "admdvs", "malformed"),
    ({"drug_trac_codg": "8123456789012345678"}, "drug_trac_codg", "malformed"),  # 19 digits
    ({"drug_trac_codg": "81234567890123456789,abc"}, "drug_trac_codg", "malformed"),
    ({"override_reason": "bored"}, "override_reason", "malformed"),
    ({"cnt": "0", "det_item_fee_sumamt": "0"}, "cnt", "not_positive"),
    ({"cnt": "-2", "det_item_fee_sumamt": "-37.2"}, "cnt", "not_positive"),
    ({"pric": "-18.6", "det_item_fee_sumamt": "-37.2"}, "pric", "not_positive"),
    ({"det_item_fee_sumamt": "37.22"}, "det_item_fee_sumamt", "amount_mismatch"),
    ({"det_item_fee_sumamt": "372"}, "det_item_fee_sumamt", "amount_mismatch"),
    ({"fee_ocur_time": "2025-02-30 10:00:00"}, "fee_ocur_time", "bad_time"),
    ({"fee_ocur_time": "yesterday"}, "fee_ocur_time", "bad_time"),
    ({"fee_ocur_time": "2025-09-02"}, "fee_ocur_time", "bad_time"),
    ({"fee_ocur_time": "1899-09-02 10:00:00"}, "fee_ocur_time", "bad_time"),
]


@pytest.mark.parametrize(("overrides", "field", "reason"), LINE_CASES)
def test_bad_line_is_rejected_and_the_rest_goes_on(kb, tmp_path: Path, overrides, field, reason) -> None:
    # Given a CSV with a good line, a bad line (line 3) and another good line
    recs = [record(), record(**{"feedetl_sn": "FD0002", **overrides}), record(feedetl_sn="FD0003")]
    path = write_csv(tmp_path / "batch.csv", recs)
    # When it is read
    lines, rejections, reader = _read(path, kb)
    # Then exactly the bad line is rejected, naming file, line, field and reason
    assert [ln.feedetl_sn for ln in lines] == ["FD0001", "FD0003"]
    assert [(r.file, r.line, r.field, r.reason) for r in rejections] == [("batch.csv", 3, field, reason)]
    assert reader.lines_read == 3 and reader.rejected_by_reason == {reason: 1}


def test_amount_within_rounding_is_accepted(kb, tmp_path: Path) -> None:
    # Given totals within one fen of cnt x pric (rounding), and one just outside
    recs = [
        record(feedetl_sn="A", cnt="3", pric="0.333", det_item_fee_sumamt="1.00"),  # 0.999
        record(feedetl_sn="B", cnt="3", pric="0.333", det_item_fee_sumamt="1.01"),  # 0.011 off
    ]
    lines, rejections, _ = _read(write_csv(tmp_path / "b.csv", recs), kb)
    # Then rounding passes and the rest does not
    assert [ln.feedetl_sn for ln in lines] == ["A"]
    assert [(r.line, r.reason) for r in rejections] == [(3, "amount_mismatch")]


def test_duplicate_line_id_first_wins(kb, tmp_path: Path) -> None:
    # Given the same institution + feedetl_sn three times; the first copy is bad, the second good
    recs = [
        record(det_item_fee_sumamt="1"),  # bad: not a duplicate, a mismatch
        record(psn_no="31000000000102"),
        record(psn_no="31000000000103"),
        record(fixmedins_code="P31000001"),  # another institution: not a duplicate
    ]
    lines, rejections, _ = _read(write_csv(tmp_path / "b.csv", recs), kb)
    # Then the first accepted copy wins and the later one is a duplicate naming the first
    assert [(ln.source_line, ln.line_id) for ln in lines] == [(3, "H31000001/FD0001"), (5, "P31000001/FD0001")]
    dup = rejections[1]
    assert (dup.line, dup.field, dup.reason, dup.line_id) == (4, "feedetl_sn", "duplicate", "H31000001/FD0001")
    assert "line 3" in dup.message


def test_ragged_rows(kb, tmp_path: Path) -> None:
    # Given rows with too few fields, too many fields, and a trailing empty field (tolerated)
    text = csv_text([record()]) + "FD9,H31000001\n" + csv_text([record(feedetl_sn="FD8")]).split("\n")[1] + ",x,y\n"
    text += csv_text([record(feedetl_sn="FD7")]).split("\n")[1] + ",\n"
    path = tmp_path / "b.csv"
    path.write_text(text, encoding="utf-8")
    # When it is read
    lines, rejections, _ = _read(path, kb)
    # Then the short and long rows are ragged, the rest accepted
    assert [(r.line, r.reason) for r in rejections] == [(3, "ragged_row"), (4, "ragged_row")]
    assert [r.line_id for r in rejections] == [None, None]  # shifted columns: no id (it may be a psn_no)
    assert [ln.feedetl_sn for ln in lines] == ["FD0001", "FD7"]


def test_quoting_error_is_malformed(kb, tmp_path: Path) -> None:
    # Given a row with an unclosed quote between good rows
    body = csv_text([record(), record(feedetl_sn="FD3")]).split("\n")
    text = "\n".join([body[0], body[1], 'FD2,"H31000001,oops', body[2]]) + "\n"
    path = tmp_path / "b.csv"
    path.write_text(text, encoding="utf-8")
    # When it is read
    lines, rejections, _ = _read(path, kb)
    # Then that row alone is rejected (it does not swallow the following lines)
    assert [(r.line, r.reason) for r in rejections] == [(3, "malformed")]
    assert [ln.feedetl_sn for ln in lines] == ["FD0001", "FD3"]


def test_undecodable_line_is_rejected_and_the_rest_goes_on(kb, tmp_path: Path) -> None:
    # Given a UTF-8 batch with one line in GBK bytes (a mixed export)
    good = csv_text([record(), record(feedetl_sn="FD2"), record(feedetl_sn="FD3")]).encode("utf-8").split(b"\n")
    bad = csv_text([record(feedetl_sn="FDX", fixmedins_name="石家庄")]).split("\n")[1].encode("gbk")
    path = tmp_path / "b.csv"
    path.write_bytes(b"\n".join([good[0], good[1], bad, good[2], good[3]]) + b"\n")
    # When it is read
    lines, rejections, reader = _read(path, kb)
    # Then that line is an encoding rejection and the file stays UTF-8
    assert reader.encoding == "utf-8"
    assert [(r.line, r.field, r.reason) for r in rejections] == [(3, None, "encoding")]
    assert [ln.feedetl_sn for ln in lines] == ["FD0001", "FD2", "FD3"]


def test_huge_line_is_too_long_and_the_rest_goes_on(kb, tmp_path: Path) -> None:
    # Given a 200 KB line between good lines (CSV) and in JSON Lines
    recs = [record(), record(feedetl_sn="FD2", fixmedins_name="x" * 200_000), record(feedetl_sn="FD3")]
    for path in (write_csv(tmp_path / "b.csv", recs), write_jsonl(tmp_path / "b.jsonl", recs)):
        # When it is read
        lines, rejections, _ = _read(path, kb)
        # Then the long line is too_long, the others are read
        first_line = 3 if path.suffix == ".csv" else 2
        assert [(r.line, r.reason) for r in rejections] == [(first_line, "too_long")]
        assert [ln.feedetl_sn for ln in lines] == ["FD0001", "FD3"]


def test_too_long_field_in_a_json_document(kb, tmp_path: Path) -> None:
    # Given a document element with a 5000-character name
    path = write_document(tmp_path / "d.json", [record(fixmedins_name="名" * 5000)])
    _, rejections, _ = _read(path, kb)
    # Then the field is named
    assert [(r.line, r.field, r.reason) for r in rejections] == [(1, "fixmedins_name", "too_long")]


def test_a_line_with_many_trace_codes_is_accepted(kb, tmp_path: Path) -> None:
    # Given a hospital line of 60 packs, one 20-digit trace code each (1,259 characters),
    # and one whose code list is beyond the field cap
    codes = [f"{81000000000000000000 + i}" for i in range(60)]
    many = record(cnt="60", det_item_fee_sumamt="1116", drug_trac_codg=",".join(codes))
    huge = record(feedetl_sn="FD2", drug_trac_codg=",".join(codes * 14))  # 17,639 characters
    path = write_csv(tmp_path / "b.csv", [many, huge])
    # When it is read
    lines, rejections, _ = _read(path, kb)
    # Then every code of the first is kept, and the second is too_long on that field
    assert [ln.trace_codes for ln in lines] == [codes]
    assert [(r.line, r.field, r.reason) for r in rejections] == [(3, "drug_trac_codg", "too_long")]


def test_json_lines_bad_lines(kb, tmp_path: Path) -> None:
    # Given JSON Lines with an object in a scalar field, a list, broken JSON, and a good line
    path = tmp_path / "b.jsonl"
    rows = [
        json.dumps(record(cnt={"value": 2})),
        json.dumps([1, 2]),
        '{"feedetl_sn": "FD4", ',
        json.dumps(record(feedetl_sn="FD5", lt_rx_flag=[1])),
        json.dumps(record(feedetl_sn="FD6")),
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    # When it is read
    lines, rejections, reader = _read(path, kb)
    # Then each bad line names its field where it has one
    assert reader.format == "jsonl"
    assert [(r.line, r.field, r.reason) for r in rejections] == [
        (1, "cnt", "unknown_field_type"),
        (2, None, "malformed"),
        (3, None, "malformed"),
        (4, "lt_rx_flag", "unknown_field_type"),
    ]
    assert [ln.feedetl_sn for ln in lines] == ["FD6"]


def test_json_document_elements_are_numbered_and_a_cut_document_is_reported(kb, tmp_path: Path) -> None:
    # Given a document whose third element is not an object and which is cut off after the fourth
    recs = [record(), record(feedetl_sn="FD2", cnt={"v": 1}), "oops", record(feedetl_sn="FD4")]
    text = json.dumps({"input": {"feedetail": recs}})
    path = tmp_path / "d.json"
    path.write_text(text[: text.rindex("}") - 3], encoding="utf-8")  # cut inside the last object
    # When it is read
    lines, rejections, reader = _read(path, kb)
    # Then rejections carry the element number (index + 1) and say so
    assert [(r.line, r.field, r.reason) for r in rejections] == [
        (2, "cnt", "unknown_field_type"),
        (3, None, "malformed"),
        (4, None, "malformed"),
    ]
    assert all("element" in r.message for r in rejections)
    assert [ln.feedetl_sn for ln in lines] == ["FD0001"]
    assert reader.lines_read == 4


def test_psn_no_never_in_messages(kb, tmp_path: Path) -> None:
    # Given bad lines that involve the patient number in several ways
    recs = [
        record(psn_no=SECRET_PSN, cnt="x"),
        record(feedetl_sn="FD2", psn_no=SECRET_PSN + "\x01"),
        record(feedetl_sn="FD3", psn_no=SECRET_PSN * 5),
        record(feedetl_sn="FD4", psn_no=SECRET_PSN, det_item_fee_sumamt="1"),
        record(psn_no=SECRET_PSN),
        record(psn_no=SECRET_PSN),
    ]
    _, rejections, _ = _read(write_csv(tmp_path / "b.csv", recs), kb)
    # Then no rejection shows it
    assert len(rejections) == 5
    assert not any(SECRET_PSN in r.model_dump_json() for r in rejections)


# --- whole-file rejections --------------------------------------------------------------------

WHOLE_FILE_CASES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "empty"),
    ("blank", b"\n\n  \r\n\t\n", "empty"),
    ("bom only", b"\xef\xbb\xbf\n", "empty"),
    ("binary", bytes(range(256)) * 40, "binary"),
    ("xlsx", b"PK\x03\x04" + b"\x00" * 100, "binary"),
    ("gzip", b"\x1f\x8b\x08" + bytes(range(200)), "binary"),
    ("prose", "这不是理赔批次文件。\nJust a note.\n".encode(), "no_header"),
    ("headerless csv", csv_text([record(), record()]).split("\n", 1)[1].encode(), "no_header"),
    ("header lacks psn_no", csv_text([record()], header=[h for h in HEADER if h != "psn_no"]).encode(), "no_header"),
    ("broken json", b'{"input": {"feedetail": [', "not_json"),
    ("json without list", b'{"input": {"other": 1}}', "not_json"),
    ("empty feedetail", b'{"input": {"feedetail": []}}', "empty"),
    ("header only", csv_text([]).encode(), "empty"),
    ("header and blank rows", (csv_text([]) + ",,,,\n\n").encode(), "empty"),
    ("not json at all", b"[this is not json", "not_json"),
]


@pytest.mark.parametrize(("label", "data", "reason"), WHOLE_FILE_CASES, ids=[c[0] for c in WHOLE_FILE_CASES])
def test_whole_file_rejections(kb, tmp_path: Path, label: str, data: bytes, reason: str) -> None:
    # Given a file that is not a claim batch
    path = tmp_path / "batch.csv"
    path.write_bytes(data)
    # When it is read
    items = list(reader := read_batch(path, kb))
    # Then there is one rejection with no line, and no lines at all
    assert len(items) == 1 and isinstance(items[0], Rejection)
    assert (items[0].line, items[0].reason, items[0].file) == (None, reason, "batch.csv")
    assert reader.file_error == items[0]
    assert (reader.lines_read, reader.accepted, reader.rejected) == (0, 0, 0)


def test_missing_header_columns_are_named(kb, tmp_path: Path) -> None:
    # Given a header without psn_no and cnt
    header = [h for h in HEADER if h not in ("psn_no", "cnt")]
    path = write_csv(tmp_path / "b.csv", [record()], header=header)
    # When it is read
    (rejection,) = list(read_batch(path, kb))
    # Then the message names them
    assert "psn_no" in rejection.message and "cnt" in rejection.message


def test_missing_file(kb, tmp_path: Path) -> None:
    # Given a path that does not exist
    (rejection,) = list(read_batch(tmp_path / "nope.csv", kb))
    # Then it is a whole-file rejection
    assert (rejection.line, rejection.reason) == (None, "file_missing")


def test_title_rows_before_the_header_are_reported(kb, tmp_path: Path) -> None:
    # Given an export with a title row before the header
    path = tmp_path / "b.csv"
    path.write_text("费用明细导出 2025年9月\n" + csv_text([record()]), encoding="gb18030")
    # When it is read
    lines, rejections, reader = _read(path, kb)
    # Then the header is found, the line is read, and the title row is accounted for
    assert len(lines) == 1 and lines[0].source_line == 3
    assert [(r.line, r.reason) for r in rejections] == [(1, "malformed")]
    assert reader.lines_read == 2


def test_repeated_header_row_is_named(kb, tmp_path: Path) -> None:
    # Given two exports joined together: the second header sits between the lines
    text = csv_text([record()]) + csv_text([record(feedetl_sn="FD2")])
    path = tmp_path / "b.csv"
    path.write_text(text, encoding="utf-8")
    # When it is read
    lines, rejections, _ = _read(path, kb)
    # Then the repeated header is one clear rejection and both lines are read
    assert [(r.line, r.reason) for r in rejections] == [(3, "malformed")] and "header" in rejections[0].message
    assert len(lines) == 2


def test_psn_no_not_quoted_from_a_broken_json_document(kb, tmp_path: Path) -> None:
    # Given a document broken right after a patient number (the parser quotes the input near an error)
    good = json.dumps(record())
    path = tmp_path / "d.json"
    path.write_text('{"input": {"feedetail": [' + good + ', {"psn_no": "' + SECRET_PSN + '" oops', encoding="utf-8")
    # When it is read
    _, rejections, _ = _read(path, kb)
    # Then the rejection says where, but not the number
    assert [(r.line, r.reason) for r in rejections] == [(2, "malformed")]
    assert SECRET_PSN not in rejections[0].model_dump_json()


def test_full_width_codes_are_their_ascii_selves(kb, tmp_path: Path) -> None:
    # Given full-width digits in a trace code and in the region code (they look right on screen)
    recs = [record(drug_trac_codg="８" * 20), record(feedetl_sn="FD2", admdvs="３１００００")]
    lines, rejections, _ = _read(write_csv(tmp_path / "b.csv", recs), kb)
    # Then NFKC makes them the ASCII codes (issue 13: one identity, however it is typed)
    assert rejections == []
    assert lines[0].trace_codes == ["8" * 20] and lines[1].admdvs == "310000"


def test_codes_outside_their_pattern_after_nfkc_are_malformed(kb, tmp_path: Path) -> None:
    # Given a trace code with an Arabic-Indic digit (NFKC keeps it) and a region with a letter
    recs = [record(drug_trac_codg="\u0668" * 20), record(feedetl_sn="FD2", admdvs="３１０００Ａ")]
    _, rejections, _ = _read(write_csv(tmp_path / "b.csv", recs), kb)
    # Then both are malformed, naming the field
    assert [(r.line, r.field, r.reason) for r in rejections] == [
        (2, "drug_trac_codg", "malformed"),
        (3, "admdvs", "malformed"),
    ]
