"""Fills: the dispensings of one ingredient that the supply rules reason about.

A fill is every monitored line of one patient for one ATC ingredient at one institution
in one visit (same `mdtrt_id`, lines at most a day apart) or on one day: the lines of one dispensing count once,
whatever the number of lines or products. Its days of supply are the sum of the lines'
days at the label maximum daily dose (the fewest days it can last), and it covers
[day, day + days). Inpatient ward lines (med_type 2x without the discharge flag) are
used under supervision in hospital and are not fills.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rxguard.kb import Drug, KnowledgeBase
from rxguard.models import ClaimLine, InstitutionKind


@dataclass(slots=True)
class Fill:
    atc: str
    fixmedins_code: str
    kind: InstitutionKind
    time: datetime  # of its first line
    day: int  # date ordinal of its first line
    lines: list[ClaimLine] = field(default_factory=list)
    drugs: list[Drug] = field(default_factory=list)  # per line
    days: float = 0.0
    units: float = 0.0
    chronic: bool = False
    long_term: bool = False  # lt_rx_flag on a long-term-eligible drug
    long_term_ignored: bool = False  # lt_rx_flag on a drug that is not eligible
    discharge: bool = False
    override: str | None = None  # the override reason honoured (lost, travel, dose_change)
    override_excess: str | None = None  # a reason declared beyond override-frequency's limit: not honoured
    pack_days: float = 0.0  # days of one pack of its product(s), the largest
    line_ids: list[str] = field(default_factory=list)  # sorted

    @property
    def end(self) -> float:
        return self.day + self.days

    @property
    def admdvs(self) -> str | None:
        return self.lines[0].admdvs

    @property
    def drug(self) -> Drug:
        return self.drugs[0]

    def prescribed(self) -> dict[str, object]:
        """The prescribed dose, frequency and days where the source gives them (evidence only)."""
        out: dict[str, object] = {}
        for line in self.lines:
            if line.prd_days is not None and "prd_days" not in out:
                out["prd_days"] = line.prd_days
            if line.sin_dos_dscr and "sin_dos_dscr" not in out:
                out["sin_dos_dscr"] = line.sin_dos_dscr
            if line.used_frqu_dscr and "used_frqu_dscr" not in out:
                out["used_frqu_dscr"] = line.used_frqu_dscr
        return out


def is_ward_use(line: ClaimLine) -> bool:
    return line.med_type.startswith("2") and not line.dscg_tkdrug_flag


def build_fills(timeline: Sequence[ClaimLine], kb: KnowledgeBase) -> dict[str, list[Fill]]:
    """Fills by ATC ingredient, each list in time order (time, first line id).

    Lines of one institution and ingredient belong to one fill when they share the
    visit id or the day (connected components)."""
    per_place: dict[tuple[str, str], list[tuple[ClaimLine, Drug]]] = {}
    for line in timeline:
        drug = kb.drug(line.med_list_codg)
        if drug is None or is_ward_use(line):
            continue
        per_place.setdefault((line.fixmedins_code, drug.atc_code), []).append((line, drug))
    out: dict[str, list[Fill]] = {}
    for (institution, atc), items in per_place.items():
        for members in _components(items):
            first = min(members, key=lambda p: (p[0].fee_ocur_time, p[0].line_id))[0]
            fill = Fill(
                atc=atc,
                fixmedins_code=institution,
                kind=first.institution_kind,
                time=first.fee_ocur_time,
                day=first.fee_ocur_time.toordinal(),
                lines=[p[0] for p in members],
                drugs=[p[1] for p in members],
            )
            _finish(fill)
            out.setdefault(atc, []).append(fill)
    for fills in out.values():
        fills.sort(key=lambda f: (f.time, f.line_ids[0]))
    return out


def _components(items: list[tuple[ClaimLine, Drug]]) -> list[list[tuple[ClaimLine, Drug]]]:
    """Group lines that share a day, or a visit id within a day (union-find, lines in time order)."""
    if len(items) == 1:
        return [items]
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_day: dict[int, int] = {}
    last_of_visit: dict[str, tuple[int, int]] = {}  # visit id -> (day, index) of its latest line
    for i, (line, _) in enumerate(items):
        day = line.fee_ocur_time.toordinal()
        j = by_day.setdefault(day, i)
        if j != i:
            parent[root(i)] = root(j)
        # a visit id joins lines a day apart at most: some systems reuse one id for a
        # whole registration period, which must not turn months of refills into one fill
        seen = last_of_visit.get(line.mdtrt_id)
        if seen is not None and day - seen[0] <= 1:
            parent[root(i)] = root(seen[1])
        last_of_visit[line.mdtrt_id] = (day, i)
    groups: dict[int, list[tuple[ClaimLine, Drug]]] = {}
    for i, item in enumerate(items):
        groups.setdefault(root(i), []).append(item)
    return list(groups.values())


def _finish(fill: Fill) -> None:
    pairs = sorted(zip(fill.lines, fill.drugs, strict=True), key=lambda p: (p[0].fee_ocur_time, p[0].line_id))
    fill.lines = [p[0] for p in pairs]
    fill.drugs = [p[1] for p in pairs]
    first = fill.lines[0]
    fill.time, fill.day = first.fee_ocur_time, first.fee_ocur_time.toordinal()
    fill.line_ids = sorted(line.line_id for line in fill.lines)
    days = units = pack = 0.0
    for line, drug in pairs:
        units += line.quantity_units
        days += drug.days_supply(line.quantity_units)
        pack = max(pack, drug.days_supply(drug.units_per_pack))
        fill.chronic = fill.chronic or drug.chronic
        if line.lt_rx_flag:
            if drug.long_term_rx_eligible:
                fill.long_term = True
            else:
                fill.long_term_ignored = True
        fill.discharge = fill.discharge or line.dscg_tkdrug_flag
        if fill.override is None and line.override_reason:
            fill.override = line.override_reason
    fill.days, fill.units, fill.pack_days = days, units, pack
    if fill.long_term:
        fill.long_term_ignored = False
