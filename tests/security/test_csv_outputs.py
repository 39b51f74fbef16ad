"""CSV injection: claim text is kept verbatim, and any CSV rxguard writes for people
neutralises formulas (docs/security.md, claim H5)."""

from __future__ import annotations

import ast
import csv
import io
from pathlib import Path

import pytest

from rxguard.privacy import neutralise_csv_cell
from tests.conftest import ROOT
from tests.security.corpus import INJECTIONS

# CSV writers that do not produce a document for people: synth writes synthetic claim batches
# in the input contract (generated names, read back by rxguard itself).
NOT_FOR_PEOPLE = {"tools/rxguard_tools/synth/output.py"}


@pytest.mark.parametrize("payload", [*INJECTIONS, "＝1+1", "@SUM(A1)", "\r=1"])
def test_formula_cells_are_neutralised_and_shown_as_text(payload: str) -> None:
    # Given a cell that a spreadsheet would evaluate
    # When it goes through the exporter's cell function and the csv module
    buffer = io.StringIO()
    csv.writer(buffer).writerow([neutralise_csv_cell(payload)])
    (cell,) = next(csv.reader(io.StringIO(buffer.getvalue())))
    # Then the cell starts with an apostrophe and keeps the whole text after it
    assert cell == "'" + payload


@pytest.mark.parametrize("value", ["-12.5", "+3", "上海市第一人民医院", "H3100001", "", None, 42])
def test_plain_values_are_unchanged(value: object) -> None:
    assert neutralise_csv_cell(value) == ("" if value is None else str(value))


def test_every_csv_writer_in_the_product_neutralises_or_is_not_for_people() -> None:
    # Given every module of the layer, the tools and the functions
    offenders = []
    for folder in ("layers/rxguard", "tools/rxguard_tools", "functions"):
        offenders += _csv_writers_without_neutralising(ROOT / folder)
    assert offenders == []


def _csv_writers_without_neutralising(folder: Path) -> list[str]:
    offenders = []
    for path in folder.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        writes_csv = any(
            isinstance(node, ast.Attribute)
            and node.attr in ("writer", "DictWriter")
            and getattr(node.value, "id", "") == "csv"
            for node in ast.walk(tree)
        )
        rel = path.relative_to(ROOT).as_posix()
        # Then a module that writes CSV uses neutralise_csv_cell, or is listed as not for people
        if writes_csv and rel not in NOT_FOR_PEOPLE and "neutralise_csv_cell" not in source:
            offenders.append(rel)
    return offenders
