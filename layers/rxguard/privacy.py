"""Personal data out of logs: pseudonyms, masking and a redacting log serializer.

Claim lines carry the insured person's number (`psn_no`), sometimes a certificate
(ID-card) number, and drug traceability codes. None of them may reach a log in clear
(docs/security.md). This module gives three tools:

- `Pseudonymizer`: a keyed hash (HMAC-SHA256) that replaces an identifier by a stable
  token (`p-` + 20 hex digits for a psn_no, the same formula as `rxguard.alerts.pseudonym`,
  so a log line and an alert about one patient carry the same token). Without the key the
  token cannot be reversed or brute-forced; with no key configured a random per-process
  key is used (tokens then correlate within one Lambda container only).
- `mask()`: keep a few leading/trailing characters for display (`110***********1234`).
- `redact()`: walk any log payload (dicts, lists, strings) and replace
  * the value of a sensitive key (`psn_no`, `certno`, `drug_trac_codg`, ...) by its token,
  * inside free text: 18-digit ID numbers (and 15-digit old ones), 20-digit traceability
    codes, any other run of 15+ digits, `patient:<psn_no>` scopes and `psn_no=<value>`
    / `"psn_no": "<value>"` fragments (e.g. inside an exception message).

Install on the Powertools Logger with ONE line (rxguard.observability does this):

    install_log_redaction(logger)

It wraps the formatter's JSON serializer, so every field of the record is redacted:
the message, `extra=` keys, keys added with `append_keys`, the exception text and stack
trace. `RedactionFilter` does the same for plain stdlib handlers (message, args, extras).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

PSEUDONYM_KEY_ENV = "RXGUARD_PSEUDONYM_KEY"

# Keys whose value is personal data (compared lower-case). Value -> token of that kind.
SENSITIVE_KEYS: dict[str, str] = {
    "psn_no": "p",
    "psn": "p",
    "patient": "p",
    "patient_id": "p",
    "insured_id": "p",
    "patn_id": "p",
    "certno": "id",
    "cert_no": "id",
    "psn_cert_no": "id",
    "mdtrt_cert_no": "id",
    "certificate_no": "id",
    "certificate_number": "id",
    "id_no": "id",
    "id_number": "id",
    "idcard": "id",
    "id_card": "id",
    "psn_name": "name",
    "patient_name": "name",
    "name_of_patient": "name",
    "tel": "tel",
    "phone": "tel",
    "mob": "tel",
    "mobile": "tel",
    "addr": "addr",
    "address": "addr",
    "drug_trac_codg": "t",
    "trace_code": "t",
    "trace_codes": "t",
}

# `patient:<psn_no>` scopes (repository.py), `psn_no=<v>` / `"psn_no": "<v>"` fragments.
_KEYED_TEXT = re.compile(
    r"""(?P<head>\b(?:patient:|(?:psn_no|certno|cert_no|psn_cert_no|mdtrt_cert_no|id_no|idcard|psn_name)"""
    r"""['"]?\s*[:=]\s*['"]?))(?P<value>[^\s,;'"\]\)\}]+)""",
    re.IGNORECASE,
)
# pydantic puts the offending input in its error text: `input_value='...'`.
_INPUT_VALUE = re.compile(r"""(?P<head>input_value=)(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,\]]+)""")
# 18-digit ID number (last digit may be X), 20-digit traceability code, 15-digit old ID
# number, or any other run of 15+ digits: none of these belongs in a log.
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])(?:\d{17}[0-9Xx]|\d{15,})(?![0-9A-Za-z])")
_TOKEN = re.compile(r"^(?:p|id|t|n|v|name|tel|addr)-[0-9a-f]{20}$")


class Pseudonymizer:
    """Keyed, stable, one-way tokens for identifiers: `<kind>-<20 hex of HMAC-SHA256>`."""

    def __init__(self, key: bytes | str) -> None:
        raw = key.encode("utf-8") if isinstance(key, str) else key
        if len(raw) < 16:
            raise ValueError("pseudonym key must be at least 16 bytes")
        self._key = raw

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Pseudonymizer:
        """Key from RXGUARD_PSEUDONYM_KEY (shared with alerts), else a random per-process key."""
        env = os.environ if env is None else env
        key = env.get(PSEUDONYM_KEY_ENV, "").strip()
        return cls(key if len(key.encode("utf-8")) >= 16 else os.urandom(32))

    def token(self, value: object, kind: str = "p") -> str:
        text = str(value)
        digest = hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{kind}-{digest[:20]}"

    def psn(self, psn_no: str) -> str:
        """Same token as `rxguard.alerts.pseudonym(psn_no, key)` for the same key."""
        return self.token(psn_no, "p")


def mask(value: str, *, head: int = 3, tail: int = 4, fill: str = "*") -> str:
    """Display mask: keep `head` leading and `tail` trailing characters, never more than
    a third of the value in total (a short value is masked entirely)."""
    n = len(value)
    if head + tail > n // 3:
        head, tail = 0, 0
    return value[:head] + fill * (n - head - tail) + (value[n - tail :] if tail else "")


def mask_certificate(cert_no: str) -> str:
    """`110101199003071234` -> `110***********1234`: the display form of ID numbers (province
    prefix and last 4 kept, birth date and sequence hidden); other lengths as `mask()`."""
    if len(cert_no) in (15, 18):
        return cert_no[:3] + "*" * (len(cert_no) - 7) + cert_no[-4:]
    return mask(cert_no)


class Redactor:
    """Replace personal data in log payloads by keyed tokens (see module docstring)."""

    def __init__(self, pseudonymizer: Pseudonymizer, sensitive_keys: Mapping[str, str] | None = None) -> None:
        self.pseudonymizer = pseudonymizer
        self.sensitive_keys = {k.lower(): v for k, v in (sensitive_keys or SENSITIVE_KEYS).items()}

    def text(self, value: str) -> str:
        if not value:
            return value
        out = _INPUT_VALUE.sub(self._input_sub, value)
        out = _KEYED_TEXT.sub(self._keyed_sub, out)
        return _DIGIT_RUN.sub(self._digits_sub, out)

    def _keyed_sub(self, match: re.Match[str]) -> str:
        head, value = match.group("head"), match.group("value")
        if _TOKEN.match(value):
            return match.group(0)
        kind = "id" if "cert" in head.lower() or "id" in head.lower() else "p"
        if "name" in head.lower():
            kind = "name"
        return head + self.pseudonymizer.token(value, kind)

    def _input_sub(self, match: re.Match[str]) -> str:
        return match.group("head") + self.pseudonymizer.token(match.group("value").strip("'\""), "v")

    def _digits_sub(self, match: re.Match[str]) -> str:
        digits = match.group(0)
        kind = "t" if len(digits) == 20 else "id" if len(digits) in (15, 18) else "n"
        return self.pseudonymizer.token(digits, kind)

    def value(self, value: Any, kind: str | None = None) -> Any:
        """Redact any JSON-like value; `kind` set means the whole value is personal data."""
        if kind is not None:
            if value is None or value == "" or isinstance(value, bool):
                return value
            if isinstance(value, list | tuple | set | frozenset):
                return [self.value(v, kind) for v in value]
            if isinstance(value, Mapping):
                return {str(k): self.value(v, kind) for k, v in value.items()}
            text = str(value)
            if _TOKEN.match(text):
                return text
            if kind == "t" and "," in text:  # drug_trac_codg: comma-separated codes
                return ",".join(self.pseudonymizer.token(c.strip(), kind) for c in text.split(","))
            return self.pseudonymizer.token(text, kind)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.value(v, self.sensitive_keys.get(str(k).lower())) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        if isinstance(value, bool | int | float) or value is None:
            if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) >= 15:
                return self.text(str(value))
            return value
        # pydantic models, datetimes, exceptions...: as the JSON serializer would show them
        dump = getattr(value, "model_dump", None)
        if callable(dump):
            return self.value(dump(mode="json"))
        return self.text(str(value))


def redacting_serializer(redactor: Redactor, serializer: Callable[[Any], str] | None = None) -> Callable[[Any], str]:
    """A Powertools `json_serializer`: redact the structured record, then serialize it."""
    inner = serializer or (lambda obj: json.dumps(obj, default=str, separators=(",", ":"), ensure_ascii=False))

    def serialize(log: Any) -> str:
        return inner(redactor.value(log))

    serialize.rxguard_redacting = True  # type: ignore[attr-defined]
    return serialize


def install_log_redaction(logger: Any, redactor: Redactor | None = None) -> Any:
    """Make a Powertools Logger redact every record it writes. Idempotent; returns the logger.

    Works on the formatter Powertools registered (LambdaPowertoolsFormatter or a subclass):
    its `json_serializer` is wrapped, so appended keys, extras and exceptions are covered.
    """
    formatter = logger.registered_formatter
    current = getattr(formatter, "json_serializer", None)
    if current is None:
        raise TypeError(f"cannot install log redaction on formatter {type(formatter).__name__}")
    if getattr(current, "rxguard_redacting", False):
        return logger
    formatter.json_serializer = redacting_serializer(redactor or default_redactor(), current)
    return logger


class RedactionFilter(logging.Filter):
    """For plain stdlib handlers: redact the message, its args and `extra=` attributes."""

    _STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or default_redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.text(record.getMessage())
        record.args = None
        for key in list(record.__dict__):
            if key not in self._STANDARD:
                kind = self.redactor.sensitive_keys.get(key.lower())
                setattr(record, key, self.redactor.value(record.__dict__[key], kind))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.exc_text = self.redactor.text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
            record.msg = f"{record.msg} ({type(exc).__name__})"
        return True


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise_csv_cell(value: object) -> str:
    """A cell for a CSV a person may open in a spreadsheet: text that a spreadsheet would
    run as a formula (=, +, -, @, tab, CR at the start, full-width forms too) gets a
    leading apostrophe, so `=cmd|' /C calc'!A0` is shown, never executed. Plain numbers
    (`-12.5`) are left as they are. Claim data keep the original text; only exports use this."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


_DEFAULT: Redactor | None = None


def default_redactor() -> Redactor:
    """The process-wide redactor (key from RXGUARD_PSEUDONYM_KEY, read once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Redactor(Pseudonymizer.from_env())
    return _DEFAULT


__all__ = [
    "PSEUDONYM_KEY_ENV",
    "SENSITIVE_KEYS",
    "Pseudonymizer",
    "RedactionFilter",
    "Redactor",
    "default_redactor",
    "install_log_redaction",
    "mask",
    "mask_certificate",
    "neutralise_csv_cell",
    "redacting_serializer",
]
