"""Partitioning: a claim batch into chunk files of whole patients, sorted by time.

`prepare_batch` reads the batch once (streaming), spills every accepted line to one of N
hash partitions on disk (by a hash of psn_no) and its line id to one of N key partitions
(by a hash of the line id). Then it finds duplicates one key partition at a time, and
sorts one patient partition at a time into chunks of about `chunk_size` lines (a chunk
never spans two partitions). Memory is bounded by one partition (N grows with the file
size), not by the file. Normalization (pass 1) and chunking (pass 3) run as tasks through
a `TaskMapper`: in this process on Lambda, over the worker processes locally.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tempfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import IO, Any, Protocol, cast

from pydantic import TypeAdapter

from rxguard.ingest.normalize import DUPLICATE, LineRejected, TimeWindow, normalize_record
from rxguard.ingest.reader import BatchReader, CsvLayout, Opener, RawRecord, csv_record, located
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Rejection

PARTITION_SOURCE_BYTES = 2 * 1024 * 1024  # about this much input per partition (about 12k CSV lines)
MAX_PARTITIONS = 256
PROGRESS_EVERY = 10_000
_ADMDVS = re.compile(r"[0-9]{6}")


@dataclass(frozen=True)
class ChunkInfo:
    path: Path
    lines: int
    patients: int


@dataclass
class PrepareResult:
    file: str
    format: str | None
    encoding: str | None
    lines_read: int
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, int]
    file_error: Rejection | None
    chunks: list[ChunkInfo] = field(default_factory=list)
    rejected_path: Path = Path("rejected.jsonl")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings), e.g. for a Step Functions manifest."""
        return {
            "file": self.file,
            "format": self.format,
            "encoding": self.encoding,
            "lines_read": self.lines_read,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "file_error": self.file_error.model_dump(mode="json") if self.file_error else None,
            "chunks": [{"path": str(c.path), "lines": c.lines, "patients": c.patients} for c in self.chunks],
            "rejected_path": str(self.rejected_path),
        }


def _chunk_json(line: ClaimLine) -> str:
    """A line as a chunk holds it: its JSON without the fields at their default (a quarter
    smaller; `read_chunk` validates it back to the same line)."""
    return line.model_dump_json(exclude_defaults=True)


_SN_AT = len('{"feedetl_sn":"')
_CODE_AFTER = '","fixmedins_code":"'
_TIME_KEY = '"fee_ocur_time":"'


def _order_of(payload: str) -> tuple[str, str]:
    """(fee_ocur_time as ISO text, line id) of a line's chunk JSON, read off the text: the
    spill rows carry no copy of them (a smaller spill on disk). Exact for `_chunk_json`'s
    output: feedetl_sn and fixmedins_code come first, and no value holds a quote (their
    patterns; a time is ISO text)."""
    sn_end = payload.index('"', _SN_AT)
    code_at = sn_end + len(_CODE_AFTER)
    if payload[sn_end:code_at] != _CODE_AFTER:  # never, while ClaimLine's first fields are these
        raise ValueError("a chunk line does not start with feedetl_sn, fixmedins_code")
    time_at = payload.index(_TIME_KEY) + len(_TIME_KEY)
    line_id = f"{payload[code_at : payload.index(chr(34), code_at)]}/{payload[_SN_AT:sn_end]}"
    return payload[time_at : payload.index('"', time_at)], line_id


def write_chunk(lines: Iterable[ClaimLine]) -> bytes:
    """JSON Lines of the lines as chunks hold them, one line each."""
    return b"".join(_chunk_json(line).encode("utf-8") + b"\n" for line in lines)


_LINES = TypeAdapter(list[ClaimLine])


def _chunk_rows(data: bytes | Path) -> list[bytes]:
    raw = data.read_bytes() if isinstance(data, Path) else data
    return [line for line in raw.splitlines() if line.strip()]


def read_chunk(data: bytes | Path) -> list[ClaimLine]:
    """The lines of a chunk file (bytes or a path), validated (as one JSON array: a third
    less CPU than one validation a line)."""
    return _LINES.validate_json(b"[" + b",".join(_chunk_rows(data)) + b"]")


def read_chunk_bodies(data: bytes | Path) -> tuple[list[ClaimLine], dict[str, str]]:
    """`read_chunk`, and each line's JSON as the chunk holds it, by line id (the first of an
    id): the compact JSON a repository that stores lines as JSON may keep as is."""
    rows = _chunk_rows(data)
    lines = _LINES.validate_json(b"[" + b",".join(rows) + b"]")
    bodies: dict[str, str] = {}
    for line, row in zip(lines, rows, strict=True):
        bodies.setdefault(line.line_id, row.decode("utf-8"))
    return lines, bodies


def _patient_key(psn_no: str) -> str:
    return blake2b(psn_no.encode("utf-8"), digest_size=8).hexdigest()


def prepare_batch(
    path: Path | Opener,
    kb: KnowledgeBase,
    out_dir: Path,
    *,
    chunk_size: int = 5000,
    name: str | None = None,
    default_admdvs: str | None = None,
    progress: Callable[[int], None] | None = None,
    window: TimeWindow | None = None,
    size: int | None = None,
    on_chunk: Callable[[ChunkInfo], None] | None = None,
    mapper: TaskMapper | None = None,
) -> PrepareResult:
    """Validate and normalize a batch; write `out_dir/chunk-NNNNN.jsonl` (whole patients,
    sorted by (fee_ocur_time, line_id), about `chunk_size` lines each) and
    `out_dir/rejected.jsonl` (one Rejection a line, the file error included).
    `progress(lines_read)` is called every 10,000 lines or so and at the end. `mapper`
    runs the normalization (pass 1) and the chunking (pass 3) tasks: by default in this
    process; the local runtime passes its worker processes."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
    if default_admdvs is not None and _ADMDVS.fullmatch(default_admdvs) is None:
        raise ValueError(f"default_admdvs must be a 6-digit region code, not {default_admdvs!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("chunk-*.jsonl"), *out_dir.glob("part-*.jsonl")]:
        old.unlink()
    reader = BatchReader(path, kb, name=name, default_admdvs=default_admdvs, dedupe=False, window=window, defer=True)
    if size is None:
        try:
            size = Path(path).stat().st_size if isinstance(path, str | Path) else 0
        except OSError:
            size = 0
    n_parts = max(1, min(MAX_PARTITIONS, size // PARTITION_SOURCE_BYTES + 1))
    rejected_path = out_dir / "rejected.jsonl"
    result = PrepareResult(
        file=reader.name,
        format=None,
        encoding=None,
        lines_read=0,
        accepted=0,
        rejected=0,
        rejected_by_reason={},
        file_error=None,
        rejected_path=rejected_path,
    )
    spill = Path(tempfile.mkdtemp(prefix=".spill-", dir=out_dir))
    try:
        with rejected_path.open("w", encoding="utf-8") as rejected_out:
            mapper = mapper or SerialMapper(kb)
            _spill(reader, spill, n_parts, rejected_out, progress, mapper)
            result.format, result.encoding = reader.format, reader.encoding
            result.lines_read, result.accepted, result.rejected = reader.lines_read, reader.accepted, reader.rejected
            result.rejected_by_reason = dict(reader.rejected_by_reason)
            result.file_error = reader.file_error
            if reader.file_error is None:
                _find_duplicates(spill, n_parts)
                _write_chunks(spill, n_parts, out_dir, chunk_size, rejected_out, result, mapper, on_chunk)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    if progress is not None:
        progress(result.lines_read)
    return result


@dataclass(frozen=True)
class NormalizeTask:
    """A batch of records to normalize into spill rows (picklable: it may go to a worker
    process). `records` are (line, fields as read)."""

    file: str
    file_format: str | None
    default_admdvs: str | None
    window: TimeWindow | None
    n_parts: int
    records: list[tuple[int, dict[str, Any] | str]]  # a CSV row as text: split by `layout`
    level: int = 6  # zlib level of the spill members (TaskMapper.spill_level)
    layout: CsvLayout | None = None  # a CSV file's


@dataclass
class TaskOutcome:
    """What normalizing a task gives Prepare: per partition, its rows as one gzip member
    (compressed where they were made: the process that writes the spill only appends bytes),
    and the records rejected, by their index in the task."""

    parts: dict[int, bytes] = field(default_factory=dict)  # patient partition -> gzip member of its rows
    keys: dict[int, bytes] = field(default_factory=dict)  # key partition -> gzip member of its rows
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (index, Rejection JSON, reason)
    accepted: int = 0


@dataclass(frozen=True)
class ChunkTask:
    """Pass 3 of one patient partition (picklable: it may go to a worker process)."""

    spill: str
    part: int
    out_dir: str
    chunk_size: int


@dataclass
class PartitionChunks:
    """The chunk files one partition became, and the duplicate lines it dropped."""

    chunks: list[tuple[str, int, int]] = field(default_factory=list)  # (path, lines, patients)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)  # (source_line, first line, line_id)


class TaskMapper(Protocol):
    """How Prepare runs its two parallel passes: each maps a task function over tasks, in
    order, lazily. `SerialMapper` runs them in this process (as on Lambda); the local
    runtime passes its worker pool (docs/local.md)."""

    # zlib level of the spill: 6 where temporary disk is scarce (Lambda's ephemeral storage:
    # the spill under half the input), 1 where CPU is what counts (3x faster, ~25% larger)
    @property
    def spill_level(self) -> int: ...

    def normalize(self, tasks: Iterable[NormalizeTask]) -> Iterator[TaskOutcome]: ...

    def chunk(self, tasks: Iterable[ChunkTask]) -> Iterator[PartitionChunks]: ...


TASK_RECORDS = 1000  # records per NormalizeTask at least ...
TASK_ROWS_PER_PART = 200  # ... and about this many rows per partition (a larger gzip member compresses better)
PLAIN_TASK_RECORDS = 4000  # records per NormalizeTask when the spill is plain (level 0): whatever the file


def normalize_task(task: NormalizeTask, kb: KnowledgeBase) -> TaskOutcome:
    """Normalize a task's records; render each accepted line as its patient-partition row
    (`patient, source_line, chunk JSON`) and its key-partition row (`line_id, source_line,
    patient partition`)."""
    outcome = TaskOutcome()
    n_parts = task.n_parts
    parts: dict[int, list[str]] = {}
    keys: dict[int, list[str]] = {}
    for index, (line_no, raw) in enumerate(task.records):
        if type(raw) is str:
            found = csv_record(raw, line_no, cast(CsvLayout, task.layout), task.file)
            if type(found) is Rejection:
                outcome.rejected.append((index, found.model_dump_json(), found.reason))
                continue
            record: dict[str, Any] = cast(dict[str, Any], found)
        else:
            record = cast(dict[str, Any], raw)
        try:
            item = normalize_record(
                record, kb, file=task.file, line=line_no, default_admdvs=task.default_admdvs, window=task.window
            )
        except LineRejected as exc:
            rejection = located(exc.rejection, task.file_format)
            outcome.rejected.append((index, rejection.model_dump_json(), rejection.reason))
            continue
        patient = _patient_key(item.psn_no)
        part = int(patient[:8], 16) % n_parts
        line_id = item.line_id
        parts.setdefault(part, []).append(f"{patient}\t{item.source_line}\t{_chunk_json(item)}\n")
        key_part = zlib.crc32(line_id.encode("utf-8")) % n_parts
        keys.setdefault(key_part, []).append(f"{line_id}\t{item.source_line}\t{part}\n")
        outcome.accepted += 1
    # one member per partition and task (~TASK_ROWS_PER_PART rows): at level 6 the spill is
    # under half the input's size on disk, where plain it was ~4.8x (issue 15: Lambda's
    # ephemeral storage)
    level = task.level
    outcome.parts = {p: _spill_member(rows, level) for p, rows in parts.items()}
    outcome.keys = {p: _spill_member(rows, level) for p, rows in keys.items()}
    return outcome


def _spill_member(rows: list[str], level: int) -> bytes:
    """A task's rows of one partition as the spill holds them: a gzip member, or at level 0
    the plain text (gzip's framing and checksums then cost a sixth of Prepare's CPU for nothing)."""
    data = "".join(rows).encode("utf-8")
    return gzip.compress(data, level, mtime=0) if level else data


def _open_spill(path: Path) -> IO[str]:
    """A spill file's rows: gzip members, or plain text (level 0). A plain row starts with a
    patient key or a line id, never with gzip's magic bytes."""
    with path.open("rb") as probe:
        packed = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if packed else path.open(encoding="utf-8")


@dataclass(frozen=True)
class SerialMapper:
    kb: KnowledgeBase
    spill_level: int = 6

    def normalize(self, tasks: Iterable[NormalizeTask]) -> Iterator[TaskOutcome]:
        return (normalize_task(task, self.kb) for task in tasks)

    def chunk(self, tasks: Iterable[ChunkTask]) -> Iterator[PartitionChunks]:
        # chunk by chunk: each is handed on (uploaded, deleted) before the next is written
        return (piece for task in tasks for piece in iter_partition_chunks(task))


def _spill(
    reader: BatchReader,
    spill: Path,
    n_parts: int,
    rejected_out: IO[str],
    progress: Callable[[int], None] | None,
    mapper: TaskMapper,
) -> None:
    """Pass 1: every accepted line to its patient partition, its line id to a key partition
    (files of gzip members, one per task). Records are normalized in tasks (by `mapper`, in
    order); what the reader rejects itself keeps its place among them in rejected.jsonl."""
    parts = [(spill / f"p{i}").open("wb") for i in range(n_parts)]
    keys = [(spill / f"k{i}").open("wb") for i in range(n_parts)]
    # per task, what the reader rejected before each of its records: written in file order
    held: deque[list[tuple[int, Rejection]]] = deque()  # one entry per task, taken in task order
    # a compressed spill wants ~200 rows a partition and task (a larger gzip member
    # compresses better): tasks grow with the partitions, i.e. with the file (24,000 records
    # at 1M lines, ~150 MB in flight); a plain spill does not, and its tasks stay one size
    per_task = max(TASK_RECORDS, TASK_ROWS_PER_PART * n_parts) if mapper.spill_level else PLAIN_TASK_RECORDS

    def task(records: list[tuple[int, dict[str, Any] | str]]) -> NormalizeTask:
        return NormalizeTask(
            reader.name,
            reader.format,
            reader.default_admdvs,
            reader.window,
            n_parts,
            records,
            mapper.spill_level,
            reader.layout,
        )

    def tasks() -> Iterator[NormalizeTask]:
        records: list[tuple[int, dict[str, Any] | str]] = []
        early: list[tuple[int, Rejection]] = []  # (records before it in this task, rejection)
        for item in reader.deferred():
            if type(item) is RawRecord:
                records.append((item.line, item.record))
                if len(records) == per_task:
                    held.append(early)
                    yield task(records)
                    records, early = [], []
            elif isinstance(item, Rejection):
                early.append((len(records), item))
        held.append(early)
        yield task(records)

    try:
        count = 0
        for outcome in mapper.normalize(tasks()):
            early = held.popleft()  # counted by the reader already
            rows = [(at, 0, rejection.model_dump_json()) for at, rejection in early]
            for index, body, reason in outcome.rejected:
                reader.account(reason)
                rows.append((index, 1, body))
            rejected_out.writelines(body + "\n" for _, _, body in sorted(rows))
            reader.account_accepted(outcome.accepted)
            for handles, members in ((parts, outcome.parts), (keys, outcome.keys)):
                for part, member in members.items():
                    handles[part].write(member)
            count += outcome.accepted + len(rows)
            if progress is not None and count >= PROGRESS_EVERY:
                progress(reader.lines_read)
                count = 0
    finally:
        for handle in parts + keys:
            handle.close()


def _find_duplicates(spill: Path, n_parts: int) -> None:
    """Pass 2: per key partition, every line id after its first (in file order) is a
    duplicate; written as `source_line<TAB>first_line` to the patient partition's dup file."""
    dups: dict[int, IO[str]] = {}
    try:
        for i in range(n_parts):
            first: dict[str, str] = {}
            with _open_spill(spill / f"k{i}") as handle:
                for row in handle:
                    line_id, source_line, part = row.rstrip("\n").split("\t")
                    earlier = first.get(line_id)
                    if earlier is None:
                        first[line_id] = source_line
                    else:
                        out: IO[str] | None = dups.get(int(part))
                        if out is None:
                            out = (spill / f"d{part}").open("w", encoding="utf-8")
                            dups[int(part)] = out
                        out.write(f"{source_line}\t{earlier}\n")
            (spill / f"k{i}").unlink()
    finally:
        for dup_out in dups.values():
            dup_out.close()


def _write_chunks(
    spill: Path,
    n_parts: int,
    out_dir: Path,
    chunk_size: int,
    rejected_out: IO[str],
    result: PrepareResult,
    mapper: TaskMapper,
    on_chunk: Callable[[ChunkInfo], None] | None = None,
) -> None:
    """Pass 3: each patient partition into chunks (`chunk_partition`, by `mapper`); here the
    chunks are numbered in partition order and handed to `on_chunk` one at a time."""
    tasks = (ChunkTask(str(spill), i, str(out_dir), chunk_size) for i in range(n_parts))
    for done in mapper.chunk(tasks):
        for source_line, first_line, line_id in done.duplicates:
            _reject_duplicate(rejected_out, result, source_line, first_line, line_id)
        for made, lines, patients in done.chunks:
            chunk_path = out_dir / f"chunk-{len(result.chunks):05d}.jsonl"
            Path(made).replace(chunk_path)
            info = ChunkInfo(path=chunk_path, lines=lines, patients=patients)
            result.chunks.append(info)
            if on_chunk is not None:
                on_chunk(info)  # e.g. upload it and delete the file: few chunks on disk at a time


def chunk_partition(task: ChunkTask) -> PartitionChunks:
    """A whole partition's chunks at once (`iter_partition_chunks`, for a worker process)."""
    done = PartitionChunks()
    for piece in iter_partition_chunks(task):
        done.chunks += piece.chunks
        done.duplicates += piece.duplicates
    return done


def iter_partition_chunks(task: ChunkTask) -> Iterator[PartitionChunks]:
    """One patient partition: drop its duplicates, group by patient and fill chunks of
    whole patients, about `chunk_size` lines each (a chunk never spans partitions), each
    sorted by (fee_ocur_time, line_id). Yields the duplicates, then each chunk as it is
    written. The spill files of the partition are removed."""
    spill, i = Path(task.spill), task.part
    dup_path = spill / f"d{i}"
    duplicate_of: dict[str, str] = {}
    if dup_path.exists():
        with dup_path.open(encoding="utf-8") as handle:
            for row in handle:
                source_line, first_line = row.rstrip("\n").split("\t")
                duplicate_of[source_line] = first_line
        dup_path.unlink()
    dropped = PartitionChunks()
    patients: dict[str, list[tuple[str, str, str]]] = {}
    with _open_spill(spill / f"p{i}") as handle:
        for row in handle:
            patient, source_line, payload = row.rstrip("\n").split("\t", 2)
            time, line_id = _order_of(payload)
            if source_line in duplicate_of:
                dropped.duplicates.append((source_line, duplicate_of[source_line], line_id))
                continue
            patients.setdefault(patient, []).append((time, line_id, payload))
    (spill / f"p{i}").unlink()
    yield dropped
    pending: list[tuple[str, str, str]] = []
    pending_patients = made = 0
    for n, patient in enumerate(sorted(patients), start=1):
        pending.extend(patients[patient])
        pending_patients += 1
        if len(pending) >= task.chunk_size or n == len(patients):
            pending.sort(key=lambda row: (row[0], row[1]))
            chunk_path = Path(task.out_dir) / f"part-{i:05d}-{made:05d}.jsonl"
            with chunk_path.open("w", encoding="utf-8") as out:
                out.writelines(row[2] + "\n" for row in pending)
            yield PartitionChunks(chunks=[(str(chunk_path), len(pending), pending_patients)])
            pending, pending_patients, made = [], 0, made + 1


def _reject_duplicate(out: IO[str], result: PrepareResult, source_line: str, first_line: str, line_id: str) -> None:
    line = int(source_line)
    rejection = Rejection(
        file=result.file,
        line=line,
        field="feedetl_sn",
        reason=DUPLICATE,
        message=f"line {line_id}: fixmedins_code + feedetl_sn already on line {first_line} of the batch",
        line_id=line_id,
    )
    out.write(rejection.model_dump_json() + "\n")
    result.accepted -= 1
    result.rejected += 1
    result.rejected_by_reason[DUPLICATE] = result.rejected_by_reason.get(DUPLICATE, 0) + 1


def read_rejections(path: Path) -> list[Rejection]:
    """The rejections written by `prepare_batch` (small files; for reports and tests)."""
    with Path(path).open(encoding="utf-8") as handle:
        return [Rejection.model_validate(json.loads(row)) for row in handle if row.strip()]
