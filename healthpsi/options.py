"""Option checks shared by several commands, run before any work starts (exit 2 naming the option)."""

from __future__ import annotations

import typer

from runner.executors import DaskAddressError, check_dask_address


def dask_option(value: str | None) -> str | None:
    """`--dask`: "local" or a tls:// scheduler address; anything else is a usage error."""
    try:
        return check_dask_address(value)
    except DaskAddressError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dask") from None
