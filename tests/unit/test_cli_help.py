"""Every command of the `healthpsi` entry point has --help with an example."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from healthpsi.cli import app


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        if hasattr(command, "commands"):
            out += _commands(command, path)
        else:
            out.append(path)
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_the_design_commands_exist() -> None:
    expected = {
        ("simulate",),
        ("keys", "init"),
        ("keys", "enroll"),
        ("node", "init"),
        ("node", "serve"),
        ("coordinator", "epoch"),
        ("run",),
        ("reference",),
        ("verify",),
        ("audit", "replay"),
        ("bench", "crypto"),
        ("bench", "epoch"),
    }
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"healthpsi {' '.join(path)}" in " ".join(result.output.split())
