"""Normalization of one raw claim record (CSV row, JSON object) into a `ClaimLine`.

`normalize_record` validates every field of docs/design.md "Claim-line format" itself and then
builds the model with `model_construct` (no second validation: this is the hot path of a
1,000,000-line batch). A bad record raises `LineRejected` carrying the `Rejection`: the
first problem found, naming file, line, field and a reason code (see docs/ingest.md).

psn_no is personal data: it never appears in a rejection message or a log line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from rxguard import claimline as contract
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, InstitutionKind, OverrideReason, Rejection

# Reason codes (docs/ingest.md). Line-level:
MISSING = "missing"  # required field absent or empty
MALFORMED = "malformed"  # a value of the wrong shape (not a number, bad code, bad flag ...)
NOT_POSITIVE = "not_positive"  # cnt <= 0, pric < 0, det_item_fee_sumamt < 0
AMOUNT_MISMATCH = "amount_mismatch"  # |det_item_fee_sumamt - cnt x pric| > 0.01 yuan
BAD_TIME = "bad_time"  # fee_ocur_time not a date-time we read
DUPLICATE = "duplicate"  # fixmedins_code + feedetl_sn seen earlier in the batch
RAGGED_ROW = "ragged_row"  # CSV row with a different number of fields than the header
ENCODING = "encoding"  # bytes not valid in the file's encoding
TOO_LONG = "too_long"  # line or field beyond the size caps
UNKNOWN_FIELD_TYPE = "unknown_field_type"  # JSON object/list/bool where a scalar is expected
FUTURE_TIME = "future_time"  # fee_ocur_time after now + the clock skew
TOO_OLD = "too_old"  # fee_ocur_time older than the history retention
# Whole-file (Rejection.line is None):
FILE_MISSING = "file_missing"
FILE_EMPTY = "empty"
FILE_BINARY = "binary"
FILE_NO_HEADER = "no_header"
FILE_NOT_JSON = "not_json"
FILE_SEVERAL_LISTS = "several_lists"  # a JSON document with more than one non-empty claim list

LINE_REASONS = (
    MISSING,
    MALFORMED,
    NOT_POSITIVE,
    AMOUNT_MISMATCH,
    BAD_TIME,
    DUPLICATE,
    RAGGED_ROW,
    ENCODING,
    TOO_LONG,
    UNKNOWN_FIELD_TYPE,
    FUTURE_TIME,
    TOO_OLD,
)


@dataclass(frozen=True)
class TimeWindow:
    """When a dispensing may plausibly have happened, seen from `now` (China time, naive)."""

    now: datetime
    max_future: timedelta = timedelta(minutes=10)  # clock skew between an HIS and us
    max_age: timedelta | None = None  # the history retention: older lines would expire at once

    @classmethod
    def around(cls, now: datetime, *, history_days: int | None, skew_minutes: float = 10) -> TimeWindow:
        if now.tzinfo is not None:
            now = now.astimezone(_CHINA).replace(tzinfo=None)
        age = timedelta(days=history_days) if history_days else None
        return cls(now=now, max_future=timedelta(minutes=skew_minutes), max_age=age)


AMOUNT_TOLERANCE = 0.01  # yuan: rounding of cnt x pric to the fen
MAX_CNT = 1_000_000.0  # an implausible quantity is a data error, not a purchase
MIN_CNT = 1e-6  # below: not a quantity (1e-320 tablets is "dispensed 0 tablets")
MAX_PRICE = 1e7  # yuan a unit, as the API bounds it: 1e308 would be "spent inf yuan"
MAX_AMOUNT = 1e10  # yuan a line (MAX_CNT x a 10,000-yuan pack)
MAX_PRD_DAYS = 3650.0  # ten years of supply on one prescription is a data error

# The field table is the claim-line contract (rxguard.claimline); these names stay for callers.
MAX_TEXT = contract.MAX_TEXT
MAX_TEXT_BY_FIELD = {f.name: f.max_length for f in contract.FIELDS if f.max_length != MAX_TEXT}
REQUIRED = contract.REQUIRED
OPTIONAL = contract.OPTIONAL
FIELDS = contract.COLUMNS
KNOWN_FIELDS = contract.KNOWN_FIELDS
HEADER_ALIASES = contract.HEADER_ALIASES
PERSONAL_FIELDS = contract.PERSONAL_FIELDS

OVERRIDE_REASONS: dict[str, OverrideReason] = {
    "lost": "lost",
    "遗失": "lost",
    "丢失": "lost",
    "travel": "travel",
    "外出": "travel",
    "出差": "travel",
    "旅行": "travel",
    "dose_change": "dose_change",
    "剂量调整": "dose_change",
}
_FLAGS: dict[object, bool] = {"": False, "0": False, "1": True, 0: False, 1: True}  # False == 0, True == 1

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INVISIBLE = re.compile(r"[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")
_SPLIT_TRACE = re.compile(r"[,，;；\s]+")
_SPLIT_DX = re.compile(r"[;；,，]+")
# 2025/8/1 9:05:00, 2025-08-01 09:05, 2025.08.01 09:05:00
_LOOSE_TIME = re.compile(
    r"(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})(?:日\s*|[ T]\s*)(\d{1,2})[:时](\d{1,2})(?:[:分](\d{1,2})秒?)?(\.\d+)?"
)
_CHINA = timezone(timedelta(hours=8))
_KINDS = {
    "H": InstitutionKind.HOSPITAL,
    "h": InstitutionKind.HOSPITAL,
    "P": InstitutionKind.PHARMACY,
    "p": InstitutionKind.PHARMACY,
}


class LineRejected(Exception):
    """A record could not be normalized; `.rejection` says where and why."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.file}:{rejection.line} {rejection.field} {rejection.reason}: {rejection.message}")
        self.rejection = rejection


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", bool: "boolean"}.get(type(value), type(value).__name__)


def show(value: object, limit: int = 40) -> str:
    """A value for a message: repr, shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Ctx:
    """What a rejection needs to name the line; built only when a line is rejected."""

    __slots__ = ("file", "line", "record")

    def __init__(self, file: str, line: int, record: Mapping[str, Any]) -> None:
        self.file, self.line, self.record = file, line, record

    def reject(self, field: str | None, reason: str, message: str) -> LineRejected:
        code, sn = self.record.get("fixmedins_code"), self.record.get("feedetl_sn")
        line_id = None
        if isinstance(code, str | int) and isinstance(sn, str | int) and not isinstance(code, bool):
            code_s, sn_s = str(code).strip(), str(sn).strip()
            ok = code_s and sn_s and len(code_s) + len(sn_s) < 120 and contract.well_formed(code_s + sn_s)
            if ok and not _CONTROL.search(code_s + sn_s):
                line_id = f"{code_s}/{sn_s}"
        where = f"line {line_id}: " if line_id else ""
        return LineRejected(
            Rejection(
                file=self.file, line=self.line, field=field, reason=reason, message=where + message, line_id=line_id
            )
        )


def _text(ctx: _Ctx, rec: Mapping[str, Any], field: str, required: bool) -> str | None:
    """One text field, canonical (claimline.canonical_text) and checked; the contract's one place
    for text: well-formed Unicode, NFKC, trimmed, within its length, no control or invisible characters."""
    value = rec.get(field)
    if value is None:
        text = ""
    elif type(value) is str:
        if not contract.well_formed(value):  # a lone surrogate (JSON "\ud800"): cannot be stored or hashed
            raise ctx.reject(field, ENCODING, f"{field} is not well-formed Unicode (a lone surrogate)")
        text = value.strip() if field in _FREE_TEXT else contract.canonical_text(value)
        if text and len(text) <= MAX_TEXT and text.isprintable() and "\ufffd" not in text:
            return text  # the common case, checked in C
    elif type(value) is int:
        text = str(value)
    elif type(value) is float or type(value) is Decimal:
        if not math.isfinite(value):
            raise ctx.reject(field, MALFORMED, f"{field} is not a finite number: {show(value)}")
        number = float(value)
        text = str(int(value)) if abs(number) < 1e21 and number.is_integer() else str(value)
    else:
        raise ctx.reject(field, UNKNOWN_FIELD_TYPE, f"{field} is a JSON {_json_type(value)}, expected text")
    if not text:
        if required:
            raise ctx.reject(field, MISSING, f"{field} is required")
        return None
    limit = MAX_TEXT_BY_FIELD.get(field, MAX_TEXT)
    if len(text) > limit:
        raise ctx.reject(field, TOO_LONG, f"{field} has {len(text)} characters (at most {limit})")
    if _CONTROL.search(text):
        shown = "(value withheld)" if field in PERSONAL_FIELDS else show(text)
        raise ctx.reject(field, MALFORMED, f"{field} contains control characters: {shown}")
    if "\ufffd" in text:
        raise ctx.reject(field, ENCODING, f"{field} holds bytes that are not valid in the file's encoding")
    if _INVISIBLE.search(text):  # zero-width, BOM, bidi: "P\u200b001" must not pass as another patient
        raise ctx.reject(field, MALFORMED, f"{field} contains invisible format characters (zero-width, BOM, bidi)")
    return text


# Checked in this order: required fields first, so a line names its most basic problem.
TEXT_FIELDS = tuple(sorted(contract.TEXT_FIELDS, key=lambda name: name not in contract.REQUIRED))
_REQUIRED_SET = frozenset(REQUIRED)
_canonical = contract.canonical_text
_FREE_TEXT = contract.FREE_TEXT_FIELDS


def _texts(ctx: _Ctx, rec: Mapping[str, Any]) -> dict[str, str | None]:
    """Every text field, canonical: the common cases (empty, plain printable text) inline,
    the rest through `_text`. Hot path: one call a line instead of one a field."""
    out: dict[str, str | None] = {}
    get = rec.get
    for name in TEXT_FIELDS:
        value = get(name)
        if type(value) is str:
            text = value.strip()
            if text and len(text) <= MAX_TEXT and text.isprintable() and "\ufffd" not in text:
                out[name] = text if text.isascii() or name in _FREE_TEXT else _canonical(text)
                continue
            if not text and name not in _REQUIRED_SET:
                out[name] = None
                continue
        elif value is None and name not in _REQUIRED_SET:
            out[name] = None
            continue
        out[name] = _text(ctx, rec, name, name in _REQUIRED_SET)
    return out


def _pattern(ctx: _Ctx, field: str, value: str) -> None:
    """The contract's pattern of a field; outside it: rejected with the field's reason and rule."""
    rule = contract.check(field, value)
    if rule is not None:
        spec = contract.BY_NAME[field]
        shown = " (value withheld)" if spec.personal else f": {show(value)}"
        raise ctx.reject(field, spec.reason, f"{field} {rule}{shown}")


def _number(ctx: _Ctx, rec: Mapping[str, Any], field: str, required: bool) -> float | None:
    value = rec.get(field)
    if type(value) is float or type(value) is int or type(value) is Decimal:
        try:
            number = float(value)
        except OverflowError:
            raise ctx.reject(field, MALFORMED, f"{field} is out of range: {show(value)}") from None
    elif value is None or (type(value) is str and not value.strip()):
        if required:
            raise ctx.reject(field, MISSING, f"{field} is required")
        return None
    elif type(value) is str:
        try:
            number = float(value)
        except ValueError:
            try:  # 1,234.50 / ¥37.20 / ￥37.20 as spreadsheets export them
                number = float(value.strip().lstrip("¥￥").replace(",", ""))
            except ValueError:
                raise ctx.reject(field, MALFORMED, f"{field} is not a number: {show(value)}") from None
    else:
        raise ctx.reject(field, UNKNOWN_FIELD_TYPE, f"{field} is a JSON {_json_type(value)}, expected a number")
    if not math.isfinite(number):
        raise ctx.reject(field, MALFORMED, f"{field} is not a finite number: {show(value)}")
    return number


def _flag(ctx: _Ctx, rec: Mapping[str, Any], field: str) -> bool:
    value = rec.get(field)
    if value is None:
        return False
    if type(value) is str:
        value = value.strip()
    elif (type(value) is float or type(value) is Decimal) and value in (0, 1):
        value = int(value)
    elif type(value) not in (int, bool, float, Decimal):
        raise ctx.reject(field, UNKNOWN_FIELD_TYPE, f"{field} is a JSON {_json_type(value)}, expected 0 or 1")
    try:
        return _FLAGS[value]
    except KeyError:
        raise ctx.reject(field, MALFORMED, f"{field} must be 0, 1 or empty, not {show(value)}") from None


def parse_time(text: str) -> datetime | None:
    """`YYYY-MM-DD HH:MM:SS`, ISO 'T', '/' or '.' separators, 2025年9月2日 9:10:00, or
    YYYYMMDDHHMMSS; China time.
    Returns None when unreadable. Zone-aware values are converted to China time (UTC+8)."""
    value: datetime | None = None
    if len(text) == 19 and text[4] == "-" and text[10] in " T":
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return None
    elif len(text) == 14 and text.isdigit():
        try:
            value = datetime(
                int(text[:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]), int(text[12:])
            )
        except ValueError:
            return None
    else:
        m = _LOOSE_TIME.fullmatch(text)
        if m is not None:
            y, mo, d, h, mi, s, frac = m.groups()
            try:
                micro = round(float(frac) * 1_000_000) if frac else 0
                value = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0), min(micro, 999_999))
            except ValueError:
                return None
        elif len(text) > 19 and text[4] == "-" and text[10] in " T":
            try:  # fractions and zone offsets
                value = datetime.fromisoformat(text)
            except ValueError:
                return None
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(_CHINA).replace(tzinfo=None)
    if not 1990 <= value.year <= 2100:
        return None
    return value


def normalize_record(
    record: Mapping[str, object],
    kb: KnowledgeBase,
    *,
    file: str,
    line: int,
    default_admdvs: str | None = None,
    window: TimeWindow | None = None,
) -> ClaimLine:
    """Validate and normalize one record (field names of docs/design.md; unknown fields ignored).

    Raises `LineRejected` with the first problem found. `line` is the 1-based physical line
    where the record starts (for a JSON document: the element index + 1)."""
    rec: Mapping[str, Any] = record
    if not KNOWN_FIELDS.issuperset(rec):
        renamed: dict[str, Any] = {}
        for key, value in record.items():
            name = str(key).strip().lower()
            renamed.setdefault(HEADER_ALIASES.get(name, name), value)  # Chinese titles too
        rec = renamed
    ctx = _Ctx(file, line, rec)
    texts = _texts(ctx, rec)

    feedetl_sn = texts["feedetl_sn"]
    fixmedins_code = texts["fixmedins_code"]
    assert feedetl_sn is not None and fixmedins_code is not None
    fixmedins_code = fixmedins_code.upper()  # codes are upper-case: h31000001 is H31000001
    _pattern(ctx, "feedetl_sn", feedetl_sn)
    _pattern(ctx, "fixmedins_code", fixmedins_code)
    psn_no = texts["psn_no"]
    assert psn_no is not None
    _pattern(ctx, "psn_no", psn_no)
    med_type = texts["med_type"]
    assert med_type is not None
    _pattern(ctx, "med_type", med_type)

    time_text = texts["fee_ocur_time"]
    assert time_text is not None
    fee_ocur_time = parse_time(time_text)
    if fee_ocur_time is None:
        raise ctx.reject(
            "fee_ocur_time", BAD_TIME, f"fee_ocur_time is not 'YYYY-MM-DD HH:MM:SS' (1990-2100): {show(time_text)}"
        )
    if window is not None:
        _plausible_time(ctx, fee_ocur_time, window)

    med_list_codg = texts["med_list_codg"]
    assert med_list_codg is not None
    med_list_codg = med_list_codg.upper()
    _pattern(ctx, "med_list_codg", med_list_codg)

    cnt = _number(ctx, rec, "cnt", True)
    pric = _number(ctx, rec, "pric", True)
    total = _number(ctx, rec, "det_item_fee_sumamt", True)
    assert cnt is not None and pric is not None and total is not None
    init_feedetl_sn = texts["init_feedetl_sn"]
    if init_feedetl_sn is not None:
        _pattern(ctx, "init_feedetl_sn", init_feedetl_sn)
    reversal = init_feedetl_sn is not None and cnt < 0  # 退费: cancels (part of) the line it names
    if reversal:
        if init_feedetl_sn == feedetl_sn:
            raise ctx.reject(
                "init_feedetl_sn", MALFORMED, "init_feedetl_sn names the line itself: a line cannot cancel itself"
            )
        if total > 0:
            raise ctx.reject(
                "det_item_fee_sumamt", NOT_POSITIVE, f"det_item_fee_sumamt of a reversal must be <= 0: {total:g}"
            )
    elif cnt <= 0:
        raise ctx.reject(
            "cnt", NOT_POSITIVE, f"cnt must be > 0 (a refund is a negative line with init_feedetl_sn): {cnt:g}"
        )
    if abs(cnt) > MAX_CNT:
        raise ctx.reject("cnt", MALFORMED, f"cnt {cnt:g} is implausible (at most {MAX_CNT:g})")
    if abs(cnt) < MIN_CNT:
        raise ctx.reject("cnt", MALFORMED, f"cnt {cnt:g} is implausible (at least {MIN_CNT:g})")
    if pric < 0:
        raise ctx.reject("pric", NOT_POSITIVE, f"pric must be >= 0: {pric:g}")
    if pric > MAX_PRICE:
        raise ctx.reject("pric", MALFORMED, f"pric {pric:g} is implausible (at most {MAX_PRICE:g} yuan)")
    if total < 0 and not reversal:
        raise ctx.reject("det_item_fee_sumamt", NOT_POSITIVE, f"det_item_fee_sumamt must be >= 0: {total:g}")
    if abs(total) > MAX_AMOUNT:
        raise ctx.reject(
            "det_item_fee_sumamt", MALFORMED, f"det_item_fee_sumamt {total:g} is implausible (at most {MAX_AMOUNT:g})"
        )
    if abs(total - cnt * pric) > AMOUNT_TOLERANCE + 1e-9:
        raise ctx.reject(
            "det_item_fee_sumamt",
            AMOUNT_MISMATCH,
            f"det_item_fee_sumamt {total:.2f} differs from cnt x pric = {cnt:g} x {pric:g} = {cnt * pric:.2f}",
        )

    trdn_flag = _flag(ctx, rec, "trdn_flag")
    dscg_tkdrug_flag = _flag(ctx, rec, "dscg_tkdrug_flag")
    lt_rx_flag = _flag(ctx, rec, "lt_rx_flag")

    admdvs = texts["admdvs"] or default_admdvs
    if admdvs is not None:
        _pattern(ctx, "admdvs", admdvs)

    prd_days = _number(ctx, rec, "prd_days", False)
    if prd_days is not None and not 0 <= prd_days <= MAX_PRD_DAYS:
        raise ctx.reject("prd_days", MALFORMED, f"prd_days must be 0-{MAX_PRD_DAYS:g}: {prd_days:g}")

    trace_codes = _trace_codes(ctx, rec)
    diagnoses = _diagnoses(ctx, rec)

    override_text = texts["override_reason"]
    override_reason = None
    if override_text is not None:
        override_reason = OVERRIDE_REASONS.get(override_text.lower())
        if override_reason is None:
            rule = contract.BY_NAME["override_reason"].rule
            raise ctx.reject("override_reason", MALFORMED, f"override_reason {rule}: {show(override_text)}")

    mdtrt_id = texts["mdtrt_id"] or f"{fixmedins_code}:{fee_ocur_time.date().isoformat()}"

    drug = kb.drug(med_list_codg)
    if drug is None:
        quantity_units = cnt
        days_supply = None
        atc_code = None
    else:
        quantity_units = cnt if trdn_flag else cnt * drug.units_per_pack
        days_supply = drug.days_supply(quantity_units)
        atc_code = drug.atc_code

    values = dict(
        feedetl_sn=feedetl_sn,
        fixmedins_code=fixmedins_code,
        fixmedins_name=texts["fixmedins_name"],
        institution_kind=_KINDS.get(fixmedins_code[0], InstitutionKind.OTHER),  # InstitutionKind.from_code
        admdvs=admdvs,
        psn_no=psn_no,
        mdtrt_id=mdtrt_id,
        setl_id=texts["setl_id"],
        med_type=med_type,
        fee_ocur_time=fee_ocur_time,
        med_list_codg=med_list_codg,
        med_list_name=texts["med_list_name"],
        cnt=cnt,
        trdn_flag=trdn_flag,
        pric=pric,
        det_item_fee_sumamt=total,
        quantity_units=quantity_units,
        sin_dos_dscr=texts["sin_dos_dscr"],
        used_frqu_dscr=texts["used_frqu_dscr"],
        prd_days=prd_days,
        rxno=texts["rxno"],
        bilg_dr_codg=texts["bilg_dr_codg"],
        diagnoses=diagnoses,
        dscg_tkdrug_flag=dscg_tkdrug_flag,
        lt_rx_flag=lt_rx_flag,
        override_reason=override_reason,
        init_feedetl_sn=init_feedetl_sn if reversal else None,
        trace_codes=trace_codes,
        monitored=drug is not None,
        atc_code=atc_code,
        days_supply=days_supply,
        source_file=file,
        source_line=line,
    )
    try:  # the values are checked above; pydantic's validator (Rust) is faster than model_construct here
        return ClaimLine.model_validate(values)
    except ValidationError as exc:  # a gap in the checks above: still a rejection, never a crash
        err = exc.errors()[0]
        where = str(err["loc"][0]) if err["loc"] else None
        raise ctx.reject(where, MALFORMED, f"{where}: {err['msg']}") from None


def _items(ctx: _Ctx, rec: Mapping[str, Any], field: str, splitter: re.Pattern[str]) -> list[str]:
    """A list field: a separated string (CSV) or a JSON list of strings; each item canonical."""
    value = rec.get(field)
    if value is None or value == "":
        return []
    if type(value) is str and len(value) <= MAX_TEXT and value.isprintable() and "\ufffd" not in value:
        text = value.strip() if value.isascii() else _canonical(value)
        return [p for p in splitter.split(text) if p]  # the common case
    if type(value) is list:
        if not all(type(v) is str or type(v) is int for v in value):
            raise ctx.reject(field, UNKNOWN_FIELD_TYPE, f"{field} must be a list of strings")
        limit = MAX_TEXT_BY_FIELD.get(field, MAX_TEXT)
        if sum(len(v) if type(v) is str else 20 for v in value) > limit:
            raise ctx.reject(field, TOO_LONG, f"{field} has more than {limit} characters")
        parts = []
        for v in value:
            if type(v) is str:
                if not contract.well_formed(v):
                    raise ctx.reject(field, ENCODING, f"{field} is not well-formed Unicode (a lone surrogate)")
                parts.append(_canonical(v))
            else:
                parts.append(str(v))
        return [p for p in parts if p]
    other = _text(ctx, rec, field, False)
    if other is None:
        return []
    return [p for p in splitter.split(other) if p]


def _trace_codes(ctx: _Ctx, rec: Mapping[str, Any]) -> list[str]:
    codes = _items(ctx, rec, "drug_trac_codg", _SPLIT_TRACE)
    for code in codes:
        if len(code) != 20 or not (code.isascii() and code.isdigit()):
            rule = contract.BY_NAME["drug_trac_codg"].rule
            raise ctx.reject("drug_trac_codg", MALFORMED, f"trace code {rule}: {show(code)}")
    return codes


def _diagnoses(ctx: _Ctx, rec: Mapping[str, Any]) -> list[str]:
    codes = [c.strip().upper() for c in _items(ctx, rec, "dise_codg", _SPLIT_DX)]
    codes = [c for c in codes if c]
    for code in codes:
        if contract.check("dise_codg", code) is not None:
            rule = contract.BY_NAME["dise_codg"].rule
            raise ctx.reject("dise_codg", MALFORMED, f"diagnosis code {rule}: {show(code)}")
    return codes


def _plausible_time(ctx: _Ctx, at: datetime, window: TimeWindow) -> None:
    """A dispensing in the future beyond the clock skew, or older than the history keeps, is
    not plausible: backdating must not move a sale before another institution's."""
    if at > window.now + window.max_future:
        raise ctx.reject(
            "fee_ocur_time",
            FUTURE_TIME,
            f"fee_ocur_time {at:%Y-%m-%d %H:%M:%S} is in the future (more than "
            f"{window.max_future.total_seconds() / 60:g} minutes after {window.now:%Y-%m-%d %H:%M:%S}, China time)",
        )
    if window.max_age is not None and at < window.now - window.max_age:
        raise ctx.reject(
            "fee_ocur_time",
            TOO_OLD,
            f"fee_ocur_time {at:%Y-%m-%d %H:%M:%S} is older than the history keeps "
            f"({window.max_age.days} days before {window.now:%Y-%m-%d})",
        )
