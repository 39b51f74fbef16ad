"""The local deployment's state: one SQLite file in WAL mode (docs/state.md).

`State.open(dir)` opens (creating) `DIR/state.db`; its adapters implement the same
interfaces as the DynamoDB ones:
- `SqliteRepository` (`HistoryRepository`): lines, trace-code sales, findings by scope,
  and `load_activity` for institution-outlier (computed from the stored lines);
- `SqliteFindingsStore` (`FindingsStore`): the API's listing, reading and reviews;
- `SqliteBatchStore`: batch records claimed by content hash (as `rxguard.dynamo.BatchStore`);
- `SqliteOutbox`: alert messages recorded before they are published;
- `State.next_counter(name)`: atomic counters (letters' document numbers).

Every write is one short `BEGIN IMMEDIATE` transaction; a writer that cannot get the
lock within `busy_timeout` seconds gets `StateBusy` (never a half-written state).
Connections are per thread and per process (a forked worker opens its own).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import monotonic, sleep
from typing import Any, TypeVar

from rxguard.api.errors import Conflict, InvalidField, NotFound
from rxguard.api.models import Disposition, FindingView, Review, ReviewStatus
from rxguard.api.store import FindingQuery, FindingsStore, RuleFigures, decode_token, encode_token, view
from rxguard.engine.institutions import ActivityAggregate, aggregate_from_counts
from rxguard.engine.rules import DISPENSING_RULES, trigger_lines
from rxguard.models import ClaimLine, Finding, Severity
from rxguard.repository import FindingChanges, HistoryRepository, TraceSale
from rxguard.scope import Scope

STATE_FILE = "state.db"
# What the check API writes with every answer (the access audit, its strangers summary, the
# warnings answered): a file of its own beside state.db (docs/state.md, "checks.db")
CHECKS_FILE = "checks.db"
CHECK_TABLES = ("access_audit", "access_strangers", "warnings")  # in state.db before checks.db existed
DEFAULT_BUSY_TIMEOUT = 30.0  # seconds a writer waits for the lock before StateBusy
DEFAULT_CACHE_MB = 64  # SQLite's page cache per connection: the writers of lines and findings
PAGE_SIZE = 8192  # bytes, a new state's (docs/local.md)
CHECKS_PAGE_SIZE = 4096  # bytes, a new checks.db's: a check's commit writes a few small rows
CHECKS_CACHE_MB = 8
WAL_CHECKPOINT_BYTES = 32 * 1024 * 1024  # of WAL between two automatic checkpoints
CHECKPOINT_EVERY = 0.5  # seconds between two checkpoints by `State.keep_checkpointed` (serve)
_FIRST_WAIT = 0.0001  # first sleep while the lock is taken (seconds), doubled up to _MAX_WAIT
_MAX_WAIT = 0.005
_T = TypeVar("_T")


class StateError(RuntimeError):
    """The state cannot be used (newer schema, unreadable file)."""


class StateBusy(StateError):
    """Another process held the write lock for longer than the busy timeout."""


# ---------------------------------------------------------------- schema and migrations

_SCHEMA_V1 = """
CREATE TABLE lines (
    id INTEGER PRIMARY KEY,
    line_id TEXT NOT NULL UNIQUE,
    psn_no TEXT NOT NULL,
    t TEXT NOT NULL,
    period TEXT NOT NULL,
    fixmedins_code TEXT NOT NULL,
    bilg_dr_codg TEXT,
    admdvs TEXT,
    monitored INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX lines_by_patient ON lines (psn_no, t, line_id);
CREATE INDEX lines_by_period ON lines (period, fixmedins_code) WHERE monitored = 1;

CREATE TABLE trace_sales (
    code TEXT NOT NULL,
    line_id TEXT NOT NULL,
    t TEXT NOT NULL,
    psn_no TEXT NOT NULL,
    fixmedins_code TEXT NOT NULL,
    PRIMARY KEY (code, line_id)
) WITHOUT ROWID;

CREATE TABLE findings (
    finding_id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    status TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    psn_no TEXT,
    fixmedins_code TEXT,
    occurred_at TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX findings_by_scope ON findings (scope);
CREATE INDEX findings_by_institution ON findings (fixmedins_code, occurred_at);
CREATE INDEX findings_by_patient ON findings (psn_no, occurred_at);
CREATE INDEX findings_by_time ON findings (occurred_at, finding_id);

CREATE TABLE flagged (
    finding_id TEXT NOT NULL,
    line_id TEXT NOT NULL,
    PRIMARY KEY (finding_id, line_id)
) WITHOUT ROWID;
CREATE INDEX flagged_by_line ON flagged (line_id);

CREATE TABLE reviews (
    finding_id TEXT PRIMARY KEY,
    rule_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    reviewed_at TEXT NOT NULL
);

CREATE TABLE batches (
    batch_id TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    source TEXT,
    report TEXT,
    report_key TEXT
);

CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    finding_id TEXT,
    body TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

# v2: numbers kept per key (a letter's document number given again on a retry; first writer wins)
_SCHEMA_V2 = """
CREATE TABLE kept_numbers (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

# version reached -> the script that reaches it from the version before (run in one transaction)
MIGRATIONS: dict[int, str] = {
    1: _SCHEMA_V1,
    2: _SCHEMA_V2,
    # a sale's return (退费) or split-pack units (拆零): TraceSale.encode, NULL for a plain sale
    3: "ALTER TABLE trace_sales ADD COLUMN sale TEXT",
    # institution activity (load_activity) read from the index alone, not from the wide rows
    4: "DROP INDEX lines_by_period; CREATE INDEX lines_activity ON lines "
    "(period, fixmedins_code, admdvs, bilg_dr_codg, monitored) WHERE monitored = 1",
}
SCHEMA_VERSION = max(MIGRATIONS)


def _ts(at: datetime) -> str:
    """Fixed-width ISO text: text order is time order."""
    return at.isoformat(timespec="microseconds")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class State:
    """One state directory. Thread-safe: each thread (and each process) gets its own connection."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        cache_mb: int = DEFAULT_CACHE_MB,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.cache_mb = cache_mb  # SQLite's page cache, per connection
        self.page_size = page_size  # a new file's
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._checks: State | None = None
        self._checks_lock = threading.Lock()
        self._writes = 0  # write transactions begun or ended through this object (`version`)
        self._opened = 0  # connections opened by this object (`version`)

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        cache_mb: int = DEFAULT_CACHE_MB,
    ) -> State:
        """Open the state in `directory` (created with its schema when new). `cache_mb`:
        SQLite's page cache per connection."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        state = cls(folder / STATE_FILE, busy_timeout=busy_timeout, cache_mb=cache_mb)
        state._migrate()
        return state

    # ------------------------------------------------------------ connections
    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            # Two processes opening a new state at once: switching it to WAL takes an exclusive
            # lock, and SQLite may answer "locked" at once rather than wait (seen in CI)
            # a new state's pages are 8 KiB (an existing one keeps its size: SQLite ignores this
            # once the file has pages): a batch's inserts land in random places of three indexes
            # and the trace sales, where larger pages cost ~20% less CPU an insert; 16 KiB saved
            # no more there and made each check's audit commit (4 pages) cost `serve` more
            conn.execute(f"PRAGMA page_size={self.page_size}")
            self._retrying(lambda: conn.execute("PRAGMA journal_mode=WAL"), "open")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA cache_size={-1024 * int(self.cache_mb)}")  # KiB, per connection
            conn.execute("PRAGMA temp_store=MEMORY")
            # checkpoint every 32 MB of WAL, not every 4 MB: a batch's chunk transactions (a few
            # MB each) no longer each copy the pages into the database, and an index page
            # written by several of them is copied once
            page = int(conn.execute("PRAGMA page_size").fetchone()[0])
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // page}")
            # From here on a busy lock is retried by `_retrying` (short, growing sleeps from
            # 0.1 ms): SQLite's own busy handler sleeps 1, 2, 5, 10 ... ms, far longer than
            # the sub-millisecond transactions of another worker hold the lock.
            conn.execute("PRAGMA busy_timeout=0")
        except sqlite3.OperationalError as exc:
            raise self._error(exc, "open") from exc
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path}: not an rxguard state database ({exc})") from exc
        self._local.conn = conn
        self._local.pid = os.getpid()
        with self._all_lock:
            self._all.append(conn)
            self._opened += 1
            self._local.serial = self._opened
        return conn

    def version(self) -> tuple[int, int, int]:
        """Equal from one call to the next (in one thread) only if nothing was committed to the
        state in between: SQLite's `PRAGMA data_version` counts the commits of every other
        connection (other processes', other threads'), not this connection's own, which
        `write` counts. One cheap read (no page of the database): `SqliteRepository` asks it
        before re-reading a kept history's size."""
        conn = self.connection()
        changes = int(conn.execute("PRAGMA data_version").fetchone()[0])
        return self._local.serial, changes, self._writes

    def checks(self) -> State:
        """`DIR/checks.db`: what the check API writes with every answer (the access audit,
        its strangers summary, the warnings answered), apart from the state so that a check's
        commit leaves the state alone: the state's write lock is not taken by checks, and the
        other `serve` workers' caches of the state (its pages, the histories kept by
        `SqliteRepository`) stay valid. The same connections and waits as the state's. The
        first call moves those tables out of a state that still holds them (`_move_check_tables`)."""
        with self._checks_lock:
            if self._checks is None:
                checks = State(
                    self.path.parent / CHECKS_FILE,
                    busy_timeout=self.busy_timeout,
                    cache_mb=CHECKS_CACHE_MB,
                    page_size=CHECKS_PAGE_SIZE,
                )
                _move_check_tables(self, checks)
                self._checks = checks
            return self._checks

    def keep_checkpointed(self, stop: threading.Event, every: float = CHECKPOINT_EVERY) -> None:
        """Until `stop` is set, every `every` seconds copy what the WAL of this state and of
        its checks.db holds into the database files: a PASSIVE checkpoint, which neither
        waits for readers or writers nor blocks them. `rxguard serve` runs this beside its
        workers (in the parent of the pre-forked workers, else in a thread), so the WAL never
        reaches `wal_autocheckpoint`: otherwise the commit that crosses it copies the whole WAL
        itself, and the worker that made it stalled 50-75 ms with the 10 clients waiting on
        it, the p99 of every other round of `bench.serve` (docs/api.md, "sixth pass"). A
        checkpoint that fails (a full disk, say) is logged and tried again at the next turn;
        the workers' own automatic checkpoints remain the fallback."""
        states = (self, self.checks())
        failing: set[Path] = set()
        while not stop.wait(every):
            for state in states:
                try:
                    state.connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    failing.discard(state.path)
                except sqlite3.Error as exc:
                    if state.path not in failing:  # once until it works again, not every half second
                        from rxguard.observability import logger

                        logger.warning("WAL checkpoint failed", extra={"database": str(state.path), "error": str(exc)})
                        failing.add(state.path)

    def close(self) -> None:
        """Close every connection this object opened in this process (its checks.db's too)."""
        with self._all_lock:
            conns, self._all = self._all, []
            checks = self._checks
        if checks is not None:
            checks.close()
        for conn in conns:
            with suppress(sqlite3.ProgrammingError):  # made in another thread that is gone
                conn.close()
        self._local = threading.local()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, exc: sqlite3.OperationalError, what: str) -> Exception:
        if _busy(exc):
            return StateBusy(
                f"{self.path}: the state is locked by another rxguard process (waited {self.busy_timeout:g} s to "
                f"{what}); nothing was written. Retry when the other run or serve has finished its write, or "
                "give this one a longer busy timeout."
            )
        return StateError(f"{self.path}: {what} failed: {exc}")

    def _retrying(self, func: Callable[[], _T], what: str) -> _T:
        """`func()`, retried while the database is busy, up to `busy_timeout` seconds."""
        deadline: float | None = None
        delay = _FIRST_WAIT
        while True:
            try:
                return func()
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise self._error(exc, what) from exc
                now = monotonic()
                if deadline is None:
                    deadline = now + self.busy_timeout
                if now >= deadline:
                    raise self._error(exc, what) from exc
                sleep(min(delay, deadline - now))
                delay = min(delay * 2, _MAX_WAIT)

    @contextmanager
    def write(self, what: str = "write") -> Iterator[sqlite3.Connection]:
        """One write transaction holding the write lock from its start (BEGIN IMMEDIATE);
        waits for the lock up to `busy_timeout` seconds, then raises StateBusy."""
        conn = self.connection()
        self._retrying(lambda: conn.execute("BEGIN IMMEDIATE"), what)
        self._writes += 1  # (before and after: a version read within the transaction is stale too)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                conn.execute("ROLLBACK")
                raise self._error(exc, what) from exc
        finally:
            self._writes += 1

    def read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        conn = self.connection()
        return self._retrying(lambda: conn.execute(sql, params).fetchall(), "read")

    def _migrate(self) -> None:
        known = max(MIGRATIONS)
        current = int(self.read("PRAGMA user_version")[0][0])
        if current == known:
            return
        if current > known:
            raise StateError(
                f"{self.path}: schema version {current} was written by a newer rxguard; this one knows up to {known}"
            )
        with self.write("create the schema") as conn:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])  # another process may have done it
            for version in range(current + 1, known + 1):
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={version}")

    @property
    def schema_version(self) -> int:
        return int(self.read("PRAGMA user_version")[0][0])

    # ------------------------------------------------------------ adapters
    def repository(self, *, line_cache: int = 0) -> SqliteRepository:
        return SqliteRepository(self, line_cache=line_cache)

    def findings_store(self) -> SqliteFindingsStore:
        return SqliteFindingsStore(self)

    def batches(self) -> SqliteBatchStore:
        return SqliteBatchStore(self)

    def outbox(self) -> SqliteOutbox:
        return SqliteOutbox(self)

    def next_counter(self, name: str) -> int:
        """The next number of counter `name` (1, 2, 3, ...), atomic across processes."""
        with self.write("count") as conn:
            row = conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, 1) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
                (name,),
            ).fetchone()
        return int(row[0])

    def kept(self, name: str) -> int | None:
        """The number kept under `name` (`rxguard.letters.numbers.NumberKeeper`), or None."""
        rows = self.read("SELECT value FROM kept_numbers WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else None

    def keep(self, name: str, value: int) -> int:
        """Keep `value` under `name` unless one is kept already (first writer wins, across
        processes); return the number kept."""
        with self.write("keep a number") as conn:
            conn.execute("INSERT OR IGNORE INTO kept_numbers (name, value) VALUES (?, ?)", (name, value))
            row = conn.execute("SELECT value FROM kept_numbers WHERE name = ?", (name,)).fetchone()
        return int(row[0])


# ---------------------------------------------------------------- lines and findings


def encode_line(line: ClaimLine) -> str:
    """The compact JSON of a line (fields at their default left out)."""
    return line.model_dump_json(exclude_defaults=True)


def decode_line(body: str) -> ClaimLine:
    return ClaimLine.model_validate_json(body)


def _finding_body(finding: Finding) -> str:
    return finding.model_dump_json(exclude={"status"})


def _decode_finding(body: str, status: str) -> Finding:
    finding = Finding.model_validate_json(body)
    return finding if status == "new" else finding.model_copy(update={"status": status})


def _finding_row(scope: str, status: str, finding: Finding, body: str, now: str) -> tuple[Any, ...]:
    """A findings row's columns in the order of the INSERT and the UPDATE (finding_id last)."""
    occurred = _ts(finding.occurred_at)
    return (
        scope,
        status,
        finding.rule_id,
        finding.severity.value,
        finding.psn_no,
        finding.fixmedins_code,
        occurred,
        body,
        now,
        finding.finding_id,
    )


def _flagged_lines(finding: Finding) -> list[str]:
    """Lines this finding blames for institution-outlier (engine.common.flagged_line_ids)."""
    if finding.status == "superseded" or finding.rule_id not in DISPENSING_RULES or finding.severity == Severity.LOW:
        return []
    return sorted(set(trigger_lines(finding)))


def _ids(values: Iterable[str]) -> str:
    """A JSON array parameter for `IN (SELECT value FROM json_each(?))`: one statement, any count."""
    return json.dumps(sorted(set(values)), ensure_ascii=False)


# keyed reads (SqliteRepository._keyed): the one parameter is the keys as a JSON array
_HISTORY_IDS = (
    "SELECT psn_no, line_id FROM lines WHERE psn_no IN (SELECT value FROM json_each(?)) ORDER BY psn_no, t, line_id"
)
# what tells a patient's history unchanged since it was read (`SqliteRepository.load_history`):
# lines are only ever added, never changed or deleted, so the same count is the same lines
_HISTORY_SIZES = (
    "SELECT psn_no, count(*), max(id) FROM lines WHERE psn_no IN (SELECT value FROM json_each(?)) GROUP BY psn_no"
)
_TRACE_SALES = (
    "SELECT code, t, line_id, psn_no, fixmedins_code, sale FROM trace_sales "
    "WHERE code IN (SELECT value FROM json_each(?)) ORDER BY code, t, line_id"
)
_CURRENT_FINDINGS = (
    "SELECT scope, status, body FROM findings WHERE scope IN (SELECT value FROM json_each(?)) "
    "AND status != 'superseded' ORDER BY scope, finding_id"
)


_INSERT_LINE = (
    "INSERT INTO lines (line_id, psn_no, t, period, fixmedins_code, bilg_dr_codg, admdvs, monitored, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_LINE_OR_IGNORE = _INSERT_LINE.replace("INSERT INTO", "INSERT OR IGNORE INTO", 1)
_INSERT_SALE = (
    "INSERT OR IGNORE INTO trace_sales (code, line_id, t, psn_no, fixmedins_code, sale) VALUES (?, ?, ?, ?, ?, ?)"
)


@dataclass
class LineRows:
    """Rows of lines and of their trace-code sales, as the state stores them (picklable: a
    chunk worker hands them to the one process that writes them)."""

    lines: list[tuple[Any, ...]] = field(default_factory=list)  # _INSERT_LINE's columns; line_id first
    sales: list[tuple[Any, ...]] = field(default_factory=list)  # _INSERT_SALE's columns; line_id second

    def without(self, line_ids: Collection[str]) -> LineRows:
        """These rows but those of the given lines."""
        if not line_ids:
            return self
        return LineRows(
            [row for row in self.lines if row[0] not in line_ids],
            [row for row in self.sales if row[1] not in line_ids],
        )


class SqliteRepository(HistoryRepository):
    """`HistoryRepository` on the state database: same semantics as the in-memory and
    DynamoDB repositories (tests/contract/)."""

    def __init__(self, state: State, *, line_cache: int = 0) -> None:
        """`line_cache`: how many decoded lines to keep across calls (a long-lived reader
        such as serve, which re-reads the same patients' histories); 0 keeps only the
        lines of the last `record_lines` call. Lines never change once stored, so a line id
        always means the same line and a cached line is never stale."""
        self.state = state
        self._recent: dict[str, ClaimLine] = {}  # screen_lines reads them back at once
        self._cache: dict[str, ClaimLine] = {}  # insertion order: the oldest goes first
        self._cache_size = max(0, line_cache)
        self._cache_lock = threading.Lock()
        # with a line cache, each patient's history as last read: ((count, max id), its lines),
        # the latest read last; at most `line_cache` lines in all
        # patient -> (size, lines, the state's version when that size was last read)
        self._histories: dict[str, tuple[tuple[int, int], tuple[ClaimLine, ...], tuple[int, int, int]]] = {}
        self._histories_lines = 0

    # ------------------------------------------------------------ lines
    def record_lines(self, lines: Sequence[ClaimLine], bodies: Mapping[str, str] | None = None) -> list[ClaimLine]:
        unique, rows = self._line_rows(lines, bodies)
        if not unique:
            return []
        # the rows are built before the write lock is taken: another writer writes meanwhile
        with self.state.write("record lines") as conn:
            stored = self._stored_ids(unique, conn)
            fresh = rows.without(stored)
            conn.executemany(_INSERT_LINE, fresh.lines)
            conn.executemany(_INSERT_SALE, fresh.sales)
        self._recent = {line_id: unique[line_id] for line_id in unique if line_id not in stored}
        return list(self._recent.values())

    def spool_lines(
        self, lines: Sequence[ClaimLine], bodies: Mapping[str, str] | None = None
    ) -> tuple[list[ClaimLine], LineRows]:
        """`record_lines` without the write: the lines not stored yet and their rows, for
        another process to store later (`write_lines`; docs/local.md, The orchestrator writes
        lines while it keeps up). Takes no lock: which ids are stored is a read."""
        unique, rows = self._line_rows(lines, bodies)
        stored = self._stored_ids(unique) if unique else set()
        self._recent = {line_id: unique[line_id] for line_id in unique if line_id not in stored}
        return list(self._recent.values()), rows.without(stored)

    def write_lines(self, rows: LineRows) -> None:
        """Store spooled rows (`spool_lines`) in one transaction; a line stored meanwhile (by
        `rxguard serve`, say) keeps its first row."""
        if rows.lines or rows.sales:
            with self.state.write("record lines") as conn:
                conn.executemany(_INSERT_LINE_OR_IGNORE, rows.lines)
                conn.executemany(_INSERT_SALE, rows.sales)

    def _stored_ids(self, ids: Collection[str], conn: sqlite3.Connection | None = None) -> set[str]:
        sql, args = "SELECT line_id FROM lines WHERE line_id IN (SELECT value FROM json_each(?))", (_ids(ids),)
        found = conn.execute(sql, args).fetchall() if conn is not None else self.state.read(sql, args)
        return {row[0] for row in found}

    @staticmethod
    def _line_rows(
        lines: Sequence[ClaimLine], bodies: Mapping[str, str] | None
    ) -> tuple[dict[str, ClaimLine], LineRows]:
        """The lines by id (the first of an id) and their rows in `lines` and `trace_sales`."""
        known = bodies or {}
        unique: dict[str, ClaimLine] = {}
        for line in lines:
            unique.setdefault(line.line_id, line)
        rows = LineRows()
        stamps: dict[datetime, str] = {}  # the lines of a visit share their time
        for line_id, line in unique.items():
            at = line.fee_ocur_time
            t = stamps.get(at)
            if t is None:
                t = stamps[at] = _ts(at)
            psn_no, fixmedins_code = line.psn_no, line.fixmedins_code
            rows.lines.append(
                (
                    line_id,
                    psn_no,
                    t,
                    t[:7],  # the period, YYYY-MM
                    fixmedins_code,
                    line.bilg_dr_codg,
                    line.admdvs,
                    int(line.monitored),
                    known.get(line_id) or encode_line(line),
                )
            )
            if line.trace_codes:
                special = line.reverses or line.trdn_flag or line.received_at
                rows.sales.extend(
                    (code, line_id, t, psn_no, fixmedins_code, TraceSale.of(line, code).encode() if special else None)
                    for code in dict.fromkeys(line.trace_codes)
                )
        return unique, rows

    def _keyed(self, keys: Collection[str], sql: str) -> tuple[dict[str, list[Any]], list[Any]]:
        """An empty list for each key, and the rows of `sql`, whose one parameter is the keys
        (`IN (SELECT value FROM json_each(?))`; no read when there is no key)."""
        out: dict[str, list[Any]] = {key: [] for key in keys}
        return out, (self.state.read(sql, (_ids(out),)) if out else [])

    def load_history(self, psn_nos: Collection[str]) -> dict[str, list[ClaimLine]]:
        if not self._cache_size:
            return self._read_history(psn_nos)
        # a long-lived reader (serve): a history kept whose size has not changed is the same
        # lines, the same objects (one row a patient, from the index); the others are read.
        # When nothing was committed to the state since the kept histories were last found
        # current (`State.version`: checks write checks.db, not the state), not even their
        # sizes are read
        wanted = list(psn_nos)
        version = self.state.version()
        with self._cache_lock:
            kept_all = [self._histories.get(psn_no) for psn_no in wanted]
            if all(kept is not None and kept[2] == version for kept in kept_all):
                out = {}
                for psn_no, kept in zip(wanted, kept_all, strict=True):
                    assert kept is not None
                    self._histories[psn_no] = self._histories.pop(psn_no)  # the latest read last
                    out[psn_no] = list(kept[1])
                return out
        sizes, rows = self._keyed(wanted, _HISTORY_SIZES)
        size = {psn_no: (int(count), int(top)) for psn_no, count, top in rows}
        out = {}
        stale = []
        with self._cache_lock:
            for psn_no in sizes:
                kept = self._histories.get(psn_no)
                if psn_no not in size:
                    out[psn_no] = []
                elif kept is not None and kept[0] == size[psn_no]:
                    del self._histories[psn_no]
                    self._histories[psn_no] = (kept[0], kept[1], version)  # the latest read last
                    out[psn_no] = list(kept[1])
                else:
                    stale.append(psn_no)
        if stale:
            read = self._read_history(stale)
            with self._cache_lock:
                for psn_no in stale:
                    lines = out[psn_no] = read[psn_no]
                    # (the size read first: a line added meanwhile makes it stale at the next read)
                    self._keep_history(psn_no, size[psn_no], tuple(lines), version)
        return out

    def _keep_history(
        self, psn_no: str, size: tuple[int, int], lines: tuple[ClaimLine, ...], version: tuple[int, int, int]
    ) -> None:
        old = self._histories.pop(psn_no, None)
        self._histories_lines -= len(old[1]) if old else 0
        if size[0] != len(lines):  # (a line purged between the reads: not kept)
            return
        self._histories[psn_no] = (size, lines, version)
        self._histories_lines += len(lines)
        while self._histories_lines > self._cache_size and len(self._histories) > 1:
            first = next(iter(self._histories))
            self._histories_lines -= len(self._histories.pop(first)[1])

    def _read_history(self, psn_nos: Collection[str]) -> dict[str, list[ClaimLine]]:
        # the ids first, from the index alone; then the bodies of the lines not decoded yet
        out: dict[str, list[ClaimLine]]
        out, rows = self._keyed(psn_nos, _HISTORY_IDS)
        if not rows:
            return out
        recent, cache = self._recent, self._cache
        known: dict[str, ClaimLine] = {}
        for _, line_id in rows:
            line = recent.get(line_id) or cache.get(line_id)
            if line is not None:
                known[line_id] = line
        decoded: list[ClaimLine] = []
        if len(known) < len(rows):
            missing = [line_id for _, line_id in rows if line_id not in known]
            for line_id, body in self.state.read(
                "SELECT line_id, body FROM lines WHERE line_id IN (SELECT value FROM json_each(?))", (_ids(missing),)
            ):
                known[line_id] = line = decode_line(body)
                decoded.append(line)
        for psn_no, line_id in rows:
            line = known.get(line_id)
            if line is not None:  # (a line purged between the two reads is left out)
                out[psn_no].append(line)
        if decoded and self._cache_size:
            with self._cache_lock:
                for line in decoded:
                    cache[line.line_id] = line
                while len(cache) > self._cache_size:
                    del cache[next(iter(cache))]
        return out

    def load_lines(self, line_ids: Collection[str]) -> dict[str, ClaimLine]:
        """Stored lines by id (evidence of findings, for letters and reports)."""
        if not line_ids:
            return {}
        rows = self.state.read(
            "SELECT line_id, body FROM lines WHERE line_id IN (SELECT value FROM json_each(?))", (_ids(line_ids),)
        )
        return {line_id: decode_line(body) for line_id, body in rows}

    def count_lines(self) -> int:
        return int(self.state.read("SELECT count(*) FROM lines")[0][0])

    def load_trace_sales(self, codes: Collection[str]) -> dict[str, list[TraceSale]]:
        out: dict[str, list[TraceSale]]
        out, rows = self._keyed(codes, _TRACE_SALES)
        for code, t, line_id, psn_no, fixmedins_code, sale in rows:
            if sale:
                out[code].append(TraceSale.decode(code, line_id, sale))
            else:
                out[code].append(TraceSale(datetime.fromisoformat(t), line_id, code, psn_no, fixmedins_code))
        return out

    def resold_codes(self, codes: Collection[str]) -> set[str]:
        if not codes:
            return set()
        rows = self.state.read(
            "SELECT code FROM trace_sales WHERE code IN (SELECT value FROM json_each(?)) "
            "GROUP BY code HAVING count(*) > 1",  # one row per (code, line_id): the primary key
            (_ids(codes),),
        )
        return {row[0] for row in rows}

    # ------------------------------------------------------------ findings
    def load_findings(self, scopes: Collection[str]) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]]
        out, rows = self._keyed(scopes, _CURRENT_FINDINGS)
        for scope, status, body in rows:
            out[scope].append(_decode_finding(body, status))
        return out

    def replace_findings(self, scope: str, findings: Sequence[Finding]) -> FindingChanges:
        return self.replace_many({scope: findings})

    def replace_many(self, by_scope: Mapping[str, Sequence[Finding]]) -> FindingChanges:
        """`replace_findings` for many scopes in one transaction (changes merged in scope order given).

        Most scopes of a batch are clean: no finding now and none current before. Those
        change nothing, so they are found with one read and take no transaction at all."""
        changes = FindingChanges()
        empty = [scope for scope, findings in by_scope.items() if not findings]
        if empty:
            held = {
                row[0]
                for row in self.state.read(
                    "SELECT DISTINCT scope FROM findings WHERE scope IN (SELECT value FROM json_each(?)) "
                    "AND status != 'superseded'",
                    (_ids(empty),),
                )
            }
            by_scope = {s: f for s, f in by_scope.items() if f or s in held}
        if not by_scope:
            return changes
        now = _now()
        with self.state.write("replace findings") as conn:
            for scope, findings in by_scope.items():
                self._replace(conn, scope, findings, changes, now)
        return changes

    def _replace(
        self, conn: sqlite3.Connection, scope: str, findings: Sequence[Finding], changes: FindingChanges, now: str
    ) -> None:
        stored = {
            fid: (status, body)
            for fid, status, body in conn.execute(
                "SELECT finding_id, status, body FROM findings WHERE scope = ?", (scope,)
            )
        }
        produced: set[str] = set()
        touched: list[Finding] = []
        for finding in findings:
            fid = finding.finding_id
            produced.add(fid)
            body = _finding_body(finding)
            old = stored.get(fid)
            moved = False
            if old is None:  # another scope may hold the id (the in-memory contract looks ids up globally)
                row = conn.execute("SELECT status, body FROM findings WHERE finding_id = ?", (fid,)).fetchone()
                old = (row[0], row[1]) if row else None
                moved = row is not None
            if old is None:
                fresh = finding if finding.status == "new" else finding.model_copy(update={"status": "new"})
                conn.execute(
                    "INSERT INTO findings (scope, status, rule_id, severity, psn_no, fixmedins_code,"
                    " occurred_at, body, updated_at, finding_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _finding_row(scope, "new", finding, body, now),
                )
                changes.new.append(fresh)
                touched.append(fresh)
                continue
            status = old[0] if old[0] in ("confirmed", "dismissed") else "new"
            if body == old[1] and status == old[0]:
                changes.unchanged += 1
                if moved:
                    conn.execute("UPDATE findings SET scope = ? WHERE finding_id = ?", (scope, fid))
                continue
            merged = finding if finding.status == status else finding.model_copy(update={"status": status})
            conn.execute(
                "UPDATE findings SET scope = ?, status = ?, rule_id = ?, severity = ?, psn_no = ?, fixmedins_code = ?,"
                " occurred_at = ?, body = ?, updated_at = ? WHERE finding_id = ?",
                _finding_row(scope, status, finding, body, now),
            )
            changes.updated.append(merged)
            touched.append(merged)
        for fid in sorted(stored):
            status, body = stored[fid]
            if fid in produced or status == "superseded":
                continue
            conn.execute("UPDATE findings SET status = 'superseded', updated_at = ? WHERE finding_id = ?", (now, fid))
            gone = _decode_finding(body, "superseded")
            changes.superseded.append(gone)
            touched.append(gone)
        if touched:
            conn.executemany("DELETE FROM flagged WHERE finding_id = ?", [(f.finding_id,) for f in touched])
            conn.executemany(
                "INSERT OR IGNORE INTO flagged (finding_id, line_id) VALUES (?, ?)",
                [(f.finding_id, line_id) for f in touched for line_id in _flagged_lines(f)],
            )

    def get_finding(self, finding_id: str) -> Finding | None:
        rows = self.state.read("SELECT status, body FROM findings WHERE finding_id = ?", (finding_id,))
        return _decode_finding(rows[0][1], rows[0][0]) if rows else None

    def get_findings(self, finding_ids: Collection[str]) -> dict[str, Finding]:
        """Stored findings by id, superseded included (one query)."""
        if not finding_ids:
            return {}
        rows = self.state.read(
            "SELECT finding_id, status, body FROM findings WHERE finding_id IN (SELECT value FROM json_each(?))",
            (_ids(finding_ids),),
        )
        return {fid: _decode_finding(body, status) for fid, status, body in rows}

    def all_current_findings(self) -> list[Finding]:
        """Every current finding, by finding_id."""
        return list(self.iter_current_findings())

    def iter_current_findings(self, page: int = 2000) -> Iterator[Finding]:
        """Every current finding, by finding_id, read `page` at a time (the run's
        findings.jsonl: a state's findings are never all in memory at once)."""
        after = ""
        while True:
            rows = self.state.read(
                "SELECT finding_id, status, body FROM findings WHERE status != 'superseded' AND finding_id > ? "
                "ORDER BY finding_id LIMIT ?",
                (after, page),
            )
            for _, status, body in rows:
                yield _decode_finding(body, status)
            if len(rows) < page:
                return
            after = rows[-1][0]

    # ------------------------------------------------------------ institution activity
    def load_activity(self, periods: Collection[str]) -> list[ActivityAggregate]:
        """Every institution's and prescriber's monitored-drug activity in these months,
        computed from the stored lines and the flagged lines of the current findings
        (the same aggregates as `rxguard.dynamo.DynamoRepository.load_activity`)."""
        if not periods:
            return []
        wanted = _ids(periods)
        where = "monitored = 1 AND period IN (SELECT value FROM json_each(?))"
        inst: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)  # (period, code) -> admdvs counts
        for period, code, admdvs, n in self.state.read(
            f"SELECT period, fixmedins_code, coalesce(admdvs, ''), count(*) FROM lines WHERE {where} "
            "GROUP BY period, fixmedins_code, admdvs",
            (wanted,),
        ):
            inst[(period, code)][admdvs] += n
        doc_regions: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        doc_places: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        for period, code, place, admdvs, n in self.state.read(
            f"SELECT period, bilg_dr_codg, fixmedins_code, coalesce(admdvs, ''), count(*) FROM lines "
            f"WHERE {where} AND bilg_dr_codg IS NOT NULL AND bilg_dr_codg != '' "
            "GROUP BY period, bilg_dr_codg, fixmedins_code, admdvs",
            (wanted,),
        ):
            doc_regions[(period, code)][admdvs] += n
            doc_places[(period, code)][place] += n
        flagged_inst: dict[tuple[str, str], list[str]] = defaultdict(list)
        flagged_doc: dict[tuple[str, str], list[str]] = defaultdict(list)
        for line_id, period, code, doctor in self.state.read(FLAGGED_LINES_OF_MONTHS, (wanted,)):
            flagged_inst[(period, code)].append(line_id)
            if doctor:
                flagged_doc[(period, doctor)].append(line_id)
        out = [
            aggregate_from_counts(Scope.institution(code), period, regions, flagged_inst.get((period, code), ()))
            for (period, code), regions in inst.items()
        ]
        out += [
            aggregate_from_counts(
                Scope.prescriber(code), period, regions, flagged_doc.get((period, code), ()), doc_places[(period, code)]
            )
            for (period, code), regions in doc_regions.items()
        ]
        return sorted(out, key=lambda a: (a.subject_type, a.code, a.period))


# ---------------------------------------------------------------- the API's findings store


# The flagged lines of some months: the flagged lines first, each looked up by id (CROSS
# JOIN fixes that order). SQLite's own plan walked every line of the months and probed
# `flagged` for each: 1.3 s at 1M lines, 0.07 s this way (flagged lines are ~2% of the lines).
FLAGGED_LINES_OF_MONTHS = (
    "SELECT DISTINCT l.line_id, l.period, l.fixmedins_code, l.bilg_dr_codg FROM flagged f "
    "CROSS JOIN lines l ON l.line_id = f.line_id "
    "WHERE l.monitored = 1 AND l.period IN (SELECT value FROM json_each(?))"
)


def _day_start(day: date) -> str:
    return _ts(datetime.combine(day, time.min))


def _move_check_tables(state: State, checks: State) -> None:
    """A state written before checks.db existed keeps the access audit, its summary and the
    warnings in state.db: their rows are copied into checks.db and the tables dropped from the
    state, in one transaction over both files (ATTACH). Safe to repeat: a crash between the
    two files' commits (WAL commits each file on its own) leaves rows in both, and the next
    open copies them again, skipping those already there (every table has a primary key)."""
    conn = checks.connection()
    found = state.read(
        "SELECT name, sql FROM sqlite_master WHERE tbl_name IN (SELECT value FROM json_each(?)) AND sql IS NOT NULL "
        "ORDER BY type DESC",  # tables first, then their indexes
        (json.dumps(CHECK_TABLES),),
    )
    if not found:
        return
    conn.execute("ATTACH DATABASE ? AS old", (str(state.path),))
    try:
        with checks.write("move the access audit and the warnings out of the state") as tx:
            present = {row[0] for row in tx.execute("SELECT name FROM main.sqlite_master")}
            old = {row[0] for row in tx.execute("SELECT name FROM old.sqlite_master")}
            for name, sql in found:
                if name in old and name not in present:
                    tx.execute(sql)  # the table, or one of its indexes, as it was created
            for table in CHECK_TABLES:
                if table in old:
                    tx.execute(f"INSERT OR IGNORE INTO main.{table} SELECT * FROM old.{table}")
                    tx.execute(f"DROP TABLE old.{table}")
    finally:
        conn.execute("DETACH DATABASE old")


# The warnings a check answered (3101 jr_id), in checks.db (`State.checks`): written with
# the check's access records, in the same transaction
_WARNINGS_TABLE = """
CREATE TABLE IF NOT EXISTS warnings (
    finding_id TEXT PRIMARY KEY,
    rule_id TEXT NOT NULL,
    body TEXT NOT NULL,
    lines TEXT NOT NULL,
    recorded_at TEXT NOT NULL
)
"""
# Dispositions (3103; docs/api.md), added with the API's
# dispositions: created if missing rather than by a numbered migration, so that they add to
# a state of any version (helper "state" may fold them into the next migration).
_DISPOSITION_TABLES = """
CREATE TABLE IF NOT EXISTS dispositions (
    finding_id TEXT PRIMARY KEY,
    rule_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS continued_lines (
    line_id TEXT NOT NULL,
    finding_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (line_id, finding_id)
);
"""


class SqliteFindingsStore(FindingsStore):
    """The API's findings store on the state database (same answers as the in-memory store)."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.checks = state.checks()  # the warnings answered: checks.db
        with state.write("create the dispositions tables") as conn:
            for statement in _DISPOSITION_TABLES.split(";"):
                if statement.strip():
                    conn.execute(statement)
        with self.checks.write("create the warnings table") as conn:
            conn.execute(_WARNINGS_TABLE)

    def _disposition(self, finding_id: str) -> Disposition | None:
        rows = self.state.read("SELECT body FROM dispositions WHERE finding_id = ?", (finding_id,))
        return Disposition.model_validate_json(rows[0][0]) if rows else None

    def record_warnings(self, findings: Sequence[Finding], at: datetime, answered: Collection[str] = ()) -> None:
        with self.checks.write("record a check's warnings") as conn:
            self.insert_warnings(conn, findings, at, answered)

    def insert_warnings(
        self, conn: sqlite3.Connection, findings: Sequence[Finding], at: datetime, answered: Collection[str] = ()
    ) -> None:
        """`record_warnings` within a write transaction the caller holds on checks.db (with the
        check's access records)."""
        wanted = set(answered)
        conn.executemany(
            "INSERT OR REPLACE INTO warnings (finding_id, rule_id, body, lines, recorded_at) VALUES (?, ?, ?, ?, ?)",
            [
                (
                    finding.finding_id,
                    finding.rule_id,
                    finding.model_dump_json(),
                    json.dumps([i for i in finding.evidence if i in wanted]),
                    at.isoformat(),
                )
                for finding in findings
            ],
        )

    def dispose(self, finding_id: str, disposition: Disposition) -> FindingView:
        rows = self.state.read(f"{_VIEW_SELECT} WHERE f.finding_id = ?", (finding_id,))
        recorded = _view_row(rows[0]) if rows else None
        lines: list[str] = []
        if recorded is None:
            rows = self.checks.read("SELECT body, lines FROM warnings WHERE finding_id = ?", (finding_id,))
            if not rows:
                raise NotFound("no such finding or warning", "finding_id")
            finding = Finding.model_validate_json(rows[0][0])
            lines = json.loads(rows[0][1])
        else:
            finding = Finding.model_validate(recorded.model_dump(exclude={"review", "disposition", "recorded"}))
        with self.state.write("dispose of a warning") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO dispositions (finding_id, rule_id, body) VALUES (?, ?, ?)",
                (finding_id, finding.rule_id, disposition.model_dump_json()),
            )
            conn.execute("DELETE FROM continued_lines WHERE finding_id = ?", (finding_id,))
            if disposition.action == "continue" and disposition.reason:
                conn.executemany(
                    "INSERT INTO continued_lines (line_id, finding_id, reason) VALUES (?, ?, ?)",
                    [(line_id, finding_id, disposition.reason) for line_id in lines],
                )
        if recorded is not None:
            return recorded.model_copy(update={"disposition": disposition})
        return view(finding, None, disposition).model_copy(update={"recorded": False})

    def continued_reasons(self, line_ids: Collection[str]) -> dict[str, str]:
        rows = self.state.read(
            "SELECT line_id, reason FROM continued_lines WHERE line_id IN (SELECT value FROM json_each(?))"
            " ORDER BY finding_id",
            (_ids(line_ids),),
        )
        return {line_id: reason for line_id, reason in rows}

    def query(self, query: FindingQuery, limit: int, token: str | None = None) -> tuple[list[FindingView], str | None]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("f.fixmedins_code", query.institution),
            ("f.psn_no", query.psn_no),
            ("f.rule_id", query.rule_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.status is None:
            where.append("f.status != 'superseded'")
        else:
            where.append("f.status = ?")
            params.append(query.status)
        if query.date_from is not None:
            where.append("f.occurred_at >= ?")
            params.append(_day_start(query.date_from))
        if query.date_to is not None and query.date_to < date.max:  # (the calendar's last day: no bound)
            where.append("f.occurred_at < ?")
            params.append(_day_start(query.date_to + timedelta(days=1)))
        if token:
            payload = decode_token(token)
            after_t, after_id = payload.get("t"), payload.get("id")
            if not isinstance(after_t, str) or not isinstance(after_id, str):
                raise InvalidField("next_token is not a token this API issued", "next_token")
            # the `<=` bound lets the index start at the page's place instead of the newest finding
            where.append("f.occurred_at <= ? AND (f.occurred_at < ? OR f.finding_id > ?)")
            params += [after_t, after_t, after_id]
        rows = self.state.read(
            f"{_VIEW_SELECT} WHERE {' AND '.join(where)} ORDER BY f.occurred_at DESC, f.finding_id LIMIT ?",
            [*params, limit + 1],
        )
        page = rows[:limit]
        next_token = None
        if len(rows) > limit:
            next_token = encode_token({"t": page[-1][2], "id": page[-1][3]})
        disposed = dict(
            self.state.read(
                "SELECT finding_id, body FROM dispositions WHERE finding_id IN (SELECT value FROM json_each(?))",
                (_ids([row[3] for row in page]),),
            )
        )
        views = [_view_row(row) for row in page]
        return [
            v.model_copy(update={"disposition": Disposition.model_validate_json(disposed[v.finding_id])})
            if v.finding_id in disposed
            else v
            for v in views
        ], next_token

    def get(self, finding_id: str) -> FindingView | None:
        rows = self.state.read(f"{_VIEW_SELECT} WHERE f.finding_id = ?", (finding_id,))
        disposition = self._disposition(finding_id)
        if rows:
            found = _view_row(rows[0])
            return found.model_copy(update={"disposition": disposition}) if disposition else found
        warning = self.checks.read("SELECT body FROM warnings WHERE finding_id = ?", (finding_id,))
        if not warning:
            return None
        return view(Finding.model_validate_json(warning[0][0]), None, disposition).model_copy(
            update={"recorded": False}
        )

    def review(self, finding_id: str, status: ReviewStatus, reason: str, reviewer: str, at: datetime) -> FindingView:
        with self.state.write("review a finding") as conn:
            row = conn.execute("SELECT status, body FROM findings WHERE finding_id = ?", (finding_id,)).fetchone()
            if row is None:
                raise NotFound("no such finding", "finding_id")
            if row[0] == "superseded":
                raise Conflict("the finding is superseded: the rules no longer produce it", "status")
            finding = _decode_finding(row[1], status)
            conn.execute("UPDATE findings SET status = ? WHERE finding_id = ?", (status, finding_id))
            conn.execute(
                "INSERT OR REPLACE INTO reviews (finding_id, rule_id, status, reason, reviewer, reviewed_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (finding_id, finding.rule_id, status, reason, reviewer, at.isoformat()),
            )
        return view(finding, Review(status=status, reason=reason, reviewer=reviewer, reviewed_at=at))

    def rule_figures(self, rule_ids: Collection[str]) -> dict[str, RuleFigures]:
        counts: dict[str, list[int]] = {}
        for rule_id, status, n in self.state.read(
            "SELECT rule_id, status, count(*) FROM reviews WHERE rule_id IN (SELECT value FROM json_each(?)) "
            "GROUP BY rule_id, status",
            (_ids(rule_ids),),
        ):
            slot = counts.setdefault(rule_id, [0, 0, 0, 0])
            slot[0 if status == "confirmed" else 1] += int(n)
        for rule_id, body in self.state.read(
            "SELECT rule_id, body FROM dispositions WHERE rule_id IN (SELECT value FROM json_each(?))",
            (_ids(rule_ids),),
        ):
            slot = counts.setdefault(rule_id, [0, 0, 0, 0])
            slot[2 if Disposition.model_validate_json(body).action == "continue" else 3] += 1
        return {rule: RuleFigures(*slot) for rule, slot in counts.items()}


_VIEW_SELECT = (
    "SELECT f.status, f.body, f.occurred_at, f.finding_id, r.status, r.reason, r.reviewer, r.reviewed_at "
    "FROM findings f LEFT JOIN reviews r ON r.finding_id = f.finding_id"
)


def _view_row(row: Sequence[Any]) -> FindingView:
    status, body, _, _, r_status, reason, reviewer, reviewed_at = row
    review = None
    if r_status is not None:
        at = datetime.fromisoformat(reviewed_at)
        review = Review(status=r_status, reason=reason, reviewer=reviewer, reviewed_at=at)
    return view(_decode_finding(body, status), review)


# ---------------------------------------------------------------- batch records


@dataclass(frozen=True)
class Claim:
    claimed: bool  # False: another execution owns this batch (the same file given again)
    started_at: str
    owner: str


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data), ensure_ascii=False, default=str)


def content_batch_id(path: str | os.PathLike[str]) -> str:
    """The local batch id of a file: `sha256:<hex>` of its bytes (any name, same content -> same id)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


class SqliteBatchStore:
    """Batch records with the semantics of `rxguard.dynamo.BatchStore`."""

    def __init__(self, state: State) -> None:
        self.state = state

    def claim(self, batch_id: str, execution_id: str, source: Mapping[str, Any], now: datetime) -> Claim:
        """First claim wins; the same execution (a retry) and a claim after FAILED claim again."""
        with self.state.write("claim a batch") as conn:
            row = conn.execute("SELECT execution_id, status, started_at FROM batches WHERE batch_id = ?", (batch_id,))
            existing = row.fetchone()
            if existing is not None and existing[0] != execution_id and existing[1] != "FAILED":
                return Claim(False, str(existing[2]), str(existing[0]))
            conn.execute(
                "INSERT OR REPLACE INTO batches (batch_id, execution_id, status, started_at, source)"
                " VALUES (?, ?, 'RUNNING', ?, ?)",
                (batch_id, execution_id, now.isoformat(), json.dumps(dict(source), ensure_ascii=False, default=str)),
            )
        return Claim(True, now.isoformat(), execution_id)

    def get(self, batch_id: str) -> dict[str, Any] | None:
        rows = self.state.read(
            "SELECT batch_id, execution_id, status, started_at, finished_at, source, report, report_key "
            "FROM batches WHERE batch_id = ?",
            (batch_id,),
        )
        if not rows:
            return None
        names = ("batch_id", "execution_id", "status", "started_at", "finished_at", "source", "report", "report_key")
        out = {k: v for k, v in zip(names, rows[0], strict=True) if v is not None}
        for key in ("source", "report"):
            if key in out:
                out[key] = json.loads(out[key])
        return out

    def finish(self, batch_id: str, status: str, report: Mapping[str, Any], report_key: str, now: datetime) -> None:
        """Record the final status and the report."""
        with self.state.write("finish a batch") as conn:
            conn.execute(
                "UPDATE batches SET status = ?, finished_at = ?, report_key = ?, report = ? WHERE batch_id = ?",
                (status, now.isoformat(), report_key, _json(report), batch_id),
            )

    def all(self) -> list[dict[str, Any]]:
        ids = [row[0] for row in self.state.read("SELECT batch_id FROM batches ORDER BY started_at, batch_id")]
        return [b for b in map(self.get, ids) if b is not None]


# ---------------------------------------------------------------- alert outbox


try:  # the Outbox interface (helper "orchestrator") may not be in this tree yet
    from rxguard.alerts.outbox import Outbox as _OutboxBase  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - until rxguard.alerts.outbox lands
    _OutboxBase = object  # type: ignore[assignment,misc,unused-ignore]


class SqliteOutbox(_OutboxBase):  # type: ignore[misc,valid-type,unused-ignore]
    """The alert outbox (`rxguard.alerts.outbox.Outbox`) on the state database: entries
    are recorded in one transaction before publishing, listed in recording order while
    pending, and marked sent after the sink acknowledged them."""

    def __init__(self, state: State | str | os.PathLike[str]) -> None:
        self.state = state if isinstance(state, State) else State.open(state)

    def record(self, entries: Sequence[Any]) -> list[Any]:
        fresh = []
        now = _now()
        with self.state.write("record alert messages") as conn:
            for entry in entries:
                message = entry.message
                finding_id = message.body.get("finding_id") if isinstance(message.body, dict) else None
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO outbox (message_id, topic, finding_id, body, recorded_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (message.message_id, entry.topic, finding_id, message.model_dump_json(), now),
                )
                if cursor.rowcount == 1:
                    fresh.append(entry)
        return fresh

    def pending(self) -> list[Any]:
        from rxguard.alerts.outbox import OutboxEntry  # type: ignore[import-not-found,unused-ignore]
        from rxguard.alerts.schema import AlertMessage

        rows = self.state.read("SELECT topic, body FROM outbox WHERE sent_at IS NULL ORDER BY seq")
        return [OutboxEntry(topic, AlertMessage.model_validate_json(body)) for topic, body in rows]

    def mark_sent(self, message_ids: Iterable[str]) -> None:
        now = _now()
        with self.state.write("mark alert messages sent") as conn:
            conn.executemany(
                "UPDATE outbox SET sent_at = ? WHERE message_id = ? AND sent_at IS NULL",
                [(now, mid) for mid in message_ids],
            )
