"""Warning letters (提醒函 / 警示函): one per institution and one per patient with findings
in a batch, rendered from the bureau's templates to HTML and PDF, stored under
`letters/<batch_id>/<letter_id>.{pdf,html}` and announced on the letters topic."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Literal

from rxguard.letters.context import LetterContext, build_letter

if TYPE_CHECKING:
    from rxguard.alerts.notify import LetterRef
    from rxguard.alerts.settings import AlertSettings
    from rxguard.alerts.sink import NotificationSink
    from rxguard.kb import KnowledgeBase
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
) -> list[LetterRef]:
    """Render, store and announce the letters of a batch; a retry overwrites the same
    documents and announces nothing twice."""
    from rxguard.alerts.messages import letter_announcement
    from rxguard.alerts.notify import LetterRef

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
        html, pdf = render_letter(letter, settings)
        stem = f"letters/{batch_id}/{letter.letter_id}"
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
        refs.append(
            LetterRef(
                letter_id=letter.letter_id,
                number=letter.number,
                kind_zh=letter.kind,
                addressee_type=addressee_type,
                findings=len(group),
                locations=locations,
                announced=sink.publish_letter(message),
            )
        )
    return refs
