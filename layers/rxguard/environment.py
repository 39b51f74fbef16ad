"""One environment model per Lambda handler, parsed once per environment and validated
before the handler runs (docs/style.md: logic never reads os.environ).

Each model says exactly what its function needs: Prepare the results bucket and the
batches table, Screen the history tables, Notify the topics, and so on. Field names are
the snake_case of the variables (their aliases are the variable names of template.yaml),
so a missing or bad variable fails the cold start with the variable's own name.

    @init_environment_variables(model=PrepareEnvironment)   # first decorator of a handler
    env = get_environment_variables(PrepareEnvironment)     # then, anywhere in the handler

Empty variables count as unset (CloudFormation writes "" for an empty parameter). The
parse is cached per model and per distinct RXGUARD_* environment, because the offline
harness runs several stacks in one process, each with its own variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.middleware_factory import lambda_handler_decorator
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rxguard.config import Settings
from rxguard.dynamo import TableNames
from rxguard.kb import Phase

_PREFIX = "RXGUARD_"


class HandlerEnvironment(BaseModel):
    """What every handler reads: the knowledge base's phase and place, the chunking, the
    region default, and the results bucket the steps hand their files over in."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    phase: Phase = Field(default=Phase.FULL, alias="RXGUARD_PHASE")
    rules_dir: Path | None = Field(default=None, alias="RXGUARD_RULES_DIR")
    chunk_size: int = Field(default=5000, ge=1, alias="RXGUARD_CHUNK_SIZE")
    default_admdvs: str | None = Field(default=None, alias="RXGUARD_DEFAULT_ADMDVS")
    results_bucket: str = Field(min_length=3, alias="RXGUARD_RESULTS_BUCKET")

    @property
    def core(self) -> Settings:
        return Settings(
            phase=self.phase, rules_dir=self.rules_dir, chunk_size=self.chunk_size, default_admdvs=self.default_admdvs
        )


class PrepareEnvironment(HandlerEnvironment):
    batches_table: str = Field(min_length=1, alias="RXGUARD_BATCHES_TABLE")
    idempotency_table: str | None = Field(default=None, alias="RXGUARD_IDEMPOTENCY_TABLE")


class FinalizeEnvironment(HandlerEnvironment):
    batches_table: str = Field(min_length=1, alias="RXGUARD_BATCHES_TABLE")


class HistoryEnvironment(HandlerEnvironment):
    """The tables of the purchase history and the findings (Screen and the API)."""

    purchases_table: str = Field(min_length=1, alias="RXGUARD_PURCHASES_TABLE")
    trace_codes_table: str = Field(min_length=1, alias="RXGUARD_TRACE_CODES_TABLE")
    findings_table: str = Field(min_length=1, alias="RXGUARD_FINDINGS_TABLE")
    batches_table: str | None = Field(default=None, alias="RXGUARD_BATCHES_TABLE")
    aggregates_table: str | None = Field(default=None, alias="RXGUARD_AGGREGATES_TABLE")
    history_days: int = Field(default=400, ge=1, alias="RXGUARD_HISTORY_DAYS")

    @property
    def tables(self) -> TableNames:
        return TableNames.of(self)


class ScreenEnvironment(HistoryEnvironment):
    pass


class NotifyEnvironment(HandlerEnvironment):
    alerts_topic_arn: str = Field(min_length=1, alias="RXGUARD_ALERTS_TOPIC_ARN")
    letters_topic_arn: str = Field(min_length=1, alias="RXGUARD_LETTERS_TOPIC_ARN")
    # the alert outbox (OutboxTable); without it messages are published directly (S3 markers)
    outbox_table: str | None = Field(default=None, alias="RXGUARD_OUTBOX_TABLE")
    outbox_drain_limit: int = Field(default=5000, ge=1, alias="RXGUARD_OUTBOX_DRAIN_LIMIT")


class SweeperEnvironment(NotifyEnvironment):
    """The scheduled sweeper: batches RUNNING past their timeout become FAILED (a report in
    the results bucket), and the outbox's pending messages are published."""

    batches_table: str = Field(min_length=1, alias="RXGUARD_BATCHES_TABLE")
    outbox_table: str = Field(min_length=1, alias="RXGUARD_OUTBOX_TABLE")
    batch_timeout_minutes: int = Field(default=360, ge=1, alias="RXGUARD_BATCH_TIMEOUT_MINUTES")


class DigestEnvironment(NotifyEnvironment):
    """The scheduled digests: the findings they count and the alerts topic they publish on."""

    findings_table: str = Field(min_length=1, alias="RXGUARD_FINDINGS_TABLE")


class ApiEnvironment(HistoryEnvironment):
    """The check API: the history and findings tables; alerts only when both topics are set."""

    alerts_topic_arn: str | None = Field(default=None, alias="RXGUARD_ALERTS_TOPIC_ARN")
    letters_topic_arn: str | None = Field(default=None, alias="RXGUARD_LETTERS_TOPIC_ARN")
    outbox_table: str | None = Field(default=None, alias="RXGUARD_OUTBOX_TABLE")  # alerts recorded, then published


def parse_environment[Model: HandlerEnvironment](model: type[Model], env: Mapping[str, str] | None = None) -> Model:
    """Validate `env` (default: os.environ) against `model`; ValueError names every variable at fault."""
    env = os.environ if env is None else env
    values = {name: value for name, value in env.items() if name.startswith(_PREFIX) and value != ""}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        faults = ", ".join(f"{'.'.join(map(str, e['loc']))} ({e['msg']})" for e in exc.errors())
        raise ValueError(f"{model.__name__}: environment incomplete or invalid: {faults}") from exc


@lru_cache(maxsize=32)
def _cached(model: type[HandlerEnvironment], env: tuple[tuple[str, str], ...]) -> HandlerEnvironment:
    return parse_environment(model, dict(env))


def get_environment_variables[Model: HandlerEnvironment](model: type[Model]) -> Model:
    """This process's environment as `model`, parsed once per distinct RXGUARD_* environment."""
    snapshot = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_PREFIX)))
    parsed = _cached(model, snapshot)
    assert isinstance(parsed, model)
    return parsed


@lambda_handler_decorator
def init_environment_variables(
    handler: Callable[..., Any], event: Any, context: Any, model: type[HandlerEnvironment]
) -> Any:
    """First decorator of a handler: fail fast, naming the missing or invalid variables."""
    get_environment_variables(model)
    return handler(event, context)
