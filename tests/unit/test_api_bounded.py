"""Bounded answers (issue 13): a hit lists at most 5 evidence lines, the line it answers and
the trigger lines first, with the total; a 200-line check answers in under 1 MB."""

from __future__ import annotations

import json

from bench.history import answer_size
from rxguard.api.service import EVIDENCE_CAP, capped


def test_capped_keeps_the_line_answered_and_the_triggers_first() -> None:
    ids = [f"P1/{i:04d}" for i in range(50)]
    kept = capped(ids, first=["P1/0007", "P1/0003", "P9/not-evidence"])
    assert len(kept) == EVIDENCE_CAP and kept == sorted(kept)
    assert {"P1/0007", "P1/0003"} <= set(kept) and "P9/not-evidence" not in kept
    assert "P1/0049" in kept  # then the most recent
    assert capped(ids[:3], first=["P1/0001"]) == ids[:3]  # short lists are kept whole


def test_a_200_line_check_against_a_heavy_history_answers_in_under_1_mb(kb) -> None:  # type: ignore[no-untyped-def]
    # Given 960 history lines where nearly every purchase is flagged, and 200 proposed lines of 20 drugs
    result = answer_size(kb, history_lines=960, proposed=200, drugs=20)
    # Then the answer is complete (200) yet below 1 MB, with at most 5 evidence lines a hit
    assert result["status"] == 200
    assert result["bytes"] < 1_000_000
    assert result["evidence_entries"] <= 200 * 4 * EVIDENCE_CAP
    assert result["cpu_ms"] < 20_000  # the next-fill search re-checks one ingredient, once per fill
    assert json.dumps(result)
