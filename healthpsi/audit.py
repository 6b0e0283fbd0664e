"""`healthpsi audit` commands: replay a run as an auditor."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from audit.replay import replay
from audit.verdicts import ReplayReport, Verdict
from healthpsi.progress import stage_progress
from runner.executors import make_executor

app = typer.Typer(
    help="Audit a run: its logs, queries, budgets and results.", no_args_is_help=True, rich_markup_mode="rich"
)
err = Console(stderr=True)
out = Console()

EXIT_HOLDS, EXIT_BROKEN, EXIT_UNUSABLE = 0, 1, 2
STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}
STAGES = {"logs": "node logs", "openings": "openings re-derived", "results": "results", "rerun": "re-run"}


def _step(name: str) -> None:
    """Say which step of the re-run is running."""
    err.print(f"  re-run: {name}")


@contextlib.contextmanager
def _rerun(run: Path, enabled: bool) -> Iterator[tuple[Path | None, Verdict | None]]:
    """A fresh in-process re-run of the run's scenario in a temporary directory (removed afterwards), or
    None with a verdict saying why there is none."""
    if not enabled:
        yield None, None
        return
    try:
        scenario = json.loads((run / "scenario.json").read_text(encoding="utf-8"))
        seeded = scenario.get("seed") is not None and scenario.get("deterministic") is True
        preset, seed, persons, days = (
            str(scenario.get("preset")),
            int(scenario.get("seed") or 0),
            scenario.get("persons"),
            int(scenario.get("days") or 1),
        )
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        yield None, Verdict("rerun", "scenario.json", "scenario", "fail", f"cannot re-run it ({exc})")
        return
    if not seeded:
        yield None, Verdict(
            "rerun", "scenario.json", "scenario", "warn", "not a deterministic run (OS secrets): no re-run"
        )
        return
    with tempfile.TemporaryDirectory(prefix="healthpsi-replay-") as scratch:
        target = Path(scratch) / "run"
        started = time.perf_counter()
        err.print(f"re-running {preset} seed {seed} ({persons or 'preset'} persons) in a scratch directory…")
        try:
            from runner.pipeline import run_pipeline

            run_pipeline(
                preset, seed, target, persons=persons, transport="inprocess", report=False, step=_step,
                days=days,
            )
        except Exception as exc:  # any failure of the re-run is a verdict, not a crash of the audit
            yield None, Verdict("rerun", "re-run", "rerun", "fail", f"the re-run failed: {exc}")
            return
        err.print(f"re-run done in {time.perf_counter() - started:.1f} s")
        yield target, None


def _entries(report: ReplayReport, problems_only: bool) -> Table:
    """One row per verdict (or per warning and failure)."""
    table = Table(title=f"audit replay of {report.run_dir}", show_lines=False)
    for name in ("section", "item", "kind", "verdict", "reason"):
        table.add_column(name, overflow="fold")
    for v in report.verdicts:
        if problems_only and v.status == "ok":
            continue
        table.add_row(v.section, v.item, v.kind, f"[{STYLE[v.status]}]{v.status}[/]", v.reason)
    return table


def _unjustified(report: ReplayReport) -> Table:
    """The tokens queried with no case, risk region or application behind them."""
    table = Table(title="queries with no case behind them", title_style="bold red")
    for name in ("agency", "partition", "token", "epoch", "reason"):
        table.add_column(name, overflow="fold")
    for row in report.unjustified:
        table.add_row(row["agency"], row["partition_id"], row["token"], row["epoch"], row["reason"])
    return table


def _summary(report: ReplayReport) -> Table:
    """Verdicts per section, and the counts."""
    table = Table(title="summary")
    table.add_column("section")
    for status in STYLE:
        table.add_column(status, justify="right", style=STYLE[status])
    for section, counts in report.summary().items():
        table.add_row(section, *(str(counts[s]) for s in STYLE))
    return table


@app.command("replay")
def replay_command(
    run: Path = typer.Argument(..., help="The RUN directory to audit.", show_default=False),
    no_rerun: bool = typer.Option(
        False, "--no-rerun", help="Do not re-run the scenario to compare results and logs with."
    ),
    rerun_dir: Path | None = typer.Option(
        None,
        "--rerun-dir",
        help="Compare with this existing re-run of the same scenario instead of re-running.",
    ),
    problems_only: bool = typer.Option(False, "--problems-only", help="List only warnings and failures."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes for re-deriving."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as one JSON object."),
) -> None:
    """Replay a run as an auditor: a verdict per log entry, query, budget and result.

    - the hash chains and signed heads of the coordinator's and every node's log,
      and the heads the witness (RUN/audit/heads/) holds: a cut tail is named;
    - every sealed query opening: each blinded element re-derived from its token
      and blind, the inputs digest matched against both sides' logs;
    - each queried token against a case investigation, a risk region or an
      application record (a query with no case behind it is named);
    - each partition's budget: charges within the cap, budget_left consistent;
    - the digests of matches, features, every code (payload, colour, reasons),
      the revocation list, the QR images and the epoch summary against the log;
    - a fresh re-run of the scenario in a scratch directory: equal results,
      and byte-for-byte equal logs.

    Exit status 0 when every verdict holds, 1 when any does not, 2 when RUN is
    unusable.

    [bold]Examples:[/bold]

    [cyan]healthpsi audit replay runs/demo[/cyan]

    [cyan]healthpsi audit replay runs/demo --no-rerun --problems-only[/cyan]

    [cyan]healthpsi audit replay runs/demo --no-rerun --json > audit.json[/cyan]
    """
    if not (run / "scenario.json").is_file():
        err.print(f"[bold red]not a run directory:[/] {run} has no scenario.json")
        raise typer.Exit(EXIT_UNUSABLE)
    bar, advance = stage_progress(STAGES, err, transient=True)
    rerun = _rerun(run, not no_rerun and rerun_dir is None)
    with rerun as (scratch, rerun_failed), make_executor(workers) as executor, bar:
        report = replay(run, rerun_dir=rerun_dir or scratch, executor=executor, progress=advance)
    if rerun_failed is not None:
        report.verdicts.append(rerun_failed)
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        if not problems_only or not report.ok or any(v.status == "warn" for v in report.verdicts):
            out.print(_entries(report, problems_only))
        if report.unjustified:
            out.print(_unjustified(report))
        out.print(_summary(report))
        counts = ", ".join(f"{k} {v}" for k, v in report.counts.items())
        verdict = (
            "[bold green]all hold[/]" if report.ok else f"[bold red]{len(report.failures)} do not hold[/]"
        )
        out.print(f"{len(report.verdicts)} verdicts: {verdict} ({counts}; {report.seconds:.1f} s)")
    raise typer.Exit(EXIT_HOLDS if report.ok else EXIT_BROKEN)
