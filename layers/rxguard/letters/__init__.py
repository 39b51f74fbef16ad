"""Warning letters (提醒函 / 警示函) as official documents (docs/letters.md): one per
institution per period (monthly by default) covering its findings, and one per patient
when the bureau supplies a person file (name, address); rendered from the bureau's
templates to HTML and PDF, numbered from an atomic counter, stored under
`letters/<period>/<letter_id>.{pdf,html}` (and `-annex.csv` when the table is capped) and
announced on the letters topic."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from rxguard.alerts.messages import letter_announcement
from rxguard.alerts.notify import LetterRef
from rxguard.alerts.schema import AlertMessage
from rxguard.alerts.settings import AlertSettings
from rxguard.alerts.sink import NotificationSink
from rxguard.kb import KnowledgeBase
from rxguard.letters.context import LetterContext, Person, annex_csv, build_letter, letter_id_of, period_of
from rxguard.letters.numbers import CounterStore, InMemoryCounterStore, NumberBook, NumberKeeper
from rxguard.models import ClaimLine, Finding

__all__ = [
    "CounterStore",
    "LetterContext",
    "LetterJob",
    "Person",
    "build_and_render",
    "build_letter",
    "issue_letters",
    "letter_groups",
    "load_persons",
    "render_letter",
]

Group = tuple[Literal["institution", "patient"], str, tuple[str, str], list["Finding"]]
_PROCESS_COUNTERS = InMemoryCounterStore()  # numbers of callers that wire no counter store (tests, dry runs)


class PersonFileError(ValueError):
    """The person file is unreadable; names the file, the line and the field."""


def load_persons(path: Path) -> dict[str, Person]:
    """The bureau's person file: CSV with a header `psn_no,name,address[,postcode]`, UTF-8
    (with or without BOM) or GB18030. Kept in memory only; never logged."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("gb18030")
    reader = csv.DictReader(io.StringIO(text))
    missing = {"psn_no", "name", "address"} - set(reader.fieldnames or ())
    if missing:
        raise PersonFileError(f"{path}, line 1: missing column(s) {', '.join(sorted(missing))}")
    persons: dict[str, Person] = {}
    for n, row in enumerate(reader, start=2):
        psn = (row.get("psn_no") or "").strip()
        name = (row.get("name") or "").strip()
        address = (row.get("address") or "").strip()
        for field, value in (("psn_no", psn), ("name", name), ("address", address)):
            if not value:
                raise PersonFileError(f"{path}, line {n}: field {field} is empty")
        persons[psn] = Person(name=name, address=address, postcode=(row.get("postcode") or "").strip())
    return persons


def letter_groups(
    findings: Sequence[Finding], settings: AlertSettings, persons: Mapping[str, Person] | None = None
) -> list[Group]:
    """Who gets a letter for which period: each institution (finding.fixmedins_code) with
    findings at or above `letter_min_severity` in the period, and each patient of a
    patient finding who is in the person file (`persons`; no file, no patient letter)."""
    by_institution: dict[tuple[str, tuple[str, str]], list[Finding]] = defaultdict(list)
    by_patient: dict[tuple[str, tuple[str, str]], list[Finding]] = defaultdict(list)
    for f in findings:
        if f.severity.rank < settings.letter_min_severity.rank:
            continue
        period = period_of(f.occurred_at, settings.letter_period)
        if f.fixmedins_code:
            by_institution[(f.fixmedins_code, period)].append(f)
        if settings.patient_letters and persons and f.subject_type == "patient" and f.psn_no and f.psn_no in persons:
            by_patient[(f.psn_no, period)].append(f)
    groups: list[Group] = [
        ("institution", code, period, group) for (code, period), group in sorted(by_institution.items())
    ]
    groups += [("patient", psn, period, group) for (psn, period), group in sorted(by_patient.items())]
    return groups


def render_letter(letter: LetterContext, settings: AlertSettings) -> tuple[str, bytes]:
    """(HTML, PDF bytes) of one letter."""
    # Deferred: jinja2 and reportlab cost ~0.28 s CPU to import, paid only by a process that renders.
    from rxguard.letters.pdf import html_to_pdf
    from rxguard.letters.render import render_html

    html = render_html(letter, settings.templates_dir)
    pdf = html_to_pdf(html, font_path=settings.font_path, author=settings.issuer_name_zh, subject=letter.number)
    return html, pdf


@dataclass(frozen=True)
class LetterJob:
    """One letter to build and render: what `build_letter` takes but the knowledge base and
    the settings (`issue_letters`' `build` may run jobs in other processes, which have
    their own). `lines` holds the evidence lines of its findings."""

    addressee_type: Literal["institution", "patient"]
    subject: str
    findings: list[Finding]
    batch_id: str
    issued_on: date
    institution_names: Mapping[str, str]
    lines: Mapping[str, ClaimLine]
    serial: int
    period: tuple[str, str]
    person: Person | None
    supplement: bool

    def build(self, kb: KnowledgeBase, settings: AlertSettings) -> LetterContext:
        return build_letter(
            self.addressee_type,
            self.subject,
            self.findings,
            batch_id=self.batch_id,
            kb=kb,
            settings=settings,
            issued_on=self.issued_on,
            institution_names=self.institution_names,
            lines=self.lines,
            serial=self.serial,
            period=self.period,
            person=self.person,
            supplement=self.supplement,
        )


Render = Callable[[LetterContext, AlertSettings], tuple[str, bytes | None]]
# The letter, its HTML, its PDF (None: rendered later). An HTML of None: the build stored the
# letter's documents itself (`letter_documents`, at the sink's keys), as the local deployment's workers do.
Built = tuple[LetterContext, str | None, bytes | None]
Rendered = tuple[LetterContext, str, bytes | None]  # a letter, its HTML and its PDF (None: rendered later)
# (jobs, settings) -> each one's letter, HTML and PDF, in the jobs' order
Build = Callable[[Sequence[LetterJob], AlertSettings], Iterable[Built]]


def build_and_render(
    jobs: Iterable[LetterJob], kb: KnowledgeBase, settings: AlertSettings, render: Render
) -> list[Rendered]:
    """Build and render letters (in any process: the local deployment runs slices of a
    batch's letters over its worker processes)."""
    out: list[Rendered] = []
    for job in jobs:
        letter = job.build(kb, settings)
        html, pdf = render(letter, settings)
        out.append((letter, html, pdf))
    return out


def letter_keys(letter: LetterContext) -> dict[str, str]:
    """Where a letter's documents are stored: its PDF, its HTML and its annex (when it has
    one), under `letters/<period>/`."""
    stem = f"letters/{letter.period_key}/{letter.letter_id}"
    keys = {"pdf": f"{stem}.pdf", "html": f"{stem}.html"}
    if letter.annex_name:
        keys["annex"] = f"letters/{letter.period_key}/{letter.annex_name}"
    return keys


def letter_documents(letter: LetterContext, html: str, pdf: bytes | None) -> list[tuple[str, str, bytes, str]]:
    """What storing a letter writes: (kind, key, body, content type) of its PDF (when
    rendered), its HTML and its annex (when it has one)."""
    keys = letter_keys(letter)
    docs = [("pdf", keys["pdf"], pdf, "application/pdf")] if pdf is not None else []
    docs.append(("html", keys["html"], html.encode("utf-8"), "text/html; charset=utf-8"))
    if "annex" in keys:
        docs.append(("annex", keys["annex"], annex_csv(letter), "text/csv; charset=utf-8"))
    return docs


def letter_locations(letter: LetterContext, uri: Callable[[str], str]) -> dict[str, str]:
    """Where a letter's documents are, as `uri(key)` gives them."""
    return {kind: uri(key) for kind, key in letter_keys(letter).items()}


def _evidence_of(group: Sequence[Finding], lines: Mapping[str, ClaimLine]) -> Mapping[str, ClaimLine]:
    """The lines a group's letter may cite (`subset` where the mapping has one: it then
    need not decode them here)."""
    ids = [line_id for f in group for line_id in f.evidence]
    subset = getattr(lines, "subset", None)
    if subset is not None:
        found: Mapping[str, ClaimLine] = subset(ids)
        return found
    return {line_id: lines[line_id] for line_id in ids if line_id in lines}


ANNOUNCE_TOGETHER = 64  # stored letters announced together (a cut-short run re-renders at most these)


def issue_letters(
    findings: Sequence[Finding],
    *,
    batch_id: str,
    kb: KnowledgeBase,
    sink: NotificationSink,
    settings: AlertSettings,
    issued_on: date,
    institution_names: Mapping[str, str],
    lines: Mapping[str, ClaimLine],
    counters: CounterStore | None = None,
    keeper: NumberKeeper | None = None,
    persons: Mapping[str, Person] | None = None,
    render: Render | None = None,
    build: Build | None = None,
) -> tuple[list[LetterRef], str | None]:
    """Render, store and announce the letters of these findings, one per addressee and
    period; returns them and the URI of `letters/<batch_id>/index.json` (None when none).

    Numbers come from `counters` (atomic; kept per letter key by `keeper` or the counter
    store itself; deployments wire theirs with functools.partial: the DynamoDB
    CountersTable, the local SQLite state), so a retry or a repeated run gives a letter the
    same number. A retry skips the letters an earlier attempt announced (so a run cut short
    by a timeout resumes where it stopped), re-renders the others under the same keys, and
    announces nothing twice.

    `render` (default `render_letter`: HTML and PDF) may return no PDF: the local deployment
    renders the PDFs afterwards, in parallel or on demand, from the stored HTML
    (docs/local.md); the PDF's location is then where it will be written. `build` builds and
    renders the letters to issue (default: each in turn, in this process, with `render`);
    the local deployment spreads them over its worker processes. Either way every letter is
    numbered first, then stored and announced in order."""
    if persons is None and settings.person_file is not None:
        persons = load_persons(settings.person_file)
    book = NumberBook(counters or _PROCESS_COUNTERS, keeper)
    jobs: list[LetterJob] = []
    for addressee_type, subject, period, group in letter_groups(findings, settings, persons):
        key_subject = subject if addressee_type == "institution" else f"p:{subject}"
        base = f"{period[0]}/{key_subject}"
        # The first set of findings lettered for this addressee and period is the letter; a
        # later batch of the same period with other findings gets a supplementary letter
        # (its own number), and a retry with the same findings the same letter again.
        digest = hashlib.sha256("\x1f".join(sorted(f.finding_id for f in group)).encode()).hexdigest()
        set_hash = int(digest[:12], 16)
        supplement = book.keeper.keep(f"letter-set#{settings.issuer_abbr_zh}#{base}", set_hash) != set_hash
        key = f"{base}#{digest[:12]}" if supplement else base
        serial = book.number(settings.issuer_abbr_zh, issued_on.year, key)
        person = (persons or {}).get(subject) if addressee_type == "patient" else None
        jobs.append(
            LetterJob(
                addressee_type,
                subject,
                group,
                batch_id,
                issued_on,
                institution_names,
                _evidence_of(group, lines),
                serial,
                period,
                person,
                supplement,
            )
        )

    def message_id(job: LetterJob) -> str:
        letter_id = letter_id_of(job.addressee_type, job.subject, job.period[0], job.serial, job.supplement, settings)
        return f"letter/{job.period[0]}/{letter_id}"

    message_ids = [message_id(job) for job in jobs]
    published = [sink.was_published(mid) for mid in message_ids]
    todo = [job for job, done in zip(jobs, published, strict=True) if not done]
    built: Iterator[Built]
    if build is None:
        builder = render or render_letter
        built = iter(build_and_render([job], kb, settings, builder)[0] for job in todo)
    else:
        built = iter(build(todo, settings))
    refs: list[LetterRef] = []
    index_rows: list[dict[str, object]] = []
    waiting: list[tuple[LetterContext, int, dict[str, str], AlertMessage]] = []  # stored, not yet announced

    def announce() -> None:
        """Announce the stored letters waiting, in order, together (one outbox transaction locally)."""
        announced = sink.publish_letters([message for *_, message in waiting])
        for (letter, count, locations, _), now in zip(waiting, announced, strict=True):
            refs.append(_ref(LetterRef, letter, count, locations, announced=now, rendered=True))
        waiting.clear()

    for job, mid, done in zip(jobs, message_ids, published, strict=True):
        if done:
            letter = job.build(kb, settings)
        else:
            letter, html, pdf = next(built)
        index_rows.append({"refs": {row.ref: row.finding_id for row in letter.findings}, "period": letter.period_key})
        locations = letter_locations(letter, sink.letter_uri)
        if done:
            announce()
            refs.append(_ref(LetterRef, letter, len(job.findings), locations, announced=False, rendered=False))
            continue
        if html is not None:  # (None: the build stored them)
            for kind, key, body, content_type in letter_documents(letter, html, pdf):
                locations[kind] = sink.put_letter(key, body, content_type)
        message = letter_announcement(
            batch_id=batch_id,
            letter_id=letter.letter_id,
            number=letter.number,
            kind_zh=letter.kind,
            addressee_type=job.addressee_type,
            institution_id=letter.institution_id,
            psn_pseudonym=letter.psn_pseudonym,
            findings=job.findings,
            locations=locations,
            issued_on=letter.issued_on.isoformat(),
            response_due=letter.response_due.isoformat(),
            message_id=mid,
        )
        waiting.append((letter, len(job.findings), locations, message))
        if len(waiting) >= ANNOUNCE_TOGETHER:
            announce()
    announce()
    if not refs:
        return refs, None
    index = {
        "batch_id": batch_id,
        "letters": [
            {**ref.model_dump(exclude={"announced", "rendered"}), **row, "finding_ids": sorted(row["refs"].values())}  # type: ignore[attr-defined]
            for ref, row in zip(refs, index_rows, strict=True)
        ],
    }
    body = json.dumps(index, ensure_ascii=False, indent=1).encode("utf-8")
    return refs, sink.put_letter(f"letters/{batch_id}/index.json", body, "application/json")


def _ref(
    cls: type[LetterRef],
    letter: LetterContext,
    count: int,
    locations: dict[str, str],
    *,
    announced: bool,
    rendered: bool,
) -> LetterRef:
    return cls(
        letter_id=letter.letter_id,
        number=letter.number,
        kind_zh=letter.kind,
        addressee_type=letter.addressee_type,
        findings=count,
        locations=locations,
        announced=announced,
        rendered=rendered,
    )
