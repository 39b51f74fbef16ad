"""A synthetic population of insured persons and their claim lines, with ground truth.

`generate(config, kb)` returns a `Population`: the claim records (dicts in the input
contract of docs/design.md "Claim-line format") and the labels (who is legitimate, which
rules each abusive patient must trigger, which institutions and prescribers are
outliers, which trace codes were sold twice). Everything is drawn from one
`random.Random(seed)` in a fixed order, so the same seed gives the same population.

Legitimate patients are generated against a ledger that keeps every monitored purchase
inside the rules with a margin (docs/measurement.md): refills at a realistic rhythm
(a few days early or late), real doses at or below the label maximum, one or two
pharmacies, long-term prescriptions, discharge medication, registered chronic-disease
visits, restricted drugs with their diagnoses. Several legitimate profiles sit close to
a threshold on purpose (dialysis three times a week, rehabilitation courses, near-limit
pharmacy spending, patients at the maximum dose, one whole pack of an acute drug).
Abusive patients keep a legitimate baseline and add one pattern aimed at given rules.
"""

from __future__ import annotations

import math
import random
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import rxguard_tools.synth.catalogue as cat
from rxguard import claimline as contract
from rxguard.engine.rules import scenario_rules
from rxguard.kb import Drug, KnowledgeBase
from rxguard_tools.synth.catalogue import Condition, Item

# Field order of the written files: the claim-line contract's columns (docs/ingest.md).
FIELDS = contract.COLUMNS

# Abusive scenarios, in generation order; the rules each must trigger (patient level) are
# declared by the rule modules (`Rule.scenarios`), read from the rule catalogue.
PATTERNS = (
    "over-quantity",
    "early-refill",
    "stockpiling",
    "frequent-visits",
    "hospital-hopping",
    "pharmacy-spend",
    "indication-mismatch",
    "pill-mill",
    "trace-reseller",  # judged per trace code, not per patient
    "override-abuse",
    "doctor-shopping",
    "duplication",
    "card-sharing",
)
SCENARIOS: dict[str, tuple[str, ...]] = scenario_rules(PATTERNS)

LEGIT_PROFILES: dict[str, float] = {
    "chronic": 0.46,
    "multi-pharmacy": 0.18,
    "long-term-rx": 0.08,
    "acute": 0.15,
    "discharge": 0.05,
    "dialysis": 0.012,
    "rehabilitation": 0.012,
    "high-spend": 0.02,
    "override": 0.016,
    "max-dose": 0.02,
    "refund": 0.02,  # a purchase refunded (退费) and bought again; the returned pack resold to another patient
    "split-pack": 0.01,  # one pack sold in parts (拆零) to two patients under one trace code
    "therapy-switch": 0.02,  # one drug replaced by another of its class when mostly used
    "traveller": 0.02,  # purchases in another province, on other days than at home
}

PAIRED_PROFILES = frozenset({"refund", "split-pack"})

# Margins that keep legitimate purchases clearly inside the rules (in days at the label maximum dose).
LEGIT_USED_FRACTION = 0.85  # a refill comes after at least this share of the previous supply
LEGIT_OVERLAP_DAYS = 1.0  # at most this overlap of coverage across institutions
LEGIT_STOCK_MARGIN = 12.0  # stock on hand stays this far below allowed + tolerance
LEGIT_SPEND_CAP = 7600.0  # yuan a month at pharmacies
LEGIT_VISITS_CAP = 13  # outpatient visits a month
MAX_PACKS_PER_LINE = 30  # larger quantities are split over lines of one visit
PRODUCT_PREFIX = "81"  # trace codes: 2 + 5 product digits + 13 serial digits = 20


@dataclass(frozen=True)
class SynthConfig:
    patients: int = 1000
    seed: int = 1
    months: int = 6
    start: date = date(2026, 1, 1)
    abusive_share: float = 0.08
    min_per_scenario: int = 8
    trace_code_share: float = 0.65  # share of monitored lines that carry their packs' codes (one a pack)

    @property
    def end(self) -> date:
        """First day after the window (whole calendar months)."""
        y, m = divmod(self.start.month - 1 + self.months, 12)
        return date(self.start.year + y, m + 1, 1)


@dataclass
class Institution:
    code: str
    name: str
    kind: str  # hospital | pharmacy
    admdvs: str
    doctors: list[str] = field(default_factory=list)
    size: float = 1.0
    outlier: bool = False
    counter: int = 0


@dataclass
class Patient:
    psn_no: str
    profile: str
    legitimate: bool
    rules: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


@dataclass
class Population:
    records: list[dict[str, Any]]
    labels: dict[str, Any]

    def months(self) -> list[str]:
        return sorted({str(r["fee_ocur_time"])[:7] for r in self.records})


@dataclass
class _Held:
    """The generator's own ledger of one ingredient for one patient (max-dose days)."""

    day: float = -1e9
    days: float = 0.0
    institution: str = ""
    stock: float = 0.0  # stock on hand at `day`, after the purchase
    allowed: float = 30.0


class _Builder:
    def __init__(self, config: SynthConfig, kb: KnowledgeBase) -> None:
        self.cfg = config
        self.kb = kb
        self.rng = random.Random(config.seed)
        self.start = datetime.combine(config.start, datetime.min.time())
        self.end = datetime.combine(config.end, datetime.min.time())
        self.records: list[dict[str, Any]] = []
        self.patients: dict[str, Patient] = {}
        self.hospitals: list[Institution] = []
        self.pharmacies: list[Institution] = []
        self.pill_mill: Institution | None = None
        self.small_shop = Institution("P3101150000", "", "pharmacy", "310115")
        self.bad_doctor = ""
        self.ledger: dict[tuple[str, str], _Held] = {}
        self.visits: dict[tuple[str, str], set[str]] = defaultdict(set)  # (psn, month) -> visit ids
        self.spend: dict[tuple[str, str], float] = defaultdict(float)  # (psn, month) -> pharmacy yuan
        self.visit_ids: dict[tuple[str, str, str], str] = {}  # (psn, inst, day) -> mdtrt_id
        self.code_serial = 0
        self.trace_sales: dict[str, list[str]] = {}  # reused code -> line ids
        self.trace_resellers: dict[str, list[str]] = {}
        self.trace_legit: dict[str, dict[str, list[str]]] = {"returned": {}, "split": {}}  # codes on several lines
        self.product: dict[str, str] = {}
        self.rx = 0
        self.classes: dict[str, set[str]] = defaultdict(set)  # psn -> ATC-4 classes bought
        self.remote: list[Institution] = []  # out-of-town institutions (travellers, shared cards)
        drugs = kb.monitored
        self.drug_of = drugs
        self.conditions = [
            Condition(c.name, c.dx, tuple(d for d in c.drugs if d in drugs), c.registered, c.weight, c.hospital_only)
            for c in cat.CONDITIONS
        ]
        self.conditions = [c for c in self.conditions if c.drugs]
        self.unmonitored = [i for i in cat.UNMONITORED_DRUGS if i.code not in kb.drugs]
        self.expensive = [i for i in cat.EXPENSIVE_ITEMS if i.code not in kb.drugs]

    # --- institutions ---------------------------------------------------------------

    def institutions(self) -> None:
        n = self.cfg.patients
        rng = self.rng
        n_h = max(8, n // 120)
        n_p = max(10, n // 70)
        for i in range(n_h):
            admdvs = cat.DISTRICTS[i % len(cat.DISTRICTS)]
            name = cat.HOSPITAL_NAMES[i % len(cat.HOSPITAL_NAMES)].format(i + 1)
            inst = Institution(f"H{admdvs}{i + 1:04d}", name, "hospital", admdvs, size=rng.uniform(0.5, 3.0))
            inst.doctors = [f"D{admdvs}{i + 1:04d}{d:03d}" for d in range(1, 4 + int(inst.size * 4))]
            self.hospitals.append(inst)
        for i in range(n_p):
            admdvs = cat.DISTRICTS[(i * 7) % len(cat.DISTRICTS)]
            name = cat.PHARMACY_NAMES[i % len(cat.PHARMACY_NAMES)].format(i + 1)
            self.pharmacies.append(
                Institution(f"P{admdvs}{i + 1:04d}", name, "pharmacy", admdvs, size=rng.uniform(0.5, 2.0))
            )
        self.remote = [
            Institution("H3301020001", "杭州市第一人民医院", "hospital", "330102", doctors=["D3301020001001"]),
            Institution("P3302030001", "宁波海曙大药房", "pharmacy", "330203"),
            Institution("P1101050001", "北京朝阳大药房", "pharmacy", "110105"),
            Institution("P3205050001", "苏州高新区大药房", "pharmacy", "320505"),
        ]
        # a small pharmacy that serves the override abusers (about a dozen monitored lines a month,
        # most of them flagged): an outlier without any volume to speak of
        self.small_shop = Institution(
            f"P310115{n_p + 1:04d}", "惠民小药房", "pharmacy", "310115", size=0.1, outlier=True
        )
        mill = Institution(f"H310113{n_h + 1:04d}", "康泰民营门诊部", "hospital", "310113", size=0.3, outlier=True)
        mill.doctors = [f"D310113{n_h + 1:04d}001", f"D310113{n_h + 1:04d}002"]
        self.bad_doctor = mill.doctors[0]
        self.pill_mill = mill

    def hospital(self) -> Institution:
        return self.rng.choices(self.hospitals, weights=[h.size for h in self.hospitals])[0]

    def pharmacy(self) -> Institution:
        return self.rng.choices(self.pharmacies, weights=[p.size for p in self.pharmacies])[0]

    # --- patients -------------------------------------------------------------------

    def new_patient(self, profile: str, legitimate: bool, rules: Sequence[str] = ()) -> Patient:
        serial = len(self.patients) + 1
        psn = f"3101{serial:08d}{self.rng.randrange(10**8):08d}"
        p = Patient(psn, profile, legitimate, tuple(sorted(rules)))
        self.patients[psn] = p
        return p

    # --- lines ----------------------------------------------------------------------

    def when(self, day: datetime, hour_lo: int = 8, hour_hi: int = 17) -> datetime:
        return day.replace(hour=0, minute=0, second=0) + timedelta(
            hours=self.rng.randint(hour_lo, hour_hi), minutes=self.rng.randrange(60), seconds=self.rng.randrange(60)
        )

    def visit_id(self, psn: str, inst: Institution, t: datetime, med_type: str) -> str:
        key = (psn, inst.code, t.date().isoformat())
        found = self.visit_ids.get(key)
        if found is None:
            found = f"{inst.code}{t:%Y%m%d}{len(self.visit_ids) + 1:07d}"
            self.visit_ids[key] = found
            if inst.kind == "hospital" and med_type in ("11", "14"):
                self.visits[(psn, f"{t:%Y-%m}")].add(found)
        return found

    def month_visits(self, psn: str, t: datetime) -> int:
        return len(self.visits[(psn, f"{t:%Y-%m}")])

    def trace_codes(self, drug: Drug, packs: int) -> list[str]:
        prefix = self.product.get(drug.drug_code)
        if prefix is None:
            prefix = f"{PRODUCT_PREFIX}{len(self.product) + 10001:05d}"
            self.product[drug.drug_code] = prefix
        out = []
        for _ in range(packs):
            self.code_serial += 1
            # 13 serial digits: 7 from the running counter (unique), 6 random (realistic look)
            out.append(f"{prefix}{self.code_serial:07d}{self.rng.randrange(10**6):06d}")
        return out

    def line(
        self,
        psn: str,
        inst: Institution,
        t: datetime,
        item: Item | Drug,
        cnt: int,
        *,
        med_type: str,
        doctor: str | None = None,
        dx: Sequence[str] = (),
        lt: bool = False,
        discharge: bool = False,
        override: str | None = None,
        codes: Sequence[str] | None = None,
        dose: tuple[str, str, float] | None = None,
    ) -> dict[str, Any]:
        if isinstance(item, Drug) and cnt > MAX_PACKS_PER_LINE and codes is None:
            # a large quantity is billed on several lines of the same visit (HIS practice)
            record: dict[str, Any] = {}
            while cnt > 0:
                part = min(cnt, MAX_PACKS_PER_LINE)
                record = self.line(
                    psn, inst, t, item, part, med_type=med_type, doctor=doctor, dx=dx, lt=lt,
                    discharge=discharge, override=override, dose=dose,
                )  # fmt: skip
                cnt -= part
            return record
        inst.counter += 1
        mdtrt = self.visit_id(psn, inst, t, med_type)
        if isinstance(item, Drug):
            code, name = item.drug_code, item.generic_name_zh
            price = round(item.unit_price_yuan * (1 + (zlib.crc32(inst.code.encode()) % 7 - 3) / 100), 2)
            if codes is None:
                codes = self.trace_codes(item, cnt) if self.rng.random() < self.cfg.trace_code_share else []
        else:
            code, name, price = item.code, item.name, item.price
            codes = codes or []
        total = round(cnt * price, 2)
        record = {
            "feedetl_sn": f"{t:%Y%m%d}{inst.counter:08d}",
            "fixmedins_code": inst.code,
            "fixmedins_name": inst.name,
            "admdvs": inst.admdvs,
            "psn_no": psn,
            "mdtrt_id": mdtrt,
            "setl_id": f"S{mdtrt}",
            "med_type": med_type,
            "fee_ocur_time": t.strftime("%Y-%m-%d %H:%M:%S"),
            "med_list_codg": code,
            "med_list_name": name,
            "cnt": cnt,
            "trdn_flag": 0,
            "pric": price,
            "det_item_fee_sumamt": total,
            "sin_dos_dscr": dose[0] if dose else "",
            "used_frqu_dscr": dose[1] if dose else "",
            "prd_days": dose[2] if dose else "",
            "rxno": "",
            "bilg_dr_codg": doctor or "",
            "dise_codg": ";".join(dx),
            "dscg_tkdrug_flag": int(discharge),
            "lt_rx_flag": int(lt),
            "override_reason": override or "",
            "drug_trac_codg": ",".join(codes),
            "init_feedetl_sn": "",
        }
        if isinstance(item, Drug):
            self.classes[psn].add(item.atc_code[:5])
        if isinstance(item, Drug) and inst.kind == "hospital":
            self.rx += 1
            record["rxno"] = f"RX{self.rx:010d}"
        if inst.kind == "pharmacy":
            self.spend[(psn, f"{t:%Y-%m}")] += total
        self.records.append(record)
        return record

    def outpatient(
        self, psn: str, inst: Institution, t: datetime, med_type: str, doctor: str, dx: Sequence[str]
    ) -> None:
        """The consultation line of a hospital visit (once per visit)."""
        key = (psn, inst.code, t.date().isoformat())
        if key in self.visit_ids:
            return
        reg = cat.REGISTRATION_EXPERT if self.rng.random() < 0.3 else cat.REGISTRATION
        self.line(psn, inst, t, reg, 1, med_type=med_type, doctor=doctor, dx=dx)
        if self.rng.random() < 0.25:
            self.line(psn, inst, t, self.rng.choice(cat.LAB_TESTS), 1, med_type=med_type, doctor=doctor, dx=dx)

    def reversal(self, original: dict[str, Any], t: datetime, codes: Sequence[str] | None = None) -> dict[str, Any]:
        """A refund (退费) of the whole `original` line at `t`: negative quantity and amount,
        naming the original line; it lists the trace codes of the packs that come back."""
        inst = next(
            i for i in [*self.hospitals, *self.pharmacies, self.pill_mill] if i and i.code == original["fixmedins_code"]
        )
        inst.counter += 1
        record = {
            **original,
            "feedetl_sn": f"{t:%Y%m%d}{inst.counter:08d}",
            "fee_ocur_time": t.strftime("%Y-%m-%d %H:%M:%S"),
            "cnt": -original["cnt"],
            "det_item_fee_sumamt": -original["det_item_fee_sumamt"],
            # half the refunds list the returned packs' codes, the others leave them out (the engine
            # takes the original's codes then)
            "drug_trac_codg": ",".join(codes if codes is not None else original["drug_trac_codg"].split(","))
            if self.rng.random() < 0.5
            else "",
            "init_feedetl_sn": original["feedetl_sn"],
        }
        if inst.kind == "pharmacy":
            self.spend[(original["psn_no"], original["fee_ocur_time"][:7])] -= original["det_item_fee_sumamt"]
        self.records.append(record)
        return record

    def split_sale(self, psn: str, inst: Institution, t: datetime, drug: Drug, units: int, code: str) -> dict[str, Any]:
        """A split-pack sale (拆零, trdn_flag=1): `units` minimum units of the pack `code`."""
        record = self.line(psn, inst, t, drug, 1, med_type="41", codes=[code])
        unit_price = round(record["pric"] / drug.units_per_pack, 4)
        total = round(units * unit_price, 2)
        self.spend[(psn, f"{t:%Y-%m}")] += total - record["det_item_fee_sumamt"]
        record.update(cnt=units, trdn_flag=1, pric=unit_price, det_item_fee_sumamt=total)
        return record

    # --- the ledger (legitimate purchases stay clearly inside the rules) ----------------

    def allowed_days(self, drug: Drug, lt: bool, discharge: bool) -> float:
        if lt and drug.long_term_rx_eligible:
            return 84.0
        base = 30.0 if drug.chronic else 7.0
        if discharge:
            base = max(base, 30.0)
        return max(base, drug.days_supply(drug.units_per_pack))

    def fits(self, psn: str, drug: Drug, day: float, inst: Institution, packs: int, allowed: float) -> bool:
        days = drug.days_supply(packs * drug.units_per_pack)
        if days > allowed + 1e-9:
            return False
        held = self.ledger.get((psn, drug.atc_code))
        if held is None:
            return True
        elapsed = day - held.day
        if elapsed < 0:
            return False
        if held.days > 0 and elapsed < LEGIT_USED_FRACTION * held.days:
            return False
        stock = max(0.0, held.stock - elapsed)
        if stock > 10:  # leftovers beyond the engine's carry tolerance would look early
            return False
        if inst.code != held.institution and held.day + held.days - day > LEGIT_OVERLAP_DAYS:
            return False
        return stock + days <= max(allowed, held.allowed) + 30 - LEGIT_STOCK_MARGIN

    def record_fill(self, psn: str, drug: Drug, day: float, inst: Institution, packs: int, allowed: float) -> None:
        held = self.ledger.get((psn, drug.atc_code))
        days = drug.days_supply(packs * drug.units_per_pack)
        stock = max(0.0, held.stock - (day - held.day)) if held else 0.0
        if held is not None and held.day == day and held.institution == inst.code:
            self.ledger[(psn, drug.atc_code)] = _Held(day, held.days + days, inst.code, stock + days, allowed)
        else:
            self.ledger[(psn, drug.atc_code)] = _Held(day, days, inst.code, stock + days, allowed)

    # --- regimens -------------------------------------------------------------------

    def regimen(
        self,
        n_conditions: int,
        *,
        hospital_only: bool | None = None,
        max_dose: bool = False,
        lt_only: bool = False,
        avoid_dx: Sequence[str] = (),
        avoid_classes: Sequence[str] = (),
    ) -> list[Any]:
        """Chronic conditions and one drug per condition (distinct ATC level-4 classes: no
        therapeutic duplication), with the patient's real daily dose in minimum units."""
        rng = self.rng
        pool = [
            c
            for c in self.conditions
            if (hospital_only is None or c.hospital_only == hospital_only)
            and not any(c.dx.startswith(p) for p in avoid_dx)
            and (not lt_only or any(self.drug_of[d].long_term_rx_eligible for d in c.drugs))
        ]
        chosen: list[Condition] = []
        while len(chosen) < min(n_conditions, len(pool)):
            c = rng.choices(pool, weights=[c.weight for c in pool])[0]
            if c not in chosen:
                chosen.append(c)
        out = []
        atcs: set[str] = set(avoid_classes)
        for c in chosen:
            options = [
                self.drug_of[d]
                for d in c.drugs
                if self.drug_of[d].atc_code[:5] not in atcs and (not lt_only or self.drug_of[d].long_term_rx_eligible)
            ]
            if not options:
                continue
            drug = rng.choice(options)
            atcs.add(drug.atc_code[:5])
            ratio = 1.0 if max_dose else min(1.0, max(0.15, drug.ddd / drug.max_daily_dose * rng.uniform(0.6, 1.6)))
            daily_units = ratio * drug.max_daily_dose / drug.strength
            out.append({"condition": c, "drug": drug, "daily_units": daily_units, "until": None})
        return out

    def dose_text(self, drug: Drug, daily_units: float, days: float) -> tuple[str, str, float]:
        per_day = drug.strength * daily_units
        return (f"{per_day:g}{drug.strength_unit}", "qd" if daily_units <= 1.5 else "bid", round(days))

    def chronic_course(
        self,
        p: Patient,
        regimen: list[dict[str, Any]],
        *,
        first: datetime,
        end: datetime,
        home: Institution,
        doctor: str,
        pharmacies: Sequence[Institution] = (),
        pharmacy_share: float = 0.0,
        cycle: float = 30.0,
        lt: bool = False,
    ) -> None:
        """Visits about every `cycle` days; each buys the drugs that would run out before the next."""
        rng = self.rng
        t = first
        while t < end:
            hospital_only = any(item["condition"].hospital_only for item in regimen)
            at_pharmacy = bool(pharmacies) and not hospital_only and rng.random() < pharmacy_share
            inst = rng.choice(list(pharmacies)) if at_pharmacy else home
            registered = any(item["condition"].registered for item in regimen)
            med_type = "41" if at_pharmacy else ("14" if registered else "11")
            when = self.when(t)
            day = when.toordinal()
            due = []
            for item in regimen:
                until = item["until"]
                remaining = 0.0 if until is None else (until - when).total_seconds() / 86400
                if remaining <= cycle * 0.5:
                    due.append((item, remaining))
            if due and not at_pharmacy and self.month_visits(p.psn_no, when) >= LEGIT_VISITS_CAP:
                due = []
            if due and at_pharmacy and self.spend[(p.psn_no, f"{when:%Y-%m}")] > LEGIT_SPEND_CAP - 2000:
                inst, at_pharmacy, med_type = home, False, ("14" if registered else "11")
            bought = False
            for item, remaining in due:
                drug: Drug = item["drug"]
                use_lt = lt and drug.long_term_rx_eligible and not at_pharmacy
                allowed = self.allowed_days(drug, use_lt, False)
                target = (cycle + rng.uniform(2, 6) - max(0.0, remaining)) * item["daily_units"]
                packs = max(1, math.ceil(target / drug.units_per_pack))
                while packs > 1 and drug.days_supply(packs * drug.units_per_pack) > allowed:
                    packs -= 1
                if not self.fits(p.psn_no, drug, day, inst, packs, allowed):
                    continue
                price = packs * drug.unit_price_yuan
                if at_pharmacy and self.spend[(p.psn_no, f"{when:%Y-%m}")] + price > LEGIT_SPEND_CAP:
                    continue
                if not at_pharmacy and not bought:
                    self.outpatient(p.psn_no, inst, when, med_type, doctor, [item["condition"].dx])
                bought = True
                real_days = packs * drug.units_per_pack / item["daily_units"]
                self.line(
                    p.psn_no,
                    inst,
                    when,
                    drug,
                    packs,
                    med_type=med_type,
                    doctor=None if at_pharmacy else doctor,
                    dx=[item["condition"].dx],
                    lt=use_lt,
                    dose=self.dose_text(drug, item["daily_units"], real_days),
                )
                self.record_fill(p.psn_no, drug, day, inst, packs, allowed)
                start = when if until_is_past(item["until"], when) else item["until"]
                item["until"] = start + timedelta(days=real_days)
            t = t + timedelta(days=cycle + rng.uniform(-3, 4))

    # --- legitimate profiles --------------------------------------------------------

    def first_day(self) -> datetime:
        return self.start + timedelta(days=self.rng.uniform(0, 28))

    def legit(self, profile: str) -> None:
        rng = self.rng
        p = self.new_patient(profile, True)
        home = self.hospital()
        doctor = rng.choice(home.doctors)
        if profile in ("chronic", "max-dose"):
            regimen = self.regimen(rng.choice((1, 2, 2, 3, 3, 4)), hospital_only=None, max_dose=profile == "max-dose")
            pharmacies = [self.pharmacy()] if rng.random() < 0.4 else []
            self.chronic_course(
                p, regimen, first=self.first_day(), end=self.end, home=home, doctor=doctor,
                pharmacies=pharmacies, pharmacy_share=0.5,
            )  # fmt: skip
            if rng.random() < 0.03:
                self.referral_day(p, home)
        elif profile == "multi-pharmacy":
            regimen = self.regimen(rng.choice((2, 3, 3, 4)), hospital_only=False)
            pharmacies = [self.pharmacy(), self.pharmacy()]
            self.chronic_course(
                p, regimen, first=self.first_day(), end=self.end, home=home, doctor=doctor,
                pharmacies=pharmacies, pharmacy_share=0.75,
            )  # fmt: skip
        elif profile == "long-term-rx":
            regimen = self.regimen(rng.choice((1, 2, 3)), hospital_only=False, lt_only=True)
            self.chronic_course(
                p, regimen, first=self.first_day(), end=self.end, home=home, doctor=doctor, cycle=84.0, lt=True
            )
            p.notes.append("long-term prescriptions (lt_rx_flag, up to 84 days)")
        elif profile == "acute":
            pass  # acute episodes only (below)
        elif profile == "discharge":
            self.discharge(p, home)
        elif profile == "dialysis":
            self.dialysis(p, home)
        elif profile == "rehabilitation":
            regimen = self.regimen(1, hospital_only=False)
            self.chronic_course(p, regimen, first=self.first_day(), end=self.end, home=home, doctor=doctor)
            self.rehabilitation(p, home)
        elif profile == "high-spend":
            regimen = self.regimen(2, hospital_only=False)
            pharmacy = self.pharmacy()
            self.chronic_course(
                p, regimen, first=self.first_day(), end=self.end, home=home, doctor=doctor,
                pharmacies=[pharmacy], pharmacy_share=1.0,
            )  # fmt: skip
            self.pharmacy_spending(p, pharmacy, rng.uniform(4800, 7000), months=rng.choice((1, 2)))
        elif profile == "override":
            self.override(p, home, doctor)
        elif profile == "refund":
            self.refund(p, home, doctor)
        elif profile == "split-pack":
            self.split_pack(p)
        elif profile == "therapy-switch":
            self.therapy_switch(p, home, doctor)
        elif profile == "traveller":
            regimen = self.regimen(rng.choice((1, 2)), hospital_only=False)
            self.chronic_course(p, regimen, first=self.first_day(), end=self.end, home=home, doctor=doctor)
        if profile not in ("dialysis",):
            self.acute_episodes(p, rate=0.25 if profile != "acute" else 0.6)
        if profile in ("chronic", "multi-pharmacy", "long-term-rx", "max-dose", "discharge") and rng.random() < 0.1:
            self.hospital_only_course(p)
        if profile == "traveller":
            self.travel(p)

    def hospital_only_course(self, p: Patient) -> None:
        """A specialty drug (cancer, transplant, rheumatology) dispensed at a hospital every month."""
        regimen = self.regimen(1, hospital_only=True, avoid_classes=sorted(self.classes[p.psn_no]))
        if not regimen:
            return
        home = self.hospital()
        self.chronic_course(p, regimen, first=self.first_day(), end=self.end, home=home, doctor=home.doctors[0])

    def referral_day(self, p: Patient, home: Institution) -> None:
        """One day with three hospitals (a referral and tests): below the three-day threshold."""
        day = self.start + timedelta(days=self.rng.uniform(10, (self.end - self.start).days - 10))
        others = [h for h in self.hospitals if h is not home]
        for h in [home, *self.rng.sample(others, 2)]:
            when = self.when(day)
            if self.month_visits(p.psn_no, when) >= LEGIT_VISITS_CAP:
                return
            self.outpatient(p.psn_no, h, when, "11", self.rng.choice(h.doctors), ["R07.4"])
        p.notes.append("one day with three hospitals")

    def acute_episodes(self, p: Patient, rate: float) -> None:
        rng = self.rng
        usual = (self.hospital(), self.pharmacy())
        t = self.start
        while True:
            t = t + timedelta(days=rng.expovariate(rate / 30))
            if t >= self.end:
                return
            _, dx, code, packs = rng.choice(cat.ACUTE_EPISODES)
            use_pharmacy = rng.random() < 0.35
            # people mostly return to their usual pharmacy and clinic for a new episode
            inst = usual[use_pharmacy] if rng.random() < 0.9 else (self.pharmacy() if use_pharmacy else self.hospital())
            when = self.when(t)
            if not use_pharmacy and self.month_visits(p.psn_no, when) >= LEGIT_VISITS_CAP - 1:
                continue
            med_type = "41" if use_pharmacy else "11"
            doctor = None if use_pharmacy else rng.choice(inst.doctors)
            if doctor:
                self.outpatient(p.psn_no, inst, when, med_type, doctor, [dx])
            for item in rng.sample(self.unmonitored, rng.choice((1, 1, 2))):
                self.line(p.psn_no, inst, when, item, rng.choice((1, 1, 2)), med_type=med_type, doctor=doctor, dx=[dx])
            drug = self.drug_of.get(code) if code else None
            if drug is not None:
                allowed = self.allowed_days(drug, False, False)
                day = when.toordinal()
                while packs > 1 and drug.days_supply(packs * drug.units_per_pack) > allowed:
                    packs -= 1
                if self.fits(p.psn_no, drug, day, inst, packs, allowed):
                    self.line(p.psn_no, inst, when, drug, packs, med_type=med_type, doctor=doctor, dx=[dx])
                    self.record_fill(p.psn_no, drug, day, inst, packs, allowed)
                    if drug.days_supply(packs * drug.units_per_pack) > 7:
                        p.notes.append(f"one whole pack of {drug.generic_name_en} (more than 7 days)")

    def discharge(self, p: Patient, home: Institution) -> None:
        """An inpatient stay, discharge medication (up to 30 days), then follow-up refills."""
        rng = self.rng
        doctor = rng.choice(home.doctors)
        admit = self.start + timedelta(days=rng.uniform(0, max(1, (self.end - self.start).days - 45)))
        stay = rng.randint(3, 10)
        cases = [
            ("I21.9", ["XB01AC24A001", "XC10AA05A001"]),  # myocardial infarction: ticagrelor, atorvastatin
            ("I63.9", ["XB01AC04A001", "XC10AA07A001"]),  # stroke: clopidogrel, rosuvastatin
            ("S72.0", ["XN02AX02A001"]),  # hip fracture: tramadol for pain
            ("J44.1", ["XR03AK07A001"]),  # COPD exacerbation
        ]
        dx, codes = rng.choice(cases)
        for d in range(stay):
            t = self.when(admit + timedelta(days=d), 7, 9)
            self.line(p.psn_no, home, t, cat.BED_DAY, 1, med_type="21", doctor=doctor, dx=[dx])
            self.line(p.psn_no, home, t, cat.NURSING_DAY, 1, med_type="21", doctor=doctor, dx=[dx])
            self.line(p.psn_no, home, t, cat.INFUSION, 2, med_type="21", doctor=doctor, dx=[dx])
        out_day = self.when(admit + timedelta(days=stay), 9, 11)
        regimen: list[dict[str, Any]] = []
        follow_up: list[float] = []
        for code in codes:
            drug = self.drug_of.get(code)
            if drug is None:
                continue
            daily_units = drug.max_daily_dose / drug.strength * (1.0 if drug.chronic else 0.5)
            target_days = 28 if drug.chronic else rng.choice((10, 14))
            packs = max(1, math.floor(target_days * daily_units / drug.units_per_pack))
            allowed = self.allowed_days(drug, False, True)
            while packs > 1 and drug.days_supply(packs * drug.units_per_pack) > allowed:
                packs -= 1
            if not self.fits(p.psn_no, drug, out_day.toordinal(), home, packs, allowed):
                continue
            self.line(p.psn_no, home, out_day, drug, packs, med_type="21", doctor=doctor, dx=[dx], discharge=True)
            self.record_fill(p.psn_no, drug, out_day.toordinal(), home, packs, allowed)
            if drug.chronic:
                real = packs * drug.units_per_pack / daily_units
                follow_up.append(real)
                regimen.append(
                    {
                        "condition": Condition("discharge", dx, (code,), True),
                        "drug": drug,
                        "daily_units": daily_units,
                        "until": out_day + timedelta(days=real),
                    }
                )
        p.notes.append(f"inpatient stay of {stay} days with discharge medication ({dx})")
        if regimen:
            first = out_day + timedelta(days=min(follow_up) - 2)
            self.chronic_course(p, regimen, first=first, end=self.end, home=home, doctor=doctor)

    def dialysis(self, p: Patient, home: Institution) -> None:
        """Haemodialysis three times a week (12-14 registered visits a month, med_type 14)
        and epoetin once a week, at the same visits."""
        rng = self.rng
        doctor = rng.choice(home.doctors)
        weekdays = rng.choice(((0, 2, 4), (1, 3, 5)))
        epo = self.drug_of.get("XB03XA01A001")
        t = self.start
        session = 0
        while t < self.end:
            if t.weekday() in weekdays:
                when = self.when(t, 7, 12)
                self.line(p.psn_no, home, when, cat.DIALYSIS, 1, med_type="14", doctor=doctor, dx=["N18.5"])
                if epo is not None and session % 3 == 0:
                    allowed = self.allowed_days(epo, False, False)
                    if self.fits(p.psn_no, epo, when.toordinal(), home, 1, allowed):
                        self.line(p.psn_no, home, when, epo, 1, med_type="14", doctor=doctor, dx=["N18.5"])
                        self.record_fill(p.psn_no, epo, when.toordinal(), home, 1, allowed)
                session += 1
            t += timedelta(days=1)
        p.notes.append("haemodialysis three times a week")

    def rehabilitation(self, p: Patient, home: Institution) -> None:
        """A course of 9-12 physiotherapy sessions in one month (below 15 visits)."""
        rng = self.rng
        month_start = self.start + timedelta(days=31 * rng.randrange(self.cfg.months))
        month_start = month_start.replace(day=1)
        doctor = rng.choice(home.doctors)
        days = sorted(rng.sample(range(0, 27), rng.randint(9, 12)))
        for d in days:
            when = self.when(month_start + timedelta(days=d))
            if self.month_visits(p.psn_no, when) >= LEGIT_VISITS_CAP:
                break
            self.line(p.psn_no, home, when, cat.REHAB_SESSION, 1, med_type="11", doctor=doctor, dx=["M54.5"])
        p.notes.append("rehabilitation course in one month")

    def pharmacy_spending(self, p: Patient, pharmacy: Institution, amount: float, months: int) -> None:
        """Unmonitored purchases at a pharmacy adding up to about `amount` yuan in each of `months` months."""
        rng = self.rng
        chosen = sorted(rng.sample(range(self.cfg.months), min(months, self.cfg.months)))
        for m in chosen:
            month_start = (self.start + timedelta(days=31 * m)).replace(day=1)
            key = (p.psn_no, f"{month_start:%Y-%m}")
            target = amount
            for _ in range(40):
                if self.spend[key] >= target:
                    break
                item = rng.choice(self.expensive)
                cnt = max(1, min(6, int((target - self.spend[key]) // item.price)))
                if not p.legitimate or self.spend[key] + cnt * item.price <= min(target + 300, LEGIT_SPEND_CAP):
                    when = self.when(month_start + timedelta(days=rng.randint(0, 26)))
                    self.line(p.psn_no, pharmacy, when, item, cnt, med_type="41")
                elif cnt == 1:
                    break
        p.notes.append(f"pharmacy spending of about {amount:.0f} yuan in {months} month(s)")

    def course_to_split(
        self, p: Patient, drugs: int, earliest: float, home: Institution, doctor: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any], Drug, _Held] | None:
        """A chronic regimen of `drugs` drugs followed from the first day to a day drawn after
        `earliest` days (at most 50 days before the end): the regimen, its first item and
        drug, and what the patient holds of it then (None without a regimen or a fill)."""
        regimen = self.regimen(drugs, hospital_only=False)
        if not regimen:
            return None
        span = (self.end - self.start).days
        split = self.start + timedelta(days=self.rng.uniform(min(earliest, span / 3), max(span / 3 + 1, span - 50)))
        self.chronic_course(p, regimen, first=self.first_day(), end=split, home=home, doctor=doctor)
        item = regimen[0]
        drug: Drug = item["drug"]
        held = self.ledger.get((p.psn_no, drug.atc_code))
        return None if held is None else (regimen, item, drug, held)

    def override(self, p: Patient, home: Institution, doctor: str) -> None:
        """A chronic patient with one documented early or large purchase (lost, travel, dose change)."""
        rng = self.rng
        course = self.course_to_split(p, 2, 60, home, doctor)
        if course is None:
            return
        regimen, item, drug, held = course
        reason = rng.choice(("lost", "travel", "dose_change"))
        pack_days = drug.days_supply(drug.units_per_pack)
        if reason == "travel":
            gap, packs = 0.8 * held.days, max(1, math.floor(55 / pack_days))
        else:
            gap, packs = 0.35 * held.days, max(1, math.floor(28 / pack_days))
        when = self.when(datetime.fromordinal(int(held.day)) + timedelta(days=max(1, round(gap))))
        dx = [item["condition"].dx]
        self.outpatient(p.psn_no, home, when, "11", doctor, dx)
        self.line(p.psn_no, home, when, drug, packs, med_type="11", doctor=doctor, dx=dx, override=reason)
        days = drug.days_supply(packs * drug.units_per_pack)
        leftover = 0.0 if reason == "lost" else max(0.0, held.stock - (when.toordinal() - held.day))
        self.ledger[(p.psn_no, drug.atc_code)] = _Held(when.toordinal(), days, home.code, leftover + days, 84.0)
        resume = when + timedelta(days=leftover + days + 3)
        for other in regimen:
            other["until"] = None
        self.ledger[(p.psn_no, drug.atc_code)].stock = 0.0
        self.ledger[(p.psn_no, drug.atc_code)].days = 0.0
        self.chronic_course(p, regimen, first=resume, end=self.end, home=home, doctor=doctor)
        p.notes.append(f"one documented purchase with override reason {reason}")

    def refund(self, p: Patient, home: Institution, doctor: str) -> None:
        """A chronic patient buys at a pharmacy, has the purchase refunded (退费) the same or
        the next day, and buys at the home hospital two or three days later; the returned
        packs go back on the shelf and are sold to another patient (their codes again)."""
        buyer = self.new_patient("refund-buyer", True)
        self.refund_story(p, buyer, home, doctor)
        self.acute_episodes(buyer, rate=0.3)

    def refund_story(self, p: Patient, buyer: Patient, home: Institution, doctor: str) -> None:
        rng = self.rng
        course = self.course_to_split(p, 1, 50, home, doctor)
        if course is None or course[3].days <= 0:
            return
        regimen, item, drug, held = course
        when = self.when(datetime.fromordinal(int(held.day + math.ceil(0.9 * held.days))))
        shop = self.pharmacy()
        pack_days = drug.days_supply(drug.units_per_pack)
        packs = max(1, math.floor(28 / pack_days))
        if not self.fits(p.psn_no, drug, when.toordinal(), shop, packs, self.allowed_days(drug, False, False)):
            return
        dx = [item["condition"].dx]
        codes = self.trace_codes(drug, packs)
        bought = self.line(p.psn_no, shop, when, drug, packs, med_type="41", dx=dx, codes=codes)
        back = when + timedelta(hours=rng.uniform(1, 20))
        returned = self.reversal(bought, back)
        for code in codes:
            listed = [_line_id(returned)] if returned["drug_trac_codg"] else []
            self.trace_legit["returned"][code] = [_line_id(bought), *listed]
        again = self.when(back + timedelta(days=rng.randint(2, 3)))
        allowed = self.allowed_days(drug, False, False)
        if self.fits(p.psn_no, drug, again.toordinal(), home, packs, allowed):
            self.outpatient(p.psn_no, home, again, "11", doctor, dx)
            self.line(p.psn_no, home, again, drug, packs, med_type="11", doctor=doctor, dx=dx)
            self.record_fill(p.psn_no, drug, again.toordinal(), home, packs, allowed)
            real_days = packs * drug.units_per_pack / item["daily_units"]
            item["until"] = again + timedelta(days=real_days)
            self.chronic_course(p, regimen, first=again + timedelta(days=real_days * 0.6), end=self.end, home=home,
                                doctor=doctor)  # fmt: skip
        p.notes.append(f"a purchase of {drug.generic_name_en} refunded, then bought again")
        resold = self.when(back + timedelta(days=rng.uniform(3, 15)))
        if resold < self.end:
            again_sold = self.line(buyer.psn_no, shop, resold, drug, packs, med_type="41", dx=dx, codes=codes)
            self.record_fill(buyer.psn_no, drug, resold.toordinal(), shop, packs, allowed)
            for code in codes:
                self.trace_legit["returned"][code].append(_line_id(again_sold))
            buyer.notes.append("bought packs another patient had returned (refunded)")

    def split_pack(self, p: Patient) -> None:
        """One pack sold in parts (拆零) under its trace code: part to this patient, the rest
        to another a few days later; the parts add up to the pack."""
        rng = self.rng
        pool = sorted(
            (
                d
                for d in self.drug_of.values()
                if d.units_per_pack >= 14 and d.unit_price_yuan < 500 and not d.restricted_indications
            ),
            key=lambda d: d.drug_code,
        )
        drug = rng.choice(pool)
        shop = self.pharmacy()
        code = self.trace_codes(drug, 1)[0]
        first = self.when(self.start + timedelta(days=rng.uniform(0, (self.end - self.start).days - 20)))
        part = rng.randint(drug.units_per_pack // 4, drug.units_per_pack // 2)
        other = self.new_patient("split-pack", True)
        for who, units, t in (
            (p, part, first),
            (other, drug.units_per_pack - part, first + timedelta(days=rng.uniform(1, 10))),
        ):
            allowed = self.allowed_days(drug, False, False)
            if drug.days_supply(units) > allowed or (who.psn_no, drug.atc_code) in self.ledger:
                continue
            when = self.when(t)
            part_sale = self.split_sale(who.psn_no, shop, when, drug, units, code)
            self.trace_legit["split"].setdefault(code, []).append(_line_id(part_sale))
            days = drug.days_supply(units)
            self.ledger[(who.psn_no, drug.atc_code)] = _Held(when.toordinal(), days, shop.code, days, allowed)
            who.notes.append(f"{units} of the {drug.units_per_pack} units of one pack of {drug.generic_name_en} (拆零)")
        self.acute_episodes(other, rate=0.3)

    # --- abusive scenarios --------------------------------------------------------------

    def baseline(
        self, p: Patient, *, pharmacy_only: bool = False, exclude: set[str] | None = None, avoid_dx: Sequence[str] = ()
    ) -> Institution:
        """A legitimate chronic baseline for an abusive patient; returns the home hospital."""
        home = self.hospital()
        regimen = [
            r
            for r in self.regimen(self.rng.choice((1, 2)), hospital_only=False, avoid_dx=avoid_dx)
            if r["drug"].atc_code[:5] not in {e[:5] for e in (exclude or set())}
        ]
        if regimen:
            pharmacies = [self.pharmacy()]
            self.chronic_course(
                p, regimen, first=self.first_day(), end=self.end, home=home, doctor=self.rng.choice(home.doctors),
                pharmacies=pharmacies, pharmacy_share=1.0 if pharmacy_only else 0.3,
            )  # fmt: skip
        return home

    def excess_packs(self, drug: Drug) -> tuple[int, int] | None:
        """Pack counts that supply more than 1.5x the per-prescription limit but keep the
        stock below allowed + tolerance (no stockpiling), or None when there are none."""
        limit = self.allowed_days(drug, False, False)
        cap = limit + 30 - 5
        pack_days = drug.days_supply(drug.units_per_pack)
        lo = math.floor(limit * 1.5 / pack_days) + 1
        hi = math.floor(cap / pack_days)
        return (lo, min(hi, lo + 3)) if hi >= lo and lo <= 12 else None

    def pick_drug(
        self, *, chronic: bool, restricted: bool | None = False, exclude: Sequence[str] = (), excess: bool = False
    ) -> Drug:
        pool = [
            d
            for d in self.drug_of.values()
            if d.chronic == chronic
            and (not chronic or "resale_prone" in d.categories)
            and (restricted is None or bool(d.restricted_indications) == restricted)
            and d.drug_code not in exclude
            and d.unit_price_yuan < 1500
            and d.days_supply(d.units_per_pack) >= 3
            and (not excess or self.excess_packs(d) is not None)
        ]
        pool.sort(key=lambda d: d.drug_code)
        return self.rng.choice(pool)

    def abusive(self, scenario: str) -> None:
        rng = self.rng
        p = self.new_patient(scenario, False, SCENARIOS[scenario])
        if scenario == "over-quantity":
            drug = self.pick_drug(chronic=rng.random() < 0.6, excess=True)
            home = self.baseline(p, exclude={drug.atc_code})
            self.excess_fills(p, drug, home, rng.choice(home.doctors), rng.randint(1, 3))
        elif scenario == "pill-mill":
            assert self.pill_mill is not None
            drugs = [self.pick_drug(chronic=True, excess=True)]
            drugs.append(self.pick_drug(chronic=rng.random() < 0.5, exclude=[drugs[0].drug_code], excess=True))
            drugs = [d for i, d in enumerate(drugs) if d.atc_code[:5] not in {x.atc_code[:5] for x in drugs[:i]}]
            self.baseline(p, pharmacy_only=True, exclude={d.atc_code for d in drugs})
            self.excess_fills(p, drugs, self.pill_mill, self.bad_doctor, rng.randint(2, 4), ramp=True)
        elif scenario == "early-refill":
            drug = self.pick_drug(chronic=True)
            home = self.baseline(p, exclude={drug.atc_code})
            self.early_refills(p, drug, home)
        elif scenario == "stockpiling":
            drug = self.pick_drug(chronic=True)
            self.baseline(p, exclude={drug.atc_code})
            self.stockpile(p, drug)
        elif scenario == "frequent-visits":
            home = self.baseline(p, pharmacy_only=True)
            self.frequent_visits(p, home)
        elif scenario == "hospital-hopping":
            self.baseline(p, pharmacy_only=True)
            self.hop(p)
        elif scenario == "pharmacy-spend":
            self.baseline(p, pharmacy_only=True)
            self.pharmacy_spending(p, self.pharmacy(), rng.uniform(9500, 15000), months=rng.choice((1, 2)))
        elif scenario == "indication-mismatch":
            self.mismatch(p)
        elif scenario == "trace-reseller":
            self.reseller(p)
        elif scenario == "doctor-shopping":
            drug = self.pick_drug(chronic=True)
            self.baseline(p, pharmacy_only=True, exclude={drug.atc_code})
            self.doctor_shopping(p, drug)
        elif scenario == "duplication":
            first, second = self.class_pair()
            self.baseline(p, exclude={first.atc_code})
            self.duplicate(p, first, second)
        elif scenario == "card-sharing":
            self.baseline(p, pharmacy_only=True)
            self.share_card(p)
        elif scenario == "override-abuse":
            drug = self.pick_drug(chronic=True)
            self.baseline(p, exclude={drug.atc_code})
            self.override_abuse(p, drug)

    def excess_fills(
        self,
        p: Patient,
        drugs: Drug | Sequence[Drug],
        inst: Institution,
        doctor: str,
        count: int,
        *,
        ramp: bool = False,
    ) -> None:
        """Fills 1.5-2.5x the per-prescription limit, each after the previous supply ran out
        (so no early refill and no stockpiling): over-quantity only."""
        rng = self.rng
        items = [drugs] if isinstance(drugs, Drug) else list(drugs)
        earliest = self.start + timedelta(days=31 if ramp else 0)
        t = earliest + timedelta(days=rng.uniform(0, 25))
        for _ in range(count):
            if t >= self.end:
                break
            when = self.when(t)
            self.outpatient(p.psn_no, inst, when, "11", doctor, ["Z76.0"])
            longest = 0.0
            for drug in items:
                span = self.excess_packs(drug)
                if span is None:
                    continue
                packs = rng.randint(*span)
                dx = drug.restricted_indications[0] if drug.restricted_indications else "Z76.0"
                self.line(p.psn_no, inst, when, drug, packs, med_type="11", doctor=doctor, dx=[dx])
                longest = max(longest, drug.days_supply(packs * drug.units_per_pack))
            t = t + timedelta(days=longest + rng.uniform(4, 12))

    def early_refills(self, p: Patient, drug: Drug, home: Institution) -> None:
        """Monthly fills at one hospital; twice a refill after only 15-40% of the supply."""
        rng = self.rng
        doctor = rng.choice(home.doctors)
        pack_days = drug.days_supply(drug.units_per_pack)
        packs = max(1, math.floor(28 / pack_days))
        days = packs * pack_days
        dx = drug.restricted_indications[0] if drug.restricted_indications else "I10"
        t = self.first_day()
        fills = 0
        first_early = rng.randint(1, 2)
        earlies = (first_early, first_early + rng.randint(2, 3))
        stock = 0.0
        while t < self.end and fills < 7:
            when = self.when(t)
            self.outpatient(p.psn_no, home, when, "11", doctor, [dx])
            self.line(p.psn_no, home, when, drug, packs, med_type="11", doctor=doctor, dx=[dx])
            stock += days
            fills += 1
            # twice an early refill; otherwise wait until the stock is used up
            gap = days * rng.uniform(0.15, 0.4) if fills in earlies else stock + rng.uniform(1, 4)
            gap = max(1.0, gap)
            stock = max(0.0, stock - math.floor(gap))
            t = t + timedelta(days=gap)

    def stockpile(self, p: Patient, drug: Drug) -> None:
        """Fills of up to 28 days' supply every few days, rotating over three pharmacies,
        until the stock on hand (at the maximum dose) is well past allowed + tolerance."""
        rng = self.rng
        shops = rng.sample(self.pharmacies, 3)
        pack_days = drug.days_supply(drug.units_per_pack)
        packs = max(1, math.floor(28 / pack_days))  # each fill within the per-prescription limit
        days = packs * pack_days
        target = self.allowed_days(drug, False, False) + 30 + 20
        t = self.start + timedelta(days=rng.uniform(5, max(6, (self.end - self.start).days - 90)))
        dx = drug.restricted_indications[0] if drug.restricted_indications else "I10"
        stock, fills, gap = 0.0, 0, 0.0
        while fills < 14 and (fills < 6 or stock < target):
            if t >= self.end:
                break
            when = self.when(t)
            stock = max(0.0, stock - gap) + days
            self.line(p.psn_no, shops[fills % 3], when, drug, packs, med_type="41", dx=[dx])
            fills += 1
            gap = float(rng.randint(3, max(4, int(days // 3))))
            t = t + timedelta(days=gap)
        p.notes.append(f"{fills} fills of {drug.generic_name_en} at three pharmacies, stock {stock:.0f} days")

    def class_pair(self) -> tuple[Drug, Drug]:
        """Two chronic, unrestricted ingredients of one ATC level-4 class (two statins ...)."""
        classes: dict[str, list[Drug]] = defaultdict(list)
        for d in sorted(self.drug_of.values(), key=lambda d: d.drug_code):
            usable = d.chronic and not d.restricted_indications and d.days_supply(d.units_per_pack) >= 3
            if usable and all(x.atc_code != d.atc_code for x in classes[d.atc_code[:5]]):
                classes[d.atc_code[:5]].append(d)
        pairs = sorted(k for k, v in classes.items() if len(v) >= 2)
        first, second = self.rng.sample(classes[self.rng.choice(pairs)], 2)
        return first, second

    def monthly_packs(self, drug: Drug) -> tuple[int, float]:
        """Packs of up to 28 days at the label maximum, and their days."""
        pack_days = drug.days_supply(drug.units_per_pack)
        packs = max(1, math.floor(28 / pack_days))
        return packs, packs * pack_days

    def doctor_shopping(self, p: Patient, drug: Drug) -> None:
        """One fill a month of normal size, each at another hospital from another doctor
        (5 hospitals): no supply rule fires, the providers do."""
        rng = self.rng
        packs, days = self.monthly_packs(drug)
        span = (self.end - self.start).days
        t = self.start + timedelta(days=rng.uniform(0, max(1, span - 4 * days - 5)))
        dx = "I10"
        for h in rng.sample(self.hospitals, 5):
            when = self.when(t)
            doctor = rng.choice(h.doctors)
            self.outpatient(p.psn_no, h, when, "11", doctor, [dx])
            self.line(p.psn_no, h, when, drug, packs, med_type="11", doctor=doctor, dx=[dx])
            t += timedelta(days=days - rng.uniform(0.2, 1.5))
        p.notes.append(f"{drug.generic_name_en} from five hospitals and five doctors, one fill a month")

    def duplicate(self, p: Patient, first: Drug, second: Drug) -> None:
        """Two ingredients of one class bought side by side every month, at a hospital and
        at a pharmacy (3-4 months): each alone is a normal treatment."""
        rng = self.rng
        home, shop = self.hospital(), self.pharmacy()
        doctor = rng.choice(home.doctors)
        span = (self.end - self.start).days
        t = self.start + timedelta(days=rng.uniform(0, max(1, span - 120)))
        for _ in range(rng.randint(3, 4)):
            for drug, inst, lag in ((first, home, 0.0), (second, shop, rng.uniform(2, 9))):
                packs, _ = self.monthly_packs(drug)
                when = self.when(t + timedelta(days=lag))
                if inst is home:
                    self.outpatient(p.psn_no, home, when, "11", doctor, ["I10"])
                self.line(p.psn_no, inst, when, drug, packs, med_type="11" if inst is home else "41",
                          doctor=doctor if inst is home else None, dx=["I10"])  # fmt: skip
            t += timedelta(days=28 + rng.uniform(0, 2))
        p.notes.append(f"{first.generic_name_en} and {second.generic_name_en} ({first.atc_code[:5]}) side by side")

    def share_card(self, p: Patient) -> None:
        """The card used in two places in an impossible time, once or twice: Shanghai and
        another province within 4 hours, or two cities of one province within an hour."""
        rng = self.rng
        hangzhou, ningbo = self.remote[0], self.remote[1]
        span = (self.end - self.start).days
        for _ in range(rng.randint(1, 2)):
            day = self.start + timedelta(days=rng.uniform(0, span - 1))
            t1 = self.when(day, 8, 14)
            if rng.random() < 0.5:
                first, second, gap = self.pharmacy(), rng.choice(self.remote), rng.uniform(0.5, 3.5)
            else:
                first, second, gap = hangzhou, ningbo, rng.uniform(0.2, 0.8)
            self.line(p.psn_no, first, t1, rng.choice(self.unmonitored), 1, med_type="41")
            t2 = t1 + timedelta(hours=gap)
            self.line(p.psn_no, second, t2, rng.choice(self.unmonitored), 1, med_type="41")
            p.notes.append(f"card used at {first.code} and {second.code} {gap:.1f} hours apart")

    def travel(self, p: Patient) -> None:
        """Purchases in another province on days with no line at home the day before or after."""
        rng = self.rng
        mine = sorted(
            datetime.strptime(r["fee_ocur_time"], "%Y-%m-%d %H:%M:%S") for r in self.records if r["psn_no"] == p.psn_no
        )
        span = (self.end - self.start).days
        for _ in range(rng.randint(1, 3)):
            day = self.start + timedelta(days=rng.uniform(0, span - 1))
            when = self.when(day)
            if any(abs((when - t).total_seconds()) < 30 * 3600 for t in mine):
                continue
            self.line(p.psn_no, rng.choice(self.remote[2:]), when, rng.choice(self.unmonitored), 1, med_type="41")
            mine.append(when)
            p.notes.append(f"bought at {when:%Y-%m-%d} away from home")

    def therapy_switch(self, p: Patient, home: Institution, doctor: str) -> None:
        """A drug replaced by another of its class at the regular refill (the old supply
        mostly used), sometimes with the reason dose_change."""
        rng = self.rng
        first, second = self.class_pair()
        t = self.first_day()
        switch_at = rng.randint(2, 4)
        for i in range(6):
            drug = first if i < switch_at else second
            packs, days = self.monthly_packs(drug)
            when = self.when(t)
            if when >= self.end:
                break
            self.outpatient(p.psn_no, home, when, "11", doctor, ["I10"])
            reason = "dose_change" if i == switch_at and rng.random() < 0.5 else None
            self.line(p.psn_no, home, when, drug, packs, med_type="11", doctor=doctor, dx=["I10"], override=reason)
            t += timedelta(days=days * rng.uniform(0.9, 1.05))
        p.notes.append(f"switched from {first.generic_name_en} to {second.generic_name_en}")

    def override_abuse(self, p: Patient, drug: Drug) -> None:
        """7-8 fills of up to 28 days, 3-6 days apart at two pharmacies, each declaring an
        override reason (travel, lost): the pattern of issue 13 (every answer was pass)."""
        rng = self.rng
        shops = [self.small_shop, rng.choice(self.pharmacies)]
        pack_days = drug.days_supply(drug.units_per_pack)
        packs = max(1, math.floor(28 / pack_days))
        dx = drug.restricted_indications[0] if drug.restricted_indications else "I10"
        t = self.start + timedelta(days=rng.uniform(5, max(6, (self.end - self.start).days - 60)))
        n = rng.randint(7, 8)
        for i in range(n):
            reason = rng.choice(("travel", "travel", "lost"))
            self.line(p.psn_no, shops[i % 2], self.when(t), drug, packs, med_type="41", dx=[dx], override=reason)
            t += timedelta(days=rng.randint(3, 6))
        p.notes.append(f"{n} fills of {drug.generic_name_en} with override reasons, 3-6 days apart")

    def frequent_visits(self, p: Patient, home: Institution) -> None:
        """16-22 outpatient visits in a month, at two hospitals (never three a day)."""
        rng = self.rng
        month = rng.randrange(self.cfg.months)
        month_start = (self.start + timedelta(days=31 * month)).replace(day=1)
        second = rng.choice([h for h in self.hospitals if h is not home])
        n = rng.randint(16, 22)
        slots = [(d, h) for d in range(0, 28) for h in (home, second)]
        for d, h in sorted(rng.sample(slots, n), key=lambda s: (s[0], s[1].code)):
            when = self.when(month_start + timedelta(days=d))
            dx = rng.choice(("R51", "R10.4", "M54.5", "K30"))
            self.outpatient(p.psn_no, h, when, "11", rng.choice(h.doctors), [dx])
            self.line(p.psn_no, h, when, rng.choice(self.unmonitored), 1, med_type="11", dx=[dx])
        p.notes.append(f"{n} outpatient visits in {month_start:%Y-%m}")

    def hop(self, p: Patient) -> None:
        """Four days in one month with three hospitals each (12 visits: below 15)."""
        rng = self.rng
        month = rng.randrange(self.cfg.months)
        month_start = (self.start + timedelta(days=31 * month)).replace(day=1)
        for d in sorted(rng.sample(range(0, 27), 4)):
            for h in rng.sample(self.hospitals, 3):
                when = self.when(month_start + timedelta(days=d))
                self.outpatient(p.psn_no, h, when, "11", rng.choice(h.doctors), ["R42"])
                self.line(p.psn_no, h, when, rng.choice(self.unmonitored), 1, med_type="11", dx=["R42"])
        p.notes.append(f"four days with three hospitals in {month_start:%Y-%m}")

    def mismatch(self, p: Patient) -> None:
        """A restricted drug bought monthly without any matching diagnosis on record."""
        rng = self.rng
        cases = [
            ("XA10BJ06A001", "E66.9"),  # semaglutide for weight loss
            ("XN02BF02A001", "M54.5"),  # pregabalin for back pain
            ("XB01AF01A002", "I10"),  # rivaroxaban without an indication
            ("XA10BK01A001", "E66.9"),  # dapagliflozin for weight loss
            ("XR03BB04A001", "J45.9"),  # tiotropium for asthma (scope: COPD)
        ]
        code, dx = rng.choice([c for c in cases if c[0] in self.drug_of])
        drug = self.drug_of[code]
        home = self.baseline(p, pharmacy_only=True, exclude={drug.atc_code}, avoid_dx=drug.restricted_indications)
        item = {"condition": Condition("mismatch", dx, (code,)), "drug": drug, "until": None}
        item["daily_units"] = min(1.0, drug.ddd / drug.max_daily_dose) * drug.max_daily_dose / drug.strength
        first = self.start + timedelta(days=rng.uniform(0, 60))
        end = min(self.end, first + timedelta(days=rng.uniform(60, 150)))
        self.chronic_course(p, [item], first=first, end=end, home=home, doctor=rng.choice(home.doctors))
        p.notes.append(f"{drug.generic_name_en} with diagnosis {dx} only")

    def reseller(self, p: Patient) -> None:
        """Buys a resale-prone drug monthly at normal quantities; the packs resurface at
        another pharmacy, sold to a legitimate patient (回流)."""
        rng = self.rng
        drug = self.pick_drug(chronic=True, restricted=None)
        dx = drug.restricted_indications[0] if drug.restricted_indications else "I10"
        home = self.hospital()
        doctor = rng.choice(home.doctors)
        item = {"condition": Condition("resale", dx, (drug.drug_code,)), "drug": drug, "until": None}
        item["daily_units"] = drug.max_daily_dose / drug.strength * 0.9
        before = len(self.records)
        self.chronic_course(p, [item], first=self.first_day(), end=self.end, home=home, doctor=doctor)
        bought = [r for r in self.records[before:] if r["med_list_codg"] == drug.drug_code and r["drug_trac_codg"]]
        shop = self.pharmacy()
        buyer = self.new_patient("resale-buyer", True)
        buyer.notes.append("bought packs that had been sold before (innocent buyer)")
        self.trace_resellers[p.psn_no] = []
        for r in rng.sample(bought, min(len(bought), 2)):
            codes = r["drug_trac_codg"].split(",")
            sold = datetime.strptime(r["fee_ocur_time"], "%Y-%m-%d %H:%M:%S")
            when = self.when(sold + timedelta(days=rng.uniform(5, 20)))
            allowed = self.allowed_days(drug, False, False)
            if when >= self.end or not self.fits(buyer.psn_no, drug, when.toordinal(), shop, len(codes), allowed):
                continue
            self.record_fill(buyer.psn_no, drug, when.toordinal(), shop, len(codes), allowed)
            again = self.line(buyer.psn_no, shop, when, drug, len(codes), med_type="41", dx=[dx], codes=codes)
            for code in codes:
                self.trace_sales[code] = [
                    f"{r['fixmedins_code']}/{r['feedetl_sn']}",
                    f"{shop.code}/{again['feedetl_sn']}",
                ]
                self.trace_resellers[p.psn_no].append(code)
        buyer.notes.append(f"{drug.generic_name_en} from pharmacy {shop.code}")
        p.notes.append(f"resold {drug.generic_name_en} (trace codes reappear at {shop.code})")

    # --- the whole population -----------------------------------------------------------

    def build(self) -> Population:
        cfg = self.cfg
        rng = self.rng
        self.institutions()
        n_abusive = max(round(cfg.patients * cfg.abusive_share), cfg.min_per_scenario * len(SCENARIOS))
        per = {s: max(cfg.min_per_scenario, n_abusive // len(SCENARIOS)) for s in SCENARIOS}
        per["pill-mill"] = max(per["pill-mill"], min(40, cfg.patients // 25))
        regulars = max(6, cfg.patients // 300)  # legitimate patients of the pill mill's other doctor
        buyers = per["trace-reseller"]  # each reseller's packs reach one legitimate buyer
        n_legit = max(0, cfg.patients - sum(per.values()) - regulars - buyers)
        plan: list[tuple[bool, str]] = [(False, s) for s, k in per.items() for _ in range(k)]
        profiles = list(LEGIT_PROFILES)
        weights = [LEGIT_PROFILES[x] for x in profiles]
        slots = n_legit
        while slots > 0:  # a paired profile brings a second legitimate patient (the buyer, the other half)
            what = rng.choices(profiles, weights=weights)[0]
            cost = 2 if what in PAIRED_PROFILES else 1
            if cost <= slots:
                plan.append((True, what))
                slots -= cost
        rng.shuffle(plan)
        # the pill mill also serves a few legitimate patients, with its second doctor
        for legit, what in plan:
            if legit:
                self.legit(what)
            else:
                self.abusive(what)
        self.pill_mill_regulars(regulars)
        self.clip_to_window()
        self.records.sort(key=lambda r: (r["fee_ocur_time"], r["fixmedins_code"], r["feedetl_sn"]))
        return Population(self.records, self.labels())

    def clip_to_window(self) -> None:
        """Drop the few lines a pattern would put after the window (a discharge near the
        end, a late refill) and forget resales whose second sale fell outside."""
        first, last = f"{self.start:%Y-%m-%d}", f"{self.end:%Y-%m-%d}"
        self.records = [r for r in self.records if first <= r["fee_ocur_time"] < last]
        kept = {f"{r['fixmedins_code']}/{r['feedetl_sn']}" for r in self.records}
        for code, sales in list(self.trace_sales.items()):
            if not all(s in kept for s in sales):
                del self.trace_sales[code]
        for group in self.trace_legit.values():
            for code, sales in list(group.items()):
                group[code] = [s for s in sales if s in kept]
                if len(group[code]) < 2:
                    del group[code]

    def pill_mill_regulars(self, count: int) -> None:
        assert self.pill_mill is not None
        mill = self.pill_mill
        for _ in range(count):
            p = self.new_patient("chronic", True)
            p.notes.append("regular patient of the pill-mill clinic's other doctor")
            regimen = self.regimen(1, hospital_only=False)
            self.chronic_course(p, regimen, first=self.first_day(), end=self.end, home=mill, doctor=mill.doctors[1])

    def labels(self) -> dict[str, Any]:
        assert self.pill_mill is not None
        institutions: dict[str, Any] = {}
        prescribers: dict[str, Any] = {}
        for inst in [*self.hospitals, *self.pharmacies, self.small_shop, self.pill_mill, *self.remote]:
            institutions[inst.code] = {
                "name": inst.name,
                "kind": inst.kind,
                "admdvs": inst.admdvs,
                "outlier": inst.outlier,
            }
            for doc in inst.doctors:
                prescribers[doc] = {"institution": inst.code, "outlier": doc == self.bad_doctor}
        patients = {
            p.psn_no: {
                "profile": p.profile,
                "legitimate": p.legitimate,
                "rules": list(p.rules),
                "notes": p.notes,
            }
            for p in self.patients.values()
        }
        monitored = [r for r in self.records if r["med_list_codg"] in self.drug_of]
        codes = sum(len(r["drug_trac_codg"].split(",")) for r in monitored if r["drug_trac_codg"])
        profiles: dict[str, int] = defaultdict(int)
        for p in self.patients.values():
            profiles[("legitimate/" if p.legitimate else "abusive/") + p.profile] += 1
        return {
            "generator": "rxguard_tools.synth",
            "format_version": 1,
            "seed": self.cfg.seed,
            "patients_requested": self.cfg.patients,
            "months": self.cfg.months,
            "start": self.cfg.start.isoformat(),
            "end": (self.cfg.end - timedelta(days=1)).isoformat(),
            "phase": self.kb.phase.value,
            "scenarios": {k: list(v) for k, v in SCENARIOS.items()},
            "counts": {
                "lines": len(self.records),
                "monitored_lines": len(monitored),
                "trace_codes": codes,
                "trace_codes_per_monitored_line": round(codes / len(monitored), 3) if monitored else 0.0,
                "patients": len(self.patients),
                "legitimate": sum(1 for p in self.patients.values() if p.legitimate),
                "abusive": sum(1 for p in self.patients.values() if not p.legitimate),
                "institutions": len(institutions),
                "prescribers": len(prescribers),
                "reused_trace_codes": len(self.trace_sales),
                "profiles": dict(sorted(profiles.items())),
            },
            "patients": patients,
            "institutions": institutions,
            "prescribers": prescribers,
            "trace_codes": {
                "reused": {code: sales for code, sales in sorted(self.trace_sales.items())},
                "resellers": {k: v for k, v in sorted(self.trace_resellers.items())},
                # legitimately on several lines: refunded packs back on the shelf, split packs (拆零)
                "returned": dict(sorted(self.trace_legit["returned"].items())),
                "split": dict(sorted(self.trace_legit["split"].items())),
            },
        }


def _line_id(record: dict[str, Any]) -> str:
    return f"{record['fixmedins_code']}/{record['feedetl_sn']}"


def until_is_past(until: datetime | None, when: datetime) -> bool:
    return until is None or until < when


def generate(config: SynthConfig, kb: KnowledgeBase) -> Population:
    """A reproducible synthetic population (same config and knowledge base -> same records)."""
    if config.patients < 1:
        raise ValueError("patients must be >= 1")
    if not 1 <= config.months <= 24:
        raise ValueError("months must be between 1 and 24")
    return _Builder(config, kb).build()


def grown_records(
    lines: int,
    kb: KnowledgeBase,
    *,
    patients: int,
    seed: int,
    months: int = SynthConfig.months,
    counted: Callable[[list[dict[str, Any]]], int] = len,
) -> list[dict[str, Any]]:
    """The records of a population of at least `patients` patients, grown until `counted`
    (by default all records) reaches `lines`: for benchmarks that need a batch of a size."""
    while True:
        records = generate(SynthConfig(patients=patients, seed=seed, months=months), kb).records
        got = counted(records)
        if got >= lines:
            return records
        patients = int(patients * lines / max(got, 1) * 1.1) + 10
