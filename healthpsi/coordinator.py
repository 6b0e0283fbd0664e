"""`healthpsi coordinator` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="coordinator commands.", no_args_is_help=True)
