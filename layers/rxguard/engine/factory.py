"""A small factory of normalized claim lines and findings, for tests, examples and benchmarks.

It resolves the knowledge-base facts the way ingestion does (minimum units, days of
supply at the label maximum dose, ATC, institution kind), so callers write only what a
scenario is about: who, where, when, which drug, how many packs."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding, InstitutionKind, Severity
from rxguard.scope import Scope

_SERIAL = itertools.count(1)


def make_line(
    kb: KnowledgeBase,
    *,
    psn_no: str = "P0001",
    fixmedins_code: str = "P3101001",
    drug_code: str | None = None,
    when: datetime | str = "2025-09-01 09:00:00",
    packs: float = 1,
    units: float | None = None,
    med_type: str | None = None,
    feedetl_sn: str | None = None,
    mdtrt_id: str | None = None,
    price: float | None = None,
    **extra: Any,
) -> ClaimLine:
    """One line: `packs` packs of `drug_code` (or `units` minimum units when given).

    Without a drug code the line is an unmonitored item (a visit fee) worth `price`."""
    t = datetime.fromisoformat(when) if isinstance(when, str) else when
    kind = InstitutionKind.from_code(fixmedins_code)
    sn = feedetl_sn or f"L{next(_SERIAL):08d}"
    visit = mdtrt_id or f"{fixmedins_code}-{t:%Y%m%d}"
    med = med_type or ("41" if kind is InstitutionKind.PHARMACY else "11")
    drug = kb.drugs.get(drug_code) if drug_code else None
    if drug is not None:
        qty_units = units if units is not None else packs * drug.units_per_pack
        cnt = units if units is not None else packs
        unit_price = price if price is not None else drug.unit_price_yuan
        amount = round(cnt * unit_price if units is None else units / drug.units_per_pack * unit_price, 2)
        fields: dict[str, Any] = {
            "med_list_codg": drug.drug_code,
            "med_list_name": drug.generic_name_zh,
            "cnt": cnt,
            "trdn_flag": units is not None,
            "pric": unit_price if units is None else round(unit_price / drug.units_per_pack, 4),
            "det_item_fee_sumamt": amount,
            "quantity_units": qty_units,
        }
        monitored = kb.drug(drug.drug_code)
        if monitored is not None:
            fields.update(monitored=True, atc_code=drug.atc_code, days_supply=drug.days_supply(qty_units))
    else:
        amount = 20.0 if price is None else price
        fields = {
            "med_list_codg": drug_code or "F00000000001",
            "cnt": 1,
            "pric": amount,
            "det_item_fee_sumamt": amount,
            "quantity_units": 1,
        }
    fields.update(extra)
    return ClaimLine(
        feedetl_sn=sn,
        fixmedins_code=fixmedins_code,
        institution_kind=kind,
        psn_no=psn_no,
        mdtrt_id=visit,
        med_type=med,
        fee_ocur_time=t,
        **fields,
    )


def days_later(start: datetime | str, days: float) -> datetime:
    t = datetime.fromisoformat(start) if isinstance(start, str) else start
    return t + timedelta(days=days)


def make_finding(
    rule_id: str = "early-refill", psn_no: str = "P0001", evidence: Sequence[str] = ("H1/1",), **extra: Any
) -> Finding:
    """A patient finding with its deterministic id; any field may be given in `extra`."""
    fields: dict[str, Any] = {
        "finding_id": Finding.make_id(rule_id, Scope.patient(psn_no), list(evidence)),
        "rule_id": rule_id,
        "rule_version": 1,
        "severity": Severity.HIGH,
        "subject_type": "patient",
        "psn_no": psn_no,
        "fixmedins_code": "H31000000001",
        "admdvs": "310000",
        "occurred_at": datetime(2026, 3, 1, 9),
        "evidence": sorted(evidence),
        "figures": {"days_early": 10},
        "explanation_zh": "提前购药",
        "explanation_en": "early refill",
    }
    return Finding.model_validate({**fields, **extra})
