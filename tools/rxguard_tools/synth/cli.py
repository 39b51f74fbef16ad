"""`rxguard synth --patients N --seed S --out DIR [--months M] [--format csv|jsonl]`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from rxguard.config import Settings
from rxguard.kb import KnowledgeBaseError, get_knowledge_base
from rxguard_tools.synth.generator import SynthConfig, generate
from rxguard_tools.synth.output import write_population


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rxguard synth",
        description="Generate a synthetic population of claim lines with ground-truth labels (labels.json).",
    )
    parser.add_argument("--patients", type=int, default=1000, help="number of insured persons (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same files")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--months", type=int, default=6, help="calendar months of claims (default 6)")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2026, 1, 1), help="first month (YYYY-MM-01)")
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="claim file format (default csv)")
    parser.add_argument("--single-file", action="store_true", help="one claim file instead of one per month")
    parser.add_argument("--abusive-share", type=float, default=0.08, help="share of abusive patients (default 0.08)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.patients < 1 or not 1 <= args.months <= 24 or not 0 <= args.abusive_share < 1:
        print("rxguard synth: --patients >= 1, --months 1..24, --abusive-share in [0, 1)", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    try:
        kb = get_knowledge_base(settings.rules_dir, settings.phase)
    except KnowledgeBaseError as exc:
        print(f"rxguard synth: {exc}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    config = SynthConfig(
        patients=args.patients,
        seed=args.seed,
        months=args.months,
        start=args.start.replace(day=1),
        abusive_share=args.abusive_share,
    )
    population = generate(config, kb)
    files = write_population(population, args.out, fmt=args.format, split="none" if args.single_file else "month")
    counts = population.labels["counts"]
    print(
        f"{counts['lines']} lines ({counts['monitored_lines']} monitored, {counts['trace_codes']} trace codes, "
        f"{counts['trace_codes_per_monitored_line']} a monitored line), {counts['patients']} patients "
        f"({counts['abusive']} abusive), {len(files)} file(s) in {args.out} "
        f"in {time.perf_counter() - started:.1f} s; ground truth in {args.out / 'labels.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
