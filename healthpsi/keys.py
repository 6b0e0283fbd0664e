"""`healthpsi keys`: the PKI and signing keys of a run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from crypto.pki import load_trust_list
from healthpsi.checks import require_run
from proto.tokens import AGENCIES
from runctx.pki import KeysError, init_keys, load_signing_key

app = typer.Typer(help="Keys and certificates of a run.", no_args_is_help=True, rich_markup_mode="rich")


@app.command("init")
def init(
    run: Path = typer.Option(..., "--run", help="The run directory; keys go to RUN/pki."),
    force: bool = typer.Option(False, "--force", help="Replace an existing RUN/pki."),
) -> None:
    """Create the run's PKI in RUN/pki: CAs, TLS certificates, identity, storage and code-signing keys.

    Also the root-signed identities.json, trustlist.json and (empty) revocations.json.

    With RUN/scenario.json, keys come from its seed and dates from its as_of: same scenario, same bytes.
    Without it: system randomness and the current time.

    [bold]Example:[/bold] [cyan]healthpsi keys init --run runs/demo[/cyan]
    """
    require_run(run)
    console = Console()
    try:
        paths = init_keys(run, force=force)
    except (KeysError, ValueError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    _, kid = load_signing_key(paths)
    trust = load_trust_list(paths.trustlist)
    key = trust.keys[0].certificate
    table = Table(title=f"PKI written to {paths.pki_dir}", show_header=False)
    table.add_row("nodes", ", ".join(AGENCIES))
    table.add_row("code-signing kid", kid.hex())
    table.add_row("valid", f"{key.not_valid_before_utc:%Y-%m-%d} to {key.not_valid_after_utc:%Y-%m-%d}")
    table.add_row("trust list", str(paths.trustlist))
    console.print(table)
