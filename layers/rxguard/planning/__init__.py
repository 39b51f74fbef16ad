"""Drug watch, rule backtests and phase planning over the local state (docs/planning.md)."""
