"""`rxguard kb import CSV [--out FILE]`: import a bureau's monitored-drug catalogue.

`rxguard kb check [--phase P]`: load and validate rules/ and print what is monitored.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from rxguard.kb import KnowledgeBaseError, Phase, default_rules_dir, import_catalogue, load_knowledge_base


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rxguard kb")
    sub = parser.add_subparsers(dest="action", required=True)
    imp = sub.add_parser("import", help="import a monitored-drug CSV into the catalogue")
    imp.add_argument("csv", type=Path)
    imp.add_argument("--out", type=Path, default=default_rules_dir() / "drugs.json")
    chk = sub.add_parser("check", help="validate rules/ and summarise it")
    chk.add_argument("--phase", choices=[p.value for p in Phase], default=Phase.FULL.value)
    chk.add_argument("--rules-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.action == "import":
            drugs = import_catalogue(args.csv, args.out)
            phases = Counter(d.phase.value for d in drugs)
            print(
                f"imported {len(drugs)} drugs from {args.csv} into {args.out} "
                f"(pilot {phases['pilot']}, province {phases['province']}, full {phases['full']})"
            )
            load_knowledge_base(args.out.parent)  # the result must load
            return 0
        kb = load_knowledge_base(args.rules_dir, args.phase)
        print(
            f"{len(kb.drugs)} drugs in the catalogue, {len(kb.monitored)} monitored in phase {kb.phase.value}; "
            f"{len(kb.rules)} rules: {', '.join(kb.rules)}"
        )
        return 0
    except KnowledgeBaseError as exc:
        print(f"rxguard kb: {exc}", file=sys.stderr)
        return 1
