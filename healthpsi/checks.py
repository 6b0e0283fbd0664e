"""Checks every command runs before any work: a usable run directory, well-formed addresses, live nodes.

Each failure prints what is wrong and the command that mends it, and exits 2 (no traceback).
"""

from __future__ import annotations

import socket
from pathlib import Path

import typer
from rich.console import Console

from proto.tokens import AGENCIES
from runner.executors import DaskAddressError, check_dask_address

err = Console(stderr=True, highlight=False)

NEEDS = {
    "run": ("the run directory", "healthpsi simulate --preset city-20k --seed 7 --out {run}"),
    "scenario": ("scenario.json", "healthpsi simulate --preset city-20k --seed 7 --out {run}"),
    "pki": ("pki/ (the authority's keys and trust list)", "healthpsi keys init --run {run}"),
    "data": ("data/ (the agencies' files)", "healthpsi simulate --preset city-20k --seed 7 --out {run}"),
    "coordinator": ("coordinator/ (an epoch's results)", "healthpsi coordinator epoch --run {run} --node …"),
}
_PATHS = {"run": "", "scenario": "scenario.json", "pki": "pki/trustlist.json", "data": "data",
          "coordinator": "coordinator/codes.sqlite"}

PROBE_SECONDS = 3.0
"""How long a node may take to accept a TCP connection before it is reported unreachable."""


def fail(message: str, hint: str | None = None) -> typer.Exit:
    """Print `message` (and what to do next) and return the exit-2 to raise."""
    err.print(f"[bold red]error:[/] {message}")
    if hint:
        err.print(f"  next: [cyan]{hint}[/]")
    return typer.Exit(2)


def require_run(run: Path, *needs: str) -> None:
    """Exit 2 unless `run` is a directory holding each of `needs` (keys of NEEDS), naming the first missing
    piece and the command that makes it; never creates anything."""
    for need in ("run", *needs):
        path = run / _PATHS[need]
        present = path.is_dir() if need in ("run", "data") else path.exists()
        if not present:
            what, command = NEEDS[need]
            where = run if need == "run" else path
            raise fail(f"{where}: {what} does not exist", command.format(run=run))


def parse_address(value: str, option: str, *, any_port: bool = False) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) as (host, port); BadParameter naming `option` otherwise. With
    `any_port`, port 0 (any free port, for a listener) is allowed."""
    host, sep, port = value.rpartition(":")
    lowest = 0 if any_port else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise typer.BadParameter(
            f"{value!r}: expected HOST:PORT with a port from {lowest} to 65535", param_hint=option
        )
    return host.strip("[]"), int(port)


def parse_nodes(specs: list[str]) -> dict[str, str]:
    """`AGENCY=HOST:PORT` options as {agency: address}; BadParameter on a malformed or repeated one."""
    nodes: dict[str, str] = {}
    for spec in specs:
        agency, sep, address = spec.partition("=")
        if not sep or not address or agency not in AGENCIES:
            raise typer.BadParameter(
                f"{spec!r}: expected AGENCY=HOST:PORT with AGENCY one of {', '.join(AGENCIES)}",
                param_hint="--node",
            )
        if agency in nodes:
            raise typer.BadParameter(f"node {agency} given twice", param_hint="--node")
        parse_address(address, "--node")
        nodes[agency] = address
    return nodes


def probe_nodes(run: Path, nodes: dict[str, str]) -> None:
    """Exit 2 within seconds when a node does not accept connections, naming it, its address and the command
    that starts it."""
    for agency, address in nodes.items():
        host, port = parse_address(address, "--node")
        try:
            with socket.create_connection((host, port), timeout=PROBE_SECONDS):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise fail(
                f"the {agency} node at {address} is not reachable ({reason})",
                f"healthpsi node serve --run {run} --agency {agency} --listen {address}",
            ) from None


def dask_option(value: str | None) -> str | None:
    """`--dask`: "local" or a tls:// scheduler address; anything else is a usage error (exit 2)."""
    try:
        return check_dask_address(value)
    except DaskAddressError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dask") from None
