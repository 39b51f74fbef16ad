"""The backends of the contract cases; lines and findings come from tests/factories.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rxguard.api.store import FindingsStore
from rxguard.repository import HistoryRepository
from tests.factories import make_finding, make_line

__all__ = ["Backend", "make_finding", "make_line"]


@dataclass
class Backend:
    """One adapter family over one storage (the `backend` fixture of conftest.py)."""

    name: str
    repo: Callable[[], HistoryRepository]  # a repository over the storage (new instance where adapters cache)
    store: FindingsStore  # the API's findings store over the same storage
    ordered_scan: bool = True  # False: unfiltered listings page in storage order (DynamoDB Scan)
