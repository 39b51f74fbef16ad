"""The DigestFunction (EventBridge Scheduler target) on the template's resources in moto:
the digests of a day from the FindingsTable, published once."""

from __future__ import annotations

import json

from rxguard.scope import Scope
from tests.unit.test_digests import FINDINGS


def test_the_digest_function_publishes_yesterdays_digests_once() -> None:
    from rxguard.dynamo import DynamoRepository, TableNames
    from rxguard_tools.offline import Environment

    with Environment() as env:
        ddb = env.clients.dynamodb
        tables = TableNames(
            purchases=env.name("PurchasesTable"),
            trace_codes=env.name("TraceCodesTable"),
            findings=env.name("FindingsTable"),
            batches=env.name("BatchesTable"),
            aggregates=env.name("AggregatesTable"),
        )
        repo = DynamoRepository(tables, ddb)
        for f in FINDINGS:
            repo.replace_findings(Scope.patient(f.psn_no or ""), [f])
        route = env.router.route_for(env.name("DigestFunction"))
        assert route is not None
        payload, errored = env.router.invoke(route, {"cadence": "daily", "on": "2026-03-04"})
        answer = json.loads(payload)
        assert not errored, answer
        assert answer == {"period": "daily/2026-03-04", "findings": 2, "digests": 3, "published": 3}
        again, _ = env.router.invoke(route, {"cadence": "daily", "on": "2026-03-04"})
        assert json.loads(again)["published"] == 0  # a re-run publishes nothing twice
