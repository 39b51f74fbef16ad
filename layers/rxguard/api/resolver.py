"""The API: a Powertools `APIGatewayRestResolver` with validation on pydantic models.

`handle(event, context, services)` is what the Lambda handler and `rxguard serve` call:
it refuses oversized bodies (413) before parsing, identifies the caller, and resolves.
Every error answer is built in one place (`_api_error` and the handlers below it).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import cache, partial
from typing import TYPE_CHECKING, Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.shared.json_encoder import Encoder
from pydantic import Discriminator, Tag, TypeAdapter

from rxguard.api import nhsa, service
from rxguard.api.access import Caller, identify, require_grant
from rxguard.api.audit import AuditPage
from rxguard.api.errors import ApiError, InternalError, NotFound, PayloadTooLarge, from_validation_errors
from rxguard.api.guard import request_guard, with_json_content_type
from rxguard.api.models import (
    BacktestRequest,
    BacktestResponse,
    CheckResponse,
    DispensationRequest,
    DispensationResponse,
    DispensingRequest,
    DispositionRequest,
    DispositionResponse,
    ErrorResponse,
    FindingsPage,
    FindingStatus,
    FindingView,
    ReviewRequest,
    RulesResponse,
    SubscriptionRequest,
    SubscriptionsResponse,
    SubscriptionView,
)
from rxguard.api.service import Services

logger = logging.getLogger("rxguard.api")

API_TITLE = "rxguard check API"
API_VERSION = "1.0.0"
API_DESCRIPTION = (
    "Pre-dispensing checks (事前提醒), real-time dispensing records (事中审核), findings review and "
    "rule precision for the supervision of excessive drug prescribing and purchasing (超量开药智能监管). "
    "Requests are signed with AWS SigV4 (IAM). POST /v1/checks and /v1/dispensations also accept the "
    "national platform's 3101/3102 request shape and answer it in the platform's result shape."
)


def _shape_by_keys(own_key: str, node: type, envelope: type) -> Callable[[Any], str]:
    """Which request shape a body is, by its keys: the national envelope has `input`, the
    national data node `data`, rxguard's shape `own_key` (the three are mutually exclusive)."""

    def shape(value: Any) -> str:
        if isinstance(value, dict):
            for key, tag in ((own_key, "rxguard"), ("input", "nhsa-envelope"), ("data", "nhsa")):
                if key in value:
                    return tag
        elif isinstance(value, envelope):
            return "nhsa-envelope"
        elif isinstance(value, node):
            return "nhsa"
        return "rxguard"

    return shape


def _either_shape(own: type, own_key: str, node: type, envelope: type, description: str) -> Any:
    """A body in rxguard's shape or the national one (data node or envelope), told apart by its keys."""
    return Annotated[
        Annotated[own, Tag("rxguard")] | Annotated[node, Tag("nhsa")] | Annotated[envelope, Tag("nhsa-envelope")],
        Discriminator(_shape_by_keys(own_key, node, envelope)),
        Body(description=description),
    ]


if TYPE_CHECKING:
    CheckBody = DispensingRequest | nhsa.NhsaRequest | nhsa.NhsaEnvelope
    DispensationBody = DispensationRequest | nhsa.NhsaRequest | nhsa.NhsaEnvelope
    DispositionBody = DispositionRequest | nhsa.NhsaDispositionRequest | nhsa.NhsaDispositionEnvelope
else:
    CheckBody = _either_shape(
        DispensingRequest,
        "lines",
        nhsa.NhsaRequest,
        nhsa.NhsaEnvelope,
        "rxguard's dispensing shape, or the national 3101/3102 input (data node or envelope)",
    )
    DispensationBody = _either_shape(
        DispensationRequest,
        "lines",
        nhsa.NhsaRequest,
        nhsa.NhsaEnvelope,
        "rxguard's dispensing shape, or the national 3102 input (data node or envelope)",
    )
    DispositionBody = _either_shape(
        DispositionRequest,
        "dispositions",
        nhsa.NhsaDispositionRequest,
        nhsa.NhsaDispositionEnvelope,
        "rxguard's disposition shape, or the national 3103 input (data node or envelope)",
    )
AnswerFormat = Annotated[
    Literal["rxguard", "nhsa"] | None,
    Query(alias="format", description="answer shape; default: the shape of the request"),
]


def _error_content(description: str) -> Any:
    return {"description": description, "content": {content_types.APPLICATION_JSON: {"model": ErrorResponse}}}


ERRORS: dict[int, Any] = {
    400: _error_content("Bad request: the error names the field"),
    403: _error_content("The caller may not act for this institution"),
    413: _error_content("Body larger than the limit, or too many drug lines"),
    415: _error_content("The body is not JSON (Content-Type)"),
    422: _error_content("Not used: validation errors are answered with 400"),
}


def _answers(description: str, model: Any, errors: dict[int, str] | None = None) -> dict[int, Any]:
    """A route's documented answers: 200 with its model, its own errors, then the common ones."""
    ok = {"description": description, "content": {content_types.APPLICATION_JSON: {"model": model}}}
    own = {status: _error_content(text) for status, text in (errors or {}).items()}
    return {200: ok, **own, **ERRORS}


NO_SUBSCRIPTIONS = {404: "Subscriptions are not configured"}
# What each route answers, by handler, for the OpenAPI document only. Powertools builds a
# pydantic adapter for every model a route's `responses` names the first time the route is
# called; attached by `openapi_json` instead of the decorators, they cost a cold start nothing.
OPENAPI_ANSWERS: dict[str, dict[int, Any]] = {
    "post_check": _answers("the check result", CheckResponse | nhsa.NhsaResponse),
    "post_dispensation": _answers("what was recorded and the lines' findings", DispensationResponse),
    "post_disposition": _answers(
        "the findings or warnings with their dispositions",
        DispositionResponse | nhsa.NhsaDispositionResponse,
        {404: "No such finding or warning"},
    ),
    "get_findings": _answers("a page of findings", FindingsPage),
    "get_finding": _answers("the finding", FindingView, {404: "No such finding"}),
    "patch_finding": _answers(
        "the reviewed finding", FindingView, {404: "No such finding", 409: "The finding is superseded"}
    ),
    "get_rules": _answers("the rules", RulesResponse),
    "get_audit": _answers("a page of the log", AuditPage, {404: "No access audit is configured for this deployment"}),
    "post_backtest": {
        400: _error_content("A rule entry is invalid: the field is named"),
        403: _error_content("Only regulators run backtests"),
        409: _error_content("No stored history to re-evaluate (not a local state)"),
    },
    "post_subscription": _answers("the subscription", SubscriptionView, NO_SUBSCRIPTIONS),
    "get_subscriptions": _answers("the subscriptions", SubscriptionsResponse, NO_SUBSCRIPTIONS),
    "delete_subscription": _answers("the subscription removed", SubscriptionsResponse, {404: "No such subscription"}),
}

# UTF-8 JSON (Chinese names and explanations as characters, not \u escapes: half the bytes)
SERIALIZER = partial(json.dumps, separators=(",", ":"), ensure_ascii=False, cls=Encoder)
app = APIGatewayRestResolver(enable_validation=True, serializer=SERIALIZER)


def _services() -> Services:
    services: Services = app.context["services"]
    return services


def _caller() -> Caller:
    caller: Caller = app.context["caller"]
    return caller


# ------------------------------------------------------------------ routes


@app.post(
    "/v1/checks",
    summary="Check a proposed dispensing (records nothing)",
    description="pass | warn | block per line with the rule hits; high -> block, medium -> warn, low -> pass "
    "(reported as information). Unknown drug codes pass with the note 'not monitored'.",
    tags=["checks"],
)
def post_check(body: CheckBody, answer_format: AnswerFormat = None) -> CheckResponse | nhsa.NhsaResponse:
    answer: CheckResponse | nhsa.NhsaResponse = service.check(_services(), body, _caller(), answer_format)
    return answer


@app.post(
    "/v1/dispensations",
    summary="Record a completed dispensing (scene 'in')",
    description="Idempotent on fixmedins_code/feedetl_sn: a repeated request or a later settlement batch with "
    "the same lines counts nothing twice. New findings are alerted.",
    tags=["dispensations"],
)
def post_dispensation(body: DispensationBody) -> DispensationResponse:
    return service.dispense(_services(), body, _caller())


@app.post(
    "/v1/dispositions",
    summary="Record prescribers' handling of warnings (3103): continue with a reason, or modify",
    description="warn_rslt_id / finding_id is the jr_id a check or dispensation answered. dspo_way 1 (continue) "
    "requires dspo_way_rea. Disposing again replaces the earlier disposition. Feeds GET /v1/rules' continue and "
    "modify rates.",
    tags=["dispositions"],
)
def post_disposition(body: DispositionBody) -> DispositionResponse | nhsa.NhsaDispositionResponse:
    answer: DispositionResponse | nhsa.NhsaDispositionResponse = service.dispose(_services(), body, _caller())
    return answer


@app.get(
    "/v1/findings",
    summary="Findings, newest first, paginated",
    tags=["findings"],
)
def get_findings(
    institution: Annotated[str | None, Query(min_length=1, max_length=64, description="fixmedins_code")] = None,
    patient: Annotated[str | None, Query(min_length=1, max_length=64, description="psn_no")] = None,
    rule: Annotated[str | None, Query(min_length=1, max_length=64, description="rule id")] = None,
    status: Annotated[FindingStatus | None, Query(description="default: every current finding")] = None,
    date_from: Annotated[date | None, Query(description="occurred on or after (YYYY-MM-DD)")] = None,
    date_to: Annotated[date | None, Query(description="occurred on or before (YYYY-MM-DD)")] = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
    next_token: Annotated[str | None, Query(min_length=1, max_length=2048)] = None,
) -> FindingsPage:
    return service.list_findings(
        _services(),
        _caller(),
        institution=institution,
        patient=patient,
        rule=rule,
        status=status,
        date_from=date_from,
        date_to=date_to,
        limit=limit,
        next_token=next_token,
    )


FindingId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


@app.get(
    "/v1/findings/<finding_id>",
    summary="One finding with its review and disposition; also a warning a check answered (its jr_id)",
    tags=["findings"],
)
def get_finding(finding_id: FindingId) -> FindingView:
    return service.get_finding(_services(), _caller(), finding_id)


@app.patch(
    "/v1/findings/<finding_id>",
    summary="Review a finding: confirmed or dismissed, with a reason",
    tags=["findings"],
)
def patch_finding(finding_id: FindingId, review: Annotated[ReviewRequest, Body()]) -> FindingView:
    return service.review_finding(_services(), _caller(), finding_id, review)


@app.get(
    "/v1/rules",
    summary="The rule base with each rule's review figures (confirmed, dismissed, precision) and "
    "prescribers' continue and modify rates",
    tags=["rules"],
)
def get_rules() -> RulesResponse:
    require_grant(_caller())  # a principal with no grant gets 403 (docs/security.md)
    return service.rules(_services())


@app.get(
    "/v1/audit",
    summary="The access audit: every check and history read (regulator only)",
    description="Who (caller, institution) read or checked which patient (a keyed pseudonym), when, and the "
    "decision; `alert` records name callers that checked many patients they never dispensed to.",
    tags=["audit"],
)
def get_audit(
    caller: Annotated[str | None, Query(min_length=1, max_length=2048, description="principal")] = None,
    patient: Annotated[str | None, Query(min_length=1, max_length=64, description="psn_no or its pseudonym")] = None,
    date_from: Annotated[date | None, Query(description="on or after (YYYY-MM-DD, China time)")] = None,
    date_to: Annotated[date | None, Query(description="on or before (YYYY-MM-DD, China time)")] = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
    next_token: Annotated[str | None, Query(min_length=1, max_length=2048)] = None,
) -> AuditPage:
    return service.read_audit(
        _services(),
        _caller(),
        principal=caller,
        patient=patient,
        date_from=date_from,
        date_to=date_to,
        limit=limit,
        next_token=next_token,
    )


@app.post(
    "/v1/backtests",
    summary="Try a rule change on the stored history (regulators; writes nothing)",
    description="Re-evaluates the stored history with the given rules merged over today's and compares, "
    "per rule: findings added, removed and changed in severity, patients and institutions affected, reviewed "
    "findings that would flip with a precision estimate, and the spending cited (docs/planning.md).",
    tags=["planning"],
)
def post_backtest(body: BacktestRequest) -> BacktestResponse:
    return service.backtest(_services(), _caller(), body)


@app.post(
    "/v1/subscriptions",
    summary="Subscribe an email, SMS, https, queue or function endpoint to alerts or letters, with filters",
    description="Creates an SNS subscription whose filter policy keeps the messages of a region prefix, "
    "institutions, rules (our ids or the platform's codes), severities and message types. Email and SMS "
    "subscribers receive Chinese text; queues and functions the JSON body. Institutions subscribe to their own.",
    tags=["subscriptions"],
)
def post_subscription(body: Annotated[SubscriptionRequest, Body()]) -> SubscriptionView:
    return service.subscribe(_services(), _caller(), body)


@app.get(
    "/v1/subscriptions",
    summary="The subscriptions the caller may see, with their filter policies",
    tags=["subscriptions"],
)
def get_subscriptions() -> SubscriptionsResponse:
    return service.list_subscriptions(_services(), _caller())


SubscriptionId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]


@app.delete(
    "/v1/subscriptions/<subscription_id>",
    summary="Remove a subscription",
    tags=["subscriptions"],
)
def delete_subscription(subscription_id: SubscriptionId) -> SubscriptionsResponse:
    return service.unsubscribe(_services(), _caller(), subscription_id)


@app.get("/v1/openapi.json", include_in_schema=False)
def get_openapi() -> Response[str]:
    return Response(200, content_types.APPLICATION_JSON, openapi_json())


# ------------------------------------------------------------------ errors, in one place


def _answer(error: ApiError) -> Response[str]:
    return Response(error.status, content_types.APPLICATION_JSON, json.dumps(error.body(), ensure_ascii=False))


@app.exception_handler(ApiError)
def _api_error(error: ApiError) -> Response[str]:
    return _answer(error)


@app.exception_handler(RequestValidationError)
def _validation_error(error: RequestValidationError) -> Response[str]:
    return _answer(from_validation_errors(error.errors()))


@app.exception_handler(RecursionError)
def _too_deep(error: RecursionError) -> Response[str]:  # json.loads of a nesting bomb (security helper)
    return _answer(ApiError("request body is not valid JSON: nested too deeply", None, code="invalid_json"))


@app.not_found
def _not_found(error: NotFoundError) -> Response[str]:
    return _answer(NotFound(f"no route {app.current_event.http_method} {app.current_event.path}", code="no_route"))


@app.exception_handler(Exception)
def _unexpected(error: Exception) -> Response[str]:
    return _internal(error, app.current_event.http_method, app.current_event.resource)


def _internal(error: Exception, method: str, resource: str) -> Response[str]:
    logger.exception("unexpected error in %s %s", method, resource)
    return _answer(InternalError("internal error; the request id identifies it in the logs"))


# ------------------------------------------------------------------ the check routes, directly

# The checks and dispensations (rxguard's and the national 3101/3102 shapes) are the hot
# routes: a valid request of theirs is answered here without the resolver's generic request
# and response machinery (0.2-0.3 ms of a 1.2 ms check: middleware frames, the query, header
# and cookie parameters, the answer validated again before it is serialized), the same
# validation of the body and the same serialization of the answer. Anything else (a body or
# query that does not validate, base64, another content type) goes through the resolver,
# which answers it exactly as before; tests/unit/test_api_direct.py compares the two.


@dataclass(frozen=True)
class _Direct:
    body: TypeAdapter[Any]  # the route's body annotation (the resolver validates with the same)
    answer: TypeAdapter[Any]  # its answer's
    run: Callable[[Services, Any, Caller, Any], Any]
    formats: bool  # takes ?format=


_DIRECT: dict[tuple[str, str], _Direct] = {}
DIRECT = True  # False: every request through the resolver (tests compare the two)


def _direct_routes() -> dict[tuple[str, str], _Direct]:
    if not _DIRECT:
        _DIRECT[("POST", "/v1/checks")] = _Direct(
            TypeAdapter(CheckBody), TypeAdapter(CheckResponse | nhsa.NhsaResponse), service.check, True
        )
        _DIRECT[("POST", "/v1/dispensations")] = _Direct(
            TypeAdapter(DispensationBody),
            TypeAdapter(DispensationResponse),
            lambda services, body, caller, _: service.dispense(services, body, caller),
            False,
        )
    return _DIRECT


def _proxy(response: Response[str]) -> dict[str, Any]:
    """A handler's answer as the resolver builds it for a REST (v1) proxy event."""
    headers: defaultdict[str, list[str]] = defaultdict(list)
    for name, value in response.headers.items():
        headers[name].extend(value if isinstance(value, list) else [value])
    return {
        "statusCode": response.status_code,
        "body": response.body,
        "isBase64Encoded": False,
        "multiValueHeaders": headers,
    }


def _direct(event: dict[str, Any], services: Services, caller: Caller) -> dict[str, Any] | None:
    """The answer of a valid check or dispensation, None for the resolver to answer."""
    route = _direct_routes().get((str(event.get("httpMethod")), str(event.get("path"))))
    body = event.get("body")
    if route is None or event.get("isBase64Encoded") or not isinstance(body, str):
        return None
    content_type = next((str(v) for k, v in (event.get("headers") or {}).items() if k.lower() == "content-type"), "")
    if content_type.strip() and not content_type.strip().startswith(content_types.APPLICATION_JSON):
        return None
    query = event.get("multiValueQueryStringParameters") or {}
    if set(query) - ({"format"} if route.formats else set()):
        return None
    answer_format = None
    if query:
        values = query["format"]
        if len(values) != 1 or values[0] not in ("rxguard", "nhsa"):
            return None
        answer_format = values[0]
    try:
        validated = route.body.validate_python(json.loads(body), from_attributes=True)
    except (ValueError, RecursionError):  # (pydantic's ValidationError is a ValueError)
        return None
    try:
        result = route.run(services, validated, caller, answer_format)
        data = route.answer.dump_python(result, mode="json", by_alias=True)
        answer = Response(200, content_types.APPLICATION_JSON, SERIALIZER(data))
    except ApiError as error:
        answer = _answer(error)
    except RecursionError as error:
        answer = _too_deep(error)
    except Exception as error:
        answer = _internal(error, str(event.get("httpMethod")), str(event.get("resource")))
    return _proxy(answer)


# ------------------------------------------------------------------ entry points


def _body_size(event: dict[str, Any]) -> int:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return len(body) * 3 // 4
    return len(body.encode("utf-8", "surrogatepass")) if isinstance(body, str) else len(body)  # lone \ud800: no crash


def _refused(error: ApiError) -> dict[str, Any]:
    """An answer given before the resolver runs (the body is never parsed)."""
    return {
        "statusCode": error.status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps(error.body(), ensure_ascii=False),
        "isBase64Encoded": False,
    }


def handle(event: dict[str, Any], context: Any, services: Services) -> dict[str, Any]:
    """Resolve one API Gateway REST proxy event with these services."""
    limit = services.settings.max_body_bytes
    if _body_size(event) > limit:
        return _refused(PayloadTooLarge(f"request body larger than {limit} bytes", None))
    refused = request_guard(event)  # JSON only, numbers of bounded size
    if refused is not None:
        return _refused(refused)
    event = with_json_content_type(event)
    caller = identify(event, services.settings)
    if DIRECT:
        answered = _direct(event, services, caller)
        if answered is not None:
            return answered
    app.append_context(services=services, caller=caller)
    return app.resolve(event, context)


@cache
def openapi_json() -> str:
    """The OpenAPI document (checked in as openapi.json; served at /v1/openapi.json)."""
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn  # slow import: only here

    for route in [*app._static_routes, *app._dynamic_routes]:
        route.responses = OPENAPI_ANSWERS.get(route.func.__name__)
        route._dependant = None  # Powertools rebuilds it with the answers' models
    return app.get_openapi_json_schema(
        title=API_TITLE,
        version=API_VERSION,
        description=API_DESCRIPTION,
        security_schemes={
            "sigv4": APIKey(
                name="Authorization",
                in_=APIKeyIn.header,
                description="AWS Signature Version 4 (API Gateway AWS_IAM authorizer)",
            )
        },
        security=[{"sigv4": []}],
    )


if __name__ == "__main__":  # regenerate the checked-in document: python -m rxguard.api.resolver > openapi.json
    print(openapi_json())
