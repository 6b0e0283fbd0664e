"""`healthpsi reference`: the plaintext oracle, RUN/reference/matches.parquet (and one per epoch)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from healthpsi.checks import require_run
from proto.risk import RiskSetError
from simulation.reference import ReferenceError, compute_reference, epoch_dates, write_reference


def reference(
    run: Path = typer.Option(
        ..., "--run", help="RUN directory written by `healthpsi simulate`.", show_default=False
    ),
    as_of: list[str] = typer.Option(
        [], "--as-of", help="Epoch date (YYYY-MM-DD); repeatable. Default: every epoch of the scenario.",
        show_default=False,
    ),
) -> None:
    """Compute the exact matches by a plaintext join: what a private run must reproduce.

    For an epoch date X it reads the health records known by X and the agency files delivered by X
    (skipping malformed rows), over the 14 days ending on X. Writes RUN/reference/matches.parquet
    (subject_id, agency, token, case_id) for the latest date computed and, when several are,
    RUN/reference/epochs/<date>/matches.parquet for each.

    [bold]Example:[/bold]

    [cyan]healthpsi reference --run runs/demo[/cyan]

    [cyan]healthpsi reference --run runs/week --as-of 2020-02-01[/cyan]
    """
    dates: list[dt.date] = []
    for text in as_of:
        try:
            dates.append(dt.date.fromisoformat(text))
        except ValueError:
            raise typer.BadParameter(f"not a date (YYYY-MM-DD): {text!r}", param_hint="--as-of") from None
    require_run(run, "scenario", "data")
    console = Console()
    started = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} partitions"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def report(agency: str, done: int, total: int) -> None:
            if agency not in tasks:
                tasks[agency] = bar.add_task(agency, total=total)
            bar.update(tasks[agency], completed=done)

        try:
            dates = sorted(set(dates or epoch_dates(run)))
            for date in dates:
                for task in tasks.values():
                    bar.remove_task(task)
                tasks.clear()
                ref = compute_reference(run, progress=report, as_of=date)
                paths = write_reference(run, ref, latest=date == dates[-1], per_epoch=len(dates) > 1)
                console.print(f"{date}: {len(ref.matches):,} matches → {', '.join(map(str, paths))}")
        except (ReferenceError, RiskSetError, OSError, ValueError) as exc:
            console.print(f"[red]reference failed:[/red] {exc}")
            raise typer.Exit(2) from None
    path = run / "reference" / "matches.parquet"
    m = ref.matches
    kinds = m["token"].str.replace(r"\|.*$", "", regex=True)
    table = Table(title=f"matches as of {ref.as_of}: {path}")
    table.add_column("agency")
    table.add_column("kind")
    table.add_column("rows", justify="right")
    table.add_column("subjects", justify="right")
    for (agency, kind), group in m.groupby([m["agency"], kinds], sort=True):
        table.add_row(agency, kind, f"{len(group):,}", f"{group['subject_id'].nunique():,}")
    table.add_row("all", "", f"{len(m):,}", f"{m['subject_id'].nunique():,}", style="bold")
    console.print(table)
    console.print(
        f"risk tokens: {len(ref.risk):,} ({ref.risk['token'].nunique():,} distinct); "
        f"cases matched: {m['case_id'].nunique():,}"
    )
    for agency, datasets in ref.malformed.items():
        for dataset, counts in datasets.items():
            shown = ", ".join(f"{c} {n}" for c, n in counts.items() if n)
            console.print(f"skipped malformed rows, {agency}/{dataset}: {shown or 'none'}")
    console.print(f"time: {time.perf_counter() - started:.1f} s")
