"""Hostile batch files: every case gets a named error, nothing crashes, nothing is half
written (docs/security.md, claims H1-H4). The corpus is in tests/security/corpus.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxguard.ingest import LINE_REASONS, prepare_batch, read_batch
from rxguard.models import ClaimLine, Rejection
from tests.security.corpus import BASE, CASES, PSN, PSN2, Case, csv_text, jsonl_text, rec

FILE_REASONS = {"file_missing", "empty", "binary", "no_header", "not_json", "several_lists"}
FIELD_NAMES = set(BASE) | {
    "setl_id", "mdtrt_id", "trdn_flag", "sin_dos_dscr", "used_frqu_dscr", "prd_days", "rxno", "bilg_dr_codg",
    "dise_codg", "dscg_tkdrug_flag", "lt_rx_flag", "drug_trac_codg", "override_reason", "init_feedetl_sn",
}  # fmt: skip


def _check_named(items: list[ClaimLine | Rejection], name: str) -> list[Rejection]:
    rejections = [i for i in items if isinstance(i, Rejection)]
    for r in rejections:
        assert r.file == name
        assert r.reason in set(LINE_REASONS) | FILE_REASONS, r.reason
        assert r.message.strip()
        assert r.line is not None or r.reason in FILE_REASONS, r
        assert r.field is None or r.field in FIELD_NAMES, r.field
        # personal data never echoed in an error message
        assert PSN not in r.message and PSN2 not in r.message, r.message
        assert len(r.message) < 2000, "a rejection message must not carry the hostile payload"
    return rejections


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_batch_is_rejected_by_name_without_crash_or_partial_write(
    case: Case, kb: object, tmp_path: Path
) -> None:
    # Given a hostile batch file
    path = tmp_path / case.name
    path.write_bytes(case.make())
    expect = case.expect

    # When it is read line by line
    items = list(read_batch(path, kb))  # type: ignore[arg-type]

    # Then every rejection is named (file, line, field, reason) and nothing crashed
    rejections = _check_named(items, case.name)
    accepted = [i for i in items if isinstance(i, ClaimLine)]
    file_errors = [r for r in rejections if r.line is None]
    if expect.file_error:
        assert [r.reason for r in file_errors] == [expect.file_error], rejections
        assert not accepted
    elif expect.check is None:
        assert not file_errors, file_errors
    reasons = {r.reason for r in rejections}
    assert expect.reasons <= reasons, reasons
    assert expect.fields <= {r.field for r in rejections}, [(r.field, r.reason) for r in rejections]
    assert expect.at_lines <= {r.line for r in rejections}, [(r.line, r.reason) for r in rejections]
    if expect.accepted is not None:
        assert len(accepted) == expect.accepted, [(r.line, r.field, r.reason) for r in rejections]
    if expect.accepted == 0 and not expect.file_error:
        assert rejections, "nothing accepted and nothing rejected: the input vanished"
    by_id = {c.line_id: c for c in accepted}
    for line_id, name in expect.kept.items():
        assert by_id[line_id].fixmedins_name == name  # the text is data: kept verbatim
    if expect.check is not None:
        expect.check(items)  # type: ignore[arg-type]

    # And prepare_batch accounts for every line: chunks hold exactly the accepted lines,
    # rejected.jsonl the rejections, and a whole-file error writes no chunk at all
    out = tmp_path / "out"
    result = prepare_batch(path, kb, out, chunk_size=2)  # type: ignore[arg-type]
    chunk_files = sorted(out.glob("chunk-*.jsonl"))
    chunk_lines = sum(len(f.read_bytes().splitlines()) for f in chunk_files)
    rejected_lines = [json.loads(x) for x in result.rejected_path.read_text(encoding="utf-8").splitlines()]
    if result.file_error is not None:
        assert chunk_files == [] and result.chunks == []
        assert result.accepted == 0
    assert chunk_lines == result.accepted == sum(c.lines for c in result.chunks)
    assert (
        len(rejected_lines) == result.rejected + (1 if result.file_error else 0)
        or len(rejected_lines) == result.rejected
    )
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".spill")) == []  # temp files cleaned


def test_every_hostile_batch_prepares_the_same_through_worker_tasks(
    kb: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given every hostile batch, prepared in one process and through tasks that cross a
    # pickle as they do to the local runtime's workers (tiny tasks: many per file)
    from rxguard.ingest import partition
    from tests.unit.ingest_helpers import PicklingMapper

    monkeypatch.setattr(partition, "TASK_RECORDS", 3)
    monkeypatch.setattr(partition, "TASK_ROWS_PER_PART", 0)
    monkeypatch.setattr(partition, "PLAIN_TASK_RECORDS", 3)  # the local runtime's plain spill
    for case in CASES:
        path = tmp_path / case.name
        path.write_bytes(case.make())
        serial = prepare_batch(path, kb, tmp_path / "serial" / case.name, chunk_size=2)  # type: ignore[arg-type]
        mapped = prepare_batch(
            path,
            kb,
            tmp_path / "mapped" / case.name,
            chunk_size=2,
            mapper=PicklingMapper(kb),  # type: ignore[arg-type]
        )
        # Then the counts, the rejections (in file order) and the chunks are the same, byte for byte
        assert {**mapped.as_dict(), "chunks": None, "rejected_path": None} == {
            **serial.as_dict(),
            "chunks": None,
            "rejected_path": None,
        }, case.name
        assert mapped.rejected_path.read_bytes() == serial.rejected_path.read_bytes(), case.name
        assert [c.path.read_bytes() for c in mapped.chunks] == [c.path.read_bytes() for c in serial.chunks]


def test_prepare_batch_writes_no_chunk_when_the_file_is_rejected_whole(kb: object, tmp_path: Path) -> None:
    # Given an out dir holding chunks of an earlier batch, and a binary file dropped in its place
    out = tmp_path / "out"
    good = tmp_path / "good.csv"
    good.write_text(csv_text([rec(1), rec(2), rec(3)]), encoding="utf-8")
    first = prepare_batch(good, kb, out, chunk_size=1)  # type: ignore[arg-type]
    assert first.chunks
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    # When it is prepared into the same directory
    result = prepare_batch(bad, kb, out, chunk_size=1)  # type: ignore[arg-type]
    # Then the file error is named and no chunk file is left for the screen step
    assert result.file_error is not None and result.file_error.reason == "binary"
    assert list(out.glob("chunk-*.jsonl")) == []


_VALID = csv_text([rec(n) for n in range(1, 6)]).encode()
_VALID_JSONL = jsonl_text([rec(n) for n in range(1, 6)]).encode()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    base=st.sampled_from([_VALID, _VALID_JSONL]),
    cuts=st.lists(st.tuples(st.integers(0, len(_VALID_JSONL)), st.binary(max_size=12)), min_size=1, max_size=6),
)
def test_mutated_batches_never_crash_and_every_line_is_accounted_for(
    base: bytes, cuts: list[tuple[int, bytes]], kb: object, tmp_path: Path
) -> None:
    # Given a valid batch with random bytes spliced in at random places
    data = bytearray(base)
    for at, junk in cuts:
        data[at : at + len(junk)] = junk
    path = tmp_path / "mutated.csv"
    path.write_bytes(bytes(data))
    # When it is read
    reader = read_batch(path, kb)  # type: ignore[arg-type]
    items = list(reader)
    # Then every rejection is named, and accepted + rejected = lines read
    _check_named(items, "mutated.csv")
    lines = [i for i in items if not (isinstance(i, Rejection) and i.line is None)]  # file errors aside
    assert reader.accepted + reader.rejected == reader.lines_read == len(lines)
