"""`rxguard` command line. Each subcommand lives in its own module and parses its own
arguments, so the CLI stays a table of contents:

    rxguard run FILE... --out DIR     the main job: screen files against a persistent local state
                                      (--state DIR, default OUT/state; --simulate-aws: the ASL on moto)
    rxguard validate FILE...          ingestion only: accepted / rejected by reason
    rxguard kb import CSV             import a monitored-drug catalogue into rules/
    rxguard serve                     the check API over the local state (uvicorn)
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
from typing import NamedTuple


class Command(NamedTuple):
    target: str  # "module:function" below rxguard_tools; the function takes argv and returns an exit code
    help: str  # one line


COMMANDS: dict[str, Command] = {
    "run": Command(
        "cli:run", "screen claim batches: FILE... --out DIR [--state DIR] [--simulate-aws: the ASL on moto]"
    ),
    "validate": Command("validate_cli:main", "validate claim batches and summarise accepted/rejected lines"),
    "kb": Command("kb_cli:main", "knowledge base: rxguard kb import CSV [--out rules/drugs.json]"),
    "serve": Command("offline.serve:main", "serve the check API: rxguard serve [--state DIR | --simulate-aws]"),
    "synth": Command("synth.cli:main", "generate a synthetic population with ground truth"),
    "eval": Command("offline.evaluate:main", "precision/recall of the rules on a synthetic population"),
    "watch": Command("planning_cli:watch_main", "rank drugs for the monitored list: rxguard watch --state DIR"),
    "backtest": Command(
        "planning_cli:backtest_main", "try rules on the history: --state DIR --rules NEW.yaml|--phases"
    ),
    "digest": Command(
        "digest_cli:main", "daily/weekly digests by region and institution: --findings F|--state DIR --out DIR"
    ),
}


def run(argv: Sequence[str]) -> int:
    """`rxguard run`: the local deployment, or with --simulate-aws the real ASL on moto."""
    args = list(argv)
    if "--simulate-aws" in args:
        from rxguard_tools.offline import cli as offline

        return offline.main([a for a in args if a != "--simulate-aws"])
    if _workers(args) != 1 and not {"-h", "--help"} & set(args):
        from rxguard.local.workers import start_early

        start_early()  # the worker server imports the domain while this process does
    from rxguard_tools import local_cli as local

    return local.main(args)


def _workers(args: Sequence[str]) -> int | None:
    """The `--workers N` of a run's arguments (None when absent or unreadable: local_cli says why)."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("--workers", type=int)
    try:
        workers: int | None = parser.parse_known_args(list(args))[0].workers
    except (argparse.ArgumentError, SystemExit):
        return None
    return workers


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: rxguard COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {command.help}" for name, command in COMMANDS.items()]
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
    module_name, func_name = COMMANDS[name].target.split(":")
    func: Callable[[list[str]], int] = getattr(importlib.import_module(f"rxguard_tools.{module_name}"), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
