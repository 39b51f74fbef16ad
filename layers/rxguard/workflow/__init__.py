"""The logic behind the ClaimBatch state machine's Lambda handlers (docs/workflow.md).

`prepare`, `screen`, `notify` and `finalize` hold one logic function each; the handlers
in `functions/<name>/app.py` only parse the event, build the dependencies and call them.
Data access goes through `rxguard.dynamo`; nothing here imports boto3.
"""
