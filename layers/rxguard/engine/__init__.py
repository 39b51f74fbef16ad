"""The rule engine (pure, no I/O). See docs/rules.md for what each rule means."""

from rxguard.engine.common import RULE_IDS, finding_scope, flagged_line_ids, trigger_lines
from rxguard.engine.engine import Engine, normalize_timeline
from rxguard.engine.institutions import ActivityAggregate, activity_from_lines, previous_period

__all__ = [
    "RULE_IDS",
    "ActivityAggregate",
    "Engine",
    "activity_from_lines",
    "finding_scope",
    "flagged_line_ids",
    "normalize_timeline",
    "previous_period",
    "trigger_lines",
]
