"""`rxguard validate FILE...`: ingestion only. Per file: format, encoding, lines read,
accepted, rejected by reason, and the first rejections as `file:line field reason`.

Exit status 1 only when a file is rejected whole (missing, empty, binary, no header,
not JSON); bad lines inside a good file are the normal business of validation.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rxguard.config import Settings
from rxguard.ingest import read_batch
from rxguard.kb import get_knowledge_base
from rxguard.models import Rejection


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rxguard validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--show", type=int, default=5, help="rejections listed per file (default 5)")
    parser.add_argument("--default-admdvs", help="region of lines without admdvs (6 digits)")
    parser.add_argument("--phase", choices=["pilot", "province", "full"], help="monitored-drug list")
    parser.add_argument("--json", action="store_true", help="one JSON summary per file instead of text")
    return parser


def _where(r: Rejection) -> str:
    return f"{r.file}:{r.line if r.line is not None else '-'}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    settings = Settings.from_env()
    kb = get_knowledge_base(settings.rules_dir, args.phase or settings.phase)
    default_admdvs = args.default_admdvs or settings.default_admdvs
    if default_admdvs is not None and not (len(default_admdvs) == 6 and default_admdvs.isdigit()):
        print(
            f"rxguard validate: --default-admdvs must be a 6-digit region code, not {default_admdvs!r}", file=sys.stderr
        )
        return 2
    failed = 0
    totals = {"lines_read": 0, "accepted": 0, "rejected": 0}
    for path in args.files:
        reader = read_batch(path, kb, name=str(path), default_admdvs=default_admdvs)
        shown: list[Rejection] = []
        for item in reader:
            if isinstance(item, Rejection) and len(shown) < args.show:
                shown.append(item)
        for key in totals:
            totals[key] += getattr(reader, key)
        if reader.file_error is not None:
            failed += 1
        if args.json:
            print(
                json.dumps(
                    {
                        "file": str(path),
                        "format": reader.format,
                        "encoding": reader.encoding,
                        "lines_read": reader.lines_read,
                        "accepted": reader.accepted,
                        "rejected": reader.rejected,
                        "rejected_by_reason": dict(sorted(reader.rejected_by_reason.items())),
                        "file_error": reader.file_error.model_dump(mode="json") if reader.file_error else None,
                        "first_rejections": [r.model_dump(mode="json") for r in shown],
                    },
                    ensure_ascii=False,
                )
            )
            continue
        print(f"{path}")
        if reader.file_error is not None:
            print(f"  REJECTED WHOLE ({reader.file_error.reason}): {reader.file_error.message}")
            continue
        print(f"  format {reader.format}, encoding {reader.encoding}")
        print(f"  lines read {reader.lines_read}, accepted {reader.accepted}, rejected {reader.rejected}")
        for reason, count in sorted(reader.rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"    {reason:<20} {count}")
        for r in shown:
            print(f"  {_where(r)} {r.field or '-'} {r.reason}: {r.message}")
        if reader.rejected > len(shown):
            print(f"  ... {reader.rejected - len(shown)} more rejection(s)")
    if not args.json and len(args.files) > 1:
        print(
            f"total: {len(args.files)} file(s), lines read {totals['lines_read']}, accepted {totals['accepted']}, "
            f"rejected {totals['rejected']}, files rejected whole {failed}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
