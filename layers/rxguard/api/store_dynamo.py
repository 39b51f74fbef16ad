"""The findings store on DynamoDB (the FindingsTable of template.yaml), and the AWS wiring
of the API's services. The only module of `rxguard.api` that talks to AWS.

Table design (docs/workflow.md): key `finding_id`; GSI `by_scope` (`scope`, KEYS_ONLY) and GSI
`by_institution` (`fixmedins_code`, `occurred_at`; INCLUDE rule_id, severity, status,
scope). The finding is packed in `body` (`rxguard.dynamo.finding_body`), its status in `status` (the body has none).

What the API adds, in the same table, under keys that carry neither `scope` nor
`fixmedins_code` (so they appear in no index and no scope query):
- `review#<finding_id>`: the review (status, reason, reviewer, reviewed_at);
- `stats#<rule_id>`: counters `confirmed` / `dismissed` / `continued` / `modified` for
  `GET /v1/rules`;
- `warning#<jr_id>`: a finding a check answered (JSON in `warning`, not `body`, so no scan
  lists it; `expires_at` 90 days);
- `disposition#<finding_id>`: the prescriber's handling (3103), one item, replaced;
- `continued#<line_id>`: the reason of a continued warning, per line the check answered
  (the dispensation of the line reads it as the line's override; `expires_at` as the warning).
A disposition is one `TransactWriteItems`: the disposition item and the counters (moved
when a disposition changes).
A review is one `TransactWriteItems`: the finding's `status` (conditional: it exists and
is not superseded), the review item, and the counters (moved when a review changes).

Listing: institution -> Query `by_institution` (newest first, date range in the key
condition, rule/status/patient as filters); patient only -> Query `by_scope` on
`patient:<psn_no>` (sorted here); no filter (regulators) -> Scan, pages in table order.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, time, timedelta
from time import sleep
from typing import Any

from botocore.exceptions import ClientError

from rxguard.api.errors import Conflict, InvalidField, NotFound
from rxguard.api.models import Disposition, FindingView, Review, ReviewStatus, SubscriptionView
from rxguard.api.store import (
    FindingQuery,
    FindingsStore,
    RuleFigures,
    decode_token,
    encode_token,
    page_token,
    token_position,
    view,
)
from rxguard.api.subscriptions import Subscriptions, mask_endpoint
from rxguard.dynamo import finding_from_item
from rxguard.models import Finding
from rxguard.scope import Scope

REVIEW_PREFIX = "review#"
STATS_PREFIX = "stats#"
WARNING_PREFIX = "warning#"
DISPOSITION_PREFIX = "disposition#"
CONTINUED_PREFIX = "continued#"
WARNING_TTL = timedelta(days=90)
BY_INSTITUTION = "by_institution"
BY_SCOPE = "by_scope"


def _finding(item: Mapping[str, Any]) -> Finding:
    return finding_from_item(item)  # the body is packed (rxguard.dynamo writes the findings)


def _disposition(item: Mapping[str, Any] | None) -> Disposition | None:
    if not item:
        return None
    return Disposition(
        action=item["action"]["S"],
        reason=item["reason"]["S"] if "reason" in item else None,
        warn_type=item["warn_type"]["S"] if "warn_type" in item else None,
        disposer=item["disposer"]["S"],
        disposed_at=datetime.fromisoformat(item["disposed_at"]["S"]),
    )


def _lines_attr(finding: Finding, answered: Collection[str]) -> dict[str, Any]:
    lines = [i for i in finding.evidence if i in set(answered)]
    return {"lines": {"SS": lines}} if lines else {}


def _review(item: Mapping[str, Any] | None) -> Review | None:
    if not item:
        return None
    return Review(
        status=item["review_status"]["S"],
        reason=item["reason"]["S"],
        reviewer=item["reviewer"]["S"],
        reviewed_at=datetime.fromisoformat(item["reviewed_at"]["S"]),
    )


class DynamoFindingsStore(FindingsStore):
    def __init__(self, table: str, dynamodb_client: Any) -> None:
        self.table = table
        self.ddb = dynamodb_client

    # ------------------------------------------------------------ reads
    def _add_to_figures(self, rule_id: str, counts: dict[str, int]) -> dict[str, Any]:
        """A transaction item adding `counts` (attribute -> delta) to a rule's figures item."""
        return {
            "Update": {
                "TableName": self.table,
                "Key": {"finding_id": {"S": STATS_PREFIX + rule_id}},
                "UpdateExpression": "ADD " + ", ".join(f"{name} :{name}" for name in counts),
                "ExpressionAttributeValues": {f":{name}": {"N": str(n)} for name, n in counts.items()},
            }
        }

    def _batch_get(self, keys: list[str]) -> dict[str, Mapping[str, Any]]:
        """Items by key, BatchGetItem (100 keys a request), unprocessed keys retried."""
        items: dict[str, Mapping[str, Any]] = {}
        for start in range(0, len(keys), 100):
            request = {self.table: {"Keys": [{"finding_id": {"S": k}} for k in keys[start : start + 100]]}}
            for attempt in range(8):
                answer = self.ddb.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    items[item["finding_id"]["S"]] = item
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                sleep(min(0.05 * 2**attempt, 1.0))
        return items

    def _get_many(self, finding_ids: list[str]) -> dict[str, tuple[Finding, Review | None, Disposition | None]]:
        """Findings with their reviews and dispositions in one batched read."""
        prefixes = ("", REVIEW_PREFIX, DISPOSITION_PREFIX)
        items = self._batch_get([p + fid for fid in finding_ids for p in prefixes])
        out = {}
        for fid in finding_ids:
            if fid in items and "body" in items[fid]:
                out[fid] = (
                    _finding(items[fid]),
                    _review(items.get(REVIEW_PREFIX + fid)),
                    _disposition(items.get(DISPOSITION_PREFIX + fid)),
                )
        return out

    def _warning(self, finding_id: str) -> tuple[Finding, Disposition | None, list[str]] | None:
        """A warning, its disposition and the lines the check answered for."""
        items = self._batch_get([WARNING_PREFIX + finding_id, DISPOSITION_PREFIX + finding_id])
        item = items.get(WARNING_PREFIX + finding_id)
        if item is None or "warning" not in item:
            return None
        return (
            Finding.model_validate_json(item["warning"]["S"]),
            _disposition(items.get(DISPOSITION_PREFIX + finding_id)),
            sorted(item.get("lines", {}).get("SS", [])),
        )

    def get(self, finding_id: str) -> FindingView | None:
        found = self._get_many([finding_id]).get(finding_id)
        if found is not None:
            return view(*found)
        warning = self._warning(finding_id)
        if warning is None:
            return None
        return view(warning[0], None, warning[1]).model_copy(update={"recorded": False})

    def continued_reasons(self, line_ids: Collection[str]) -> dict[str, str]:
        """One BatchGetItem on `continued#<line_id>` (written by `dispose`)."""
        items = self._batch_get([CONTINUED_PREFIX + i for i in sorted(set(line_ids))])
        return {key[len(CONTINUED_PREFIX) :]: item["reason"]["S"] for key, item in items.items() if "reason" in item}

    def query(self, query: FindingQuery, limit: int, token: str | None = None) -> tuple[list[FindingView], str | None]:
        if query.institution is not None:
            return self._query_institution(query, limit, token)
        if query.psn_no is not None:
            return self._query_patient(query, limit, token)
        return self._scan(query, limit, token)

    def _filters(self, query: FindingQuery, names: dict[str, str], values: dict[str, Any]) -> list[str]:
        parts = []
        if query.rule_id is not None:
            names["#rule"] = "rule_id"
            values[":rule"] = {"S": query.rule_id}
            parts.append("#rule = :rule")
        names["#st"] = "status"
        if query.status is not None:
            values[":st"] = {"S": query.status}
            parts.append("#st = :st")
        else:
            values[":sup"] = {"S": "superseded"}
            parts.append("#st <> :sup")
        if query.psn_no is not None:
            names["#scope"] = "scope"
            values[":scope"] = {"S": str(Scope.patient(query.psn_no))}
            parts.append("#scope = :scope")
        return parts

    def _page(
        self, operation: str, kwargs: dict[str, Any], limit: int, start: dict[str, Any] | None, key_attrs: list[str]
    ) -> tuple[list[str], str | None]:
        """Follow pages until `limit` matching ids; the token is the key of the last id returned."""
        ids: list[str] = []
        last_items: list[Mapping[str, Any]] = []
        if start:
            kwargs["ExclusiveStartKey"] = start
        call = getattr(self.ddb, operation)
        while True:
            answer = call(Limit=max(limit * 2, 25), **kwargs)
            for item in answer.get("Items", []):
                ids.append(item["finding_id"]["S"])
                last_items.append(item)
                if len(ids) == limit:
                    more = item is not answer["Items"][-1] or bool(answer.get("LastEvaluatedKey"))
                    key = {a: item[a] for a in key_attrs if a in item}
                    return ids, encode_token({"k": key}) if more else None
            last = answer.get("LastEvaluatedKey")
            if not last:
                return ids, None
            kwargs["ExclusiveStartKey"] = last

    def _start(self, token: str | None) -> dict[str, Any] | None:
        if not token:
            return None
        key = decode_token(token).get("k")
        if not isinstance(key, dict) or "finding_id" not in key:
            raise InvalidField("next_token is not a token this API issued", "next_token")
        return key

    def _views(self, ids: list[str]) -> list[FindingView]:
        found = self._get_many(ids)
        return [view(*found[i]) for i in ids if i in found]

    def _query_institution(
        self, query: FindingQuery, limit: int, token: str | None
    ) -> tuple[list[FindingView], str | None]:
        names = {"#inst": "fixmedins_code", "#at": "occurred_at"}
        values: dict[str, Any] = {":inst": {"S": query.institution}}
        key = "#inst = :inst"
        low = datetime.combine(query.date_from, time.min).isoformat() if query.date_from else None
        high = datetime.combine(query.date_to, time.max).isoformat() if query.date_to else None
        if low and high:
            values[":lo"], values[":hi"] = {"S": low}, {"S": high}
            key += " AND #at BETWEEN :lo AND :hi"
        elif low:
            values[":lo"] = {"S": low}
            key += " AND #at >= :lo"
        elif high:
            values[":hi"] = {"S": high}
            key += " AND #at <= :hi"
        else:
            del names["#at"]
        filters = self._filters(query, names, values)
        kwargs = {
            "TableName": self.table,
            "IndexName": BY_INSTITUTION,
            "KeyConditionExpression": key,
            "FilterExpression": " AND ".join(filters),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
        }
        ids, next_token = self._page(
            "query", kwargs, limit, self._start(token), ["finding_id", "fixmedins_code", "occurred_at"]
        )
        return self._views(ids), next_token

    def _query_patient(
        self, query: FindingQuery, limit: int, token: str | None
    ) -> tuple[list[FindingView], str | None]:
        items = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": BY_SCOPE,
            "KeyConditionExpression": "#scope = :scope",
            "ExpressionAttributeNames": {"#scope": "scope"},
            "ExpressionAttributeValues": {":scope": {"S": str(Scope.patient(str(query.psn_no)))}},
        }
        while True:
            answer = self.ddb.query(**kwargs)
            items.extend(answer.get("Items", []))
            if not answer.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        # by_scope projects keys only (its copies cost a write unit per finding write): the bodies by key
        bodies = self._batch_get(sorted({i["finding_id"]["S"] for i in items}))
        findings = sorted(
            (f for f in (_finding(i) for i in bodies.values() if "body" in i) if query.matches(f)),
            key=lambda f: (-f.occurred_at.timestamp(), f.finding_id),
        )
        if token:
            after = token_position(token)
            findings = [f for f in findings if (-f.occurred_at.timestamp(), f.finding_id) > after]
        page = findings[:limit]
        next_token = None
        if len(findings) > limit:
            last = page[-1]
            next_token = page_token(last)
        return self._views([f.finding_id for f in page]), next_token

    def _scan(self, query: FindingQuery, limit: int, token: str | None) -> tuple[list[FindingView], str | None]:
        names: dict[str, str] = {"#body": "body"}
        values: dict[str, Any] = {}
        filters = ["attribute_exists(#body)", *self._filters(query, names, values)]
        if query.date_from:
            names["#at"] = "occurred_at"
            values[":lo"] = {"S": datetime.combine(query.date_from, time.min).isoformat()}
            filters.append("#at >= :lo")
        if query.date_to:
            names["#at"] = "occurred_at"
            values[":hi"] = {"S": datetime.combine(query.date_to, time.max).isoformat()}
            filters.append("#at <= :hi")
        kwargs = {
            "TableName": self.table,
            "FilterExpression": " AND ".join(filters),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ProjectionExpression": "finding_id",
        }
        ids, next_token = self._page("scan", kwargs, limit, self._start(token), ["finding_id"])
        return self._views(ids), next_token

    # ------------------------------------------------------------ review
    def review(self, finding_id: str, status: ReviewStatus, reason: str, reviewer: str, at: datetime) -> FindingView:
        current = self._get_many([finding_id]).get(finding_id)
        if current is None:
            raise NotFound("no such finding", "finding_id")
        finding, previous, disposition = current
        if finding.status == "superseded":
            raise Conflict("the finding is superseded: the rules no longer produce it", "status")
        review = Review(status=status, reason=reason, reviewer=reviewer, reviewed_at=at)
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": {"finding_id": {"S": finding_id}},
                    "UpdateExpression": "SET #st = :new",
                    "ConditionExpression": "attribute_exists(#body) AND #st <> :sup",
                    "ExpressionAttributeNames": {"#st": "status", "#body": "body"},
                    "ExpressionAttributeValues": {":new": {"S": status}, ":sup": {"S": "superseded"}},
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "finding_id": {"S": REVIEW_PREFIX + finding_id},
                        "rule_id": {"S": finding.rule_id},
                        "review_status": {"S": status},
                        "reason": {"S": reason},
                        "reviewer": {"S": reviewer},
                        "reviewed_at": {"S": at.isoformat()},
                    },
                }
            },
        ]
        delta = {"confirmed": 0, "dismissed": 0}
        delta[status] += 1
        if previous is not None:
            delta[previous.status] -= 1
        if any(delta.values()):
            items.append(self._add_to_figures(finding.rule_id, delta))
        try:
            self.ddb.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                raise Conflict("the finding changed while being reviewed; retry", "status") from exc
            raise
        return view(finding.model_copy(update={"status": status}), review, disposition)

    # ------------------------------------------------------------ warnings and dispositions
    def record_warnings(self, findings: Sequence[Finding], at: datetime, answered: Collection[str] = ()) -> None:
        """BatchWriteItem (25 a request; a check answers a handful: one round trip),
        unprocessed items retried. No `scope` or `fixmedins_code` attribute, so no index
        and no listing sees a warning."""
        expires = str(int((at + WARNING_TTL).timestamp()))
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "finding_id": {"S": WARNING_PREFIX + finding.finding_id},
                        "rule_id": {"S": finding.rule_id},
                        "warning": {"S": finding.model_dump_json()},  # not `body`: scans list findings by it
                        "expires_at": {"N": expires},
                        **_lines_attr(finding, answered),
                    }
                }
            }
            for finding in {f.finding_id: f for f in findings}.values()
        ]
        for start in range(0, len(requests), 25):
            pending: dict[str, Any] = {self.table: requests[start : start + 25]}
            for attempt in range(8):
                answer = self.ddb.batch_write_item(RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    break
                sleep(min(0.05 * 2**attempt, 1.0))
            if pending:
                raise RuntimeError(f"{self.table}: warnings not written after 8 attempts")

    def dispose(self, finding_id: str, disposition: Disposition) -> FindingView:
        recorded = self._get_many([finding_id]).get(finding_id)
        lines: list[str] = []
        if recorded is not None:
            finding, review, previous = recorded
        else:
            warning = self._warning(finding_id)
            if warning is None:
                raise NotFound("no such finding or warning", "finding_id")
            (finding, previous, lines), review = warning, None
        item: dict[str, Any] = {
            "finding_id": {"S": DISPOSITION_PREFIX + finding_id},
            "rule_id": {"S": finding.rule_id},
            "action": {"S": disposition.action},
            "disposer": {"S": disposition.disposer},
            "disposed_at": {"S": disposition.disposed_at.isoformat()},
        }
        if disposition.reason is not None:
            item["reason"] = {"S": disposition.reason}
        if disposition.warn_type is not None:
            item["warn_type"] = {"S": disposition.warn_type}
        delta = {"continue": 0, "modify": 0}
        delta[disposition.action] += 1
        if previous is not None:
            delta[previous.action] -= 1
        items: list[dict[str, Any]] = [{"Put": {"TableName": self.table, "Item": item}}]
        expires = str(int((disposition.disposed_at + WARNING_TTL).timestamp()))
        for line_id in lines[:90]:  # a transaction holds 100 items; a check answers a few lines
            key = {"finding_id": {"S": CONTINUED_PREFIX + line_id}}
            if disposition.action == "continue" and disposition.reason:
                mark = {**key, "reason": {"S": disposition.reason}, "expires_at": {"N": expires}}
                items.append({"Put": {"TableName": self.table, "Item": mark}})
            elif previous is not None and previous.action == "continue":
                items.append({"Delete": {"TableName": self.table, "Key": key}})
        if any(delta.values()):
            counts = {"continued": delta["continue"], "modified": delta["modify"]}
            items.append(self._add_to_figures(finding.rule_id, counts))
        self.ddb.transact_write_items(TransactItems=items)
        found = view(finding, review, disposition)
        return found if recorded is not None else found.model_copy(update={"recorded": False})

    def rule_figures(self, rule_ids: Collection[str]) -> dict[str, RuleFigures]:
        """One BatchGetItem on the counters (`stats#<rule_id>`)."""
        items = self._batch_get([STATS_PREFIX + r for r in sorted(set(rule_ids))])
        out = {}
        for key, item in items.items():
            out[key[len(STATS_PREFIX) :]] = RuleFigures(
                confirmed=int(item.get("confirmed", {}).get("N", "0")),
                dismissed=int(item.get("dismissed", {}).get("N", "0")),
                continued=int(item.get("continued", {}).get("N", "0")),
                modified=int(item.get("modified", {}).get("N", "0")),
            )
        return out


class AwsSubscriptions(Subscriptions):
    """Subscriptions as SNS subscriptions of the alerts and letters topics, the filter
    policy on the message attributes; the id is the last part of the subscription ARN."""

    def __init__(self, sns_client: Any, topics: Mapping[str, str]) -> None:
        self.sns = sns_client
        self.topics = dict(topics)  # "alerts" / "letters" -> topic ARN

    def subscribe(
        self, topic: str, protocol: str, endpoint: str, policy: Mapping[str, list[Any]], owner: str
    ) -> SubscriptionView:
        attributes = {"FilterPolicyScope": "MessageAttributes"}
        if policy:
            attributes["FilterPolicy"] = json.dumps(policy, ensure_ascii=False, sort_keys=True)
        if protocol == "sqs":
            attributes["RawMessageDelivery"] = "true"  # the JSON body as the queue message
        answer = self.sns.subscribe(
            TopicArn=self.topics[topic],
            Protocol=protocol,
            Endpoint=endpoint,
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )
        arn = answer["SubscriptionArn"]
        return SubscriptionView(
            subscription_id=arn.rsplit(":", 1)[-1],
            topic=topic,
            protocol=protocol,
            endpoint=mask_endpoint(protocol, endpoint),
            filter_policy=dict(policy),
            pending_confirmation=protocol in ("email", "https"),
        )

    def _arns(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for topic, topic_arn in sorted(self.topics.items()):
            kwargs: dict[str, Any] = {"TopicArn": topic_arn}
            while True:
                answer = self.sns.list_subscriptions_by_topic(**kwargs)
                out += [(topic, s) for s in answer.get("Subscriptions", [])]
                if not answer.get("NextToken"):
                    break
                kwargs["NextToken"] = answer["NextToken"]
        return out

    def list(self) -> list[SubscriptionView]:
        views = []
        for topic, sub in self._arns():
            arn = sub["SubscriptionArn"]
            pending = not arn.startswith("arn:")
            policy: dict[str, Any] = {}
            if not pending:
                attributes = self.sns.get_subscription_attributes(SubscriptionArn=arn).get("Attributes", {})
                policy = json.loads(attributes.get("FilterPolicy") or "{}")
            views.append(
                SubscriptionView(
                    subscription_id="pending" if pending else arn.rsplit(":", 1)[-1],
                    topic=topic,
                    protocol=sub["Protocol"],
                    endpoint=mask_endpoint(sub["Protocol"], sub["Endpoint"]),
                    filter_policy=policy,
                    pending_confirmation=pending,
                )
            )
        return views

    def delete(self, subscription_id: str) -> bool:
        for _, sub in self._arns():
            if sub["SubscriptionArn"].rsplit(":", 1)[-1] == subscription_id:
                self.sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])
                return True
        return False
