"""Access audit (issue 15): every check and history read through the API, recorded.

Each record says who (the caller's principal and the institution it acted for), about whom
(the patient as a keyed pseudonym, never the number), when, what (check, dispensation,
findings, finding) and the decision (the answer's pass / warn / block, `allowed` for reads,
`denied` when access was refused). The regulator reads the log at `GET /v1/audit`.

A caller that checks many patients it never dispensed to within a window (a scraping
HIS, a stolen credential) raises an alert: `AuditLog.strangers` counts them from the log
itself (no extra history read on the check path), and the service records the alert as
an `alert` record (one per caller and window), logs it for the alarm, and publishes
`stranger_alert` (message_type `access`, no patient in it) through the alerts outbox:
SNS on AWS, the local outbox (out/alerts.jsonl at the next run) offline.

Storage: `AuditLog` here with an in-memory and a DynamoDB implementation (AuditTable of
template.yaml); SQLite in `rxguard.local.audit` (table `access_audit` of the state DB).
"""

from __future__ import annotations

import base64
import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from rxguard.alerts.schema import SCHEMA_VERSION, AlertMessage

Action = Literal["check", "dispensation", "findings", "finding", "alert"]
RETENTION = timedelta(days=5 * 365 + 1)  # the case-file retention (docs/security.md)


class AccessRecord(BaseModel):
    """One audited access. `patient` is a pseudonym (`p-` + 20 hex digits) or None."""

    model_config = ConfigDict(frozen=True)

    at: datetime  # UTC
    caller: str
    institution: str | None
    patient: str | None
    action: Action
    decision: str  # pass | warn | block | allowed | denied | alert
    detail: str | None = None
    record_id: str = ""

    def with_id(self) -> AccessRecord:
        return self if self.record_id else self.model_copy(update={"record_id": uuid.uuid4().hex})


class AuditPage(BaseModel):
    """A page of the access log, newest first."""

    items: list[AccessRecord]
    next_token: str | None = None


@dataclass(frozen=True)
class AuditQuery:
    caller: str | None = None
    patient: str | None = None  # a pseudonym
    since: datetime | None = None
    until: datetime | None = None


class AuditLog(ABC):
    """Append-only access log. Implementations keep records for RETENTION."""

    @abstractmethod
    def record(self, records: Sequence[AccessRecord]) -> None:
        """Append records (each gets a record id when it has none)."""

    @abstractmethod
    def query(self, query: AuditQuery, limit: int, token: str | None) -> tuple[list[AccessRecord], str | None]:
        """Records newest first; `token` continues a page."""

    @abstractmethod
    def recent(self, caller: str, since: datetime) -> list[AccessRecord]:
        """One caller's records since a time (for the stranger count)."""

    def strangers(self, caller: str, since: datetime) -> tuple[int, bool]:
        """(distinct patients the caller checked since `since` and never recorded a dispensation
        for, whether an alert about the caller is recorded since then): one read."""
        checked: set[str] = set()
        dispensed: set[str] = set()
        alerted = False
        for rec in self.recent(caller, since):
            if rec.action == "alert":
                alerted = True
            elif rec.patient is None or rec.decision == "denied":
                continue
            elif rec.action == "check":
                checked.add(rec.patient)
            elif rec.action == "dispensation":
                dispensed.add(rec.patient)
        return len(checked - dispensed), alerted


def _matches(rec: AccessRecord, query: AuditQuery) -> bool:
    return (
        (query.caller is None or rec.caller == query.caller)
        and (query.patient is None or rec.patient == query.patient)
        and (query.since is None or rec.at >= query.since)
        and (query.until is None or rec.at <= query.until)
    )


def _page(items: list[AccessRecord], limit: int, token: str | None) -> tuple[list[AccessRecord], str | None]:
    start = int(token) if token and token.isascii() and token.isdigit() else 0
    page = items[start : start + limit]
    more = start + limit < len(items)
    return page, str(start + limit) if more else None


@dataclass
class InMemoryAuditLog(AuditLog):
    records: list[AccessRecord] = field(default_factory=list)

    def record(self, records: Sequence[AccessRecord]) -> None:
        self.records.extend(r.with_id() for r in records)

    def query(self, query: AuditQuery, limit: int, token: str | None) -> tuple[list[AccessRecord], str | None]:
        found = sorted((r for r in self.records if _matches(r, query)), key=lambda r: (r.at, r.record_id), reverse=True)
        return _page(found, limit, token)

    def recent(self, caller: str, since: datetime) -> list[AccessRecord]:
        return [r for r in self.records if r.caller == caller and r.at >= since]


class DynamoAuditLog(AuditLog):
    """AuditTable: key (caller, sk = `<at ISO>#<record id>`), index ByPatient (patient, sk);
    `expires_at` (epoch seconds) is the TTL attribute. Writes are PutItem only; reads Query."""

    def __init__(self, table: str, client: Any, patient_index: str = "ByPatient") -> None:
        self.table, self.client, self.patient_index = table, client, patient_index

    def record(self, records: Sequence[AccessRecord]) -> None:
        for rec in records:
            rec = rec.with_id()
            item: dict[str, Any] = {
                "caller": {"S": rec.caller},
                "sk": {"S": f"{_iso(rec.at)}#{rec.record_id}"},
                "at": {"S": _iso(rec.at)},
                "action": {"S": rec.action},
                "decision": {"S": rec.decision},
                "record_id": {"S": rec.record_id},
                "expires_at": {"N": str(int((rec.at + RETENTION).timestamp()))},
            }
            for name in ("institution", "patient", "detail"):
                value = getattr(rec, name)
                if value:
                    item[name] = {"S": value}
            self.client.put_item(TableName=self.table, Item=item)

    def query(self, query: AuditQuery, limit: int, token: str | None) -> tuple[list[AccessRecord], str | None]:
        params: dict[str, Any] = {"TableName": self.table, "ScanIndexForward": False, "Limit": limit}
        if query.caller is not None:
            params["KeyConditionExpression"] = "caller = :k"
            values: dict[str, Any] = {":k": {"S": query.caller}}
        elif query.patient is not None:
            params["IndexName"] = self.patient_index
            params["KeyConditionExpression"] = "patient = :k"
            values = {":k": {"S": query.patient}}
        else:
            return self._scan(query, limit, token)
        filters = []
        if query.caller is not None and query.patient is not None:
            filters.append("patient = :p")
            values[":p"] = {"S": query.patient}
        if query.since is not None:
            params["KeyConditionExpression"] += " AND sk >= :since"
            values[":since"] = {"S": _iso(query.since)}
        if query.until is not None:
            filters.append("#at <= :until")
            values[":until"] = {"S": _iso(query.until)}
            params["ExpressionAttributeNames"] = {"#at": "at"}
        if filters:
            params["FilterExpression"] = " AND ".join(filters)
        params["ExpressionAttributeValues"] = values
        if token:
            params["ExclusiveStartKey"] = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
        answer = self.client.query(**params)
        return [_record(i) for i in answer.get("Items", [])], _token(answer)

    def _scan(self, query: AuditQuery, limit: int, token: str | None) -> tuple[list[AccessRecord], str | None]:
        params: dict[str, Any] = {"TableName": self.table, "Limit": limit}
        if token:
            params["ExclusiveStartKey"] = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
        answer = self.client.scan(**params)
        items = sorted((_record(i) for i in answer.get("Items", [])), key=lambda r: r.at, reverse=True)
        return [r for r in items if _matches(r, query)], _token(answer)

    def recent(self, caller: str, since: datetime) -> list[AccessRecord]:
        out: list[AccessRecord] = []
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "caller = :k AND sk >= :since",
            "ExpressionAttributeValues": {":k": {"S": caller}, ":since": {"S": _iso(since)}},
        }
        while True:
            answer = self.client.query(**params)
            out.extend(_record(i) for i in answer.get("Items", []))
            if "LastEvaluatedKey" not in answer:
                return out
            params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(item: dict[str, Any]) -> AccessRecord:
    def s(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    return AccessRecord(
        at=datetime.strptime(item["at"]["S"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC),
        caller=item["caller"]["S"],
        institution=s("institution"),
        patient=s("patient"),
        action=item["action"]["S"],
        decision=item["decision"]["S"],
        detail=s("detail"),
        record_id=item["record_id"]["S"],
    )


def _token(answer: dict[str, Any]) -> str | None:
    key = answer.get("LastEvaluatedKey")
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode() if key else None


# ---------------------------------------------------------------- the stranger alert on the alerts topic

ACCESS_BATCH = "api"  # the `batch_id` of access alerts: they come from the API, not from a batch


def stranger_alert(
    caller: str, institution: str | None, patients: int, *, limit: int, window_hours: float, at: datetime
) -> AlertMessage:
    """The alert (message_type `access`) of a caller that checked `patients` patients it never
    dispensed to within the window. Names the caller and its institution, counts the patients:
    no patient number, not even a pseudonym (the regulator reads them at GET /v1/audit).
    Id `access/<caller>/<UTC hour>`: once per caller and hour, however often it is published."""
    at = at.astimezone(UTC)
    token = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in caller)[:64] or "_"
    return AlertMessage(
        message_id=f"access/{token}/{at:%Y%m%dT%H}",
        message_type="access",
        subject=f"[rxguard] access audit: {token} checked {patients} patients without dispensing"[:99],
        body={
            "schema_version": SCHEMA_VERSION,
            "message_type": "access",
            "batch_id": ACCESS_BATCH,
            "caller": caller,
            "institution_id": institution,
            "patients_without_dispensation": patients,
            "limit": limit,
            "window_hours": window_hours,
            "detected_at": at.isoformat(),
            "reason": (
                f"{patients} patients checked within {window_hours:g} h without a dispensation (limit {limit}); "
                "the regulator reads them at GET /v1/audit"
            ),
        },
        attributes={
            "message_type": "access",
            "severity": "high",
            "rule_id": "access-audit",
            "region": "",
            "institution_id": institution or "",
            "subject_type": "institution",
            "batch_id": ACCESS_BATCH,
        },
    )
