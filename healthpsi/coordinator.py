"""`healthpsi coordinator` commands: run the daily epoch against the agency nodes."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from coordinator.epoch import EpochResult, run_epoch
from coordinator.errors import MatchingError
from coordinator.policy import PolicyError
from coordinator.risk import InputError
from coordinator.sealing import SealedFileError
from coordinator.store import StoreError
from coordinator.transport import GrpcTransport, NodeTransport
from crypto.errors import CryptoError
from healthpsi.checks import dask_option, parse_nodes, probe_nodes, require_run
from healthpsi.progress import stage_progress
from proto.errors import ProtocolError
from runctx.pki import PkiPaths
from runner.executors import make_executor
from runner.pipeline import in_process_nodes

app = typer.Typer(
    help="Coordinator: matches cases against the nodes and issues health codes.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
err = Console(stderr=True)
out = Console()

STAGES = {"evaluate": "Evaluate batches", "index": "indexes", "issuance": "codes signed"}
FAILURES = (
    MatchingError,
    ProtocolError,
    InputError,
    PolicyError,
    StoreError,
    SealedFileError,
    CryptoError,
    ValueError,
    OSError,
)


@contextlib.contextmanager
def _transports(
    run: Path,
    nodes: dict[str, str],
    in_process: bool,
    executor: Executor | None = None,
    as_of: dt.date | None = None,
) -> Iterator[dict[str, NodeTransport]]:
    """gRPC transports to the given nodes, or (in-process) node handlers opened over RUN/data as of `as_of`,
    their indexes built over `executor`."""
    if in_process:
        with in_process_nodes(run, executor, as_of) as transports:
            yield transports
        return
    grpc_transports = {
        agency: GrpcTransport(address, agency, PkiPaths(run)) for agency, address in nodes.items()
    }
    try:
        yield dict(grpc_transports)
    finally:
        for t in grpc_transports.values():
            t.close()


def _summary(result: EpochResult) -> Table:
    """A table of what the epoch did."""
    table = Table(title=f"epoch {result.epoch} (as of {result.as_of}, codes issued at {result.issued_at})")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("risk tokens / partitions", f"{result.risk_tokens} / {result.risk_partitions}"),
        ("evaluated now / reused", f"{result.queried} / {result.reused_answers}"),
        ("indexes downloaded / cached", f"{result.indexes_downloaded} / {result.indexes_cached}"),
        ("matches / subjects", f"{result.matches} / {result.matched_subjects}"),
        ("applicants / accepted", f"{result.applicants} / {result.accepted}"),
        ("refused", ", ".join(f"{k} {v}" for k, v in sorted(result.refused.items())) or "0"),
        ("codes (new this run / epoch)", f"{result.codes_issued} / {result.codes_total}"),
        ("colours", ", ".join(f"{k} {v}" for k, v in result.colours.items())),
        ("revoked now / listed", f"{result.revoked} / {result.revocations_total}"),
        ("malformed rows", ", ".join(f"{a}: {sum(m.values())}" for a, m in sorted(result.malformed.items()))),
        ("seconds", ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items())),
        ("bytes", ", ".join(f"{k} {v:,}" for k, v in result.bytes.items())),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


@app.command()
def epoch(
    run: Path = typer.Option(..., "--run", help="Run directory (RUN/health, RUN/pki, RUN/coordinator)."),
    node: list[str] = typer.Option(
        [], "--node", help="A node to query: AGENCY=HOST:PORT (repeat: carrier, transport, police, venues)."
    ),
    in_process: bool = typer.Option(
        False, "--in-process", help="Open the nodes inside this process over RUN/data (simulations, tests)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Worker processes for blinding/signing."
    ),
    dask: str | None = typer.Option(
        None, "--dask", callback=dask_option,
        help="Dask scheduler, tls://HOST:PORT ('local' starts one on 127.0.0.1); mutual TLS, RUN/pki/dask.",
    ),
    policy: Path | None = typer.Option(
        None, "--policy", help="Policy TOML (default: the built-in 2020 rules)."
    ),
    as_of: str | None = typer.Option(
        None, "--as-of", help="Epoch date (YYYY-MM-DD) [default: RUN/scenario.json's as_of]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the epoch result as JSON."),
) -> None:
    """Run (or resume) the coordinator's epoch: risk set → PSI matching at the nodes → matches, features,
    colours → checked applicants → signed health codes, revocations and the audit log.

    Writes RUN/coordinator/epochs/<as_of>/{matches,features}.parquet and epoch.json (the latest also in
    RUN/coordinator/), codes.sqlite, qr/, audit.jsonl and RUN/pki/issuers/<region>/revocations.json. Running
    it again after a crash finishes the same epoch without issuing a code twice. The epoch of a later day
    (--as-of) reuses the earlier epochs' answers and indexes where the nodes' keys and digests are
    unchanged and queries only what is new; it re-issues every code for that day and revokes those whose
    colour worsened.

    \b
    Example:
      healthpsi coordinator epoch --run runs/demo --node carrier=127.0.0.1:50051 \\
          --node transport=127.0.0.1:50052 --node police=127.0.0.1:50053 --node venues=127.0.0.1:50054
      healthpsi coordinator epoch --run runs/demo --in-process --workers 2
      healthpsi coordinator epoch --run runs/week --in-process --as-of 2020-02-01
    """
    date = None
    if as_of is not None:
        try:
            date = dt.date.fromisoformat(as_of)
        except ValueError:
            raise typer.BadParameter(f"not a date (YYYY-MM-DD): {as_of!r}", param_hint="--as-of") from None
    nodes = parse_nodes(node)
    if not nodes and not in_process:
        raise typer.BadParameter(
            "give --node AGENCY=HOST:PORT for each node, or --in-process", param_hint="--node"
        )
    require_run(run, "scenario", "pki", *(("data",) if in_process else ()))
    probe_nodes(run, nodes)
    bar, advance = stage_progress(STAGES, err)
    try:
        with (
            make_executor(workers, dask, PkiPaths(run)) as executor,
            _transports(run, nodes, in_process, executor, date) as transports,
            bar,
        ):
            result = run_epoch(run, transports, executor, advance, policy_path=policy, as_of=date)
    except FAILURES as exc:
        err.print(f"[bold red]epoch failed:[/] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        out.print(_summary(result))
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
