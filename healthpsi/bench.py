"""`healthpsi bench`: benchmarks that print a short table and write JSON (`--json`, `--out DIR`).

Each subcommand produces one section of the JSON document (`{"crypto": {...}}`); `--out DIR` writes it
to `DIR/bench-<section>.json`. A benchmark joins `bench all` by an entry in `benchmarks.sections.SECTIONS`
and one in `TABLES`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks import Step
from benchmarks.crypto import run_crypto_bench
from benchmarks.daily import run_daily_bench
from benchmarks.epoch import run_epoch_bench
from benchmarks.issue import run_issue_bench
from benchmarks.sections import (
    SECTIONS,
    crypto_settings,
    daily_settings,
    epoch_settings,
    issue_settings,
    service_settings,
    write_section,
)
from benchmarks.service import run_service_bench
from healthpsi.checks import dask_option

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


def _gib(n: float) -> str:
    """Bytes as GiB (or MiB below one GiB)."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _epoch_table(result: dict[str, Any]) -> Table:
    """The short summary of the epoch benchmark: per stage, then the totals and the price of privacy."""
    title = (f"healthpsi bench epoch — {result['preset']}, {result['persons']:,} persons, "
             f"{result['transport']}, {result['workers']} workers, median of {result['repeat']}")
    table = Table(title=title, show_header=True)
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("bytes on the wire", justify="right")
    for name, stage in result["stages"].items():
        table.add_row(name, f"{stage['seconds']:.1f}", f"{stage['bytes']:,}" if stage["bytes"] else "")
    table.add_row("[bold]private epoch[/]", f"[bold]{result['seconds']:.1f}[/]", f"{result['bytes']:,}")
    table.add_row("plaintext join", f"{result['plaintext_seconds']:.1f}", "")
    table.add_row("[bold]price of privacy[/]", f"[bold]{result['privacy_price']:.2f}×[/]", "")
    table.add_row("  matching alone (no applicants)", f"{result['privacy_price_matching']:.2f}×", "")
    table.add_row(
        "  libsodium calls alone (floor)",
        f"{result['crypto_floor_price']:.2f}×",
        f"{result['crypto_floor_seconds']:.1f} s",
    )
    table.add_row("peak RSS (process tree)", _gib(result["peak_rss_bytes"]), "")
    table.add_row("simulate (not in the epoch)", f"{result['simulate_seconds']:.1f}", "")
    table.add_row("CPU taken by other processes", f"{result['machine']['other_processes_cpu_share']:.0%}", "")
    return table


def _issue_table(result: dict[str, Any]) -> Table:
    """The short summary of the issuance benchmark."""
    table = Table(title="healthpsi bench issue", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("codes signed, 1 core", f"{result['sign_per_s']:,.0f}/s"),
        ("raw ECDSA P-256 sign", f"{result['raw_sign_per_s']:,.0f}/s"),
        ("signed vs raw", f"{result['sign_vs_raw']:.1%}"),
        ("codes verified, 1 core", f"{result['verify_per_s']:,.0f}/s"),
        ("raw ECDSA P-256 verify", f"{result['raw_verify_per_s']:,.0f}/s"),
        ("verified vs raw", f"{result['verify_vs_raw']:.1%}"),
        (f"codes signed, {result['settings']['workers']} workers", f"{result['sign_workers_per_s']:,.0f}/s"),
        ("2.19 M codes (Sanmenxia) at that rate", f"{result['sanmenxia_codes_seconds']:.0f} s"),
    ]
    for row in rows:
        table.add_row(*row)
    return table


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _service_table(result: dict[str, Any]) -> Table:
    """The load benchmark's summary: per phase and endpoint, then the machine and the code-fetch verdict."""
    s = result["settings"]
    title = (f"healthpsi bench service — {s['users']} users, {s['workers']} workers, "
             f"{s['seconds']} s peak, {result['cpus']} CPUs shared with locust")
    table = Table(title=title, show_header=True)
    for column in ("phase / endpoint", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures"):
        table.add_column(column, justify="left" if column.startswith("phase") else "right")
    for phase_name, phase in result["phases"].items():
        table.add_row(f"[bold]{phase_name}[/] (all)", f"{phase['requests_per_s']:,.0f}", "", "", "",
                      f"{phase['failures']:,}")
        for name, e in phase["endpoints"].items():
            absent = " (absent)" if name in result["absent_routes"] else ""
            percentiles = (_ms(e["p50_ms"]), _ms(e["p95_ms"]), _ms(e["p99_ms"]))
            rate = f"{e['requests_per_s']:,.1f}"
            table.add_row(f"  {name}{absent}", rate, *percentiles, f"{e['failures']:,}")
        cost = f"{phase['service_cpu_ms_per_request']:.2f} ms"
        table.add_row("  service CPU per request", cost, "", "", "", "")
        table.add_row("  CPU: service / locust / others",
                      f"{phase['service_cpu_share']:.0%} / {phase['locust_cpu_share']:.0%} / "
                      f"{phase['other_cpu_share']:.0%}", "", "", "", "")
        table.add_row("  service memory start → end (max)",
                      f"{_gib(phase['service_rss_start_bytes'])} → {_gib(phase['service_rss_end_bytes'])} "
                      f"({_gib(phase['service_rss_max_bytes'])})", "", "", "", "")
    fetch = result["code_fetch"]
    if fetch["served"]:
        verdict = "meets" if fetch["meets_targets"] else "misses"
        table.add_row("[bold]code fetches (codes phase)[/] vs ≥ 1,000/s, p99 < 100 ms, 0 failures",
                      f"{fetch['requests_per_s']:,.0f}", "", "", _ms(fetch["p99_ms"]),
                      f"{fetch['failures']:,} ({verdict})")
        if fetch["vs_baseline_rate"] is not None:
            ratio = f"{fetch['vs_baseline_rate']:.2f}"
            table.add_row("  code fetches / baseline rate", ratio, "", "", "", "")
        if fetch["vs_baseline_cpu"] is not None:
            cpu = f"{fetch['vs_baseline_cpu']:.1f}×"
            table.add_row("  CPU per code fetch / per baseline request", cpu, "", "", "", "")
    else:
        table.add_row("[bold]code fetches[/]", "not served by this build", "", "", "", "")
    apply = result.get("applications", {"served": False})
    if apply["served"]:
        verdict = "meets" if apply["meets_targets"] else "misses"
        table.add_row("[bold]applications (applications phase)[/] vs ≥ 200/s, p99 < 1 s, 0 failures",
                      f"{apply['requests_per_s']:,.0f}", "", "", _ms(apply["p99_ms"]),
                      f"{apply['failures']:,} ({verdict})")
    return table


def _daily_table(result: dict[str, Any]) -> Table:
    """The short summary of the daily benchmark: steady-state day against a cold epoch and the plaintext."""
    title = (f"healthpsi bench daily — {result['preset']}, {result['persons']:,} persons, "
             f"{result['transport']}, {result['workers']} workers, median of {result['repeat']}")
    table = Table(title=title, show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    cold, steady = result["cold_epoch"], result["steady_epoch"]
    rows = [
        ("cold epoch (day 1: nodes' build + epoch)", f"{result['cold_seconds']:.1f} s"),
        ("steady-state epoch (day 2: nodes' roll + epoch)", f"{result['steady_seconds']:.1f} s"),
        ("  of which the nodes' roll", f"{result['steady_nodes_seconds']:.1f} s"),
        ("plaintext join of day 2", f"{result['plaintext_seconds']:.1f} s"),
        ("[bold]steady state / cold[/]", f"[bold]{result['steady_over_cold']:.2f}×[/]"),
        ("[bold]steady-state price of privacy[/]", f"[bold]{result['steady_privacy_price']:.2f}×[/]"),
        ("elements queried day 1 / day 2", f"{cold['queried']:,} / {steady['queried']:,}"),
        ("answers reused day 2", f"{steady['reused_answers']:,}"),
        ("indexes downloaded / cached day 2", f"{steady['indexes_downloaded']} / {steady['indexes_cached']}"),
    ]
    for point in result["dask_scaling"]:
        n = point["dask_workers"]
        rows.append((
            f"Dask, {n} worker{'s' if n > 1 else ''}: cold / steady state (speed-up)",
            f"{point['cold_seconds']:.1f} s / {point['steady_seconds']:.1f} s "
            f"({point['cold_speedup']:.2f}× / {point['steady_speedup']:.2f}×)",
        ))
    rows.append(("CPU taken by other processes", f"{result['other_processes_cpu_share']:.0%}"))
    for row in rows:
        table.add_row(*row)
    return table


TABLES: dict[str, Callable[[dict[str, Any]], Table]] = {
    "crypto": _crypto_table,
    "epoch": _epoch_table,
    "issue": _issue_table,
    "daily": _daily_table,
    "service": _service_table,
}
"""The summary table of each benchmark section."""


def _emit(section: str, result: dict[str, Any], table: Table, as_json: bool, out: Path | None) -> None:
    """Show a section's table, write its JSON file, and print the JSON document when asked."""
    show(table, as_json)
    write_section(out, section, result)
    if as_json:
        typer.echo(json.dumps({section: result}, indent=2))


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
    settings = crypto_settings(quick)
    if repeat is not None:
        settings = dataclasses.replace(settings, repeat=repeat)
    result = with_progress(settings.steps(), lambda step: run_crypto_bench(settings, step))
    _emit("crypto", result, _crypto_table(result), as_json, out)


@app.command("epoch")
def epoch(
    preset: str = typer.Option("city-20k", "--preset", help="city-20k, city-240k or sanmenxia."),
    persons: int | None = typer.Option(None, "--persons", min=100, help="Override the preset's population."),
    seed: int = typer.Option(7, "--seed", help="Scenario seed."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes (default: 1/core)."),
    dask: str | None = typer.Option(
        None, "--dask", callback=dask_option, help="Dask scheduler, tls://HOST:PORT, or 'local' (mutual TLS)."
    ),
    repeat: int | None = typer.Option(
        None, "--repeat", min=1, help="Repetitions (default: 3, or 1 from 200,000 persons on)."
    ),
    grpc: bool = typer.Option(
        False, "--grpc", help="Nodes as `healthpsi node serve` processes over mTLS (default: in-process)."
    ),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", file_okay=False, help="Simulate into DIR and keep it (default: a temporary one)."
    ),
    as_json: bool = JsonOption,
    out: Path | None = OutOption,
    quick: bool = QuickOption,
) -> None:
    """The private epoch per stage, bytes on the wire and peak memory, against a plaintext pandas join.

    Private: the nodes' tokenise + index build and the coordinator's epoch, issuance included.

    Plaintext: the oracle's join of the same files. Their ratio is the price of privacy.

    The city is simulated once (not timed); each repetition starts from no node or coordinator state.

    The private matches must equal the plaintext join, or the benchmark fails.

    \b
    Example: healthpsi bench epoch --preset city-240k --json --out runs/bench
    """
    base = epoch_settings(quick)
    settings = dataclasses.replace(
        base,
        preset=preset,
        persons=persons if persons is not None else base.persons,
        seed=seed,
        workers=workers,
        dask=dask,
        repeat=repeat if repeat is not None else base.repeat,
        transport="grpc" if grpc else "inprocess",
        run_dir=run_dir,
    )
    result = with_progress(settings.steps(), lambda step: run_epoch_bench(settings, step))
    _emit("epoch", result, _epoch_table(result), as_json, out)


@app.command("issue")
def issue(
    as_json: bool = JsonOption,
    out: Path | None = OutOption,
    quick: bool = QuickOption,
    codes: int | None = typer.Option(None, "--codes", min=10, help="Codes per rate measurement (4,000)."),
    repeat: int | None = typer.Option(None, "--repeat", min=1, help="Repetitions of the rate measurements."),
) -> None:
    """Health codes signed and verified per second (one core, and signing on the worker pool), each against
    raw ECDSA P-256 signing and verification of the same bytes in the same run.

    \b
    Example: healthpsi bench issue --json --out runs/bench
    """
    settings = issue_settings(quick)
    if codes is not None:
        settings = dataclasses.replace(settings, codes=codes)
    if repeat is not None:
        settings = dataclasses.replace(settings, repeat=repeat)
    result = with_progress(settings.steps(), lambda step: run_issue_bench(settings, step))
    _emit("issue", result, _issue_table(result), as_json, out)


@app.command("service")
def service(
    run: Path | None = typer.Option(
        None, "--run", file_okay=False, exists=True,
        help="Serve this run (default: simulate city-20k with --persons people into a temporary directory).",
    ),
    persons: int = typer.Option(1500, "--persons", min=100, help="People of the simulated run."),
    users: int = typer.Option(50, "--users", min=1, max=2000, help="Concurrent locust users."),
    spawn_rate: float = typer.Option(25.0, "--spawn-rate", min=0.1, help="Users started per second."),
    seconds: int = typer.Option(60, "--seconds", min=2, max=3600, help="Length of the peak phase."),
    soak: bool = typer.Option(False, "--soak", help="A 10-minute peak (overrides --seconds)."),
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Worker processes of healthpsi serve."),
    pace: float = typer.Option(
        0.0, "--pace", min=0.0, help="Requests/s per user (0: ask again at once, to find the ceiling)."
    ),
    as_json: bool = JsonOption,
    out: Path | None = OutOption,
    quick: bool = QuickOption,
) -> None:
    """The code service under a morning peak: locust, headless on loopback, against healthpsi serve.

    A baseline phase (every user asks /api/v1/health) then the peak (citizens fetching codes, applying
    and checking trips; verifiers fetching the lists; a commander). Per endpoint: requests/s, p50/p95/p99,
    failures; the CPU share of the service's process tree and of locust; the service's memory at start
    and end. Locust runs on the same machine and takes its share of the CPUs.

    \b
    Example: healthpsi bench service --users 50 --seconds 60 --json --out runs/bench
    """
    base = service_settings(quick)
    settings = dataclasses.replace(
        base,
        run=run,
        persons=persons,
        users=base.users if quick else users,
        spawn_rate=base.spawn_rate if quick else spawn_rate,
        seconds=600 if soak else (base.seconds if quick else seconds),
        workers=workers,
        pace=pace,
    )
    result = with_progress(settings.steps(), lambda step: run_service_bench(settings, step))
    _emit("service", result, _service_table(result), as_json, out)


@app.command("daily")
def daily(
    preset: str = typer.Option("city-20k", "--preset", help="city-20k, city-240k or sanmenxia."),
    persons: int | None = typer.Option(None, "--persons", min=100, help="Override the preset's population."),
    seed: int = typer.Option(7, "--seed", help="Scenario seed."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes (default: 1/core)."),
    repeat: int | None = typer.Option(
        None, "--repeat", min=1, help="Repetitions (default: 3, or 1 from 200,000 persons on)."
    ),
    dask_workers: list[int] | None = typer.Option(
        None, "--dask-workers", min=1, max=64,
        help="A size of the Dask scaling curve (LocalCluster worker processes over mutual TLS); repeat the "
        "option for each (default: 1 and 2).",
    ),
    no_scaling: bool = typer.Option(False, "--no-scaling", help="Skip the Dask scaling curve."),
    grpc: bool = typer.Option(
        False, "--grpc", help="Nodes as `healthpsi node serve` processes over mTLS (default: in-process)."
    ),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", file_okay=False, help="Simulate into DIR and keep it (default: a temporary one)."
    ),
    as_json: bool = JsonOption,
    out: Path | None = OutOption,
    quick: bool = QuickOption,
) -> None:
    """A steady-state day (day 2 after day 1, nodes still running) against a cold epoch (day 1 from no
    state) and against the plaintext join of day 2, ratios measured in the same run; then the same two days
    on a Dask LocalCluster of 1 and 2 worker processes over mutual TLS (the scaling curve).

    The city is simulated once for two epochs (not timed); each repetition starts from no node or
    coordinator state. Every day's private matches must equal its plaintext join, or the benchmark fails.

    \b
    Example: healthpsi bench daily --preset city-20k --persons 1500 --repeat 1 --json --out runs/bench
    """
    if no_scaling and dask_workers:
        raise typer.BadParameter("give --dask-workers or --no-scaling, not both", param_hint="--dask-workers")
    base = daily_settings(quick)
    scaling = () if no_scaling else tuple(sorted(set(dask_workers))) if dask_workers else base.dask_workers
    settings = dataclasses.replace(
        base,
        preset=preset,
        persons=persons if persons is not None else base.persons,
        seed=seed,
        workers=workers,
        repeat=repeat if repeat is not None else base.repeat,
        dask_workers=scaling,
        transport="grpc" if grpc else "inprocess",
        run_dir=run_dir,
    )
    result = with_progress(settings.steps(), lambda step: run_daily_bench(settings, step))
    _emit("daily", result, _daily_table(result), as_json, out)


@app.command("all")
def run_all(as_json: bool = JsonOption, out: Path | None = OutOption, quick: bool = QuickOption) -> None:
    """Every benchmark with its default sizes, one JSON section each.

    \b
    Example: healthpsi bench all --out runs/bench
    """
    document = {}
    for name, section in SECTIONS.items():
        result = with_progress(section.steps(quick), functools.partial(section.run, quick))
        show(TABLES[name](result), as_json)
        write_section(out, name, result)
        document[name] = result
    if as_json:
        typer.echo(json.dumps(document, indent=2))
