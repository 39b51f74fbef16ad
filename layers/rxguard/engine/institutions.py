"""The activity institution-outlier judges: per-unit monthly aggregates (monitored line
count, flagged line ids), so the DynamoDB workflow, which keeps those aggregates, and
in-memory callers share it: `activity_from_lines` builds them from lines,
`rules/institution_outlier.py` judges them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rxguard.engine.common import month_period
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, InstitutionKind
from rxguard.scope import Scope


@dataclass(frozen=True)
class ActivityAggregate:
    """Monitored-drug activity of one institution or prescriber in one calendar month."""

    subject_type: Literal["institution", "prescriber"]
    code: str  # fixmedins_code, or bilg_dr_codg for a prescriber
    period: str  # YYYY-MM
    kind: InstitutionKind  # the institution's kind (a prescriber's main institution)
    monitored_lines: int
    flagged_lines: tuple[str, ...] = ()  # line ids blamed by medium/high findings
    fixmedins_code: str | None = None  # a prescriber's main institution
    admdvs: str | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.subject_type, self.code)


def _period(line: ClaimLine) -> str:
    return month_period(line.fee_ocur_time.year, line.fee_ocur_time.month)


def previous_period(period: str) -> str:
    year, month = int(period[:4]), int(period[5:7])
    return f"{year - 1:04d}-12" if month == 1 else f"{year:04d}-{month - 1:02d}"


def activity_from_lines(
    lines: Iterable[ClaimLine], flagged_line_ids: set[str], kb: KnowledgeBase
) -> list[ActivityAggregate]:
    """Aggregate monitored lines per institution-month and prescriber-month."""
    inst: dict[tuple[str, str], list[ClaimLine]] = {}
    doc: dict[tuple[str, str], list[ClaimLine]] = {}
    seen: set[str] = set()
    for line in lines:
        if line.line_id in seen or line.reverses is not None or kb.drug(line.med_list_codg) is None:
            continue
        seen.add(line.line_id)
        period = _period(line)
        inst.setdefault((line.fixmedins_code, period), []).append(line)
        if line.bilg_dr_codg:
            doc.setdefault((line.bilg_dr_codg, period), []).append(line)
    out: list[ActivityAggregate] = []
    for (code, period), group in inst.items():
        out.append(
            ActivityAggregate(
                subject_type="institution",
                code=code,
                period=period,
                kind=group[0].institution_kind,
                monitored_lines=len(group),
                flagged_lines=tuple(sorted(ln.line_id for ln in group if ln.line_id in flagged_line_ids)),
                fixmedins_code=code,
                admdvs=_most(ln.admdvs for ln in group),
            )
        )
    for (code, period), group in doc.items():
        main = _most(ln.fixmedins_code for ln in group) or group[0].fixmedins_code
        out.append(
            ActivityAggregate(
                subject_type="prescriber",
                code=code,
                period=period,
                kind=InstitutionKind.from_code(main),
                monitored_lines=len(group),
                flagged_lines=tuple(sorted(ln.line_id for ln in group if ln.line_id in flagged_line_ids)),
                fixmedins_code=main,
                admdvs=_most(ln.admdvs for ln in group),
            )
        )
    return sorted(out, key=lambda a: (a.subject_type, a.code, a.period))


def _most(values: Iterable[str | None]) -> str | None:
    counts = Counter(values)
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0] or ""))[0]


def most_frequent(counts: Mapping[str, float]) -> str | None:
    """The most frequent value of stored counts, ties broken by the smallest (as `_most`)."""
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def aggregate_from_counts(
    subject: Scope,
    period: str,
    regions: Mapping[str, float],
    flagged: Iterable[str],
    places: Mapping[str, float] | None = None,
    monitored_lines: int | None = None,
) -> ActivityAggregate:
    """One unit-month from the counters a store keeps (DynamoDB aggregates, the SQLite
    state), the same aggregate `activity_from_lines` makes from the lines: `regions` counts
    the unit's monitored lines by admdvs ("" unknown), `places` a prescriber's by institution
    (the main one is the prescriber's institution), `flagged` the lines findings blame."""
    fixmedins_code = subject.key if subject.kind == "institution" else (most_frequent(places or {}) or "")
    return ActivityAggregate(
        subject_type="institution" if subject.kind == "institution" else "prescriber",
        code=subject.key,
        period=period,
        kind=InstitutionKind.from_code(fixmedins_code),
        monitored_lines=int(sum(regions.values())) if monitored_lines is None else monitored_lines,
        flagged_lines=tuple(sorted(flagged)),
        fixmedins_code=fixmedins_code,
        admdvs=most_frequent(regions) or None,
    )


def period_start(period: str) -> datetime:
    return datetime(int(period[:4]), int(period[5:7]), 1)
