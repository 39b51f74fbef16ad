"""The `rxguard` table of contents (rxguard_tools.cli): each subcommand names a function of
the tools package, and the usage lists them all."""

from __future__ import annotations

import importlib

import pytest

from rxguard_tools.cli import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_names_a_function_of_the_tools(name: str) -> None:
    # Given the table's target `module:function`, When it is imported below rxguard_tools
    module_name, func_name = COMMANDS[name].target.split(":")
    module = importlib.import_module(f"rxguard_tools.{module_name}")
    # Then it is a function taking the arguments
    assert callable(getattr(module, func_name))


def test_usage_lists_every_subcommand_and_an_unknown_one_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert all(f"  {name} " in usage for name in COMMANDS)
    assert main(["nothing"]) == 2
    assert "unknown command 'nothing'" in capsys.readouterr().err
