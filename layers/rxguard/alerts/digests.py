"""Daily and weekly digests per region and per institution (docs/alerts.md).

`periodic_digests` picks the current findings that occurred in the window (a day, or the
ISO week Monday-Sunday), leaves out superseded and muted ones, groups them by region
(the first `region_digits` digits of admdvs: 2 a province, 4 a city, 6 a district) and by
institution, and builds one digest message each (`messages.periodic_digest`). Message ids
`digest/<daily|weekly>/<period>/<scope>/<key>`: a re-run publishes nothing twice. Pure.

Where they run: on AWS the DigestFunction, started by EventBridge Scheduler (daily 08:00
and Mondays 08:00 China time, for the day or week before); locally `rxguard digest`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Literal

from rxguard.alerts.messages import DigestScope, periodic_digest
from rxguard.alerts.schema import AlertMessage
from rxguard.alerts.settings import AlertSettings
from rxguard.kb import KnowledgeBase
from rxguard.models import Finding

Cadence = Literal["daily", "weekly"]
WEEKDAYS_ZH = "一二三四五六日"


def window(cadence: Cadence, on: date) -> tuple[date, date, str, str]:
    """(first day, last day, period id, Chinese label) of the day or ISO week holding `on`."""
    if cadence == "daily":
        return on, on, f"daily/{on.isoformat()}", f"{on.year}年{on.month}月{on.day}日"
    start = on - timedelta(days=on.weekday())
    end = start + timedelta(days=6)
    year, week, _ = on.isocalendar()
    label = f"{start.year}年{start.month}月{start.day}日至{end.month}月{end.day}日（第{week}周）"
    return start, end, f"weekly/{year}-W{week:02d}", label


def previous(cadence: Cadence, today: date) -> date:
    """The day whose digest a scheduled run sends: yesterday, or a day of last week."""
    return today - timedelta(days=1 if cadence == "daily" else 7)


def periodic_digests(
    findings: Iterable[Finding],
    *,
    cadence: Cadence,
    on: date,
    kb: KnowledgeBase,
    settings: AlertSettings,
    by: Sequence[DigestScope] = ("region", "institution"),
    region_digits: int = 4,
    institution_names: Mapping[str, str] | None = None,
) -> list[AlertMessage]:
    start, end, period, label = window(cadence, on)
    chosen = [
        f
        for f in findings
        if f.status != "superseded" and not settings.muted(f) and start <= f.occurred_at.date() <= end
    ]
    names = institution_names or {}
    out: list[AlertMessage] = []
    groups: dict[tuple[DigestScope, str], list[Finding]] = defaultdict(list)
    for f in chosen:
        if "region" in by and f.admdvs:
            groups[("region", f.admdvs[:region_digits])].append(f)
        if "institution" in by and f.fixmedins_code:
            groups[("institution", f.fixmedins_code)].append(f)
    for (scope, key), group in sorted(groups.items()):
        out.append(
            periodic_digest(
                scope,
                key,
                group,
                period=period,
                period_label=label,
                kb=kb,
                pseudonym_key=settings.pseudonym_key,
                top=settings.digest_top,
                institution_name=names.get(key) if scope == "institution" else None,
            )
        )
    return out
