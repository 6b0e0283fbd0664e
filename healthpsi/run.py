"""`healthpsi run`."""

from __future__ import annotations

import typer


def run() -> None:
    """Not available yet."""
    raise typer.Exit(3)
