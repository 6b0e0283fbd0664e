"""The daily benchmark: a steady-state day (day 2 after day 1) against a cold epoch and against the
plaintext join of that day, measured in the same run.

The city is simulated for two epochs once (not timed) and given its PKI; each repetition starts from no node
or coordinator state and measures

- the **cold epoch** (day 1): the nodes' build of the whole window and the coordinator's whole epoch;
- the **steady-state epoch** (day 2): the same nodes, still serving, rolling to day 2 (the new day built,
  days with late rows rebuilt under fresh keys, the day that left the window shredded) and the
  coordinator's epoch of day 2, which reuses day 1's answers and indexes where keys and digests are
  unchanged and queries only what is new; issuance of every code for day 2 included;
- the **plaintext join of day 2** (`simulation.reference.compute_reference(run, as_of=day 2)`).

Both days' private matches must equal their plaintext join row for row, or the run fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks import Step
from benchmarks.epoch import RssSampler, Transport, _reset
from benchmarks.measure import busy_seconds, other_cpu_share
from coordinator.epoch import EpochResult, epoch_dir, run_epoch
from coordinator.risk import load_scenario
from proto.tokens import AGENCIES
from runctx.pki import init_keys
from runner import allocator
from runner.days import advance_nodes
from runner.enrollment import enroll_nodes
from runner.executors import default_workers, make_executor
from runner.pipeline import RunResult, serving_nodes
from simulation.presets import get_preset
from simulation.reference import compute_reference
from simulation.scenario import simulate


class DailyBenchError(RuntimeError):
    """A day's private matches differ from its plaintext join."""


@dataclass(frozen=True)
class DailyBenchSettings:
    """What one `bench daily` run measures."""

    preset: str = "city-20k"
    persons: int | None = None
    seed: int = 7
    workers: int | None = None
    repeat: int = 3
    transport: Transport = "inprocess"
    run_dir: Path | None = None
    """Where to simulate (kept); None: a temporary directory, removed afterwards."""

    @classmethod
    def quick(cls) -> DailyBenchSettings:
        """A 1,500-person city, one repetition: seconds, for tests (the figures are noisy)."""
        return cls(persons=1500, repeat=1)

    @property
    def population(self) -> int:
        """The number of residents simulated."""
        return self.persons if self.persons is not None else get_preset(self.preset).persons

    def steps(self) -> int:
        """How many progress steps `run_daily_bench` reports."""
        return 1 + 3 * self.repeat


@contextlib.contextmanager
def _directory(settings: DailyBenchSettings) -> Iterator[Path]:
    """The directory to simulate into: the one asked for (kept), or a temporary one (removed)."""
    if settings.run_dir is not None:
        yield Path(settings.run_dir)
        return
    with tempfile.TemporaryDirectory(prefix="healthpsi-bench-daily-") as tmp:
        yield Path(tmp) / "run"


def _check(run_dir: Path, day: dt.date, plaintext: Any) -> None:
    """Fail unless the day's private matches equal its plaintext join, row for row."""
    private = pq.read_table(epoch_dir(run_dir, day) / "matches.parquet").replace_schema_metadata(None)
    if not private.equals(plaintext.replace_schema_metadata(None)):
        raise DailyBenchError(f"the private matches of {day} differ from the plaintext join of that day")


def _epoch_figures(epoch: EpochResult) -> dict[str, Any]:
    """What an epoch queried and reused."""
    return {
        "queried": epoch.queried,
        "reused_answers": epoch.reused_answers,
        "indexes_downloaded": epoch.indexes_downloaded,
        "indexes_cached": epoch.indexes_cached,
        "codes": epoch.codes_total,
        "revoked": epoch.revoked,
        "stages": epoch.seconds,
    }


def _repetition(settings: DailyBenchSettings, run_dir: Path, days: list[dt.date], rss: RssSampler,
                step: Step) -> dict[str, Any]:
    """Day 1 from no state (cold), then day 2 on the same running nodes (steady state), then the plaintext
    join of day 2."""
    _reset(run_dir)
    allocator.release()
    rss.take_peak()
    result = RunResult(run_dir=run_dir)
    with make_executor(settings.workers, None) as executor:
        rss.enter("cold")
        started = time.perf_counter()
        with serving_nodes(run_dir, settings.transport, settings.workers, result, None, executor) as nodes:
            cold_nodes = time.perf_counter() - started
            cold_epoch = run_epoch(run_dir, nodes, executor, as_of=days[0])
            cold = time.perf_counter() - started
            step("cold epoch (day 1)")
            rss.enter("steady")
            started = time.perf_counter()
            advance_nodes(run_dir, nodes, days[1])
            steady_nodes = time.perf_counter() - started
            steady_epoch = run_epoch(run_dir, nodes, executor, as_of=days[1])
            steady = time.perf_counter() - started
            step("steady-state epoch (day 2)")
    rss.enter("plaintext")
    started = time.perf_counter()
    plaintext = compute_reference(run_dir, as_of=days[1]).table
    plaintext_seconds = time.perf_counter() - started
    step("plaintext join (day 2)")
    _check(run_dir, days[1], plaintext)
    _check(run_dir, days[0], compute_reference(run_dir, as_of=days[0]).table)
    return {
        "cold_seconds": cold,
        "cold_nodes_seconds": cold_nodes,
        "steady_seconds": steady,
        "steady_nodes_seconds": steady_nodes,
        "plaintext_seconds": plaintext_seconds,
        "cold_epoch": _epoch_figures(cold_epoch),
        "steady_epoch": _epoch_figures(steady_epoch),
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def run_daily_bench(settings: DailyBenchSettings, step: Step | None = None) -> dict[str, Any]:
    """Run the daily benchmark and return its figures (the `daily` section of `healthpsi bench --json`)."""
    report = step or (lambda _: None)
    runs: list[dict[str, Any]] = []
    with _directory(settings) as run_dir:
        simulate(settings.preset, settings.seed, run_dir, persons=settings.persons, days=2)
        init_keys(run_dir, force=True)
        enroll_nodes(run_dir, AGENCIES)
        days = load_scenario(run_dir).epochs
        report("simulate")
        before = busy_seconds()
        with RssSampler() as rss:
            for _ in range(settings.repeat):
                runs.append(_repetition(settings, run_dir, days, rss, report))
        foreign = other_cpu_share(before, busy_seconds())
        peaks = dict(rss.peaks)
    return {
        "preset": settings.preset,
        "persons": settings.population,
        "seed": settings.seed,
        "transport": settings.transport,
        "workers": settings.workers or default_workers(),
        "repeat": settings.repeat,
        "days": [d.isoformat() for d in days],
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
        "matches_equal_plaintext": True,
        "other_processes_cpu_share": foreign,
        "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()
        },
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
        },
    }

