"""Bounded resources (issue 15): Prepare streams the batch and its chunks.

The input is read as a stream (an S3 object is never downloaded), the patient partitions
are compressed, and each chunk is handed on (uploaded, deleted) as soon as it is written:
the disk holds a fraction of the input, where it held ~6x. Measured here on a generated
batch with a disk budget; docs/security.md has the figures of a large one.
"""

from __future__ import annotations

import io
from pathlib import Path

from rxguard.ingest import ChunkInfo, prepare_batch, read_chunk
from rxguard.kb import KnowledgeBase
from tests.security.corpus import FIELDS, csv_row, rec

LINES = 40_000


def _batch(path: Path) -> int:
    with path.open("w", encoding="utf-8") as out:
        out.write(",".join(FIELDS) + "\n")
        for n in range(1, LINES + 1):
            out.write(
                csv_row(rec(n, psn_no=f"PSN{n % 5000:06d}", fee_ocur_time=f"2026-01-{1 + n % 28:02d} 09:30:00")) + "\n"
            )
    return path.stat().st_size


def _disk(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def test_prepare_streams_its_input_and_chunks_within_a_disk_budget(kb: KnowledgeBase, tmp_path: Path) -> None:
    # Given a batch read as a stream (as Prepare reads the S3 object), and an out dir on its own disk
    source = tmp_path / "batch.csv"
    size = _batch(source)
    data = source.read_bytes()
    out = tmp_path / "out"
    peak = 0
    handed: list[int] = []

    def measure(_: int) -> None:
        nonlocal peak
        peak = max(peak, _disk(out))

    def hand_on(info: ChunkInfo) -> None:  # Prepare uploads the chunk and deletes it
        measure(0)
        handed.append(len(read_chunk(info.path)))
        info.path.unlink()

    # When it is prepared, each chunk handed on as it is written
    result = prepare_batch(
        lambda: io.BytesIO(data), kb, out, chunk_size=500, name="batch.csv", size=size,
        progress=measure, on_chunk=hand_on,
    )  # fmt: skip
    # Then every line is in a chunk, and the disk never held more than half the input (it held ~6x)
    assert result.accepted == LINES == sum(handed)
    assert peak <= size // 2, (peak, size)
    assert list(out.glob("chunk-*.jsonl")) == []
