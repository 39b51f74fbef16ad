"""Writing a population: claim files in the input contract and `labels.json` beside them.

Byte-identical for the same population: fixed field order, `\\n` line ends, sorted JSON keys.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from rxguard_tools.synth.generator import FIELDS, Population

Format = Literal["csv", "jsonl"]


def _csv_bytes(records: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FIELDS)
    for r in records:
        writer.writerow(["" if r[f] is None else r[f] for f in FIELDS])
    return buffer.getvalue().encode("utf-8")


def _jsonl_bytes(records: list[dict[str, Any]]) -> bytes:
    out = []
    for r in records:
        row = {f: r[f] for f in FIELDS if r[f] != ""}
        out.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode("utf-8")


def write_population(
    population: Population, out_dir: Path, *, fmt: Format = "csv", split: Literal["month", "none"] = "month"
) -> list[Path]:
    """Write the claim files (one per calendar month, as a bureau's monthly settlement
    batches, or one file) and `labels.json`. Returns the claim files in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in population.records:
        key = str(r["fee_ocur_time"])[:7] if split == "month" else "all"
        groups[key].append(r)
    encode = _csv_bytes if fmt == "csv" else _jsonl_bytes
    files: list[Path] = []
    for key in sorted(groups):
        name = f"claims-{key}.{fmt}" if split == "month" else f"claims.{fmt}"
        path = out_dir / name
        path.write_bytes(encode(groups[key]))
        files.append(path)
    labels = dict(population.labels)
    labels["files"] = [p.name for p in files]
    text = json.dumps(labels, ensure_ascii=False, sort_keys=True, indent=1) + "\n"
    (out_dir / "labels.json").write_text(text, encoding="utf-8")
    return files


def read_labels(out_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out_dir / "labels.json").read_text(encoding="utf-8"))
    return data
