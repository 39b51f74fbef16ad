"""The import graph keeps the contracts of `.importlinter` (runtime apart from tools, layers,
no cycles, no AWS SDK in the domain), so `make test` fails on an upward import or a cycle. The picture and the
reasons: docs/architecture.md."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import grimp
import pytest
from importlinter import configuration
from importlinter.application.use_cases import lint_imports, read_user_options
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract
from importlinter.domain.contract import Contract

from tests.conftest import ROOT

configuration.configure()  # what the lint-imports command does first
CONFIG = str(ROOT / ".importlinter")
TYPES: dict[str, type[Contract]] = {
    "layers": LayersContract,
    "acyclic_siblings": AcyclicSiblingsContract,
    "forbidden": ForbiddenContract,
}


@pytest.fixture(scope="module")
def options() -> Any:
    return read_user_options(CONFIG)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("rxguard", "rxguard_tools", include_external_packages=True, cache_dir=None)


def _contract(options: Any, contract_id: str) -> Contract:
    raw = next(c for c in options.contracts_options if c["id"] == contract_id)
    return TYPES[raw["type"]](name=raw["name"], session_options=options.session_options, contract_options=raw)


def test_the_code_keeps_every_import_contract() -> None:
    # When import-linter checks the package against .importlinter (as `lint-imports` does),
    # Then every contract is kept; otherwise pytest shows the report with the import chains
    assert lint_imports(config_filename=CONFIG, cache_dir=None, no_logo=True, is_debug_mode=True)


@pytest.mark.parametrize(
    ("contract_id", "importer", "imported"),
    [
        ("layers", "rxguard.engine.common", "rxguard.workflow.contract"),  # the engine reaching up to the workflow
        ("layers", "rxguard.dynamo", "rxguard.workflow.settings"),  # an adapter reaching up (the old errors import)
        # the API reaching into the moto harness; the composition root reaching into a CLI
        ("runtime-apart-from-tools", "rxguard.api.serve", "rxguard_tools.offline.environment"),
        ("runtime-apart-from-tools", "rxguard.bootstrap", "rxguard_tools.local_cli"),
        ("tools", "rxguard_tools.synth.evaluate", "rxguard_tools.offline.cli"),  # the old synth -> offline import
        ("tools", "rxguard_tools.offline.cli", "rxguard_tools.cli"),  # a tool reaching up to the table of contents
        ("layers", "rxguard.alerts.notify", "rxguard.letters"),  # the old alerts <-> letters cycle
        ("workflow", "rxguard.workflow.institutions", "rxguard.workflow.notify"),  # a step importing a step
        ("acyclic", "rxguard.kb", "rxguard.config"),  # config -> kb makes this a cycle
        ("no-aws-in-the-domain", "rxguard.engine.common", "boto3"),
    ],
)
def test_each_contract_catches_the_import_it_forbids(
    options: Any, graph: grimp.ImportGraph, contract_id: str, importer: str, imported: str
) -> None:
    # Given the real graph, kept by the contract
    contract = _contract(options, contract_id)
    assert contract.check(deepcopy(graph), verbose=False).kept
    # When one forbidden import is added, Then the same contract is broken
    broken = deepcopy(graph)
    broken.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    assert not contract.check(broken, verbose=False).kept
