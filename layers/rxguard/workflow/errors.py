"""Moved to `rxguard.errors` (the bottom layer); this name stays for code not yet moved."""

from __future__ import annotations

from rxguard.errors import BatchInputError, TransientError

__all__ = ["BatchInputError", "TransientError"]
