"""Property: for any input, the reader never crashes and accepted + rejected = lines read."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxguard.ingest import prepare_batch, read_batch
from rxguard.kb import get_knowledge_base
from rxguard.models import ClaimLine, Rejection
from tests.unit.ingest_helpers import HEADER, csv_text, record

KB = get_knowledge_base()
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HEADER_LINE = ",".join(HEADER)
GOOD_ROW = csv_text([record()]).split("\n")[1]
# Cells that look like claim data, and noise: delimiters, quotes, Chinese, numbers, blanks.
cell = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "18.6", "37.2", "2025-09-02 09:10:00", "H31000001", "XJ05AF10A001", '"']),
    st.text(alphabet=st.sampled_from([*list('ab,;|"\t 1.9-:/中文€'), "\u3000"]), max_size=12),
)
row = st.lists(cell, min_size=0, max_size=len(HEADER) + 3).map(lambda cells: ",".join(cells))


def _check(data: bytes, suffix: str = ".csv") -> tuple[list[ClaimLine | Rejection], object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"batch{suffix}"
        path.write_bytes(data)
        reader = read_batch(path, KB)
        items = list(reader)
    lines = [i for i in items if isinstance(i, ClaimLine)]
    rejections = [i for i in items if isinstance(i, Rejection)]
    assert reader.accepted == len(lines) and reader.rejected + (reader.file_error is not None) == len(rejections)
    assert reader.accepted + reader.rejected == reader.lines_read
    if reader.file_error is not None:
        assert items == [reader.file_error] and reader.lines_read == 0
    assert all(r.line is None or r.line >= 1 for r in rejections)
    return items, reader


@SETTINGS
@given(st.binary(max_size=3000))
def test_arbitrary_bytes(data: bytes) -> None:
    # Given any bytes at all, When they are read, Then every line is accounted for (checked in _check)
    _check(data)


@SETTINGS
@given(
    st.lists(st.one_of(row, st.just(GOOD_ROW), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))), max_size=30)
)
def test_header_then_arbitrary_rows(rows: list[str]) -> None:
    # Given a valid header followed by arbitrary rows (some good, some noise, some odd bytes)
    text = "\n".join([HEADER_LINE, *rows]) + "\n"
    for encoding in ("utf-8", "gb18030"):
        data = text.encode(encoding, errors="replace")
        # When it is read
        _, reader = _check(data)
        # Then each row that is not blank (whitespace or only commas) is exactly one line read;
        # a row ends at LF, CRLF or a lone CR (files that mix them)
        expected = 0
        for raw in re.split(rb"\r\n|\r|\n", data)[1:]:
            try:
                line = raw.decode(reader.encoding)  # type: ignore[attr-defined]
            except UnicodeDecodeError:
                expected += 1  # an encoding rejection
                continue
            expected += bool(line.strip() and line.strip(", \t\r\n"))
        assert reader.lines_read == expected  # type: ignore[attr-defined]
        # and only a header without any line is rejected whole (as empty)
        error = reader.file_error  # type: ignore[attr-defined]
        assert (error.reason if error else None) == (None if expected else "empty")


json_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),  # standard JSON (a NaN token cuts a document)
        st.text(max_size=12),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)
json_record = st.one_of(
    st.builds(lambda extra: {**record(), **extra}, st.dictionaries(st.sampled_from(HEADER), json_value, max_size=4)),
    json_value,
)


@SETTINGS
@given(st.lists(json_record, max_size=15), st.booleans())
def test_arbitrary_json_records(records: list[object], as_document: bool) -> None:
    # Given arbitrary JSON values as JSON Lines or as a platform document
    if as_document:
        data = json.dumps({"input": {"feedetail": records}}).encode()
    else:
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
    # When it is read
    _items, reader = _check(data, ".json")
    # Then one item per record (an empty document is rejected whole)
    if reader.file_error is None and as_document:
        assert reader.lines_read == len(records)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.just(GOOD_ROW), row), max_size=20), st.integers(min_value=1, max_value=7))
def test_prepare_batch_counts_match_the_reader(rows: list[str], chunk_size: int) -> None:
    # Given arbitrary rows after a header, some of them good (and so duplicates of each other)
    data = ("\n".join([HEADER_LINE, *rows]) + "\n").encode()
    _items, reader = _check(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.csv"
        path.write_bytes(data)
        # When it is prepared into chunks
        result = prepare_batch(path, KB, Path(tmp) / "out", chunk_size=chunk_size)
        # Then it accepts and rejects the same lines as the streaming reader
        assert (result.lines_read, result.accepted, result.rejected) == (
            reader.lines_read,  # type: ignore[attr-defined]
            reader.accepted,  # type: ignore[attr-defined]
            reader.rejected,  # type: ignore[attr-defined]
        )
        assert result.rejected_by_reason == reader.rejected_by_reason  # type: ignore[attr-defined]
        assert sum(c.lines for c in result.chunks) == result.accepted
