"""`healthpsi simulate`."""

from __future__ import annotations

import typer


def simulate() -> None:
    """Not available yet."""
    raise typer.Exit(3)
