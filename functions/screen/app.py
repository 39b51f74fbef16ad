"""Screen handler: one Map item `{batch_id, chunk_key, lines, index}` in, the chunk's summary out;
or, for the ScreenInstitutions state, `{mode: "institutions", batch_id, chunk_results}`."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard.dynamo import DynamoRepository, ResultStore
from rxguard.kb import get_knowledge_base
from rxguard.observability import MetricUnit, logger, metrics, tracer
from rxguard.workflow.contract import ChunkRequest, InstitutionsRequest
from rxguard.workflow.institutions import screen_institutions
from rxguard.workflow.screen import screen_chunk
from rxguard.workflow.settings import get_settings, validate_environment


@validate_environment
@logger.inject_lambda_context(correlation_id_path="batch_id")
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    results = ResultStore(settings.results_bucket)
    kb = get_knowledge_base(settings.core.rules_dir, settings.core.phase)
    writer = f"{event.get('batch_id', '')[:16]}-{event.get('index', 0)}"  # a chunk's lines count once for it
    repo = DynamoRepository(settings.tables, history_days=settings.history_days, writer=writer)
    if event.get("mode") == "institutions":
        done = screen_institutions(InstitutionsRequest.model_validate(event), results=results, repo=repo, kb=kb)
        metrics.add_metric(name="InstitutionFindingsNew", unit=MetricUnit.Count, value=done.findings.get("new", 0))
        return done.model_dump(mode="json")
    result = screen_chunk(ChunkRequest.model_validate(event), results=results, repo=repo, kb=kb)
    metrics.add_metric(name="LinesScreened", unit=MetricUnit.Count, value=result.lines)
    metrics.add_metric(name="DuplicateLines", unit=MetricUnit.Count, value=result.duplicates)
    metrics.add_metric(name="FindingsNew", unit=MetricUnit.Count, value=result.findings.get("new", 0))
    return result.model_dump(mode="json")
