"""`rxguard eval`: detection quality of the rules on a synthetic population.

    rxguard eval [--patients N --seed S --months M] [--engine | --workflow] [--json FILE] [--keep DIR]

Generates a population (rxguard_tools.synth), screens it, and compares the findings with the
ground truth in labels.json:

- patient rules (over-quantity ... indication-mismatch): patient level. A patient is
  flagged for a rule when a finding of that rule at medium or high severity names it
  (low is informational). Positives: the abusive patients whose label lists the rule.
- trace-code-reuse: code level. A code is flagged when a medium/high finding is about it;
  positives: the codes the generator made reappear (labels.json trace_codes.reused).
- institution-outlier: institution and prescriber level (labels.json institutions,
  prescribers: outlier true/false).
- legitimate patients flagged: distinct legitimate patients named by any patient
  finding, at medium/high and (separately) at low only.

Paths: `--workflow` runs the whole offline workflow (rxguard_tools.offline on moto: S3, Step
Functions, Lambda handlers, DynamoDB) on the monthly claim files, one batch per month;
`--engine` screens the same files with rxguard.screening on an InMemoryRepository
(month by month, then institution-outlier from the lines and findings). The default is
the workflow when rxguard_tools.offline is importable, else the engine (with a note).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from rxguard import screening
from rxguard.config import Settings
from rxguard.engine.rules import PATIENT_RULES, RULE_IDS
from rxguard.ingest import read_batch
from rxguard.kb import KnowledgeBase, get_knowledge_base
from rxguard.models import ClaimLine, patient_chunks
from rxguard.repository import InMemoryRepository
from rxguard.scope import Scope
from rxguard_tools.synth.generator import SynthConfig, generate
from rxguard_tools.synth.output import write_population

ALL_RULES = (*PATIENT_RULES, *(r for r in RULE_IDS if r not in PATIENT_RULES))
TARGET = 0.97
FLAGGING = ("medium", "high")


# --- screening ------------------------------------------------------------------------


def read_lines(files: Sequence[Path], kb: KnowledgeBase) -> tuple[list[list[Any]], Counter[str]]:
    """ClaimLines of each file (through the ingestion the workflow uses), and rejections by reason."""
    batches: list[list[Any]] = []
    rejected: Counter[str] = Counter()
    for path in files:
        lines: list[Any] = []
        for item in read_batch(path, kb):
            if isinstance(item, ClaimLine):
                lines.append(item)
            else:
                rejected[item.reason] += 1
        batches.append(lines)
    return batches, rejected


def run_engine(
    files: Sequence[Path], kb: KnowledgeBase, chunk_lines: int = 500
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Screen the files batch by batch, in patient chunks, with rxguard.screening on an InMemoryRepository."""
    started = time.perf_counter()
    batches, rejected = read_lines(files, kb)
    read_s = time.perf_counter() - started
    repo = InMemoryRepository()
    started = time.perf_counter()
    for lines in batches:
        for chunk in patient_chunks(lines, chunk_lines):
            screening.screen_lines(chunk, repo, kb)
    current = repo.all_current_findings()
    every_line = [line for lines in batches for line in lines]
    _, outliers = screening.institution_findings_from_lines(every_line, current, kb)
    screen_s = time.perf_counter() - started
    findings = [f.model_dump(mode="json") for f in [*current, *outliers]]
    info = {
        "path": "engine",
        "chunk_lines": chunk_lines,
        "lines": len(every_line),
        "rejected": dict(rejected),
        "read_seconds": round(read_s, 2),
        "screen_seconds": round(screen_s, 2),
        "lines_per_second": round(len(every_line) / screen_s) if screen_s else None,
    }
    return findings, info


# The offline workflow runs findings out of claim files (rxguard_tools.offline.evaluate.run_workflow);
# the harness sits above this package, so `rxguard eval` is handed it instead of importing it.
WorkflowRunner = Callable[[Sequence[Path], Path], tuple[list[dict[str, Any]], dict[str, Any]]]


# --- scoring --------------------------------------------------------------------------


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _trace_code(finding: dict[str, Any]) -> str | None:
    figures = finding.get("figures") or {}
    code = figures.get("trace_code") or figures.get("code")
    return str(code) if code else None


def _score(truth: set[str], flagged: set[str]) -> dict[str, Any]:
    tp, fp, fn = len(truth & flagged), len(flagged - truth), len(truth - flagged)
    return {
        "positives": len(truth),
        "flagged": len(flagged),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": _ratio(tp, tp + fp) if flagged else (1.0 if not truth else None),
        "recall": _ratio(tp, tp + fn),
    }


def score(findings: Iterable[dict[str, Any]], labels: dict[str, Any]) -> dict[str, Any]:
    """Per-rule precision and recall, legitimate patients flagged, and the misses."""
    patients: dict[str, Any] = labels["patients"]
    flagged: dict[str, set[str]] = defaultdict(set)  # rule -> subjects at medium/high
    low_only: dict[str, set[str]] = defaultdict(set)  # rule -> subjects at low
    legit_hits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    trace_patients: set[str] = set()
    for f in findings:
        rule, severity, kind = f["rule_id"], f["severity"], f["subject_type"]
        if kind == "patient":
            subject = f.get("psn_no")
            info = patients.get(subject or "")
            if info is not None and info["legitimate"]:
                legit_hits[subject or ""].append(f)
        elif kind == "trace_code":
            subject = _trace_code(f)
            if f.get("psn_no"):
                trace_patients.add(f["psn_no"])
        elif kind == "prescriber":
            subject = Scope.prescriber(str(f.get("bilg_dr_codg")))
        else:
            subject = Scope.institution(str(f.get("fixmedins_code")))
        if subject is None:
            continue
        (flagged if severity in FLAGGING else low_only)[rule].add(subject)
    for rule in flagged:
        low_only[rule] -= flagged[rule]

    truth: dict[str, set[str]] = {rule: set() for rule in ALL_RULES}
    for psn, info in patients.items():
        for rule in info["rules"]:
            truth[rule].add(psn)
    truth["trace-code-reuse"] = set(labels["trace_codes"]["reused"])
    truth["institution-outlier"] = {Scope.institution(c) for c, i in labels["institutions"].items() if i["outlier"]} | {
        Scope.prescriber(c) for c, i in labels["prescribers"].items() if i["outlier"]
    }

    rules: dict[str, Any] = {}
    misses: dict[str, Any] = {}
    for rule in ALL_RULES:
        s = _score(truth[rule], flagged[rule])
        s["level"] = (
            "patient"
            if rule in PATIENT_RULES
            else ("trace code" if rule == "trace-code-reuse" else "institution/prescriber")
        )
        s["low_only"] = len(low_only[rule])
        s["meets_target"] = (s["precision"] or 0) >= TARGET and (s["recall"] or 0) >= TARGET
        rules[rule] = s
        fps = sorted(flagged[rule] - truth[rule])
        fns = sorted(truth[rule] - flagged[rule])
        if fps or fns:
            misses[rule] = {
                "false_positives": [_describe(x, patients, rule in PATIENT_RULES) for x in fps],
                "false_negatives": [
                    {**_describe(x, patients, rule in PATIENT_RULES), "low": x in low_only[rule]} for x in fns
                ],
            }

    legit = {p for p, i in patients.items() if i["legitimate"]}
    high = {p for p, hits in legit_hits.items() if any(h["severity"] in FLAGGING for h in hits)}
    low = {p for p in legit_hits if p not in high}
    by_profile: dict[str, dict[str, int]] = defaultdict(lambda: {"patients": 0, "medium_high": 0, "low_only": 0})
    for p in legit:
        prof = patients[p]["profile"]
        by_profile[prof]["patients"] += 1
        by_profile[prof]["medium_high"] += p in high
        by_profile[prof]["low_only"] += p in low
    legit_rules: Counter[str] = Counter()
    legit_low_rules: Counter[str] = Counter()
    for hits in legit_hits.values():
        for h in hits:
            (legit_rules if h["severity"] in FLAGGING else legit_low_rules)[h["rule_id"]] += 1
    return {
        "rules": rules,
        "legitimate": {
            "patients": len(legit),
            "flagged_medium_high": len(high),
            "flagged_low_only": len(low),
            "findings_medium_high_by_rule": dict(sorted(legit_rules.items())),
            "findings_low_by_rule": dict(sorted(legit_low_rules.items())),
            "by_profile": {k: by_profile[k] for k in sorted(by_profile)},
            "in_trace_code_findings": len(trace_patients & legit),
        },
        "targets": {
            "precision_recall": TARGET,
            "every_rule_meets_target": all(r["meets_target"] for r in rules.values()),
            "no_legitimate_flagged": not high,
        },
        "misses": misses,
    }


def _describe(subject: str, patients: dict[str, Any], is_patient: bool) -> dict[str, Any]:
    if is_patient:
        info = patients.get(subject, {})
        return {
            "psn_no": subject,
            "profile": info.get("profile"),
            "labelled_rules": info.get("rules"),
            "notes": info.get("notes"),
        }
    return {"subject": subject}


# --- report ---------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def format_table(result: dict[str, Any]) -> str:
    rows = [
        f"{'rule':<26} {'level':<23} {'pos':>5} {'flag':>5} {'TP':>5} {'FP':>4} {'FN':>4} "
        f"{'prec':>6} {'recall':>6}  target",
        "-" * 98,
    ]
    for rule, s in result["rules"].items():
        rows.append(
            f"{rule:<26} {s['level']:<23} {s['positives']:>5} {s['flagged']:>5} {s['tp']:>5} {s['fp']:>4} "
            f"{s['fn']:>4} {_fmt(s['precision']):>6} {_fmt(s['recall']):>6}  {'met' if s['meets_target'] else 'MISSED'}"
        )
    legit = result["legitimate"]
    rows += [
        "-" * 98,
        f"legitimate patients: {legit['patients']}; flagged at medium/high: {legit['flagged_medium_high']}; "
        f"at low only (informational): {legit['flagged_low_only']}",
    ]
    if legit["findings_medium_high_by_rule"]:
        rows.append(
            "  medium/high findings on legitimate patients by rule: "
            + ", ".join(f"{k} {v}" for k, v in legit["findings_medium_high_by_rule"].items())
        )
        worst = [f"{k} {v['medium_high']}/{v['patients']}" for k, v in legit["by_profile"].items() if v["medium_high"]]
        rows.append("  by legitimate profile: " + ", ".join(worst))
    if legit["findings_low_by_rule"]:
        rows.append(
            "  low findings on legitimate patients by rule: "
            + ", ".join(f"{k} {v}" for k, v in legit["findings_low_by_rule"].items())
        )
    t = result["targets"]
    rows.append(
        f"targets (precision and recall >= {t['precision_recall']} on every rule, no legitimate patient flagged): "
        + ("MET" if t["every_rule_meets_target"] and t["no_legitimate_flagged"] else "NOT MET")
    )
    for rule, m in result["misses"].items():
        fp = Counter(x.get("profile") or x.get("subject") for x in m["false_positives"])
        fn = Counter(x.get("profile") or x.get("subject") for x in m["false_negatives"])
        parts = []
        if fp:
            parts.append("false positives: " + ", ".join(f"{k} x{v}" for k, v in sorted(fp.items(), key=str)))
        if fn:
            parts.append("missed: " + ", ".join(f"{k} x{v}" for k, v in sorted(fn.items(), key=str)))
        rows.append(f"  {rule}: " + "; ".join(parts))
    return "\n".join(rows)


def evaluate(
    config: SynthConfig,
    kb: KnowledgeBase,
    *,
    path: str,
    work_dir: Path,
    run_workflow: WorkflowRunner | None = None,
) -> dict[str, Any]:
    """Generate, screen and score; returns the whole result (what --json writes)."""
    started = time.perf_counter()
    population = generate(config, kb)
    files = write_population(population, work_dir / "population", fmt="csv")
    gen_s = time.perf_counter() - started
    if path == "workflow":
        if run_workflow is None:
            raise ValueError("evaluate: path 'workflow' needs run_workflow (rxguard_tools.offline.evaluate)")
        findings, info = run_workflow(files, work_dir / "run")
    else:
        findings, info = run_engine(files, kb)
    result = score(findings, population.labels)
    counts = population.labels["counts"]
    return {
        "generated_on": date.today().isoformat(),
        "population": {
            "patients": counts["patients"],
            "seed": config.seed,
            "months": config.months,
            "lines": counts["lines"],
            "monitored_lines": counts["monitored_lines"],
            "trace_codes": counts["trace_codes"],
            "profiles": counts["profiles"],
            "generate_seconds": round(gen_s, 1),
        },
        "screening": info,
        "findings": len(findings),
        "findings_by_rule": dict(sorted(Counter(f["rule_id"] for f in findings).items())),
        **result,
    }


def main(argv: Sequence[str] | None = None, *, workflow: WorkflowRunner | None = None) -> int:
    """`rxguard eval`; `workflow` runs the offline workflow (given by rxguard_tools.offline.evaluate)."""
    parser = argparse.ArgumentParser(prog="rxguard eval", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--patients", type=int, default=None, help="population size (default 3000 with --engine, 1000 on the workflow)"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--months", type=int, default=6, help="calendar months (default 6)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--engine", action="store_true", help="screen with rxguard.screening in memory")
    mode.add_argument("--workflow", action="store_true", help="run the offline workflow on moto (default if present)")
    parser.add_argument("--json", type=Path, help="write the whole result as JSON to this file")
    parser.add_argument("--keep", type=Path, help="keep the population and workflow output in this directory")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    kb = get_knowledge_base(settings.rules_dir, settings.phase)
    if args.engine:
        path = "engine"
    elif workflow is not None:
        path = "workflow"
    elif args.workflow:
        parser.error(
            "--workflow runs through `rxguard eval` (rxguard_tools.offline.evaluate), which has the offline harness"
        )
    else:
        path = "engine"
        print(
            "note: rxguard_tools.offline is not available; screening with the engine in memory instead", file=sys.stderr
        )
    patients = args.patients or (3000 if path == "engine" else 1000)
    config = SynthConfig(patients=patients, seed=args.seed, months=args.months)
    print(f"rxguard eval: {patients} patients, seed {args.seed}, {args.months} months, path: {path}", file=sys.stderr)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = evaluate(config, kb, path=path, work_dir=args.keep, run_workflow=workflow)
    else:
        with tempfile.TemporaryDirectory(prefix="rxguard-eval-") as tmp:
            result = evaluate(config, kb, path=path, work_dir=Path(tmp), run_workflow=workflow)
    pop, scr = result["population"], result["screening"]
    print(
        f"population: {pop['patients']} patients, {pop['lines']} lines ({pop['monitored_lines']} monitored, "
        f"{pop['trace_codes']} trace codes); {result['findings']} findings; screening: {scr}"
    )
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
