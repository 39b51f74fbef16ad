"""The console's WSGI app and read model without a browser: access, reviews, exports,
the funnel plot's limits, the timeline's overlaps, the risk seam and the audit."""

from __future__ import annotations

import html
import io
import json
import logging
import sys
import types
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest

from rxguard.api.service import Services
from rxguard.api.settings import ApiSettings
from rxguard.api.store import InMemoryFindingsStore
from rxguard.console import BatchRecord, ConsoleSources, console_app
from rxguard.console import readmodel as rm
from rxguard.console.demo import screen_files
from rxguard.engine.institutions import ActivityAggregate
from rxguard.models import InstitutionKind, Rejection
from rxguard.privacy import Pseudonymizer
from rxguard.repository import InMemoryRepository

ROOT = Path(__file__).resolve().parents[2]
BATCHES = sorted((ROOT / "events" / "batches").glob("0*"))
REGULATOR = "arn:aws:iam::1:user/inspector"
HOSPITAL = "arn:aws:iam::1:user/his"
KEY = Pseudonymizer("unit-tests-key-0123456789abcdef")


@pytest.fixture(scope="module")
def state(kb: Any) -> tuple[Services, ConsoleSources]:
    callers = {REGULATOR: {"regulator": True}, HOSPITAL: {"institutions": ["H3101050003"]}}
    settings = ApiSettings.model_validate({"auth_mode": "enforce", "callers": callers})
    repo = InMemoryRepository()
    services = Services(kb=kb, repo=repo, store=InMemoryFindingsStore(repo), settings=settings)
    sources = ConsoleSources.for_repository(repo, kb)
    screen_files(services, sources, BATCHES)
    return services, sources


def call(
    app: Any, path: str, *, method: str = "GET", form: dict[str, Any] | None = None, caller: str = REGULATOR, **env: str
) -> tuple[int, dict[str, str], str]:
    body = urlencode(form or {}, doseq=True).encode()
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    target, _, query = path.partition("?")
    environ.update(
        {
            "PATH_INFO": target,
            "QUERY_STRING": query,
            "REQUEST_METHOD": method,
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "wsgi.input": io.BytesIO(body),
            "HTTP_X_RXGUARD_CALLER": caller,
            **env,
        }
    )
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    data = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], data.decode("utf-8", errors="replace")


@pytest.fixture
def app(state: tuple[Services, ConsoleSources]) -> Any:
    return console_app(*state, pseudonymizer=KEY)


def test_every_page_answers_with_a_strict_content_security_policy(app: Any, state: Any) -> None:
    services, _ = state
    finding = services.repo.all_current_findings()[0]
    for path in ["/", "/rules", "/batches", "/docs", f"/findings/{finding.finding_id}"]:
        status, headers, body = call(app, path)
        assert status == 200, path
        assert headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert "http://" not in body and "https://" not in body  # nothing from elsewhere


def test_static_files_stay_inside_the_package(app: Any) -> None:
    assert call(app, "/static/vendor/echarts.min.js")[0] == 200
    assert call(app, "/static/../app.py")[0] == 404
    assert call(app, "/static/vendor/../../app.py")[0] == 404
    assert call(app, "/static/%2e%2e/app.py")[0] == 404


def test_openapi_served_to_the_docs_is_the_checked_in_document(app: Any) -> None:
    status, _, body = call(app, "/docs/openapi.json")
    assert status == 200
    assert json.loads(body) == json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))


def test_a_review_needs_a_reason_a_regulator_and_the_same_origin(app: Any, state: Any) -> None:
    services, _ = state
    finding = next(f for f in services.repo.all_current_findings() if f.status == "new")
    path = f"/findings/{finding.finding_id}/review"
    assert call(app, path, method="POST", form={"status": "confirmed", "reason": ""})[0] == 400
    assert call(app, path, method="POST", form={"status": "confirmed", "reason": "x"}, caller=HOSPITAL)[0] in (403, 404)
    cross = call(app, path, method="POST", form={"status": "confirmed", "reason": "x"}, HTTP_ORIGIN="http://evil.test")
    assert cross[0] == 403
    assert services.store.get(finding.finding_id).review is None
    status, headers, _ = call(app, path, method="POST", form={"status": "confirmed", "reason": "核实"})
    assert status == 303 and headers["Location"] == f"/findings/{finding.finding_id}"
    assert services.store.get(finding.finding_id).review.reason == "核实"


def test_bulk_review_checks_every_finding_before_writing_any(app: Any, state: Any) -> None:
    services, _ = state
    open_ = [f for f in services.repo.all_current_findings() if f.status == "new"][:2]
    ids = [f.finding_id for f in open_] + ["0" * 32]
    status, _, _ = call(app, "/review", method="POST", form={"finding_id": ids, "status": "dismissed", "reason": "r"})
    assert status == 404
    assert all(services.store.get(f.finding_id).review is None for f in open_)
    form = {"finding_id": ids[:2], "status": "dismissed", "reason": "r", "back": "/?rule=x"}
    status, headers, _ = call(app, "/review", method="POST", form=form)
    assert status == 303 and headers["Location"] == "/?rule=x&done=2"
    assert {services.store.get(i).status for i in ids[:2]} == {"dismissed"}


def test_an_institution_sees_only_its_own_findings(app: Any, state: Any) -> None:
    services, _ = state
    status, _, body = call(app, "/", caller=HOSPITAL)
    assert status == 200
    mine = [f for f in services.repo.all_current_findings() if f.fixmedins_code == "H3101050003"]
    assert f"共 {len(mine)} 条线索" in body
    assert call(app, "/batches", caller=HOSPITAL)[0] == 403
    assert call(app, "/", caller="arn:aws:iam::1:user/nobody")[0] == 403


def test_rejected_lines_csv_neutralises_formulas(kb: Any) -> None:
    repo = InMemoryRepository()
    services = Services(kb=kb, repo=repo, store=InMemoryFindingsStore(repo), settings=ApiSettings(auth_mode="open"))
    sources = ConsoleSources.for_repository(repo, kb)
    bad = Rejection(file="a.csv", line=3, field="cnt", reason="not_positive", message="=HYPERLINK(1)", line_id=None)
    sources.batches.put(BatchRecord(batch_id="b1", status="PARTIAL", rejected=1), [bad])  # type: ignore[union-attr]
    status, headers, body = call(console_app(services, sources), "/batches/b1/rejected.csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert body.lstrip("\ufeff").splitlines()[1] == "a.csv,3,cnt,not_positive,'=HYPERLINK(1),"
    assert call(console_app(services, sources), "/batches/nope/rejected.csv")[0] == 404


def test_funnel_limits_and_position() -> None:
    def agg(code: str, lines: int, flagged: int) -> ActivityAggregate:
        return ActivityAggregate(
            "institution",
            code,
            "2026-01",
            InstitutionKind.HOSPITAL,
            lines,
            tuple(f"{code}/{i}" for i in range(flagged)),
        )

    peers = [agg(f"H{i}", 100, 5) for i in range(9)]
    funnel = rm.funnel([*peers, agg("HX", 100, 40)])
    assert funnel.mean == pytest.approx(85 / 1000)
    assert funnel.position("HX") == "above99"
    assert funnel.position("H1") == "within"
    widest, narrowest = funnel.limits[0], funnel.limits[-1]
    assert widest["hi95"] - widest["lo95"] > narrowest["hi95"] - narrowest["lo95"]  # the funnel narrows with volume


def test_timeline_marks_overlaps_and_stacks_them_in_lanes(kb: Any) -> None:
    from rxguard.ingest import normalize_record

    drug = next(d for d in kb.monitored.values() if d.chronic)
    days = drug.days_supply(drug.units_per_pack)

    def line(sn: str, when: str, inst: str) -> Any:
        record = {
            "feedetl_sn": sn,
            "fixmedins_code": inst,
            "psn_no": "P1",
            "med_type": "41",
            "fee_ocur_time": when,
            "med_list_codg": drug.drug_code,
            "cnt": 1,
            "pric": 1,
            "det_item_fee_sumamt": 1,
        }
        return normalize_record(record, kb, file="t", line=1)

    repo = InMemoryRepository()
    repo.record_lines([line("1", "2026-01-01 09:00:00", "P1"), line("2", "2026-01-03 09:00:00", "P2")])
    services = Services(kb=kb, repo=repo, store=InMemoryFindingsStore(repo))
    tl = rm.timeline(services, "P1", [])
    first, second = sorted(tl.fills, key=lambda f: f.start)
    assert first.overlap_days == 0 and first.lane == 0
    assert second.overlap_days == pytest.approx(round(min(days, days - 2), 1))
    assert second.lane == 1 and tl.institutions == ["P1", "P2"]


def test_the_queue_orders_by_patient_risk_when_the_risk_module_exists(
    app: Any, state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, _ = state
    patients = sorted({f.psn_no for f in services.repo.all_current_findings() if f.psn_no})
    favourite = patients[-1]

    def patient_risk(findings: list[Any], reviews: dict[str, Any]) -> dict[str, Any]:
        return {"score": 99.0 if findings[0].psn_no == favourite else 1.0, "parts": {"test": 1}}

    module = types.ModuleType("rxguard.engine.risk")
    module.patient_risk = patient_risk  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rxguard.engine.risk", module)
    rows = rm.review_queue(services, rm.QueueFilter(), None)
    assert rows[0].finding.psn_no == favourite and rows[0].risk.source == "patient_risk"
    assert rows[-1].risk.score == 1.0
    assert "风险分模块尚未启用" not in call(app, "/")[2]


def test_reading_a_patient_timeline_is_audited_without_the_number(
    app: Any, state: Any, caplog: pytest.LogCaptureFixture
) -> None:
    services, _ = state
    psn = next(f.psn_no for f in services.repo.all_current_findings() if f.psn_no)
    token = KEY.psn(psn)
    with caplog.at_level(logging.INFO, logger="rxguard.console.audit"):
        status, _, body = call(app, f"/patients/{token}")
    assert status == 200 and psn not in body
    record = next(r for r in caplog.records if r.name == "rxguard.console.audit")
    assert record.principal == REGULATOR and record.patient == token  # type: ignore[attr-defined]
    assert psn not in record.getMessage()
    from rxguard.api.audit import AuditQuery

    if services.audit is not None:  # and in the API's access log, as a pseudonym (GET /v1/audit)
        logged, _ = services.audit.query(AuditQuery(caller=REGULATOR), 50, None)
        timeline = [r for r in logged if r.detail == "console: patient timeline"]
        assert timeline and timeline[0].patient and timeline[0].patient.startswith("p-")
        assert psn not in timeline[0].model_dump_json()
    assert call(app, f"/patients/{token}", caller=HOSPITAL)[0] == 403
    assert call(app, "/patients/p-" + "0" * 20)[0] == 404


def test_dates_out_of_shape_are_a_clear_400(app: Any) -> None:
    status, _, body = call(app, "/?from=2026-13-01")
    assert status == 400 and "from" in body


def test_english_cookie(app: Any) -> None:
    status, headers, _ = call(app, "/lang?to=en&next=/rules")
    assert status == 303 and headers["Location"] == "/rules" and "rxguard_lang=en" in headers["Set-Cookie"]
    assert "<h1>Rules</h1>" in call(app, "/rules", HTTP_COOKIE="rxguard_lang=en")[2]
    assert call(app, "/lang?to=en&next=//evil.test")[1]["Location"] == "/"


def test_the_console_reads_the_sqlite_state(kb: Any, tmp_path: Path) -> None:
    from rxguard import screening
    from rxguard.ingest import read_batch
    from rxguard.local.state import State
    from rxguard.models import ClaimLine

    state = State.open(tmp_path / "state")
    repo, store = state.repository(), state.findings_store()
    path = BATCHES[0]
    lines = [x for x in read_batch(path, kb) if isinstance(x, ClaimLine)]
    screening.screen_lines(lines, repo, kb)
    now = datetime(2026, 3, 1, 12, 0)
    state.batches().claim("sha256:abc", "exec-1", {"file": path.name}, now)
    report = {"lines_read": 12, "accepted": len(lines), "rejected": 12 - len(lines), "chunks": {"total": 1, "ok": 1}}
    state.batches().finish("sha256:abc", "PARTIAL", report, "report.json", now)
    services = Services(kb=kb, repo=repo, store=store, settings=ApiSettings(auth_mode="open"))
    app = console_app(services, pseudonymizer=KEY)  # sources found from the repository
    current = repo.all_current_findings()
    assert current
    assert f"共 {len(current)} 条线索" in call(app, "/")[2]
    batches = call(app, "/batches")[2]
    assert "sha256:abc" in batches and "部分成功" in batches and path.name in batches
    # the local run keeps the rejected lines under the state folder: the download finds them
    kept = tmp_path / "state" / "results" / "batches" / "sha256:abc" / "rejected.jsonl"
    kept.parent.mkdir(parents=True)
    bad = Rejection(file=path.name, line=7, field="cnt", reason="not_positive", message="cnt is 0", line_id=None)
    kept.write_text(bad.model_dump_json() + "\n", encoding="utf-8")
    csv_text = call(app, "/batches/sha256:abc/rejected.csv")[2]
    assert csv_text.lstrip("\ufeff").splitlines()[1] == f"{path.name},7,cnt,not_positive,cnt is 0,"
    code = next(f.fixmedins_code for f in current if f.fixmedins_code)
    status, _, body = call(app, f"/institutions/{code}")
    assert status == 200 and 'id="funnel-chart"' in body
    fid = current[0].finding_id
    call(app, f"/findings/{fid}/review", method="POST", form={"status": "confirmed", "reason": "ok"})
    assert store.get(fid).status == "confirmed"  # written to the SQLite state
    state.close()


def test_static_site_for_cloudfront_has_the_docs_and_only_local_references(tmp_path: Path) -> None:
    from rxguard.console.static_build import build

    files = build(tmp_path)
    index = (tmp_path / "docs" / "index.html").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "docs" / "openapi.json").read_text()) == json.loads(
        (ROOT / "openapi.json").read_text(encoding="utf-8")
    )
    for ref in ("/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/docs.js", "/docs/openapi.json"):
        assert ref in index
        assert (tmp_path / ref.lstrip("/")).is_file()
    assert "http://" not in index and "https://" not in index
    assert (tmp_path / "static" / "vendor" / "licenses" / "echarts-LICENSE.txt") in files


def test_a_backtest_from_the_rules_page_runs_on_the_stored_history(kb: Any, tmp_path: Path) -> None:
    from rxguard import screening
    from rxguard.ingest import read_batch
    from rxguard.local.state import State
    from rxguard.models import ClaimLine
    from rxguard.planning.backtest import state_planner

    folder = tmp_path / "state"
    state = State.open(folder)
    repo = state.repository()
    for path in BATCHES:
        screening.screen_lines([x for x in read_batch(path, kb) if isinstance(x, ClaimLine)], repo, kb)
    before = [f for f in repo.all_current_findings() if f.rule_id == "early-refill"]
    assert before
    services = Services(
        kb=kb,
        repo=repo,
        store=state.findings_store(),
        settings=ApiSettings(auth_mode="open"),
        planner=state_planner(folder, kb, workers=1),
    )
    app = console_app(services, pseudonymizer=KEY)
    status, _, page = call(app, "/rules/early-refill/backtest")
    assert status == 200 and '"used_fraction": 0.75' in html.unescape(page)
    # a looser rule (the previous supply may be 99% unused): early refills can only disappear
    form = {"parameters": json.dumps({**kb.rules["early-refill"].parameters, "used_fraction": 0.01})}
    status, _, page = call(app, "/rules/early-refill/backtest", method="POST", form=form)
    assert status == 200
    assert f'<dd id="findings-before">{len(repo.all_current_findings())}</dd>' in page
    after = int(page.split('<dd id="findings-after">')[1].split("<")[0])
    assert after < len(repo.all_current_findings())
    assert len(repo.all_current_findings()) == len(state.repository().all_current_findings())  # nothing written
    bad = call(app, "/rules/early-refill/backtest", method="POST", form={"parameters": "{not json"})
    assert bad[0] == 400 and "parameters" in bad[2]
    no_planner = console_app(
        Services(kb=kb, repo=repo, store=state.findings_store(), settings=ApiSettings(auth_mode="open"))
    )
    assert "rxguard serve --state DIR" in call(no_planner, "/rules/early-refill/backtest")[2]
    state.close()


def test_dispositions_give_continue_and_modify_rates_and_show_on_the_finding(app: Any, state: Any) -> None:
    from rxguard.api.models import Disposition

    services, _ = state
    rule = "cross-institution-repeat"
    two = [f for f in services.repo.all_current_findings() if f.rule_id == rule][:2]
    assert len(two) == 2
    at = datetime(2026, 3, 1, 9, 0)
    services.store.dispose(
        two[0].finding_id, Disposition(action="continue", reason="外出", disposer="D1", disposed_at=at)
    )
    services.store.dispose(two[1].finding_id, Disposition(action="modify", disposer="D2", disposed_at=at))
    page = call(app, "/rules")[2]
    row = page.split(f'id="rule-{rule}"')[1].split("</tr>")[0]
    assert "50.0% / 50.0%" in row and "(n=2)" in row
    finding = call(app, f"/findings/{two[0].finding_id}")[2]
    assert "继续执行" in finding and "外出" in finding and 'id="disposition"' in finding
