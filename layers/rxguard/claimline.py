"""The claim-line contract: one table of the fields of a claim line (docs/ingest.md).

Each field once: its name (the national 2204 fee-detail name, also the file column and
the API field), whether it is required, its type, the pattern and length its value must
have, the reason a bad value is rejected with, the Chinese column titles that mean it,
and the short name storage uses. Ingestion (`ingest.normalize`), the API's request bridge
(`api.service`), the synthetic generator, the sample maker, the storage codecs and the
test helpers read it from here; nothing else lists the columns.

Text is canonical before it is checked (`canonical_text`): NFKC-normalised (full-width
digits and letters are their ASCII selves, so `３１０００１` is the patient `310001`) and
trimmed. Names and descriptions (`free_text`) are checked the same way but kept as written
(`布地奈德福莫特罗吸入粉雾剂(Ⅱ)` stays as the catalogue spells it).
A value that is not well-formed Unicode (a lone surrogate from a `\\ud800` JSON escape) is
never canonical: it is a line-level rejection naming the field.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

Kind = Literal["text", "number", "flag", "time", "list"]

# Rejection reasons of a bad value (the full list: ingest.normalize.LINE_REASONS).
MALFORMED = "malformed"
BAD_TIME = "bad_time"
ENCODING = "encoding"

MAX_TEXT = 1000  # characters in one text field unless the field says otherwise (beyond: `too_long`)


@dataclass(frozen=True)
class ClaimField:
    """One field of the claim-line contract."""

    name: str  # the contract name: file column, JSON key, API field
    required: bool
    kind: Kind
    short: str  # storage short name of the ClaimLine attribute it becomes
    aliases: tuple[str, ...] = ()  # Chinese column titles (and English variants), lower case
    pattern: str | None = None  # what a value must match after canonicalisation (fullmatch)
    rule: str = ""  # what the pattern means, for the rejection message: "<name> <rule>: <value>"
    reason: str = MALFORMED  # the rejection reason of a value outside the pattern
    max_length: int = MAX_TEXT  # characters; beyond it: `too_long`
    attribute: str = ""  # the ClaimLine attribute (default: the name)
    upper: bool = False  # upper-cased after canonicalisation (codes)
    identity: bool = False  # identifies a patient, an institution, a drug or a pack (issue 13)
    personal: bool = False  # personal data: its value never appears in a message
    free_text: bool = False  # a name or description: checked like every text, kept as written (not NFKC)

    @property
    def target(self) -> str:
        return self.attribute or self.name

    @property
    def regex(self) -> re.Pattern[str] | None:
        return _COMPILED.get(self.name)


# File column order: the order of the sample batches and of the synthetic files.
FIELDS: tuple[ClaimField, ...] = (
    ClaimField("feedetl_sn", True, "text", "sn", ("费用明细流水号",), r".{1,64}", "is longer than 64 characters"),
    ClaimField(
        "fixmedins_code",
        True,
        "text",
        "fc",
        ("定点医药机构编号",),
        r"[A-Za-z][A-Za-z0-9]{1,39}",
        "must be a letter then letters/digits (H..., P...)",
        upper=True,
        identity=True,
    ),
    ClaimField("fixmedins_name", False, "text", "fn", ("定点医药机构名称",), free_text=True),
    ClaimField("admdvs", False, "text", "ad", ("医保区划",), r"[0-9]{6}", "must be a 6-digit region code"),
    ClaimField(
        "psn_no",
        True,
        "text",
        "psn",
        ("人员编号",),
        r"[A-Za-z0-9_.:/-]{1,64}",
        "must be 1-64 letters, digits or _ . : / -",
        identity=True,
        personal=True,
    ),
    ClaimField("mdtrt_id", False, "text", "mi", ("就诊id",)),
    ClaimField("setl_id", False, "text", "si", ("结算id",)),
    ClaimField("med_type", True, "text", "mt", ("医疗类别",), r"[0-9]{1,4}", "must be 1-4 digits (11, 14, 21, 41 ...)"),
    ClaimField("fee_ocur_time", True, "time", "t", ("费用发生时间",), reason=BAD_TIME),
    ClaimField(
        "med_list_codg",
        True,
        "text",
        "dc",
        ("医保药品编码", "医疗目录编码"),
        r"[A-Za-z0-9][A-Za-z0-9._-]{0,49}",
        "is not a drug code",
        upper=True,
        identity=True,
    ),
    ClaimField("med_list_name", False, "text", "dn", ("药品名称",), free_text=True),
    ClaimField("cnt", True, "number", "n", ("数量",)),
    ClaimField("trdn_flag", False, "flag", "tf", ("拆零标志",)),
    ClaimField("pric", True, "number", "pr", ("单价",)),
    ClaimField("det_item_fee_sumamt", True, "number", "am", ("明细项目费用总额",)),
    ClaimField("sin_dos_dscr", False, "text", "sd", ("单次剂量描述",), free_text=True),
    ClaimField("used_frqu_dscr", False, "text", "uf", ("使用频次描述",), free_text=True),
    ClaimField("prd_days", False, "number", "pd", ("周期天数",)),
    ClaimField("rxno", False, "text", "rx", ("处方号",)),
    ClaimField("bilg_dr_codg", False, "text", "dr", ("开单医生编码",)),
    ClaimField(
        "dise_codg",
        False,
        "list",
        "dx",
        ("诊断代码",),
        r"[^\x00-\x1f\x7f]{1,32}",
        "is not an ICD-10 code",
        max_length=4000,
        attribute="diagnoses",
        upper=True,
    ),
    ClaimField("dscg_tkdrug_flag", False, "flag", "dg", ("出院带药标志",)),
    ClaimField("lt_rx_flag", False, "flag", "lt", ("长期处方标志",)),
    # one 20-digit code per pack or unit sold: a 500-pack hospital line is ~10,500 characters
    ClaimField(
        "drug_trac_codg",
        False,
        "list",
        "tc",
        ("药品追溯码",),
        r"[0-9]{20}",
        "is not 20 digits",
        max_length=16_000,
        attribute="trace_codes",
        identity=True,
    ),
    ClaimField(
        "override_reason",
        False,
        "text",
        "or",
        ("超量原因",),
        rule="must be lost, travel or dose_change (遗失, 外出, 剂量调整)",
    ),
    # 2204's 原费用明细流水号: on a reversal (退费, negative cnt) the feedetl_sn of the line it cancels
    ClaimField(
        "init_feedetl_sn",
        False,
        "text",
        "rs",
        ("原费用明细流水号",),
        r".{1,64}",
        "is longer than 64 characters",
    ),
)

# ClaimLine attributes that no file carries: derived at normalization (or bookkeeping).
DERIVED_SHORT: dict[str, str] = {
    "institution_kind": "ik",
    "quantity_units": "qu",
    "monitored": "mo",
    "atc_code": "atc",
    "days_supply": "ds",
    "source_file": "sf",
    "source_line": "sl",
    "received_at": "ra",
}

BY_NAME: dict[str, ClaimField] = {f.name: f for f in FIELDS}
COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS)
REQUIRED: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required)
OPTIONAL: tuple[str, ...] = tuple(f.name for f in FIELDS if not f.required)
KNOWN_FIELDS: frozenset[str] = frozenset(COLUMNS)
TEXT_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.kind in ("text", "time"))
IDENTITY_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.identity)
FREE_TEXT_FIELDS: frozenset[str] = frozenset(f.name for f in FIELDS if f.free_text)
PERSONAL_FIELDS: frozenset[str] = frozenset({"psn_no", "certno", "psn_cert_no", "cert_no"})
MAX_LENGTH: dict[str, int] = {f.name: f.max_length for f in FIELDS}
# Column titles as Chinese systems export them -> contract name.
HEADER_ALIASES: dict[str, str] = {alias: f.name for f in FIELDS for alias in f.aliases}
# Storage short names of every ClaimLine attribute (the DynamoDB purchase-item codec).
# psn_no is in the table for completeness; the codec keeps it in the key, not the body.
STORAGE_NAMES: dict[str, str] = {**{f.target: f.short for f in FIELDS}, **DERIVED_SHORT}

_COMPILED: dict[str, re.Pattern[str]] = {f.name: re.compile(f.pattern) for f in FIELDS if f.pattern is not None}


def column_name(raw: object) -> str:
    """A column title or JSON key as its contract name (Chinese titles, case, blanks, quotes)."""
    name = str(raw).strip().strip("\ufeff\"'").strip().lower()
    return HEADER_ALIASES.get(name, name)


def well_formed(text: str) -> bool:
    """True when the text is valid Unicode (no lone surrogate: it could not be stored or hashed)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def canonical_text(text: str) -> str:
    """NFKC-normalised and trimmed (the caller has checked `well_formed`). ASCII is already NFKC."""
    if not text.isascii() and not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    return text.strip()


def check(field: str, value: str) -> str | None:
    """The rule a canonical value breaks (None when it fits the field's pattern)."""
    regex = _COMPILED.get(field)
    if regex is None or regex.fullmatch(value) is not None:
        return None
    return BY_NAME[field].rule
