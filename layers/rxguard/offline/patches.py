"""The three places where the offline mode steps into moto, each narrow and reversible.

1. Lambda invoke (`LambdaSimpleBackend.invoke`, the backend moto uses with
   `lambda.use_docker = False`, which would echo the payload): dispatch to the
   `LambdaRouter`; an exception comes back with `x-amz-function-error`.
2. EventBridge rule targets (`moto.events.models.Rule.send_to_targets`): moto delivers
   to logs, SQS and buses but raises for Step Functions and Lambda targets; those are
   handed to a callback of the offline environment (which starts the execution with a
   name derived from the S3 object), the rest go on to moto.
3. DynamoDB Query on a table's own hash key (`moto.dynamodb.models.table.Table.query`):
   moto walks every item of the table to find one partition; the items are already
   stored by hash key, so the patched query offers moto only that partition and lets
   moto's own code do the rest (range conditions, filters, paging, projection).
   Index queries are left as they are. `tests/e2e/test_offline_harness.py` proves the
   answers equal moto's own.
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

from rxguard.offline.lambdas import LambdaRouter

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


@contextmanager
def narrow_hash_key_query() -> Iterator[None]:
    original_query = Table.query
    original_all_items = Table.all_items

    def all_items(self: Table) -> list[Any]:
        key = getattr(_narrow, "key", None)
        if key is not None and key[0] is self:
            partition = self.items.get(key[1]) if key[1] in self.items else None
            if partition is None:
                return []
            return list(partition.values()) if self.range_key_attr else [partition]
        return original_all_items(self)

    signature = inspect.signature(original_query)

    def query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = signature.bind(self, hash_key, *args, **kwargs).arguments.get("index_name")
        if index_name or hash_key is None:
            return original_query(self, hash_key, *args, **kwargs)
        previous = getattr(_narrow, "key", None)
        _narrow.key = (self, hash_key)
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            _narrow.key = previous

    Table.query = query  # type: ignore[method-assign]
    Table.all_items = all_items  # type: ignore[method-assign]
    try:
        yield
    finally:
        Table.query = original_query  # type: ignore[method-assign]
        Table.all_items = original_all_items  # type: ignore[method-assign]
