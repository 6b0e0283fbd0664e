"""`healthpsi keys`: the PKI and signing keys of a run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from crypto.pki import DEFAULT_ISSUER, region_code
from healthpsi.checks import require_run
from proto.tokens import AGENCIES
from runctx.enroll import EnrollError, enroll_node
from runctx.pki import KeysError, init_keys, load_pinned_trust_list, load_signing_key

app = typer.Typer(help="Keys and certificates of a run.", no_args_is_help=True, rich_markup_mode="rich")


@app.command("init")
def init(
    run: Path = typer.Option(..., "--run", help="The run directory; keys go to RUN/pki."),
    force: bool = typer.Option(False, "--force", help="Replace an existing RUN/pki."),
    issuer: list[str] = typer.Option(
        [DEFAULT_ISSUER], "--issuer",
        help="An issuing authority's GB/T 2260 region code (repeat for several; the first is the one this "
        "run's coordinator issues for).",
    ),
) -> None:
    """Create the run's PKI in RUN/pki: the national root, CAs, TLS certificates, identity and storage keys,
    and per issuing authority a code-signing key and its own signed (empty) revocation list.

    Also the root-signed identities.json and the one trustlist.json of every issuer, and root.fingerprint,
    the SHA-256 of the root certificate that verifiers pin (`healthpsi verify --root-fingerprint`).

    In a deterministic simulation (RUN/scenario.json says so) keys come from its seed: same scenario, same
    bytes; otherwise from the OS. Dates come from the scenario's as_of, else the current time.

    [bold]Example:[/bold]
    [cyan]healthpsi keys init --run runs/demo --issuer 411200 --issuer 410100 --force[/cyan]
    """
    require_run(run)
    console = Console()
    try:
        regions = [region_code(r) for r in issuer]
    except ValueError as exc:
        Console(stderr=True).print(f"[bold red]error:[/bold red] --issuer: {exc}", highlight=False)
        raise typer.Exit(2) from None
    try:
        paths = init_keys(run, force=force, issuers=regions)
    except (KeysError, ValueError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    _, kid = load_signing_key(paths)
    trust = load_pinned_trust_list(paths)
    key = trust.keys[0].certificate
    table = Table(title=f"PKI written to {paths.pki_dir}", show_header=False)
    table.add_row("nodes", "none yet: healthpsi node init, then healthpsi keys enroll, for each of "
                  + ", ".join(AGENCIES))
    table.add_row("issuers", ", ".join(f"{k.issuer} (kid {k.kid.hex()})" for k in trust.keys))
    table.add_row("coordinator issues for", f"{paths.home_issuer} (kid {kid.hex()})")
    table.add_row("root fingerprint", paths.root_fingerprint.read_text().strip())
    table.add_row("valid", f"{key.not_valid_before_utc:%Y-%m-%d} to {key.not_valid_after_utc:%Y-%m-%d}")
    table.add_row("trust list", str(paths.trustlist))
    console.print(table)


@app.command("enroll")
def enroll(
    run: Path = typer.Option(..., "--run", help="The run directory (RUN/pki must exist)."),
    agency: str = typer.Option(..., "--agency", help=f"The node to certify: {', '.join(AGENCIES)}."),
) -> None:
    """Certify a node from its request (RUN/nodes/<agency>/request.json, written by `healthpsi node init`):
    its TLS certificate from the nodes CA, and its identity key in the root-signed identities.json.

    The authority reads the request only; the node's private keys never leave the node.

    [bold]Example:[/bold] [cyan]healthpsi keys enroll --run runs/demo --agency carrier[/cyan]
    """
    require_run(run, "pki")
    if agency not in AGENCIES:
        Console(stderr=True).print(f"[bold red]error:[/bold red] --agency {agency!r}: expected one of "
                                   f"{', '.join(AGENCIES)}", highlight=False)
        raise typer.Exit(2)
    try:
        cert = enroll_node(run, agency)
    except (EnrollError, ValueError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    Console().print(f"{agency} node enrolled: certificate {cert}, identity key listed in identities.json")
