"""The local orchestrator and the ASL call the same steps, in the same order, with the
same payload models (docs/local.md). The ASL side runs on moto through the offline
harness, whose router records every Lambda invocation with its event and result."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from rxguard.local.backend import SqliteBackend
from rxguard.workflow import contract
from rxguard.workflow.naming import S3ObjectRef
from rxguard_tools.local_cli import run
from rxguard_tools.offline import Environment

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "events" / "batches" / "03_yulin_bom.csv"
SETTINGS = {"RXGUARD_ALERTS_CONFIG": '{"letters_enabled": false}', "RXGUARD_CHUNK_SIZE": "20"}

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _quiet_moto() -> None:
    logging.getLogger("moto").setLevel(logging.CRITICAL)


def _asl_step(logical_id: str, event: dict[str, Any], result: Any) -> tuple[str, str, str]:
    """The ASL state a recorded invocation served, and the payload models its event and
    result validate as (the handlers build exactly these from their events)."""

    def both(request: type[BaseModel], output: type[BaseModel] | None, data: Any = event) -> tuple[str, str]:
        request.model_validate(data)
        if output is not None:
            output.model_validate(result)
        return request.__name__, output.__name__ if output is not None else type(result).__name__

    if logical_id == "PrepareFunction":
        req = {"source": S3ObjectRef.from_detail(event["detail"]), "execution_id": event["execution_id"]}
        return ("Prepare", *both(contract.PrepareRequest, contract.PrepareOutput, req))
    if logical_id == "ScreenFunction" and event.get("mode") == "institutions":
        return ("ScreenInstitutions", *both(contract.InstitutionsRequest, contract.ChunkResult))
    if logical_id == "ScreenFunction":
        return ("ScreenChunk", *both(contract.ChunkRequest, contract.ChunkResult))
    if logical_id == "NotifyFunction":
        return ("Notify", *both(contract.NotifyRequest, None))
    if logical_id == "FinalizeFunction":
        name = "Finalize" if event.get("mode") == "complete" else "RecordFailure"
        return (name, *both(contract.FinalizeRequest, contract.FinalizeResult))
    raise AssertionError(f"unexpected function {logical_id}")


@pytest.fixture
def asl_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, str]]]:
    from rxguard.observability import metrics

    # this module imported the layer (and made its Metrics) before the harness set the namespace
    monkeypatch.setattr(metrics.provider, "namespace", metrics.provider.namespace or "Rxguard")
    with (
        (tmp_path / "functions.log").open("w") as log,
        Environment(
            handler_output=log,
            base_environment={"RXGUARD_ALERTS_CONFIG": SETTINGS["RXGUARD_ALERTS_CONFIG"]},
            parameters={"ScreenChunkSize": SETTINGS["RXGUARD_CHUNK_SIZE"]},
        ) as env,
    ):
        started = env.drop(SAMPLE, key=SAMPLE.name)
        env.wait([started[-1]], timeout=600)
        assert started[-1].status == "SUCCEEDED", (
            started[-1].error,
            started[-1].cause,
            [(c.logical_id, c.error_type) for c in env.router.calls],
        )
        yield [_asl_step(c.logical_id, c.event, c.result) for c in env.router.calls if c.error_type is None]


def test_the_local_orchestrator_calls_the_asl_steps_in_order_with_the_same_payload_models(
    asl_steps: list[tuple[str, str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the same batch and settings on both paths (several chunks)
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    # When the local orchestrator runs it on a state
    from rxguard.local import orchestrator

    recorded: list[tuple[str, str, str]] = []
    real = orchestrator.LocalOrchestrator.run

    def spy(self: orchestrator.LocalOrchestrator, files: Any) -> Any:
        result = real(self, files)
        recorded.extend(self.steps)
        return result

    monkeypatch.setattr(orchestrator.LocalOrchestrator, "run", spy)
    assert run([SAMPLE], tmp_path / "out", state=tmp_path / "state", stdout=io.StringIO()) == 0
    # Then the steps, their order and their payload models are the ASL's
    chunks = sum(1 for step in asl_steps if step[0] == "ScreenChunk")
    assert chunks > 1, "one chunk: the Map's order would not be tested"
    assert recorded == asl_steps
    assert [s[0] for s in recorded] == [
        "Prepare",
        *["ScreenChunk"] * chunks,
        "ScreenInstitutions",
        "Notify",
        "Finalize",
    ]


def test_the_state_left_by_the_local_run_is_readable_by_a_new_backend(tmp_path: Path, monkeypatch: Any) -> None:
    # Given a local run
    monkeypatch.setenv("RXGUARD_ALERTS_CONFIG", SETTINGS["RXGUARD_ALERTS_CONFIG"])
    assert run([SAMPLE], tmp_path / "out", state=tmp_path / "state", stdout=io.StringIO()) == 0
    # When the state is opened again (as `rxguard serve --state` does)
    backend = SqliteBackend(tmp_path / "state")
    try:
        findings = [f.model_dump_json() for f in backend.current_findings()]
        batches = backend.all_batches()
    finally:
        backend.close()
    # Then it holds the run's findings and its finished batch
    assert len(findings) == len((tmp_path / "out" / "findings.jsonl").read_text().splitlines()) > 0
    assert [b["status"] for b in batches] == ["SUCCEEDED"]
