"""`healthpsi operator`: the commander dashboard's operator accounts (argon2id hashes in RUN/service/)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from service.commander.accounts import AccountError, OperatorStore

app = typer.Typer(
    help="Operator accounts of the commander dashboard.", no_args_is_help=True, rich_markup_mode="rich"
)


def _state_dir(run: Path) -> Path:
    """RUN/service/, or exit 2 naming --run when RUN is not a run directory."""
    if not (run / "scenario.json").is_file():
        raise typer.BadParameter(f"{run} is not a run directory (no scenario.json)", param_hint="--run")
    return run / "service"


@app.command("add")
def add(
    run: Path = typer.Option(..., "--run", help="The run directory the service serves."),
    user: str = typer.Option(..., "--user", help="Operator name: 1–64 letters, digits, '.', '_' or '-'."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin instead of a prompt."
    ),
) -> None:
    """Create an operator (or set a new password for one); only an argon2id hash of the password is stored.

    [bold]Example:[/bold]

    [cyan]healthpsi operator add --run runs/demo --user chen[/cyan]
    """
    state_dir = _state_dir(run)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        OperatorStore(state_dir).add(user, password)
    except AccountError as exc:
        typer.echo(f"operator add: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"operator {user} can log in at /commander/login")


@app.command("remove")
def remove(
    run: Path = typer.Option(..., "--run", help="The run directory the service serves."),
    user: str = typer.Option(..., "--user", help="Operator name."),
) -> None:
    """Delete an operator and end its sessions.

    [bold]Example:[/bold]

    [cyan]healthpsi operator remove --run runs/demo --user chen[/cyan]
    """
    if not OperatorStore(_state_dir(run)).remove(user):
        typer.echo(f"operator remove: no operator {user!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"operator {user} removed")
