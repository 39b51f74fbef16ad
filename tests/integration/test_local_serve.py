"""`rxguard run` and `rxguard serve` share one state (issue 11): findings a batch wrote are
listed and reviewed through serve's app, a dispensation posted to serve is history for
the next batch, and both may run at once (serve in its own process over real HTTP while
this process screens a batch into the same state)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from rxguard.api.serve import services_invoke, site_app
from rxguard.api.settings import ApiSettings
from rxguard.bootstrap import local_api_services as local_services
from rxguard.engine.factory import make_line
from rxguard.ingest import read_batch
from rxguard.kb import KnowledgeBase
from rxguard.local.state import State
from rxguard.models import ClaimLine, Scene
from rxguard.screening import screen_lines
from tests.conftest import CHILD_PYTHONPATH, ROOT, load_event

AUDITOR = "arn:aws:iam::123456789012:role/bureau-auditor"
PHARMACY = "arn:aws:iam::123456789012:user/his-P4401001"


def batch_lines(kb: KnowledgeBase, name: str = "01_shanghai_his_utf8.csv") -> list[ClaimLine]:
    return [x for x in read_batch(ROOT / "events/batches" / name, kb) if isinstance(x, ClaimLine)]


class Client:
    """Requests straight into a WSGI app (the app serve hands to uvicorn through `asgi_app`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, method: str, path: str, body: Any = None, caller: str | None = None) -> tuple[int, Any]:
        raw = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        target, _, query = path.partition("?")
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": target,
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(raw)),
            "CONTENT_TYPE": "application/json",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.input": io.BytesIO(raw),
        }
        if caller:
            environ["HTTP_X_RXGUARD_CALLER"] = caller
        status: list[str] = []
        chunks = self.app(environ, lambda s, headers: status.append(s))
        return int(status[0].split()[0]), json.loads(b"".join(chunks))


def serve_app(directory: Path, callers: dict[str, Any] | None = None) -> Client:
    settings = ApiSettings.model_validate({"auth_mode": "enforce" if callers else "open", "callers": callers or {}})
    services = local_services(State.open(directory), settings)
    return Client(site_app(services, services_invoke(services), settings.max_body_bytes))


def test_findings_of_a_batch_are_listed_and_reviewed_through_serve(tmp_path: Path, kb: KnowledgeBase) -> None:
    # Given a batch screened into the state, as `rxguard run` does
    run_state = State.open(tmp_path)
    outcome = screen_lines(batch_lines(kb), run_state.repository(), kb)
    written = {f.finding_id: f for f in run_state.repository().all_current_findings()}
    assert outcome.recorded and written, "the sample batch must produce findings to prove anything"
    # When serve (its own State on the same directory, grants enforced) lists every finding
    callers = json.loads((ROOT / "events/api/callers.json").read_text(encoding="utf-8"))
    client = serve_app(tmp_path, callers)
    listed: list[dict[str, Any]] = []
    token = None
    while True:
        status, page = client("GET", "/v1/findings?limit=7" + (f"&next_token={token}" if token else ""), caller=AUDITOR)
        assert status == 200
        listed += page["items"]
        token = page["next_token"]
        if not token:
            break
    # Then it lists exactly the batch's findings, newest first
    assert sorted(f["finding_id"] for f in listed) == sorted(written)
    times = [f["occurred_at"] for f in listed]
    assert times == sorted(times, reverse=True)
    # When an auditor confirms one (and an institution may not)
    target = listed[0]["finding_id"]
    review = json.loads(load_event("api/review.json")["body"])
    assert client("PATCH", f"/v1/findings/{target}", review, caller=PHARMACY)[0] == 403
    status, answer = client("PATCH", f"/v1/findings/{target}", review, caller=AUDITOR)
    # Then the review is stored in the state the next run reads, and survives re-screening
    assert status == 200 and answer["status"] == "confirmed"
    assert run_state.repository().get_finding(target).status == "confirmed"  # type: ignore[union-attr]
    again = screen_lines(batch_lines(kb), run_state.repository(), kb)
    assert again.recorded == [] and again.changes.new == [] and again.changes.superseded == []
    status, one = client("GET", f"/v1/findings/{target}", caller=AUDITOR)
    assert status == 200 and one["status"] == "confirmed" and one["review"]["reason"] == review["reason"]
    status, rules = client("GET", "/v1/rules", caller=AUDITOR)
    confirmed = {r["id"]: r["confirmed"] for r in rules["rules"]}
    assert confirmed[written[target].rule_id] == 1


def test_a_dispensation_posted_to_serve_is_history_for_the_next_batch(tmp_path: Path, kb: KnowledgeBase) -> None:
    # Given serve over a state, and the sample dispensation posted to it
    client = serve_app(tmp_path)
    body = json.loads(load_event("api/dispensation.json")["body"])
    status, answer = client("POST", "/v1/dispensations", body)
    assert status == 200 and answer["recorded"] == ["P4401001/FD-0001", "P4401001/FD-0002"]
    # When the next batch (another State on the same directory) reads the patient's history
    run_repo = State.open(tmp_path).repository()
    history = run_repo.load_history(["SYN0000000001"])["SYN0000000001"]
    # Then the dispensed lines are there, as recorded through the API
    assert [x.line_id for x in history] == ["P4401001/FD-0001", "P4401001/FD-0002"]
    assert run_repo.load_trace_sales(["81234567890123456789"])["81234567890123456789"][0].line_id == history[0].line_id
    # And a refill in the batch five days later is judged against it
    refill = history[0].model_copy(
        update={
            "feedetl_sn": "B-0001",
            "fee_ocur_time": history[0].fee_ocur_time + timedelta(days=5),
            "trace_codes": [],
            "source_file": "batch.csv",
        }
    )
    outcome = screen_lines([refill], run_repo, kb, scene=Scene.POST)
    assert [x.line_id for x in outcome.recorded] == ["P4401001/B-0001"]
    cited = {f.rule_id for f in outcome.changes.new if "P4401001/FD-0001" in f.evidence}
    assert "early-refill" in cited
    # And the same dispensation posted again records nothing
    status, again = client("POST", "/v1/dispensations", body)
    assert status == 200 and again["recorded"] == [] and len(again["duplicates"]) == 2


def test_serve_answers_over_http_while_a_batch_writes_the_same_state(tmp_path: Path, kb: KnowledgeBase) -> None:
    # Given `rxguard serve --state DIR` in its own process
    args = [sys.executable, "-m", "rxguard_tools.cli", "serve", "--port", "0", "--state", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    proc = subprocess.Popen(
        [*args, "--max-seconds", "120"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line and str(tmp_path) in line, line
        base = line.split("listening on ", 1)[1].split()[0]

        def get(path: str) -> dict[str, Any]:
            with urllib.request.urlopen(base + path, timeout=30) as response:
                assert response.status == 200
                return dict(json.loads(response.read()))

        # When this process screens the sample batches into the state, one after the
        # other, with serve asked for the findings between and during them
        repo = State.open(tmp_path).repository()
        before = get("/v1/findings?limit=500")["items"]
        for name in ("01_shanghai_his_utf8.csv", "02_hebei_his_gb18030.csv", "03_yulin_bom.csv"):
            lines = batch_lines(kb, name)
            for start in range(0, len(lines), 10):
                screen_lines(lines[start : start + 10], repo, kb)
                get("/v1/findings?limit=5")
        # Then serve lists every finding the batches wrote, from its own process
        after = get("/v1/findings?limit=500")["items"]
        # And the console is mounted at / (the page, not the API's 404)
        with urllib.request.urlopen(base + "/", timeout=30) as response:
            assert response.status == 200 and "text/html" in response.headers["Content-Type"]
        assert before == []
        assert sorted(f["finding_id"] for f in after) == sorted(f.finding_id for f in repo.all_current_findings())
        assert after
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_paths_outside_v1_go_to_the_console(tmp_path: Path, kb: KnowledgeBase) -> None:
    # Given a console factory (stands in for rxguard.console.app.console_app)
    seen: list[Any] = []

    def console_app(services: Any) -> Any:
        seen.append(services)

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"console": environ["PATH_INFO"]}).encode()]

        return app

    # When serve's app is built over a state with it and asked for console and API paths
    services = local_services(State.open(tmp_path), ApiSettings(auth_mode="open"))
    client = Client(site_app(services, services_invoke(services), 256 * 1024, console_app))
    # Then /v1/... is the API, everything else the console, built over the same services
    assert client("GET", "/")[1] == {"console": "/"}
    assert client("GET", "/findings/abc")[1] == {"console": "/findings/abc"}
    status, rules = client("GET", "/v1/rules")
    assert status == 200 and {r["id"] for r in rules["rules"]} == set(kb.rules)
    assert seen == [services]


def _refill_check(client: Client, psn: str, day: str) -> set[str]:
    """The rules a metformin purchase on `day` draws through serve's POST /v1/checks."""
    body = {
        "psn_no": psn,
        "fixmedins_code": "P4401001",
        "admdvs": "610800",
        "med_type": "41",
        "fee_ocur_time": f"{day} 10:00:00",
        "lines": [{"feedetl_sn": "CHK-1", "med_list_codg": "XA10BA02A001", "cnt": 2, "pric": 21.6}],
    }
    status, answer = client("POST", "/v1/checks", body)
    assert status == 200, answer
    return {hit["rule_id"] for hit in answer["lines"][0]["hits"]}


def _earlier_visit(client: Client, psn: str) -> None:
    """Some history for the patient, not of metformin (a history the checks keep)."""
    body = json.loads(load_event("api/dispensation.json")["body"])
    body.update(psn_no=psn, fee_ocur_time="2026-02-01 10:00:00", lines=[body["lines"][1]])
    status, answer = client("POST", "/v1/dispensations", body)
    assert status == 200 and len(answer["recorded"]) == 1, answer


SUPPLY = {"early-refill", "cumulative-oversupply", "cross-institution-repeat"}


def test_a_check_sees_a_dispensation_recorded_through_3102_since_the_last_check(tmp_path: Path) -> None:
    # Given serve, a patient with some history, and a check of a metformin refill: nothing to say
    client = serve_app(tmp_path)
    dispensed = json.loads(load_event("api/dispensation_3102.json")["body"])
    psn = dispensed["data"]["patient_dtos"][0]["patn_id"]
    _earlier_visit(client, psn)
    assert not _refill_check(client, psn, "2026-03-03") & SUPPLY
    assert not _refill_check(client, psn, "2026-03-03") & SUPPLY  # (the history kept by now)
    # When a 12-pack metformin dispensation of 2026-03-01 is recorded through 3102
    status, answer = client("POST", "/v1/dispensations", dispensed)
    assert status == 200, answer
    # Then the same check two days later draws a supply finding against it
    assert _refill_check(client, psn, "2026-03-03") & SUPPLY


def test_a_check_sees_lines_another_process_recorded_since_the_last_check(tmp_path: Path, kb: KnowledgeBase) -> None:
    # Given serve, a patient with some history, and a check of a metformin refill: nothing to say
    client = serve_app(tmp_path)
    psn = "SYN0000000009"
    _earlier_visit(client, psn)
    assert not _refill_check(client, psn, "2026-03-03") & SUPPLY
    # When `rxguard run` (another State on the directory, as another process has) screens a
    # batch with a 12-pack metformin purchase of 2026-03-01 for the patient
    bought = make_line(
        kb, psn_no=psn, fixmedins_code="H6108001", drug_code="XA10BA02A001", feedetl_sn="RUN-1",
        when="2026-03-01 09:40:00", packs=12, admdvs="610800",
    )  # fmt: skip
    with State.open(tmp_path) as run:
        assert screen_lines([bought], run.repository(), kb, scene=Scene.POST).recorded
    # Then the same check draws a supply finding against it
    assert _refill_check(client, psn, "2026-03-03") & SUPPLY


def test_a_checks_access_record_and_warnings_are_one_write(tmp_path: Path, monkeypatch: Any) -> None:
    # Given serve over a state, a patient with a 12-pack metformin purchase, and the state's writes counted
    client = serve_app(tmp_path)
    psn = "SYN0000000007"
    _earlier_visit(client, psn)
    body = json.loads(load_event("api/dispensation.json")["body"])
    body.update(psn_no=psn, lines=[{**body["lines"][0], "cnt": 12, "drug_trac_codg": []}])
    assert client("POST", "/v1/dispensations", body)[0] == 200
    writes: list[str] = []
    original = State.write

    def counted(self: State, what: str = "write") -> Any:
        writes.append(what)
        return original(self, what)

    monkeypatch.setattr(State, "write", counted)
    # When a refill two days later is checked
    status, answer = client(
        "POST",
        "/v1/checks",
        {**body, "fee_ocur_time": "2026-03-03 10:00:00", "lines": [{**body["lines"][0], "feedetl_sn": "CHK-9"}]},
    )
    # Then the check wrote once: its access record and its warnings together
    assert status == 200 and writes == ["record a check"]
    warned = [hit["finding_id"] for hit in answer["lines"][0]["hits"]]
    assert warned and all(client("GET", f"/v1/findings/{jr_id}")[0] == 200 for jr_id in warned)
    status, audit = client("GET", "/v1/audit?limit=500")
    assert status == 200 and [r["decision"] for r in audit["items"] if r["action"] == "check"] == [
        answer["lines"][0]["decision"]
    ]
