"""`rxguard serve`: the entry point. The HTTP side is `rxguard.api.serve`; this module sits
above the API, the local state and the console, and hands `serve.main` what builds them:
the state's services (`rxguard.bootstrap.open_local`, the default `--state DIR`), the
console (`rxguard.console.app.console_app`, mounted outside `/v1/`) and, for
`--simulate-aws`, the check API's real Lambda handler behind the offline Lambda router over
every resource of template.yaml (`moto_invoke`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rxguard.api import serve
from rxguard.api.serve import LocalSite
from rxguard.api.settings import ApiSettings


def moto_invoke(stack: ExitStack, callers: dict[str, Any] | None) -> serve.Invoke:
    """The real handler behind the offline Lambda router, over the template's resources."""
    # Deferred: moto costs ~0.43 s CPU to import, which `rxguard serve --memory` never needs.
    from rxguard_tools.offline.environment import Environment

    base = {"RXGUARD_API_AUTH": "enforce" if callers is not None else "open"}
    if callers is not None:
        base["RXGUARD_API_CALLERS"] = json.dumps(callers)
    env = stack.enter_context(Environment(base_environment=base))
    route = env.router.route_for(env.name("ApiFunction"))
    if route is None:
        raise SystemExit("rxguard serve: template.yaml has no ApiFunction to serve")

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        payload, _ = env.router.invoke(route, event)
        answer: dict[str, Any] = json.loads(payload)
        return answer

    return invoke


def open_local_with_planner(directory: Path, settings: ApiSettings) -> LocalSite:
    """The state's services, with backtests (`POST /v1/backtests`) over the same state."""
    from rxguard.bootstrap import open_local
    from rxguard.planning.backtest import state_planner

    site = open_local(directory, settings)
    site.services.planner = state_planner(directory, site.services.kb)
    return site


def main(argv: Sequence[str] | None = None) -> int:
    """`rxguard serve [...]` (arguments: rxguard.api.serve)."""
    from rxguard.console.app import console_app

    return serve.main(argv, moto=moto_invoke, local=open_local_with_planner, console=console_app)


if __name__ == "__main__":
    sys.exit(main())
