"""The check API through the Powertools resolver, with sample events from events/api/.

The engine is replaced by a fake here (its rules have their own tests): these tests pin
what the API adds — shapes, decisions, the national 3101 mapping, errors naming fields,
size limits, access control, findings review and precision.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from rxguard.api.resolver import handle, openapi_json
from rxguard.api.service import Services
from rxguard.api.settings import ApiSettings
from rxguard.api.store import InMemoryFindingsStore
from rxguard.kb import KnowledgeBase
from rxguard.models import ClaimLine, Finding, Severity
from rxguard.repository import HistoryRepository, InMemoryRepository
from rxguard.scope import Scope
from tests.conftest import CHILD_PYTHONPATH, ROOT, load_event

CALLERS = json.loads((ROOT / "events/api/callers.json").read_text(encoding="utf-8"))
PHARMACY = "arn:aws:iam::123456789012:user/his-P4401001"
HOSPITAL = "arn:aws:iam::123456789012:user/his-H6108001"
AUDITOR = "arn:aws:iam::123456789012:role/bureau-auditor"


def finding(rule_id: str, severity: Severity, lines: Sequence[ClaimLine], **extra: Any) -> Finding:
    evidence = sorted(line.line_id for line in lines)
    first = lines[0]
    return Finding(
        finding_id=Finding.make_id(rule_id, Scope.patient(first.psn_no), evidence),
        rule_id=rule_id,
        rule_version=1,
        severity=severity,
        subject_type="patient",
        psn_no=first.psn_no,
        fixmedins_code=first.fixmedins_code,
        occurred_at=first.fee_ocur_time,
        evidence=evidence,
        explanation_zh=f"{rule_id} 说明",
        explanation_en=f"{rule_id} explanation",
        **extra,
    )


class FakeEngine:
    """check_lines: the rule (and severity) to fire on each proposed drug code."""

    def __init__(self, fire: dict[str, list[tuple[str, Severity]]] | None = None) -> None:
        self.fire = fire or {}
        self.seen: list[ClaimLine] = []

    def __call__(
        self, lines: Sequence[ClaimLine], repo: HistoryRepository, kb: KnowledgeBase
    ) -> dict[str, list[Finding]]:
        self.seen = list(lines)
        repo.load_history({line.psn_no for line in lines})
        repo.load_trace_sales({c for line in lines for c in line.trace_codes})
        out: dict[str, list[Finding]] = {}
        for line in lines:
            for rule_id, severity in self.fire.get(line.med_list_codg, []):
                out.setdefault(line.line_id, []).append(finding(rule_id, severity, [line]))
        return out


def services(kb: KnowledgeBase, engine: FakeEngine | None = None, **settings: Any) -> Services:
    repo = InMemoryRepository()
    values = {"auth_mode": "enforce", "callers": CALLERS, **settings}
    return Services(
        kb=kb,
        repo=repo,
        store=InMemoryFindingsStore(repo),
        settings=ApiSettings.model_validate(values),
        check_lines=engine or FakeEngine(),
        clock=lambda: datetime(2026, 3, 1, 10, 0, 0),
    )


def call(svc: Services, event: dict[str, Any]) -> tuple[int, Any]:
    answer = handle(event, None, svc)
    return answer["statusCode"], json.loads(answer["body"])


def with_body(event: dict[str, Any], body: Any) -> dict[str, Any]:
    out = copy.deepcopy(event)
    out["body"] = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return out


def body_of(event: dict[str, Any]) -> Any:
    return json.loads(event["body"])


# ------------------------------------------------------------------ checks, rxguard shape


def test_check_answers_block_warn_and_pass_per_line_from_the_worst_severity(kb: KnowledgeBase) -> None:
    # Given an engine that fires a high rule on metformin and a medium one on oseltamivir
    engine = FakeEngine(
        {
            "XA10BA02A001": [("cumulative-oversupply", Severity.HIGH), ("early-refill", Severity.MEDIUM)],
            "XJ05AH02A001": [("indication-mismatch", Severity.MEDIUM)],
        }
    )
    svc = services(kb, engine)
    # When the pharmacy checks its proposed dispensing
    status, answer = call(svc, load_event("api/check.json"))
    # Then each line gets the decision of its worst hit, and the request the worst line
    assert status == 200
    lines = {line["feedetl_sn"]: line for line in answer["lines"]}
    assert lines["CHK-001"]["decision"] == "block"
    assert [h["rule_id"] for h in lines["CHK-001"]["hits"]] == ["cumulative-oversupply", "early-refill"]
    assert lines["CHK-002"]["decision"] == "warn"
    assert answer["decision"] == "block"
    hit = lines["CHK-002"]["hits"][0]
    rule = kb.rule("indication-mismatch")
    assert (hit["name_zh"], hit["name_en"], hit["severity"]) == (rule.name_zh, rule.name_en, "medium")
    assert hit["evidence"] == ["P4401001/CHK-002"]
    # And nothing was recorded
    assert svc.repo.lines == {}  # type: ignore[attr-defined]


def test_low_severity_passes_but_is_reported_as_information(kb: KnowledgeBase) -> None:
    # Given a low-severity hit on the first line
    svc = services(kb, FakeEngine({"XA10BA02A001": [("over-quantity", Severity.LOW)]}))
    # When checked
    _, answer = call(svc, load_event("api/check.json"))
    # Then the line passes and still names the rule
    first = answer["lines"][0]
    assert first["decision"] == "pass"
    assert [(h["rule_id"], h["decision"]) for h in first["hits"]] == [("over-quantity", "pass")]


def test_unknown_drug_code_is_a_clear_pass_not_monitored(kb: KnowledgeBase) -> None:
    # Given a line whose drug code is not in the catalogue (CHK-003 in the sample)
    svc = services(kb)
    # When checked
    status, answer = call(svc, load_event("api/check.json"))
    # Then it passes with the note, while the monitored lines carry days of supply
    assert status == 200
    lines = {line["feedetl_sn"]: line for line in answer["lines"]}
    assert lines["CHK-003"]["monitored"] is False
    assert lines["CHK-003"]["decision"] == "pass"
    assert lines["CHK-003"]["notes"] == ["not monitored"]
    metformin = kb.drugs["XA10BA02A001"]
    assert lines["CHK-001"]["days_supply"] == pytest.approx(
        metformin.days_supply(2 * metformin.units_per_pack), abs=0.01
    )


def test_check_lines_normalized_like_the_batch_path(kb: KnowledgeBase) -> None:
    # Given the sample check with a visit diagnosis and a trace code
    engine = FakeEngine()
    svc = services(kb, engine)
    # When checked
    call(svc, load_event("api/check.json"))
    # Then the engine saw contract-shaped claim lines with the visit's fields
    first = engine.seen[0]
    assert first.line_id == "P4401001/CHK-001"
    assert first.diagnoses == ["E11.9"]
    assert first.trace_codes == ["81234567890123456789"]
    assert first.det_item_fee_sumamt == pytest.approx(2 * 21.6)
    assert first.fee_ocur_time == datetime(2026, 3, 1, 10, 0)


def test_check_without_line_ids_or_time_gets_generated_ones(kb: KnowledgeBase) -> None:
    # Given a minimal check: no feedetl_sn, no time
    svc = services(kb)
    body = {
        "psn_no": "SYN1",
        "fixmedins_code": "P4401001",
        "lines": [{"med_list_codg": "XA10BA02A001", "cnt": 1, "pric": 2}],
    }
    # When checked
    status, answer = call(svc, with_body(load_event("api/check.json"), body))
    # Then the line has a generated id and the check time is the service clock
    assert status == 200
    assert answer["lines"][0]["line_id"] == "P4401001/check-1"
    assert answer["checked_at"] == "2026-03-01T10:00:00+08:00"


# ------------------------------------------------------------------ checks, national 3101 shape


@pytest.mark.parametrize("sample", ["api/check_3101.json", "api/check_3101_envelope.json"])
def test_3101_request_is_answered_in_the_national_result_shape(kb: KnowledgeBase, sample: str) -> None:
    # Given an engine firing a high rule on metformin, and a 3101 request (data node or envelope)
    svc = services(kb, FakeEngine({"XA10BA02A001": [("cumulative-oversupply", Severity.HIGH)]}))
    # When the HIS posts it unchanged
    status, answer = call(svc, load_event(sample))
    # Then the answer is the platform's: infcode 0 and one violation per hit on a current order
    assert status == 200
    assert answer["infcode"] == 0
    result = answer["output"]["result"]
    assert [v["rule_id"] for v in result] == ["cumulative-oversupply"]
    violation = result[0]
    assert violation["sev_deg"] == "1"  # high
    assert violation["rule_name"] == kb.rule("cumulative-oversupply").name_zh
    assert violation["patn_id"] == "SYN0000000002"
    assert violation["mdtrt_id"] == "MZ-0002"
    assert violation["task_id"] == "TASK-20260301-0001"
    assert violation["vola_bhvr_type"] == "13"
    assert [d["rx_id"] for d in violation["judge_result_detail_dtos"]] == ["RX-0002-01"]  # not the context order
    assert violation["vola_amt"] == pytest.approx(259.2)
    assert "H6108001/RX-0002-01" in violation["vola_evid"]


def test_3101_orders_map_to_claim_lines(kb: KnowledgeBase) -> None:
    # Given the 3101 sample (long-term order, main diagnosis, an earlier order as context)
    engine = FakeEngine()
    svc = services(kb, engine)
    # When checked
    call(svc, load_event("api/check_3101.json"))
    # Then both orders reach the engine, mapped to the claim-line contract
    current, earlier = engine.seen
    assert current.line_id == "H6108001/RX-0002-01"
    assert current.psn_no == "SYN0000000002"
    assert current.mdtrt_id == "MZ-0002"
    assert current.lt_rx_flag is True
    assert current.admdvs == "610802"
    assert current.med_type == "11"
    assert current.diagnoses[0] == "E11.900"
    assert current.bilg_dr_codg == "D001"
    assert current.fee_ocur_time == datetime(2026, 3, 1, 9, 40)
    assert earlier.fee_ocur_time == datetime(2026, 2, 20, 10, 0)


def test_medium_and_low_hits_map_to_sev_deg_2_and_3(kb: KnowledgeBase) -> None:
    svc = services(
        kb, FakeEngine({"XA10BA02A001": [("early-refill", Severity.MEDIUM), ("over-quantity", Severity.LOW)]})
    )
    _, answer = call(svc, load_event("api/check_3101.json"))
    assert {v["rule_id"]: v["sev_deg"] for v in answer["output"]["result"]} == {
        "early-refill": "2",
        "over-quantity": "3",
    }


def test_format_query_switches_the_answer_shape(kb: KnowledgeBase) -> None:
    # Given the rxguard-shaped sample asked for the national answer, and the reverse
    svc = services(kb, FakeEngine({"XA10BA02A001": [("early-refill", Severity.MEDIUM)]}))
    event = load_event("api/check.json")
    event["queryStringParameters"] = {"format": "nhsa"}
    event["multiValueQueryStringParameters"] = {"format": ["nhsa"]}
    _, national = call(svc, event)
    event = load_event("api/check_3101.json")
    event["queryStringParameters"] = {"format": "rxguard"}
    event["multiValueQueryStringParameters"] = {"format": ["rxguard"]}
    _, ours = call(svc, event)
    # Then each comes back in the asked shape
    assert [d["rx_id"] for v in national["output"]["result"] for d in v["judge_result_detail_dtos"]] == ["CHK-001"]
    assert [line["line_id"] for line in ours["lines"]] == ["H6108001/RX-0002-01"]


# ------------------------------------------------------------------ bad requests


@pytest.mark.parametrize(
    ("mutate", "field", "code"),
    [
        (lambda b: b["lines"][1].update(cnt=0), "lines[1].cnt", "invalid_field"),
        (lambda b: b.pop("psn_no"), "psn_no", "missing_field"),
        (lambda b: b["lines"][0].update(qty=3), "lines[0].qty", "unknown_field"),
        (lambda b: b["lines"][0].update(drug_trac_codg=["123"]), "lines[0].drug_trac_codg[0]", "invalid_field"),
        (
            lambda b: b["lines"][0].update(det_item_fee_sumamt=99.0),
            "lines[0].det_item_fee_sumamt",
            "invalid_amount_mismatch",
        ),
        (lambda b: b.update(fixmedins_code="4401x"), "fixmedins_code", "invalid_field"),
        (lambda b: b.update(fee_ocur_time="1980-01-01 10:00:00"), "fee_ocur_time", "invalid_bad_time"),
        (lambda b: b["lines"][1].update(feedetl_sn="CHK-001"), "lines[1].feedetl_sn", "duplicate_line"),
        (lambda b: b.update(lines=[]), "lines", "invalid_field"),
    ],
)
def test_bad_request_names_the_field(kb: KnowledgeBase, mutate: Any, field: str, code: str) -> None:
    # Given the sample check with one defect
    event = load_event("api/check.json")
    body = body_of(event)
    mutate(body)
    svc = services(kb, auth_mode="open")
    # When posted
    status, answer = call(svc, with_body(event, body))
    # Then a 400 names the field with a machine-readable code
    assert status == 400
    assert answer["error"]["field"] == field
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]


def test_bad_3101_order_is_named_by_its_national_path(kb: KnowledgeBase) -> None:
    event = load_event("api/check_3101.json")
    body = body_of(event)
    body["data"]["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_order_dtos"][0]["sumamt"] = "1.00"
    status, answer = call(services(kb, auth_mode="open"), with_body(event, body))
    assert status == 400
    assert answer["error"]["field"] == "data.patient_dtos[0].fsi_encounter_dtos[0].fsi_order_dtos[0].sumamt"
    body["data"]["patient_dtos"][0]["fsi_encounter_dtos"][0]["medins_id"] = "医院"
    _, answer = call(services(kb, auth_mode="open"), with_body(event, body))
    assert answer["error"]["field"] == "data.patient_dtos[0].fsi_encounter_dtos[0].medins_id"


def test_body_that_is_not_json_is_a_400(kb: KnowledgeBase) -> None:
    status, answer = call(services(kb, auth_mode="open"), with_body(load_event("api/check.json"), "{not json"))
    assert (status, answer["error"]["code"]) == (400, "invalid_json")


def test_oversized_body_and_too_many_lines_are_413(kb: KnowledgeBase) -> None:
    # Given a body over the byte limit, and one with more lines than allowed
    svc = services(kb, auth_mode="open", max_body_bytes=4096, max_lines=3)
    event = load_event("api/check.json")
    big = with_body(event, {"psn_no": "x" * 5000})
    body = body_of(event)
    body["lines"] = [dict(body["lines"][0], feedetl_sn=f"L{i}") for i in range(4)]
    # When posted
    big_status, big_answer = call(svc, big)
    many_status, many_answer = call(svc, with_body(event, body))
    # Then both are refused with 413, and the limit in force is one line more than allowed
    assert (big_status, big_answer["error"]["code"]) == (413, "too_large")
    assert (many_status, many_answer["error"]["code"]) == (413, "too_large")
    body["lines"] = body["lines"][:3]
    assert call(svc, with_body(event, body))[0] == 200


# ------------------------------------------------------------------ access


def test_institution_may_check_only_its_own_lines(kb: KnowledgeBase) -> None:
    # Given the pharmacy's identity, and the hospital's sample request signed by the pharmacy
    svc = services(kb)
    own = load_event("api/check.json")
    other = load_event("api/check_3101.json")
    other["requestContext"]["identity"]["userArn"] = PHARMACY
    unknown = load_event("api/check.json")
    unknown["requestContext"]["identity"]["userArn"] = "arn:aws:iam::123456789012:user/stranger"
    # Then only its own institution is accepted
    assert call(svc, own)[0] == 200
    status, answer = call(svc, other)
    assert (status, answer["error"]["code"]) == (403, "forbidden")
    assert call(svc, unknown)[0] == 403


def test_institution_codes_compare_as_normalized(kb: KnowledgeBase) -> None:
    # Given the pharmacy's request with its code in lower case (ingestion upper-cases codes)
    svc = services(kb)
    event = with_body(
        load_event("api/check.json"), dict(body_of(load_event("api/check.json")), fixmedins_code="p4401001")
    )
    # When checked, and its findings listed with a lower-case filter
    status, answer = call(svc, event)
    seed(svc, kb)
    list_status, page = get(svc, "/v1/findings?institution=p4401001", caller=PHARMACY)
    # Then the grant applies and the line ids use the normalized code
    assert status == 200 and answer["lines"][0]["line_id"] == "P4401001/CHK-001"
    assert list_status == 200 and page["items"] and {f["fixmedins_code"] for f in page["items"]} == {"P4401001"}


def test_prefix_grant_matches_assumed_role_sessions(kb: KnowledgeBase) -> None:
    callers = {**CALLERS, "arn:aws:sts::123456789012:assumed-role/his-P4401001/*": {"institutions": ["P4401001"]}}
    svc = services(kb, callers=callers)
    event = load_event("api/check.json")
    event["requestContext"]["identity"]["userArn"] = "arn:aws:sts::123456789012:assumed-role/his-P4401001/pos-17"
    assert call(svc, event)[0] == 200


# ------------------------------------------------------------------ findings and rules


def seed(svc: Services, kb: KnowledgeBase) -> list[Finding]:
    """Findings of two institutions on different days, stored as the engine would."""
    from rxguard.ingest.normalize import normalize_record

    found = []
    for i, (inst, rule) in enumerate(
        [
            ("P4401001", "early-refill"),
            ("P4401001", "over-quantity"),
            ("H6108001", "trace-code-reuse"),
            ("P4401001", "early-refill"),
            ("P4401001", "cross-institution-repeat"),
        ]
    ):
        record = {
            "feedetl_sn": f"S{i}",
            "fixmedins_code": inst,
            "psn_no": f"SYN{i % 2}",
            "med_type": "41",
            "fee_ocur_time": f"2026-02-{i + 1:02d} 09:00:00",
            "med_list_codg": "XA10BA02A001",
            "cnt": 1,
            "pric": 21.6,
            "det_item_fee_sumamt": 21.6,
        }
        line = normalize_record(record, kb, file="seed", line=i + 1)
        f = finding(rule, Severity.MEDIUM, [line])
        svc.repo.replace_findings(f"patient:{line.psn_no}:{i}", [f])
        found.append(f)
    return found


def get(svc: Services, path: str, caller: str = AUDITOR) -> tuple[int, Any]:
    event = load_event("api/rules.json")
    event["requestContext"]["identity"]["userArn"] = caller
    if "?" in path:
        path, query = path.split("?", 1)
        pairs = [p.split("=", 1) for p in query.split("&")]
        event["queryStringParameters"] = dict(pairs)
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in pairs}
    event["path"] = event["resource"] = path
    return call(svc, event)


def review(svc: Services, finding_id: str, status: str, caller: str = AUDITOR) -> tuple[int, Any]:
    event = load_event("api/review.json")
    event["path"] = event["resource"] = f"/v1/findings/{finding_id}"
    event["requestContext"]["identity"]["userArn"] = caller
    return call(svc, with_body(event, dict(body_of(event), status=status)))


def test_findings_page_through_every_match_newest_first(kb: KnowledgeBase) -> None:
    # Given five findings, four of the pharmacy
    svc = services(kb)
    seeded = seed(svc, kb)
    # When the auditor pages through the pharmacy's findings two at a time
    seen: list[str] = []
    token = None
    for _ in range(5):
        status, page = get(svc, "/v1/findings?institution=P4401001&limit=2" + (f"&next_token={token}" if token else ""))
        assert status == 200
        seen += [f["finding_id"] for f in page["items"]]
        token = page["next_token"]
        if token is None:
            break
    # Then every finding of the pharmacy comes once, newest first
    mine = sorted((f for f in seeded if f.fixmedins_code == "P4401001"), key=lambda f: f.occurred_at, reverse=True)
    assert seen == [f.finding_id for f in mine]


def test_findings_filters(kb: KnowledgeBase) -> None:
    svc = services(kb)
    seeded = seed(svc, kb)
    _, by_rule = get(svc, "/v1/findings?rule=early-refill")
    assert {f["finding_id"] for f in by_rule["items"]} == {f.finding_id for f in seeded if f.rule_id == "early-refill"}
    _, by_patient = get(svc, "/v1/findings?patient=SYN1")
    assert {f["finding_id"] for f in by_patient["items"]} == {f.finding_id for f in seeded if f.psn_no == "SYN1"}
    _, by_date = get(svc, "/v1/findings?date_from=2026-02-02&date_to=2026-02-03")
    assert {f["occurred_at"][:10] for f in by_date["items"]} == {"2026-02-02", "2026-02-03"}
    status, bad = get(svc, "/v1/findings?date_from=2026-02-05&date_to=2026-02-01")
    assert (status, bad["error"]["field"]) == (400, "date_to")
    status, bad = get(svc, "/v1/findings?next_token=garbage!")
    assert (status, bad["error"]["field"]) == (400, "next_token")


def test_institution_reads_only_its_own_findings(kb: KnowledgeBase) -> None:
    svc = services(kb)
    seeded = seed(svc, kb)
    hospital_finding = next(f for f in seeded if f.fixmedins_code == "H6108001")
    # When the pharmacy lists without a filter, asks for the hospital's, or reads one of them
    _, mine = get(svc, "/v1/findings", caller=PHARMACY)
    other_status, _ = get(svc, "/v1/findings?institution=H6108001", caller=PHARMACY)
    one_status, _ = get(svc, f"/v1/findings/{hospital_finding.finding_id}", caller=PHARMACY)
    # Then it sees its own only, and the hospital's finding does not exist for it
    assert {f["fixmedins_code"] for f in mine["items"]} == {"P4401001"}
    assert other_status == 403
    assert one_status == 404
    assert get(svc, f"/v1/findings/{hospital_finding.finding_id}", caller=HOSPITAL)[0] == 200


def test_review_feeds_rule_precision(kb: KnowledgeBase) -> None:
    # Given two early-refill findings and one over-quantity finding
    svc = services(kb)
    seeded = seed(svc, kb)
    early = [f for f in seeded if f.rule_id == "early-refill"]
    over = next(f for f in seeded if f.rule_id == "over-quantity")
    # When the auditor confirms one early refill, dismisses the other, then changes their mind on it
    assert review(svc, early[0].finding_id, "confirmed")[0] == 200
    assert review(svc, early[1].finding_id, "dismissed")[0] == 200
    status, reviewed = review(svc, over.finding_id, "dismissed")
    assert review(svc, early[1].finding_id, "confirmed")[0] == 200
    # Then the review is on the finding and the figures count the latest review of each
    assert status == 200
    assert reviewed["status"] == "dismissed"
    assert reviewed["review"]["reviewer"] == "稽核员王五"
    _, rules = get(svc, "/v1/rules")
    figures = {r["id"]: (r["confirmed"], r["dismissed"], r["precision"]) for r in rules["rules"]}
    assert figures["early-refill"] == (2, 0, 1.0)
    assert figures["over-quantity"] == (0, 1, 0.0)
    assert figures["trace-code-reuse"] == (0, 0, None)
    assert {r["id"] for r in rules["rules"]} == set(kb.rules)


def test_precision_is_confirmed_over_reviewed(kb: KnowledgeBase) -> None:
    svc = services(kb)
    seeded = seed(svc, kb)
    early = [f for f in seeded if f.rule_id == "early-refill"]
    review(svc, early[0].finding_id, "confirmed")
    review(svc, early[1].finding_id, "dismissed")
    _, rules = get(svc, "/v1/rules")
    rule = next(r for r in rules["rules"] if r["id"] == "early-refill")
    assert rule["precision"] == pytest.approx(rule["confirmed"] / (rule["confirmed"] + rule["dismissed"]))
    assert rule["precision"] == pytest.approx(0.5)


def test_review_rules(kb: KnowledgeBase) -> None:
    svc = services(kb)
    seeded = seed(svc, kb)
    # an institution may not review
    assert review(svc, seeded[0].finding_id, "dismissed", caller=PHARMACY)[0] == 403
    # an unknown finding is a 404; a superseded one a 409
    assert review(svc, "0" * 32, "confirmed")[0] == 404
    svc.repo.replace_findings("patient:SYN0:0", [])
    status, answer = review(svc, seeded[0].finding_id, "confirmed")
    assert (status, answer["error"]["code"]) == (409, "conflict")
    # a bad status names the field
    status, answer = review(svc, seeded[1].finding_id, "maybe")
    assert (status, answer["error"]["field"]) == (400, "status")


def test_review_survives_the_rules_producing_the_finding_again(kb: KnowledgeBase) -> None:
    svc = services(kb)
    seeded = seed(svc, kb)
    review(svc, seeded[0].finding_id, "confirmed")
    svc.repo.replace_findings("patient:SYN0:0", [seeded[0]])  # a later batch re-screens the patient
    _, one = get(svc, f"/v1/findings/{seeded[0].finding_id}")
    assert one["status"] == "confirmed"


def test_unknown_route_is_a_404_in_the_error_shape(kb: KnowledgeBase) -> None:
    status, answer = get(services(kb), "/v1/nothing")
    assert (status, answer["error"]["code"]) == (404, "no_route")


# ------------------------------------------------------------------ the OpenAPI document


def test_checked_in_openapi_document_is_the_generated_one() -> None:
    # Given the document generated from the resolver
    generated = json.loads(openapi_json())
    # Then openapi.json at the root is exactly it (regenerate: python -m rxguard.api.resolver > openapi.json)
    assert json.loads((ROOT / "openapi.json").read_text(encoding="utf-8")) == generated
    assert set(generated["paths"]) >= {
        "/v1/audit",
        "/v1/backtests",
        "/v1/checks",
        "/v1/dispensations",
        "/v1/dispositions",
        "/v1/findings",
        "/v1/findings/{finding_id}",
        "/v1/rules",
        "/v1/subscriptions",
        "/v1/subscriptions/{subscription_id}",
    }


def test_openapi_document_is_served(kb: KnowledgeBase) -> None:
    status, document = get(services(kb), "/v1/openapi.json")
    assert status == 200
    assert document == json.loads(Path(ROOT / "openapi.json").read_text(encoding="utf-8"))


OPENAPI_PROBE = """
import json, sys
from rxguard.api import resolver
from tests.unit.test_api import call_first_request
routes = [*resolver.app._static_routes, *resolver.app._dynamic_routes]
check = next(r for r in routes if r.func.__name__ == "post_check")
documented_on_import = [r.func.__name__ for r in routes if r.responses]
status = call_first_request()
built_on_call = len(check.dependant.response_extra_models)
document = json.loads(resolver.openapi_json())
print(json.dumps({
    "status": status,
    "documented_on_import": documented_on_import,
    "built_on_call": built_on_call,
    "built_for_the_document": len(check.dependant.response_extra_models),
    "check_400": document["paths"]["/v1/checks"]["post"]["responses"]["400"]["description"],
    "handlers": sorted(r.func.__name__ for r in routes),
    "documented": sorted(resolver.OPENAPI_ANSWERS),
}))
"""


def call_first_request() -> int:
    """A check in the probe's fresh interpreter (the first request after a cold start)."""
    from rxguard.kb import get_knowledge_base

    status, _ = call(services(get_knowledge_base()), load_event("api/check.json"))
    return status


def test_the_openapi_answers_are_built_for_the_document_only_not_on_import_or_first_call() -> None:
    # Given a fresh interpreter (a cold start), When it imports the resolver and answers one check
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    out = subprocess.run([sys.executable, "-c", OPENAPI_PROBE], env=env, capture_output=True, text=True, check=True)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    # Then no route carries its documented answers, and the check built no model for them
    assert probe["status"] == 200
    assert probe["documented_on_import"] == []
    assert probe["built_on_call"] == 0
    # And the OpenAPI document, when asked for, has them (the 200 model and the common errors)
    assert probe["built_for_the_document"] > 1
    assert probe["check_400"] == "Bad request: the error names the field"
    # And every documented handler is a route (a renamed handler would lose its answers)
    assert set(probe["documented"]) <= set(probe["handlers"])
