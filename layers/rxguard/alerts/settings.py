"""Alert settings: who gets what, parsed once from the environment or a JSON document.

Logic never reads `os.environ`; handlers call `AlertSettings.from_env()` and pass the
result to `notify_batch`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rxguard.models import Finding, Severity

DEV_PSEUDONYM_KEY = "rxguard-offline-pseudonym-key"  # offline/tests only; deployments set their own

logger = logging.getLogger(__name__)


class AlertSettingsError(ValueError):
    """The alert settings are invalid; the message names the source and the field."""


class AlertSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Per-finding alerts are published for findings at or above this severity; every
    # finding that is not muted goes into its institution's digest.
    alert_min_severity: Severity = Severity.HIGH
    # Low-severity findings of these rules / institutions are muted: no digest line, no letter.
    mute_low_rules: frozenset[str] = frozenset()
    mute_low_institutions: frozenset[str] = frozenset()
    digest_top: int = Field(default=10, ge=0)  # items listed in a digest, most severe first
    # Key of the keyed hash (HMAC-SHA256) that replaces psn_no in every message and letter key.
    pseudonym_key: str = Field(default=DEV_PSEUDONYM_KEY, min_length=16, repr=False)
    # Letters.
    letters_enabled: bool = True
    letter_min_severity: Severity = Severity.LOW
    patient_letters: bool = True
    letter_evidence_cap: int = Field(default=20, ge=1)  # evidence lines listed per finding in a letter
    response_working_days: int = Field(default=15, ge=1, le=90)
    holidays: frozenset[date] = frozenset()  # public holidays skipped when counting working days
    issuer_name_zh: str = "××市医疗保障局"  # set per deployment (RXGUARD_ISSUER_NAME_ZH)
    issuer_abbr_zh: str = "医保监函"  # 机关代字 of the letter numbers: 医保监函〔2026〕12号 (docs/letters.md)
    contact_zh: str = "基金监管处"
    templates_dir: Path | None = None  # bureau-edited templates; default: templates/letters
    font_path: Path | None = None  # CJK TrueType font; default: the fonts layer
    letter_period: Literal["month", "quarter", "year"] = "month"  # one letter per addressee per period
    letter_table_rows: int = Field(default=15, ge=1)  # findings in a letter's table; all go to the CSV annex
    person_file: Path | None = None  # CSV psn_no,name,address[,postcode]: patient letters (none without it)
    counters_table: str | None = None  # DynamoDB CountersTable of the letter numbers (RXGUARD_COUNTERS_TABLE)

    def muted(self, finding: Finding) -> bool:
        if finding.severity is not Severity.LOW:
            return False
        if finding.rule_id in self.mute_low_rules:
            return True
        return finding.fixmedins_code is not None and finding.fixmedins_code in self.mute_low_institutions

    @classmethod
    def from_json(cls, text: str, *, source: str = "alert settings") -> AlertSettings:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AlertSettingsError(f"{source}: not valid JSON: line {exc.lineno}: {exc.msg}") from exc
        if not isinstance(raw, dict):
            raise AlertSettingsError(f"{source}: expected a JSON object")
        return cls._validate(raw, source)

    @classmethod
    def _validate(cls, raw: Mapping[str, Any], source: str) -> AlertSettings:
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "?"
            raise AlertSettingsError(f"{source}: field {field}: {err['msg']}") from exc

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AlertSettings:
        """`RXGUARD_ALERTS_CONFIG` (a JSON object or a path to a JSON file) first, then the
        single variables below override it."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        source = "RXGUARD_ALERTS_CONFIG"
        config = env.get("RXGUARD_ALERTS_CONFIG", "").strip()
        if config:
            if not config.startswith("{"):
                source = config
                try:
                    config = Path(config).read_text(encoding="utf-8")
                except OSError as exc:
                    raise AlertSettingsError(f"{source}: cannot read: {exc.strerror}") from exc
            values.update(cls.from_json(config, source=source).model_dump(exclude_unset=True))
        for field, var, is_list in (
            ("alert_min_severity", "RXGUARD_ALERT_MIN_SEVERITY", False),
            ("mute_low_rules", "RXGUARD_MUTE_LOW_RULES", True),
            ("mute_low_institutions", "RXGUARD_MUTE_LOW_INSTITUTIONS", True),
            ("pseudonym_key", "RXGUARD_PSEUDONYM_KEY", False),
            ("response_working_days", "RXGUARD_RESPONSE_WORKING_DAYS", False),
            ("issuer_name_zh", "RXGUARD_ISSUER_NAME_ZH", False),
            ("templates_dir", "RXGUARD_LETTER_TEMPLATES", False),
            ("font_path", "RXGUARD_LETTER_FONT", False),
            ("letter_period", "RXGUARD_LETTER_PERIOD", False),
            ("person_file", "RXGUARD_PERSON_FILE", False),
            ("counters_table", "RXGUARD_COUNTERS_TABLE", False),
        ):
            value = env.get(var, "").strip()
            if value:
                values[field] = [v.strip() for v in value.split(",") if v.strip()] if is_list else value
        settings = cls._validate(values, "environment" if source == "RXGUARD_ALERTS_CONFIG" else source)
        if settings.pseudonym_key == DEV_PSEUDONYM_KEY and env.get("AWS_LAMBDA_FUNCTION_NAME"):
            logger.warning(
                "RXGUARD_PSEUDONYM_KEY is not set: alert pseudonyms use the public offline key and can be "
                "reversed by trying patient numbers; set a secret key of 16+ characters"
            )
        return settings
