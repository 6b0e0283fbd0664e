"""`healthpsi run`: the whole job on a synthetic city, nodes as real processes on loopback."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from healthpsi.checks import dask_option
from healthpsi.progress import stage_progress
from healthpsi.simulate import PresetName
from runner.pipeline import PipelineError, RunResult, run_pipeline

STAGE_TEXT = {
    "nodes": "  nodes serving",
    "evaluate": "  epoch: Evaluate batches",
    "index": "  epoch: indexes streamed",
    "issuance": "  epoch: codes signed",
}
STEP_TEXT = {
    "simulate": "Simulating the city and its epidemic",
    "keys": "Creating the PKI and signing keys",
    "nodes": "Starting the carrier, transport, police and venues nodes (building indexes)",
    "epoch": "Coordinator epoch: risk set, OPRF queries, indexes, matches, codes",
    "cotravel": "Publishing the co-travel check's day keys and tags",
    "verify": "Verifying a sample of codes offline",
    "reference": "Checking matches against the plaintext join",
    "report": "Writing the report",
}


def summary_table(result: RunResult) -> Table:
    """A short table of what the run did."""
    table = Table(title=f"healthpsi run — {result.run_dir}", show_header=False)
    secrets = "derived from the seed (deterministic)" if result.deterministic else "from the OS"
    table.add_row("secrets", secrets)
    epoch = result.epoch
    if epoch is not None:
        table.add_row("risk tokens / partitions", f"{epoch.risk_tokens:,} / {epoch.risk_partitions:,}")
        table.add_row("matches (subjects)", f"{epoch.matches:,} ({epoch.matched_subjects:,})")
        table.add_row(
            "applicants accepted / refused", f"{epoch.accepted:,} / {sum(epoch.refused.values()):,}"
        )
        colours = "  ".join(f"[{c}]{c}[/] {n:,}" for c, n in epoch.colours.items())
        table.add_row("codes issued", f"{epoch.codes_issued:,}  {colours}")
    table.add_row(
        "codes verified offline", f"{result.verified.get('valid', 0)}/{result.verified.get('checked', 0)}"
    )
    table.add_row("matches equal plaintext join", "[green]yes[/]" if result.reference_equal else "[red]NO[/]")
    table.add_row("steps (s)", ", ".join(f"{k} {v:.1f}" for k, v in result.steps.items()))
    return table


def days_table(result: RunResult) -> Table:
    """One row per day: codes by colour, new cases' matches, revocations, what was queried and reused."""
    table = Table(title="day by day")
    for name in ("as of", "codes by colour", "matches", "revoked", "queried / reused", "indexes new / cached",
                 "equals plaintext"):
        table.add_column(name)
    for day in result.days:
        e = day.epoch
        table.add_row(
            e.as_of,
            "  ".join(f"[{c}]{c}[/] {n:,}" for c, n in e.colours.items()),
            f"{e.matches:,}",
            f"{e.revoked:,}",
            f"{e.queried:,} / {e.reused_answers:,}",
            f"{e.indexes_downloaded} / {e.indexes_cached}",
            "[green]yes[/]" if day.reference_equal else "[red]NO[/]",
        )
    return table


def run(
    preset: PresetName = typer.Option(PresetName.city_20k, "--preset", help="City size and parameters."),
    seed: int = typer.Option(
        7, "--seed", min=0, max=2**64 - 1, help="Scenario seed: same seed, same run, byte for byte."
    ),
    out: Path = typer.Option(..., "--out", help="Run directory to create (replaced if it exists)."),
    persons: int | None = typer.Option(
        None, "--persons", min=100, help="Override the preset's population size."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, max=256, help="Worker processes (default: one per core)."
    ),
    dask: str | None = typer.Option(
        None, "--dask", callback=dask_option,
        help="Dask scheduler, tls://HOST:PORT, or 'local'; mutual TLS with the certificates in RUN/pki/dask.",
    ),
    in_process: bool = typer.Option(
        False, "--in-process", help="Run the nodes inside this process instead of as gRPC servers."
    ),
    deterministic: bool = typer.Option(
        True, "--deterministic/--system-random",
        help="Derive every secret from the seed so that `healthpsi audit replay` can re-run the run byte for "
        "byte (anyone with scenario.json can re-derive them: simulations only); --system-random: the OS.",
    ),
    days: int = typer.Option(
        1, "--days", min=1, max=60,
        help="Consecutive daily epochs; the nodes keep running and roll to each new day.",
    ),
) -> None:
    """Run the whole job: simulate, keys, four nodes as mTLS gRPC processes, epoch, verify, report.

    The nodes (carrier, transport, police, venues) are real `healthpsi node serve` processes on 127.0.0.1 with
    OS-chosen ports; they are stopped with SIGTERM at the end. The run checks that the private matches
    equal the plaintext join and verifies a sample of the issued codes offline.

    With --days D the city is simulated for D epochs and the nodes, still running, move to each next day
    (the run's clock in RUN/nodes/<agency>/date); each day's epoch reuses what is still valid and is
    checked against that day's plaintext join.

    [bold]Example:[/bold] [cyan]healthpsi run --preset city-20k --seed 7 --out runs/demo[/cyan]
    [cyan]healthpsi run --preset city-20k --seed 7 --persons 1500 --days 3 --out runs/week[/cyan]
    """
    console = Console()
    progress, advance = stage_progress(STAGE_TEXT, console)
    with progress:

        def step(name: str) -> None:
            progress.console.log(STEP_TEXT.get(name, name))

        try:
            result = run_pipeline(
                preset.value,
                seed,
                out,
                persons,
                workers=workers,
                dask=dask,
                transport="inprocess" if in_process else "grpc",
                deterministic=deterministic,
                step=step,
                epoch_progress=advance,
                days=days,
            )
        except PipelineError as exc:
            Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from None
    console.print(summary_table(result))
    if len(result.days) > 1:
        console.print(days_table(result))
    console.print(f"Report: [bold]{result.report_path}[/bold]")
    if not result.reference_equal:
        raise typer.Exit(1)
