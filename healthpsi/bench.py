"""`healthpsi bench`: benchmarks that print a short table and write JSON (`--json`, `--out DIR`).

Each subcommand produces one section of the JSON document (`{"crypto": {...}}`); `--out DIR` writes it
to `DIR/bench-<section>.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from healthpsi.benchmarks.crypto import CryptoBenchSettings, run_crypto_bench

app = typer.Typer(
    help="Benchmarks: medians of several runs, each figure a ratio against a baseline from the same run.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

JsonOption = typer.Option(
    False, "--json", help="Print the JSON document on stdout (the table goes to stderr)."
)
OutOption = typer.Option(None, "--out", help="Also write DIR/bench-<section>.json.", file_okay=False)
QuickOption = typer.Option(False, "--quick", help="Tiny sizes, for a smoke test (figures are noisy).")


def emit(section: str, result: dict[str, Any], table: Table, as_json: bool, out: Path | None) -> None:
    """Print `result` as the table (stdout, or stderr with --json) and JSON, and write it under `out`."""
    document = {section: result}
    Console(stderr=as_json).print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"bench-{section}.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(document, indent=2))


def with_progress(total: int, work: Callable[[Callable[[str], None]], dict[str, Any]]) -> dict[str, Any]:
    """Run `work(step)` under a progress bar on stderr that advances at each `step(description)`."""
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("starting", total=total)
        return work(lambda description: progress.update(task, advance=1, description=description))


def _crypto_table(result: dict[str, Any]) -> Table:
    """The short summary of the crypto benchmark."""
    table = Table(title="healthpsi bench crypto", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    rows = [
        ("BlindEvaluate, 1 core", f"{result['blind_evaluate_per_s']:,.0f}/s", ""),
        ("raw libsodium scalar mult", f"{result['raw_scalar_mult_per_s']:,.0f}/s", ""),
        ("BlindEvaluate vs raw", f"{result['blind_evaluate_vs_raw']:.1%}", "≥ 90%"),
        ("Evaluate, 1 core", f"{result['evaluate_per_s']:,.0f}/s", ""),
        ("raw libsodium hash-to-group + mult", f"{result['raw_hash_to_group_mult_per_s']:,.0f}/s", ""),
        ("Evaluate vs raw", f"{result['evaluate_vs_raw']:.1%}", "≥ 80%"),
        ("two-core speedup (min)", f"{result['two_core_speedup']:.2f}×", "≥ 1.8×"),
        ("ours (seconds)", f"{result['ours_seconds']:.2f}", ""),
        ("OpenMined PSI (seconds)", f"{result['openmined_seconds']:.2f}", ""),
        ("ours / OpenMined", f"{result['ours_vs_openmined']:.2f}", "≤ 0.5"),
    ]
    for row in rows:
        table.add_row(*row)
    return table


@app.command("crypto")
def crypto(
    as_json: bool = JsonOption,
    out: Path | None = OutOption,
    quick: bool = QuickOption,
    repeat: int | None = typer.Option(None, "--repeat", min=1, help="Repetitions of the rate measurements."),
) -> None:
    """OPRF rates vs raw libsodium, one core vs two, and ours vs OpenMined PSI (server 100 000, client 1 000).

    Takes about a minute and a half on two cores.

    \b
    Example: healthpsi bench crypto --json --out runs/bench
    """
    settings = CryptoBenchSettings.quick() if quick else CryptoBenchSettings()
    if repeat is not None:
        settings = CryptoBenchSettings(**{**settings.__dict__, "repeat": repeat})
    result = with_progress(settings.steps(), lambda step: run_crypto_bench(settings, step))
    emit("crypto", result, _crypto_table(result), as_json, out)
