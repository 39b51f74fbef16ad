"""Partitioning: chunk files hold whole patients, sorted by time; every accepted line once."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from rxguard.ingest import partition, prepare_batch, read_batch, read_chunk, read_rejections
from rxguard.models import ClaimLine, Rejection
from tests.unit.ingest_helpers import PicklingMapper, record, write_csv, write_jsonl

BATCHES = Path(__file__).resolve().parents[2] / "events" / "batches"


def _population(seed: int, patients: int = 150) -> list[dict]:
    """Patients with 1-12 lines each in random order, some bad lines and duplicate line ids
    (one duplicate under another patient: the dedupe must not rely on the patient)."""
    rng = random.Random(seed)
    recs = []
    for p in range(patients):
        for k in range(rng.randint(1, 12)):
            day, hour = rng.randint(1, 28), rng.randint(8, 17)
            recs.append(
                record(
                    feedetl_sn=f"FD{p:04d}{k:02d}",
                    fixmedins_code=rng.choice(["H31000001", "P31000002", "H13000001"]),
                    psn_no=f"31000000{p:06d}",
                    fee_ocur_time=f"2025-09-{day:02d} {hour:02d}:{rng.randint(0, 59):02d}:00",
                )
            )
    rng.shuffle(recs)
    recs[10] = {**recs[10], "cnt": "0"}  # not_positive
    recs.append(dict(recs[20]))  # duplicate, same patient
    recs.append({**recs[30], "psn_no": "31000000999999"})  # duplicate line id, another patient
    return recs


@pytest.fixture(autouse=True)
def _small_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many partitions even for small test files, so the multi-partition paths run.
    monkeypatch.setattr(partition, "PARTITION_SOURCE_BYTES", 4096)


@pytest.mark.parametrize("chunk_size", [1, 25, 5000])
def test_chunks_hold_whole_patients_sorted_and_every_line_once(kb, tmp_path: Path, chunk_size: int) -> None:
    # Given a shuffled batch of many patients with bad and duplicate lines
    path = write_csv(tmp_path / "batch.csv", _population(seed=chunk_size))
    streamed = list(read_batch(path, kb))
    accepted = {ln.line_id: ln for ln in streamed if isinstance(ln, ClaimLine)}
    # When it is prepared into chunks
    progress: list[int] = []
    result = prepare_batch(path, kb, tmp_path / "out", chunk_size=chunk_size, progress=progress.append)
    chunks = [read_chunk(c.path) for c in result.chunks]
    # Then every accepted line is in exactly one chunk, unchanged
    chunked = [ln for chunk in chunks for ln in chunk]
    assert Counter(ln.line_id for ln in chunked) == Counter(accepted.keys())
    assert all(ln == accepted[ln.line_id] for ln in chunked)
    # and each patient's lines are all in one chunk
    home: dict[str, int] = {}
    for index, chunk in enumerate(chunks):
        for ln in chunk:
            assert home.setdefault(ln.psn_no, index) == index
    # and each chunk is sorted by (fee_ocur_time, line_id)
    for chunk in chunks:
        keys = [(ln.fee_ocur_time, ln.line_id) for ln in chunk]
        assert keys == sorted(keys)
    # and chunks are about chunk_size lines: only the patient that crosses the size is added
    # whole, and only the last chunk of each partition may be smaller
    biggest_patient = max(Counter(ln.psn_no for ln in chunked).values())
    assert all(c.lines < chunk_size + biggest_patient for c in result.chunks)
    n_parts = path.stat().st_size // partition.PARTITION_SOURCE_BYTES + 1
    assert sum(c.lines < chunk_size for c in result.chunks) <= n_parts
    assert [c.lines for c in result.chunks] == [len(ch) for ch in chunks]
    assert [c.patients for c in result.chunks] == [len({ln.psn_no for ln in ch}) for ch in chunks]
    # and the counts and rejections match the streaming reader (first copy wins)
    streamed_rejections = [r for r in streamed if isinstance(r, Rejection)]
    written = read_rejections(result.rejected_path)
    assert sorted((r.line, r.reason) for r in written) == sorted((r.line, r.reason) for r in streamed_rejections)
    assert Counter(r.reason for r in written) == {"not_positive": 1, "duplicate": 2}
    assert (result.lines_read, result.accepted, result.rejected) == (len(streamed), len(accepted), 3)
    assert result.rejected_by_reason == {"not_positive": 1, "duplicate": 2}
    assert progress[-1] == result.lines_read


def test_chunking_does_not_depend_on_partition_count(kb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given one batch prepared with one partition and with many
    path = write_csv(tmp_path / "batch.csv", _population(seed=7))
    monkeypatch.setattr(partition, "PARTITION_SOURCE_BYTES", 1 << 30)
    one = prepare_batch(path, kb, tmp_path / "one", chunk_size=40)
    monkeypatch.setattr(partition, "PARTITION_SOURCE_BYTES", 1024)
    many = prepare_batch(path, kb, tmp_path / "many", chunk_size=40)
    # Then the same lines are accepted and the same rejections made
    assert (one.accepted, one.rejected_by_reason) == (many.accepted, many.rejected_by_reason)
    lines = lambda r: sorted(ln.line_id for c in r.chunks for ln in read_chunk(c.path))  # noqa: E731
    assert lines(one) == lines(many)


def test_whole_file_error_gives_no_chunks_and_is_written(kb, tmp_path: Path) -> None:
    # Given an empty file
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    # When it is prepared
    result = prepare_batch(path, kb, tmp_path / "out")
    # Then no chunk, the file error is reported and written to rejected.jsonl
    assert result.chunks == [] and result.file_error is not None and result.file_error.reason == "empty"
    assert read_rejections(result.rejected_path) == [result.file_error]
    assert (result.lines_read, result.accepted, result.rejected) == (0, 0, 0)
    assert json.loads(json.dumps(result.as_dict()))["file_error"]["reason"] == "empty"


def test_rerun_replaces_old_chunks(kb, tmp_path: Path) -> None:
    # Given an output directory holding chunks of a bigger earlier batch
    out = tmp_path / "out"
    prepare_batch(write_csv(tmp_path / "big.csv", _population(seed=3)), kb, out, chunk_size=5)
    # When a one-line batch is prepared into it
    result = prepare_batch(write_jsonl(tmp_path / "one.jsonl", [record()]), kb, out, chunk_size=5)
    # Then only its chunk is there
    assert sorted(out.glob("chunk-*.jsonl")) == [c.path for c in result.chunks] and result.accepted == 1


def test_bad_arguments(kb, tmp_path: Path) -> None:
    # Given a bad chunk size or default region, prepare_batch refuses before reading
    path = write_csv(tmp_path / "b.csv", [record()])
    with pytest.raises(ValueError, match="chunk_size"):
        prepare_batch(path, kb, tmp_path / "o", chunk_size=0)
    with pytest.raises(ValueError, match="default_admdvs"):
        prepare_batch(path, kb, tmp_path / "o", default_admdvs="31")


def test_sample_batches_prepare(kb, tmp_path: Path) -> None:
    # Given the sample batches
    for path in sorted(BATCHES.glob("0*")):
        # When each is prepared
        result = prepare_batch(path, kb, tmp_path / path.stem, chunk_size=20)
        # Then nothing is lost and nothing is rejected whole
        assert result.file_error is None
        assert result.accepted == sum(c.lines for c in result.chunks)
        assert result.accepted + result.rejected == result.lines_read


# ---- the JSON sanitizer in front of ijson (issue 15): block boundaries never change the result


def _sanitized(data: bytes, size: int) -> bytes:
    from rxguard.ingest.reader import _JsonSanitizer

    sanitizer = _JsonSanitizer()
    parts = [sanitizer.feed(data[i : i + size]) for i in range(0, len(data), size)]
    return b"".join(parts) + sanitizer.feed(b"", final=True)


SANITIZER_CASES = [
    b'{"a": [1, ' + b"9" * 1500 + b", -" + b"8" * 1200 + b", 1." + b"7" * 1300 + b"]}",
    b'{"a": [1e' + b"5" * 30 + b", 2E-" + b"6" * 25 + b", 3e+" + b"7" * 1200 + b", 4e18]}",
    b'{"s": "' + b"9" * 1500 + b'", "t": "E' + b"1" * 25 + b'", "n": ' + b"3" * 1100 + b"}",
    b'{"s": "a\\"' + b"9" * 1200 + b'", "q": "\\\\", "n": ' + b"4" * 1001 + b"}",
    b'{"p": "\\ud800x", "e": "\\ud83d\\ude00", "l": "\\udc00", "b": "\\\\ud800", "h": "\\ud83d"}',
    b"[" + b"9" * 150_000 + b', "' + b"x" * 150_000 + b'\\ud800", 1e' + b"2" * 100_000 + b"]",  # no safe cut for long
]


@pytest.mark.parametrize("data", SANITIZER_CASES)
def test_the_json_sanitizer_is_the_same_whatever_the_block_size(data: bytes) -> None:
    whole = _sanitized(data, len(data) + 1)
    for size in (1, 2, 3, 5, 7, 13, 64, 999, 1000, 1001) if len(data) < 10_000 else (997, 65536):
        assert _sanitized(data, size) == whole, size


def test_the_json_sanitizer_bounds_numbers_outside_strings_only() -> None:
    import json

    out = json.loads(_sanitized(SANITIZER_CASES[2], 64), parse_float=str, parse_int=str)
    assert out["s"] == "9" * 1500 and out["t"] == "E" + "1" * 25  # text is never rewritten
    assert out["n"] == "3" * 1100 + ".0"
    out = json.loads(_sanitized(SANITIZER_CASES[1], 7), parse_float=str, parse_int=str)
    assert out["a"] == ["1e999999", "2E-999999", "3e+999999", "4e18"]
    out = json.loads(_sanitized(SANITIZER_CASES[0], 100), parse_float=str, parse_int=str)
    assert out["a"] == ["1", "9" * 1500 + ".0", "-" + "8" * 1200 + ".0", "1." + "7" * 1300]
    out = json.loads(_sanitized(SANITIZER_CASES[5], 65536), parse_float=str, parse_int=str)
    assert out == ["9" * 150_000 + ".0", "x" * 150_000 + "\ufffd", "1e999999"]
    out = json.loads(_sanitized(SANITIZER_CASES[4], 3))
    assert out == {"p": "\ufffdx", "e": "\U0001f600", "l": "\ufffd", "b": "\\ud800", "h": "\ufffd"}


def test_normalizing_in_other_processes_gives_the_same_chunks_and_rejections(
    kb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch whose reader-level rejections (a ragged row, a repeated header) fall
    # between records that normalization rejects or accepts, split into many small tasks
    recs = _population(seed=11, patients=40)
    path = write_csv(tmp_path / "batch.csv", recs)
    rows = path.read_text(encoding="utf-8").splitlines()
    header = rows[0]
    rows.insert(7, "a,b")  # ragged
    rows.insert(30, header)  # a repeated header row
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    monkeypatch.setattr(partition, "TASK_RECORDS", 4)
    monkeypatch.setattr(partition, "TASK_ROWS_PER_PART", 0)
    monkeypatch.setattr(partition, "PLAIN_TASK_RECORDS", 4)
    serial = prepare_batch(path, kb, tmp_path / "serial", chunk_size=20)

    # When its records are normalized by a mapper whose tasks and results cross a pickle
    # (as to a worker process), taken in order
    mapper = PicklingMapper(kb)
    mapped = prepare_batch(path, kb, tmp_path / "mapped", chunk_size=20, mapper=mapper)
    seen, parts = mapper.normalized, mapper.chunked

    # Then the mapper did the work, in many tasks (every CSV row goes to a task as its text:
    # the ragged row and the repeated header are found there), and the outcome is the serial
    # one, byte for byte
    assert len(seen) > 10 and sum(seen) == serial.lines_read
    assert {"ragged_row", "malformed"} <= set(serial.rejected_by_reason)
    assert len(parts) > 1 and parts == sorted(parts)
    assert mapped.as_dict() | {"chunks": [], "rejected_path": ""} == serial.as_dict() | {
        "chunks": [],
        "rejected_path": "",
    }
    assert [c.path.read_bytes() for c in mapped.chunks] == [c.path.read_bytes() for c in serial.chunks]
    assert mapped.rejected_path.read_bytes() == serial.rejected_path.read_bytes()
    lines = [r.line for r in read_rejections(mapped.rejected_path)]
    assert 8 in lines and 31 in lines  # the reader's own rejections kept their place
    assert lines[: lines.index(8)] == sorted(lines[: lines.index(8)])


def test_a_plain_spill_and_a_compressed_one_read_back_the_same_rows(tmp_path) -> None:
    # Given the rows of two tasks for one partition, spilled plain (level 0, the local
    # runtime) and as gzip members (Lambda's level 6)
    tasks = [["a\t1\t{}\n", "b\t2\t{}\n"], ['c\t3\t{"x":"\u00e9"}\n']]
    for level in (0, 6):
        path = tmp_path / f"p{level}"
        path.write_bytes(b"".join(partition._spill_member(rows, level) for rows in tasks))
        # Then the plain spill is the rows' own text, and either reads back the same rows
        assert (path.read_bytes() == "".join(r for rows in tasks for r in rows).encode()) is (level == 0)
        with partition._open_spill(path) as handle:
            assert list(handle) == [r for rows in tasks for r in rows]


def test_the_spill_reads_time_and_line_id_off_the_chunk_json_exactly(kb) -> None:
    # Given every accepted line of the sample batches (times with and without fractions too)
    lines = [x for path in sorted(BATCHES.glob("0*")) for x in read_batch(path, kb) if isinstance(x, ClaimLine)]
    lines.append(lines[0].model_copy(update={"fee_ocur_time": lines[0].fee_ocur_time.replace(microsecond=250)}))
    # Then the order key read off each line's chunk JSON is its time and line id, as the model gives them
    for line in lines:
        assert partition._order_of(partition._chunk_json(line)) == (line.fee_ocur_time.isoformat(), line.line_id)
    assert len(lines) > 300


def test_a_plain_spill_keeps_its_tasks_one_size_whatever_the_partitions(kb, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Given a file cut into many partitions (as a large file is)
    path = write_csv(tmp_path / "batch.csv", _population(seed=5, patients=150))
    monkeypatch.setattr(partition, "PARTITION_SOURCE_BYTES", 1024)
    monkeypatch.setattr(partition, "PLAIN_TASK_RECORDS", 50)
    # When the local runtime's mapper (plain spill) and one with Lambda's compressed spill prepare it
    plain = PicklingMapper(kb)

    class Compressed(PicklingMapper):
        spill_level = 6

    packed = Compressed(kb)
    results = [
        prepare_batch(path, kb, tmp_path / str(n), chunk_size=20, mapper=m) for n, m in enumerate((plain, packed))
    ]
    # Then the plain spill's tasks stay at their size (memory in flight does not grow with
    # the file), while the compressed one's grow with the partitions (~200 rows each), and
    # the chunks are the same
    assert len(plain.normalized) > 5 and max(plain.normalized) <= 50
    assert len(packed.normalized) == 1 and packed.normalized[0] > 50
    assert [c.path.read_bytes() for c in results[0].chunks] == [c.path.read_bytes() for c in results[1].chunks]
