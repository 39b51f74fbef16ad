"""The alert outbox on DynamoDB (OutboxTable): `rxguard.alerts.outbox.Outbox` on AWS.

Two items per message, written together in one transaction when the message is recorded:

- `pk = msg#<message_id>`, `sk = msg`: the message (topic, JSON, finding id, recorded_at,
  the pending key, sent_at once sent). Its conditional put (`attribute_not_exists(pk)`)
  is what records a message id once, ever. Kept 5 years (`expires_at`, the findings'
  retention), so a finding alerted once is never alerted again while it can come back.
- `pk = pending`, `sk = <recorded_at>#<n>#<message_id>`: the pending entry, a copy of the
  message, deleted (in the same transaction that sets `sent_at`) once SNS acknowledged it.
  One partition holds every pending message in recording order: `pending()` is one
  strongly consistent Query, and the partition is small (messages wait there only between
  recording and publishing: seconds, or until SNS is back).

No botocore here (the alerts never import the AWS SDK): the client is handed in, errors are
told apart by their `response` code, and throttling becomes `rxguard.errors.TransientError`
(the state machine retries it).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rxguard.alerts.outbox import Outbox, OutboxEntry
from rxguard.alerts.schema import AlertMessage
from rxguard.errors import AWS_THROTTLES, TransientError

PENDING = "pending"
MESSAGE_SK = "msg"
RETENTION_SECONDS = 5 * 366 * 24 * 3600  # the findings' retention (docs/security.md)
_THROTTLES = AWS_THROTTLES | {"TransactionConflictException"}  # a transaction lost a race: retried


def _code(exc: BaseException) -> str:
    return str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))


def _reasons(exc: BaseException) -> list[str]:
    return [str(r.get("Code", "")) for r in (getattr(exc, "response", None) or {}).get("CancellationReasons", [])]


def _transient(exc: BaseException, what: str) -> BaseException:
    if _code(exc) in _THROTTLES or any(r in _THROTTLES for r in _reasons(exc)):
        return TransientError(f"outbox: {what}: {_code(exc)}")
    return exc


def _msg_key(message_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"msg#{message_id}"}, "sk": {"S": MESSAGE_SK}}


class DynamoOutbox(Outbox):
    """The outbox contract (tests/contract/test_outbox_contract.py) on one DynamoDB table."""

    def __init__(self, table: str, dynamodb_client: Any, *, clock: Any = None) -> None:
        self.table = table
        self.ddb = dynamodb_client
        self._clock = clock or (lambda: datetime.now(UTC))
        self._pending_keys: dict[str, str] = {}  # message id -> its pending sort key (from record/pending)

    # ------------------------------------------------------------------ record
    def record(self, entries: Sequence[OutboxEntry]) -> list[OutboxEntry]:
        fresh: list[OutboxEntry] = []
        now = self._clock()
        stamp = now.isoformat(timespec="microseconds")
        expires = str(int(now.timestamp()) + RETENTION_SECONDS)
        seen: set[str] = set()
        for n, entry in enumerate(entries):
            if entry.message_id in seen:
                continue
            seen.add(entry.message_id)
            if self._record_one(entry, f"{stamp}#{n:06d}#{entry.message_id}", stamp, expires):
                fresh.append(entry)
        return fresh

    def _record_one(self, entry: OutboxEntry, pending_key: str, stamp: str, expires: str) -> bool:
        message = entry.message
        body = message.model_dump_json()
        finding_id = message.body.get("finding_id") if isinstance(message.body, dict) else None
        item: dict[str, Any] = {
            **_msg_key(message.message_id),
            "topic": {"S": entry.topic},
            "message": {"S": body},
            "recorded_at": {"S": stamp},
            "pending_key": {"S": pending_key},
            "expires_at": {"N": expires},
        }
        if finding_id:
            item["finding_id"] = {"S": str(finding_id)}
        pending: dict[str, Any] = {
            "pk": {"S": PENDING},
            "sk": {"S": pending_key},
            "message_id": {"S": message.message_id},
            "topic": {"S": entry.topic},
            "message": {"S": body},
        }
        try:
            self.ddb.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}},
                    {"Put": {"TableName": self.table, "Item": pending}},
                ]
            )
        except Exception as exc:
            if _code(exc) == "TransactionCanceledException" and (_reasons(exc) or [""])[0] == "ConditionalCheckFailed":
                return False  # recorded before (sent or pending)
            raise _transient(exc, "record") from exc
        self._pending_keys[message.message_id] = pending_key
        return True

    # ------------------------------------------------------------------ pending
    def pending(self) -> list[OutboxEntry]:
        out: list[OutboxEntry] = []
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :p",
                "ExpressionAttributeValues": {":p": {"S": PENDING}},
                "ConsistentRead": True,
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            try:
                page = self.ddb.query(**kwargs)
            except Exception as exc:
                raise _transient(exc, "pending") from exc
            for item in page.get("Items", []):
                message = AlertMessage.model_validate_json(item["message"]["S"])
                self._pending_keys[message.message_id] = item["sk"]["S"]
                out.append(OutboxEntry(item["topic"]["S"], message))
            start = page.get("LastEvaluatedKey")
            if not start:
                return out

    # ------------------------------------------------------------------ mark sent
    def mark_sent(self, message_ids: Iterable[str]) -> None:
        sent_at = self._clock().isoformat(timespec="microseconds")
        todo: list[tuple[str, str]] = []
        for message_id in dict.fromkeys(message_ids):
            key = self._pending_keys.get(message_id) or self._lookup_pending_key(message_id)
            if key is not None:
                todo.append((message_id, key))
        for i in range(0, len(todo), 50):  # a transaction holds at most 100 items
            items: list[dict[str, Any]] = []
            for message_id, key in todo[i : i + 50]:
                items.append(
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": _msg_key(message_id),
                            "UpdateExpression": "SET sent_at = if_not_exists(sent_at, :t)",
                            "ExpressionAttributeValues": {":t": {"S": sent_at}},
                        }
                    }
                )
                items.append({"Delete": {"TableName": self.table, "Key": {"pk": {"S": PENDING}, "sk": {"S": key}}}})
            self._transact(items)
            for message_id, _ in todo[i : i + 50]:
                self._pending_keys.pop(message_id, None)

    def _transact(self, items: list[dict[str, Any]], attempts: int = 5) -> None:
        for attempt in range(attempts):
            try:
                self.ddb.transact_write_items(TransactItems=items)
                return
            except Exception as exc:
                error = _transient(exc, "mark sent")
                if not isinstance(error, TransientError) or attempt == attempts - 1:
                    raise error from exc
                time.sleep(0.05 * 2**attempt)

    def _lookup_pending_key(self, message_id: str) -> str | None:
        """The pending key of a message still pending (None: unknown, or sent already)."""
        try:
            item = self.ddb.get_item(TableName=self.table, Key=_msg_key(message_id), ConsistentRead=True).get("Item")
        except Exception as exc:
            raise _transient(exc, "mark sent") from exc
        if not item or "sent_at" in item:
            return None
        return str(item["pending_key"]["S"])

    # ------------------------------------------------------------------ recorded
    def recorded(self, message_ids: Collection[str]) -> set[str]:
        ids = list(dict.fromkeys(message_ids))
        found: set[str] = set()
        for i in range(0, len(ids), 100):
            keys: list[dict[str, Any]] = [_msg_key(m) for m in ids[i : i + 100]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True, "ProjectionExpression": "pk"}}
            for attempt in range(8):
                try:
                    answer = self.ddb.batch_get_item(RequestItems=request)
                except Exception as exc:
                    raise _transient(exc, "recorded") from exc
                found.update(item["pk"]["S"].removeprefix("msg#") for item in answer["Responses"].get(self.table, []))
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05 * 2**attempt)
            else:
                raise TransientError("outbox: recorded: keys still unprocessed")
        return found

    def describe(self) -> dict[str, Any]:
        """For logs: the table and how many messages wait (a Query count)."""
        answer = self.ddb.query(
            TableName=self.table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": PENDING}},
            Select="COUNT",
        )
        return {"table": self.table, "pending": int(answer.get("Count", 0))}
