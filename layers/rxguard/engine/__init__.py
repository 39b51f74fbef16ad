"""The rule engine (pure, no I/O). See docs/rules.md for what each rule means."""

from rxguard.engine.common import finding_scope
from rxguard.engine.engine import Engine, normalize_timeline
from rxguard.engine.institutions import ActivityAggregate, activity_from_lines, previous_period
from rxguard.engine.rules import CATALOGUE, RULE_IDS, behaviour_code, flagged_line_ids, trigger_lines

__all__ = [
    "CATALOGUE",
    "RULE_IDS",
    "ActivityAggregate",
    "Engine",
    "activity_from_lines",
    "behaviour_code",
    "finding_scope",
    "flagged_line_ids",
    "normalize_timeline",
    "previous_period",
    "trigger_lines",
]
