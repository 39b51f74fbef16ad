"""The three places where the offline mode steps into moto, each narrow and reversible.

1. Lambda invoke (`LambdaSimpleBackend.invoke`, the backend moto uses with
   `lambda.use_docker = False`, which would echo the payload): dispatch to the
   `LambdaRouter`; an exception comes back with `x-amz-function-error`.
2. EventBridge rule targets (`moto.events.models.Rule.send_to_targets`): moto delivers
   to logs, SQS and buses but raises for Step Functions and Lambda targets; those are
   handed to a callback of the offline environment (which starts the execution with a
   name derived from the S3 object), the rest go on to moto.
3. DynamoDB Query (`moto.dynamodb.models.table.Table.query`): moto walks every item of
   the table on every call. The patched query offers moto only the items of the queried
   partition and lets moto's own code do the rest (range conditions, filters, order,
   paging, projection): for the table's hash key the partition moto already stores by
   hash key; for an index (GSI) a grouping of the items by the index's hash-key values,
   built once and then kept up to date write by write (put, delete, update move one
   item). `tests/e2e/test_offline_harness.py` proves the answers equal moto's own.
"""

from __future__ import annotations

import copy
import inspect
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.dynamodb.models.table import Table
from moto.events.models import Rule
from moto.utilities.arns import parse_arn

from rxguard_tools.offline.lambdas import LambdaRouter

TargetCallback = Callable[[dict[str, Any], dict[str, Any]], None]  # (target, event)


# ---------------------------------------------------------------------------- Lambda
@contextmanager
def route_lambda(router: LambdaRouter) -> Iterator[None]:
    original = LambdaSimpleBackend.invoke

    def invoke(
        self: LambdaSimpleBackend,
        function_name: str,
        qualifier: str | None,
        body: Any,
        headers: Any,
        response_headers: Any,
    ) -> str | bytes | None:
        route = router.route_for(function_name)
        if route is None:
            return original(self, function_name, qualifier, body, headers, response_headers)
        self.get_function(function_name, qualifier)  # unknown function -> moto's own error
        event = json.loads(body) if body else {}
        payload, errored = router.invoke(route, event)
        if errored:
            response_headers["x-amz-function-error"] = "Unhandled"
        return payload

    LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign]
    try:
        yield
    finally:
        LambdaSimpleBackend.invoke = original  # type: ignore[method-assign]


# ---------------------------------------------------------------------- EventBridge
ROUTED_SERVICES = ("states", "lambda")


@contextmanager
def route_event_targets(callback: TargetCallback) -> Iterator[None]:
    original = Rule.send_to_targets

    def send_to_targets(self: Rule, original_event: Any, transform_input: bool = True) -> None:
        if not self.event_pattern.matches_event(original_event):
            return
        ours = [t for t in self.targets if parse_arn(t["Arn"]).service in ROUTED_SERVICES]
        rest = [t for t in self.targets if t not in ours]
        for target in ours:
            callback(target, _target_input(target, original_event))
        if rest:
            clone = copy.copy(self)
            clone.targets = rest
            original(clone, original_event, transform_input)

    Rule.send_to_targets = send_to_targets  # type: ignore[method-assign]
    try:
        yield
    finally:
        Rule.send_to_targets = original  # type: ignore[method-assign]


def _target_input(target: dict[str, Any], event: Any) -> Any:
    """The target's input as EventBridge builds it: Input, InputPath ($.a.b) or the event."""
    if target.get("Input"):
        return json.loads(target["Input"])
    path = target.get("InputPath")
    if path:
        value = event
        for part in [p for p in path.removeprefix("$").split(".") if p]:
            value = value[part]
        return value
    return copy.deepcopy(event)


# ------------------------------------------------------------------------- DynamoDB
_narrow = threading.local()
_index_lock = threading.RLock()


class _IndexGroups:
    """Items of one table grouped by the hash-key values of one index, kept up to date
    write by write (each write moves one item between groups), so a query's cost follows
    its partition, not the table (a rebuild after every write made long runs quadratic)."""

    def __init__(self, table: Any, attrs: list[str], all_items: Callable[[Any], list[Any]]) -> None:
        self.attrs = attrs
        self.groups: dict[tuple[Any, ...], dict[Any, Any]] = {}
        self.member: dict[Any, tuple[Any, ...]] = {}  # item key -> its group
        for item in all_items(table):
            self.place(_item_key(table, item), item)

    def place(self, key: Any, item: Any | None) -> None:
        old = self.member.pop(key, None)
        if old is not None:
            group = self.groups.get(old, {})
            group.pop(key, None)
            if not group:
                self.groups.pop(old, None)
        if item is None:
            return
        values = tuple(item.attrs.get(a) for a in self.attrs)
        if all(v is not None for v in values):
            self.groups.setdefault(values, {})[key] = item
            self.member[key] = values


def _item_key(table: Any, item: Any) -> Any:
    return (item.hash_key, item.range_key if table.range_key_attr else None)


def _index_groups(table: Any, index_name: str, all_items: Callable[[Any], list[Any]]) -> dict[tuple[Any, ...], Any]:
    index = {i.name: i for i in table.all_indexes()}.get(index_name)
    if index is None:
        return {}
    with _index_lock:
        cache: dict[str, _IndexGroups] = table.__dict__.setdefault("_offline_indexes", {})
        if index_name not in cache:
            attrs = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
            cache[index_name] = _IndexGroups(table, attrs, all_items)
        return cache[index_name].groups


def _written(table: Any, hash_value: Any, range_value: Any) -> None:
    """After a write of one item: move it to its current group in every grouping built."""
    cache: dict[str, _IndexGroups] = table.__dict__.get("_offline_indexes", {})
    if not cache:
        return
    with _index_lock:
        item = table.get_item(hash_value, range_value) if (range_value or not table.range_key_attr) else None
        key = (hash_value, range_value if table.range_key_attr else None)
        for groups in cache.values():
            groups.place(key, item)


def _key_values(table: Any, attrs: dict[str, Any]) -> tuple[Any, Any]:
    from moto.dynamodb.models.dynamo_type import DynamoType

    hash_value = DynamoType(attrs[table.hash_key_attr])
    range_value = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
    return hash_value, range_value


@contextmanager
def narrow_hash_key_query() -> Iterator[None]:
    """Query offers moto only the items of the queried partition (table or index);
    moto's own code still applies every condition, the order, paging and projection."""
    from moto.dynamodb.models import DynamoDBBackend

    original_query = Table.query
    original_all_items = Table.all_items
    original_put = Table.put_item
    original_delete = Table.delete_item
    original_update = DynamoDBBackend.update_item
    signature = inspect.signature(original_query)

    def all_items(self: Table) -> list[Any]:
        offered = getattr(_narrow, "offer", None)
        if offered is not None and offered[0] is self:
            return list(offered[1])
        return original_all_items(self)

    def partition(self: Table, hash_key: Any) -> list[Any]:
        if hash_key not in self.items:
            return []
        found = self.items[hash_key]
        return list(found.values()) if self.range_key_attr else [found]

    def query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, hash_key, *args, **kwargs).arguments
        index_name = bound.get("index_name")
        if index_name:
            conditions = dict(bound.get("hash_key_conditions") or [])
            index = {i.name: i for i in self.all_indexes()}.get(index_name)
            attrs = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"] if index else []
            if not attrs or any(a not in conditions for a in attrs):
                return original_query(self, hash_key, *args, **kwargs)
            with _index_lock:
                groups = _index_groups(self, index_name, original_all_items)
                offer = list(groups.get(tuple(conditions[a] for a in attrs), {}).values())
        elif hash_key is not None:
            offer = partition(self, hash_key)
        else:
            return original_query(self, hash_key, *args, **kwargs)
        previous = getattr(_narrow, "offer", None)
        _narrow.offer = (self, offer)
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            _narrow.offer = previous

    def put_item(self: Table, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return original_put(self, item_attrs, *args, **kwargs)
        finally:
            if self.hash_key_attr in item_attrs and (not self.range_key_attr or self.range_key_attr in item_attrs):
                _written(self, *_key_values(self, item_attrs))

    def delete_item(self: Table, hash_key: Any, range_key: Any = None, *args: Any, **kwargs: Any) -> Any:
        try:
            return original_delete(self, hash_key, range_key, *args, **kwargs)
        finally:
            _written(self, hash_key, range_key)

    def update_item(self: Any, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return original_update(self, table_name, key, *args, **kwargs)
        finally:
            table = self.get_table(table_name)  # attributes change in place
            if table.hash_key_attr in key:
                _written(table, *_key_values(table, key))

    Table.query = query  # type: ignore[method-assign]
    Table.all_items = all_items  # type: ignore[method-assign]
    Table.put_item = put_item  # type: ignore[method-assign]
    Table.delete_item = delete_item  # type: ignore[method-assign]
    DynamoDBBackend.update_item = update_item  # type: ignore[method-assign]
    try:
        yield
    finally:
        Table.query = original_query  # type: ignore[method-assign]
        Table.all_items = original_all_items  # type: ignore[method-assign]
        Table.put_item = original_put  # type: ignore[method-assign]
        Table.delete_item = original_delete  # type: ignore[method-assign]
        DynamoDBBackend.update_item = original_update  # type: ignore[method-assign]
