"""Finalize handler: `{mode, batch_id?, state, execution_id}` in, `{batch_id, status, report_key, missing_chunks}` out.
Also the RecordFailure step (mode `failed`)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard import bootstrap
from rxguard.environment import FinalizeEnvironment, get_environment_variables
from rxguard.observability import MetricUnit, metrics
from rxguard.workflow.contract import FinalizeRequest

_STATUS_METRIC = {"SUCCEEDED": "BatchesSucceeded", "PARTIAL": "BatchesPartial", "FAILED": "BatchesFailed"}


@bootstrap.entry(FinalizeEnvironment, correlation_id_path="batch_id")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = bootstrap.finalize(get_environment_variables(FinalizeEnvironment))(FinalizeRequest.model_validate(event))
    metrics.add_metric(name=_STATUS_METRIC[result.status], unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="ChunksMissing", unit=MetricUnit.Count, value=len(result.missing_chunks))
    return result.model_dump(mode="json")
