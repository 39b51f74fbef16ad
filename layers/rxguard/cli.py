"""`rxguard` command line. Each subcommand lives in its own module and parses its own
arguments, so the CLI stays a table of contents:

    rxguard run FILE... --out DIR     the whole workflow offline (moto), the main job
    rxguard validate FILE...          ingestion only: accepted / rejected by reason
    rxguard kb import CSV             import a monitored-drug catalogue into rules/
    rxguard serve                     the check API on localhost over moto
    rxguard synth                     a synthetic population with ground truth
    rxguard eval                      detection quality on a synthetic population
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, function, one-line help); the function takes argv and returns an exit code
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("rxguard.offline.cli", "main", "run the whole workflow offline on moto: rxguard run FILE... --out DIR"),
    "validate": ("rxguard.ingest.cli", "main", "validate claim batches and summarise accepted/rejected lines"),
    "kb": ("rxguard.kb_cli", "main", "knowledge base: rxguard kb import CSV [--out rules/drugs.json]"),
    "serve": ("rxguard.offline.serve", "main", "serve the check API on localhost over moto"),
    "synth": ("rxguard.synth.cli", "main", "generate a synthetic population with ground truth"),
    "eval": ("rxguard.offline.evaluate", "main", "precision/recall of the rules on a synthetic population"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: rxguard COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
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
