"""Streaming readers: detect format and encoding from content, yield records line by line.

Memory stays flat in file size: CSV and JSON Lines are read one physical line at a time
(a line longer than `MAX_LINE_BYTES` is skipped in blocks, never held whole), the JSON
document is walked element by element with ijson. Every non-blank line ends as exactly
one `ClaimLine` or one `Rejection`; a file that is not a claim batch at all gives one
`Rejection` with `line=None` and no lines (`BatchReader.file_error`).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from rxguard.ingest.normalize import (
    DUPLICATE,
    ENCODING,
    FILE_BINARY,
    FILE_EMPTY,
    FILE_MISSING,
    FILE_NO_HEADER,
    FILE_NOT_JSON,
    FILE_SEVERAL_LISTS,
    HEADER_ALIASES,
    KNOWN_FIELDS,
    MALFORMED,
    RAGGED_ROW,
    REQUIRED,
    TOO_LONG,
    LineRejected,
    TimeWindow,
    normalize_record,
)
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Rejection

MAX_LINE_BYTES = 64 * 1024  # a longer physical line is rejected `too_long` without being read whole
PREFIX_BYTES = 1024 * 1024  # sniffed for format and encoding
HEADER_SEARCH_LINES = 10  # a title row or two before the header is tolerated (and reported)
DELIMITERS = (",", "\t", "|", ";")

_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive or Excel workbook (.xlsx): export the sheet as CSV"),
    (b"\xd0\xcf\x11\xe0", "an old Excel/Office file (.xls): export the sheet as CSV"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive: decompress it first"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)
_SEP_DIRECTIVE = re.compile(r"sep=.", re.IGNORECASE)
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")


@dataclass(frozen=True)
class Sniffed:
    format: str  # "csv" | "jsonl" | "json"
    encoding: str  # "utf-8" | "utf-8-sig" | "gb18030" | "utf-16-le" | "utf-16-be"
    skip: int  # bytes of BOM to skip
    cr_only: bool = False  # old Mac line ends: lines end with a lone CR


def _file_error(file: str, reason: str, message: str) -> Rejection:
    return Rejection(file=file, line=None, field=None, reason=reason, message=f"{file}: {message}")


def _bad_lines(prefix: bytes, encoding: str) -> tuple[int, int]:
    """(lines with non-ASCII bytes, of which not decodable) over the complete lines of prefix."""
    lines = prefix.split(b"\n")
    if len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    non_ascii = bad = 0
    for raw in lines:
        if not raw.isascii():
            non_ascii += 1
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                bad += 1
    return non_ascii, bad


def _guess_encoding(prefix: bytes) -> str:
    """UTF-8 when most lines with non-ASCII bytes decode as UTF-8, else GB18030 (a superset of
    GBK and GB2312). A line of Chinese text in GBK is almost never valid UTF-8 by chance,
    while GB18030 decodes almost anything: so valid UTF-8 lines are the evidence, and a
    UTF-8 file with a few corrupt lines stays UTF-8 (those lines are rejected `encoding`)."""
    non_ascii, utf8_bad = _bad_lines(prefix, "utf-8")
    if utf8_bad * 2 <= non_ascii:
        return "utf-8"
    _, gb_bad = _bad_lines(prefix, "gb18030")
    return "gb18030" if gb_bad < utf8_bad else "utf-8"


def _utf16_order(prefix: bytes) -> str | None:
    """Without a BOM: ASCII-heavy UTF-16 has zero bytes at every odd (LE) or even (BE) offset.
    Chinese-heavy UTF-16 has few zero bytes (only its digits, commas and line ends): then the
    order whose text has line ends and readable characters wins."""
    sample = prefix[: 64 * 1024]
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    even_zero, odd_zero = even.count(0) / len(even), odd.count(0) / len(odd)
    if odd_zero > 0.3 and even_zero < 0.05:
        return "utf-16-le"
    if even_zero > 0.3 and odd_zero < 0.05:
        return "utf-16-be"
    first_line = sample.split(b"\n", 1)[0]
    if first_line.strip() and b"\x00" not in first_line:
        # a header in UTF-16 holds zero bytes (its commas, tabs, brackets are ASCII): this one has
        # none, so the NULs are stray bytes of later lines (GB18030 or UTF-8 text), not UTF-16
        return None
    try:  # Chinese UTF-16 is never valid UTF-8; UTF-8 (or ASCII) with stray NULs is not UTF-16
        sample.decode("utf-8")
        return None
    except UnicodeDecodeError:
        pass
    best: tuple[int, str] | None = None
    for order in ("utf-16-le", "utf-16-be"):
        text = sample[: len(sample) // 2 * 2].decode(order, errors="replace")
        lines = text.count("\n")
        unreadable = sum(1 for ch in text if ch == "\ufffd" or not (ch.isprintable() or ch in "\r\n\t"))
        plausible = lines >= max(2, len(text) // 2000) and unreadable <= len(text) // 100  # a line every 2,000 chars
        if plausible and (best is None or lines > best[0]):
            best = (lines, order)
    return best[1] if best else None


Opener = Callable[[], IO[bytes]]  # opens the batch from its start (a file, or an S3 object's stream)


def opener_of(source: Path | Opener) -> Opener:
    if isinstance(source, Path):
        return lambda: source.open("rb")
    return source


def sniff(source: Path | Opener, name: str) -> Sniffed | Rejection:
    """Format and encoding from the content (never the extension), or a whole-file rejection."""
    try:
        with opener_of(source)() as fh:
            prefix = fh.read(PREFIX_BYTES)
            more = bool(fh.read(1))
    except FileNotFoundError:
        return _file_error(name, FILE_MISSING, "file not found")
    except IsADirectoryError:
        return _file_error(name, FILE_MISSING, "is a directory, not a file")
    except OSError as exc:
        return _file_error(name, FILE_MISSING, f"cannot be read: {exc.strerror}")
    skip, encoding = 0, ""
    if prefix.startswith(codecs.BOM_UTF8):
        skip, encoding = 3, "utf-8-sig"
    elif prefix.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return _file_error(name, FILE_BINARY, "is UTF-32 encoded: export it as UTF-8 or GB18030")
    elif prefix.startswith(codecs.BOM_UTF16_LE):
        skip, encoding = 2, "utf-16-le"
    elif prefix.startswith(codecs.BOM_UTF16_BE):
        skip, encoding = 2, "utf-16-be"
    if not prefix[skip:].strip() and not more:
        return _file_error(name, FILE_EMPTY, "is empty: no claim lines")
    for magic, what in _MAGIC:
        if prefix.startswith(magic):
            return _file_error(name, FILE_BINARY, f"is {what}, not a claim batch")
    if not encoding and b"\x00" in prefix:
        encoding = _utf16_order(prefix) or ""
    if not encoding:
        # Binary when the first line already holds NUL or control bytes. Stray control bytes
        # further down are the business of the lines that hold them (rejected field by field).
        first_line = prefix[skip:].lstrip(b" \t\r\n")[:4096].split(b"\n", 1)[0]
        if b"\x00" in first_line or len(_CONTROL_BYTES.findall(first_line)) > 2:
            return _file_error(name, FILE_BINARY, "holds NUL or control bytes: a binary file, not a claim batch")
        encoding = _guess_encoding(prefix)
    text = prefix[skip:].decode(encoding, errors="replace")
    if encoding.startswith("utf-16") and len(prefix) % 2:
        text = text[:-1]
    cr_only = "\r" in text and "\n" not in text and not encoding.startswith("utf-16")
    if cr_only:
        text = text.replace("\r", "\n")
    stripped = text.lstrip()
    if not stripped:  # a megabyte of blank lines, then something: read it as CSV
        return Sniffed("csv", encoding, skip, cr_only)
    if stripped[0] == "[":
        return Sniffed("json", encoding, skip, cr_only)
    if stripped[0] == "{":
        return Sniffed(_json_kind(stripped), encoding, skip, cr_only)
    return Sniffed("csv", encoding, skip, cr_only)


def _json_kind(text: str) -> str:
    """JSON Lines when the first non-blank lines are whole JSON objects of claim fields."""
    lines = [ln for ln in text.split("\n")[:20] if ln.strip()]
    if lines and not text.endswith("\n") and len(lines) < 20:
        lines = lines[:-1] or lines  # the last line may be cut by the prefix
    for line in lines[:5]:
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            continue
        if isinstance(value, dict):
            keys = {str(k).strip().lower() for k in value}
            if len(keys & KNOWN_FIELDS) >= 2:
                return "jsonl"
            if "input" in keys or "feedetail" in keys or any(isinstance(v, dict | list) for v in value.values()):
                return "json"  # a one-line document: {"input": ...}, {"data": {"input": ...}}
            return "jsonl"
    return "json"


MAX_JSON_DEPTH = 64  # a claim document needs 4; ijson's cost grows with the square of the depth
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_KEEP = bytes(b for b in range(256) if b not in b'"[]{}')


class JsonTooDeep(ValueError):
    """The JSON document nests deeper than MAX_JSON_DEPTH."""


class _DepthGuard:
    """Nesting depth of a UTF-8 JSON stream fed in blocks; brackets inside strings are
    ignored. All scanning is done by bytes methods in C (about 1 s per GB)."""

    def __init__(self) -> None:
        self.depth, self._in_string, self._carry = 0, False, b""

    def feed(self, data: bytes) -> None:
        buf = self._carry + data
        run = len(buf) - len(buf.rstrip(b"\\"))
        self._carry = b"\\" if run % 2 else b""  # an escape cut by the block end
        if run % 2:
            buf = buf[:-1]
        if b"\\" in buf:
            buf = _ESCAPE.sub(b"", buf)
        parts = buf.translate(None, _KEEP).split(b'"')
        outside = b"".join(parts[1::2] if self._in_string else parts[0::2])
        if (len(parts) - 1) % 2:
            self._in_string = not self._in_string
        depth = self.depth
        if outside.count(b"[") + outside.count(b"{") + depth <= MAX_JSON_DEPTH:  # the usual case
            self.depth = depth + outside.count(b"[") + outside.count(b"{") - outside.count(b"]") - outside.count(b"}")
            return
        for b in outside:
            if b == 91 or b == 123:
                depth += 1
                if depth > MAX_JSON_DEPTH:
                    raise JsonTooDeep(f"nested deeper than {MAX_JSON_DEPTH} levels")
            else:
                depth -= 1
        self.depth = depth


MAX_NUMBER_DIGITS = 1000  # a longer integer is no claim value; ijson's C backend crashes on 4,301+ digits
MAX_EXPONENT_DIGITS = 18  # Decimal refuses 19+ exponent digits (InvalidOperation would end the parse)
_DIGITS = b"0123456789"
_TROUBLE = re.compile(rb"[0-9]{%d,}|[eE][+-]?[0-9]{%d,}" % (MAX_NUMBER_DIGITS, MAX_EXPONENT_DIGITS + 1))
_FOLD = bytes.maketrans(b"123456789E", b"000000000e")  # a cheap C prefilter for _TROUBLE
_NEEDLES = (b"0" * MAX_NUMBER_DIGITS, *(b"e" + s + b"0" * (MAX_EXPONENT_DIGITS + 1) for s in (b"", b"-", b"+")))
# A \\uXXXX escape of a surrogate, as a valid pair or alone; only where the backslash before
# `u` is not itself escaped (an even run of backslashes before it).
_SURROGATE_ESCAPE = re.compile(
    rb"(?<!\\)((?:\\\\)*)\\u[dD][89abAB][0-9a-fA-F]{2}(?:(\\u[dD][c-fC-F][0-9a-fA-F]{2})|)"
    rb"|(?<!\\)((?:\\\\)*)\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _integer_run(before: bytes) -> bool:
    """True when a digit run preceded by `before` (up to two bytes) is an integer part, not a
    fraction or an exponent."""
    prev = before[-1:]
    if prev in (b".", b"e", b"E", b"+"):
        return False
    return not (prev == b"-" and before[-2:-1] in (b"e", b"E"))


def _quotes(segment: bytes) -> int:
    """Unescaped double quotes in a segment that does not start inside an escape."""
    if b"\\" in segment:
        segment = _ESCAPE.sub(b"", segment)
    return segment.count(b'"')


_SAFE_BYTES = tuple(b'",:[]{} \n\t\r')
_MAX_HELD = 64 * 1024  # bytes without a safe cut held back at most
_HIGH_ESCAPE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}")


def _escape_cut(buf: bytes) -> int:
    """Where to cut a block so that no escape, and no surrogate pair, spans the cut: the last
    11 bytes wait for the next block, and the cut moves back to the start of an escape that
    crosses it (and of the high surrogate before it, and of the backslash run it is in)."""
    cut = max(0, len(buf) - 11)
    crossing = buf.find(b"\\", max(0, cut - 5), cut)
    if crossing >= 0:
        cut = crossing
    if cut >= 6 and _HIGH_ESCAPE.fullmatch(buf, cut - 6, cut):
        cut -= 6
    while cut > 0 and buf[cut - 1 : cut] == b"\\":
        cut -= 1
    return cut


def _keep_pairs(m: re.Match[bytes]) -> bytes:
    if m.group(2):  # a high surrogate followed by a low one: a valid pair (an emoji)
        return m.group(0)
    return (m.group(1) or m.group(3) or b"") + b"\\ufffd"


class _JsonSanitizer:
    """What ijson's C backend must never see, made harmless in the UTF-8 stream:

    - an integer of more than MAX_NUMBER_DIGITS digits (4,301+ crash the process): `.0` is
      appended, so the parser reads a Decimal, which has no limit, and normalization rejects
      the value as out of range for its field (a line-level rejection);
    - an exponent of more than MAX_EXPONENT_DIGITS digits (Decimal refuses it and the parse
      would end): the exponent becomes 999999 (its sign kept), again a value out of range;
    - a lone surrogate escape (`"\\ud800"`, which raises mid-document or is rewritten
      silently): `\\ufffd`, which normalization rejects as `encoding`, naming the field.

    Numbers are only touched outside strings (the quote parity is tracked across blocks), so
    text such as a psn_no is never rewritten. Runs and escapes cut by a block end are carried."""

    def __init__(self) -> None:
        self._held = b""  # the block's tail that may go on in the next block, not yet emitted
        self._in_string = False  # at the next byte to emit
        self._run: str | None = None  # a long digit run that goes on: "int" | "exp" | "raw"

    def feed(self, data: bytes, final: bool = False) -> bytes:
        out = b""
        if self._run is not None:  # a long digit run goes on from the last block
            rest = data.lstrip(_DIGITS)
            if self._run != "exp":
                out = data[: len(data) - len(rest)]
            if not rest and not final:
                return out
            if self._run == "int" and rest[:1] not in (b".", b"e", b"E"):
                out += b".0"
            self._run, data = None, rest
        buf = self._held + data if self._held else data
        self._held = b""
        if final:
            return out + self._fix(buf)
        # Cut after the last byte that can end no escape, number or surrogate pair: a quote,
        # a comma, a colon, a bracket or a blank. The rest waits for the next block.
        safe = max(buf.rfind(c) for c in _SAFE_BYTES) + 1
        if len(buf) - safe <= _MAX_HELD:
            self._held = buf[safe:]
            return out + self._fix(buf[:safe])
        # a long stretch without one (a huge number or word): emit it, but not a cut escape
        body = buf.rstrip(_DIGITS)
        tail = len(buf) - len(body)
        if tail >= MAX_NUMBER_DIGITS:  # a long run at the end: decided now, its end comes later
            head = self._fix(body)
            exponent = body[-1:] in (b"e", b"E") or (body[-1:] in (b"-", b"+") and body[-2:-1] in (b"e", b"E"))
            kind = "raw" if self._in_string else "exp" if exponent else None
            if kind is None:
                kind = "int" if _integer_run(body[-2:]) else "raw"
            self._run = kind
            return out + head + (b"9" * 6 if kind == "exp" else buf[len(body) :])
        cut = _escape_cut(buf)
        if tail:
            cut = min(cut, max(0, len(body) - 2))
        self._held = buf[cut:]
        return out + self._fix(buf[:cut])

    def _fix(self, segment: bytes) -> bytes:
        if b"\\u" in segment:
            segment = _SURROGATE_ESCAPE.sub(_keep_pairs, segment)
        if len(segment) > MAX_EXPONENT_DIGITS:
            folded = segment.translate(_FOLD)
            if any(n in folded for n in _NEEDLES):
                segment = _TROUBLE.sub(self._bound, segment)
        if _quotes(segment) % 2:
            self._in_string = not self._in_string
        return segment

    def _bound(self, m: re.Match[bytes]) -> bytes:
        segment, start, text = m.string, m.start(), m.group()
        if self._in_string != bool(_quotes(segment[:start]) % 2):  # inside a string: text, kept
            return text
        if text[:1] in b"eE":
            return text.rstrip(_DIGITS) + b"9" * 6
        before, after = segment[max(0, start - 2) : start], segment[m.end() : m.end() + 1]
        return text + b".0" if _integer_run(before) and after not in (b".", b"e", b"E") else text


class _TranscodeToUtf8(io.RawIOBase):
    """A binary stream that re-encodes the source to UTF-8 for ijson; undecodable bytes
    become U+FFFD, which normalization rejects as `encoding` for the element holding it."""

    def __init__(self, source: IO[bytes], encoding: str) -> None:
        self._source = source
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._pending = b""
        self._eof = False
        self._guard = _DepthGuard()  # a nesting bomb is refused before ijson sees it
        self._sanitizer = _JsonSanitizer()  # nor an unbounded number or a lone surrogate

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        while len(self._pending) < size and not self._eof:
            raw = self._source.read(64 * 1024)
            if not raw:
                self._eof = True
                block = self._sanitizer.feed(self._decoder.decode(b"", final=True).encode("utf-8"), final=True)
            else:
                block = self._sanitizer.feed(self._decoder.decode(raw).encode("utf-8"))
            self._guard.feed(block)
            self._pending += block
        chunk, self._pending = self._pending[:size], self._pending[size:]
        buffer[: len(chunk)] = chunk
        return len(chunk)


class _CrToLf(io.RawIOBase):
    """Every line end as LF: CRLF, LF and a lone CR (old Mac files, and files mixing them,
    whose lone CRs would otherwise merge rows). Safe in UTF-8 and GB18030: 0x0D is never part
    of a character. A CR at the end of a block waits for the next one (it may be a CRLF)."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self._cr = False  # the previous block ended with a CR

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            raw = self._source.read(max(1, len(buffer) - 1))  # room for a carried CR
            data = b"\r" + raw if self._cr else raw
            self._cr = False
            if raw and data.endswith(b"\r"):
                self._cr, data = True, data[:-1]
            if data or not raw:
                break
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer[: len(data)] = data
        return len(data)


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record read but not normalized yet (`BatchReader(defer=True)`): its 1-based line
    (element index for a JSON document) and its fields as read, or for a CSV file the row's
    text (`csv_record` with the reader's `layout` makes it a record). `prepare_batch`
    normalizes these in batches, possibly in other processes, and counts each outcome back
    with `BatchReader.account` (rejected) or `account_accepted`."""

    line: int
    record: dict[str, Any] | str


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """How a CSV file's rows become records: the delimiter, the (index, field) of each known
    column, and the header's width."""

    delimiter: str
    columns: tuple[tuple[int, str], ...]
    width: int


def line_rejection(
    file: str, line_no: int, reason: str, message: str, field: str | None = None, line_id: str | None = None
) -> Rejection:
    """The rejection of one line, its message starting with where it is."""
    where = f"line {line_no} ({line_id})" if line_id else f"line {line_no}"
    return Rejection(
        file=file, line=line_no, field=field, reason=reason, message=f"{where}: {message}", line_id=line_id
    )


def csv_record(text: str, line_no: int, layout: CsvLayout, file: str) -> dict[str, str] | Rejection:
    """One CSV row's record (its known columns), or why the row is no claim line (quoting,
    ragged, a repeated header). Pure: a worker process may run it on the row's text."""
    delimiter = layout.delimiter
    if '"' in text:
        try:
            fields = next(csv.reader([text], delimiter=delimiter, strict=True))
        except csv.Error as exc:
            return line_rejection(file, line_no, MALFORMED, f"CSV quoting error ({exc})")
    else:
        fields = text.rstrip("\r\n").split(delimiter)
    width = layout.width
    if len(fields) != width and (len(fields) < width or any(f.strip() for f in fields[width:])):
        # No line id at all: in a ragged row the columns may be shifted, and what sits where
        # fixmedins_code and feedetl_sn belong may be a psn_no (rejected.jsonl holds none).
        return line_rejection(file, line_no, RAGGED_ROW, f"row has {len(fields)} fields, the header has {width}")
    record = {field: fields[index] for index, field in layout.columns}
    if record.get("feedetl_sn", "").strip().lower() in ("feedetl_sn", "费用明细流水号"):
        return line_rejection(
            file, line_no, MALFORMED, "a repeated header row (files joined together?), not a claim line"
        )
    return record


_Item = ClaimLine | Rejection | RawRecord


def located(rejection: Rejection, file_format: str | None) -> Rejection:
    """A line's rejection as the reader reports it: in a JSON document, `line` is the
    element's index, which the message says."""
    if file_format != "json":
        return rejection
    where = f"(element {rejection.line} of the feedetail list) "
    return rejection.model_copy(update={"message": where + rejection.message})


class BatchReader(Iterator[ClaimLine | Rejection]):
    """Iterates a claim batch: one `ClaimLine` or `Rejection` per non-blank line.

    The counters (lines_read, accepted, rejected, rejected_by_reason) and the sniffed
    `format`/`encoding` are up to date while iterating; `file_error` is set when the
    file is rejected whole. Duplicates (same fixmedins_code + feedetl_sn as an earlier
    accepted line) are rejected when `dedupe` is on, keeping one 64-bit hash per accepted
    line; `prepare_batch` dedupes on disk instead and turns this off."""

    def __init__(
        self,
        path: Path | Opener,
        kb: KnowledgeBase,
        *,
        name: str | None = None,
        default_admdvs: str | None = None,
        dedupe: bool = True,
        window: TimeWindow | None = None,
        defer: bool = False,
    ) -> None:
        if default_admdvs is not None and not (
            len(default_admdvs) == 6 and default_admdvs.isascii() and default_admdvs.isdigit()
        ):
            raise ValueError(f"default_admdvs must be a 6-digit region code, not {default_admdvs!r}")
        if isinstance(path, str | Path):
            path = Path(path)
            self.name = name or path.name
        elif name is None:
            raise ValueError("a batch read from a stream needs a name")
        else:
            self.name = name
        self._open = opener_of(path)  # read from the start once, twice for a JSON document
        self.kb = kb
        self.default_admdvs = default_admdvs
        self.window = window  # when a dispensing may plausibly have happened (None: 1990-2100 only)
        self.format: str | None = None
        self.encoding: str | None = None
        self.delimiter: str | None = None
        self.layout: CsvLayout | None = None  # a CSV file's, once its header is read
        self.lines_read = 0
        self.accepted = 0
        self.rejected = 0
        self.rejected_by_reason: dict[str, int] = {}
        self.file_error: Rejection | None = None
        self._seen: dict[int, int] | None = {} if dedupe else None  # hash of line id -> first line
        self._defer = defer  # yield RawRecord instead of normalizing (the caller accounts the outcome)
        self._deferred = 0  # records yielded as RawRecord so far
        self._gen = self._run()

    def __iter__(self) -> BatchReader:
        return self

    def __next__(self) -> ClaimLine | Rejection:
        if self._defer:
            raise TypeError("a BatchReader(defer=True) is read with .deferred()")
        return cast(ClaimLine | Rejection, next(self._gen))

    def deferred(self) -> Iterator[ClaimLine | Rejection | RawRecord]:
        """The items of a `BatchReader(defer=True)`: Rejections found while reading, and a
        RawRecord for every record to normalize (then `account` its outcome)."""
        if not self._defer:
            raise TypeError("deferred() needs BatchReader(defer=True)")
        return self._gen

    def account(self, reason: str) -> None:
        """Count a deferred record that was rejected for `reason`."""
        self.lines_read += 1
        self.rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1

    def account_accepted(self, count: int) -> None:
        """Count `count` deferred records that were accepted."""
        self.lines_read += count
        self.accepted += count

    def _nothing_read(self) -> bool:
        return self.lines_read == 0 and self._deferred == 0

    # --- bookkeeping ---------------------------------------------------------------

    def _reject(self, rejection: Rejection) -> Rejection:
        self.lines_read += 1
        self.rejected += 1
        self.rejected_by_reason[rejection.reason] = self.rejected_by_reason.get(rejection.reason, 0) + 1
        return rejection

    def _line(
        self,
        line_no: int,
        reason: str,
        message: str,
        field: str | None = None,
        line_id: str | None = None,
    ) -> Rejection:
        return self._reject(line_rejection(self.name, line_no, reason, message, field, line_id))

    def _accept(self, record: dict[str, Any], line_no: int) -> ClaimLine | Rejection | RawRecord:
        if self._defer:
            self._deferred += 1
            return RawRecord(line_no, record)
        try:
            claim = normalize_record(
                record, self.kb, file=self.name, line=line_no, default_admdvs=self.default_admdvs, window=self.window
            )
        except LineRejected as exc:
            return self._reject(located(exc.rejection, self.format))
        if self._seen is not None:
            key = hash((claim.fixmedins_code, claim.feedetl_sn))
            first = self._seen.get(key)
            if first is not None:
                return self._reject(
                    Rejection(
                        file=self.name,
                        line=line_no,
                        field="feedetl_sn",
                        reason=DUPLICATE,
                        message=f"line {claim.line_id}: fixmedins_code + feedetl_sn already on line {first}",
                        line_id=claim.line_id,
                    )
                )
            self._seen[key] = line_no
        self.lines_read += 1
        self.accepted += 1
        return claim

    # --- the run ---------------------------------------------------------------------

    def _run(self) -> Iterator[_Item]:
        sniffed = sniff(self._open, self.name)
        if isinstance(sniffed, Rejection):
            self.file_error = sniffed
            yield sniffed
            return
        self.format, self.encoding = sniffed.format, sniffed.encoding
        if sniffed.format == "json":
            yield from self._json_document(sniffed.encoding, sniffed.skip)
            return
        with self._open() as fh:
            fh.read(sniffed.skip)  # the BOM (a stream cannot seek)
            source: IO[bytes] = fh
            if not sniffed.encoding.startswith("utf-16"):  # UTF-16 reads universal newlines itself
                source = io.BufferedReader(_CrToLf(fh), 64 * 1024)
            lines = _physical_lines(source, sniffed.encoding)
            if sniffed.format == "jsonl":
                yield from self._json_lines(lines)
            else:
                yield from self._csv(lines)

    def _json_lines(self, lines: Iterator[tuple[int, str | None, str | None]]) -> Iterator[_Item]:
        loads = json.loads
        for line_no, text, error in lines:
            if text is None:
                yield self._physical_error(line_no, error)
                continue
            try:
                record = loads(text)
            except ValueError as exc:
                yield self._line(line_no, MALFORMED, f"not valid JSON ({exc})")
                continue
            except RecursionError:
                yield self._line(line_no, MALFORMED, "JSON nested too deeply")
                continue
            if type(record) is not dict:
                yield self._line(line_no, MALFORMED, f"a JSON {type(record).__name__}, expected an object")
                continue
            yield self._accept(record, line_no)

    def _physical_error(self, line_no: int, error: str | None) -> Rejection:
        if error == TOO_LONG:
            return self._line(line_no, TOO_LONG, f"longer than {MAX_LINE_BYTES} bytes; skipped unread")
        return self._line(line_no, ENCODING, f"bytes not valid {self.encoding}")

    def _csv(self, lines: Iterator[tuple[int, str | None, str | None]]) -> Iterator[_Item]:
        preamble: list[tuple[int, str | None, str | None]] = []
        header: tuple[str, list[tuple[int, str]], int] | None = None
        best_missing: list[str] = []
        for item in lines:
            line_no, text, _ = item
            if text is not None and _SEP_DIRECTIVE.fullmatch(text.strip()):
                continue  # Excel's `sep=;` line: metadata, not a claim line
            preamble.append(item)
            if text is not None:
                found = _parse_header(text)
                if isinstance(found, tuple):
                    header = found
                    preamble.pop()
                    break
                if found and not best_missing:
                    best_missing = found
            if len(preamble) >= HEADER_SEARCH_LINES:
                break
        if header is None:
            if best_missing:
                message = f"header lacks required column(s): {', '.join(best_missing)}"
            else:
                message = "no recognisable header (needs feedetl_sn, fixmedins_code, psn_no, ... as column names)"
            self.file_error = _file_error(self.name, FILE_NO_HEADER, message)
            yield self.file_error
            return
        delimiter, columns, width = header
        self.delimiter = delimiter
        self.layout = layout = CsvLayout(delimiter, tuple(columns), width)
        for line_no, text, error in preamble:
            if text is None:
                yield self._physical_error(line_no, error)
            else:
                yield self._line(line_no, MALFORMED, "text before the header row, not a claim line")
        blank = delimiter + " \t\r\n\ufeff"
        for line_no, text, error in lines:
            if text is None:
                yield self._physical_error(line_no, error)
                continue
            if not text.strip(blank):
                continue  # an empty row (",,,,") is a blank line
            if self._defer:  # the row's text: split where it is normalized (csv_record)
                self._deferred += 1
                yield RawRecord(line_no, text)
                continue
            row = csv_record(text, line_no, layout, self.name)
            if type(row) is Rejection:
                yield self._reject(row)
                continue
            yield self._accept(cast(dict[str, Any], row), line_no)
        if self._nothing_read():  # like an empty feedetail list: nothing to screen
            self.file_error = _file_error(self.name, FILE_EMPTY, "has a header row but no claim lines")
            yield self.file_error

    def _json_document(self, encoding: str, skip: int) -> Iterator[_Item]:
        with self._open() as fh:  # pass 1: which list holds the claim lines (exactly one)
            fh.read(skip)
            prefix = _find_items_prefix(fh, encoding)
        if prefix[:1] in ("!", "?"):
            reason = FILE_NOT_JSON if prefix[0] == "!" else FILE_SEVERAL_LISTS
            self.file_error = _file_error(self.name, reason, prefix[1:])
            yield self.file_error
            return
        with self._open() as fh:  # pass 2: its elements
            fh.read(skip)
            yield from self._json_elements(fh, encoding, prefix)

    def _json_elements(self, fh: IO[bytes], encoding: str, prefix: str) -> Iterator[_Item]:
        import ijson  # only JSON documents need it; decimals come as Decimal (use_float overflows on big ints)

        stream = io.BufferedReader(_TranscodeToUtf8(fh, encoding), 64 * 1024)
        index = 0
        try:
            for element in ijson.items(stream, prefix):
                index += 1
                if type(element) is not dict:
                    yield self._line(
                        index,
                        MALFORMED,
                        f"(element {index} of the feedetail list) a JSON {type(element).__name__}, expected an object",
                    )
                    continue
                yield self._accept(element, index)
        except (ijson.JSONError, JsonTooDeep) as exc:
            if index == 0:  # not one element could be read: the file is not a claim document
                self.file_error = _file_error(self.name, FILE_NOT_JSON, f"not valid JSON ({_parse_error(exc)})")
                yield self.file_error
                return
            yield self._line(
                index + 1,
                MALFORMED,
                f"(element {index + 1} of the feedetail list) the JSON document is invalid or cut here "
                f"({_parse_error(exc)}); the rest of the file is not read",
            )
        if index == 0 and self._nothing_read():
            self.file_error = _file_error(self.name, FILE_EMPTY, f"the {prefix[:-5] or 'top-level'} list is empty")
            yield self.file_error


def _parse_error(exc: Exception) -> str:
    """The parser's own words without the snippet of input it quotes (it may hold a psn_no)."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:80]


def _claim_list(prefix: str, found: list[str]) -> bool:
    """An array at this prefix is a claim list: at `input`, a key ending in `feedetail` or the
    top level, and not inside a claim list found earlier (a list field of an element)."""
    if not (prefix in ("", "input") or prefix.endswith("feedetail")):
        return False
    return not any(prefix.startswith(f"{outer}.item" if outer else "item") for outer in found)


def _list_name(prefix: str) -> str:
    return prefix or "the top-level list"


def _find_items_prefix(fh: IO[bytes], encoding: str) -> str:
    """The ijson item prefix of the document's one claim list, or '!' + why the document is
    not a batch. The rule (docs/ingest.md): a claim list is an array at `input`, at a key
    ending in `feedetail` (`input.feedetail`, `data.input.feedetail`, `feedetail`) or the
    top level, not nested in another claim list. Empty ones are ignored; exactly one must
    hold lines. Several are a file error naming them: never a silent pick."""
    import ijson

    stream = io.BufferedReader(_TranscodeToUtf8(fh, encoding), 64 * 1024)
    found: list[str] = []  # candidate lists in document order (a repeated key counts twice)
    non_empty: list[str] = []
    open_item: str | None = None  # the item prefix of the candidate list just opened
    try:
        for prefix, event, _ in ijson.parse(stream):
            if open_item is not None:
                if prefix == open_item:  # its first element: the list holds lines
                    non_empty.append(found[-1])
                open_item = None
            if event == "start_array" and _claim_list(prefix, found):
                found.append(prefix)
                open_item = f"{prefix}.item" if prefix else "item"
    except (ijson.JSONError, JsonTooDeep) as exc:
        if not non_empty and not found:
            return f"!not a valid JSON document ({_parse_error(exc)})"
        # broken further on: the element reader reports where; the lists found so far decide
    if len(non_empty) > 1:
        names = ", ".join(_list_name(p) for p in non_empty)
        return f"?several claim lists ({names}): a document must hold exactly one"
    chosen = non_empty[0] if non_empty else (found[0] if found else None)
    if chosen is None:
        return '!a JSON document without a claim list: expected {"input": {"feedetail": [...]}} or a list'
    return f"{chosen}.item" if chosen else "item"


def _parse_header(text: str) -> tuple[str, list[tuple[int, str]], int] | list[str]:
    """(delimiter, [(column index, field)], width) for a header row; else the required
    columns a near-header lacks (empty list when the row is no header at all)."""
    best: tuple[int, str, list[str]] | None = None
    for delimiter in DELIMITERS:
        if delimiter not in text:
            continue
        try:
            names = next(csv.reader([text.rstrip("\r\n")], delimiter=delimiter))
        except csv.Error:
            continue
        known = sum(1 for n in names if _field_name(n) in KNOWN_FIELDS)
        if best is None or known > best[0]:
            best = (known, delimiter, names)
    if best is None or best[0] < 3:
        return []
    _, delimiter, names = best
    columns: list[tuple[int, str]] = []
    seen: set[str] = set()
    for index, raw in enumerate(names):
        field = _field_name(raw)
        if field in KNOWN_FIELDS and field not in seen:  # unknown columns ignored; first of a repeat wins
            seen.add(field)
            columns.append((index, field))
    missing = [f for f in REQUIRED if f not in seen]
    if missing:
        return missing
    return delimiter, columns, len(names)


def _field_name(raw: str) -> str:
    name = raw.strip().strip("\ufeff\"'").strip().lower()
    return HEADER_ALIASES.get(name, name)


def _physical_lines(fh: IO[bytes], encoding: str) -> Iterator[tuple[int, str | None, str | None]]:
    """(1-based physical line number, decoded text or None, error reason) per non-blank line."""
    if encoding.startswith("utf-16"):
        yield from _utf16_lines(fh, encoding)
        return
    decode_as = "utf-8" if encoding == "utf-8-sig" else encoding
    readline = fh.readline
    line_no = 0
    while True:
        raw = readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        line_no += 1
        if len(raw) > MAX_LINE_BYTES and raw[-1:] != b"\n":
            while True:  # skip the rest of the line in blocks: never held whole
                more = readline(MAX_LINE_BYTES)
                if not more or more[-1:] == b"\n":
                    break
            yield line_no, None, TOO_LONG
            continue
        try:
            text = raw.decode(decode_as)
        except UnicodeDecodeError:
            if raw.strip():
                yield line_no, None, ENCODING
            continue
        if text.strip():
            yield line_no, text, None


def _utf16_lines(fh: IO[bytes], encoding: str) -> Iterator[tuple[int, str | None, str | None]]:
    reader = io.TextIOWrapper(fh, encoding=encoding, errors="replace", newline=None)
    line_no = 0
    while True:
        text = reader.readline(MAX_LINE_BYTES + 1)
        if not text:
            return
        line_no += 1
        if len(text) > MAX_LINE_BYTES and not text.endswith("\n"):
            while True:
                more = reader.readline(MAX_LINE_BYTES)
                if not more or more.endswith("\n"):
                    break
            yield line_no, None, TOO_LONG
            continue
        if "\ufffd" in text:
            yield line_no, None, ENCODING
            continue
        if text.strip():
            yield line_no, text, None
