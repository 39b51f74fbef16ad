"""The single Powertools Logger, Tracer and Metrics of rxguard (STYLE.md: nothing else
creates them). Service name and metrics namespace come from POWERTOOLS_SERVICE_NAME and
POWERTOOLS_METRICS_NAMESPACE (template.yaml Globals).

Never log a patient identifier (psn_no, certificate number): log batch ids, chunk keys,
counts and line ids (`fixmedins_code/feedetl_sn`) only.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from rxguard.privacy import install_log_redaction

logger = install_log_redaction(Logger())  # psn_no, ID numbers, trace codes -> keyed tokens (privacy.py)
tracer = Tracer()
metrics = Metrics()

__all__ = ["MetricUnit", "logger", "metrics", "tracer"]
