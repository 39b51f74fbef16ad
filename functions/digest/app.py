"""Digest handler: EventBridge Scheduler `{"cadence": "daily" | "weekly"}` (optional
`"on": "YYYY-MM-DD"`) in; the digests of the day or week before published on the alerts
topic (each once: `digest/<period>/<scope>/<key>`); a count out."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from rxguard.alerts.aws import AwsNotificationSink
from rxguard.alerts.digests import Cadence, periodic_digests, previous, window
from rxguard.alerts.settings import AlertSettings
from rxguard.api.store import FindingQuery
from rxguard.api.store_dynamo import DynamoFindingsStore
from rxguard.dynamo import client
from rxguard.kb import get_knowledge_base
from rxguard.models import Finding
from rxguard.observability import MetricUnit, logger, metrics, tracer
from rxguard.workflow.settings import get_settings, validate_environment

CHINA = timezone(timedelta(hours=8))


@validate_environment
@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    cadence: Cadence = "weekly" if event.get("cadence") == "weekly" else "daily"
    on = date.fromisoformat(event["on"]) if event.get("on") else previous(cadence, datetime.now(CHINA).date())
    start, end, period, _ = window(cadence, on)
    store = DynamoFindingsStore(settings.findings_table, client("dynamodb"))
    findings: list[Finding] = []
    token = None
    while True:  # the regulators' listing of the window (a Scan with the date filter)
        page, token = store.query(FindingQuery(date_from=start, date_to=end), 500, token)
        findings += [Finding.model_validate(v.model_dump(exclude={"review", "disposition", "recorded"})) for v in page]
        if token is None:
            break
    alert_settings = AlertSettings.from_env()
    messages = periodic_digests(
        findings, cadence=cadence, on=on, kb=get_knowledge_base(settings.core.rules_dir), settings=alert_settings
    )
    sink = AwsNotificationSink(
        client("sns"),
        client("s3"),
        settings.alerts_topic_arn or "",
        settings.letters_topic_arn or "",
        settings.results_bucket,
    )
    published = sum(1 for message in messages if sink.publish_alert(message))
    metrics.add_metric(name="DigestsPublished", unit=MetricUnit.Count, value=published)
    return {"period": period, "findings": len(findings), "digests": len(messages), "published": published}
