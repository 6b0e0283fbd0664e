"""`healthpsi simulate`: a synthetic city with an epidemic, written as a RUN directory."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from simulation import scenario
from simulation.presets import PRESETS, PresetError


class PresetName(StrEnum):
    """The presets `--preset` accepts."""

    city_20k = "city-20k"
    city_240k = "city-240k"
    sanmenxia = "sanmenxia"


assert {p.value for p in PresetName} == set(PRESETS)


def simulate(
    preset: PresetName = typer.Option(PresetName.city_20k, "--preset", help="City size and parameters."),
    seed: int = typer.Option(7, "--seed", min=0, max=2**64 - 1, help="Random seed: same seed, same files."),
    out: Path = typer.Option(..., "--out", help="RUN directory to write.", show_default=False),
    persons: int | None = typer.Option(None, "--persons", min=100, help="Override the preset's population."),
    malformed_rate: float = typer.Option(
        0.001, "--malformed-rate", min=0.0, max=0.5, help="Share of agency rows made malformed on purpose."
    ),
    recall: float = typer.Option(
        0.9, "--recall", min=0.01, max=1.0, help="Probability an investigation remembers each token."
    ),
    days: int = typer.Option(
        1, "--days", min=1, max=366, help="Daily epochs: the 14-day window, then D − 1 more days."
    ),
    late_rate: float = typer.Option(
        0.03, "--late-rate", min=0.0, max=0.5, help="Share of a day's agency rows delivered late."
    ),
    deterministic: bool = typer.Option(
        True, "--deterministic/--system-random",
        help="Derive every secret of the run (keys, nonces) from the seed, so that an auditor can re-run it "
        "byte for byte; anyone with scenario.json can then re-derive them (simulations only). "
        "--system-random draws them from the OS.",
    ),
) -> None:
    """Simulate a city for 14 days and D − 1 more: movements, travel, hotels, an epidemic, its investigations.

    Writes RUN/scenario.json, RUN/data/<agency>/ (datasets that grow day by day as day=YYYY-MM-DD/
    directories, each file named after its delivery date; a few rows arrive a day or two late),
    RUN/health/*.parquet and RUN/truth/. The same seed and parameters give byte-identical files.

    [bold]Example:[/bold]

    [cyan]healthpsi simulate --preset city-20k --seed 7 --out runs/demo[/cyan]

    [cyan]healthpsi simulate --preset city-20k --seed 7 --out runs/week --persons 1500 --days 7[/cyan]

    [cyan]healthpsi simulate --preset sanmenxia --seed 1 --out runs/big --persons 500000[/cyan]
    """
    console = Console()
    started = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def report(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total)
            bar.update(tasks[step], completed=done, total=total)

        try:
            result = scenario.simulate(
                preset.value,
                seed,
                out,
                persons=persons,
                malformed_rate=malformed_rate,
                recall=recall,
                progress=report,
                days=days,
                late_rate=late_rate,
                deterministic=deterministic,
            )
        except (PresetError, ValueError, OSError) as exc:
            console.print(f"[red]simulate failed:[/red] {exc}")
            raise typer.Exit(2) from None
    elapsed = time.perf_counter() - started
    counts = result["counts"]
    assert isinstance(counts, dict)
    table = Table(title=f"{preset.value}, seed {seed}: {out}", show_header=False)
    table.add_row("secrets", "derived from the seed (deterministic)" if deterministic else "from the OS")
    for key in (
        "persons",
        "households",
        "cells",
        "stays",
        "tickets",
        "hotel_stays",
        "infections",
        "seeds",
        "cases",
        "confirmed",
        "suspected",
        "investigation_tokens",
        "risk_regions",
    ):
        table.add_row(key.replace("_", " "), f"{counts.get(key, 0):,}")
    malformed = result["malformed"]
    assert isinstance(malformed, dict)
    for name, by_category in malformed.items():
        shown = ", ".join(f"{c} {n}" for c, n in by_category.items() if n)
        table.add_row(f"malformed {name}", shown or "none")
    late = result["late"]
    assert isinstance(late, dict)
    for name, counts in late.items():
        shown = f"{counts['late']:,} of {counts['rows']:,} ({counts['undelivered']:,} due after the run)"
        table.add_row(f"late {name}", shown)
    table.add_row("window", f"{result['window'][0]} .. {result['as_of']}")  # type: ignore[index]
    table.add_row("epochs", f"{result['days']} from {result['as_of']}")
    table.add_row("time", f"{elapsed:.1f} s")
    console.print(table)
