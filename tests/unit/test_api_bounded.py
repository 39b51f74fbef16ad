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


def test_a_200_line_check_of_one_drug_answers_in_under_1_mb(kb) -> None:  # type: ignore[no-untyped-def]
    # Given the same heavy history and 200 proposed lines cycling over its 3 drugs: every line of
    # a drug carries every finding of that drug (11 findings named 734 times)
    result = answer_size(kb, history_lines=960, proposed=200, drugs=3)
    # Then the answer is complete yet below 1 MB (it was 1.12 MB with each finding repeated whole)
    assert result["status"] == 200 and result["proposed_lines"] == 200
    assert result["bytes"] < 1_000_000


def test_a_finding_on_several_lines_is_explained_once_and_referenced_after(kb) -> None:  # type: ignore[no-untyped-def]
    # Given a refill history and a check of three lines of the drug refilled early
    from datetime import datetime

    from bench.history import DRUGS, SHOPS, history
    from rxguard.api.resolver import handle
    from rxguard.api.serve import proxy_event
    from rxguard.api.service import Services
    from rxguard.api.settings import ApiSettings
    from rxguard.api.store import InMemoryFindingsStore
    from rxguard.repository import InMemoryRepository
    from rxguard.screening import screen_lines

    repo = InMemoryRepository()
    lines = history(kb, 60, start=datetime(2026, 1, 1))
    screen_lines(lines, repo, kb)
    svc = Services(kb=kb, repo=repo, store=InMemoryFindingsStore(repo), settings=ApiSettings(auth_mode="open"))
    at = max(line.fee_ocur_time for line in lines)
    body = {
        "psn_no": lines[0].psn_no,
        "fixmedins_code": SHOPS[0],
        "admdvs": "310101",
        "med_type": "41",
        "fee_ocur_time": f"{at:%Y-%m-%d %H:%M:%S}",
        "lines": [{"feedetl_sn": f"CHK{i}", "med_list_codg": DRUGS[0], "cnt": 1, "pric": 10.0} for i in range(3)],
    }
    answer = handle(proxy_event("POST", "/v1/checks", {}, json.dumps(body)), None, svc)
    assert answer["statusCode"] == 200, answer
    checked = json.loads(answer["body"])["lines"]
    # Then a finding named by several lines is given whole on its first line only
    first_seen: dict[str, str] = {}
    repeated = 0
    for line in checked:
        for hit in line["hits"]:
            owner = first_seen.setdefault(hit["finding_id"], line["line_id"])
            if owner == line["line_id"]:
                assert hit["details_in"] is None and hit["explanation_zh"] and hit["figures"] is not None
            else:
                # And later lines keep their own decision, evidence and advice, and name where the rest is
                repeated += 1
                assert hit["details_in"] == owner
                assert hit["explanation_zh"] is None and hit["figures"] is None and hit["mitigations"] is None
                assert line["line_id"] in hit["evidence"] and hit["decision"] and hit["severity"]
    assert repeated > 0
