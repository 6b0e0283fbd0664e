"""`healthpsi verify`."""

from __future__ import annotations

import typer


def verify() -> None:
    """Not available yet."""
    raise typer.Exit(3)
