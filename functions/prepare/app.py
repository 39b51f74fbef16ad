"""Prepare handler: the EventBridge `Object Created` detail in, the batch manifest out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard import bootstrap
from rxguard.environment import PrepareEnvironment, get_environment_variables
from rxguard.observability import MetricUnit, metrics
from rxguard.workflow.contract import PrepareRequest
from rxguard.workflow.naming import S3ObjectRef


@bootstrap.entry(PrepareEnvironment, correlation_id_path="execution_name")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    bootstrap.IDEMPOTENCY.register_lambda_context(context)
    source = S3ObjectRef.from_detail(event.get("detail") or {})
    request = PrepareRequest(source=source, execution_id=str(event.get("execution_id") or context.aws_request_id))
    output = bootstrap.prepare(get_environment_variables(PrepareEnvironment))(request)
    if output.duplicate:
        metrics.add_metric(name="DuplicateObjects", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="LinesRead", unit=MetricUnit.Count, value=output.lines_read)
        metrics.add_metric(name="LinesRejected", unit=MetricUnit.Count, value=output.rejected)
    return output.model_dump(mode="json")
