"""Errors the state machine distinguishes by name (the Lambda `errorType`)."""

from __future__ import annotations


class TransientError(Exception):
    """Worth retrying: throttling, a 5xx, keys still unprocessed. The ASL retries it with backoff."""


class BatchInputError(ValueError):
    """The event or a stored batch artefact is not what the workflow expects (not retried)."""
