"""Hostile claim batches, generated at run time (nothing big is committed).

Each case is (name, content bytes, expectation). An expectation names what the reader
must report: a whole-file error with a reason, or rejections with a reason (and field,
line where they are fixed), or lines accepted with their text kept. The test applies the
generic invariants to every case (no crash, every rejection named, no personal data in
messages, no chunk written on a whole-file error) and the expectation on top.
"""

from __future__ import annotations

import codecs
import gzip
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

# psn_no values that must never be echoed in a rejection message
PSN = "PSNSECRET0001"
PSN2 = "PSNSECRET0002"
DRUG = "XJ05AF10A001"  # entecavir 0.5 mg x 28, a monitored drug of the knowledge base

BASE: dict[str, str] = {
    "feedetl_sn": "F1",
    "fixmedins_code": "H3100001",
    "fixmedins_name": "上海市第一人民医院",
    "admdvs": "310000",
    "psn_no": PSN,
    "med_type": "11",
    "fee_ocur_time": "2026-01-05 09:30:00",
    "med_list_codg": DRUG,
    "med_list_name": "恩替卡韦片",
    "cnt": "1",
    "pric": "18.6",
    "det_item_fee_sumamt": "18.6",
}
FIELDS = list(BASE)
MB = 1024 * 1024


def rec(n: int, **over: str) -> dict[str, str]:
    r = dict(BASE, feedetl_sn=f"F{n}", psn_no=PSN if n % 2 else PSN2)
    r.update(over)
    return r


def csv_row(r: dict[str, str]) -> str:
    out = []
    for k in FIELDS:
        v = r.get(k, "")
        out.append('"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\r\n') else v)
    return ",".join(out)


def csv_text(records: list[dict[str, str]], eol: str = "\n") -> str:
    return eol.join([",".join(FIELDS), *(csv_row(r) for r in records)]) + eol


def jsonl_text(records: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def doc_text(records: list[dict[str, str]]) -> str:
    return json.dumps({"input": {"feedetail": records}}, ensure_ascii=False)


@dataclass(frozen=True)
class Expect:
    file_error: str | None = None  # reason of the whole-file rejection
    reasons: frozenset[str] = frozenset()  # each must appear among the line rejections
    fields: frozenset[str] = frozenset()  # each must be named by some rejection
    at_lines: frozenset[int] = frozenset()  # each must be the line of some rejection
    accepted: int | None = None  # exact number of accepted lines
    kept: dict[str, str] = field(default_factory=dict)  # line_id -> fixmedins_name kept verbatim
    check: Callable[[list[object]], None] | None = None


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    expect: Expect


INJECTIONS = ["=cmd|' /C calc'!A0", "+SUM(1+1)*cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)", "\t=1+1"]


def _injection_records() -> list[dict[str, str]]:
    return [rec(i + 1, fixmedins_name=v, med_list_name=v) for i, v in enumerate(INJECTIONS)]


# ijson's prefix building is quadratic in the nesting depth (30,000 levels: 5.7 s; a 400 KB
# document of 200,000 levels took 23 GB before the OOM killer): the reader refuses > 64 levels.
DOC_DEPTH = 200_000


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _cases() -> Iterator[Case]:
    three = [rec(1), rec(2), rec(3)]
    yield Case("empty.csv", lambda: b"", Expect(file_error="empty"))
    yield Case("blank.csv", lambda: b"\n \r\n\t\n", Expect(file_error="empty"))
    yield Case("random.bin", lambda: random.Random(7).randbytes(8192), Expect(file_error="binary"))
    yield Case("workbook.csv", lambda: b"PK\x03\x04" + random.Random(8).randbytes(512), Expect(file_error="binary"))
    yield Case("report.csv", lambda: b"%PDF-1.7\n" + b"x" * 100, Expect(file_error="binary"))
    yield Case("batch.csv.gz", lambda: gzip.compress(csv_text(three).encode()), Expect(file_error="binary"))
    yield Case(
        "utf32.csv", lambda: codecs.BOM_UTF32_LE + csv_text(three).encode("utf-32-le"), Expect(file_error="binary")
    )
    yield Case(
        "nul_in_header.csv",
        lambda: csv_text(three).replace("psn_no", "psn\x00no").encode(),
        Expect(file_error="binary"),
    )
    # truncated uploads
    yield Case(
        "truncated.csv",
        lambda: csv_text(three).encode()[: -len(csv_row(rec(3))) // 2 - 1],
        Expect(accepted=2, at_lines=frozenset({4})),
    )
    yield Case(
        "truncated.jsonl",
        lambda: jsonl_text(three).encode()[:-20],
        Expect(accepted=2, reasons=frozenset({"malformed"}), at_lines=frozenset({3})),
    )
    yield Case(
        "truncated.json",
        lambda: doc_text(three).encode()[:-60],
        Expect(reasons=frozenset({"malformed"})),
    )
    yield Case("truncated_header.csv", lambda: ",".join(FIELDS).encode()[:30], Expect(file_error="no_header"))
    yield Case("top_level_number.json", lambda: b"[1, 2, 3]", Expect(reasons=frozenset({"malformed"}), accepted=0))
    yield Case("no_claim_list.json", lambda: b'{"input": {"other": 1}}', Expect(file_error="not_json"))
    # huge fields and lines
    big_name = "医" * (70 * 1024)
    yield Case(
        "huge_field.csv",
        lambda: csv_text([rec(1), rec(2, fixmedins_name=big_name), rec(3)]).encode(),
        Expect(accepted=2, reasons=frozenset({"too_long"}), at_lines=frozenset({3})),
    )
    yield Case(
        "huge_field.jsonl",
        lambda: jsonl_text([rec(1), rec(2, fixmedins_name=big_name), rec(3)]).encode(),
        Expect(accepted=2, reasons=frozenset({"too_long"}), at_lines=frozenset({2})),
    )
    yield Case(
        "huge_field.json",
        lambda: doc_text([rec(1), rec(2, fixmedins_name="x" * (2 * MB)), rec(3)]).encode(),
        Expect(accepted=2, reasons=frozenset({"too_long"}), fields=frozenset({"fixmedins_name"})),
    )
    yield Case("single_line_10mb.csv", lambda: b"A," * (5 * MB), Expect(file_error="no_header"))
    yield Case(
        "single_line_10mb.jsonl",
        lambda: (json.dumps(rec(1))[:-1] + ', "fixmedins_name": "' + "y" * (10 * MB) + '"}').encode(),
        Expect(file_error="not_json"),
    )
    yield Case(
        "single_line_10mb_after_header.csv",
        lambda: (csv_text([rec(1)]) + "9" * (10 * MB) + "\n" + csv_row(rec(2)) + "\n").encode(),
        Expect(accepted=2, reasons=frozenset({"too_long"}), at_lines=frozenset({3})),
    )
    yield Case(
        "many_columns.csv",
        lambda: (",".join(FIELDS + [f"c{i}" for i in range(20000)]) + "\n" + csv_row(rec(1)) + "\n").encode(),
        Expect(file_error="no_header"),  # a 140 KB header line is skipped unread
    )
    # CSV injection: the text is data, kept verbatim; our CSV outputs neutralise it
    yield Case(
        "injection.csv",
        lambda: csv_text(_injection_records()).encode(),
        Expect(accepted=len(INJECTIONS), kept={f"H3100001/F{i + 1}": v.strip() for i, v in enumerate(INJECTIONS)}),
    )
    yield Case(
        "injection.jsonl",
        lambda: jsonl_text(_injection_records()).encode(),
        Expect(accepted=len(INJECTIONS), kept={f"H3100001/F{i + 1}": v.strip() for i, v in enumerate(INJECTIONS)}),
    )
    # deep nesting
    yield Case(
        "deep_nesting.jsonl",
        lambda: (jsonl_text([rec(1)]) + '{"psn_no": ' + _deep(30000) + "}\n" + jsonl_text([rec(3)])).encode(),
        Expect(accepted=2, at_lines=frozenset({2})),
    )
    yield Case(
        "deep_nesting_field.json",
        lambda: (
            '{"input": {"feedetail": ['
            + json.dumps(rec(1))
            + ', {"psn_no": '
            + _deep(DOC_DEPTH)
            + "}, "
            + json.dumps(rec(3))
            + "]}}"
        ).encode(),
        Expect(file_error="not_json"),  # refused while looking for the claim list
    )
    yield Case(
        "deep_nesting_late.json",  # the bomb after 2,000 good elements: refused where it starts
        lambda: (
            doc_text([rec(n) for n in range(1, 2001)])[:-3] + ', {"psn_no": ' + _deep(DOC_DEPTH) + "}]}}"
        ).encode(),
        Expect(reasons=frozenset({"malformed"}), check=_some_accepted),
    )
    # -- issue 15, second round ------------------------------------------------------
    # integers of 4,301+ digits crashed the process in ijson's C backend (segfault)
    big = "9" * 5000
    yield Case(
        "huge_integer.json",
        lambda: doc_text([rec(1), rec(2, cnt="@@BIG@@"), rec(3)]).replace('"@@BIG@@"', big).encode(),
        Expect(accepted=2, fields=frozenset({"cnt"}), reasons=frozenset({"malformed"})),
    )
    yield Case(
        "huge_negative_integer_across_blocks.json",  # 200,000 digits: the run spans the 64 KiB blocks
        lambda: doc_text([rec(1), rec(2, pric="@@BIG@@"), rec(3)]).replace('"@@BIG@@"', "-" + "7" * 200_000).encode(),
        Expect(accepted=2, fields=frozenset({"pric"})),
    )
    yield Case(
        "huge_integer_in_a_fraction_and_an_exponent.json",
        lambda: (
            doc_text([rec(1), rec(2, cnt="@@A@@"), rec(3, cnt="@@B@@"), rec(4)])
            .replace('"@@A@@"', "1." + "3" * 5000)
            .replace('"@@B@@"', "1e" + "5" * 5000)
            .encode()
        ),
        Expect(accepted=2, fields=frozenset({"cnt"}), at_lines=frozenset({2, 3})),  # 1.333... x 18.6 mismatches
    )
    yield Case(
        "huge_integer_before_the_list.json",  # seen while looking for the claim list
        lambda: ('{"seq": ' + big + ', "input": {"feedetail": ' + json.dumps([rec(1), rec(2)]) + "}}").encode(),
        Expect(accepted=2),
    )
    yield Case(
        "huge_integer.jsonl",
        lambda: (jsonl_text([rec(1)]) + jsonl_text([rec(2, cnt="@@BIG@@")]).replace('"@@BIG@@"', big)).encode(),
        Expect(accepted=1, at_lines=frozenset({2}), reasons=frozenset({"malformed"})),
    )
    # lone surrogates: a line rejection naming the field, never a failed batch or a rewritten value
    yield Case(
        "lone_surrogate_psn_no.jsonl",
        lambda: "".join(json.dumps(r) + "\n" for r in [rec(1), rec(2, psn_no="P\ud800X"), rec(3)]).encode(),
        Expect(accepted=2, fields=frozenset({"psn_no"}), reasons=frozenset({"encoding"}), at_lines=frozenset({2})),
    )
    yield Case(
        "lone_surrogate_psn_no.json",
        lambda: json.dumps({"input": {"feedetail": [rec(1), rec(2, psn_no="P\udfffX"), rec(3)]}}).encode(),
        Expect(accepted=2, fields=frozenset({"psn_no"}), reasons=frozenset({"encoding"}), at_lines=frozenset({2})),
    )
    yield Case(
        "lone_surrogate_in_a_trace_code_list.json",
        lambda: json.dumps(
            {"input": {"feedetail": [rec(1), {**rec(2), "drug_trac_codg": ["\ud83d" + "1" * 19]}]}}
        ).encode(),
        Expect(accepted=1, fields=frozenset({"drug_trac_codg"})),
    )
    # a document holds exactly one claim list: several are a file error naming them
    yield Case(
        "two_claim_lists.json",
        lambda: json.dumps({"input": {"feedetail": [rec(1)]}, "meta": {"feedetail": [rec(2), rec(3)]}}).encode(),
        Expect(file_error="several_lists", check=_names_both_lists),
    )
    yield Case(
        "repeated_feedetail_key.json",
        lambda: (
            '{"input": {"feedetail": ' + json.dumps([rec(1)]) + ', "feedetail": ' + json.dumps([rec(2)]) + "}}"
        ).encode(),
        Expect(file_error="several_lists"),
    )
    yield Case(
        "empty_list_first.json",
        lambda: json.dumps({"meta": {"feedetail": []}, "input": {"feedetail": [rec(1), rec(2)]}}).encode(),
        Expect(accepted=2),
    )
    yield Case(
        "list_field_named_feedetail_inside_an_element.json",  # a list inside a claim line is not a claim list
        lambda: json.dumps({"input": {"feedetail": [{**rec(1), "feedetail": [1]}, rec(2)]}}).encode(),
        Expect(accepted=2),
    )
    # line ends: CR, LF and CRLF mixed in one file; each is a line end
    yield Case(
        "mixed_cr_lf.csv",
        lambda: (
            ",".join(FIELDS)
            + "\r\n"
            + csv_row(rec(1))
            + "\r"
            + csv_row(rec(2))
            + "\n"
            + csv_row(rec(3))
            + "\r"
            + csv_row(rec(4))
            + "\r\n"
            + csv_row(rec(5, cnt="x"))
            + "\r"
        ).encode(),
        Expect(accepted=4, at_lines=frozenset({6}), fields=frozenset({"cnt"})),
    )
    yield Case(
        "mixed_cr_lf.jsonl",
        lambda: (json.dumps(rec(1)) + "\r" + json.dumps(rec(2)) + "\n" + json.dumps(rec(3)) + "\r\n").encode(),
        Expect(accepted=3),
    )
    # Chinese-heavy UTF-16 without a BOM (few zero bytes)
    yield Case(
        "cjk_utf16le_no_bom.csv",
        lambda: _cjk_csv().encode("utf-16-le"),
        Expect(accepted=3, kept={"H3100001/F1": "上海市第一人民医院附属中西医结合康复医院"}),
    )
    yield Case(
        "cjk_utf16be_no_bom.csv",
        lambda: _cjk_csv().encode("utf-16-be"),
        Expect(accepted=3),
    )
    # a ragged row never lends a psn_no to rejected.jsonl's line_id
    yield Case(
        "ragged_row_shifted_psn.csv",
        lambda: (csv_text([rec(1)]) + PSN + "," + csv_row(rec(2)) + "\n").encode(),
        Expect(accepted=1, reasons=frozenset({"ragged_row"}), check=_no_line_id_on_ragged_rows),
    )
    # implausible values
    yield Case(
        "implausible_values.jsonl",
        lambda: jsonl_text(
            [
                rec(1, pric="1e308", det_item_fee_sumamt="1e308"),
                rec(2, cnt="1e-320", det_item_fee_sumamt="0"),
                rec(3, prd_days="1e300"),
                rec(4),
            ]
        ).encode(),
        Expect(accepted=1, fields=frozenset({"pric", "cnt", "prd_days"}), reasons=frozenset({"malformed"})),
    )
    # identities: full-width and partly full-width spellings are one patient
    yield Case(
        "full_width_psn_no.csv",
        lambda: csv_text([rec(1, psn_no="ＰＳＮ１２３"), rec(3, psn_no="PSN１23"), rec(5, psn_no="PSN123")]).encode(),
        Expect(accepted=3, check=_one_patient),
    )
    yield Case("deep_nesting_document.json", lambda: _deep(DOC_DEPTH).encode(), Expect(file_error="not_json"))
    yield Case("object_in_field.jsonl", lambda: jsonl_text([rec(1, psn_no={"a": 1})]).encode(), Expect(accepted=0))  # type: ignore[dict-item]
    # encodings
    yield Case("gb18030.csv", lambda: csv_text(three).encode("gb18030"), Expect(accepted=3))
    yield Case("utf16le_no_bom.csv", lambda: csv_text(three).encode("utf-16-le"), Expect(accepted=3))
    yield Case("utf16be_bom.csv", lambda: codecs.BOM_UTF16_BE + csv_text(three).encode("utf-16-be"), Expect(accepted=3))
    yield Case(
        "latin1_line_in_utf8.csv",
        lambda: (
            csv_text([rec(1), rec(2)]).encode()
            + csv_row(rec(3, fixmedins_name="Hôpital", med_list_name="x")).encode("latin-1")
            + b"\n"
        ),
        Expect(accepted=2, at_lines=frozenset({4})),
    )
    yield Case(
        "invalid_utf8_in_json.json",
        lambda: (
            doc_text([rec(1), rec(2, fixmedins_name="@@BAD@@"), rec(3)]).encode().replace(b"@@BAD@@", b"\xff\xfe\xfa")
        ),
        Expect(accepted=2, reasons=frozenset({"encoding"})),
    )
    # control characters and stray BOMs
    yield Case(
        "nul_in_field.csv",
        lambda: csv_text([rec(1), rec(2, fixmedins_name="A\x00B"), rec(3)]).encode(),
        Expect(accepted=2, at_lines=frozenset({3})),
    )
    yield Case(
        "nul_after_prefix.csv",
        lambda: (
            csv_text([rec(n) for n in range(1, 12001)]) + csv_row(rec(20000, med_list_name="A\x00B")) + "\n"
        ).encode(),
        Expect(accepted=12000, at_lines=frozenset({12002})),
    )
    yield Case(
        "bom_in_middle.csv",
        lambda: (csv_text([rec(1), rec(2)]) + "\ufeff" + csv_row(rec(3)) + "\n").encode(),
        Expect(check=_no_bom_accepted),
    )
    yield Case(
        "mixed_line_endings.csv",
        lambda: (
            ",".join(FIELDS) + "\r\n" + csv_row(rec(1)) + "\n" + csv_row(rec(2)) + "\r\n" + csv_row(rec(3)) + "\r"
        ).encode(),
        Expect(accepted=3),
    )
    yield Case(
        "old_mac_line_endings.csv",
        lambda: csv_text(three, eol="\r").encode(),
        Expect(check=_no_silent_merge),  # today: a named no_header file error
    )
    yield Case(
        "unterminated_quote.csv",
        lambda: (csv_text([rec(1)]) + csv_row(rec(2)).replace("F2", '"F2') + "\n" + csv_row(rec(3)) + "\n").encode(),
        Expect(accepted=2, reasons=frozenset({"malformed"}), at_lines=frozenset({3})),
    )
    yield Case(
        "zero_width_in_psn_no.csv",
        lambda: csv_text([rec(1, psn_no=PSN[:3] + "\u200b" + PSN[3:])]).encode(),
        Expect(accepted=0, fields=frozenset({"psn_no"})),
    )
    yield Case(
        "bidi_override_in_code.jsonl",
        lambda: jsonl_text([rec(1, fixmedins_code="H31\u202e0001")]).encode(),
        Expect(accepted=0, fields=frozenset({"fixmedins_code"})),
    )
    # numbers that are not numbers
    yield Case(
        "nan_infinity.jsonl",
        lambda: (
            '{"feedetl_sn":"F1","fixmedins_code":"H3100001","psn_no":"P1","med_type":"11",'
            '"fee_ocur_time":"2026-01-05 09:30:00","med_list_codg":"' + DRUG + '","cnt":NaN,"pric":1,'
            '"det_item_fee_sumamt":1}\n'
            '{"feedetl_sn":"F2","fixmedins_code":"H3100001","psn_no":"P1","med_type":"11",'
            '"fee_ocur_time":"2026-01-05 09:30:00","med_list_codg":"' + DRUG + '","cnt":1,"pric":Infinity,'
            '"det_item_fee_sumamt":Infinity}\n'
            '{"feedetl_sn":"F3","fixmedins_code":"H3100001","psn_no":"P1","med_type":"11",'
            '"fee_ocur_time":"2026-01-05 09:30:00","med_list_codg":"' + DRUG + '","cnt":1e400,"pric":1,'
            '"det_item_fee_sumamt":1e400}\n'
            '{"feedetl_sn":"F4","fixmedins_code":"H3100001","psn_no":"P1","med_type":"11",'
            '"fee_ocur_time":"2026-01-05 09:30:00","med_list_codg":"' + DRUG + '","cnt":"1","pric":"-Infinity",'
            '"det_item_fee_sumamt":"nan"}\n'
        ).encode(),
        Expect(accepted=0, at_lines=frozenset({1, 2, 3, 4})),
    )
    yield Case(
        "bool_and_list_numbers.jsonl",
        lambda: jsonl_text([rec(1, cnt=True), rec(2, pric=[1, 2])]).encode(),  # type: ignore[arg-type]
        Expect(accepted=0, fields=frozenset({"cnt", "pric"})),
    )


def _cjk_csv() -> str:
    from rxguard import claimline

    titles = ",".join(claimline.BY_NAME[f].aliases[0] for f in FIELDS)  # Chinese column titles
    name = "上海市第一人民医院附属中西医结合康复医院"
    rows = [
        f"F{n},H3100001,{name},310000,{PSN},11,2026年01月0{n}日 09时30分00秒,{DRUG},恩替卡韦分散片（润众）,1,18.6,18.6"
        for n in (1, 2, 3)
    ]
    return "\n".join([titles, *rows]) + "\n"


def _names_both_lists(items: list[object]) -> None:
    from rxguard.models import Rejection

    errors = [i for i in items if isinstance(i, Rejection) and i.line is None]
    assert "input.feedetail" in errors[0].message and "meta.feedetail" in errors[0].message, errors


def _no_line_id_on_ragged_rows(items: list[object]) -> None:
    from rxguard.models import Rejection

    for item in items:
        if isinstance(item, Rejection) and item.reason == "ragged_row":
            assert item.line_id is None and PSN not in item.model_dump_json()


def _one_patient(items: list[object]) -> None:
    from rxguard.models import ClaimLine

    assert {i.psn_no for i in items if isinstance(i, ClaimLine)} == {"PSN123"}


def _some_accepted(items: list[object]) -> None:
    from rxguard.models import ClaimLine

    assert 0 < sum(isinstance(i, ClaimLine) for i in items) <= 2000


def _no_bom_accepted(items: list[object]) -> None:
    from rxguard.models import ClaimLine

    for item in items:
        if isinstance(item, ClaimLine):
            assert "\ufeff" not in item.model_dump_json(), f"a BOM inside accepted line {item.line_id}"


def _no_silent_merge(items: list[object]) -> None:
    from rxguard.models import ClaimLine, Rejection

    accepted = [i for i in items if isinstance(i, ClaimLine)]
    rejected = [i for i in items if isinstance(i, Rejection)]
    assert len(accepted) in (0, 3), "records were merged or partly lost"
    # three records: each is accepted on its own, or something is rejected with a reason
    assert len(accepted) == 3 or rejected, "records were merged or lost without a rejection"
    for line in accepted:
        assert "\r" not in line.model_dump_json()


CASES: list[Case] = list(_cases())
