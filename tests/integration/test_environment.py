"""One environment model per handler: each function's model asks for what that function
uses, template.yaml gives it, and a missing variable stops the handler before any work,
naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import yaml
from conftest import _TagTolerantLoader

from rxguard import environment as envs
from tests.conftest import ROOT

MODELS: dict[str, type[envs.HandlerEnvironment]] = {
    "PrepareFunction": envs.PrepareEnvironment,
    "ScreenFunction": envs.ScreenEnvironment,
    "NotifyFunction": envs.NotifyEnvironment,
    "FinalizeFunction": envs.FinalizeEnvironment,
    "ApiFunction": envs.ApiEnvironment,
}


def _required(model: type[envs.HandlerEnvironment]) -> set[str]:
    return {str(f.alias) for f in model.model_fields.values() if f.is_required()}


@pytest.mark.parametrize("function", sorted(MODELS))
def test_template_gives_each_function_what_its_model_requires(function: str) -> None:
    # Given the function's variables in template.yaml (Globals and its own)
    template = yaml.load((ROOT / "template.yaml").read_text(encoding="utf-8"), Loader=_TagTolerantLoader)
    own = (template["Resources"][function]["Properties"].get("Environment") or {}).get("Variables", {})
    given = set(template["Globals"]["Function"]["Environment"]["Variables"]) | set(own)
    # Then every variable its model requires is there, and its handler validates that model first
    assert _required(MODELS[function]) <= given
    handler = (ROOT / "functions" / function.removesuffix("Function").lower() / "app.py").read_text(encoding="utf-8")
    assert f"@bootstrap.entry({MODELS[function].__name__}," in handler


def test_each_model_requires_only_what_its_function_uses() -> None:
    # Finalize needs no history table; Screen does; Notify needs the topics
    assert _required(envs.FinalizeEnvironment) == {"RXGUARD_RESULTS_BUCKET", "RXGUARD_BATCHES_TABLE"}
    assert "RXGUARD_PURCHASES_TABLE" in _required(envs.ScreenEnvironment)
    assert "RXGUARD_PURCHASES_TABLE" not in _required(envs.PrepareEnvironment)
    assert {"RXGUARD_ALERTS_TOPIC_ARN", "RXGUARD_LETTERS_TOPIC_ARN"} <= _required(envs.NotifyEnvironment)
    assert not {"RXGUARD_ALERTS_TOPIC_ARN", "RXGUARD_LETTERS_TOPIC_ARN"} & _required(envs.ApiEnvironment)


def test_a_missing_variable_is_named_and_empty_counts_as_missing() -> None:
    env = {"RXGUARD_RESULTS_BUCKET": "results", "RXGUARD_PURCHASES_TABLE": "", "RXGUARD_CHUNK_SIZE": "100"}
    with pytest.raises(ValueError, match="ScreenEnvironment") as caught:
        envs.parse_environment(envs.ScreenEnvironment, env)
    assert "RXGUARD_PURCHASES_TABLE" in str(caught.value) and "RXGUARD_FINDINGS_TABLE" in str(caught.value)
    with pytest.raises(ValueError, match="RXGUARD_CHUNK_SIZE"):
        envs.parse_environment(
            envs.FinalizeEnvironment, {**env, "RXGUARD_BATCHES_TABLE": "b", "RXGUARD_CHUNK_SIZE": "0"}
        )
    finalize = envs.parse_environment(envs.FinalizeEnvironment, {**env, "RXGUARD_BATCHES_TABLE": "b"})
    assert (finalize.batches_table, finalize.core.chunk_size) == ("b", 100)


def test_the_handler_stops_before_any_work_when_its_environment_is_incomplete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a handler whose environment lacks the batches table
    calls: list[Any] = []

    @envs.init_environment_variables(model=envs.FinalizeEnvironment)  # the first of bootstrap.entry's decorators
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(event)
        return {}

    monkeypatch.setenv("RXGUARD_RESULTS_BUCKET", "results")
    monkeypatch.delenv("RXGUARD_BATCHES_TABLE", raising=False)
    # When it is invoked, Then it fails naming the variable, and the body never ran
    with pytest.raises(ValueError, match="RXGUARD_BATCHES_TABLE"):
        handler({"batch_id": "b"}, None)
    assert calls == []


def test_the_composition_root_leaves_powertools_settings_to_the_handlers() -> None:
    # Given a fresh interpreter, When it imports rxguard.bootstrap (tests and `rxguard serve` do, before
    # setting POWERTOOLS_*), Then the Powertools objects are not created yet: a handler's import creates them
    probe = "import sys, rxguard.bootstrap; print('rxguard.observability' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "layers")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
