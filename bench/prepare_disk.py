"""Prepare within a disk budget (issue 15): a claim file generated on the fly, never on disk.

    .venv/bin/python -m bench.prepare_disk [--mb 2048] [--budget-mb 1024] [--chunk-size 5000]

A CSV batch of about `--mb` megabytes is generated as a stream (rows made as the reader asks
for them, as Prepare reads an S3 object's body; the opener starts the same rows again when
called twice), and `prepare_batch` runs over it with each chunk handed on and deleted as it
is written (Prepare uploads it). The temporary directory's size is sampled every 10,000
lines and at every chunk; the run stops with exit status 1 as soon as it exceeds the
budget. Prints the peak temporary disk, its ratio to the input, CPU seconds and peak RSS.
Not a test (a 2 GB batch takes about 15 minutes of CPU); figures in docs/security.md.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.ingest_memory import HEADER, csv_row

MB = 1024 * 1024


class BudgetExceeded(RuntimeError):
    pass


def rows(target_bytes: int, seed: int = 1) -> Iterator[bytes]:
    """CSV rows (header first) until about `target_bytes`; about 8 lines a patient."""
    rng = random.Random(seed)
    patients = max(1, target_bytes // 140 // 8)
    produced = 0
    header = (HEADER + "\n").encode("utf-8")
    yield header
    produced += len(header)
    n = 0
    block: list[str] = []
    while produced < target_bytes:
        block.append(csv_row(rng, n, patients, sn_digits=10))
        n += 1
        if len(block) == 2000:
            data = "".join(block).encode("utf-8")
            block.clear()
            produced += len(data)
            yield data
    if block:
        yield "".join(block).encode("utf-8")


class GeneratedBody(io.RawIOBase):
    """The generated rows as a readable stream (what Prepare's S3 body wrapper is)."""

    def __init__(self, target_bytes: int) -> None:
        self._rows = rows(target_bytes)
        self._pending = b""
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._rows)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.served += n
        return n


def _disk(directory: Path) -> int:
    total = 0
    for p in directory.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except FileNotFoundError:  # a chunk deleted meanwhile
            pass
    return total


def measure(mb: int, budget_mb: int, chunk_size: int = 5000) -> dict[str, Any]:
    from rxguard.ingest import ChunkInfo, prepare_batch
    from rxguard.kb import get_knowledge_base

    kb = get_knowledge_base()
    target, budget = mb * MB, budget_mb * MB
    bodies: list[GeneratedBody] = []

    def opener() -> io.BufferedReader:
        body = GeneratedBody(target)
        bodies.append(body)
        return io.BufferedReader(body, MB)

    with tempfile.TemporaryDirectory(prefix="rxguard-prepare-disk-") as tmp:
        out = Path(tmp) / "out"
        peak = {"bytes": 0, "at_lines": 0}
        chunks = {"n": 0, "lines": 0}
        started_cpu, started = time.process_time(), time.monotonic()

        def sample(lines: int) -> None:
            used = _disk(out)
            if used > peak["bytes"]:
                peak["bytes"], peak["at_lines"] = used, lines
            if used > budget:
                read = bodies[-1].served if bodies else 0
                raise BudgetExceeded(
                    f"temporary disk {used / MB:.0f} MB over the {budget_mb} MB budget after {read / MB:.0f} MB of "
                    f"input ({lines:,} lines), {time.process_time() - started_cpu:.0f} s CPU"
                )

        def hand_on(info: ChunkInfo) -> None:  # Prepare uploads the chunk, then deletes it
            sample(-1)
            chunks["n"] += 1
            chunks["lines"] += info.lines
            Path(info.path).unlink()

        def progress(lines: int) -> None:
            sample(lines)
            if lines % 1_000_000 == 0:
                print(
                    f"  {lines:,} lines, {bodies[-1].served / MB:.0f} MB read, peak {peak['bytes'] / MB:.0f} MB, "
                    f"{time.process_time() - started_cpu:.0f} s CPU",
                    file=sys.stderr,
                    flush=True,
                )

        result = prepare_batch(
            opener, kb, out, chunk_size=chunk_size, name="generated.csv", size=target, progress=progress,
            on_chunk=hand_on,
        )  # fmt: skip
        cpu, wall = time.process_time() - started_cpu, time.monotonic() - started
    read = max(b.served for b in bodies)
    return {
        "input_mb": round(read / MB, 1),
        "budget_mb": budget_mb,
        "lines_read": result.lines_read,
        "accepted": result.accepted,
        "chunk_lines": chunks["lines"],
        "chunks": chunks["n"],
        "peak_disk_mb": round(peak["bytes"] / MB, 1),
        "peak_disk_ratio": round(peak["bytes"] / max(read, 1), 3),
        "cpu_seconds": round(cpu, 1),
        "wall_seconds": round(wall, 1),
        "cpu_s_per_gb": round(cpu / (read / (1024 * MB)), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "opened": len(bodies),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prepare_disk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=2048, help="size of the generated batch (MiB)")
    parser.add_argument("--budget-mb", type=int, default=1024, help="temporary disk allowed (MiB)")
    parser.add_argument("--chunk-size", type=int, default=5000)
    args = parser.parse_args(argv)
    try:
        figures = measure(args.mb, args.budget_mb, args.chunk_size)
    except BudgetExceeded as exc:
        print(f"over budget: {exc}")
        return 1
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
