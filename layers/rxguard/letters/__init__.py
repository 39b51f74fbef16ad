"""Warning letters (提醒函 / 警示函): one per institution and one per patient with findings
in a batch, rendered from the bureau's templates to HTML and PDF, stored under
`letters/<batch_id>/<letter_id>.{pdf,html}` and announced on the letters topic."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Literal

from rxguard.alerts.messages import letter_announcement
from rxguard.alerts.notify import LetterRef
from rxguard.alerts.settings import AlertSettings
from rxguard.alerts.sink import NotificationSink
from rxguard.kb import KnowledgeBase
from rxguard.letters.context import LetterContext, build_letter
from rxguard.models import ClaimLine, Finding

__all__ = ["LetterContext", "build_letter", "issue_letters", "letter_groups", "render_letter"]


def letter_groups(
    findings: Sequence[Finding], settings: AlertSettings
) -> list[tuple[Literal["institution", "patient"], str, list[Finding]]]:
    """Who gets a letter: each institution (finding.fixmedins_code) with findings at or
    above `letter_min_severity`, and each patient of a patient finding (when enabled)."""
    by_institution: dict[str, list[Finding]] = defaultdict(list)
    by_patient: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        if f.severity.rank < settings.letter_min_severity.rank:
            continue
        if f.fixmedins_code:
            by_institution[f.fixmedins_code].append(f)
        if settings.patient_letters and f.subject_type == "patient" and f.psn_no:
            by_patient[f.psn_no].append(f)
    groups: list[tuple[Literal["institution", "patient"], str, list[Finding]]] = [
        ("institution", code, group) for code, group in sorted(by_institution.items())
    ]
    groups += [("patient", psn, group) for psn, group in sorted(by_patient.items())]
    return groups


def render_letter(letter: LetterContext, settings: AlertSettings) -> tuple[str, bytes]:
    """(HTML, PDF bytes) of one letter."""
    # Deferred: jinja2 and reportlab cost ~0.28 s CPU to import, paid only by a process that renders.
    from rxguard.letters.pdf import html_to_pdf
    from rxguard.letters.render import render_html

    html = render_html(letter, settings.templates_dir)
    pdf = html_to_pdf(html, font_path=settings.font_path, author=settings.issuer_name_zh, subject=letter.number)
    return html, pdf


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
) -> tuple[list[LetterRef], str | None]:
    """Render, store and announce the letters of a batch; returns them and the URI of
    `letters/<batch_id>/index.json` (None when the batch has no letter).

    A retry skips the letters an earlier attempt announced (so a run cut short by a
    timeout resumes where it stopped), re-renders the others under the same keys, and
    announces nothing twice."""
    refs: list[LetterRef] = []
    for addressee_type, subject, group in letter_groups(findings, settings):
        letter = build_letter(
            addressee_type,
            subject,
            group,
            batch_id=batch_id,
            kb=kb,
            settings=settings,
            issued_on=issued_on,
            institution_names=institution_names,
            lines=lines,
        )
        stem = f"letters/{batch_id}/{letter.letter_id}"
        message_id = f"letter/{batch_id}/{letter.letter_id}"
        if sink.was_published(message_id):
            locations = {"pdf": sink.letter_uri(f"{stem}.pdf"), "html": sink.letter_uri(f"{stem}.html")}
            refs.append(_ref(LetterRef, letter, len(group), locations, announced=False, rendered=False))
            continue
        html, pdf = render_letter(letter, settings)
        locations = {
            "pdf": sink.put_letter(f"{stem}.pdf", pdf, "application/pdf"),
            "html": sink.put_letter(f"{stem}.html", html.encode("utf-8"), "text/html; charset=utf-8"),
        }
        message = letter_announcement(
            batch_id=batch_id,
            letter_id=letter.letter_id,
            number=letter.number,
            kind_zh=letter.kind,
            addressee_type=addressee_type,
            institution_id=letter.institution_id,
            psn_pseudonym=letter.psn_pseudonym,
            findings=group,
            locations=locations,
            issued_on=letter.issued_on.isoformat(),
            response_due=letter.response_due.isoformat(),
        )
        announced = sink.publish_letter(message)
        refs.append(_ref(LetterRef, letter, len(group), locations, announced=announced, rendered=True))
    if not refs:
        return refs, None
    index = {
        "batch_id": batch_id,
        "letters": [
            {**ref.model_dump(exclude={"announced", "rendered"}), "finding_ids": ids}
            for ref, ids in zip(refs, _finding_ids(findings, settings), strict=True)
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


def _finding_ids(findings: Sequence[Finding], settings: AlertSettings) -> list[list[str]]:
    return [sorted(f.finding_id for f in group) for _, _, group in letter_groups(findings, settings)]
