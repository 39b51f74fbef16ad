"""The single Powertools Logger, Tracer and Metrics of rxguard (docs/style.md: nothing else
creates them). Service name and metrics namespace come from POWERTOOLS_SERVICE_NAME and
POWERTOOLS_METRICS_NAMESPACE (template.yaml Globals).

Tracing is a deploy choice (template parameter `XRayTracing`, default PassThrough): when
POWERTOOLS_TRACE_DISABLED is true the X-Ray SDK is not imported at all. Importing it costs
about 140-290 ms of every cold start (it builds a botocore client for its sampler as it
loads), even when Powertools' Tracer is disabled; `DisabledTracer` keeps the handlers'
decorators and costs nothing. With XRayTracing=Active the real Powertools Tracer is used.

Never log a patient identifier (psn_no, certificate number): log batch ids, chunk keys,
counts and line ids (`fixmedins_code/feedetl_sn`) only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice

from rxguard.privacy import install_log_redaction


class DisabledTracer:
    """The part of Powertools' Tracer the handlers use, for when tracing is off."""

    disabled = True

    def capture_lambda_handler(self, lambda_handler: Callable[..., Any] | None = None, **_: Any) -> Any:
        if lambda_handler is None:
            return lambda handler: handler
        return lambda_handler

    def capture_method(self, method: Callable[..., Any] | None = None, **_: Any) -> Any:
        if method is None:
            return lambda function: function
        return method

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str | None = None) -> None:
        return None


def tracing_disabled(env: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """POWERTOOLS_TRACE_DISABLED read exactly as Powertools' Tracer reads it."""
    value = (os.environ if env is None else env).get("POWERTOOLS_TRACE_DISABLED", "false")
    return resolve_truthy_env_var_choice(env=value)


def _make_tracer() -> Any:
    if tracing_disabled():
        return DisabledTracer()
    from aws_lambda_powertools import Tracer

    return Tracer()


logger = install_log_redaction(Logger())  # psn_no, ID numbers, trace codes -> keyed tokens (privacy.py)
tracer = _make_tracer()
metrics = Metrics()

__all__ = ["DisabledTracer", "MetricUnit", "logger", "metrics", "tracer", "tracing_disabled"]
