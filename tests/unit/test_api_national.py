"""The national platform's language with the real engine over the in-memory store:
3101 `rule_ids` (ours and the platform's codes) and `trig_scen` honoured, `sev_deg` and
`vola_bhvr_type` from rules/national.yaml, a jr_id fetched with GET, 3103 dispositions
(a reason required to continue) counted per rule, and what a dispenser acts on: the day
the fill would pass and the fill it is compared with."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rxguard import screening
from rxguard.api import nhsa
from rxguard.api.resolver import handle
from rxguard.api.service import Services
from rxguard.api.settings import ApiSettings
from rxguard.api.store import InMemoryFindingsStore
from rxguard.kb import KnowledgeBase
from rxguard.repository import InMemoryRepository
from tests.conftest import load_event

PSN = "SYN0000000031"
METFORMIN = "XA10BA02A001"
OSELTAMIVIR = "XJ05AH02A001"


def make(kb: KnowledgeBase, checker: Any = None) -> Services:
    repo = InMemoryRepository()
    extra = {"check_lines": checker} if checker else {}
    return Services(
        kb=kb,
        repo=repo,
        store=InMemoryFindingsStore(repo),
        settings=ApiSettings(auth_mode="open"),
        clock=lambda: datetime(2026, 3, 5, 10, 0),
        **extra,
    )


def request(svc: Services, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    event = load_event("api/check.json" if body is not None else "api/rules.json")
    event.update(httpMethod=method, path=path, resource=path, queryStringParameters=None)
    event["multiValueQueryStringParameters"] = None
    event["requestContext"] = {**event["requestContext"], "httpMethod": method, "resourcePath": path}
    event["body"] = json.dumps(body, ensure_ascii=False) if body is not None else None
    answer = handle(event, None, svc)
    return answer["statusCode"], json.loads(answer["body"])


def record_first_fill(svc: Services) -> None:
    """2 packs of metformin at P4401001 on 1 March, prescribed by D007."""
    body = json.loads(load_event("api/dispensation.json")["body"])
    body["psn_no"] = PSN
    body["lines"] = [dict(body["lines"][0], bilg_dr_codg="D007", drug_trac_codg=[])]
    status, answer = request(svc, "POST", "/v1/dispensations", body)
    assert status == 200 and answer["recorded"] == ["P4401001/FD-0001"], answer


def order(rx_id: str, code: str, cnt: float, when: str) -> dict[str, Any]:
    return {"rx_id": rx_id, "hilist_code": code, "cnt": cnt, "pric": 21.6, "drord_begn_date": when}


def check_3101(when: str = "2026-03-05 10:00:00", **data: Any) -> dict[str, Any]:
    """A 3101 request: metformin (an early refill) and 20 packs of oseltamivir (over-quantity)."""
    return {
        "input": {
            "data": {
                "task_id": "T-1",
                "patient_dtos": [
                    {
                        "patn_id": PSN,
                        "fsi_encounter_dtos": [
                            {
                                "mdtrt_id": "MZ-9",
                                "medins_id": "P4401002",
                                "med_mdtrt_type": "3",
                                "fsi_order_dtos": [
                                    order("RX-1", METFORMIN, 2, when),
                                    order("RX-2", OSELTAMIVIR, 20, when),
                                ],
                            }
                        ],
                    }
                ],
                **data,
            }
        }
    }


def rules_of(answer: dict[str, Any]) -> set[str]:
    return {v["rule_id"] for v in answer["output"]["result"]}


def test_rule_ids_restrict_the_rules_by_our_ids_and_the_platforms_codes(kb: KnowledgeBase) -> None:
    svc = make(kb)
    record_first_fill(svc)
    # Given without rule_ids both the early refill and the over-quantity are answered
    status, everything = request(svc, "POST", "/v1/checks", check_3101())
    assert status == 200 and {"early-refill", "over-quantity"} <= rules_of(everything)
    # When rule_ids names over-quantity only, then only over-quantity is answered
    _, only = request(svc, "POST", "/v1/checks", check_3101(rule_ids=["over-quantity"]))
    assert rules_of(only) == {"over-quantity"}
    # When it names the platform's code of early-refill (rules/national.yaml), then only that
    code = nhsa.dictionary().rules["early-refill"].national_codes[0]
    _, by_code = request(svc, "POST", "/v1/checks", check_3101(rule_ids=[code]))
    assert rules_of(by_code) == {"early-refill"}
    # And an unknown rule is a 400 naming the element
    status, error = request(svc, "POST", "/v1/checks", check_3101(rule_ids=["over-quantity", "NOPE"]))
    assert status == 400 and error["error"]["field"] == "input.data.rule_ids[1]"


def test_sev_deg_and_behaviour_type_follow_the_dictionary(kb: KnowledgeBase) -> None:
    svc = make(kb)
    record_first_fill(svc)
    _, answer = request(svc, "POST", "/v1/checks", check_3101())
    table = nhsa.dictionary()
    assert answer["output"]["result"]
    for violation in answer["output"]["result"]:
        assert violation["vola_bhvr_type"] == table.rules[violation["rule_id"]].vola_bhvr_type
        _, finding = request(svc, "GET", f"/v1/findings/{violation['jr_id']}")
        expected = {"high": ("1", "明确违规"), "medium": ("2", "高度可疑"), "low": ("3", "轻度可疑")}
        code, name = expected[finding["severity"]]
        assert violation["sev_deg"] == code and table.sev_deg_of(finding["severity"]) == code
        assert table.sev_deg[finding["severity"]].name_zh == name


def test_trig_scen_selects_the_scene_and_an_unknown_one_is_named(kb: KnowledgeBase) -> None:
    seen: list[Any] = []

    def spy(lines: Any, repo: Any, kb: KnowledgeBase, **kwargs: Any) -> Any:
        seen.append(kwargs.get("scenes"))
        return screening.check_lines(lines, repo, kb, **kwargs)

    svc = make(kb, spy)
    # A settlement trigger (6 门诊结算) evaluates the in-process scene's rules
    status, _ = request(svc, "POST", "/v1/checks", check_3101(trig_scen="6"))
    assert status == 200 and seen[0] == ("in",)
    # A registration-time trigger (2 门诊收费登记) is a pre-dispensing check
    seen.clear()
    request(svc, "POST", "/v1/checks", check_3101(trig_scen="2"))
    assert seen[0] is None
    status, error = request(svc, "POST", "/v1/checks", check_3101(trig_scen="42"))
    assert status == 400 and error["error"]["field"] == "input.data.trig_scen"


def test_next_fill_on_is_the_first_day_the_fill_passes_and_the_previous_fill_is_named(kb: KnowledgeBase) -> None:
    svc = make(kb)
    record_first_fill(svc)
    # When the refill is checked on 5 March (rxguard shape)
    body = json.loads(load_event("api/check.json")["body"])
    body.update(psn_no=PSN, fixmedins_code="P4401002", fee_ocur_time="2026-03-05 10:00:00")
    body["lines"] = [{"med_list_codg": METFORMIN, "cnt": 2, "pric": 21.6}]
    status, answer = request(svc, "POST", "/v1/checks", body)
    assert status == 200
    line = answer["lines"][0]
    refill = next(h for h in line["hits"] if h["rule_id"] == "early-refill")
    # Then the answer names the fill it compares with (530-FU, 531-FV, 529-FT, 533-FX)
    prev = refill["previous_fill"]
    assert (prev["dispensed_on"], prev["quantity"], prev["fixmedins_code"], prev["prescriber"]) == (
        "2026-03-01",
        2,
        "P4401001",
        "D007",
    )
    # And next_fill_on is exactly the first day on which the same check passes
    next_on = date.fromisoformat(line["next_fill_on"])
    assert refill["next_fill_on"] == line["next_fill_on"] and next_on > date(2026, 3, 5)
    for day, passes in ((next_on - timedelta(days=1), False), (next_on, True)):
        body["fee_ocur_time"] = f"{day.isoformat()} 10:00:00"
        svc.clock = lambda day=day: datetime(day.year, day.month, day.day, 10, 0)  # checked on that day
        status, later = request(svc, "POST", "/v1/checks", body)
        assert status == 200, later
        waitable = {"early-refill", "cumulative-oversupply", "cross-institution-repeat"}
        fired = {h["rule_id"] for h in later["lines"][0]["hits"]} & waitable
        assert (not fired) is passes, (day, fired)
    # And evidence is bounded, with its total
    assert len(refill["evidence"]) <= 20 and refill["evidence_count"] >= len(refill["evidence"])


def test_over_quantity_has_no_next_fill_day(kb: KnowledgeBase) -> None:
    svc = make(kb)
    _, answer = request(svc, "POST", "/v1/checks", check_3101(rule_ids=["over-quantity"]))
    over = next(v for v in answer["output"]["result"] if v["rule_id"] == "over-quantity")
    assert over["next_fill_on"] is None and over["prev_fill_date"] is None


def test_a_jr_id_is_fetched_and_disposed_in_the_platforms_shape_and_ours(kb: KnowledgeBase) -> None:
    svc = make(kb)
    record_first_fill(svc)
    _, answer = request(svc, "POST", "/v1/checks", check_3101())
    by_rule = {v["rule_id"]: v for v in answer["output"]["result"]}
    refill_id, over_id = by_rule["early-refill"]["jr_id"], by_rule["over-quantity"]["jr_id"]
    assert by_rule["early-refill"]["prev_fill_date"] == "2026-03-01"
    # The jr_id of a check is fetched with GET
    status, fetched = request(svc, "GET", f"/v1/findings/{refill_id}")
    assert status == 200 and fetched["rule_id"] == "early-refill" and fetched["recorded"] is False
    # 3103: continuing without a reason is a 400 naming dspo_way_rea
    warns = [{"warn_rslt_id": refill_id, "dspo_way": 1}]
    status, error = request(svc, "POST", "/v1/dispositions", {"input": {"data": {"warn_type": "1", "warns": warns}}})
    assert status == 400 and error["error"]["field"] == "input.data.warns[0].dspo_way_rea"
    assert "dspo_way_rea" in error["error"]["message"]
    # With the reason it is stored with the warning
    warns[0]["dspo_way_rea"] = "外出备药"
    status, done = request(svc, "POST", "/v1/dispositions", {"input": {"data": {"warn_type": "1", "warns": warns}}})
    assert status == 200 and done["infcode"] == 0 and done["output"]["result"][0]["warn_rslt_id"] == refill_id
    _, fetched = request(svc, "GET", f"/v1/findings/{refill_id}")
    assert fetched["disposition"]["action"] == "continue" and fetched["disposition"]["reason"] == "外出备药"
    # Our shape: the over-quantity is modified
    status, ours = request(
        svc, "POST", "/v1/dispositions", {"dispositions": [{"finding_id": over_id, "action": "modify"}]}
    )
    assert status == 200 and ours["items"][0]["disposition"]["action"] == "modify"
    # An unknown id is a 404 naming the field
    status, error = request(
        svc, "POST", "/v1/dispositions", {"data": {"warns": [{"warn_rslt_id": "0" * 32, "dspo_way": "2"}]}}
    )
    assert status == 404 and error["error"]["field"] == "data.warns[0].warn_rslt_id"
    # GET /v1/rules shows the continue and modify rates
    _, rules = request(svc, "GET", "/v1/rules")
    figures = {r["id"]: r for r in rules["rules"]}
    assert (figures["early-refill"]["continued"], figures["early-refill"]["continue_rate"]) == (1, 1.0)
    assert (figures["over-quantity"]["modified"], figures["over-quantity"]["modify_rate"]) == (1, 1.0)
    assert figures["pharmacy-spend"]["continue_rate"] is None


def test_a_bad_dictionary_fails_naming_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "national.yaml"
    bad.write_text("sev_deg: {high: {code: '1', name_zh: x}}\ntrig_scen: {}\nrules: {}\n", encoding="utf-8")
    with pytest.raises(nhsa.NationalDictionaryError, match=r"national\.yaml: .*other_behaviour"):
        nhsa.load_dictionary(bad)


def test_a_continued_warning_becomes_the_dispensed_lines_override(kb: KnowledgeBase) -> None:
    svc = make(kb)
    record_first_fill(svc)
    # Given a 3101 check warned the metformin order RX-1 and the prescriber continued: travel
    _, answer = request(svc, "POST", "/v1/checks", check_3101(rule_ids=["early-refill"]))
    jr_id = answer["output"]["result"][0]["jr_id"]
    warns = [{"warn_rslt_id": jr_id, "dspo_way": "1", "dspo_way_rea": "患者出差，外出备药"}]
    assert request(svc, "POST", "/v1/dispositions", {"data": {"warns": warns}})[0] == 200
    # When the order is dispensed (3102, the same rx_id)
    body = check_3101()
    body["input"]["data"]["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_order_dtos"].pop()
    status, done = request(svc, "POST", "/v1/dispensations", body)
    assert status == 200, done
    # Then the line was recorded with the prescriber's reason as its override (travel)
    stored = svc.repo.load_history([PSN])[PSN]  # type: ignore[attr-defined]
    line = next(ln for ln in stored if ln.feedetl_sn == "RX-1")
    assert line.override_reason == "travel"
    hits = {h["rule_id"]: h for h in done["lines"][0]["hits"]}
    assert any(m.startswith("override_reason") for m in hits["early-refill"]["mitigations"])
