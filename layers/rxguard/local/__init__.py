"""The local deployment: persistent state under a directory (`state.py`) and the
in-process orchestrator of the ClaimBatch steps (`orchestrator.py`, `cli.py`). docs/local.md."""
