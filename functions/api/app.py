"""API handler: an API Gateway REST proxy event in, the resolver's answer out.

All logic lives in the layer (`rxguard.api`): the resolver maps routes, errors and the
caller's identity and injects the services into the routes; `rxguard.bootstrap` builds
those services (DynamoDB, the findings store, the alerts sink).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard import bootstrap
from rxguard.api.resolver import handle
from rxguard.environment import ApiEnvironment, get_environment_variables
from rxguard.observability import MetricUnit, metrics


@bootstrap.entry(ApiEnvironment, correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    answer = handle(event, context, bootstrap.api_services(get_environment_variables(ApiEnvironment)))
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    if answer.get("statusCode", 500) >= 500:
        metrics.add_metric(name="ApiServerErrors", unit=MetricUnit.Count, value=1)
    return answer
