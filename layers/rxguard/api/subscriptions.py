"""Subscriptions to the alerts and letters topics (`POST/GET/DELETE /v1/subscriptions`).

A subscription is an SNS subscription with a filter policy on the message attributes every
message carries (docs/alerts.md): region prefix (`region`, prefix match on the 6-digit
admdvs), institutions (`institution_id`), rules (`rule_id`; our ids or the platform's
codes of rules/national.yaml), severities (`severity`) and message types (`message_type`).
`Subscriptions` is the port; `InMemorySubscriptions` here (tests, offline serve) and
`rxguard.api.store_dynamo.AwsSubscriptions` (SNS) the adapters. No AWS SDK here.
"""

from __future__ import annotations

import itertools
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from rxguard.api.errors import InvalidField
from rxguard.api.models import SubscriptionRequest, SubscriptionView

MAX_COMBINATIONS = 150  # SNS: the product of the values of a filter policy's keys


def filter_policy(request: SubscriptionRequest, resolve_rule: Any) -> dict[str, list[Any]]:
    """The SNS filter policy (MessageAttributes scope) of a request; 400 naming the field
    for an unknown rule or a policy SNS would refuse."""
    f = request.filters
    policy: dict[str, list[Any]] = {}
    if f.region_prefix:
        policy["region"] = [{"prefix": f.region_prefix}]
    if f.institutions:
        policy["institution_id"] = sorted({code.upper() for code in f.institutions})
    if f.rules:
        rules = []
        for i, value in enumerate(f.rules):
            rule_id = resolve_rule(value)
            if rule_id is None:
                raise InvalidField(f"filters.rules[{i}]: unknown rule {value!r}", f"filters.rules[{i}]")
            rules.append(rule_id)
        policy["rule_id"] = sorted(set(rules))
    if f.severities:
        policy["severity"] = sorted({s.value for s in f.severities})
    if f.message_types:
        policy["message_type"] = sorted(set(f.message_types))
    combinations = 1
    for values in policy.values():
        combinations *= len(values)
    if combinations > MAX_COMBINATIONS:
        raise InvalidField(
            f"filters: {combinations} combinations of values; SNS allows at most {MAX_COMBINATIONS}", "filters"
        )
    return policy


def mask_endpoint(protocol: str, endpoint: str) -> str:
    """Email and phone numbers shown masked (`z***@example.cn`, `+86138****0000`)."""
    if protocol == "email" and "@" in endpoint:
        name, _, domain = endpoint.partition("@")
        return f"{name[:1]}***@{domain}"
    if protocol == "sms" and len(endpoint) > 8:
        return endpoint[:6] + "****" + endpoint[-4:]
    return endpoint


class Subscriptions(ABC):
    @abstractmethod
    def subscribe(
        self, topic: str, protocol: str, endpoint: str, policy: Mapping[str, list[Any]], owner: str
    ) -> SubscriptionView:
        """Create the subscription (email and SMS endpoints confirm by themselves)."""

    @abstractmethod
    def list(self) -> list[SubscriptionView]:
        """Every subscription of both topics, with its filter policy."""

    @abstractmethod
    def delete(self, subscription_id: str) -> bool:
        """Remove it; False when there is no such subscription."""


class InMemorySubscriptions(Subscriptions):
    def __init__(self) -> None:
        self.items: dict[str, SubscriptionView] = {}
        self._ids = itertools.count(1)

    def subscribe(
        self, topic: str, protocol: str, endpoint: str, policy: Mapping[str, list[Any]], owner: str
    ) -> SubscriptionView:
        sid = str(uuid.UUID(int=next(self._ids)))
        found = SubscriptionView(
            subscription_id=sid,
            topic=topic,
            protocol=protocol,
            endpoint=mask_endpoint(protocol, endpoint),
            filter_policy=dict(policy),
            pending_confirmation=protocol in ("email", "https"),
        )
        self.items[sid] = found
        return found

    def list(self) -> list[SubscriptionView]:
        return list(self.items.values())

    def delete(self, subscription_id: str) -> bool:
        return self.items.pop(subscription_id, None) is not None
