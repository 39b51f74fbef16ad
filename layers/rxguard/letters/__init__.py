"""Warning letters (提醒函 / 警示函): rendering to HTML and PDF, storing, announcing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rxguard.alerts.notify import LetterRef
    from rxguard.alerts.settings import AlertSettings
    from rxguard.alerts.sink import NotificationSink
    from rxguard.kb import KnowledgeBase
    from rxguard.models import ClaimLine, Finding


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
    """Letters are being built (issue 6); none are issued yet."""
    return []
