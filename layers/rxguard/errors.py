"""Errors every layer may raise, kept at the bottom of the import graph so that adapters
(`rxguard.dynamo`) and the workflow steps share them without importing each other.

The state machine tells them apart by name (the Lambda `errorType` is the class name):
`statemachines/claim_batch.asl.json` retries `TransientError` and not the others."""

from __future__ import annotations


class TransientError(Exception):
    """Worth retrying: throttling, a 5xx, keys still unprocessed. The ASL retries it with backoff."""


class BatchInputError(ValueError):
    """The event or a stored batch artefact is not what the workflow expects (not retried)."""


# AWS error codes that mean "slow down or try again" (throttling, a service hiccup): the
# adapters turn them into TransientError, which the state machine's Retry takes
AWS_THROTTLES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "SlowDown",
        "InternalError",
    }
)
