"""`healthpsi keys`: the PKI and signing keys of a run."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from crypto.drbg import Drbg, Rng
from crypto.pki import PkiPaths, create_pki, load_signing_key, load_trust_list
from proto.tokens import AGENCIES

app = typer.Typer(help="Keys and certificates of a run.", no_args_is_help=True, rich_markup_mode="rich")


class KeysError(Exception):
    """`keys init` cannot proceed; the message says why."""


def scenario_rng(run_dir: Path) -> tuple[Rng | None, datetime | None]:
    """The PKI's randomness and reference time from RUN/scenario.json (seed, as_of), or (None, None)."""
    path = run_dir / "scenario.json"
    if not path.exists():
        return None, None
    try:
        scenario = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeysError(f"{path}: cannot read the scenario ({exc})") from None
    if not isinstance(scenario, dict):
        raise KeysError(f"{path}: expected a JSON object")
    seed, as_of = scenario.get("seed"), scenario.get("as_of")
    rng = None
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise KeysError(f"{path}: seed must be an integer in [0, 2^64), got {seed!r}")
        rng = Drbg(b"healthpsi" + seed.to_bytes(8, "big")).child("pki")
    now = None
    if as_of is not None:
        try:
            now = datetime.combine(date.fromisoformat(as_of), time(), UTC)
        except (TypeError, ValueError):
            raise KeysError(f"{path}: as_of must be a YYYY-MM-DD date, got {as_of!r}") from None
    return rng, now


def init_keys(run_dir: Path, *, force: bool = False) -> PkiPaths:
    """Write RUN/pki (deterministic from the scenario's seed when there is one); refuse to overwrite
    an existing PKI unless `force`."""
    paths = PkiPaths(run_dir)
    if paths.exists():
        if not force:
            raise KeysError(f"{paths.pki_dir} already exists; use --force to replace it")
        shutil.rmtree(paths.pki_dir)
    rng, now = scenario_rng(run_dir)
    create_pki(paths, AGENCIES, rng=rng, now=now)
    return paths


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
