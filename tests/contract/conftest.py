"""One set of cases over every storage adapter (STYLE.md: one interface, several real
adapters, the same contract tests for all).

`backend` is parametrised over `memory` (InMemoryRepository / InMemoryFindingsStore),
`sqlite` (rxguard.local.state on a fresh state directory) and `dynamo` (DynamoRepository /
DynamoFindingsStore on moto, tables created from template.yaml's own definitions, fresh
names per test). `backend.repo()` gives a repository over the backend's storage (a new
instance each call where the adapter caches per instance, as the workflow does per chunk);
`backend.store` is the API's findings store over the same storage.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from contract_helpers import Backend

from rxguard.api.store import InMemoryFindingsStore
from rxguard.repository import InMemoryRepository
from tests.conftest import FAKE_AWS
from tests.factories import create_table

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["memory", "sqlite", "dynamo"]


class _TagTolerantLoader(yaml.SafeLoader):
    """Reads CloudFormation short tags (!Ref, !GetAtt, ...) as plain values."""


_TagTolerantLoader.add_multi_constructor(
    "!",
    lambda loader, suffix, node: (
        loader.construct_scalar(node)
        if isinstance(node, yaml.ScalarNode)
        else loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
    ),
)


def _table_props(logical_id: str) -> dict[str, Any]:
    text = (ROOT / "template.yaml").read_text(encoding="utf-8")
    return dict(yaml.load(text, Loader=_TagTolerantLoader)["Resources"][logical_id]["Properties"])


@pytest.fixture(scope="module")
def moto_ddb() -> Iterator[Any]:
    """One moto DynamoDB per module (tables are fresh per test). Not per session: a mock
    left running would leak its tables into the suites that start their own."""
    import boto3
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as patch:
        for key, value in FAKE_AWS.items():
            patch.setenv(key, value)
        with mock_aws():
            yield boto3.client("dynamodb", region_name="us-east-1")


_COUNTER = itertools.count()


def _dynamo_tables(ddb: Any) -> Any:
    from rxguard.dynamo import TableNames

    suffix = next(_COUNTER)
    names = {}
    for logical_id in ("PurchasesTable", "TraceCodesTable", "FindingsTable", "AggregatesTable"):
        props = _table_props(logical_id)
        name = f"contract-{logical_id}-{suffix}"
        create_table(ddb, name, props)
        names[logical_id] = name
    return TableNames(
        purchases=names["PurchasesTable"],
        trace_codes=names["TraceCodesTable"],
        findings=names["FindingsTable"],
        aggregates=names["AggregatesTable"],
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        memory = InMemoryRepository()
        yield Backend("memory", lambda: memory, InMemoryFindingsStore(memory))
    elif request.param == "sqlite":
        from rxguard.local.state import State

        with State.open(tmp_path / "state") as state:
            yield Backend("sqlite", state.repository, state.findings_store())
    else:
        from rxguard.api.store_dynamo import DynamoFindingsStore
        from rxguard.dynamo import DynamoRepository

        ddb = request.getfixturevalue("moto_ddb")
        tables = _dynamo_tables(ddb)
        yield Backend(
            "dynamo",
            lambda: DynamoRepository(tables, ddb, max_workers=1),
            DynamoFindingsStore(tables.findings, ddb),
            ordered_scan=False,
        )


@pytest.fixture(params=BACKENDS)
def audit_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The API's access audit over each backend (rxguard.api.audit.AuditLog)."""
    if request.param == "memory":
        from rxguard.api.audit import InMemoryAuditLog

        yield InMemoryAuditLog()
    elif request.param == "sqlite":
        from rxguard.local.audit import SqliteAuditLog
        from rxguard.local.state import State

        with State.open(tmp_path / "state"):  # the audit table lives in the state DB file, beside the state's
            yield SqliteAuditLog(tmp_path / "state")
    else:
        from rxguard.api.audit import DynamoAuditLog

        ddb = request.getfixturevalue("moto_ddb")
        props = _table_props("AuditTable")
        name = f"contract-AuditTable-{next(_COUNTER)}"
        ddb.create_table(
            TableName=name,
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            BillingMode=props["BillingMode"],
            GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
        )
        yield DynamoAuditLog(name, ddb)
