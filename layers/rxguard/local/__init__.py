"""The local deployment: rxguard on one machine, its state in an embedded database.

- `state`: the SQLite state (`State.open(dir)`) and its adapters (docs/state.md);
- `orchestrator`, `cli`: the in-process workflow behind `rxguard run --state`.
"""
