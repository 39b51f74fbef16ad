"""Knowledge base (monitored drugs) and rule base (rule definitions), as data in `rules/`.

- `rules/drugs.json`: the drug catalogue, produced by `rxguard kb import CSV` from a
  bureau's list (ours: rules/reference/monitored_drugs.csv). Never hand-edited.
- `rules/rules.yaml`: the rule definitions, hand-edited by the bureau.

Both are validated by pydantic at load time; a bad file raises `KnowledgeBaseError`
naming the file, the entry and the field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rxguard.models import Scene, Severity

DrugCategory = Literal["resale_prone", "high_cost", "misuse_prone", "controlled"]


class Phase(StrEnum):
    """Rollout phases of the NHSA notice; each includes the drugs of the earlier ones."""

    PILOT = "pilot"  # >= 50 drugs, end of 2025
    PROVINCE = "province"  # >= 100 drugs, mid 2026
    FULL = "full"  # every drug of the catalogue, end of 2026

    @property
    def order(self) -> int:
        return {"pilot": 0, "province": 1, "full": 2}[self.value]


PHASE_MINIMUM = {Phase.PILOT: 50, Phase.PROVINCE: 100}


class Drug(BaseModel):
    """One monitored product of the catalogue."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drug_code: str = Field(min_length=1)
    generic_name_zh: str = Field(min_length=1)
    generic_name_en: str = Field(min_length=1)
    atc_code: str = Field(pattern=r"^[A-Z]\d{2}[A-Z]{2}\d{2}$")
    form: str
    strength: float = Field(gt=0)  # active ingredient per minimum unit
    strength_unit: str
    min_unit: str
    units_per_pack: int = Field(gt=0)
    pack_unit: str
    ddd: float = Field(gt=0)
    ddd_unit: str
    max_daily_dose: float = Field(gt=0)
    max_daily_dose_unit: str
    max_dose_basis: Literal["label", "2.5xDDD"]
    unit_price_yuan: float = Field(ge=0)
    chronic: bool
    long_term_rx_eligible: bool
    categories: list[DrugCategory] = Field(min_length=1)
    restricted_indications: list[str] = Field(default_factory=list)  # ICD-10 prefixes
    phase: Phase

    @model_validator(mode="after")
    def _units_agree(self) -> Drug:
        if self.strength_unit != self.max_daily_dose_unit:
            raise ValueError(
                f"strength_unit {self.strength_unit!r} differs from max_daily_dose_unit "
                f"{self.max_daily_dose_unit!r}: days of supply cannot be computed"
            )
        return self

    def days_supply(self, quantity_units: float) -> float:
        """Fewest days `quantity_units` minimum units last at the label maximum dose."""
        return quantity_units * self.strength / self.max_daily_dose

    def indication_allowed(self, diagnoses: Iterable[str]) -> bool:
        """True when the drug is unrestricted or a diagnosis matches a payment-scope prefix."""
        if not self.restricted_indications:
            return True
        codes = [d.strip().upper() for d in diagnoses]
        return any(c.startswith(p.upper()) for c in codes for p in self.restricted_indications)


class RegionOverride(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    parameters: dict[str, Any] = Field(default_factory=dict)
    severity: Severity | None = None
    enabled: bool | None = None


class Applicability(BaseModel):
    """Which drugs a rule looks at: all lines, monitored drugs, codes, or categories."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: Literal["all_lines", "monitored"] = "monitored"
    drugs: list[str] = Field(default_factory=list)  # drug codes; empty = no restriction
    categories: list[DrugCategory] = Field(default_factory=list)  # empty = no restriction


class RuleDefinition(BaseModel):
    """One rule of the rule base (`rules/rules.yaml`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    version: int = Field(ge=1)
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    description: str = ""
    legal_basis_zh: str = ""
    scenes: list[Scene] = Field(min_length=1)
    severity: Severity
    parameters: dict[str, Any] = Field(default_factory=dict)
    effective_from: date
    effective_to: date | None = None
    enabled: bool = True
    region_overrides: dict[str, RegionOverride] = Field(default_factory=dict)
    applies_to: Applicability = Field(default_factory=Applicability)

    @field_validator("region_overrides")
    @classmethod
    def _region_codes(cls, value: dict[str, RegionOverride]) -> dict[str, RegionOverride]:
        for code in value:
            if not (len(code) == 6 and code.isdigit()):
                raise ValueError(f"region code {code!r} is not a 6-digit admdvs code")
        return value

    @model_validator(mode="after")
    def _dates(self) -> RuleDefinition:
        if self.effective_to is not None and self.effective_to < self.effective_from:
            raise ValueError("effective_to is before effective_from")
        return self

    def _override_for(self, admdvs: str | None) -> RegionOverride | None:
        """Most specific override: exact code, then city (4 digits), then province (2)."""
        if not admdvs or not self.region_overrides:
            return None
        if admdvs in self.region_overrides:
            return self.region_overrides[admdvs]
        for prefix_len, pad in ((4, "00"), (2, "0000")):
            code = admdvs[:prefix_len] + pad
            if code in self.region_overrides:
                return self.region_overrides[code]
        return None

    def params_for(self, admdvs: str | None) -> dict[str, Any]:
        override = self._override_for(admdvs)
        if override is None:
            return self.parameters
        return {**self.parameters, **override.parameters}

    def severity_for(self, admdvs: str | None) -> Severity:
        override = self._override_for(admdvs)
        return override.severity if override and override.severity else self.severity

    def active(self, on: date, admdvs: str | None = None) -> bool:
        first, last = self.window(admdvs)
        return first <= on <= last

    def window(self, admdvs: str | None = None) -> tuple[date, date]:
        """The first and last days the rule is active in a region (first after last: never)."""
        override = self._override_for(admdvs)
        enabled = override.enabled if override and override.enabled is not None else self.enabled
        if not enabled:
            return date.max, date.min
        return self.effective_from, self.effective_to or date.max


class KnowledgeBaseError(ValueError):
    """A knowledge-base file is invalid; the message names the file, entry and field."""

    def __init__(self, file: str, entry: str | None, field: str | None, message: str) -> None:
        self.file, self.entry, self.field, self.message = file, entry, field, message
        where = file + (f", entry {entry}" if entry else "") + (f", field {field}" if field else "")
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type[KnowledgeBaseError], tuple[str, str | None, str | None, str]]:
        """Picklable with its four parts (a worker process's error reaches the parent whole)."""
        return (KnowledgeBaseError, (self.file, self.entry, self.field, self.message))


def _raise_from_validation(file: str, entry: str, exc: ValidationError) -> None:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or None
    raise KnowledgeBaseError(file, entry, field, err["msg"]) from exc


RULES_DIR = Path(__file__).resolve().parent.parent.parent / "rules"


@dataclass(frozen=True)
class KnowledgeBase:
    """The loaded catalogue and rule base, with the phase that selects monitored drugs."""

    drugs: Mapping[str, Drug]  # every drug of the catalogue, by drug_code
    rules: Mapping[str, RuleDefinition]
    phase: Phase = Phase.FULL

    @cached_property
    def monitored(self) -> Mapping[str, Drug]:
        """The drugs monitored in the configured phase (earlier phases included)."""
        return {c: d for c, d in self.drugs.items() if d.phase.order <= self.phase.order}

    def drug(self, code: str) -> Drug | None:
        """The monitored drug for a national drug code, or None when not monitored."""
        return self.monitored.get(code)

    def rule(self, rule_id: str) -> RuleDefinition:
        return self.rules[rule_id]


def default_rules_dir() -> Path:
    """`rules/` beside the package: in the repo `<root>/rules`, in Lambda `/opt/rules`."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "rules", here.parent / "rules", here.parent.parent / "rules"):
        if (candidate / "rules.yaml").is_file():
            return candidate
    return RULES_DIR


def read_document(path: Path, parse: Callable[[str], Any], malformed: type[Exception], kind: str) -> Any:
    """The file at `path` parsed by `parse`; a missing, non-UTF-8 or malformed (`malformed`
    raised) file is a KnowledgeBaseError naming it, e.g. `not valid UTF-8 JSON: ...`."""
    name = str(path)
    try:
        return parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise KnowledgeBaseError(name, None, None, "file not found") from exc
    except (UnicodeDecodeError, malformed) as exc:
        raise KnowledgeBaseError(name, None, None, f"not valid UTF-8 {kind}: {exc}") from exc


def _entries_by_id[Entry: BaseModel](
    name: str, raw: Any, list_key: str, expected: str, model: type[Entry], id_field: str, duplicate: str
) -> dict[str, Entry]:
    """The entries of the list `raw[list_key]`, validated as `model` and keyed by `id_field`;
    errors name the file, the entry (its id, else `#n`) and the field."""
    entries = raw.get(list_key) if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise KnowledgeBaseError(name, None, list_key, f"expected {expected} with a '{list_key}' list")
    by_id: dict[str, Entry] = {}
    for i, entry in enumerate(entries):
        label = str(entry.get(id_field) or f"#{i + 1}") if isinstance(entry, dict) else f"#{i + 1}"
        try:
            item = model.model_validate(entry)
        except ValidationError as exc:
            _raise_from_validation(name, label, exc)
        key = getattr(item, id_field)
        if key in by_id:
            raise KnowledgeBaseError(name, label, id_field, duplicate)
        by_id[key] = item
    return by_id


def load_drugs(path: Path) -> dict[str, Drug]:
    raw = read_document(path, json.loads, json.JSONDecodeError, "JSON")
    return _entries_by_id(str(path), raw, "drugs", "an object", Drug, "drug_code", "duplicate drug_code")


def load_rules(path: Path) -> dict[str, RuleDefinition]:
    import yaml  # imported here: only loading the rule base needs it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    raw = read_document(path, lambda text: yaml.load(text, Loader=loader), yaml.YAMLError, "YAML")
    return _entries_by_id(str(path), raw, "rules", "a mapping", RuleDefinition, "id", "duplicate rule id")


def load_knowledge_base(rules_dir: Path | None = None, phase: Phase | str = Phase.FULL) -> KnowledgeBase:
    """Load and validate `drugs.json` and `rules.yaml`; check the phase has enough drugs."""
    directory = rules_dir or default_rules_dir()
    drugs = load_drugs(directory / "drugs.json")
    rules = load_rules(directory / "rules.yaml")
    kb = KnowledgeBase(drugs=drugs, rules=rules, phase=Phase(phase))
    for p, minimum in PHASE_MINIMUM.items():
        count = sum(1 for d in drugs.values() if d.phase.order <= p.order)
        if count < minimum:
            raise KnowledgeBaseError(
                str(directory / "drugs.json"), None, "phase", f"phase {p.value} has {count} drugs, needs >= {minimum}"
            )
    return kb


_CACHE: dict[tuple[str, str], KnowledgeBase] = {}


def get_knowledge_base(rules_dir: Path | None = None, phase: Phase | str = Phase.FULL) -> KnowledgeBase:
    """Cached `load_knowledge_base` (one load per process: Lambda cold start)."""
    directory = rules_dir or default_rules_dir()
    key = (str(directory), str(Phase(phase)))
    if key not in _CACHE:
        _CACHE[key] = load_knowledge_base(directory, phase)
    return _CACHE[key]


# --- import of a bureau's catalogue -------------------------------------------------

_CATEGORY_PRIORITY = {"controlled": 0, "misuse_prone": 1, "high_cost": 2, "resale_prone": 3}


def _split(value: str, sep: str = ";") -> list[str]:
    return [v.strip() for v in (value or "").split(sep) if v.strip()]


def _assign_phases(rows: list[dict[str, Any]]) -> None:
    """Phase by priority when the source has none: the riskiest 50 drugs form the pilot,
    the next 50 the provincial list, the rest join in the full phase. Stable order."""

    def priority(item: tuple[int, dict[str, Any]]) -> tuple[int, int, int]:
        index, row = item
        cats = row["categories"]
        best = min((_CATEGORY_PRIORITY.get(c, 9) for c in cats), default=9)
        return (best, -len(cats), index)

    ranked = sorted(enumerate(rows), key=priority)
    for rank, (_, row) in enumerate(ranked):
        if not row.get("phase"):
            row["phase"] = "pilot" if rank < 50 else "province" if rank < 100 else "full"


def import_catalogue(csv_path: Path, out_path: Path) -> list[Drug]:
    """Import a bureau's monitored-drug CSV (columns of rules/reference/README.md,
    optional `phase`) into `drugs.json`. Deterministic: the same CSV gives the same file."""
    name = str(csv_path)
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        rows: list[dict[str, Any]] = []
        for line_no, row in enumerate(reader, start=2):
            if None in row or any(v is None for v in row.values()):
                raise KnowledgeBaseError(name, f"line {line_no}", None, "row has a wrong number of columns")
            item: dict[str, Any] = {k: v.strip() for k, v in row.items()}
            item["categories"] = _split(item.get("categories", ""))
            item["restricted_indications"] = _split(item.get("restricted_indications", ""))
            for flag in ("chronic", "long_term_rx_eligible"):
                if item.get(flag) not in ("0", "1"):
                    raise KnowledgeBaseError(name, item.get("drug_code") or f"line {line_no}", flag, "must be 0 or 1")
                item[flag] = item[flag] == "1"
            item["_line"] = line_no
            rows.append(item)
    _assign_phases(rows)
    drugs: list[Drug] = []
    for item in rows:
        line_no = item.pop("_line")
        label = item.get("drug_code") or f"line {line_no}"
        try:
            drugs.append(Drug.model_validate(item))
        except ValidationError as exc:
            _raise_from_validation(name, label, exc)
    codes = [d.drug_code for d in drugs]
    if len(set(codes)) != len(codes):
        dup = next(c for c in codes if codes.count(c) > 1)
        raise KnowledgeBaseError(name, dup, "drug_code", "duplicate drug_code")
    payload = {
        "source": csv_path.name,
        "drugs": [d.model_dump(mode="json") for d in drugs],
    }
    out_path.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return drugs
