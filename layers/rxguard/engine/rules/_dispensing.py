"""What the four supply rules share: how a fill reads in a sentence, the days a fill may
supply, the mitigations (override reasons, discharge medication) and the remarks they note,
with their text, and the one way their hits and explanations are put together."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from rxguard.engine.common import lower, text
from rxguard.engine.fills import Fill
from rxguard.engine.rules.base import Hit
from rxguard.models import Severity
from rxguard.scope import Scope

BASIS = {
    "acute": ("急性用药", "acute drug"),
    "chronic": ("慢性病用药", "chronic drug"),
    "long_term": ("长期处方", "long-term prescription"),
    "discharge": ("出院带药", "discharge medication"),
    "one_pack": ("最小包装", "one whole pack"),
}
OVERRIDE = {
    "lost": ("药品遗失", "medication lost"),
    "travel": ("外出旅行", "travel"),
    "dose_change": ("剂量调整", "dose change"),
}
_UNIT_EN = {
    "片": "tablets",
    "粒": "capsules",
    "支": "units",
    "瓶": "bottles",
    "袋": "sachets",
    "贴": "patches",
    "吸": "puffs",
    "揿": "puffs",
}


def day_text(day: int) -> str:
    return date.fromordinal(day).isoformat()


def inst(fill: Fill) -> str:
    name = fill.lines[0].fixmedins_name
    return f"{name}（{fill.fixmedins_code}）" if name else fill.fixmedins_code


def inst_en(fill: Fill) -> str:
    name = fill.lines[0].fixmedins_name
    return f"{name} ({fill.fixmedins_code})" if name else fill.fixmedins_code


def what(fill: Fill) -> tuple[str, str]:
    drug = fill.drug
    units = text(fill.units)
    unit_en = _UNIT_EN.get(drug.min_unit, drug.min_unit)
    return (
        f"{drug.generic_name_zh} {units}{drug.min_unit}",
        f"{units} {unit_en} of {drug.generic_name_en} ({drug.atc_code})",
    )


def max_dose(fill: Fill) -> tuple[str, str]:
    drug = fill.drug
    dose = f"{text(drug.max_daily_dose)}{drug.max_daily_dose_unit}"
    return f"说明书最大日剂量 {dose}/日", f"the label maximum dose of {dose}/day"


def allowed_days(
    fill: Fill, acute: float, chronic: float, long_term: float, discharge: float, pack: bool
) -> tuple[float, str]:
    """Days one fill may supply, and why: acute / chronic / long-term, then the discharge
    and one-pack allowances where they are larger."""
    if fill.long_term:
        allowed, basis = float(long_term), "long_term"
    elif fill.chronic:
        allowed, basis = float(chronic), "chronic"
    else:
        allowed, basis = float(acute), "acute"
    if fill.discharge and discharge > allowed:
        allowed, basis = float(discharge), "discharge"
    if pack and fill.pack_days > allowed:
        allowed, basis = fill.pack_days, "one_pack"
    return allowed, basis


def mitigate(severity: Severity, fill: Fill, mitigations: list[str], notes: list[str] | None = None) -> Severity:
    """Override reasons make a supply finding informational; discharge lowers it a step.
    Appends the mitigation codes, and the notes the explanation mentions. An override beyond
    override-frequency's limit is not honoured (and the text says so)."""
    if fill.override_excess and notes is not None:
        notes.append(f"override_excess:{fill.override_excess}")
    if fill.override:
        mitigations.append(f"override_reason:{fill.override}")
        if notes is not None:
            notes.append(f"override:{fill.override}")
        return Severity.LOW
    if fill.discharge:
        mitigations.append("dscg_tkdrug_flag")
        if notes is not None:
            notes.append("discharge")
        return lower(severity)
    return severity


def mitigation_text(note: str) -> tuple[str, str] | None:
    """The sentence of a note written by `mitigate` (None for other notes)."""
    if note.startswith("override:"):
        reason = note.split(":", 1)[1]
        reason_zh, reason_en = OVERRIDE.get(reason, (reason, reason))
        return (
            f"该次配药申报了特殊原因“{reason_zh}”，仅作提示。",
            f"The dispensing declares the override reason '{reason_en}': informational only.",
        )
    if note.startswith("override_excess:"):
        reason = note.split(":", 1)[1]
        reason_zh, reason_en = OVERRIDE.get(reason, (reason, reason))
        return (
            f"该次配药申报的特殊原因“{reason_zh}”已超过规定期限内允许的次数，不再降低风险等级。",
            f"The dispensing declares the override reason '{reason_en}', but beyond the number of overrides "
            "allowed in the period: it no longer lowers the severity.",
        )
    if note == "discharge":
        return "该次为出院带药，风险等级下调。", "It is discharge medication, so the severity is lowered."
    return None


# The sentence of each remark a supply rule notes on a hit (the mitigations': mitigation_text)
NOTES = {
    "long_term_ignored": (  # over-quantity
        "处方标记为长期处方，但该药品不在长期处方适用范围内，不适用84天上限。",
        "The line is flagged as a long-term prescription, but the drug is not eligible for one.",
    ),
    "covering_discharge": (  # cross-institution-repeat
        "先前一次为出院带药，仅作提示。",
        "The earlier dispensing was discharge medication: informational only.",
    ),
    "all_mitigated": (  # cumulative-oversupply
        "超量配药均申报了特殊原因或为出院带药，风险等级下调。",
        "Every dispensing that raised the stock declared an override reason or was discharge medication.",
    ),
}


def explained(zh: list[str], en: list[str], notes: Iterable[str]) -> tuple[str, str]:
    """A hit's zh and en text: its sentences, then one per note (`NOTES`, `mitigation_text`),
    in the order of the notes."""
    for note in notes:
        pair = NOTES.get(note) or mitigation_text(note)
        if pair is not None:
            zh.append(pair[0])
            en.append(pair[1])
    return "".join(zh), " ".join(en)


def patient_hit(
    psn_no: str,
    fill: Fill,
    severity: Severity,
    evidence: list[str],
    figures: dict[str, Any],
    mitigations: list[str],
    notes: list[str],
    facts: dict[str, Any],
    id_key: list[str] | None = None,
) -> Hit:
    """A patient hit located at a fill (its institution, prescriber, region and time)."""
    return Hit(
        subject=Scope.patient(psn_no),
        severity=severity,
        occurred_at=fill.time,
        evidence=evidence,
        figures=figures,
        psn_no=psn_no,
        fixmedins_code=fill.fixmedins_code,
        bilg_dr_codg=fill.lines[0].bilg_dr_codg,
        admdvs=fill.admdvs,
        mitigations=mitigations,
        notes=notes,
        facts={"fill": fill, **facts},
        id_key=id_key,
    )
