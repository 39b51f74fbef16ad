"""Notify handler: `{batch_id, chunk_results, institutions}` in, the alerts summary out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard import bootstrap
from rxguard.environment import NotifyEnvironment, get_environment_variables
from rxguard.observability import MetricUnit, metrics
from rxguard.workflow.contract import NotifyRequest


@bootstrap.entry(NotifyEnvironment, correlation_id_path="batch_id")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    summary = bootstrap.notify(get_environment_variables(NotifyEnvironment))(NotifyRequest.model_validate(event))
    metrics.add_metric(name="FindingsNotified", unit=MetricUnit.Count, value=int(summary.get("findings", 0)))
    return summary
