"""The daily benchmark: a steady-state day (day 2 after day 1) against a cold epoch and against the
plaintext join of that day, measured in the same run, and the same two days on a Dask cluster of 1 and 2
worker processes (the scaling curve).

The city is simulated for two epochs once (not timed) and given its PKI; each repetition starts from no node
or coordinator state and measures

- the **cold epoch** (day 1): the nodes' build of the whole window and the coordinator's whole epoch;
- the **steady-state epoch** (day 2): the same nodes, still serving, rolling to day 2 (the new day built,
  days with late rows rebuilt under fresh keys, the day that left the window shredded) and the
  coordinator's epoch of day 2, which reuses day 1's answers and indexes where keys and digests are
  unchanged and queries only what is new; issuance of every code for day 2 included;
- the **plaintext join of day 2** (`simulation.reference.compute_reference(run, as_of=day 2)`).

The **scaling curve** runs the same two days with every partitioned step (node builds, blinding, evaluation,
proofs, signing) on a Dask LocalCluster of N separate worker processes over mutual TLS (the run's
certificates), N in `dask_workers`; the cluster's start is not timed.

Every day's private matches must equal its plaintext join row for row, or the run fails.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks import Step
from benchmarks.city import (
    CityBenchSettings,
    RssSampler,
    city_directory,
    equals_plaintext,
    fresh_start,
    machine,
    prepare_city,
)
from benchmarks.measure import busy_seconds, other_cpu_share
from coordinator.epoch import EpochResult, epoch_dir, run_epoch
from coordinator.risk import load_scenario
from runctx.pki import PkiPaths
from runner.days import advance_nodes
from runner.executors import DASK_LOCAL, make_executor
from runner.pipeline import RunResult, serving_nodes
from simulation.reference import compute_reference

SCALING = (1, 2)
"""Dask worker processes of the scaling curve, by default."""


class DailyBenchError(RuntimeError):
    """A day's private matches differ from its plaintext join, or a node process did not stop cleanly."""


@dataclass(frozen=True)
class DailyBenchSettings(CityBenchSettings):
    """What one `bench daily` run measures."""

    dask_workers: tuple[int, ...] = SCALING
    """Sizes of the Dask LocalCluster (worker processes) the scaling curve measures; empty: no curve."""

    def steps(self) -> int:
        """How many progress steps `run_daily_bench` reports."""
        return 1 + self.repetitions * (3 + 2 * len(self.dask_workers))


def _epoch_figures(epoch: EpochResult) -> dict[str, Any]:
    """What an epoch queried and reused, and its stages."""
    return {
        "queried": epoch.queried,
        "reused_answers": epoch.reused_answers,
        "indexes_downloaded": epoch.indexes_downloaded,
        "indexes_cached": epoch.indexes_cached,
        "codes": epoch.codes_total,
        "revoked": epoch.revoked,
        "stages": epoch.seconds,
    }


def _two_days(
    settings: DailyBenchSettings, run_dir: Path, days: list[dt.date], executor: Executor | None,
    workers: int | None, rss: RssSampler, step: Step, label: str,
) -> dict[str, Any]:
    """Day 1 from no state (cold), then day 2 on the same running nodes (steady state), over `executor`;
    both days' matches are checked afterwards by the caller."""
    result = RunResult(run_dir=run_dir)
    rss.enter(f"cold{label}")
    started = time.perf_counter()
    with serving_nodes(run_dir, settings.transport, workers, result, None, executor) as nodes:
        cold_nodes = time.perf_counter() - started
        cold_epoch = run_epoch(run_dir, nodes, executor, as_of=days[0])
        cold = time.perf_counter() - started
        step(f"cold epoch (day 1){label}")
        rss.enter(f"steady{label}")
        started = time.perf_counter()
        advance_nodes(run_dir, nodes, days[1])
        steady_nodes = time.perf_counter() - started
        steady_epoch = run_epoch(run_dir, nodes, executor, as_of=days[1])
        steady = time.perf_counter() - started
        step(f"steady-state epoch (day 2){label}")
    bad = {agency: code for agency, code in result.node_exit_codes.items() if code != 0}
    if bad:
        raise DailyBenchError(f"node processes did not stop cleanly: {bad}")
    return {
        "cold_seconds": cold,
        "cold_nodes_seconds": cold_nodes,
        "steady_seconds": steady,
        "steady_nodes_seconds": steady_nodes,
        "cold_epoch": _epoch_figures(cold_epoch),
        "steady_epoch": _epoch_figures(steady_epoch),
    }


def _check(run_dir: Path, days: list[dt.date], plaintext: dict[dt.date, pa.Table], label: str) -> None:
    """Fail unless each day's private matches equal its plaintext join, row for row."""
    for day in days:
        if not equals_plaintext(epoch_dir(run_dir, day) / "matches.parquet", plaintext[day]):
            raise DailyBenchError(
                f"the private matches of {day}{label} differ from the plaintext join of that day"
            )


def _repetition(settings: DailyBenchSettings, run_dir: Path, days: list[dt.date], rss: RssSampler,
                step: Step, plaintext: dict[dt.date, pa.Table]) -> dict[str, Any]:
    """Both days on local worker processes, then the plaintext join of day 2 (timed), then the matches
    checked."""
    fresh_start(run_dir, rss)
    with make_executor(settings.workers, None) as executor:
        run = _two_days(settings, run_dir, days, executor, settings.workers, rss, step, "")
    rss.enter("plaintext")
    started = time.perf_counter()
    plaintext[days[1]] = compute_reference(run_dir, as_of=days[1]).table
    run["plaintext_seconds"] = time.perf_counter() - started
    rss.enter("idle")
    step("plaintext join (day 2)")
    plaintext.setdefault(days[0], compute_reference(run_dir, as_of=days[0]).table)
    _check(run_dir, days, plaintext, "")
    return run


def _scaling_point(settings: DailyBenchSettings, run_dir: Path, days: list[dt.date], rss: RssSampler,
                   step: Step, plaintext: dict[dt.date, pa.Table], workers: int) -> dict[str, Any]:
    """Both days with the partitioned work on a Dask LocalCluster of `workers` processes over mutual TLS."""
    label = f" on {workers} Dask worker{'s' if workers > 1 else ''}"
    fresh_start(run_dir, rss)
    with make_executor(workers, DASK_LOCAL, PkiPaths(run_dir)) as executor:
        run = _two_days(settings, run_dir, days, executor, workers, rss, step, label)
    rss.enter("idle")
    _check(run_dir, days, plaintext, label)
    return run


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def _curve(points: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per cluster size: the median cold and steady-state seconds, and the speed-up over the first size."""
    out = []
    base: dict[str, float] = {}
    for workers, runs in sorted(points.items()):
        point: dict[str, Any] = {"dask_workers": workers}
        for key in ("cold_seconds", "steady_seconds", "steady_nodes_seconds"):
            point[key] = _median(runs, key)
            base.setdefault(key, point[key])
            point[key.replace("_seconds", "_speedup")] = base[key] / point[key]
        point["repetitions"] = [{k: v for k, v in r.items() if k.endswith("seconds")} for r in runs]
        out.append(point)
    return out


def run_daily_bench(settings: DailyBenchSettings, step: Step | None = None) -> dict[str, Any]:
    """Run the daily benchmark and return its figures (the `daily` section of `healthpsi bench --json`)."""
    report = step or (lambda _: None)
    runs: list[dict[str, Any]] = []
    points: dict[int, list[dict[str, Any]]] = {n: [] for n in settings.dask_workers}
    with city_directory(settings, "healthpsi-bench-daily-") as run_dir:
        simulate_seconds = prepare_city(settings, run_dir, days=2)
        days = load_scenario(run_dir).epochs
        report("simulate")
        plaintext: dict[dt.date, pa.Table] = {}
        before = busy_seconds()
        with RssSampler() as rss:
            for _ in range(settings.repetitions):  # interleaved, so that a busy spell hits every figure
                runs.append(_repetition(settings, run_dir, days, rss, report, plaintext))
                for workers in settings.dask_workers:
                    points[workers].append(_scaling_point(settings, run_dir, days, rss, report, plaintext,
                                                          workers))
        foreign = other_cpu_share(before, busy_seconds())
        peaks = dict(rss.peaks)
    return {
        **settings.head(),
        "days": [d.isoformat() for d in days],
        "simulate_seconds": simulate_seconds,
        "cold_seconds": _median(runs, "cold_seconds"),
        "steady_seconds": _median(runs, "steady_seconds"),
        "steady_nodes_seconds": _median(runs, "steady_nodes_seconds"),
        "cold_nodes_seconds": _median(runs, "cold_nodes_seconds"),
        "plaintext_seconds": _median(runs, "plaintext_seconds"),
        "steady_over_cold": statistics.median(r["steady_seconds"] / r["cold_seconds"] for r in runs),
        "steady_privacy_price": statistics.median(r["steady_seconds"] / r["plaintext_seconds"] for r in runs),
        "peak_rss_by_phase": {p: peaks[p] for p in ("cold", "steady", "plaintext") if p in peaks},
        "cold_epoch": runs[-1]["cold_epoch"],
        "steady_epoch": runs[-1]["steady_epoch"],
        "repetitions": [{k: v for k, v in r.items() if k.endswith("seconds")} for r in runs],
        "dask_scaling": _curve(points),
        "matches_equal_plaintext": True,
        "other_processes_cpu_share": foreign,
        "machine": machine(foreign),
        "settings": settings.to_json(),
        "notes": {
            "cold_seconds": "day 1 from no node or coordinator state: the nodes' build of the window plus "
            "the coordinator's epoch, issuance included",
            "steady_seconds": "day 2 on the same running nodes: their roll (new day built, late-row days "
            "rebuilt under fresh keys, the leaving day shredded) plus the coordinator's epoch of day 2, "
            "which queries only tokens and applicants not answered under an unchanged key and downloads only "
            "changed indexes; issuance of every code for day 2 included",
            "steady_privacy_price": "median of steady-state seconds / seconds of the plaintext join of day 2 "
            "(the oracle's pandas computation on one core over the files delivered by day 2)",
            "steady_over_cold": "median of steady-state seconds / cold seconds",
            "dask_scaling": "the same two days with the partitioned work on a Dask LocalCluster of N worker "
            "processes (one thread each) over mutual TLS, medians over the repetitions, the cluster's start "
            "not timed; speed-up: seconds on the first size / seconds on N. The coordinator's own thread, "
            "the node handlers and the cluster's scheduler share the machine's cores with the workers",
        },
    }
