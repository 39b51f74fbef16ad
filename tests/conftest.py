"""Shared fixtures. The layer and the tools are on the path (pyproject: pythonpath = layers, tools)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Powertools' Metrics read their namespace when rxguard.observability is first imported; the
# template sets it for every function (Globals). Set it before any test imports the layer, so
# the outcome does not depend on which test happened to import it first.
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Rxguard")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "rxguard")

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
# moto's fake credentials and region, and no X-Ray: the environment of every test on moto
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "1",
}
# the import path of a child interpreter (`rxguard serve`, `rxguard run`): the layer, the tools, the root
CHILD_PYTHONPATH = os.pathsep.join(str(ROOT / folder) for folder in ("layers", "tools", ""))


def load_event(name: str) -> Any:
    """Load a sample event from events/ (docs/style.md: one helper for every test)."""
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def kb():  # type: ignore[no-untyped-def]
    from rxguard.kb import get_knowledge_base

    return get_knowledge_base()


@pytest.fixture(autouse=True)
def _fresh_letter_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Letters issued without a counter store take numbers (and remember which findings
    each addressee's letter of a period held) from one store per process; each test gets
    its own, so a test's letter is never a 'supplementary' one because another test
    lettered the same institution and month first."""
    import rxguard.letters as letters

    monkeypatch.setattr(letters, "_PROCESS_COUNTERS", type(letters._PROCESS_COUNTERS)())


# the moto harness without warning letters (PDF rendering is slow; the alerts stay)
NO_LETTERS = {"RXGUARD_ALERTS_CONFIG": '{"letters_enabled": false}'}


@pytest.fixture
def env_no_letters(tmp_path: Path) -> Iterator[Any]:
    """The offline AWS harness (moto, the real ASL and handlers), letters off, moto quiet."""
    import logging

    from rxguard_tools.offline import Environment

    logging.getLogger("moto").setLevel(logging.CRITICAL)
    with (
        (tmp_path / "functions.log").open("w") as log,
        Environment(handler_output=log, base_environment=NO_LETTERS) as environment,
    ):
        yield environment
