"""docs/architecture.md stays true: every path it names exists, and every rule, table, bucket,
topic and function of the project has its row, so a newcomer finds any of them in one step."""

from __future__ import annotations

import re

import yaml

from tests.conftest import ROOT

DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
TOP = (
    "functions/",
    "rules/",
    "tests/",
    "statemachines/",
    "docs/",
    "layers/",
    "tools/",
    "template.yaml",
    ".importlinter",
    "openapi.json",
)
LISTED_TYPES = (
    "AWS::DynamoDB::Table",
    "AWS::S3::Bucket",
    "AWS::SNS::Topic",
    "AWS::Serverless::Function",
)


class _Tags(yaml.SafeLoader):
    """Reads CloudFormation short tags (!Ref, !GetAtt, ...) as nothing."""


_Tags.add_multi_constructor("!", lambda loader, suffix, node: None)


def _named_paths() -> set[str]:
    """Code spans that are paths: `x/y.py`, `folder/`, `functions/...`, with `(Class)` notes dropped."""
    spans = re.findall(r"`([^`\s]+)`", DOC)
    return {s for s in spans if s.endswith((".py", "/", ".json", ".yaml", ".csv", ".md")) or s.startswith(TOP)}


def test_every_path_the_page_names_exists() -> None:
    missing = []
    for path in sorted(_named_paths()):
        if "<" in path or path.startswith("rxguard "):
            continue
        here = ROOT / path if path.startswith(TOP) or path.startswith(".") else ROOT / "layers" / "rxguard" / path
        if not here.exists():
            missing.append(path)
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_rule_has_its_row() -> None:
    rules = yaml.safe_load((ROOT / "rules" / "rules.yaml").read_text(encoding="utf-8"))["rules"]
    rows = {m.group(1) for m in re.finditer(r"^\| ([a-z-]+) \| `", DOC, re.MULTILINE)}
    assert {rule["id"] for rule in rules} <= rows


def test_every_table_bucket_topic_and_function_of_the_template_is_placed() -> None:
    template = yaml.load((ROOT / "template.yaml").read_text(encoding="utf-8"), Loader=_Tags)
    names = [name for name, res in template["Resources"].items() if res["Type"] in LISTED_TYPES]
    functions = {p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").exists()}
    placed = [
        n for n in names if n in DOC or (n.endswith("Function") and n.removesuffix("Function").lower() in functions)
    ]
    assert sorted(set(names) - set(placed)) == []
    assert all(f"functions/{name}/app.py" in DOC for name in functions)
