"""What `rxguard run` prints of the findings, the same for the local runtime and for
`--simulate-aws`: findings per rule and severity, the first findings with psn_no masked."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rxguard.texttable import table

SEVERITIES = ["high", "medium", "low"]
SHOWN = 5  # the findings the summary shows in full, most severe first
_RANK = {severity: i for i, severity in enumerate(SEVERITIES)}


def most_severe_first(finding: Mapping[str, Any]) -> tuple[int, str]:
    """The order in which the summary shows findings: by severity, then by id."""
    return _RANK.get(str(finding["severity"]), len(SEVERITIES)), str(finding["finding_id"])


def mask_psn(psn_no: str | None) -> str:
    """First 2 + *** + last 2 (short numbers entirely masked)."""
    if not psn_no:
        return "-"
    return psn_no[:2] + "***" + psn_no[-2:] if len(psn_no) >= 8 else "***"


def findings_tables(findings: Sequence[Mapping[str, Any]], title: str, first: int = SHOWN) -> list[str]:
    """A table of the findings per rule and severity under `title`, then the `first` most
    severe (psn_no masked)."""
    matrix: Counter[tuple[str, str]] = Counter((str(f["rule_id"]), str(f["severity"])) for f in findings)
    lines = ["", title]
    lines += table(
        [
            [rule, *[matrix[(rule, s)] or "" for s in SEVERITIES], sum(matrix[(rule, s)] for s in SEVERITIES)]
            for rule in sorted({rule for rule, _ in matrix})
        ],
        ["rule", *SEVERITIES, "total"],
    )
    top = sorted(findings, key=most_severe_first)[:first]
    if top:
        lines += ["", "First findings (psn_no masked)"]
        lines += table(
            [
                [
                    f["severity"],
                    f["rule_id"],
                    mask_psn(f.get("psn_no")),
                    f.get("fixmedins_code") or "-",
                    str(f.get("explanation_en") or "")[:70],
                ]
                for f in top
            ],
            ["severity", "rule", "patient", "institution", "explanation"],
        )
    return lines
