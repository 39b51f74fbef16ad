"""The calendar-month grouping the Shanghai-measure rules share (frequent-visits,
multi-hospital-days, pharmacy-spend; their decisions and texts are in engine/rules/).
They count every line, monitored or not. A month's finding keeps one id (rule + patient
+ month), so a late line of that month updates it instead of adding one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from rxguard.engine.common import month_period
from rxguard.engine.rules.frequent_visits import FrequentVisits
from rxguard.engine.rules.multi_hospital_days import MultiHospitalDays
from rxguard.engine.rules.pharmacy_spend import PharmacySpend
from rxguard.models import ClaimLine, Finding


def by_month(lines: Sequence[ClaimLine]) -> dict[str, list[ClaimLine]]:
    """The lines of each calendar month (YYYY-MM), months in order; the text of a month is made
    once, not once a line."""
    months: dict[tuple[int, int], list[ClaimLine]] = {}
    for line in lines:
        t = line.fee_ocur_time
        months.setdefault((t.year, t.month), []).append(line)
    return {month_period(year, month): months[year, month] for year, month in sorted(months)}


def _region(lines: Sequence[ClaimLine]) -> str | None:
    """The month's region: the most frequent admdvs (ties: the smallest code)."""
    counts = Counter(line.admdvs for line in lines)
    if len(counts) == 1:
        return next(iter(counts))
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0] or ""))[0]


class MonthlyRules:
    def __init__(self, visits: FrequentVisits, hospitals: MultiHospitalDays, spend: PharmacySpend) -> None:
        self.visits, self.hospitals, self.spend = visits, hospitals, spend

    @property
    def enabled(self) -> bool:
        return self.visits.enabled or self.hospitals.enabled or self.spend.enabled

    def evaluate(self, psn_no: str, timeline: Sequence[ClaimLine], flagged: set[str]) -> list[Finding]:
        wanted = [r for r in (self.visits, self.hospitals, self.spend) if r.enabled]
        if not wanted or not timeline:
            return []
        out: list[Finding] = []
        for period, lines in by_month(timeline).items():
            region = _region(lines)
            keys = [(ln.day, ln.admdvs) for ln in lines]
            distinct = set(keys)  # (day, region): at most a month's days per region
            for rule in wanted:
                on = {key: rule.active(*key) for key in distinct}
                active = lines if all(on.values()) else [ln for ln, k in zip(lines, keys, strict=True) if on[k]]
                if not active:
                    continue
                if isinstance(rule, PharmacySpend):
                    hit = rule.evaluate(psn_no, period, region, active, flagged)
                else:
                    hit = rule.evaluate(psn_no, period, region, active)
                if hit is not None:
                    out.append(rule.finding(hit))
        return out
