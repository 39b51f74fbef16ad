"""Prepare handler: the EventBridge `Object Created` detail in, the batch manifest out."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard.dynamo import BatchStore, ResultStore, client
from rxguard.kb import get_knowledge_base
from rxguard.observability import MetricUnit, logger, metrics, tracer
from rxguard.workflow.contract import PrepareOutput, PrepareRequest
from rxguard.workflow.naming import S3ObjectRef
from rxguard.workflow.prepare import prepare_object
from rxguard.workflow.settings import get_settings, validate_environment

IDEMPOTENCY = IdempotencyConfig(expires_after_seconds=6 * 3600)


@lru_cache(maxsize=4)
def _prepare(idempotency_table: str | None) -> Any:
    """prepare_object, made idempotent per (object, execution) when an idempotency table is configured."""
    if not idempotency_table:
        return prepare_object
    store = DynamoDBPersistenceLayer(table_name=idempotency_table, boto3_client=client("dynamodb"))
    return idempotent_function(
        data_keyword_argument="request",
        persistence_store=store,
        config=IDEMPOTENCY,
        output_serializer=PydanticSerializer(model=PrepareOutput),
    )(prepare_object)


@validate_environment
@logger.inject_lambda_context(correlation_id_path="execution_name")
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    IDEMPOTENCY.register_lambda_context(context)
    source = S3ObjectRef.from_detail(event.get("detail") or {})
    request = PrepareRequest(source=source, execution_id=str(event.get("execution_id") or context.aws_request_id))
    output: PrepareOutput = _prepare(settings.idempotency_table)(
        request=request,
        ingest=ResultStore(source.bucket),
        results=ResultStore(settings.results_bucket),
        batches=BatchStore(settings.batches_table),
        kb=get_knowledge_base(settings.core.rules_dir, settings.core.phase),
        settings=settings,
    )
    if output.duplicate:
        metrics.add_metric(name="DuplicateObjects", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="LinesRead", unit=MetricUnit.Count, value=output.lines_read)
        metrics.add_metric(name="LinesRejected", unit=MetricUnit.Count, value=output.rejected)
    return output.model_dump(mode="json")
