"""Notify handler: `{batch_id, chunk_results}` in, the alerts summary out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard.alerts.settings import AlertSettings
from rxguard.dynamo import ResultStore, client
from rxguard.kb import get_knowledge_base
from rxguard.observability import MetricUnit, logger, metrics, tracer
from rxguard.workflow.contract import NotifyRequest
from rxguard.workflow.notify import notify_chunks
from rxguard.workflow.settings import get_settings, validate_environment


def _sink() -> Any:
    from rxguard.alerts.aws import AwsNotificationSink

    settings = get_settings()
    return AwsNotificationSink(
        client("sns"),
        client("s3"),
        settings.alerts_topic_arn or "",
        settings.letters_topic_arn or "",
        settings.results_bucket,
    )


@validate_environment
@logger.inject_lambda_context(correlation_id_path="batch_id")
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    request = NotifyRequest.model_validate(event)
    summary = notify_chunks(
        request,
        results=ResultStore(settings.results_bucket),
        kb=get_knowledge_base(settings.core.rules_dir, settings.core.phase),
        sink=_sink(),
        alert_settings=AlertSettings.from_env(),
    )
    metrics.add_metric(name="FindingsNotified", unit=MetricUnit.Count, value=int(summary.get("findings", 0)))
    return summary
