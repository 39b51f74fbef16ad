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

Dictionary values (`rules/national.yaml`, `NationalDictionary`; docs/api.md):
- `sev_deg`: the platform's 严重程度, "1" 明确违规 (high, block), "2" 高度可疑 (medium, warn),
  "3" 轻度可疑 (low, pass);
- `trig_scen`: the platform's 触发场景 codes -> the scene whose rules a check evaluates;
- `rule_ids`: our rule ids or the platform's rule codes listed in the table;
- `vola_bhvr_type`: no national dictionary is published; ours, in the table;
- `vola_amt_stas`: "1" computed (the amount of the orders the rule names);
- `vola_item_type`: "1" drug order.

3103 (医生对提醒的处理结果): `{"input": {"data": {"warn_type", "warns": [{"warn_rslt_id"
(= a jr_id), "dspo_way" 1 继续执行 / 2 返回修改, "dspo_way_rea"}]}}}`; a reason is required
when the prescriber continues.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from rxguard.engine.rules import behaviour_code
from rxguard.models import Scene, Severity

NATIONAL_FILE = "national.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeverityCode(_Strict):
    code: Annotated[str, Field(pattern=r"^\d{1,2}$")]
    name_zh: str


class TriggerScene(_Strict):
    name_zh: str
    scene: Scene


class RuleCodes(_Strict):
    vola_bhvr_type: Annotated[str, Field(pattern=r"^\d{1,4}$")]
    bhvr_name_zh: str
    national_codes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list)


class NationalDictionary(_Strict):
    """`rules/national.yaml`: the platform's dictionaries and our mapping tables."""

    sev_deg: dict[Severity, SeverityCode]
    trig_scen: dict[str, TriggerScene]
    default_scene: Scene = Scene.PRE
    rules: dict[str, RuleCodes]
    other_behaviour: RuleCodes

    @model_validator(mode="after")
    def _complete(self) -> NationalDictionary:
        missing = [s.value for s in Severity if s not in self.sev_deg]
        if missing:
            raise ValueError(f"sev_deg lacks {', '.join(missing)}")
        seen: dict[str, str] = {}
        for rule_id, codes in self.rules.items():
            for code in codes.national_codes:
                if code in seen or code in self.rules:
                    raise ValueError(f"rules.{rule_id}.national_codes: {code} also names {seen.get(code, code)}")
                seen[code] = rule_id
        return self

    @property
    def rule_of_code(self) -> dict[str, str]:
        return {code: rule_id for rule_id, codes in self.rules.items() for code in codes.national_codes}

    def sev_deg_of(self, severity: Severity) -> str:
        return self.sev_deg[severity].code

    def behaviour_type(self, rule_id: str) -> str:
        return self.rules.get(rule_id, self.other_behaviour).vola_bhvr_type

    def resolve_rule(self, value: str) -> str | None:
        """Our rule id for one of ours or a platform rule code; None when neither."""
        value = value.strip()
        if value in self.rules:
            return value
        return self.rule_of_code.get(value)

    def scene_of(self, trig_scen: str | None) -> Scene | None:
        """The scene of a trigger code; the default without one; None for an unknown code."""
        if trig_scen is None:
            return self.default_scene
        entry = self.trig_scen.get(trig_scen.strip())
        return None if entry is None else entry.scene


class NationalDictionaryError(ValueError):
    """`national.yaml` is unreadable or invalid; names the file and the field."""


def load_dictionary(path: Path) -> NationalDictionary:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise NationalDictionaryError(f"{path}: {exc}") from exc
    try:
        return NationalDictionary.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        raise NationalDictionaryError(f"{path}: {where}: {err['msg']}") from exc


@cache
def dictionary(rules_dir: Path | None = None) -> NationalDictionary:
    """The dictionary beside the rule base (`rules/national.yaml`), loaded once a process."""
    from rxguard.kb import default_rules_dir

    return load_dictionary((rules_dir or default_rules_dir()) / NATIONAL_FILE)


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


def _code_text(value: Any) -> Any:
    """A dictionary code as text: 1 and "1" alike (HIS systems send either)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) else value


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


# The platform's message shapes, shared by 3101/3102 and 3103: a request is a `data` node,
# alone or inside an envelope's `input`; an answer is `infcode`, `err_msg` and an `output`.
class _DataNode[Data: BaseModel](_Lenient):
    data: Data


class _Envelope[Input: BaseModel](_Lenient):
    infno: OptText = None
    msgid: OptText = None
    input: Input


class _Answer[Output: BaseModel](BaseModel):
    infcode: int = 0
    err_msg: str | None = None
    output: Output


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


class NhsaRequest(_DataNode[NhsaData]):
    """3101/3102 input as the `data` node (nothing beside it: the envelope has `input`)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class NhsaInput(_DataNode[NhsaData]):
    pass


class NhsaEnvelope(_Envelope[NhsaInput]):
    """3101/3102 input inside the platform's message envelope."""


class NhsaWarn(_Lenient):
    warn_rslt_id: Id = Field(description="提醒结果标识: the jr_id a 3101/3102 answer gave")
    dspo_way: Annotated[Literal["1", "2"], BeforeValidator(_code_text)] = Field(
        description="处理方式: 1 继续执行, 2 返回修改"
    )
    dspo_way_rea: OptText = Field(default=None, description="处理原因: required when dspo_way is 1")


class NhsaDispositionData(_Lenient):
    warn_type: OptText = Field(default=None, description="提醒类型 (kept as given)")
    warns: Annotated[list[NhsaWarn], BeforeValidator(_as_list)] = Field(min_length=1, max_length=200)


class NhsaDispositionRequest(_DataNode[NhsaDispositionData]):
    """3103 input as the `data` node."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class NhsaDispositionInput(_DataNode[NhsaDispositionData]):
    pass


class NhsaDispositionEnvelope(_Envelope[NhsaDispositionInput]):
    """3103 input inside the platform's message envelope."""


class NhsaDispositionResult(BaseModel):
    warn_rslt_id: str
    dspo_way: str
    rule_id: str


class NhsaDispositionOutput(BaseModel):
    result: list[NhsaDispositionResult]


class NhsaDispositionResponse(_Answer[NhsaDispositionOutput]):
    pass


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
    # rxguard extensions (absent from 3101; clients ignore unknown fields)
    next_fill_on: str | None = None  # yyyy-MM-dd: the first day the order would pass the supply rules
    prev_fill_date: str | None = None  # NCPDP 530-FU analogue
    prev_fill_cnt: float | None = None  # 531-FV
    prev_fill_medins_id: str | None = None  # 529-FT
    prev_fill_dr_codg: str | None = None  # 533-FX


class NhsaOutput(BaseModel):
    result: list[NhsaViolation]


class NhsaResponse(_Answer[NhsaOutput]):
    pass


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
    table = dictionary()
    if rule_id in table.rules:
        return table.behaviour_type(rule_id)
    return behaviour_code(rule_id)  # the rule module's own code (rxguard.engine.rules); 99 for an unknown rule


def truncate(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
