"""The composition root: the one place that builds adapters (DynamoDB, S3, SNS, the
in-memory fakes) and wires them into the logic, for the Lambda handlers, `rxguard serve`
and the tests. Nothing else constructs clients; the logic receives what it uses.

    step = bootstrap.prepare(env)            # env: rxguard.environment.PrepareEnvironment
    output = step(PrepareRequest(...))       # the workflow step with its stores, kb and settings

Each builder takes the handler's environment model and returns the logic function with
its dependencies bound (the handler only parses the event and records metrics), or, for
the API, the `Services` the resolver injects into its routes (`app.append_context`).

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
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

from rxguard.dynamo import BatchStore, DynamoCounterStore, DynamoRepository, ResultStore, client
from rxguard.environment import (
    ApiEnvironment,
    FinalizeEnvironment,
    HandlerEnvironment,
    NotifyEnvironment,
    PrepareEnvironment,
    ScreenEnvironment,
    init_environment_variables,
)
from rxguard.kb import KnowledgeBase, get_knowledge_base
from rxguard.observability import logger, metrics, tracer
from rxguard.repository import InMemoryRepository
from rxguard.workflow.contract import (
    ChunkRequest,
    ChunkResult,
    FinalizeRequest,
    FinalizeResult,
    InstitutionsRequest,
    NotifyRequest,
    PrepareOutput,
    PrepareRequest,
)
from rxguard.workflow.settings import WorkflowSettings

if TYPE_CHECKING:
    from rxguard.alerts.aws import AwsNotificationSink
    from rxguard.alerts.settings import AlertSettings
    from rxguard.api.service import Services
    from rxguard.api.settings import ApiSettings

IDEMPOTENCY = IdempotencyConfig(expires_after_seconds=6 * 3600)  # Prepare: one result per (object, execution)

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def entry(model: type[HandlerEnvironment], *, correlation_id_path: str) -> Callable[[Handler], Handler]:
    """The decorators of a Lambda handler, outermost first (docs/style.md)."""

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
def _idempotent_prepare(idempotency_table: str | None) -> Callable[..., PrepareOutput]:
    """prepare_object, made idempotent per (object, execution) when an idempotency table is configured."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer

    from rxguard.workflow.prepare import prepare_object

    if not idempotency_table:
        return prepare_object
    store = DynamoDBPersistenceLayer(table_name=idempotency_table, boto3_client=client("dynamodb"))
    made: Callable[..., PrepareOutput] = idempotent_function(
        data_keyword_argument="request",
        persistence_store=store,
        config=IDEMPOTENCY,
        output_serializer=PydanticSerializer(model=PrepareOutput),
    )(prepare_object)
    return made


def prepare(env: PrepareEnvironment) -> Callable[[PrepareRequest], PrepareOutput]:
    step = _idempotent_prepare(env.idempotency_table)
    results, batches, kb = ResultStore(env.results_bucket), BatchStore(env.batches_table), knowledge_base(env)
    # the steps' settings (chunking, ingest bounds ...) through their own parser, now that the
    # model has validated what Prepare needs
    settings = WorkflowSettings.from_env()

    def run(request: PrepareRequest) -> PrepareOutput:
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
    return DynamoRepository(env.tables, history_days=env.history_days, writer=writer)


def screen(env: ScreenEnvironment) -> Callable[[ChunkRequest], ChunkResult]:
    from rxguard.workflow.screen import screen_chunk

    results, kb = ResultStore(env.results_bucket), knowledge_base(env)

    def run(request: ChunkRequest) -> ChunkResult:
        repo = _screen_repository(env, request.batch_id, request.index)
        return screen_chunk(request, results=results, repo=repo, kb=kb)

    return run


def institutions(env: ScreenEnvironment) -> Callable[[InstitutionsRequest], ChunkResult]:
    from rxguard.workflow.institutions import screen_institutions

    results, kb = ResultStore(env.results_bucket), knowledge_base(env)

    def run(request: InstitutionsRequest) -> ChunkResult:
        repo = _screen_repository(env, request.batch_id, 0)
        return screen_institutions(request, results=results, repo=repo, kb=kb)

    return run


def aws_sink(env: NotifyEnvironment | ApiEnvironment) -> AwsNotificationSink:
    from rxguard.alerts.aws import AwsNotificationSink

    return AwsNotificationSink(
        client("sns"), client("s3"), env.alerts_topic_arn or "", env.letters_topic_arn or "", env.results_bucket
    )


def notify(env: NotifyEnvironment) -> Callable[[NotifyRequest], dict[str, Any]]:
    from rxguard.alerts.settings import AlertSettings
    from rxguard.workflow.notify import notify_chunks

    results, kb = ResultStore(env.results_bucket), knowledge_base(env)

    def run(request: NotifyRequest) -> dict[str, Any]:
        alerts = AlertSettings.from_env()
        return notify_chunks(
            request,
            results=results,
            kb=kb,
            sink=aws_sink(env),
            alert_settings=alerts,
            counters=letter_counters(alerts),
        )

    return run


def letter_counters(alerts: AlertSettings) -> DynamoCounterStore | None:
    """The letter numbers' counters (docs/letters.md): the DynamoDB CountersTable when configured."""
    return DynamoCounterStore(alerts.counters_table, client("dynamodb")) if alerts.counters_table else None


def finalize(env: FinalizeEnvironment) -> Callable[[FinalizeRequest], FinalizeResult]:
    from rxguard.workflow.finalize import finalize_batch

    results, batches = ResultStore(env.results_bucket), BatchStore(env.batches_table)
    return lambda request: finalize_batch(request, results=results, batches=batches)


# ------------------------------------------------------------------ the check API


def api_services(env: ApiEnvironment, settings: ApiSettings | None = None) -> Services:
    """The API's services on AWS (the Lambda function, and `rxguard serve` over moto):
    DynamoDB history and findings, alerts on SNS + S3 when both topics are configured."""
    # the API's models alone cost ~0.09 s CPU to import
    from rxguard.alerts.settings import AlertSettings
    from rxguard.api.service import Services, alerts_notifier
    from rxguard.api.settings import ApiSettings
    from rxguard.api.store_dynamo import DynamoFindingsStore

    kb = knowledge_base(env)
    ddb = client("dynamodb")
    notifier = None
    if env.alerts_topic_arn and env.letters_topic_arn:
        alerts = AlertSettings.from_env()
        notifier = alerts_notifier(kb, aws_sink(env), alerts, letter_counters(alerts))
    return Services(
        kb=kb,
        repo=DynamoRepository(env.tables, ddb, history_days=env.history_days),  # one per request
        store=DynamoFindingsStore(env.findings_table, ddb),
        settings=settings or ApiSettings.from_env(),  # microseconds: per request, so tests may change it
        notify=notifier,
        default_admdvs=env.default_admdvs,
    )


def memory_api_services(settings: ApiSettings, kb: KnowledgeBase | None = None) -> Services:
    """The API's services over an in-memory repository (`rxguard serve --memory`, tests)."""
    from rxguard.api.service import Services
    from rxguard.api.store import InMemoryFindingsStore

    repo = InMemoryRepository()
    return Services(kb=kb or get_knowledge_base(), repo=repo, store=InMemoryFindingsStore(repo), settings=settings)
