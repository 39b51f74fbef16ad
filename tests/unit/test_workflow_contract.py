"""The state machine and `rxguard.workflow.contract` agree on every payload: a field the
ASL passes that the model does not know (or the reverse) fails here, not in a batch."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from rxguard.workflow.contract import (
    ChunkFailure,
    ChunkRef,
    ChunkRequest,
    ChunkResult,
    FinalizeRequest,
    InstitutionsRequest,
    NotifyRequest,
    PrepareOutput,
    ok_results,
)
from tests.conftest import ROOT

ASL = json.loads((ROOT / "statemachines" / "claim_batch.asl.json").read_text(encoding="utf-8"))
STATES = ASL["States"]
MAP_STATES = STATES["Screen"]["ItemProcessor"]["States"]


def _keys(parameters: dict[str, Any]) -> set[str]:
    return {key.removesuffix(".$") for key in parameters}


def _fields(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def test_chunk_failed_state_builds_a_chunk_failure():
    # Given the Pass state that the Map's Catch leads to
    failed = MAP_STATES["ChunkFailed"]["Parameters"]
    # Then its output has exactly the fields of ChunkFailure, ok is false, and it validates
    assert _keys(failed) == _fields(ChunkFailure)
    assert failed["ok"] is False
    assert MAP_STATES["ScreenChunk"]["Catch"][0]["Next"] == "ChunkFailed"
    sample = ChunkFailure.model_validate({"chunk_key": "chunks/b/00001.jsonl", "ok": False, "error": "TransientError"})
    # And ok_results leaves it out, with null entries, and keeps a screened chunk
    screened = ChunkResult(chunk_key="c", lines=1, recorded=1, duplicates=0, result_key="k").model_dump(mode="json")
    assert ok_results([sample.model_dump(mode="json"), None, screened]) == [screened]


def test_map_items_are_chunk_requests_over_the_manifest_chunks():
    selector = STATES["Screen"]["ItemSelector"]
    assert _keys(selector) == _fields(ChunkRequest)
    # the items come from Prepare's output, one per ChunkRef
    assert STATES["Screen"]["ItemsPath"] == "$.chunks"
    assert "chunks" in _fields(PrepareOutput)
    prefix = "$$.Map.Item.Value."
    item_fields = {v.removeprefix(prefix) for v in selector.values() if v.startswith(prefix)}
    assert item_fields <= _fields(ChunkRef)
    assert STATES["IsDuplicate"]["Choices"][0]["Variable"].removeprefix("$.") in _fields(PrepareOutput)


@pytest.mark.parametrize(
    ("state", "model", "extra"),
    [
        ("ScreenInstitutions", InstitutionsRequest, {"mode"}),  # mode routes the event inside the screen handler
        ("Notify", NotifyRequest, set()),
        ("Finalize", FinalizeRequest, set()),
        ("RecordFailure", FinalizeRequest, set()),
    ],
)
def test_task_payloads_match_their_request_models(state: str, model: type[BaseModel], extra: set[str]):
    payload = STATES[state]["Parameters"]["Payload"]
    assert _keys(payload) - extra <= _fields(model)
    required = {name for name, info in model.model_fields.items() if info.is_required()}
    assert required <= _keys(payload)


def test_the_readers_views_of_a_results_file_name_its_fields() -> None:
    # Given the partial views the later steps read a results file (ChunkFindings) through
    from rxguard.workflow.contract import ChunkCounts, ChunkFindings, ChunkSupersessions, FindingId
    from rxguard.workflow.notify import _AlertIdsView, _AlertView

    # Then every field a view reads is a field of the file (a renamed field would otherwise
    # be read as its default, silently), and an id-only finding is a finding's id
    fields = set(ChunkFindings.model_fields)
    for view in (ChunkCounts, ChunkSupersessions, _AlertView, _AlertIdsView):
        assert set(view.model_fields) <= fields, (view.__name__, set(view.model_fields) - fields)
    assert set(FindingId.model_fields) <= set(ChunkFindings.model_fields["new"].annotation.__args__[0].model_fields)
