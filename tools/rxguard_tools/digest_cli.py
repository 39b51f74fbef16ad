"""`rxguard digest`: daily or weekly digests per region and per institution, locally.

    rxguard digest --findings out/findings.jsonl --cadence daily --on 2026-03-05 --out out/digests
    rxguard digest --state out/state --cadence weekly --on 2026-03-05 --out out/digests

Reads the current findings (the run's findings.jsonl, or the local state), builds the
digests of the day or ISO week holding `--on` (default: yesterday / last week) and writes
each as `<out>/<daily|weekly>/<period>/<scope>-<key>.json` (the message: body, attributes)
and `.txt` (the Chinese text an email subscriber reads). On AWS the DigestFunction does the
same on a schedule and publishes on the alerts topic (docs/alerts.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from rxguard.alerts.digests import periodic_digests, previous
from rxguard.alerts.messages import readable
from rxguard.alerts.settings import AlertSettings, AlertSettingsError
from rxguard.kb import get_knowledge_base
from rxguard.models import Finding


def _findings_file(path: Path) -> list[Finding]:
    out = []
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            out.append(Finding.model_validate_json(text))
        except ValueError as exc:
            raise SystemExit(f"rxguard digest: {path}, line {n}: not a finding: {str(exc).splitlines()[0]}") from exc
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rxguard digest", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--findings", type=Path, help="findings.jsonl of a run")
    source.add_argument("--state", type=Path, help="the local state directory of rxguard run")
    parser.add_argument("--cadence", choices=("daily", "weekly"), default="daily")
    parser.add_argument("--on", type=date.fromisoformat, default=None, help="a day of the period (YYYY-MM-DD)")
    parser.add_argument("--by", default="region,institution", help="region, institution or both (comma)")
    parser.add_argument("--region-digits", type=int, choices=(2, 4, 6), default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        settings = AlertSettings.from_env()
    except AlertSettingsError as exc:
        print(f"rxguard digest: {exc}", file=sys.stderr)
        return 2
    if args.findings is not None:
        findings = _findings_file(args.findings)
    else:
        from rxguard.local.state import State

        with State.open(args.state) as state:
            findings = state.repository().all_current_findings()
    by = tuple(part.strip() for part in args.by.split(",") if part.strip())
    unknown = set(by) - {"region", "institution"}
    if unknown:
        print(f"rxguard digest: --by: unknown {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    on = args.on or previous(args.cadence, date.today())
    messages = periodic_digests(
        findings,
        cadence=args.cadence,
        on=on,
        kb=get_knowledge_base(),
        settings=settings,
        by=by,
        region_digits=args.region_digits,
    )
    for message in messages:
        target = args.out / f"{message.message_id.removeprefix('digest/')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        payload = {"message_id": message.message_id, "attributes": message.attributes, "body": message.body}
        target.with_suffix(".json").write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
        subject, email, _ = readable(message)
        target.with_suffix(".txt").write_text(f"{subject}\n\n{email}\n", encoding="utf-8")
    print(f"rxguard digest: {len(messages)} {args.cadence} digest(s) of {on.isoformat()} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
