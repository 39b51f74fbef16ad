"""`rxguard serve` over moto: the check API's real Lambda handler behind the offline
Lambda router, over every resource of template.yaml. The HTTP side is `rxguard.api.serve`;
this module only hands it the moto-backed invoke (the harness sits above the API)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from rxguard.api import serve


def moto_invoke(stack: ExitStack, callers: dict[str, Any] | None) -> serve.Invoke:
    """The real handler behind the offline Lambda router, over the template's resources."""
    # Deferred: moto costs ~0.43 s CPU to import, which `rxguard serve --memory` never needs.
    from rxguard.offline.environment import Environment

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


def main(argv: Sequence[str] | None = None) -> int:
    """`rxguard serve [...]` (arguments: rxguard.api.serve)."""
    return serve.main(argv, moto=moto_invoke)


if __name__ == "__main__":
    sys.exit(main())
