"""Claim-batch ingestion: detect, validate, normalize, reject with reasons, partition.

    read_batch(path, kb)                     -> iterator of ClaimLine | Rejection (streaming)
    prepare_batch(path, kb, out_dir)         -> PrepareResult (chunk files + rejected.jsonl)
    normalize_record(record, kb, file, line) -> ClaimLine, raises LineRejected
    read_chunk(bytes | Path), write_chunk(lines)

Formats and reason codes: docs/ingest.md.
"""

from __future__ import annotations

from pathlib import Path

from rxguard.ingest.normalize import LINE_REASONS, LineRejected, TimeWindow, normalize_record, parse_time
from rxguard.ingest.partition import (
    ChunkInfo,
    PrepareResult,
    prepare_batch,
    read_chunk,
    read_chunk_bodies,
    read_rejections,
    write_chunk,
)
from rxguard.ingest.reader import BatchReader, sniff
from rxguard.kb import KnowledgeBase


def read_batch(
    path: Path,
    kb: KnowledgeBase,
    *,
    name: str | None = None,
    default_admdvs: str | None = None,
    window: TimeWindow | None = None,
) -> BatchReader:
    """Stream a batch: one ClaimLine or Rejection per non-blank line (a whole-file error:
    one Rejection with line None). The returned iterator also carries the counters, the
    detected format and encoding, and `file_error`."""
    return BatchReader(Path(path), kb, name=name, default_admdvs=default_admdvs, window=window)


__all__ = [
    "LINE_REASONS",
    "BatchReader",
    "ChunkInfo",
    "LineRejected",
    "PrepareResult",
    "TimeWindow",
    "normalize_record",
    "parse_time",
    "prepare_batch",
    "read_batch",
    "read_chunk",
    "read_chunk_bodies",
    "read_rejections",
    "sniff",
    "write_chunk",
]
