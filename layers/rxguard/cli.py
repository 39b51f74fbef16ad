"""`rxguard` command line. Each subcommand lives in its own module and parses its own
arguments, so the CLI stays a table of contents:

    rxguard run FILE... --out DIR     the main job: screen files against a persistent local state
                                      (--state DIR, default OUT/state; --simulate-aws: the ASL on moto)
    rxguard validate FILE...          ingestion only: accepted / rejected by reason
    rxguard kb import CSV             import a monitored-drug catalogue into rules/
    rxguard serve                     the check API over the local state (waitress)
    rxguard synth                     a synthetic population with ground truth
    rxguard eval                      detection quality on a synthetic population
    rxguard watch --state DIR         drug watch: candidates for the monitored list
    rxguard backtest --state DIR ...  a rule change (or each phase's list) tried on the stored history
    rxguard digest --findings F|--state DIR  daily or weekly digests per region and institution
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, function, one-line help); the function takes argv and returns an exit code
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": (
        "rxguard.cli",
        "run",
        "screen claim batches: rxguard run FILE... --out DIR [--state DIR] [--simulate-aws: the ASL on moto]",
    ),
    "validate": ("rxguard.ingest.cli", "main", "validate claim batches and summarise accepted/rejected lines"),
    "kb": ("rxguard.kb_cli", "main", "knowledge base: rxguard kb import CSV [--out rules/drugs.json]"),
    "serve": ("rxguard.offline.serve", "main", "serve the check API: rxguard serve [--state DIR | --simulate-aws]"),
    "synth": ("rxguard.synth.cli", "main", "generate a synthetic population with ground truth"),
    "eval": ("rxguard.offline.evaluate", "main", "precision/recall of the rules on a synthetic population"),
    "watch": ("rxguard.planning.cli", "watch_main", "rank drugs for the monitored list: rxguard watch --state DIR"),
    "backtest": (
        "rxguard.planning.cli",
        "backtest_main",
        "try rules on the stored history: rxguard backtest --state DIR --rules NEW.yaml | --phases",
    ),
    "digest": (
        "rxguard.digest_cli",
        "main",
        "daily/weekly digests per region and institution: rxguard digest --findings F|--state DIR --out DIR",
    ),
}


def run(argv: Sequence[str]) -> int:
    """`rxguard run`: the local deployment, or with --simulate-aws the real ASL on moto."""
    args = list(argv)
    if "--simulate-aws" in args:
        from rxguard.offline import cli as offline

        return offline.main([a for a in args if a != "--simulate-aws"])
    from rxguard.local import cli as local

    return local.main(args)


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: rxguard COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    # No X-Ray daemon runs beside a command (it is Lambda's): importing the X-Ray SDK would
    # cost ~0.5 s in this process and again in each worker server (rxguard.observability).
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"rxguard: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    func: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
