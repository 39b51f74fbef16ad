"""`notify_batch`: alerts, digests and letters for the findings of one batch."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import date

from pydantic import BaseModel, Field

from rxguard.alerts.messages import NO_INSTITUTION, digest, finding_alert
from rxguard.alerts.settings import AlertSettings, AlertSettingsError
from rxguard.alerts.sink import NotificationSink
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding

logger = logging.getLogger(__name__)


class LetterRef(BaseModel):
    letter_id: str  # `institution-<code>` or `patient-<pseudonym>`
    number: str  # letter number, e.g. 医保监警〔2026〕3F2A9C1E号
    kind_zh: str  # 提醒函 / 警示函
    addressee_type: str  # institution | patient
    findings: int
    locations: dict[str, str]  # format (pdf, html) -> URI
    announced: bool  # False when an earlier attempt announced it already
    rendered: bool = True  # False when a retry found it announced and did not render it again


# Renders, stores and announces a batch's letters: `rxguard.letters.issue_letters`, called as
# issuer(findings, batch_id=, kb=, sink=, settings=, issued_on=, institution_names=, lines=)
# -> (letters, URI of their index). The letters sit above the alerts (they build on the alert
# schema, settings and sink), so the alerts receive the issuer from whoever wires them.
LetterIssuer = Callable[..., tuple[list[LetterRef], str | None]]


class NotifySummary(BaseModel):
    batch_id: str
    findings: int = 0  # findings given
    muted: int = 0  # low-severity findings muted by configuration
    alerts_published: int = 0  # per-finding alerts sent now
    alerts_duplicate: int = 0  # per-finding alerts already sent by an earlier attempt
    digests_published: int = 0
    digests_duplicate: int = 0
    letters_issued: int = 0  # letters of the batch (institutions + patients)
    letters_announced: int = 0  # announced now (the others by an earlier attempt)
    letters_index: str | None = None  # URI of letters/<batch_id>/index.json, every letter of the batch
    # Every letter, for callers in-process; left out of model_dump() so a Step Functions
    # state stays small however many letters a batch has (the index has them all).
    letters: list[LetterRef] = Field(default_factory=list, exclude=True)


def notify_batch(
    findings: Sequence[Finding],
    *,
    batch_id: str,
    kb: KnowledgeBase,
    sink: NotificationSink,
    settings: AlertSettings | None = None,
    issued_on: date | None = None,
    institution_names: Mapping[str, str] | None = None,
    lines: Mapping[str, ClaimLine] | None = None,
    letters: LetterIssuer | None = None,
) -> NotifySummary:
    """Publish the batch's notifications through `sink`; safe to call again for a retry.

    - one alert per finding at or above `settings.alert_min_severity` (default high),
      message id `finding/<finding_id>`: published once ever, whichever batch brings it;
    - one digest per institution of the batch, id `digest/<batch_id>/<institution>`;
    - letters (提醒函/警示函) per institution and per patient, stored through the sink and
      announced on the letters topic (`settings.letters_enabled`) by `letters`, the
      issuer the caller wires in (`rxguard.letters.issue_letters`); with letters enabled
      and no issuer this raises AlertSettingsError before publishing anything.
    Superseded findings and muted low-severity ones are left out. `institution_names`
    (fixmedins_code -> name) and `lines` (line_id -> ClaimLine, the evidence lines) enrich
    the letters when the caller has them. `counters` (a `rxguard.letters.CounterStore`,
    e.g. the local SQLite state) and `keeper` number the letters; by default the DynamoDB
    CountersTable of `settings.counters_table`, else a counter of this process.
    """
    settings = settings or AlertSettings()
    unknown = sorted(settings.mute_low_rules - set(kb.rules))
    if unknown:  # a misspelt rule id would silently leave its findings unmuted
        raise AlertSettingsError(
            f"alert settings: field mute_low_rules: unknown rule id(s) {', '.join(unknown)} "
            f"(the rule base has {', '.join(sorted(kb.rules))})"
        )
    if settings.letters_enabled and letters is None:
        raise AlertSettingsError("alert settings: letters_enabled, but no letter issuer was wired (letters=...)")
    key = settings.pseudonym_key
    summary = NotifySummary(batch_id=batch_id, findings=len(findings))
    names = institution_names or {}

    unique = {f.finding_id: f for f in findings if f.status != "superseded"}
    active: list[Finding] = []
    for finding in sorted(unique.values(), key=lambda f: f.finding_id):
        if settings.muted(finding):
            summary.muted += 1
        else:
            active.append(finding)

    alerted: dict[str, list[str]] = defaultdict(list)
    messages = []
    for finding in active:
        if finding.severity.rank < settings.alert_min_severity.rank:
            continue
        messages.append(finding_alert(finding, batch_id=batch_id, kb=kb, key=key))
        alerted[finding.fixmedins_code or NO_INSTITUTION].append(finding.finding_id)
    published = sink.publish_alerts(messages)  # recorded together where the sink can
    summary.alerts_published += sum(published)
    summary.alerts_duplicate += len(published) - sum(published)
    del messages  # (published: not held while the letters are made; ~7,000 at 1M lines)

    by_institution: dict[str, list[Finding]] = defaultdict(list)
    for finding in active:
        by_institution[finding.fixmedins_code or NO_INSTITUTION].append(finding)
    digests = [
        digest(
            institution,
            group,
            batch_id=batch_id,
            kb=kb,
            key=key,
            top=settings.digest_top,
            alerted=alerted.get(institution, ()),
            institution_name=names.get(institution),
        )
        for institution, group in sorted(by_institution.items())
    ]
    published = sink.publish_alerts(digests)
    summary.digests_published += sum(published)
    summary.digests_duplicate += len(published) - sum(published)
    del digests, by_institution

    if settings.letters_enabled and letters is not None:
        summary.letters, summary.letters_index = letters(
            active,
            batch_id=batch_id,
            kb=kb,
            sink=sink,
            settings=settings,
            issued_on=issued_on or date.today(),
            institution_names=names,
            lines=lines or {},
        )
        summary.letters_issued = len(summary.letters)
        summary.letters_announced = sum(1 for ref in summary.letters if ref.announced)
    logger.info(
        "notified batch",
        extra=summary.model_dump(),
    )
    return summary
