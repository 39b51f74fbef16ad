"""Builders for ingestion tests: claim records and batch files in any format/encoding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rxguard import claimline

ENTECAVIR = "XJ05AF10A001"  # 28 tablets of 0.5 mg a pack, label maximum 1 mg a day (rules/drugs.json)
UNMONITORED = "XJ01CA04B001"  # not in the catalogue


_BASE: dict[str, Any] = {
    "feedetl_sn": "FD0001",
    "fixmedins_code": "H31000001",
    "fixmedins_name": "浦东仁和医院",
    "admdvs": "310000",
    "psn_no": "31000000000101",
    "mdtrt_id": "",
    "med_type": "11",
    "fee_ocur_time": "2025-09-02 09:10:00",
    "med_list_codg": ENTECAVIR,
    "cnt": "2",
    "trdn_flag": "",
    "pric": "18.6",
    "det_item_fee_sumamt": "37.2",
    "dise_codg": "B18.1",
    "dscg_tkdrug_flag": "",
    "lt_rx_flag": "",
    "drug_trac_codg": "",
    "override_reason": "",
}
# The columns the builders write: the contract's, in its order, that a base record fills.
HEADER = [c for c in claimline.COLUMNS if c in _BASE]


def record(**overrides: Any) -> dict[str, Any]:
    """A valid claim line (entecavir, 2 packs at 18.60) with overrides."""
    return {**_BASE, **overrides}


def csv_text(records: list[dict[str, Any]], header: list[str] | None = None, sep: str = ",") -> str:
    cols = header or HEADER
    rows = [sep.join(cols)]
    for rec in records:
        cells = []
        for c in cols:
            text = "" if rec.get(c) is None else str(rec.get(c))
            if sep in text or '"' in text:
                text = '"' + text.replace('"', '""') + '"'
            cells.append(text)
        rows.append(sep.join(cells))
    return "\n".join(rows) + "\n"


def write_csv(path: Path, records: list[dict[str, Any]], encoding: str = "utf-8", **kwargs: Any) -> Path:
    path.write_bytes(csv_text(records, **kwargs).encode(encoding))
    return path


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_document(path: Path, records: list[Any], *, indent: int | None = 1) -> Path:
    doc = {"infno": "2204", "input": {"feedetail": records}}
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=indent), encoding="utf-8")
    return path


class PicklingMapper:
    """A Prepare TaskMapper whose tasks and outcomes cross a pickle both ways, as they do to
    the local runtime's worker processes; counts the tasks it ran. Its spill is at the
    local runtime's level (0: plain text), not Lambda's (6): the chunks must not depend on it."""

    spill_level = 0

    def __init__(self, kb: Any) -> None:
        self.kb = kb
        self.normalized: list[int] = []  # records per normalization task
        self.chunked: list[int] = []  # partitions, in the order chunked

    def normalize(self, tasks: Any) -> Any:
        import pickle

        from rxguard.ingest import partition

        for task in tasks:
            self.normalized.append(len(task.records))
            shipped = pickle.loads(pickle.dumps(task))
            yield pickle.loads(pickle.dumps(partition.normalize_task(shipped, self.kb)))

    def chunk(self, tasks: Any) -> Any:
        import pickle

        from rxguard.ingest import partition

        for task in tasks:
            self.chunked.append(task.part)
            yield pickle.loads(pickle.dumps(partition.chunk_partition(pickle.loads(pickle.dumps(task)))))
