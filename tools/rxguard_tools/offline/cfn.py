"""Read a SAM/CloudFormation template and resolve its intrinsic functions.

`load_template(path)` understands the short tags (`!Ref`, `!GetAtt`, `!Sub`, `!Join`,
`!If`, `!Select`, ...) by turning each into its long form (`{"Ref": ...}`,
`{"Fn::GetAtt": [...]}`), so the rest of the offline mode sees one shape.

`Resolver` evaluates a value of the template against what is known: parameters
(defaults, overridable), pseudo parameters, conditions, mappings and the physical
identity of each resource (`Ref` value and `Fn::GetAtt` attributes), which the offline
environment fills in as it plans the resources.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NO_VALUE = object()  # AWS::NoValue: the key or list element disappears

# short tag -> long form; the value of `!GetAtt A.B` is split on the first dot
_TAGS = (
    "Ref",
    "Condition",
    "Fn::GetAtt",
    "Fn::Sub",
    "Fn::Join",
    "Fn::If",
    "Fn::Select",
    "Fn::Split",
    "Fn::Equals",
    "Fn::Not",
    "Fn::And",
    "Fn::Or",
    "Fn::FindInMap",
    "Fn::Base64",
    "Fn::GetAZs",
    "Fn::ImportValue",
    "Fn::Cidr",
    "Fn::Length",
    "Fn::ToJsonString",
)


class TemplateError(ValueError):
    """The template cannot be read or a value of it cannot be resolved."""


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader plus CloudFormation's short-form tags."""


def _make_constructor(long_name: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if long_name == "Fn::GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {long_name: value}

    return construct


for _name in _TAGS:
    _CfnLoader.add_constructor("!" + _name.removeprefix("Fn::"), _make_constructor(_name))


def load_template(path: Path) -> dict[str, Any]:
    """The template as plain dicts/lists, short tags in long form."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path}: cannot read the template: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources mapping)")
    return data


@dataclass
class Identity:
    """What a resource resolves to: its `Ref` value and its `Fn::GetAtt` attributes."""

    ref: str
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Resolver:
    template: Mapping[str, Any]
    parameters: dict[str, str] = field(default_factory=dict)
    identities: dict[str, Identity] = field(default_factory=dict)
    region: str = "us-east-1"
    account_id: str = "123456789012"
    stack_name: str = "rxguard"
    partition: str = "aws"

    @classmethod
    def for_template(
        cls,
        template: Mapping[str, Any],
        overrides: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Resolver:
        """Parameters take their defaults, then the overrides."""
        params: dict[str, str] = {}
        for name, spec in (template.get("Parameters") or {}).items():
            if isinstance(spec, dict) and "Default" in spec:
                default = spec["Default"]
                params[name] = ",".join(map(str, default)) if isinstance(default, list) else _scalar(default)
        params.update(overrides or {})
        return cls(template=template, parameters=params, **kwargs)

    # -- lookups --------------------------------------------------------------------
    def pseudo(self, name: str) -> Any:
        values: dict[str, Any] = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:{self.partition}:cloudformation:{self.region}:{self.account_id}"
            f":stack/{self.stack_name}/offline",
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        if name not in values:
            raise TemplateError(f"unknown pseudo parameter {name}")
        return values[name]

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.parameters:
            spec = (self.template.get("Parameters") or {}).get(name) or {}
            value = self.parameters[name]
            if str(spec.get("Type", "")).startswith("List<") or spec.get("Type") == "CommaDelimitedList":
                return value.split(",") if value else []
            return value
        if name in self.identities:
            return self.identities[name].ref
        raise TemplateError(f"!Ref {name}: no such parameter, or resource not planned yet")

    def get_att(self, name: str, attr: str) -> str:
        identity = self.identities.get(name)
        if identity is None:
            raise TemplateError(f"!GetAtt {name}.{attr}: no such resource, or not planned yet")
        if attr not in identity.attrs:
            raise TemplateError(f"!GetAtt {name}.{attr}: attribute not known offline")
        return identity.attrs[attr]

    def condition(self, name: str) -> bool:
        conditions = self.template.get("Conditions") or {}
        if name not in conditions:
            raise TemplateError(f"unknown condition {name}")
        return bool(self.resolve(conditions[name]))

    # -- evaluation -----------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        """Evaluate intrinsic functions anywhere in `value` (NO_VALUE entries dropped)."""
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(str(arg))
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key, arg)
        out = {}
        for k, v in value.items():
            resolved = self.resolve(v)
            if resolved is not NO_VALUE:
                out[k] = resolved
        return out

    def _function(self, key: str, arg: Any) -> Any:
        if key == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else self.resolve(arg)
            return self.get_att(str(parts[0]), str(parts[1]))
        if key == "Fn::Sub":
            return self._sub(arg)
        if key == "Fn::Join":
            sep, items = arg
            resolved = self.resolve(items)
            return str(sep).join(_scalar(i) for i in resolved)
        if key == "Fn::If":
            cond, yes, no = arg
            return self.resolve(yes if self.condition(cond) else no)
        if key == "Fn::Select":
            index, items = self.resolve(arg)
            return items[int(index)]
        if key == "Fn::Split":
            sep, text = self.resolve(arg)
            return str(text).split(str(sep))
        if key == "Fn::Equals":
            a, b = self.resolve(arg)
            return _scalar(a) == _scalar(b)
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        if key == "Fn::And":
            return all(self.resolve(a) for a in arg)
        if key == "Fn::Or":
            return any(self.resolve(a) for a in arg)
        if key == "Fn::FindInMap":
            name, top, second = self.resolve(arg)
            try:
                return self.template["Mappings"][name][top][second]
            except KeyError as exc:
                raise TemplateError(f"!FindInMap {name}.{top}.{second}: not in Mappings") from exc
        if key == "Fn::Base64":
            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        if key == "Fn::GetAZs":
            return [f"{self.region}{s}" for s in "abc"]
        if key == "Fn::Length":
            return len(self.resolve(arg))
        if key == "Fn::ToJsonString":
            import json

            return json.dumps(self.resolve(arg), separators=(",", ":"))
        raise TemplateError(f"{key} is not supported offline")

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], self.resolve(arg[1]) if len(arg) > 1 else {}
        else:
            text, variables = arg, {}

        def replace(match: re.Match[str]) -> str:
            expr = match.group(1)
            if expr.startswith("!"):
                return "${" + expr[1:] + "}"  # ${!Literal}
            if expr in variables:
                return _scalar(variables[expr])
            if "." in expr and not expr.startswith("AWS::"):
                name, attr = expr.split(".", 1)
                return self.get_att(name, attr)
            return _scalar(self.ref(expr))

        return re.sub(r"\$\{([^}]+)\}", replace, str(text))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
