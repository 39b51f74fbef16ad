"""Digest handler: EventBridge Scheduler `{"cadence": "daily" | "weekly"}` (optional
`"on": "YYYY-MM-DD"`) in; the digests of the day or week before published on the alerts
topic (each once: `digest/<period>/<scope>/<key>`); a count out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard import bootstrap
from rxguard.environment import DigestEnvironment, get_environment_variables
from rxguard.observability import MetricUnit, metrics


@bootstrap.entry(DigestEnvironment, correlation_id_path="cadence")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    summary = bootstrap.digest(get_environment_variables(DigestEnvironment))(event)
    metrics.add_metric(name="DigestsPublished", unit=MetricUnit.Count, value=int(summary["published"]))
    return summary
