"""The check API with the real engine over the in-memory repository: what a dispensing
records is seen by the next check at any institution, checks stay within two reads and
write nothing, and a later settlement batch with the same lines counts nothing twice."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rxguard import screening
from rxguard.alerts import InMemorySink
from rxguard.api.resolver import handle
from rxguard.api.service import Services, alerts_notifier
from rxguard.api.settings import ApiSettings
from rxguard.api.store import InMemoryFindingsStore
from rxguard.ingest.normalize import normalize_record
from rxguard.kb import KnowledgeBase
from rxguard.models import Scene
from rxguard.repository import InMemoryRepository
from tests.conftest import load_event


def make(kb: KnowledgeBase) -> tuple[Services, InMemoryRepository, InMemorySink]:
    repo = InMemoryRepository()
    sink = InMemorySink()
    svc = Services(
        kb=kb,
        repo=repo,
        store=InMemoryFindingsStore(repo),
        settings=ApiSettings(auth_mode="open"),
        notify=alerts_notifier(kb, sink),
        clock=lambda: datetime(2026, 3, 5, 10, 0),
    )
    return svc, repo, sink


def call(svc: Services, event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    if changes:
        body = json.loads(event["body"])
        body.update(changes)
        event = dict(event, body=json.dumps(body, ensure_ascii=False))
    answer = handle(event, None, svc)
    assert answer["statusCode"] == 200, answer["body"]
    result: dict[str, Any] = json.loads(answer["body"])
    return result


def test_a_dispensing_is_seen_by_the_next_check_at_another_pharmacy(kb: KnowledgeBase) -> None:
    # Given a completed dispensing of two packs of metformin at pharmacy P4401001 on 1 March
    svc, repo, _ = make(kb)
    recorded = call(svc, load_event("api/dispensation.json"))
    assert recorded["recorded"] == ["P4401001/FD-0001", "P4401001/FD-0002"]
    reads, writes = repo.reads, repo.writes
    # When another pharmacy checks the same drug for the same patient on 5 March
    answer = call(svc, load_event("api/check.json"), fixmedins_code="P4401002", fee_ocur_time="2026-03-05 10:00:00")
    # Then the metformin line is warned or blocked for an early refill naming the earlier line
    metformin = next(line for line in answer["lines"] if line["med_list_codg"] == "XA10BA02A001")
    assert metformin["decision"] in ("warn", "block")
    early = next(h for h in metformin["hits"] if h["rule_id"] == "early-refill")
    assert early["evidence"] == ["P4401001/FD-0001", "P4401002/CHK-001"]
    assert early["explanation_zh"] and early["explanation_en"]
    # And the check took at most two reads and wrote nothing
    assert repo.reads - reads <= 2
    assert repo.writes == writes
    assert "P4401002/CHK-001" not in repo.lines


def test_the_same_check_without_history_passes(kb: KnowledgeBase) -> None:
    svc, _, _ = make(kb)
    answer = call(svc, load_event("api/check.json"), fixmedins_code="P4401002", fee_ocur_time="2026-03-05 10:00:00")
    metformin = next(line for line in answer["lines"] if line["med_list_codg"] == "XA10BA02A001")
    assert all(h["rule_id"] != "early-refill" for h in metformin["hits"])


def test_dispensing_twice_or_settling_later_counts_nothing_twice(kb: KnowledgeBase) -> None:
    # Given a recorded dispensing and its findings
    svc, repo, sink = make(kb)
    first = call(svc, load_event("api/dispensation.json"))
    findings_before = {f.finding_id: f for f in repo.all_current_findings()}
    alerts_before = len(sink.alerts)
    # When the POS retries the request, then the settlement batch brings the same lines
    again = call(svc, load_event("api/dispensation.json"))
    event_body = json.loads(load_event("api/dispensation.json")["body"])
    batch = []
    for i, line in enumerate(event_body["lines"]):
        record = {
            "feedetl_sn": line["feedetl_sn"],
            "fixmedins_code": event_body["fixmedins_code"],
            "psn_no": event_body["psn_no"],
            "mdtrt_id": event_body["mdtrt_id"],
            "med_type": event_body["med_type"],
            "fee_ocur_time": event_body["fee_ocur_time"],
            "med_list_codg": line["med_list_codg"],
            "cnt": line["cnt"],
            "pric": line["pric"],
            "det_item_fee_sumamt": round(line["cnt"] * line["pric"], 2),
            "dise_codg": ";".join(event_body["dise_codg"]),
        }
        batch.append(normalize_record(record, kb, file="settlement.csv", line=i + 2))
    settled = screening.screen_lines(batch, repo, kb, scene=Scene.POST)
    # Then nothing is recorded again, no finding is new, and nothing is alerted twice
    assert first["new_findings"] >= 1
    assert again["recorded"] == [] and again["duplicates"] == first["recorded"]
    assert again["new_findings"] == 0
    assert settled.recorded == [] and len(settled.duplicates) == 2
    assert settled.changes.new == []
    assert {f.finding_id for f in repo.all_current_findings()} == set(findings_before)
    assert len(sink.alerts) == alerts_before
    assert len(repo.lines) == 2


def test_new_findings_of_a_dispensing_are_alerted(kb: KnowledgeBase) -> None:
    svc, repo, sink = make(kb)
    answer = call(svc, load_event("api/dispensation.json"))
    high = [f for f in repo.all_current_findings() if f.severity == "high"]
    alerted = {m.message_id.split("/", 1)[1] for m in sink.alerts if m.message_id.startswith("finding/")}
    assert high, "the sample's 5 packs of oseltamivir are a high over-quantity"
    assert answer["alerts_sent"] == len(alerted)
    assert alerted >= {f.finding_id for f in high}


def test_3101_check_with_the_real_engine_names_the_current_order(kb: KnowledgeBase) -> None:
    # Given a 3101 request whose current order supplies far more than a long-term prescription allows
    svc, _, _ = make(kb)
    answer = call(svc, load_event("api/check_3101.json"))
    # Then the answer names it as a violation with the national fields
    result = answer["output"]["result"]
    assert result, "a 12-pack metformin order must be reported"
    for violation in result:
        assert violation["sev_deg"] in ("1", "2", "3")
        assert {d["rx_id"] for d in violation["judge_result_detail_dtos"]} == {"RX-0002-01"}
        assert violation["rule_name"] == kb.rule(violation["rule_id"]).name_zh


def test_3102_dispensing_records_the_encounter_orders_once(kb: KnowledgeBase) -> None:
    # Given a 3102 message whose encounter is a single object (as some HIS send it)
    svc, repo, _ = make(kb)
    event = load_event("api/dispensation_3102.json")
    # When it is posted twice
    first = call(svc, event)
    again = call(svc, event)
    # Then its orders are recorded once, under medins_id/rx_id, and the answer is rxguard's dispensing shape
    assert first["recorded"] == ["H6108001/RX-0001-01", "H6108001/RX-0002-01"]
    assert again["recorded"] == [] and again["duplicates"] == first["recorded"]
    assert set(repo.lines) == set(first["recorded"])
