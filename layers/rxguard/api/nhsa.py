"""The national platform's 3101/3102 shapes (明细审核事前/事中分析服务), so that an HIS that
already calls the national service can call us unchanged.

Request: `{"data": {"patient_dtos": [...], "task_id", "trig_scen", "rule_ids", "syscode"}}`
or the whole message envelope `{"infno": "3101", ..., "input": {"data": {...}}}`. A patient
carries `fsi_encounter_dtos` (visits), a visit `fsi_order_dtos` (prescription/order lines)
and `fsi_diagnose_dtos`. HIS systems differ in details, so the models are lenient where
the platform's own clients are: unknown fields are ignored, `""` counts as absent, a single
object is accepted where a list is expected, numbers may come as strings.

Answer: `{"infcode": 0, "err_msg": null, "output": {"result": [violation...]}}`, one
violation per rule hit with `judge_result_detail_dtos` naming the orders (`rx_id`).

Dictionary values we answer with (the platform leaves them to the local dictionary):
- `sev_deg`: "1" high (明确违规, block), "2" medium (高度可疑, warn), "3" low (提示, pass)
- `vola_bhvr_type`: the behaviour code each rule module declares (rxguard.engine.rules)
- `vola_amt_stas`: "1" computed (the amount of the orders the rule names)
- `vola_item_type`: "1" drug order
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from rxguard.engine.rules import behaviour_code
from rxguard.models import Severity

SEV_DEG: dict[Severity, str] = {Severity.HIGH: "1", Severity.MEDIUM: "2", Severity.LOW: "3"}


def _blank_is_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _as_list(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, dict):
        return [value]
    return value


def _flag(value: Any) -> Any:
    value = _blank_is_none(value)
    if value is None:
        return False
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return value.strip() == "1"
    return value


OptText = Annotated[Annotated[str, Field(max_length=500)] | None, BeforeValidator(_blank_is_none)]
OptNumber = Annotated[float | None, BeforeValidator(_blank_is_none)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Id = Annotated[str, Field(min_length=1, max_length=64)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class NhsaDiagnose(_Lenient):
    dise_id: OptText = None
    inout_dise_type: OptText = None
    maindise_flag: OptText = None
    dise_codg: OptText = Field(default=None, description="ICD-10 code")
    dise_name: OptText = None


class NhsaOrder(_Lenient):
    rx_id: Id = Field(description="处方(医嘱)标识: the order line id (becomes feedetl_sn)")
    rxno: OptText = None
    grpno: OptText = None
    long_drord_flag: Flag = Field(default=False, description="长期医嘱 1/0 (read as a long-term prescription)")
    hilist_type: OptText = None
    chrg_type: OptText = None
    drord_bhvr: OptText = Field(default=None, description='医嘱行为; "1" discharge medication (出院带药)')
    hilist_code: Id = Field(description="医保目录代码: national drug code")
    hilist_name: OptText = None
    cnt: float = Field(description="quantity (packs)")
    pric: float = Field(description="unit price")
    sumamt: OptNumber = Field(default=None, description="line total; cnt x pric when absent")
    spec: OptText = None
    spec_unt: OptText = None
    drord_begn_date: OptText = Field(default=None, description="order start, yyyy-MM-dd HH:mm:ss")
    drord_dr_codg: OptText = Field(default=None, description="prescriber")
    curr_drord_flag: OptText = Field(
        default=None, description='"0": an earlier order sent as context (checked, not answered for)'
    )
    # rxguard extensions (absent from 3101): traceability codes, split-pack flag, override
    drug_trac_codg: Annotated[list[str] | str | None, BeforeValidator(_blank_is_none)] = None
    trdn_flag: Flag = False
    override_reason: OptText = None


class NhsaEncounter(_Lenient):
    mdtrt_id: Id = Field(description="就诊标识: the visit")
    medins_id: Id = Field(description="医疗服务机构标识: the institution (fixmedins_code)")
    medins_name: OptText = None
    medins_admdvs: OptText = None
    medins_type: OptText = None
    adm_date: OptText = None
    dscg_date: OptText = None
    dscg_main_dise_codg: OptText = None
    dscg_main_dise_name: OptText = None
    dr_codg: OptText = None
    med_mdtrt_type: OptText = Field(default=None, description="1 outpatient, 2 inpatient, 3 purchase")
    med_type: OptText = None
    setl_id: OptText = None
    fsi_diagnose_dtos: Annotated[list[NhsaDiagnose], BeforeValidator(_as_list)] = Field(default_factory=list)
    fsi_order_dtos: Annotated[list[NhsaOrder], BeforeValidator(_as_list)] = Field(min_length=1)


class NhsaPatient(_Lenient):
    patn_id: Id = Field(description="参保人标识 (psn_no)")
    patn_name: OptText = None
    gend: OptText = None
    brdy: OptText = None
    poolarea: OptText = None
    curr_mdtrt_id: OptText = None
    fsi_encounter_dtos: Annotated[list[NhsaEncounter], BeforeValidator(_as_list)] = Field(min_length=1)


class NhsaData(_Lenient):
    syscode: OptText = None
    task_id: OptText = None
    trig_scen: OptText = None
    rule_ids: Annotated[list[str], BeforeValidator(_as_list)] = Field(default_factory=list)
    patient_dtos: Annotated[list[NhsaPatient], BeforeValidator(_as_list)] = Field(min_length=1)


class NhsaRequest(_Lenient):
    """3101/3102 input as the `data` node (nothing beside it: the envelope has `input`)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    data: NhsaData


class NhsaInput(_Lenient):
    data: NhsaData


class NhsaEnvelope(_Lenient):
    """3101/3102 input inside the platform's message envelope."""

    infno: OptText = None
    msgid: OptText = None
    input: NhsaInput


class NhsaViolationDetail(BaseModel):
    jrd_id: str
    patn_id: str
    mdtrt_id: str
    rx_id: str
    vola_item_type: str = "1"
    vola_amt: float


class NhsaViolation(BaseModel):
    jr_id: str
    rule_id: str
    rule_name: str
    vola_cont: str
    patn_id: str
    mdtrt_id: str
    judge_result_detail_dtos: list[NhsaViolationDetail]
    vola_amt: float
    vola_amt_stas: str = "1"
    sev_deg: str
    vola_evid: str
    vola_bhvr_type: str
    task_id: str


class NhsaOutput(BaseModel):
    result: list[NhsaViolation]


class NhsaResponse(BaseModel):
    infcode: int = 0
    err_msg: str | None = None
    output: NhsaOutput


def nhsa_data(body: NhsaRequest | NhsaEnvelope) -> tuple[NhsaData, str]:
    """The data node and the path prefix naming fields in errors."""
    if isinstance(body, NhsaEnvelope):
        return body.input.data, "input.data"
    return body.data, "data"


def order_record(
    patient: NhsaPatient, encounter: NhsaEncounter, order: NhsaOrder, fallback_time: str
) -> tuple[dict[str, object], dict[str, str]]:
    """One order as a claim-line record (docs/design.md field names) and, for errors, the 3101
    field each record field came from (relative to the order, or "../" for the visit)."""
    diagnoses = [d.dise_codg for d in encounter.fsi_diagnose_dtos if d.dise_codg]
    if encounter.dscg_main_dise_codg:
        diagnoses.insert(0, encounter.dscg_main_dise_codg)
    med_type = encounter.med_type or ("41" if encounter.med_mdtrt_type == "3" else "11")
    total = order.sumamt if order.sumamt is not None else round(order.cnt * order.pric, 2)
    record: dict[str, object] = {
        "feedetl_sn": order.rx_id,
        "fixmedins_code": encounter.medins_id,
        "fixmedins_name": encounter.medins_name,
        "admdvs": encounter.medins_admdvs or patient.poolarea,
        "psn_no": patient.patn_id,
        "mdtrt_id": encounter.mdtrt_id,
        "setl_id": encounter.setl_id,
        "med_type": med_type,
        "fee_ocur_time": order.drord_begn_date or encounter.adm_date or fallback_time,
        "med_list_codg": order.hilist_code,
        "med_list_name": order.hilist_name,
        "cnt": order.cnt,
        "trdn_flag": order.trdn_flag,
        "pric": order.pric,
        "det_item_fee_sumamt": total,
        "rxno": order.rxno,
        "bilg_dr_codg": order.drord_dr_codg or encounter.dr_codg,
        "dise_codg": diagnoses,
        "dscg_tkdrug_flag": order.drord_bhvr == "1",
        "lt_rx_flag": order.long_drord_flag,
        "drug_trac_codg": order.drug_trac_codg,
        "override_reason": order.override_reason,
    }
    fields = {
        "feedetl_sn": "rx_id",
        "fixmedins_code": "../medins_id",
        "fixmedins_name": "../medins_name",
        "admdvs": "../medins_admdvs",
        "psn_no": "../../patn_id",
        "mdtrt_id": "../mdtrt_id",
        "med_type": "../med_type",
        "fee_ocur_time": "drord_begn_date" if order.drord_begn_date else "../adm_date",
        "med_list_codg": "hilist_code",
        "med_list_name": "hilist_name",
        "det_item_fee_sumamt": "sumamt",
        "bilg_dr_codg": "drord_dr_codg",
        "dise_codg": "../fsi_diagnose_dtos",
        "lt_rx_flag": "long_drord_flag",
    }
    return {k: v for k, v in record.items() if v is not None}, fields


def resolve_field(order_path: str, relative: str) -> str:
    """`data.patient_dtos[0].fsi_encounter_dtos[1].fsi_order_dtos[2]` + `../medins_id`
    -> `data.patient_dtos[0].fsi_encounter_dtos[1].medins_id`."""
    path = order_path
    while relative.startswith("../"):
        relative = relative[3:]
        path = path.rsplit(".", 1)[0] if "." in path else ""
    return f"{path}.{relative}" if path else relative


def behaviour_type(rule_id: str) -> str:
    return behaviour_code(rule_id)


def truncate(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
