"""Rich progress bars for the commands: one bar per stage, advanced by a `(stage, done, total)` callback."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from runctx import progress


def stage_progress(
    labels: Mapping[str, str], console: Console, *, transient: bool = False
) -> tuple[Progress, progress.Progress]:
    """A progress display and the callback that adds a bar per stage (labelled from `labels`) and moves it."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )
    tasks: dict[str, TaskID] = {}

    def advance(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(labels.get(stage, stage), total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return bar, advance
