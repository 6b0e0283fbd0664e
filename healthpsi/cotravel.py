"""`healthpsi cotravel`: publish the day keys and tags of the private co-travel check, and check a trip."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import typer

from coordinator.cotravel import CotravelError, publish
from crypto.errors import CryptoError
from crypto.pki import TrustListError
from healthpsi.checks import require_run
from service.cotravel_client import check as check_trip

app = typer.Typer(help="The private co-travel check (同行查询).", no_args_is_help=True)


@app.command("publish")
def publish_command(
    run: Path = typer.Option(
        ..., "--run", help="The run directory (after an epoch: RUN/health/ and RUN/pki/)."
    ),
    as_of: str | None = typer.Option(
        None, "--as-of", help="Window end, YYYY-MM-DD (default: the scenario's)."
    ),
) -> None:
    """Write the signed co-travel manifests: a VOPRF key per day of the window and the tags of the cases'
    trip and carriage tokens (RUN/coordinator/cotravel/).

    [bold]Example:[/bold]

    [cyan]healthpsi cotravel publish --run runs/demo[/cyan]
    """
    day = _day(as_of, "--as-of") if as_of else None
    require_run(run, "scenario", "pki")
    try:
        written = publish(run, day)
    except (CotravelError, CryptoError, ValueError, OSError) as exc:
        typer.echo(f"cotravel publish: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"published {len(written)} day manifests in {written[0].parent}")


def _day(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {value!r}", param_hint=option) from None


@app.command("check")
def check_command(
    service: str = typer.Option(..., "--service", help="The code service's URL, e.g. http://127.0.0.1:8000."),
    trip: str = typer.Option(..., "--trip", help="Train or flight number, e.g. G1631."),
    date: str = typer.Option(..., "--date", help="Travel date, YYYY-MM-DD."),
    carriage: int | None = typer.Option(None, "--carriage", min=1, max=99, help="Carriage number."),
    root_fingerprint: str | None = typer.Option(
        None, "--root-fingerprint", help="Pin the root: hex SHA-256 of its DER (default: the service's)."
    ),
) -> None:
    """Check privately whether a case took your trip (and carriage): the service evaluates blinded tokens and
    learns neither the trip nor its date. Exit 0 not found, 1 found, 2 unusable input or service.

    [bold]Example:[/bold]

    [cyan]healthpsi cotravel check --service http://127.0.0.1:8000 --trip G1631 \
    --date 2020-01-21 --carriage 3[/cyan]
    """
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", service):
        raise typer.BadParameter(f"expected an http(s) URL, got {service!r}", param_hint="--service")
    if not re.fullmatch(r"[A-Za-z0-9]{1,32}", trip):
        raise typer.BadParameter(f"letters and digits only, got {trip!r}", param_hint="--trip")
    if root_fingerprint is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", root_fingerprint):
        raise typer.BadParameter("expected 64 hex characters", param_hint="--root-fingerprint")
    day = _day(date, "--date")
    try:
        answer = check_trip(service, trip.upper(), day, carriage, root_fingerprint)
    except (CotravelError, CryptoError, TrustListError, OSError) as exc:
        typer.echo(f"cotravel check: {exc}", err=True)
        raise typer.Exit(2) from None
    found = answer.trip or bool(answer.carriage)
    where = f"{trip.upper()} on {day}" + (f", carriage {carriage}" if carriage is not None else "")
    if answer.carriage:
        typer.echo(f"FOUND: a case travelled in your carriage ({where})")
    elif answer.trip:
        typer.echo(f"FOUND: a case travelled on your trip ({where})")
    else:
        typer.echo(f"not found: no case on {where}")
    typer.echo(f"(root {answer.root_fingerprint}{' pinned' if root_fingerprint else ' from the service'})")
    raise typer.Exit(1 if found else 0)
