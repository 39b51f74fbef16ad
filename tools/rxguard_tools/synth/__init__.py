"""Synthetic claim populations with ground truth, and the detection-quality evaluation.

    rxguard synth --patients N --seed S --out DIR [--months M] [--format csv|jsonl]
    rxguard eval [--patients N --seed S] [--engine|--workflow] [--json FILE]

See docs/measurement.md.
"""

from rxguard_tools.synth.generator import FIELDS, SCENARIOS, Population, SynthConfig, generate
from rxguard_tools.synth.output import write_population

__all__ = ["FIELDS", "SCENARIOS", "Population", "SynthConfig", "generate", "write_population"]
