"""identity-misuse (冒名购药): one patient is dispensed at institutions whose regions (the
line's `admdvs`) differ in province less than `province_hours` apart, or in prefecture
less than `prefecture_hours` apart: one person cannot be in both places, so the card is
used by someone else. Severity high.

Lines are taken in time order; each line is compared with the latest line of every
other region still within the window (linear in the lines). One finding per pair of
institutions and day."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from rxguard.engine.rules.base import Hit, Parameters, Rule
from rxguard.models import ClaimLine


@dataclass
class Places:
    """Where the walk stands: each region's latest line (in the order the regions first
    appeared: of two pairs of one day, the first found is reported) and the pairs found."""

    latest: dict[str, ClaimLine] = field(default_factory=dict)
    seen: set[tuple[str, str, str]] = field(default_factory=set)

    def copy(self) -> Places:
        return Places(dict(self.latest), set(self.seen))


class IdentityMisuseParameters(Parameters):
    province_hours: float = 4.0  # two provinces closer in time than this: impossible
    prefecture_hours: float = 1.0  # two prefectures (cities) of one province closer than this


class IdentityMisuse(Rule):
    id = "identity-misuse"
    subject_type = "patient"
    behaviour_code = "18"  # 冒名购药
    scenarios = ("card-sharing",)
    risk_weight = 1.0
    Parameters = IdentityMisuseParameters

    def evaluate(self, psn_no: str, timeline: Sequence[ClaimLine]) -> list[Hit]:
        if not self.enabled:
            return []
        out: list[Hit] = []
        self.walk(psn_no, Places(), timeline, out)
        return out

    def walk(self, psn_no: str, places: Places, timeline: Sequence[ClaimLine], out: list[Hit] | None) -> None:
        """The lines in time order after `places` (updated in place: where an earlier walk
        stopped; a check resumes its history's); hits into `out` (None: none made)."""
        latest, seen = places.latest, places.seen
        for line in timeline:
            region = line.admdvs
            if not region or line.reverses is not None:
                continue
            if self.active(line.day, region):
                p: IdentityMisuseParameters = self.params(region)
                for other_region, other in list(latest.items()):
                    if other_region == region or other.fixmedins_code == line.fixmedins_code:
                        continue
                    gap = line.fee_ocur_time - other.fee_ocur_time
                    if other_region[:2] != region[:2]:
                        limit, level = p.province_hours, "province"
                    elif other_region[:4] != region[:4]:
                        limit, level = p.prefecture_hours, "prefecture"
                    else:
                        continue
                    if gap >= timedelta(hours=limit):
                        continue
                    key = (*sorted((other.fixmedins_code, line.fixmedins_code)), line.day.isoformat())
                    if key in seen:
                        continue
                    seen.add(key)  # type: ignore[arg-type]
                    if out is not None:
                        out.append(self._hit(psn_no, other, line, gap, limit, level))
            latest[region] = line

    def _hit(self, psn_no: str, first: ClaimLine, second: ClaimLine, gap: timedelta, limit: float, level: str) -> Hit:
        hours = round(gap.total_seconds() / 3600, 1)
        figures = {
            "first_at": first.fee_ocur_time.isoformat(sep=" ", timespec="minutes"),
            "first_institution": first.fixmedins_code,
            "first_admdvs": first.admdvs,
            "second_at": second.fee_ocur_time.isoformat(sep=" ", timespec="minutes"),
            "second_institution": second.fixmedins_code,
            "second_admdvs": second.admdvs,
            "hours_apart": hours,
            "regions_differ_in": level,
            "limit_hours": limit,
            "trigger_lines": [second.line_id],
        }
        return Hit.at_line(psn_no, second, self.severity(second.admdvs), [first.line_id, second.line_id], figures)

    def explain(self, hit: Hit) -> tuple[str, str]:
        f = hit.figures
        level_zh = "不同省份" if f["regions_differ_in"] == "province" else "同省不同地市"
        level_en = "different provinces" if f["regions_differ_in"] == "province" else "different cities"
        return (
            f"该参保人 {f['first_at']} 在 {f['first_institution']}（区划 {f['first_admdvs']}）、{f['second_at']} 在 "
            f"{f['second_institution']}（区划 {f['second_admdvs']}）发生费用，两地为{level_zh}，"
            f"仅相隔 {f['hours_apart']} 小时（少于 {f['limit_hours']:g} 小时），本人不可能到达：疑似冒名使用医保凭证。",
            f"The patient's card was used at {f['first_institution']} (region {f['first_admdvs']}) at "
            f"{f['first_at']} and at {f['second_institution']} (region {f['second_admdvs']}) at {f['second_at']}: "
            f"{level_en}, only {f['hours_apart']} hours apart (less than {f['limit_hours']:g}), impossible for one "
            "person: someone else may be using the card.",
        )
