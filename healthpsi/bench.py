"""`healthpsi bench`: benchmarks that print a short table and write JSON (`--json`, `--out DIR`).

Each subcommand produces one section of the JSON document (`{"crypto": {...}}`); `--out DIR` writes it
to `DIR/bench-<section>.json`. A benchmark joins `bench all` by an entry in `SECTIONS`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from healthpsi.benchmarks import Step
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


def show(table: Table, as_json: bool) -> None:
    """Print a summary table: on stdout, or on stderr when stdout carries the JSON document."""
    Console(stderr=as_json).print(table)


def write_section(out: Path | None, section: str, result: dict[str, Any]) -> None:
    """Write `{section: result}` to `out/bench-<section>.json` (nothing when `out` is None)."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps({section: result}, indent=2) + "\n"
        (out / f"bench-{section}.json").write_text(text, encoding="utf-8")


def with_progress(total: int, work: Callable[[Step], dict[str, Any]]) -> dict[str, Any]:
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
        ("CPU taken by other processes", f"{result['machine']['other_processes_cpu_share']:.0%}", "≈ 0%"),
    ]
    for row in rows:
        table.add_row(*row)
    return table


@dataclasses.dataclass(frozen=True)
class Section:
    """One benchmark as `bench all` runs it: its progress steps, its run, and its summary table."""

    steps: Callable[[bool], int]
    run: Callable[[bool, Step], dict[str, Any]]
    table: Callable[[dict[str, Any]], Table]


def _crypto_settings(quick: bool) -> CryptoBenchSettings:
    """The crypto benchmark's default or quick sizes."""
    return CryptoBenchSettings.quick() if quick else CryptoBenchSettings()


SECTIONS: dict[str, Section] = {
    "crypto": Section(
        steps=lambda quick: _crypto_settings(quick).steps(),
        run=lambda quick, step: run_crypto_bench(_crypto_settings(quick), step),
        table=_crypto_table,
    ),
}


@app.command("crypto")
def crypto(
    as_json: bool = JsonOption,
    out: Path | None = OutOption,
    quick: bool = QuickOption,
    repeat: int | None = typer.Option(None, "--repeat", min=1, help="Repetitions of the rate measurements."),
) -> None:
    """OPRF rates vs raw libsodium, one core vs two, and ours vs OpenMined PSI (server 100 000, client 1 000).

    Takes about a minute on two cores.

    \b
    Example: healthpsi bench crypto --json --out runs/bench
    """
    settings = _crypto_settings(quick)
    if repeat is not None:
        settings = dataclasses.replace(settings, repeat=repeat)
    result = with_progress(settings.steps(), lambda step: run_crypto_bench(settings, step))
    show(_crypto_table(result), as_json)
    write_section(out, "crypto", result)
    if as_json:
        typer.echo(json.dumps({"crypto": result}, indent=2))


@app.command("all")
def run_all(as_json: bool = JsonOption, out: Path | None = OutOption, quick: bool = QuickOption) -> None:
    """Every benchmark with its default sizes, one JSON section each.

    \b
    Example: healthpsi bench all --out runs/bench
    """
    document = {}
    for name, section in SECTIONS.items():
        result = with_progress(section.steps(quick), lambda step, section=section: section.run(quick, step))
        show(section.table(result), as_json)
        write_section(out, name, result)
        document[name] = result
    if as_json:
        typer.echo(json.dumps(document, indent=2))
