"""API handler: an API Gateway REST proxy event in, the resolver's answer out.

All logic lives in the layer (`rxguard.api`): the resolver maps routes, errors and the
caller's identity; `aws_services()` wires DynamoDB, the findings store and the alerts sink.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard.api.resolver import handle
from rxguard.api.store_dynamo import aws_services
from rxguard.observability import MetricUnit, logger, metrics, tracer
from rxguard.workflow.settings import validate_environment


@validate_environment
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    answer = handle(event, context, aws_services())
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    if answer.get("statusCode", 500) >= 500:
        metrics.add_metric(name="ApiServerErrors", unit=MetricUnit.Count, value=1)
    return answer
