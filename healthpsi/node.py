"""`healthpsi node` commands: serve an agency node over gRPC, or only build its indexes."""

from __future__ import annotations

import enum
import logging
import sys
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from healthpsi.checks import parse_address, require_run
from nodes.budget import BudgetPolicy, BudgetSpecError, write_budget
from nodes.handlers import DEFAULT_MAX_BATCH
from nodes.secrets import NodeSecrets, init_node
from nodes.server import ServerLimits
from nodes.server import serve as serve_node
from nodes.startup import CLOCKS, open_node
from nodes.startup import Progress as ProgressCallback
from runctx.scenario import Scenario
from runner.executors import make_executor

app = typer.Typer(
    help="Agency node: answers the coordinator's OPRF queries over the agency's own data.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
err = Console(stderr=True)
out = Console()


class Agency(enum.StrEnum):
    """The agencies that run a node."""

    carrier = "carrier"
    transport = "transport"
    police = "police"
    venues = "venues"


RUN_OPTION = typer.Option(..., "--run", help="Run directory (RUN/data/<agency>, RUN/pki, RUN/nodes/...).")
AGENCY_OPTION = typer.Option(..., "--agency", help="Whose node this is.")
WORKERS_OPTION = typer.Option(None, "--workers", min=1, help="Worker processes for OPRF batches.")
AS_OF_OPTION = typer.Option(
    None, "--as-of", formats=["%Y-%m-%d"],
    help="Last day of the 14-day window [default: RUN/scenario.json's as_of, else today].",
)
BUDGET_OPTION = typer.Option(
    None,
    "--budget",
    help="Query cap in evaluated elements: N for every partition, or SCOPE=N with SCOPE a partition id "
    "(identity@static), a token kind (household), a dataset (stays), 'day' or 'static' (repeatable). Each "
    "token kind of each day is its own partition with its own cap; a static partition's cap is per epoch. "
    "Safe default: entries/8 of each partition (at least 4, never more than its entries). identity=N: the "
    "applications this node answers per epoch (one element each). Options of `node serve` override the "
    "caps `node init --budget` stored in RUN/nodes/<agency>/budget.conf.",
)


def _setup_logging(verbose: bool) -> None:
    """Log lines to stderr (the node's operator log)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _budget(specs: list[str] | None) -> BudgetPolicy:
    """Parse --budget options, exiting with a clear message on a bad one."""
    try:
        return BudgetPolicy.parse(specs or [])
    except BudgetSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--budget") from None


def _progress_bar(agency: str) -> tuple[Progress, ProgressCallback]:
    """A rich progress bar over partitions and the callback that advances it."""
    bar = Progress(
        TextColumn(f"[bold]{agency}[/] indexes"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[partition]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
    task = bar.add_task("indexes", total=None, partition="")

    def advance(partition_id: str, done: int, total: int, reused: bool) -> None:
        """Show one more partition done (built or reused)."""
        label = f"{partition_id} ({'reused' if reused else 'built'})"
        bar.update(task, completed=done, total=total, partition=label)

    return bar, advance


@app.command("init")
def init(
    run: Path = RUN_OPTION,
    agency: Agency = AGENCY_OPTION,
    force: bool = typer.Option(False, "--force", help="Replace this node's existing keys."),
    budget: list[str] | None = BUDGET_OPTION,
) -> None:
    """Generate this node's own keys where it runs — Ed25519 identity, TLS and storage keys, in
    RUN/nodes/<agency>.secrets/ (or $HEALTHPSI_NODE_SECRETS/<agency>/), mode 0600 — and write its
    enrollment request (RUN/nodes/<agency>/request.json) for the authority to certify with
    `healthpsi keys enroll`. With --budget, the node's caps are stored in RUN/nodes/<agency>/budget.conf
    (read by every later start of the node).

    In a simulation (RUN/scenario.json with a seed) the keys come from the run's seed.

    \b
    Example:
      healthpsi node init --run runs/demo --agency carrier
      healthpsi node init --run runs/demo --agency police --force --budget identity=1200 --budget household=40
    """
    require_run(run)
    policy = _budget(budget)
    scenario = Scenario.read(run)
    rng = None if scenario is None else scenario.rng(f"node/{agency.value}")
    try:
        request = init_node(run, agency.value, rng, force=force)
        if budget:
            write_budget(run, agency.value, policy)
    except (OSError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    secrets = NodeSecrets.of(run, agency.value)
    print(f"{agency.value} node keys written to {secrets.directory}; request {request} "
          f"(next: healthpsi keys enroll --run {run} --agency {agency.value})")


@app.command()
def serve(
    run: Path = RUN_OPTION,
    agency: Agency = AGENCY_OPTION,
    listen: str = typer.Option("127.0.0.1:50051", "--listen", help="HOST:PORT; port 0 = any free port."),
    workers: int | None = WORKERS_OPTION,
    budget: list[str] | None = BUDGET_OPTION,
    max_batch: int = typer.Option(DEFAULT_MAX_BATCH, "--max-batch", min=1, help="Elements per Evaluate."),
    grace: float = typer.Option(10.0, "--grace", min=0, help="Seconds to drain calls after SIGTERM."),
    chunk_bytes: int = typer.Option(1 << 20, "--chunk-bytes", min=1, help="Target size of an index chunk."),
    max_calls: int = typer.Option(
        ServerLimits.max_concurrent_rpcs, "--max-calls", min=1,
        help="Calls running or waiting at once; more get UNAVAILABLE, which the coordinator retries.",
    ),
    as_of: datetime | None = AS_OF_OPTION,
    clock: str = typer.Option(
        "auto", "--clock",
        help="The node's date while it serves: 'wall' (today), 'run' (the date in RUN/nodes/<agency>/date), "
             "'auto' (run in a simulation, else wall). On a new date the node rolls its window.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Serve an agency node: build or load its indexes, then answer GetManifest, StreamIndex and Evaluate
    over mutual TLS (only the coordinator's certificate is served) until SIGTERM/SIGINT.

    The bound port is printed and written to RUN/nodes/<agency>/port once the node is serving. When its
    date changes (see --clock) the node rolls without a restart: it builds the new day, rebuilds under a
    fresh key any day with late rows, crypto-shreds days that left the window, and renews its manifest.

    \b
    Example:
      healthpsi node serve --run runs/demo --agency carrier --listen 127.0.0.1:50051
      healthpsi node serve --run runs/demo --agency police --listen 127.0.0.1:0 --budget household=200
      echo 2020-02-01 > runs/demo/nodes/carrier/date     # a --clock run node moves to that day
    """
    require_run(run, "scenario", "pki", "data")
    parse_address(listen, "--listen", any_port=True)
    _setup_logging(verbose)
    if clock not in CLOCKS:
        err.print(f"[red]error:[/] --clock {clock!r}: expected one of {', '.join(CLOCKS)}")
        raise typer.Exit(2)
    policy = _budget(budget)
    limits = ServerLimits(
        max_batch=max_batch, max_receive_bytes=max(4 << 20, 64 * max_batch), grace_seconds=grace,
        chunk_bytes=chunk_bytes, max_concurrent_rpcs=max_calls,
    )
    bar, advance = _progress_bar(agency.value)

    def listening(address: str) -> None:
        """Say the port is bound while the indexes build (calls get UNAVAILABLE until ready)."""
        print(f"{agency.value} node bound to {address}; building indexes before it serves", flush=True)
        bar.start()

    def ready(address: str) -> None:
        """Say the node is serving, only now."""
        bar.stop()
        print(f"{agency.value} node listening on {address}: serving", flush=True)

    try:
        with make_executor(workers) as executor:
            code = serve_node(
                run, agency.value, listen, executor=executor, budget=policy, limits=limits,
                progress=advance, on_listening=listening, on_ready=ready,
                as_of=as_of.date() if as_of else None, clock=clock,
            )
    except (OSError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    finally:
        bar.stop()
    raise typer.Exit(code)


@app.command()
def build(
    run: Path = RUN_OPTION,
    agency: Agency = AGENCY_OPTION,
    workers: int | None = WORKERS_OPTION,
    budget: list[str] | None = BUDGET_OPTION,
    as_of: datetime | None = AS_OF_OPTION,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Build (or check and reuse) an agency node's partition indexes without serving, and list them.

    \b
    Example:
      healthpsi node build --run runs/demo --agency transport --workers 2
    """
    require_run(run, "scenario", "pki", "data")
    _setup_logging(verbose)
    policy = _budget(budget)
    bar, advance = _progress_bar(agency.value)
    try:
        with make_executor(workers) as executor, bar:
            handlers = open_node(run, agency.value, executor, budget=policy, progress=advance,
                                 as_of=as_of.date() if as_of else None)
    except (OSError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    try:
        manifest = handlers.manifest()
    finally:
        handlers.close()
    table = Table(title=f"{agency.value} node, window ending {manifest.as_of}")
    table.add_column("partition", no_wrap=True)
    table.add_column("kinds")
    table.add_column("entries", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("digest", no_wrap=True)
    table.add_column("budget left/total", justify="right")
    for p in manifest.partitions:
        table.add_row(p.partition_id, " ".join(p.token_kinds), str(p.entry_count), str(p.index_bytes),
                      p.index_digest.hex()[:12], f"{p.budget_left}/{p.budget_total}")
    out.print(table)
    if manifest.malformed:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(manifest.malformed.items()))
        out.print(f"malformed rows skipped: {counts}")
