"""The stored history as the planning tools read it: a rule base overlaid with a bureau's
trial rules, lines re-resolved against another phase's list, and the whole history
streamed from the local state one group of patients or trace codes at a time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rxguard.kb import KnowledgeBase, KnowledgeBaseError, Phase, RuleDefinition, read_document
from rxguard.local.state import State
from rxguard.models import ClaimLine
from rxguard.repository import TraceSale

READ_GROUP = 500  # patients (or trace codes) per read: one query each


def overlay_rules(kb: KnowledgeBase, path: Path) -> KnowledgeBase:
    """`kb` with the rules of the YAML file at `path` laid over it: a rule the file names is
    its definition merged over today's (parameters and region overrides merged key by key,
    other fields replaced); a rule it does not name stays as it is; a new id is added whole.
    Errors name the file, rule and field, as `rxguard.kb.load_rules` does."""
    import yaml

    raw = read_document(path, yaml.safe_load, yaml.YAMLError, "YAML")
    return overlay_rule_entries(kb, raw, str(path))


def overlay_rule_entries(kb: KnowledgeBase, raw: Any, name: str = "rules") -> KnowledgeBase:
    """`overlay_rules` on an already parsed document (`{"rules": [...]}`), e.g. an API body."""
    entries = raw.get("rules") if isinstance(raw, Mapping) else None
    if not isinstance(entries, list):
        raise KnowledgeBaseError(name, None, "rules", "expected a mapping with a 'rules' list")
    rules: dict[str, RuleDefinition] = dict(kb.rules)
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            raise KnowledgeBaseError(name, f"#{i + 1}", "id", "each rule needs an id")
        rule_id = entry["id"]
        base = rules[rule_id].model_dump(mode="json") if rule_id in rules else {}
        merged = {**base, **entry}
        for key in ("parameters", "region_overrides"):
            if isinstance(base.get(key), Mapping) and isinstance(entry.get(key), Mapping):
                merged[key] = {**base[key], **entry[key]}
        try:
            rules[rule_id] = RuleDefinition.model_validate(merged)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err.get("loc", ())) or None
            raise KnowledgeBaseError(name, rule_id, field, err.get("msg", str(exc))) from exc
    return KnowledgeBase(drugs=kb.drugs, rules=rules, phase=kb.phase)


def with_phase(kb: KnowledgeBase, phase: Phase | str) -> KnowledgeBase:
    return KnowledgeBase(drugs=kb.drugs, rules=kb.rules, phase=Phase(phase))


def resolve(line: ClaimLine, kb: KnowledgeBase) -> ClaimLine:
    """The line with its knowledge-base facts (monitored, ATC, minimum units, days of
    supply) resolved against `kb`, as ingestion resolves them (rxguard.ingest.normalize)."""
    drug = kb.drug(line.med_list_codg)
    if drug is None:
        if not line.monitored:
            return line
        return line.model_copy(
            update={"monitored": False, "atc_code": None, "days_supply": None, "quantity_units": line.cnt}
        )
    units = line.cnt if line.trdn_flag else line.cnt * drug.units_per_pack
    days = drug.days_supply(units)
    if line.monitored and line.atc_code == drug.atc_code and line.days_supply == days and line.quantity_units == units:
        return line
    return line.model_copy(
        update={"monitored": True, "atc_code": drug.atc_code, "days_supply": days, "quantity_units": units}
    )


def patient_partition(state: State, part: int, parts: int) -> list[str]:
    """The patients of one of `parts` partitions (by the last character of the number)."""
    rows = state.read(
        "SELECT DISTINCT psn_no FROM lines WHERE unicode(substr(psn_no, -1)) % ? = ? ORDER BY psn_no", (parts, part)
    )
    return [r[0] for r in rows]


def iter_timelines(
    state: State, patients: list[str], kb: KnowledgeBase | None = None
) -> Iterator[tuple[str, list[ClaimLine]]]:
    """(patient, time-ordered lines) for each patient, read `READ_GROUP` patients a query;
    lines re-resolved against `kb` when given."""
    repo = state.repository()
    for start in range(0, len(patients), READ_GROUP):
        group = patients[start : start + READ_GROUP]
        history = repo.load_history(group)
        for psn in group:
            lines = history.get(psn, [])
            yield psn, [resolve(x, kb) for x in lines] if kb is not None else lines


def shared_codes(state: State) -> list[str]:
    """Trace codes sold on more than one line: the only ones a cross-line rule can judge."""
    rows = state.read("SELECT code FROM trace_sales GROUP BY code HAVING count(DISTINCT line_id) > 1 ORDER BY code")
    return [r[0] for r in rows]


def iter_trace_sales(state: State, codes: list[str]) -> Iterator[tuple[str, list[TraceSale]]]:
    repo = state.repository()
    for start in range(0, len(codes), READ_GROUP):
        group = codes[start : start + READ_GROUP]
        sales = repo.load_trace_sales(group)
        for code in group:
            yield code, sales.get(code, [])
