"""The composition root: the one place that builds adapters (DynamoDB, S3, SNS, the
in-memory fakes) and wires them into the logic, for the Lambda handlers, `rxguard serve`
and the tests. Nothing else constructs clients; the logic receives what it uses.

    step = bootstrap.prepare(env)            # env: rxguard.environment.PrepareEnvironment
    output = step(contract.PrepareRequest(...))       # the workflow step with its stores, kb and settings

Each builder takes the handler's environment model and returns the logic function with
its dependencies bound (the handler only parses the event and records metrics), or, for
the API, the `Services` the resolver injects into its routes (`app.append_context`): on
AWS (`api_services`) and over the local state (`local_api_services`, `open_local`).

    entry(PrepareEnvironment, correlation_id_path="execution_name")

is the decorator stack of every handler, in the order docs/style.md gives: environment
validation, Powertools' Lambda context (correlation id), metrics, tracer.

Cold starts: each builder imports the step it wires when it is called, so a function loads
only its own step (importing all of them at the top costs every function ~50 ms CPU at cold
start, measured with a fresh interpreter per function). import-linter still sees these
imports: the layer contracts hold for them too.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

from rxguard.config import Settings
from rxguard.dynamo import BatchStore, DynamoCounterStore, DynamoRepository, ResultStore, client
from rxguard.environment import (
    ApiEnvironment,
    DigestEnvironment,
    FinalizeEnvironment,
    HandlerEnvironment,
    NotifyEnvironment,
    PrepareEnvironment,
    ScreenEnvironment,
    SweeperEnvironment,
    init_environment_variables,
)
from rxguard.kb import KnowledgeBase, get_knowledge_base
from rxguard.workflow import contract
from rxguard.workflow.settings import WorkflowSettings

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from datetime import datetime

    from rxguard.alerts.aws import AwsNotificationSink
    from rxguard.alerts.outbox_dynamo import DynamoOutbox
    from rxguard.alerts.settings import AlertSettings
    from rxguard.api.audit import AccessRecord
    from rxguard.api.serve import LocalSite
    from rxguard.api.service import Services
    from rxguard.api.settings import ApiSettings
    from rxguard.local.state import State
    from rxguard.models import Finding

IDEMPOTENCY = IdempotencyConfig(expires_after_seconds=6 * 3600)  # Prepare: one result per (object, execution)

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def entry(model: type[HandlerEnvironment], *, correlation_id_path: str) -> Callable[[Handler], Handler]:
    """The decorators of a Lambda handler, outermost first (docs/style.md)."""

    # Powertools reads its settings (service, namespace) when rxguard.observability is first
    # imported (docs/style.md): a handler module's import loads it, never this module's, so
    # a process that imports the composition root first (tests, `rxguard serve`) keeps them.
    from rxguard.observability import logger, metrics, tracer

    def decorate(handler: Handler) -> Handler:
        wrapped = tracer.capture_lambda_handler(capture_response=False)(handler)
        wrapped = metrics.log_metrics(wrapped)
        wrapped = logger.inject_lambda_context(correlation_id_path=correlation_id_path)(wrapped)
        decorated: Handler = init_environment_variables(wrapped, model=model)
        return decorated

    return decorate


def knowledge_base(env: HandlerEnvironment) -> KnowledgeBase:
    return get_knowledge_base(env.rules_dir, env.phase)


# ------------------------------------------------------------------ the workflow steps


@lru_cache(maxsize=4)
def _idempotent_prepare(idempotency_table: str | None) -> Callable[..., contract.PrepareOutput]:
    """prepare_object, made idempotent per (object, execution) when an idempotency table is configured."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer

    from rxguard.workflow.prepare import prepare_object

    if not idempotency_table:
        return prepare_object
    store = DynamoDBPersistenceLayer(table_name=idempotency_table, boto3_client=client("dynamodb"))
    made: Callable[..., contract.PrepareOutput] = idempotent_function(
        data_keyword_argument="request",
        persistence_store=store,
        config=IDEMPOTENCY,
        output_serializer=PydanticSerializer(model=contract.PrepareOutput),
    )(prepare_object)
    return made


def prepare(env: PrepareEnvironment) -> Callable[[contract.PrepareRequest], contract.PrepareOutput]:
    step = _idempotent_prepare(env.idempotency_table)
    results, batches, kb = ResultStore(env.results_bucket), BatchStore(env.batches_table), knowledge_base(env)
    # the steps' settings (chunking, ingest bounds ...) through their own parser, now that the
    # model has validated what Prepare needs
    settings = WorkflowSettings.from_env()

    def run(request: contract.PrepareRequest) -> contract.PrepareOutput:
        return step(
            request=request,
            ingest=ResultStore(request.source.bucket),
            results=results,
            batches=batches,
            kb=kb,
            settings=settings,
        )

    return run


def _screen_repository(env: ScreenEnvironment, batch_id: str, index: int) -> DynamoRepository:
    writer = f"{batch_id[:16]}-{index}"  # a chunk's lines count once for it in the packed activity
    return DynamoRepository(
        env.tables, history_days=env.history_days, writer=writer, buffered=True
    )  # flush(): screen_lines


def screen(env: ScreenEnvironment) -> Callable[[contract.ChunkRequest], contract.ChunkResult]:
    from rxguard.workflow.screen import screen_chunk

    results, kb = ResultStore(env.results_bucket), knowledge_base(env)

    def run(request: contract.ChunkRequest) -> contract.ChunkResult:
        repo = _screen_repository(env, request.batch_id, request.index)
        return screen_chunk(request, results=results, repo=repo, kb=kb)

    return run


def institutions(env: ScreenEnvironment) -> Callable[[contract.InstitutionsRequest], contract.ChunkResult]:
    from rxguard.workflow.institutions import screen_institutions

    results, kb = ResultStore(env.results_bucket), knowledge_base(env)

    def run(request: contract.InstitutionsRequest) -> contract.ChunkResult:
        repo = _screen_repository(env, request.batch_id, 0)
        return screen_institutions(request, results=results, repo=repo, kb=kb)

    return run


def aws_sink(env: NotifyEnvironment | ApiEnvironment | DigestEnvironment) -> AwsNotificationSink:
    from rxguard.alerts.aws import AwsNotificationSink

    return AwsNotificationSink(
        client("sns"), client("s3"), env.alerts_topic_arn or "", env.letters_topic_arn or "", env.results_bucket
    )


def notify(env: NotifyEnvironment) -> Callable[[contract.NotifyRequest], dict[str, Any]]:
    from rxguard.alerts.settings import AlertSettings
    from rxguard.workflow.notify import notify_chunks

    results, kb = ResultStore(env.results_bucket), knowledge_base(env)

    def run(request: contract.NotifyRequest) -> dict[str, Any]:
        alerts = AlertSettings.from_env()
        sink = aws_sink(env)
        return notify_chunks(
            request,
            results=results,
            kb=kb,
            sink=sink,
            alert_settings=alerts,
            counters=letter_counters(alerts),
            outbox=alert_outbox(env.outbox_table),
            deliver=sink.deliver,
            drain_limit=env.outbox_drain_limit,
        )

    return run


def alert_outbox(table: str | None) -> DynamoOutbox | None:
    """The alert outbox (OutboxTable) when configured: messages recorded, then published."""
    from rxguard.alerts.outbox_dynamo import DynamoOutbox

    return DynamoOutbox(table, client("dynamodb")) if table else None


def sweeper(env: SweeperEnvironment) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The scheduled sweeper (EventBridge Scheduler, every 15 minutes): batches RUNNING past
    `batch_timeout_minutes` become FAILED with a reason and a report, then the outbox's
    pending messages are published (what a failed Notify or API request left behind)."""
    from datetime import timedelta

    from rxguard.alerts.outbox import drain
    from rxguard.observability import logger
    from rxguard.workflow.finalize import sweep_stuck_batches

    results, batches = ResultStore(env.results_bucket), BatchStore(env.batches_table)

    def run(event: dict[str, Any]) -> dict[str, Any]:
        swept = sweep_stuck_batches(
            results=results, batches=batches, timeout=timedelta(minutes=env.batch_timeout_minutes)
        )
        outbox = alert_outbox(env.outbox_table)
        answer: dict[str, Any] = {"batches_failed": [r.batch_id for r in swept]}
        if outbox is not None:
            try:
                answer["outbox_sent"], answer["outbox_pending"] = drain(
                    outbox, aws_sink(env).deliver, limit=env.outbox_drain_limit
                )
            except Exception as exc:  # SNS still refusing: the messages stay pending for the next run
                logger.warning("outbox not drained", extra={"error": type(exc).__name__})
                answer["outbox_error"] = f"{type(exc).__name__}: {exc}"[:500]
        return answer

    return run


def digest(env: DigestEnvironment) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The scheduled digests (EventBridge Scheduler `{"cadence": "daily" | "weekly"[, "on"]}`):
    the window's findings from the FindingsTable, the digests published once each."""
    from datetime import date, datetime, timedelta, timezone

    from rxguard.alerts.digests import Cadence, periodic_digests, previous, window
    from rxguard.alerts.settings import AlertSettings
    from rxguard.api.store import FindingQuery
    from rxguard.api.store_dynamo import DynamoFindingsStore
    from rxguard.models import Finding

    kb = knowledge_base(env)
    store = DynamoFindingsStore(env.findings_table, client("dynamodb"))

    def run(event: dict[str, Any]) -> dict[str, Any]:
        cadence: Cadence = "weekly" if event.get("cadence") == "weekly" else "daily"
        today = datetime.now(timezone(timedelta(hours=8))).date()  # China time
        on = date.fromisoformat(event["on"]) if event.get("on") else previous(cadence, today)
        start, end, period, _ = window(cadence, on)
        findings: list[Finding] = []
        token = None
        while True:  # the regulators' listing of the window (a Scan with the date filter)
            page, token = store.query(FindingQuery(date_from=start, date_to=end), 500, token)
            findings += [
                Finding.model_validate(v.model_dump(exclude={"review", "disposition", "recorded"})) for v in page
            ]
            if token is None:
                break
        messages = periodic_digests(findings, cadence=cadence, on=on, kb=kb, settings=AlertSettings.from_env())
        sink = aws_sink(env)
        published = sum(1 for message in messages if sink.publish_alert(message))
        return {"period": period, "findings": len(findings), "digests": len(messages), "published": published}

    return run


def letter_counters(alerts: AlertSettings) -> DynamoCounterStore | None:
    """The letter numbers' counters (docs/letters.md): the DynamoDB CountersTable when configured."""
    return DynamoCounterStore(alerts.counters_table, client("dynamodb")) if alerts.counters_table else None


def finalize(env: FinalizeEnvironment) -> Callable[[contract.FinalizeRequest], contract.FinalizeResult]:
    from rxguard.workflow.finalize import finalize_batch

    results, batches = ResultStore(env.results_bucket), BatchStore(env.batches_table)
    return lambda request: finalize_batch(request, results=results, batches=batches)


# ------------------------------------------------------------------ the check API


def api_services(env: ApiEnvironment, settings: ApiSettings | None = None) -> Services:
    """The API's services on AWS (the Lambda function, and `rxguard serve` over moto):
    DynamoDB history and findings, alerts on SNS + S3 when both topics are configured."""
    # the API's models alone cost ~0.09 s CPU to import
    from rxguard.alerts.settings import AlertSettings
    from rxguard.api.audit import DynamoAuditLog
    from rxguard.api.service import Services, alerts_notifier
    from rxguard.api.settings import ApiSettings
    from rxguard.api.store_dynamo import AwsSubscriptions, DynamoFindingsStore

    kb = knowledge_base(env)
    ddb = client("dynamodb")
    notifier = None
    subscriptions = None
    access_alerts: Callable[[Any], object] | None = None
    if env.alerts_topic_arn and env.letters_topic_arn:
        alerts = AlertSettings.from_env()
        sink = aws_sink(env)
        outbox = alert_outbox(env.outbox_table)
        if outbox is None:  # published directly (S3 markers)
            notifier = alerts_notifier(kb, sink, alerts, letter_counters(alerts))
            access_alerts = sink.publish_alert
        else:  # recorded, then this request's messages published; what SNS refuses waits for the sweeper
            notifier, access_alerts = _outboxed_api_alerts(kb, sink, outbox, alerts)
        topics = {"alerts": env.alerts_topic_arn, "letters": env.letters_topic_arn}
        subscriptions = AwsSubscriptions(client("sns"), topics)
    settings = settings or ApiSettings.from_env()  # microseconds: per request, so tests may change it
    return Services(
        kb=kb,
        repo=DynamoRepository(env.tables, ddb, history_days=env.history_days),  # one per request
        store=DynamoFindingsStore(env.findings_table, ddb),
        settings=settings,
        notify=notifier,
        default_admdvs=env.default_admdvs,
        subscriptions=subscriptions,
        audit=DynamoAuditLog(settings.audit_table, ddb) if settings.audit_table else None,
        access_alerts=access_alerts,
    )


def _outboxed_api_alerts(
    kb: KnowledgeBase, sink: AwsNotificationSink, outbox: DynamoOutbox, alerts: AlertSettings
) -> tuple[Callable[..., int], Callable[[Any], object]]:
    """The API's alerts through the outbox: a dispensation's findings and the access alerts
    are recorded first, then only this request's messages are published (a backlog is the
    sweeper's, not a request's); a publish SNS refuses stays pending."""
    from rxguard.alerts.outbox import OutboxEntry, RecordingSink, drain
    from rxguard.api.service import alerts_notifier
    from rxguard.observability import logger

    def publish(ids: list[str]) -> None:
        try:
            drain(outbox, sink.deliver, only=ids)
        except Exception as exc:
            logger.warning("alerts left pending for the sweeper", extra={"messages": len(ids), "error": str(exc)})

    def notify(findings: Any, batch_id: str, lines: Any) -> int:
        recording = RecordingSink(outbox, sink)
        recorded = alerts_notifier(kb, recording, alerts, letter_counters(alerts))(findings, batch_id, lines)
        if recording.recorded_ids:
            publish(recording.recorded_ids)
        return recorded

    def access(message: Any) -> None:
        if outbox.record([OutboxEntry("alerts", message)]):
            publish([message.message_id])

    return notify, access


# ------------------------------------------------------------------ the local runtime

LINE_CACHE = 200_000  # decoded history lines kept by `rxguard serve --state` (checks re-read the same patients)
# walked histories each engine keeps for checks (docs/rules.md#scenes): the cached lines are the
# same objects from one check of a patient to the next, so a later check resumes the walks
CHECK_HISTORIES = 1024


def local_api_services(state: State, settings: ApiSettings, core: Settings | None = None) -> Services:
    """The API's services over the local state (`rxguard serve --state DIR`): checks read the
    stored history, a dispensation is screened on the same repository as a batch's lines (so
    it is history for the next batch), findings are listed and reviewed in the state the runs
    write. No alerts topic here: `alerts_sent` is null (the batch runs write the alerts)."""
    from rxguard import screening
    from rxguard.alerts.outbox import OutboxEntry
    from rxguard.api.service import Services
    from rxguard.local.audit import SqliteAuditLog

    core = core or Settings.from_env()
    outbox = state.outbox()
    screening.keep_histories(CHECK_HISTORIES)
    store = state.findings_store()
    checks = state.checks()
    audit = SqliteAuditLog(checks.path, db=checks)  # access_audit of DIR/checks.db: record_check's connections

    def record_check(
        records: Sequence[AccessRecord], warnings: Sequence[Finding], at: datetime, answered: Collection[str]
    ) -> None:
        # a check's access records and warnings: one write transaction on checks.db, not two, and
        # none on the state (its write lock is not taken; no worker's cache of it is made stale)
        with checks.write("record a check") as conn:
            audit.insert(conn, records)
            store.insert_warnings(conn, warnings, at, answered)

    return Services(
        kb=get_knowledge_base(core.rules_dir, core.phase),
        repo=state.repository(line_cache=LINE_CACHE),
        store=store,
        settings=settings,
        default_admdvs=core.default_admdvs,
        audit=audit,
        # access alerts into the state's outbox: out/alerts.jsonl at the next `rxguard run`
        access_alerts=lambda message: outbox.record([OutboxEntry("alerts", message)]),
        record_check=record_check,
    )


def open_local(directory: Path, settings: ApiSettings) -> LocalSite:
    """Open (creating) the state under `directory` and build the API's services over it, for
    `rxguard.api.serve.main` (handed by `rxguard_tools.offline.serve`); a state that cannot be
    opened raises `rxguard.local.state.StateError` naming the file."""
    from rxguard.api.serve import LocalSite
    from rxguard.local.state import State

    state = State.open(directory)
    return LocalSite(
        services=local_api_services(state, settings),
        where=f"state {state.path}",
        close=state.close,
        maintain=state.keep_checkpointed,
    )
