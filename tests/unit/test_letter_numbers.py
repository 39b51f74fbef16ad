"""Letter numbers (发文字号) from an atomic counter: one contract over the in-memory store,
the DynamoDB store (moto, the CountersTable of template.yaml), the local SQLite state and
a plain counter with a JSON keeper; concurrent callers never share a number."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from rxguard.dynamo import DynamoCounterStore
from rxguard.letters.numbers import (
    InMemoryCounterStore,
    JsonNumberKeeper,
    NumberBook,
    document_number,
)
from tests.conftest import ROOT


class PlainCounter:
    """What the SQLite state offers: `next_counter(name)` only."""

    def __init__(self) -> None:
        self.inner = InMemoryCounterStore()

    def next_counter(self, name: str) -> int:
        return self.inner.next_counter(name)


def _memory(tmp: Path) -> Iterator[NumberBook]:
    yield NumberBook(InMemoryCounterStore())


def _plain_with_file(tmp: Path) -> Iterator[NumberBook]:
    yield NumberBook(PlainCounter(), JsonNumberKeeper(tmp / "numbers.json"))


def _dynamodb(tmp: Path) -> Iterator[NumberBook]:
    import boto3
    from moto import mock_aws

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((ROOT / "template.yaml").read_text(encoding="utf-8"), Loader=_Loader)
    props = template["Resources"]["CountersTable"]["Properties"]
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(
            TableName="counters",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
        )
        yield NumberBook(DynamoCounterStore("counters", ddb))


def _sqlite_state(tmp: Path) -> Iterator[NumberBook]:
    from rxguard.local.state import State

    with State.open(tmp / "state") as state:  # next_counter, kept, keep (the local deployment)
        yield NumberBook(state)


BOOKS: dict[str, Callable[[Path], Iterator[NumberBook]]] = {
    "sqlite-state": _sqlite_state,
    "memory": _memory,
    "plain+json": _plain_with_file,
    "dynamodb": _dynamodb,
}


@pytest.fixture(params=sorted(BOOKS))
def book(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NumberBook]:
    yield from BOOKS[request.param](tmp_path)


@pytest.fixture(params=sorted(set(BOOKS) - {"dynamodb"}))
def local_book(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NumberBook]:
    """moto applies an UpdateItem ADD without the atomicity DynamoDB guarantees, so the
    concurrency case runs on the local adapters only."""
    yield from BOOKS[request.param](tmp_path)


def test_numbers_run_from_one_per_series_and_are_kept_per_letter(book: NumberBook) -> None:
    # Given letters of two institutions in 2026 and one in 2027
    assert book.number("医保监函", 2026, "2026-03/H1") == 1
    assert book.number("医保监函", 2026, "2026-03/P2") == 2
    assert book.number("医保监函", 2027, "2027-01/H1") == 1  # a new year starts again
    assert book.number("医保监提", 2026, "2026-03/H1") == 1  # another 代字, another series
    # When a letter is numbered again (a retry), Then it keeps its number and takes none
    assert book.number("医保监函", 2026, "2026-03/H1") == 1
    assert book.number("医保监函", 2026, "2026-04/H1") == 3


def test_concurrent_letters_get_distinct_consecutive_numbers(local_book: NumberBook) -> None:
    keys = [f"2026-03/H{i}" for i in range(20)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        numbers = list(pool.map(lambda k: local_book.number("医保监函", 2026, k), keys))
    assert sorted(numbers) == list(range(1, 21))


def test_the_document_number_follows_gb_t_9704() -> None:
    assert document_number("医保监函", 2026, 7) == "医保监函〔2026〕7号"  # 六角括号, no padding
