"""Tracing is a deploy choice: off (the default) means no X-Ray SDK import at cold start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rxguard_tools.offline.cfn import load_template

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from rxguard.observability import tracer

@tracer.capture_lambda_handler(capture_response=False)
def handler(event, context):
    return {"echo": event}

print(json.dumps({
    "tracer": type(tracer).__name__,
    "xray_imported": "aws_xray_sdk" in sys.modules,
    "result": handler(7, None),
}))
"""


def _probe(trace_disabled: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERTOOLS_")}
    env.update(POWERTOOLS_TRACE_DISABLED=trace_disabled, PYTHONPATH=str(ROOT / "layers"))
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_disabled_tracing_never_imports_the_xray_sdk():
    # Given POWERTOOLS_TRACE_DISABLED=true (the template's default), When the handlers' module loads
    probe = _probe("true")
    # Then no X-Ray SDK is imported, and a decorated handler still runs
    assert probe == {"tracer": "DisabledTracer", "xray_imported": False, "result": {"echo": 7}}


def test_enabled_tracing_uses_the_powertools_tracer():
    probe = _probe("false")
    assert probe["tracer"] == "Tracer"
    assert probe["xray_imported"] is True
    assert probe["result"] == {"echo": 7}


def test_template_ties_the_powertools_switch_to_the_xray_parameter():
    template = load_template(ROOT / "template.yaml")
    function = template["Globals"]["Function"]
    assert template["Parameters"]["XRayTracing"]["Default"] == "PassThrough"
    assert function["Tracing"] == {"Ref": "XRayTracing"}
    assert function["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == {
        "Fn::If": ["XRayActive", "false", "true"]
    }
    assert template["Conditions"]["XRayActive"] == {"Fn::Equals": [{"Ref": "XRayTracing"}, "Active"]}
