"""The backends of the contract cases; lines and findings come from tests/factories.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rxguard.api.store import FindingsStore
from rxguard.models import Finding, Severity
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


def store_finding(rule: str, psn: str, line: str, at: datetime) -> Finding:
    """A medium patient finding of one line (`<institution>/<line>`) at its institution: the
    findings the store contracts seed."""
    text = {"explanation_zh": "说明", "explanation_en": "explanation"}
    where = {"fixmedins_code": line.split("/")[0], "admdvs": None}
    return make_finding(rule, psn, [line], severity=Severity.MEDIUM, occurred_at=at, figures={}, **where, **text)
