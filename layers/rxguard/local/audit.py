"""The API's access audit in the local deployment: its own table `access_audit` in
`DIR/checks.db`, the file of what the check API writes with every answer, beside the state
(`rxguard.local.state.State.checks`: a check's commit leaves state.db alone), independent
of the state's schema version. Same interface and contract as the in-memory and DynamoDB logs
(`rxguard.api.audit.AuditLog`; tests/contract)."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from rxguard.api.audit import AccessRecord, AuditLog, AuditQuery
from rxguard.local.state import CHECKS_CACHE_MB, CHECKS_FILE, CHECKS_PAGE_SIZE, State

_FIRST_WAIT, _MAX_WAIT = 0.0001, 0.005  # sleeps while another writer holds the lock (seconds)
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
CREATE INDEX IF NOT EXISTS access_audit_by_action ON access_audit (caller, action, at);
"""
# Who is a stranger, kept as each access is recorded (same transaction): per caller and patient,
# the latest check and the latest dispensation (refusals left out). A patient is a stranger
# since T when checked since T and not dispensed to since T, so the count reads one index entry
# per patient the caller checked in the window, not every record of the window (that cost
# 9 ms a check at 10,000 records a day, 20 ms at 30,000; this 0.1 ms).
_STRANGERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS access_strangers (
    caller TEXT NOT NULL,
    patient TEXT NOT NULL,
    last_check_at TEXT,
    last_dispensation_at TEXT,
    PRIMARY KEY (caller, patient)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS access_strangers_by_check
    ON access_strangers (caller, last_check_at, last_dispensation_at);
"""
_BACKFILL = """
INSERT OR REPLACE INTO access_strangers (caller, patient, last_check_at, last_dispensation_at)
SELECT caller, patient,
       MAX(CASE WHEN action = 'check' THEN at END),
       MAX(CASE WHEN action = 'dispensation' THEN at END)
FROM access_audit
WHERE patient IS NOT NULL AND decision <> 'denied' AND action IN ('check', 'dispensation')
GROUP BY caller, patient
"""
_LATEST = """
INSERT INTO access_strangers (caller, patient, last_check_at, last_dispensation_at) VALUES (?, ?, ?, ?)
ON CONFLICT (caller, patient) DO UPDATE SET
    last_check_at = CASE
        WHEN excluded.last_check_at IS NULL THEN last_check_at
        WHEN last_check_at IS NULL OR excluded.last_check_at > last_check_at THEN excluded.last_check_at
        ELSE last_check_at END,
    last_dispensation_at = CASE
        WHEN excluded.last_dispensation_at IS NULL THEN last_dispensation_at
        WHEN last_dispensation_at IS NULL OR excluded.last_dispensation_at > last_dispensation_at
            THEN excluded.last_dispensation_at
        ELSE last_dispensation_at END
"""
_STRANGERS = """
SELECT
    (SELECT COUNT(*) FROM access_strangers
     WHERE caller = :caller AND last_check_at >= :since
       AND (last_dispensation_at IS NULL OR last_dispensation_at < :since)),
    EXISTS (SELECT 1 FROM access_audit WHERE caller = :caller AND action = 'alert' AND at >= :since)
"""
_COLUMNS = "record_id, at, caller, institution, patient, action, decision, detail"


class SqliteAuditLog(AuditLog):
    """Append-only rows; one connection per thread and process (WAL, as the state DB).

    `db`: the file's `State` when the caller has one (`State.checks()`: serve's record of a
    check and this log then share each thread's connection to checks.db)."""

    def __init__(self, path: Path, busy_timeout: float = 10.0, *, db: State | None = None) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / CHECKS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout = busy_timeout
        # connections as the state's (rxguard.local.state): WAL, `synchronous=NORMAL` (a commit
        # survives the process; only a power cut or an OS crash may lose the last commits, the
        # lines they audit with them), SQLite's busy handler off (the write lock is waited for
        # by `_begin`: short, growing sleeps from 0.1 ms); a forked process opens its own
        self._db = (
            db
            if db is not None
            else State(self.path, busy_timeout=busy_timeout, cache_mb=CHECKS_CACHE_MB, page_size=CHECKS_PAGE_SIZE)
        )
        conn = self._connection()
        conn.executescript(_SCHEMA)
        self._begin(conn)  # one process creates the summary and fills it from the records
        try:
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'access_strangers'")
            if not exists.fetchone():
                for statement in _STRANGERS_SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(_BACKFILL)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        return self._db.connection()

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, waiting for the write lock up to `busy_timeout` seconds."""
        deadline, delay = time.monotonic() + self.busy_timeout, _FIRST_WAIT
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, _MAX_WAIT)

    def record(self, records: Sequence[AccessRecord]) -> None:
        if not records:
            return
        conn = self._connection()
        self._begin(conn)
        try:
            self.insert(conn, records)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def insert(self, conn: sqlite3.Connection, records: Sequence[AccessRecord]) -> None:
        """`record` within a write transaction the caller holds on a connection to the same
        file (a check's records and warnings in one transaction: rxguard.bootstrap)."""
        rows = []
        for rec in records:
            rid = rec.record_id or uuid.uuid4().hex
            rows.append(
                (rid, _iso(rec.at), rec.caller, rec.institution, rec.patient, rec.action, rec.decision, rec.detail)
            )
        latest = [  # (caller, patient, check at, dispensation at)
            (row[2], row[4], row[1] if row[5] == "check" else None, row[1] if row[5] == "dispensation" else None)
            for row in rows
            if row[4] is not None and row[6] != "denied" and row[5] in ("check", "dispensation")
        ]
        conn.executemany(f"INSERT INTO access_audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany(_LATEST, latest)

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
        start = int(token) if token and token.isascii() and token.isdigit() else 0
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
        """As `AuditLog.strangers`, from the summary `record` keeps (one index entry per patient)."""
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
