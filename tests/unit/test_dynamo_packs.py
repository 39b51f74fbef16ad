"""The pack encodings of rxguard.dynamo (docs/storage-aws.md): preset dictionaries, the
trace-code bucket layout and the findings body, and reading what earlier releases wrote."""

from __future__ import annotations

import hashlib
import json
import zlib
from datetime import datetime

import pytest

from rxguard.dynamo import (
    DICTIONARIES_FILE,
    FINDINGS_DICT,
    LINES_DICT,
    SALES_DICT,
    _Bucket,
    _bucket_from_item,
    _sales_by_line,
    finding_body,
    finding_from_item,
    pack,
    pack_lines,
    unpack,
    unpack_lines,
)
from rxguard.models import ClaimLine, Finding, Severity
from rxguard.repository import TraceSale
from tests.factories import make_line

# A pack names the dictionary it was written with: changing one of these bytes makes every
# stored pack of that name unreadable. A better dictionary is a new name (L2), never an edit.
FROZEN = {
    "L1": "6b6201ff58e77b65",
    "F1": "8cf57ad756a71a3f",
    "S1": "dffdd3e066a2e6d6",
}


def _line(sn: str, **extra: object) -> ClaimLine:
    return make_line("31010000000000000001", sn, fixmedins_code="P3101010001", **extra)


def test_the_dictionaries_stored_packs_name_are_frozen() -> None:
    stored = json.loads(DICTIONARIES_FILE.read_text(encoding="utf-8"))
    digests = {k: hashlib.sha256(v.encode("utf-8")).hexdigest()[:16] for k, v in stored.items()}
    assert {k: digests.get(k) for k in FROZEN} == FROZEN
    assert {LINES_DICT, FINDINGS_DICT, SALES_DICT} <= set(stored)
    assert all(len(v.encode("utf-8")) <= 32 * 1024 for v in stored.values())  # deflate's window


def test_a_dictionary_pack_is_smaller_than_plain_zlib_and_round_trips() -> None:
    # Given a patient's month of lines (small: where plain zlib gains least)
    lines = [_line(f"2026030100000{i}", trace_codes=[f"8110001000000{i:07d}"]) for i in range(5)]
    # When packed with the lines' dictionary
    payload = pack_lines(lines)
    # Then it names its dictionary, reads back equal, and beats zlib without a dictionary
    assert payload[:3] == b"d" + LINES_DICT.encode()
    assert unpack_lines(lines[0].psn_no, payload) == lines
    plain = pack([json.loads(json.dumps(x.model_dump(mode="json"))) for x in lines])
    assert len(payload) < 0.8 * len(plain)


def test_packs_written_before_dictionaries_still_read() -> None:
    old = [{"sn": "1", "fc": "H1"}]
    raw = json.dumps(old, separators=(",", ":")).encode()
    assert unpack(b"z" + zlib.compress(raw, 6)) == old
    assert unpack(b"j" + raw) == old


def test_an_unknown_dictionary_or_encoding_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no pack dictionary 'Q9'"):
        unpack(b"dQ9" + b"\x00")
    with pytest.raises(ValueError, match="unknown pack encoding"):
        unpack(b"x123")


def test_a_bucket_stores_each_line_once_and_reads_back_every_sale() -> None:
    # Given a bucket with a line selling two codes, a return of it, and a split-unit sale
    sold = _line("1", trace_codes=["81100010000000123", "81100010000000124"])
    back = _line("2", init_feedetl_sn="1", trace_codes=["81100010000000123"])
    part = _line("3", trdn_flag=True, units=10, trace_codes=["81100010000000124"])
    bucket = _Bucket("t#8110001000")
    for line in (sold, back, part):
        for code in line.trace_codes:
            bucket.sales.setdefault(code, {})[line.line_id] = TraceSale.of(line, code).encode()
    # When it is stored in the by-line layout and read back
    layout = _sales_by_line(bucket)
    item = {"code": {"S": bucket.key}, "s": {"B": pack(layout, SALES_DICT)}, "v": {"S": "x"}}
    again = _bucket_from_item(item)
    # Then the sales are the same; a line's sale is stored once, without its institution
    assert again.sales == bucket.sales
    assert len(layout) == 3 and sorted(layout[sold.line_id][1]) == ["0000123", "0000124"]
    assert all(sale.split("|")[2] == "=" for sale, _ in layout.values())


def test_a_bucket_written_in_the_first_layout_still_reads() -> None:
    sales = {"81100010000000123": {"P1/1": "2026-03-01T09:00:00|31010000000000000001|P1"}}
    item = {"code": {"S": "t#8110001000"}, "c": {"B": pack(sales)}, "v": {"S": "x"}}
    assert _bucket_from_item(item).sales == sales


def test_a_findings_body_is_packed_and_json_bodies_still_read() -> None:
    finding = Finding(
        finding_id="f" * 32,
        rule_id="over-quantity",
        rule_version=1,
        severity=Severity.HIGH,
        subject_type="patient",
        psn_no="31010000000000000001",
        occurred_at=datetime(2026, 3, 1, 9, 0),
        evidence=["P1/1"],
        explanation_zh="单次配药数量超过上限。",
        explanation_en="Quantity over the limit.",
    )
    body = finding.model_dump(mode="json", exclude={"status"})
    packed = {"body": {"B": pack(body, FINDINGS_DICT)}, "status": {"S": "new"}}
    legacy = {"body": {"S": json.dumps(body)}, "status": {"S": "new"}}
    assert finding_from_item(packed) == finding_from_item(legacy) == finding
    assert finding_body(pack(body, FINDINGS_DICT)) == finding_body(json.dumps(body)) == body
    assert len(packed["body"]["B"]) < len(json.dumps(body, ensure_ascii=False).encode()) / 2


def test_the_activity_periods_of_lines_are_the_months_of_their_monitored_dispensings(kb):
    from rxguard.dynamo import activity_period, activity_periods
    from rxguard.engine.factory import make_line as engine_line

    # Given monitored lines in two months, a visit fee in a third, and a reversal in a fourth
    sold = [
        engine_line(kb, drug_code="XB01AC04A001", when="2025-09-30 23:00:00"),
        engine_line(kb, drug_code="XB01AC04A001", when="2025-10-01 08:00:00"),
        engine_line(kb, drug_code="XB01AC04A001", when="2025-10-20 08:00:00"),
    ]
    fee = engine_line(kb, when="2025-11-03 09:00:00")
    back = sold[0].model_copy(
        update={
            "feedetl_sn": "R1",
            "cnt": -1,
            "init_feedetl_sn": sold[0].feedetl_sn,
            "fee_ocur_time": datetime(2025, 12, 1),
        },
    )
    lines = [*sold, fee, back]
    # Then the periods are those two months, as each line's own period says
    assert activity_periods(lines) == {"2025-09", "2025-10"}
    assert activity_periods(lines) == {activity_period(x) for x in lines} - {None}
