"""Claim lines and findings as plain values, and the template's tables, for tests of every
kind (one maker each, so the storage, workflow and contract tests build the same shapes).
`make_finding` is rxguard.engine.factory's (the sample letters use it too)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rxguard.engine.factory import make_finding
from rxguard.models import ClaimLine, InstitutionKind


def make_line(
    psn_no: str = "P0001",
    sn: str = "1",
    *,
    fixmedins_code: str = "H31000000001",
    time: str = "2026-03-01 09:00:00",
    drug: str = "XA10BA02A001",
    atc: str | None = "A10BA02",
    units: float = 60,
    trace_codes: list[str] | None = None,
    **extra: Any,
) -> ClaimLine:
    at = datetime.fromisoformat(time)
    return ClaimLine(
        feedetl_sn=sn,
        fixmedins_code=fixmedins_code,
        fixmedins_name="上海市某某医院",
        institution_kind=InstitutionKind.from_code(fixmedins_code),
        admdvs=extra.pop("admdvs", "310000"),
        psn_no=psn_no,
        mdtrt_id=f"{fixmedins_code}-{at:%Y%m%d}",
        med_type="11",
        fee_ocur_time=at,
        med_list_codg=drug,
        med_list_name="二甲双胍片",
        cnt=2,
        pric=12.5,
        det_item_fee_sumamt=25.0,
        quantity_units=units,
        diagnoses=["E11.9"],
        trace_codes=trace_codes or [],
        monitored=atc is not None,
        atc_code=atc,
        days_supply=30.0 if atc else None,
        source_file="incoming/batch.csv",
        source_line=int(sn) + 1 if sn.isdigit() else None,
        **extra,
    )


def create_table(ddb: Any, name: str, props: dict[str, Any]) -> None:
    """A DynamoDB table named `name` from a template.yaml table's Properties (key schema,
    attributes, billing, indexes): the tests' tables cannot drift from the template's."""
    kwargs: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props["BillingMode"],
    }
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    ddb.create_table(**kwargs)


def write_csv(path: Path, rows: Sequence[Mapping[str, str]]) -> Path:
    """Claim lines (dicts of one CSV header) written back as a UTF-8 CSV batch at `path`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


__all__ = ["create_table", "make_finding", "make_line", "write_csv"]
