"""Screen handler: one Map item `{batch_id, chunk_key, lines, index}` in, the chunk's summary out;
or, for the ScreenInstitutions state, `{mode: "institutions", batch_id, chunk_results}`."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard import bootstrap
from rxguard.environment import ScreenEnvironment, get_environment_variables
from rxguard.observability import MetricUnit, metrics
from rxguard.workflow.contract import ChunkRequest, InstitutionsRequest


@bootstrap.entry(ScreenEnvironment, correlation_id_path="batch_id")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    env = get_environment_variables(ScreenEnvironment)
    if event.get("mode") == "institutions":
        done = bootstrap.institutions(env)(InstitutionsRequest.model_validate(event))
        metrics.add_metric(name="InstitutionFindingsNew", unit=MetricUnit.Count, value=done.findings.get("new", 0))
        return done.model_dump(mode="json")
    result = bootstrap.screen(env)(ChunkRequest.model_validate(event))
    metrics.add_metric(name="LinesScreened", unit=MetricUnit.Count, value=result.lines)
    metrics.add_metric(name="DuplicateLines", unit=MetricUnit.Count, value=result.duplicates)
    metrics.add_metric(name="FindingsNew", unit=MetricUnit.Count, value=result.findings.get("new", 0))
    return result.model_dump(mode="json")
