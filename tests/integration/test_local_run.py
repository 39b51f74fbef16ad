"""`rxguard run --state`: the local deployment's orchestrator on the SQLite state
(docs/local.md): output contract, re-runs, incremental use, kills, alerts and letters."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxguard.alerts.settings import AlertSettings
from rxguard.local.backend import MemoryBackend, SqliteBackend
from rxguard.local.objects import LocalObjects
from rxguard.local.orchestrator import LocalOrchestrator
from rxguard_tools.local_cli import main, run
from tests.conftest import CHILD_PYTHONPATH

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "events" / "batches"
SAMPLE_FILES = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".csv", ".jsonl", ".json"))
SCHEMA = json.loads((ROOT / "docs" / "alert-message.schema.json").read_text(encoding="utf-8"))
NO_LETTERS = '{"letters_enabled": false}'

pytestmark = pytest.mark.slow


@pytest.fixture
def no_letters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RXGUARD_ALERTS_CONFIG", NO_LETTERS)


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A small synthetic population, one claim file a month (rxguard synth)."""
    from rxguard.kb import get_knowledge_base
    from rxguard_tools.synth.generator import SynthConfig, generate
    from rxguard_tools.synth.output import write_population

    out = tmp_path_factory.mktemp("population")
    config = SynthConfig(patients=40, seed=11, months=4, start=date(2026, 1, 1), min_per_scenario=2)
    return write_population(generate(config, get_knowledge_base()), out)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _lines(path)]


def _engine_findings(files: list[Path]) -> list[dict[str, Any]]:
    """The engine alone over the same lines (in memory), as the e2e test of the moto path does."""
    from rxguard import screening
    from rxguard.engine import finding_scope
    from rxguard.ingest import read_batch
    from rxguard.kb import get_knowledge_base
    from rxguard.models import ClaimLine
    from rxguard.repository import InMemoryRepository

    kb = get_knowledge_base()
    lines = [x for path in files for x in read_batch(path, kb) if isinstance(x, ClaimLine)]
    repo = InMemoryRepository()
    screening.screen_lines(lines, repo, kb)
    _, institution = screening.institution_findings_from_lines(lines, repo.all_current_findings(), kb)
    screening.replace_institution_findings(repo, institution, {finding_scope(f) for f in institution})
    return [f.model_dump(mode="json") for f in repo.all_current_findings()]


# ------------------------------------------------------------------ the output contract
def test_rxguard_run_writes_the_contract_and_finds_exactly_what_the_engine_finds(tmp_path: Path) -> None:
    # Given the sample batches of every format
    out, stdout = tmp_path / "out", io.StringIO()
    # When they run through the local deployment (two worker processes)
    code = run(SAMPLE_FILES, out, state=out / "state", workers=2, stdout=stdout)
    # Then the findings are the engine's, field by field, and every output is there
    findings = _jsonl(out / "findings.jsonl")
    assert code == 0
    assert findings == _engine_findings(SAMPLE_FILES)
    report = json.loads((out / "report.json").read_text())
    assert report["state"] == str((out / "state").resolve())
    assert [b["status"] for b in report["batches"]] == ["SUCCEEDED"] * len(SAMPLE_FILES)
    assert report["totals"]["rejected_lines"] == len(_lines(out / "rejected.jsonl")) > 0
    alerts, letters = _jsonl(out / "alerts.jsonl"), _jsonl(out / "letters.jsonl")
    assert {a["body"]["message_type"] for a in alerts} == {"finding", "digest"}
    for message in alerts + letters:
        jsonschema.validate(message["body"], SCHEMA)
    high = {f["finding_id"] for f in findings if f["severity"] == "high"}
    assert {a["body"]["finding"]["finding_id"] for a in alerts if a["body"]["message_type"] == "finding"} == high
    assert letters and all((out / lt["body"]["locations"]["pdf"]).is_file() for lt in letters)
    # and the summary says where the state lives, never printing a patient number in clear
    printed = stdout.getvalue()
    assert f"State: {(out / 'state').resolve()}" in printed
    assert not [f["psn_no"] for f in findings if f["psn_no"] and f["psn_no"] in printed]


def test_letters_built_in_the_worker_processes_are_the_letters_built_in_process(tmp_path: Path) -> None:
    # Given the sample batches screened twice into fresh states: in this process, and over two workers
    outs = {n: tmp_path / f"w{n}" for n in (1, 2)}
    for n, out in outs.items():
        assert run(SAMPLE_FILES, out, state=out / "state", workers=n, stdout=io.StringIO()) == 0
    # Then the workers' letters (built and rendered there, stored and announced here in order)
    # are the same files and the same announcements, byte for byte
    # (the workers store the documents themselves: HTML, annexes; the index is stored here)
    files = {
        n: {p.relative_to(out): p.read_bytes() for p in (out / "letters").rglob("*") if p.is_file()}
        for n, out in outs.items()
    }
    assert any(p.suffix == ".html" for p in files[1]) and files[1] == files[2]
    assert (outs[1] / "letters.jsonl").read_bytes() == (outs[2] / "letters.jsonl").read_bytes()
    assert (outs[1] / "alerts.jsonl").read_bytes() == (outs[2] / "alerts.jsonl").read_bytes()


def test_a_file_given_again_is_recognised_and_changes_nothing(tmp_path: Path, no_letters: None) -> None:
    # Given a state that has screened the samples
    out = tmp_path / "out"
    assert run(SAMPLE_FILES, out, state=tmp_path / "state") == 0
    before = _lines(out / "findings.jsonl")
    # When the same files are given again (one twice in the same call)
    stdout = io.StringIO()
    code = run([*SAMPLE_FILES, SAMPLE_FILES[0]], out, state=tmp_path / "state", stdout=stdout)
    # Then each is recognised, nothing is published and the findings are the same
    report = json.loads((out / "report.json").read_text())
    assert code == 0
    assert {b["status"] for b in report["batches"]} == {"DUPLICATE"}, [
        (b["key"], b["status"], b["report"]) for b in report["batches"]
    ]
    assert "ALREADY PROCESSED" in stdout.getvalue()
    assert _lines(out / "findings.jsonl") == before
    assert _lines(out / "alerts.jsonl") == [] and _lines(out / "rejected.jsonl") == []


def test_usage_errors_and_the_default_state_folder(tmp_path: Path, no_letters: None) -> None:
    assert main(["no/such/file.csv", "--out", str(tmp_path)]) == 64
    assert main([str(SAMPLE_FILES[0])]) == 64
    assert main([str(SAMPLE_FILES[0]), "--out", str(tmp_path / "o"), "--workers", "0"]) == 64
    # without --state the state lives in OUT/state
    assert main([str(SAMPLE_FILES[0]), "--out", str(tmp_path / "o"), "--quiet", "--workers", "1"]) == 0
    assert (tmp_path / "o" / "state" / "state.db").is_file()


# ------------------------------------------------------------------ incremental use
def _findings_after(invocations: list[list[Path]], root: Path) -> list[str]:
    state = root / "state"
    for n, files in enumerate(invocations):
        assert run(files, root / f"out{n}", state=state, stdout=io.StringIO()) == 0
    return _lines(root / f"out{len(invocations) - 1}" / "findings.jsonl")


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_months_one_invocation_at_a_time_give_the_findings_of_one_run(
    data: st.DataObject, population: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    os.environ["RXGUARD_ALERTS_CONFIG"] = NO_LETTERS
    try:
        # Given the monthly files of a population, in an order and grouping hypothesis picks
        order = data.draw(st.permutations(population))
        cuts = data.draw(st.sets(st.integers(1, len(order) - 1)))
        bounds = [0, *sorted(cuts), len(order)]
        invocations = [list(order[a:b]) for a, b in itertools.pairwise(bounds)]
        root = tmp_path_factory.mktemp("split")
        # When each group runs as its own invocation against one state, and all files in one run
        split = _findings_after(invocations, root / "split")
        single = _findings_after([population], root / "single")
    finally:
        del os.environ["RXGUARD_ALERTS_CONFIG"]
    # Then the findings are identical: ids, rules, severities, evidence, figures
    assert split == single
    assert len(single) > 20


# ------------------------------------------------------------------ kills and failures
@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_killed_between_chunks_is_marked_failed_and_the_next_run_converges(
    tmp_path: Path, population: list[Path], monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    env = {**os.environ, "RXGUARD_ALERTS_CONFIG": NO_LETTERS, "RXGUARD_CHUNK_SIZE": "60"}
    monkeypatch.setenv("RXGUARD_ALERTS_CONFIG", NO_LETTERS)
    monkeypatch.setenv("RXGUARD_CHUNK_SIZE", "60")
    files = population[:2]
    # Given a clean run of two months
    assert run(files, tmp_path / "clean", state=tmp_path / "clean-state", stdout=io.StringIO()) == 0
    clean = _lines(tmp_path / "clean" / "findings.jsonl")
    # When a run on a fresh state dies (os._exit) after two chunks of the first batch
    script = (
        "import sys; from pathlib import Path; from rxguard_tools.local_cli import run; "
        "run([Path(p) for p in sys.argv[4:]], Path(sys.argv[1]), state=Path(sys.argv[2]), crash_after_chunks=2, "
        "workers=int(sys.argv[3]))"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "o1"), str(tmp_path / "state"), str(workers), *map(str, files)],
        env={**env, "PYTHONPATH": CHILD_PYTHONPATH},
        capture_output=True,
        timeout=300,
    )
    # (its output pipes closed: every worker and the worker server ended with it, none kept
    # waiting for tasks with the state open; subprocess.run would time out otherwise)
    assert killed.returncode == 137, killed.stderr.decode()[-2000:]
    # (the lines of the chunks it counted are in the state: with workers, written by this
    # process, the one writer, before it counted them)
    from rxguard.local.state import State

    with State.open(tmp_path / "state") as state:
        assert state.repository().count_lines() >= 2
    # and the next run is given the same files
    stdout = io.StringIO()
    code = run(files, tmp_path / "o2", state=tmp_path / "state", stdout=stdout)
    # Then the interrupted batch was marked FAILED with the reason, re-screened, and the
    # state holds exactly the findings of the clean run
    report = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert code == 0
    assert len(report["interrupted_batches_marked_failed"]) == 1
    assert [b["status"] for b in report["batches"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert _lines(tmp_path / "o2" / "findings.jsonl") == clean
    # and every high finding was alerted exactly once over both runs
    alerts = [a for a in _jsonl(tmp_path / "o2" / "alerts.jsonl") if a["body"]["message_type"] == "finding"]
    ids = [a["body"]["finding"]["finding_id"] for a in alerts]
    assert len(ids) == len(set(ids))
    assert set(ids) == {json.loads(x)["finding_id"] for x in clean if json.loads(x)["severity"] == "high"}


def test_a_chunk_that_fails_makes_the_batch_partial_and_a_rerun_completes_it(
    tmp_path: Path, population: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rxguard.local import orchestrator as orch
    from rxguard.workflow import screen as screen_module

    monkeypatch.setenv("RXGUARD_CHUNK_SIZE", "60")
    monkeypatch.setenv("RXGUARD_ALERTS_CONFIG", NO_LETTERS)
    files = population[:1]
    assert run(files, tmp_path / "clean", state=tmp_path / "clean-state", stdout=io.StringIO()) == 0
    # Given a worker that raises on the third chunk (in process: workers=1)
    real = screen_module.screen_chunk
    calls = {"n": 0}

    def flaky(request: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(request, **kwargs)

    monkeypatch.setattr(orch, "screen_chunk", flaky)
    # When the file runs: the chunk is caught as the ASL's ChunkFailed does, the batch is PARTIAL
    assert run(files, tmp_path / "o1", state=tmp_path / "state", stdout=io.StringIO()) == 2
    report = json.loads((tmp_path / "o1" / "report.json").read_text())
    assert report["batches"][0]["status"] == "PARTIAL"
    assert report["batches"][0]["report"]["chunks"]["missing"] == 1
    chunk_files = tmp_path / "state" / "results" / "chunks"
    assert list(chunk_files.rglob("*.jsonl"))  # a PARTIAL batch keeps its chunk files
    # and given again once the fault is gone, the batch is re-screened to the clean result
    monkeypatch.setattr(orch, "screen_chunk", real)
    assert run(files, tmp_path / "o2", state=tmp_path / "state", stdout=io.StringIO()) == 0
    assert _lines(tmp_path / "o2" / "findings.jsonl") == _lines(tmp_path / "clean" / "findings.jsonl")
    # and once it has SUCCEEDED its chunk files (intermediate patient data) are gone from the state
    assert not list(chunk_files.rglob("*.jsonl"))
    assert list((tmp_path / "clean-state" / "results" / "batches").rglob("report.json"))


# ------------------------------------------------------------------ alerts and letters within a run
def test_files_given_together_alert_and_cite_only_findings_current_after_the_run(
    tmp_path: Path, population: list[Path]
) -> None:
    # Given months given together latest first: the earlier months supersede findings of the later
    out = tmp_path / "out"
    # When they run in one invocation
    assert run(population[::-1], out, state=out / "state", stdout=io.StringIO()) == 0
    report = json.loads((out / "report.json").read_text())
    superseded = sum(b["report"]["findings"]["superseded"] for b in report["batches"])
    assert superseded > 0, "the order supersedes nothing: the test would prove nothing"
    # Then every alert and every letter names only findings current after the run, once
    current = {f["finding_id"]: f for f in _jsonl(out / "findings.jsonl")}
    alerts = _jsonl(out / "alerts.jsonl")
    alerted = [a["body"]["finding"]["finding_id"] for a in alerts if a["body"]["message_type"] == "finding"]
    assert alerted and set(alerted) <= set(current) and len(alerted) == len(set(alerted))
    assert set(alerted) == {i for i, f in current.items() if f["severity"] == "high"}
    cited = {i for lt in _jsonl(out / "letters.jsonl") for i in lt["body"]["finding_ids"]}
    assert cited and cited <= set(current)
    # and nothing was alerted before, so nothing needs a correction
    assert not [a for a in alerts if a["body"]["message_type"] == "correction"]


def test_an_alerted_finding_superseded_by_a_later_run_gets_a_correction(
    tmp_path: Path, population: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RXGUARD_ALERTS_CONFIG", '{"letters_enabled": false, "alert_min_severity": "low"}')
    # Given the later months screened and every finding alerted in one run
    state = tmp_path / "state"
    assert run(population[1:], tmp_path / "o1", state=state, stdout=io.StringIO()) == 0
    alerts1 = _jsonl(tmp_path / "o1" / "alerts.jsonl")
    first = {a["body"]["finding"]["finding_id"] for a in alerts1 if a["body"]["message_type"] == "finding"}
    # When the earlier months come in a later run
    assert run(population[:1], tmp_path / "o2", state=state, stdout=io.StringIO()) == 0
    # Then exactly the alerted findings that are no longer current get a correction, valid by the schema
    current = {f["finding_id"] for f in _jsonl(tmp_path / "o2" / "findings.jsonl")}
    alerts2 = _jsonl(tmp_path / "o2" / "alerts.jsonl")
    corrections = [a for a in alerts2 if a["body"]["message_type"] == "correction"]
    for message in corrections:
        jsonschema.validate(message["body"], SCHEMA)
    assert first - current, "nothing alerted was superseded: the test would prove nothing"
    assert {c["body"]["finding_id"] for c in corrections} == first - current
    assert all(c["body"]["corrects"] == f"finding/{c['body']['finding_id']}" for c in corrections)


def test_messages_left_pending_by_a_failed_delivery_are_published_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_letters: None
) -> None:
    from rxguard.local import orchestrator as orch

    # Given a run whose delivery fails after three messages
    real = orch.deliver_pending

    def failing(outbox: Any, out: Path) -> Any:
        from rxguard.alerts.outbox import OutboxEntry

        taken: list[OutboxEntry] = outbox.pending()[:3]
        outbox.mark_sent([e.message_id for e in taken])
        raise ConnectionError("sink unreachable")

    monkeypatch.setattr(orch, "deliver_pending", failing)
    with pytest.raises(ConnectionError):
        run(SAMPLE_FILES[2:3], tmp_path / "o1", state=tmp_path / "state", stdout=io.StringIO())
    # When the next run starts (nothing new to screen)
    monkeypatch.setattr(orch, "deliver_pending", real)
    assert run(SAMPLE_FILES[3:4], tmp_path / "o2", state=tmp_path / "state", stdout=io.StringIO()) == 0
    # Then it publishes what the failed one left pending, once
    backend = SqliteBackend(tmp_path / "state")
    try:
        assert backend.outbox().pending() == []
    finally:
        backend.close()
    published = [a["message_id"] for a in _jsonl(tmp_path / "o2" / "alerts.jsonl")]
    assert len(published) == len(set(published))
    assert any(m.startswith("digest/") for m in published)


def test_the_memory_backend_runs_the_same_steps(tmp_path: Path, kb: Any) -> None:
    # Given / When the samples through the orchestrator on the in-memory backend
    backend = MemoryBackend(kb)
    orchestrator = LocalOrchestrator(
        backend=backend,
        results=LocalObjects(tmp_path / "results"),
        out=tmp_path,
        kb=kb,
        alert_settings=AlertSettings(letters_enabled=False),
    )
    result = orchestrator.run(SAMPLE_FILES)
    # Then the findings are the engine's
    assert [b.status for b in result.batches] == ["SUCCEEDED"] * len(SAMPLE_FILES)
    assert [f.model_dump(mode="json") for f in backend.current_findings()] == _engine_findings(SAMPLE_FILES)


def test_make_run_with_relative_folders_writes_its_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the folders `make run` gives: relative to the working directory
    sample = (Path(__file__).resolve().parents[2] / "events/batches/01_shanghai_his_utf8.csv").resolve()
    monkeypatch.chdir(tmp_path)
    # When the local run writes its objects (their locations are file:// URIs)
    assert main([str(sample), "--state", "out/state", "--out", "out"]) == 0
    # Then the outputs and the state are where the relative paths say
    assert (tmp_path / "out/findings.jsonl").read_text(encoding="utf-8").strip()
    assert (tmp_path / "out/state/state.db").is_file()


def test_trace_codes_settled_in_small_slices_give_the_engines_findings(
    tmp_path: Path, kb: Any, population: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the trace codes settled after the Map a few at a time (one transaction a slice)
    from rxguard.local import orchestrator as local

    monkeypatch.setattr(local, "SETTLE_SLICE", 3)
    # When a population with resold packs runs through the orchestrator on the SQLite state
    backend = SqliteBackend(tmp_path / "state")
    orchestrator = LocalOrchestrator(
        backend=backend,
        results=LocalObjects(tmp_path / "state" / "results"),
        out=tmp_path,
        kb=kb,
        alert_settings=AlertSettings(letters_enabled=False),
    )
    result = orchestrator.run(population)
    found = [f.model_dump(mode="json") for f in backend.current_findings()]
    backend.close()
    # Then the findings are the engine's, trace-code reuse among them
    assert [b.status for b in result.batches] == ["SUCCEEDED"] * len(population)
    assert found == _engine_findings(population)
    assert any(f["rule_id"] == "trace-code-reuse" for f in found)
