"""bench/cost.py: DynamoDB request units counted from boto3 calls, and the cost model
against the floor (one WRU per purchase line and per trace code)."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from bench.cost import PRICES, TARGET_MULTIPLE, CallCounter, Usage, cost_per_million, floor_per_million, item_size


def test_item_size_follows_dynamodb_sizing() -> None:
    # Given items with a string, a number and a nested map
    # Then names and UTF-8 values count, numbers about a byte per two digits
    assert item_size({"pk": {"S": "abc"}}) == 2 + 3
    assert item_size({"n": {"S": "追溯"}}) == 1 + 6
    assert item_size({"n": {"N": "12345"}}) == 1 + 4
    assert item_size({"m": {"M": {"a": {"S": "x"}}}}) > item_size({"a": {"S": "x"}})


@pytest.fixture
def table():  # type: ignore[no-untyped-def]
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        counter = CallCounter()
        counter.install()
        try:
            yield boto3.client("dynamodb", region_name="us-east-1"), counter
        finally:
            counter.uninstall()


def test_counter_charges_writes_per_item_and_kilobyte_and_reads_per_4kb(table) -> None:  # type: ignore[no-untyped-def]
    client, counter = table
    # Given a batch of three small items, one 1.5 KB item, and an eventually consistent read
    client.batch_write_item(RequestItems={"t": [{"PutRequest": {"Item": {"pk": {"S": f"k{i}"}}}} for i in range(3)]})
    client.put_item(TableName="t", Item={"pk": {"S": "big"}, "v": {"S": "x" * 1500}})
    client.get_item(TableName="t", Key={"pk": {"S": "big"}})
    # Then one batch call is three write units, the large item two, the read half a unit
    usage = counter.usage
    assert usage.calls["dynamodb.BatchWriteItem"] == 1
    assert usage.dynamodb_items_written == 4
    assert usage.dynamodb_wru == 3 + 2
    assert usage.dynamodb_rru == 0.5


def test_cost_at_the_floor_is_within_target_and_extra_writes_are_not() -> None:
    # Given a run that writes exactly one unit per line and per trace code, and nothing else
    lines, codes = 10_000, 15_000
    at_floor = Usage(lines=lines, trace_codes=codes, dynamodb_wru=lines + codes)
    # When priced
    model = cost_per_million(at_floor)
    # Then it equals the floor at the measured codes a line
    assert model["ratio_to_floor"] == 1.0 and model["within_target"]
    assert model["floor_at_measured_codes_usd"] == pytest.approx(floor_per_million(codes / lines), abs=1e-4)
    assert floor_per_million(1.5) == pytest.approx(2.5 * 1e6 * PRICES["dynamodb_wru"].usd)
    # and 30% more writes (or the same writes plus Lambda time) break the 1.25x target
    over = Usage(lines=lines, trace_codes=codes, dynamodb_wru=(lines + codes) * 1.3)
    assert cost_per_million(over)["ratio_to_floor"] == 1.3 and not cost_per_million(over)["within_target"]
    busy = Usage(lines=lines, trace_codes=codes, dynamodb_wru=lines + codes, lambda_gb_seconds=2000.0)
    model = cost_per_million(busy)
    assert model["components_usd_per_million_lines"]["lambda_compute"] > 0
    assert model["ratio_to_floor"] > TARGET_MULTIPLE
    assert model["total_usd_per_million_lines"] == pytest.approx(
        sum(model["components_usd_per_million_lines"].values()), abs=1e-3
    )


def test_each_table_is_priced_at_its_class_and_storage_counts_every_stored_line() -> None:
    # Given a month of 1,000 lines after 1,000 of history: 1 write unit a line on an IA table,
    # 100 on a Standard one, and 1 MB stored on each
    from bench.cost import PRICES, RETENTION_DAYS, monthly_batch_cost, table_classes

    classes = table_classes()
    assert classes["PurchasesTable"] == "STANDARD_INFREQUENT_ACCESS" and classes["AggregatesTable"] == "STANDARD"
    figures = {
        "lines": 1000,
        "history_lines": 1000,
        "write_units_by_table": {"PurchasesTable": 1000, "AggregatesTable": 100},
        "read_units_by_table": {},
        "stored": {"PurchasesTable": {"bytes": 2**20}, "AggregatesTable": {"bytes": 2**20}},
        "screen_cpu_seconds_outside_moto": 0.0,
        "assumed_io_wait_seconds": 0.0,
        "dynamodb_reads_per_1k_lines": 0.0,
    }
    # When it is priced
    cost = monthly_batch_cost(figures)
    by_table = cost["dynamodb_by_table_usd_per_million_lines"]
    # Then writes and storage follow each table's class, over the 2,000 lines stored
    assert by_table["PurchasesTable"]["writes"] == round(1000 * PRICES["dynamodb_ia_wru"].usd * 1000, 4)
    assert by_table["AggregatesTable"]["writes"] == round(100 * PRICES["dynamodb_wru"].usd * 1000, 4)
    gb_months = 2**20 / 2000 * 1e6 / 2**30 * RETENTION_DAYS / 30.4
    assert by_table["PurchasesTable"]["storage_400d"] == round(gb_months * 0.10, 4)
    assert by_table["AggregatesTable"]["storage_400d"] == round(gb_months * 0.25, 4)
    assert by_table["PurchasesTable"]["pitr_400d"] == by_table["AggregatesTable"]["pitr_400d"]
    assert cost["write_units_per_line"] == 1.1
