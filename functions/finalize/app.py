"""Finalize handler: `{mode, batch_id?, state, execution_id}` in, `{batch_id, status, report_key, missing_chunks}` out.
Also the RecordFailure step (mode `failed`)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard.dynamo import BatchStore, ResultStore
from rxguard.observability import MetricUnit, logger, metrics, tracer
from rxguard.workflow.contract import FinalizeRequest
from rxguard.workflow.finalize import finalize_batch
from rxguard.workflow.settings import get_settings, validate_environment

_STATUS_METRIC = {"SUCCEEDED": "BatchesSucceeded", "PARTIAL": "BatchesPartial", "FAILED": "BatchesFailed"}


@validate_environment
@logger.inject_lambda_context(correlation_id_path="batch_id")
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    request = FinalizeRequest.model_validate(event)
    result = finalize_batch(
        request,
        results=ResultStore(settings.results_bucket),
        batches=BatchStore(settings.batches_table),
    )
    metrics.add_metric(name=_STATUS_METRIC[result.status], unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="ChunksMissing", unit=MetricUnit.Count, value=len(result.missing_chunks))
    return result.model_dump(mode="json")
