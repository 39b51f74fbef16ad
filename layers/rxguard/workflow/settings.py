"""The workflow steps' settings, parsed from the environment into a pydantic model; logic
code receives it, never os.environ. Each Lambda handler first validates its own
environment model (`rxguard.environment`); `rxguard.bootstrap` builds this for the steps."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rxguard.config import Settings
from rxguard.dynamo import TableNames

_ENV = {
    "results_bucket": "RXGUARD_RESULTS_BUCKET",
    "purchases_table": "RXGUARD_PURCHASES_TABLE",
    "trace_codes_table": "RXGUARD_TRACE_CODES_TABLE",
    "findings_table": "RXGUARD_FINDINGS_TABLE",
    "batches_table": "RXGUARD_BATCHES_TABLE",
    "aggregates_table": "RXGUARD_AGGREGATES_TABLE",
    "idempotency_table": "RXGUARD_IDEMPOTENCY_TABLE",
    "alerts_topic_arn": "RXGUARD_ALERTS_TOPIC_ARN",
    "letters_topic_arn": "RXGUARD_LETTERS_TOPIC_ARN",
    "history_days": "RXGUARD_HISTORY_DAYS",
    "max_line_age_days": "RXGUARD_MAX_LINE_AGE_DAYS",
    "clock_skew_minutes": "RXGUARD_CLOCK_SKEW_MINUTES",
}


class WorkflowSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    results_bucket: str = Field(min_length=3)
    # the history tables: required by the steps that read them (rxguard.environment's per-handler models)
    purchases_table: str | None = Field(default=None, min_length=1)
    trace_codes_table: str | None = Field(default=None, min_length=1)
    findings_table: str | None = Field(default=None, min_length=1)
    batches_table: str = Field(min_length=1)
    aggregates_table: str | None = None
    idempotency_table: str | None = None
    alerts_topic_arn: str | None = None
    letters_topic_arn: str | None = None
    history_days: int = Field(default=400, ge=1)
    # Lines older than this many days at arrival are rejected `too_old` (0: no bound, for replaying
    # archives); the deployment sets it to the history retention. Lines dated more than the clock
    # skew in the future are always rejected `future_time`.
    max_line_age_days: int = Field(default=0, ge=0)
    clock_skew_minutes: float = Field(default=10, ge=0)
    core: Settings = Field(default_factory=Settings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkflowSettings:
        env = os.environ if env is None else env
        values: dict[str, object] = {f: env[v] for f, v in _ENV.items() if env.get(v)}
        values["core"] = Settings.from_env(env)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            names = ", ".join(_ENV.get(str(e["loc"][0]), str(e["loc"][0])) for e in exc.errors())
            raise ValueError(f"workflow environment incomplete or invalid: {names}") from exc

    @property
    def tables(self) -> TableNames:
        if not (self.purchases_table and self.trace_codes_table and self.findings_table):
            raise ValueError("workflow settings: the history tables (RXGUARD_PURCHASES_TABLE, ...) are not set")
        return TableNames.of(self)
