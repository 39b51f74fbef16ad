"""The API's access audit in the local deployment: its own table `access_audit` in the state
DB file (`DIR/state.db`), beside the tables of `rxguard.local.state` and independent of
their schema version. Same interface and contract as the in-memory and DynamoDB logs
(`rxguard.api.audit.AuditLog`; tests/contract)."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from rxguard.api.audit import AccessRecord, AuditLog, AuditQuery

STATE_FILE = "state.db"  # the state DB of rxguard.local.state
_SCHEMA = """
CREATE TABLE IF NOT EXISTS access_audit (
    record_id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    caller TEXT NOT NULL,
    institution TEXT,
    patient TEXT,
    action TEXT NOT NULL,
    decision TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS access_audit_by_caller ON access_audit (caller, at);
CREATE INDEX IF NOT EXISTS access_audit_by_patient ON access_audit (patient, at);
CREATE INDEX IF NOT EXISTS access_audit_by_caller_action ON access_audit (caller, action, at, patient, decision);
"""
# The stranger count in SQL over the covering index (caller, action, at, patient, decision):
# one statement, no row decoded in Python (the generic `AuditLog.strangers` decodes every
# record of the caller's window, which grew with each check: 27 ms a check after 1,000).
_STRANGERS = """
SELECT
    (SELECT COUNT(*) FROM (
        SELECT patient FROM access_audit
        WHERE caller = :caller AND action = 'check' AND at >= :since
          AND patient IS NOT NULL AND decision <> 'denied'
        EXCEPT
        SELECT patient FROM access_audit
        WHERE caller = :caller AND action = 'dispensation' AND at >= :since
          AND patient IS NOT NULL AND decision <> 'denied'
    )),
    EXISTS (SELECT 1 FROM access_audit WHERE caller = :caller AND action = 'alert' AND at >= :since)
"""
_COLUMNS = "record_id, at, caller, institution, patient, action, decision, detail"


class SqliteAuditLog(AuditLog):
    """Append-only rows; one connection per thread (WAL, as the state DB)."""

    def __init__(self, path: Path, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / STATE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connection().executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # as the state's own connections (rxguard.local.state): a commit survives the process
            # (kill, crash); only a power cut or an OS crash may lose the last commits, the lines they audit with them
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            self._local.conn = conn
        return conn

    def record(self, records: Sequence[AccessRecord]) -> None:
        if not records:
            return
        rows = []
        for rec in records:
            rid = rec.record_id or uuid.uuid4().hex
            rows.append(
                (rid, _iso(rec.at), rec.caller, rec.institution, rec.patient, rec.action, rec.decision, rec.detail)
            )
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(f"INSERT INTO access_audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def query(self, query: AuditQuery, limit: int, token: str | None) -> tuple[list[AccessRecord], str | None]:
        where, args = [], []
        for column, value in (("caller", query.caller), ("patient", query.patient)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.since is not None:
            where.append("at >= ?")
            args.append(_iso(query.since))
        if query.until is not None:
            where.append("at <= ?")
            args.append(_iso(query.until))
        start = int(token) if token and token.isdigit() else 0
        sql = f"SELECT {_COLUMNS} FROM access_audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at DESC, record_id DESC LIMIT ? OFFSET ?"
        rows = self._connection().execute(sql, [*args, limit + 1, start]).fetchall()
        more = len(rows) > limit
        return [_record(r) for r in rows[:limit]], str(start + limit) if more else None

    def recent(self, caller: str, since: datetime) -> list[AccessRecord]:
        rows = self._connection().execute(
            f"SELECT {_COLUMNS} FROM access_audit WHERE caller = ? AND at >= ?", (caller, _iso(since))
        )
        return [_record(r) for r in rows.fetchall()]

    def strangers(self, caller: str, since: datetime) -> tuple[int, bool]:
        """As `AuditLog.strangers`, counted by SQLite over the covering index."""
        count, alerted = self._connection().execute(_STRANGERS, {"caller": caller, "since": _iso(since)}).fetchone()
        return int(count), bool(alerted)


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(row: tuple[str, ...]) -> AccessRecord:
    rid, at, caller, institution, patient, action, decision, detail = row
    return AccessRecord(
        record_id=rid,
        at=datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC),
        caller=caller,
        institution=institution,
        patient=patient,
        action=action,
        decision=decision,
        detail=detail,
    )
