"""`healthpsi reference`."""

from __future__ import annotations

import typer


def reference() -> None:
    """Not available yet."""
    raise typer.Exit(3)
