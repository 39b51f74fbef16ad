"""Settings of the API, parsed once from the environment (docs/style.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rxguard.config import set_variables


class CallerGrant(BaseModel):
    """What one caller (an IAM principal) may do.

    `institutions`: the fixmedins_codes the caller acts for (its own checks, dispensings
    and findings). `regulator`: a bureau user, reads every finding and reviews them.
    `patient_ids`: the console shows patient numbers in clear (masked otherwise)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    institutions: list[str] = Field(default_factory=list)
    regulator: bool = False
    patient_ids: bool = False


# field -> the environment variable that sets it (RXGUARD_API_CALLERS, JSON, is read apart)
VARIABLES = {
    "max_body_bytes": "RXGUARD_API_MAX_BODY_BYTES",
    "max_lines": "RXGUARD_API_MAX_LINES",
    "auth_mode": "RXGUARD_API_AUTH",
    "findings_table": "RXGUARD_FINDINGS_TABLE",
    "findings_index": "RXGUARD_FINDINGS_INDEX",
    "history_days": "RXGUARD_HISTORY_DAYS",
    "clock_skew_minutes": "RXGUARD_CLOCK_SKEW_MINUTES",
    "late_hours": "RXGUARD_LATE_HOURS",
    "max_work": "RXGUARD_API_MAX_WORK",
    "pseudonym_key": "RXGUARD_PSEUDONYM_KEY",
    "audit_window_hours": "RXGUARD_AUDIT_WINDOW_HOURS",
    "audit_stranger_limit": "RXGUARD_AUDIT_STRANGER_LIMIT",
    "audit_table": "RXGUARD_AUDIT_TABLE",
}


class ApiSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_body_bytes: int = Field(default=256 * 1024, ge=1024)  # RXGUARD_API_MAX_BODY_BYTES
    max_lines: int = Field(default=200, ge=1)  # RXGUARD_API_MAX_LINES: drug lines per request
    page_size: int = Field(default=50, ge=1, le=500)  # default page of GET /v1/findings
    # "enforce": callers must be in `callers`; "open": no checks (offline `rxguard serve`, tests)
    auth_mode: Literal["enforce", "open"] = "enforce"  # RXGUARD_API_AUTH
    # RXGUARD_API_CALLERS: JSON {principal: grant}. The key is the caller's IAM user/role ARN
    # (requestContext.identity.userArn), an assumed-role ARN prefix ending in "*", or the
    # caller id (requestContext.identity.caller). The security helper extends this mapping.
    callers: dict[str, CallerGrant] = Field(default_factory=dict)
    findings_table: str | None = None  # RXGUARD_FINDINGS_TABLE (DynamoDB store)
    findings_index: str = "ByInstitution"  # RXGUARD_FINDINGS_INDEX
    # Time plausibility (issue 15): a line dated more than the skew in the future, or older than the
    # history keeps, is refused; a dispensation recorded more than late_hours after it happened is
    # accepted but marked late (ClaimLine.received_at).
    history_days: int = Field(default=400, ge=1)  # RXGUARD_HISTORY_DAYS
    clock_skew_minutes: float = Field(default=10, ge=0)  # RXGUARD_CLOCK_SKEW_MINUTES
    late_hours: float = Field(default=72, gt=0)  # RXGUARD_LATE_HOURS
    # Access audit: the pseudonym key (shared with alerts, so tokens match) and the stranger alert
    pseudonym_key: str = Field(
        default="rxguard-offline-pseudonym-key", min_length=16, repr=False
    )  # RXGUARD_PSEUDONYM_KEY
    audit_window_hours: float = Field(default=24, gt=0)  # RXGUARD_AUDIT_WINDOW_HOURS
    audit_stranger_limit: int = Field(default=50, ge=1)  # RXGUARD_AUDIT_STRANGER_LIMIT
    audit_table: str | None = None  # RXGUARD_AUDIT_TABLE
    # Work bound of one request: drug lines x (trace codes + 1), so every answer fits the timeout
    max_work: int = Field(default=2000, ge=1)  # RXGUARD_API_MAX_WORK (measured: docs/security.md A10)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if env is None else env
        values = set_variables(env, VARIABLES)
        if env.get("RXGUARD_API_CALLERS"):
            try:
                values["callers"] = json.loads(env["RXGUARD_API_CALLERS"])
            except json.JSONDecodeError as exc:
                raise ValueError(f"RXGUARD_API_CALLERS is not valid JSON: {exc}") from exc
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"API settings: {where}: {err['msg']}") from exc
