"""Sweeper handler (EventBridge Scheduler, every 15 minutes; any event): batches RUNNING past
their timeout are marked FAILED with a reason and a report, and the alert outbox's pending
messages are published. Returns the batches failed and the outbox counts."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard import bootstrap
from rxguard.environment import SweeperEnvironment, get_environment_variables
from rxguard.observability import MetricUnit, metrics


@bootstrap.entry(SweeperEnvironment, correlation_id_path="id")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    summary = bootstrap.sweeper(get_environment_variables(SweeperEnvironment))(event)
    metrics.add_metric(name="StuckBatchesFailed", unit=MetricUnit.Count, value=len(summary["batches_failed"]))
    metrics.add_metric(name="OutboxPublished", unit=MetricUnit.Count, value=int(summary.get("outbox_sent", 0)))
    return summary
