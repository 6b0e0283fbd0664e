"""The main job, `healthpsi run`: simulate, make keys, serve the nodes, run the epoch, verify, report.

Shared by `healthpsi run`, `healthpsi audit replay` (its re-run) and `healthpsi bench epoch`: the same steps
an operator runs by hand, with the nodes as real `healthpsi node serve` processes on loopback (or, for
re-runs and large simulations, in-process over the same node handlers).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow.parquet as pq

from coordinator.cotravel import publish as publish_cotravel
from coordinator.epoch import EpochResult, epoch_dir, run_epoch
from coordinator.risk import load_scenario
from coordinator.transport import GrpcTransport, InProcessTransport, NodeTransport
from crypto.codes import check_payload
from crypto.pki import load_revocations
from proto.healthpsi.v1 import node_pb2
from proto.tokens import AGENCIES
from runctx.pki import PkiPaths, init_keys, load_pinned_trust_list
from runctx.progress import Progress
from runner.days import advance_nodes
from runner.enrollment import enroll_nodes
from runner.executors import make_executor
from runner.processes import NodeProcess, start_nodes
from runner.report import build_report
from simulation.reference import reference_matches
from simulation.scenario import simulate

if TYPE_CHECKING:
    from nodes.handlers import NodeHandlers

Transport = Literal["grpc", "inprocess"]
StepCallback = Callable[[str], None]


class PipelineError(RuntimeError):
    """A step of the run failed; the message names the step."""


@dataclass
class RunResult:
    """What a run did: its directory, per-step seconds, the epoch's result and the checks made after it."""

    run_dir: Path
    deterministic: bool = True
    steps: dict[str, float] = field(default_factory=dict)
    epoch: EpochResult | None = None
    """The last day's epoch."""
    days: list[DayResult] = field(default_factory=list)
    budgets: dict[str, dict[str, int]] = field(default_factory=dict)
    node_exit_codes: dict[str, int] = field(default_factory=dict)
    verified: dict[str, int] = field(default_factory=dict)
    reference_equal: bool | None = None
    report_path: Path | None = None


@dataclass
class DayResult:
    """One day of a run: its epoch and whether its matches equal that day's plaintext join."""

    epoch: EpochResult
    reference_equal: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The day as a JSON-ready dict: what was reused and queried, codes by colour, revocations."""
        e = self.epoch
        return {
            "as_of": e.as_of,
            "seconds": round(self.seconds, 3),
            "reference_equal": self.reference_equal,
            "risk_tokens": e.risk_tokens,
            "matches": e.matches,
            "matched_subjects": e.matched_subjects,
            "queried": e.queried,
            "reused_answers": e.reused_answers,
            "indexes_downloaded": e.indexes_downloaded,
            "indexes_cached": e.indexes_cached,
            "applicants": e.applicants,
            "codes_issued": e.codes_issued,
            "colours": e.colours,
            "revoked": e.revoked,
            "revocations_total": e.revocations_total,
        }


def _budgets(manifests: dict[str, node_pb2.SignedManifest]) -> dict[str, dict[str, int]]:
    """Per agency: partitions, budget total and budget used, from the nodes' signed manifests."""
    out: dict[str, dict[str, int]] = {}
    for agency, signed in manifests.items():
        manifest = node_pb2.Manifest.FromString(signed.manifest)
        total = sum(p.budget_total for p in manifest.partitions)
        left = sum(p.budget_left for p in manifest.partitions)
        out[agency] = {
            "partitions": len(manifest.partitions),
            "budget_total": total,
            "budget_used": total - left,
        }
    return out


def open_nodes(
    run_dir: Path, executor: Executor | None = None, as_of: dt.date | None = None
) -> dict[str, NodeHandlers]:
    """Every agency's node handlers in this process dated `as_of` (default: the scenario's), opened side by
    side (their partitions' build jobs share `executor`); if one fails, the others are closed and the error
    raised."""
    from nodes.startup import open_node

    with ThreadPoolExecutor(len(AGENCIES), thread_name_prefix="open-node") as threads:
        futures = {
            agency: threads.submit(open_node, run_dir, agency, executor, as_of=as_of) for agency in AGENCIES
        }
        opened, errors = {}, []
        for agency, future in futures.items():
            try:
                opened[agency] = future.result()
            except Exception as exc:
                errors.append(exc)
    if errors:
        for h in opened.values():
            h.close()
        raise errors[0]
    return opened


@contextlib.contextmanager
def in_process_nodes(
    run_dir: Path, executor: Executor | None = None, as_of: dt.date | None = None
) -> Iterator[dict[str, NodeTransport]]:
    """Every agency's node opened inside this process over RUN/data as of `as_of` (indexes built over
    `executor`), behind the in-process transport."""
    handlers = open_nodes(run_dir, executor, as_of)
    try:
        yield {agency: InProcessTransport(h, agency) for agency, h in handlers.items()}
    finally:
        for h in handlers.values():
            h.close()


@contextlib.contextmanager
def serving_nodes(
    run_dir: Path,
    transport: Transport,
    workers: int | None,
    result: RunResult,
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> Iterator[dict[str, NodeTransport]]:
    """Yield a transport per agency: real node processes over mTLS gRPC, or in-process node handlers
    (their indexes built over `executor`).

    Node processes are stopped with SIGTERM on the way out; their exit codes go into `result`.
    """
    if transport == "inprocess":
        with in_process_nodes(run_dir, executor) as transports:
            yield transports
        return
    processes: dict[str, NodeProcess] = start_nodes(run_dir, AGENCIES, workers, progress)
    paths = PkiPaths(run_dir)
    channels = {a: GrpcTransport(p.address, a, paths) for a, p in processes.items()}
    try:
        yield dict(channels)
    finally:
        for channel in channels.values():
            channel.close()
        for agency, proc in processes.items():
            result.node_exit_codes[agency] = proc.stop()


def verify_sample(run_dir: Path, sample: int = 50) -> dict[str, int]:
    """Verify a sample of the issued codes offline, as a checkpoint would: trust list, revocations, clock."""
    paths = PkiPaths(run_dir)
    trust = load_pinned_trust_list(paths)
    revocations = [load_revocations(paths.issuer_dir(r) / "revocations.json", trust) for r in paths.issuers()]
    with contextlib.closing(sqlite3.connect(run_dir / "coordinator" / "codes.sqlite")) as db:
        rows = db.execute(
            "SELECT payload, issued_at FROM codes WHERE code_id NOT IN (SELECT code_id FROM revocations) "
            "ORDER BY code_id LIMIT ?",
            (sample,),
        ).fetchall()
    counts = {"checked": 0, "valid": 0}
    for payload, issued_at in rows:
        at = dt.datetime.fromisoformat(issued_at) + dt.timedelta(hours=1)
        report = check_payload(payload, trust, at, revocations)
        counts["checked"] += 1
        counts["valid"] += int(report.valid)
    return counts


def matches_equal_reference(run_dir: Path, as_of: dt.date | None = None) -> bool:
    """Compute the plaintext oracle of epoch `as_of` (the scenario's first by default) and compare it with
    that epoch's private matches, row for row."""
    reference_matches(run_dir, as_of)
    day = as_of or load_scenario(run_dir).as_of
    private = pq.read_table(epoch_dir(run_dir, day) / "matches.parquet").replace_schema_metadata(None)
    oracle = pq.read_table(run_dir / "reference" / "matches.parquet").replace_schema_metadata(None)
    return bool(private.equals(oracle))


def run_pipeline(
    preset: str,
    seed: int,
    out: Path,
    persons: int | None = None,
    *,
    workers: int | None = None,
    dask: str | None = None,
    transport: Transport = "grpc",
    deterministic: bool = True,
    step: StepCallback | None = None,
    epoch_progress: Progress | None = None,
    report: bool = True,
    days: int = 1,
) -> RunResult:
    """Run the whole job into `out` over `days` consecutive epochs (the nodes keep running and roll to each
    new day); each step's wall time goes into the result. `deterministic`: every secret derived from the seed
    (the auditor's byte-for-byte re-run), else from the OS."""
    announce = step or (lambda name: None)
    out = Path(out)
    result = RunResult(run_dir=out, deterministic=deterministic)

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        announce(name)
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:
            raise PipelineError(f"{name} failed: {exc}") from exc
        result.steps[name] = time.perf_counter() - t0
        return value

    timed(
        "simulate",
        lambda: simulate(preset, seed, out, persons=persons, days=days, deterministic=deterministic),
    )

    def keys() -> None:
        """The authority's keys, then each node's own keys, enrolled."""
        init_keys(out, force=True)
        enroll_nodes(out, AGENCIES)

    timed("keys", keys)
    with make_executor(workers, dask, PkiPaths(out)) as executor:
        announce("nodes")
        t0 = time.perf_counter()
        with serving_nodes(out, transport, workers, result, epoch_progress, executor) as transports:
            result.steps["nodes"] = time.perf_counter() - t0
            for n, date in enumerate(load_scenario(out).epochs):
                suffix = "" if n == 0 else f" {date}"
                if n > 0:
                    timed(f"nodes{suffix}", functools.partial(advance_nodes, out, transports, date))
                t0 = time.perf_counter()
                result.epoch = timed(
                    f"epoch{suffix}",
                    functools.partial(run_epoch, out, transports, executor, epoch_progress, as_of=date),
                )
                seconds = time.perf_counter() - t0
                equal = timed(f"reference{suffix}", functools.partial(matches_equal_reference, out, date))
                result.days.append(DayResult(result.epoch, equal, seconds))
            result.budgets = _budgets({a: t.get_manifest() for a, t in transports.items()})
    bad_exits = {a: c for a, c in result.node_exit_codes.items() if c != 0}
    if bad_exits:
        raise PipelineError(f"nodes did not stop cleanly: {bad_exits}")
    timed("cotravel", lambda: publish_cotravel(out))
    result.verified = timed("verify", lambda: verify_sample(out))
    result.reference_equal = all(d.reference_equal for d in result.days)
    if report:
        result.report_path = timed("report", lambda: build_report(out, run_summary(result)))
    (out / "run.json").write_text(json.dumps(run_summary(result), indent=2, sort_keys=True) + "\n")
    return result


def run_summary(result: RunResult) -> dict[str, Any]:
    """The run's result as a JSON-ready dict."""
    return {
        "run_dir": str(result.run_dir),
        "randomness": "deterministic" if result.deterministic else "system",
        "steps": result.steps,
        "epoch": result.epoch.to_json() if result.epoch else None,
        "days": [d.to_json() for d in result.days],
        "budgets": result.budgets,
        "node_exit_codes": result.node_exit_codes,
        "verified": result.verified,
        "reference_equal": result.reference_equal,
        "report": str(result.report_path) if result.report_path else None,
    }
