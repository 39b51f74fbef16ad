"""The check API over the local state: what `rxguard serve --state DIR` serves.

`local_services(state, settings)` builds the API's services on the SQLite adapters of
`rxguard.local.state` (beside `rxguard.api.store_dynamo.aws_services` for AWS): checks read
the stored history, a dispensation goes through `screening.screen_lines` on the same
repository as a batch's lines (so it is history for the next batch), and findings are
listed and reviewed in the state the runs write. `open_local` is the opener
`rxguard.api.serve.main` is handed by `rxguard.offline.serve`.
"""

from __future__ import annotations

from pathlib import Path

from rxguard.api.serve import LocalSite
from rxguard.api.service import Services
from rxguard.api.settings import ApiSettings
from rxguard.config import Settings
from rxguard.kb import get_knowledge_base
from rxguard.local.state import State

LINE_CACHE = 200_000  # decoded history lines kept by serve (checks re-read the same patients)


def local_services(state: State, settings: ApiSettings, core: Settings | None = None) -> Services:
    """The API's services over the local state. No alerts topic here: `alerts_sent` is null
    (the batch runs write the alerts)."""
    core = core or Settings.from_env()
    return Services(
        kb=get_knowledge_base(core.rules_dir, core.phase),
        repo=state.repository(line_cache=LINE_CACHE),
        store=state.findings_store(),
        settings=settings,
        default_admdvs=core.default_admdvs,
    )


def open_local(directory: Path, settings: ApiSettings) -> LocalSite:
    """Open (creating) the state under `directory` and build the services over it; a state
    that cannot be opened raises `rxguard.local.state.StateError` naming the file."""
    state = State.open(directory)
    return LocalSite(services=local_services(state, settings), where=f"state {state.path}", close=state.close)
