"""Execution names, batch ids and workflow settings (no AWS needed)."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

from rxguard.workflow.naming import S3ObjectRef, batch_id_for, batch_id_from_state, execution_name
from rxguard.workflow.settings import WorkflowSettings
from tests.conftest import load_event

objects = st.builds(
    S3ObjectRef,
    bucket=st.from_regex(r"[a-z0-9][a-z0-9.-]{2,62}", fullmatch=True),
    key=st.text(min_size=1, max_size=1024),
    etag=st.none() | st.from_regex(r"[0-9a-f]{32}(-[0-9]{1,4})?", fullmatch=True),
    version_id=st.none() | st.text(min_size=1, max_size=64),
)


@given(objects)
def test_execution_names_are_valid_step_functions_names(ref: S3ObjectRef) -> None:
    # Given any S3 object; When its execution name is derived
    name = execution_name(ref)
    # Then it is 1-80 characters of [A-Za-z0-9_-] and the same for the same object
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", name)
    assert name == execution_name(ref.model_copy())


@given(objects, objects)
def test_different_objects_get_different_batches(a: S3ObjectRef, b: S3ObjectRef) -> None:
    # Given two object references; Then they share a batch id only if they are the same object
    if a.as_dict() != b.as_dict():
        assert batch_id_for(a) != batch_id_for(b)


def test_the_batch_id_is_derivable_from_the_event_alone() -> None:
    # Given the sample EventBridge event
    event = load_event("workflow/s3_object_created.json")
    # When the batch id is derived from the raw state (what RecordFailure sees) and from Prepare's view
    from_state = batch_id_from_state({**event, "error": {"Error": "X"}})
    ref = S3ObjectRef.from_detail(event["detail"])
    # Then both agree, and the ETag/version identify the object
    assert from_state == batch_id_for(ref)
    assert (ref.etag, ref.version_id) == ("b1946ac92492d2347c6235b4d2611184", "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e")


def test_an_event_without_the_object_is_a_clear_error() -> None:
    # Given an event detail without `object`; Then reading it names the missing field
    with pytest.raises(ValueError, match="object"):
        S3ObjectRef.from_detail({"bucket": {"name": "b"}})


def test_settings_name_the_missing_variables() -> None:
    # Given an environment without the results bucket and the batches table
    env = {
        "RXGUARD_PURCHASES_TABLE": "p",
        "RXGUARD_TRACE_CODES_TABLE": "t",
        "RXGUARD_FINDINGS_TABLE": "f",
        "RXGUARD_CHUNK_SIZE": "100",
    }
    # When the settings are parsed; Then the error names both variables
    with pytest.raises(
        ValueError, match=r"RXGUARD_RESULTS_BUCKET.*RXGUARD_BATCHES_TABLE|RXGUARD_BATCHES_TABLE.*RXGUARD_RESULTS"
    ):
        WorkflowSettings.from_env(env)
    # And a complete environment parses, chunk size included
    full = WorkflowSettings.from_env({**env, "RXGUARD_RESULTS_BUCKET": "res", "RXGUARD_BATCHES_TABLE": "b"})
    assert (full.results_bucket, full.core.chunk_size, full.tables.batches) == ("res", 100, "b")


def test_every_template_function_environment_variable_is_a_setting() -> None:
    # Given the Globals environment of template.yaml
    import yaml
    from conftest import _TagTolerantLoader

    template = yaml.load((ROOT / "template.yaml").read_text(encoding="utf-8"), Loader=_TagTolerantLoader)
    names = set(template["Globals"]["Function"]["Environment"]["Variables"])
    # Then every RXGUARD_ variable the workflow reads is set there
    from rxguard.workflow.settings import _ENV

    assert set(_ENV.values()) <= names
