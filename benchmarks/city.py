"""What the benchmarks over a simulated city share (`bench epoch`, `bench daily`): their common settings, the
directory they simulate into, the city's preparation, a reset to no node or coordinator state between
repetitions, the memory sampler, and the check of private matches against the plaintext join."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from nodes.budget import CONFIG_FILE
from proto.tokens import AGENCIES
from runctx.pki import init_keys
from runner import allocator
from runner.enrollment import enroll_nodes
from runner.executors import default_workers
from simulation.presets import get_preset
from simulation.scenario import simulate

Transport = Literal["inprocess", "grpc"]
LARGE_PERSONS = 200_000
"""From this population on (city-240k, sanmenxia) one repetition by default, three below."""


@dataclass(frozen=True)
class CityBenchSettings:
    """Which city a benchmark simulates, how often it measures, and how the nodes run."""

    preset: str = "city-20k"
    persons: int | None = None
    seed: int = 7
    workers: int | None = None
    repeat: int | None = None
    """Repetitions (None: 3 below LARGE_PERSONS, 1 from there on)."""
    transport: Transport = "inprocess"
    run_dir: Path | None = None
    """Where to simulate (kept); None: a temporary directory, removed afterwards."""

    @classmethod
    def quick(cls) -> Self:
        """A 1,500-person city, one repetition: seconds, for tests (the figures are noisy)."""
        return cls(persons=1500, repeat=1)

    @property
    def population(self) -> int:
        """The number of residents simulated."""
        return self.persons if self.persons is not None else get_preset(self.preset).persons

    @property
    def repetitions(self) -> int:
        """How many times each figure is measured."""
        if self.repeat is not None:
            return self.repeat
        return 1 if self.population >= LARGE_PERSONS else 3

    def head(self) -> dict[str, Any]:
        """The first members of a benchmark's section: the city, the nodes' transport, the workers and the
        repetitions."""
        return {
            "preset": self.preset,
            "persons": self.population,
            "seed": self.seed,
            "transport": self.transport,
            "workers": self.workers or default_workers(),
            "repeat": self.repetitions,
        }

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


@contextlib.contextmanager
def city_directory(settings: CityBenchSettings, prefix: str) -> Iterator[Path]:
    """The directory to simulate into: the one asked for (kept), or a temporary one (removed)."""
    if settings.run_dir is not None:
        yield Path(settings.run_dir)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp) / "run"


def prepare_city(settings: CityBenchSettings, run_dir: Path, days: int = 1) -> float:
    """Simulate the city over `days` epochs, make its PKI and enroll its nodes; returns the seconds taken."""
    started = time.perf_counter()
    simulate(settings.preset, settings.seed, run_dir, persons=settings.persons, days=days)
    init_keys(run_dir, force=True)
    enroll_nodes(run_dir, AGENCIES)
    return time.perf_counter() - started


def reset_state(run_dir: Path) -> None:
    """Remove every node's and the coordinator's state and the nodes' day keys (the PKI, the nodes' own
    keys, their operators' caps and the data stay)."""
    for name in ("coordinator", "reference"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for path in (run_dir / "nodes").glob("*"):
        if path.name.endswith(".secrets"):
            shutil.rmtree(path / "days", ignore_errors=True)
            continue
        for entry in path.iterdir() if path.is_dir() else ():
            if entry.name != CONFIG_FILE:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def fresh_start(run_dir: Path, rss: RssSampler) -> None:
    """Start a repetition from no node or coordinator state, the sampler's peak taken anew."""
    reset_state(run_dir)
    # worker processes are forked next: give back the heap the last repetition freed, or every worker's
    # resident set would count those pages again
    allocator.release()
    rss.take_peak()


def equals_plaintext(matches: Path, plaintext: pa.Table) -> bool:
    """Whether a private matches.parquet equals the plaintext join, row for row."""
    private = pq.read_table(matches).replace_schema_metadata(None)
    return bool(private.equals(plaintext.replace_schema_metadata(None)))


def machine(other_share: float) -> dict[str, Any]:
    """The machine a benchmark ran on: CPUs, memory, load at the end, and the CPU share others took."""
    return {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "load_average_end": list(os.getloadavg()),
        "other_processes_cpu_share": other_share,
    }


class RssSampler:
    """Peak resident set of this process plus all its descendants, sampled by a thread, per phase.

    Reading one process's resident set is cheap; listing the descendants scans all of /proc, so the list is
    refreshed every `refresh` seconds and at each phase change, not at every sample.
    """

    def __init__(self, interval: float = 0.05, refresh: float = 1.0) -> None:
        self.interval = interval
        self.refresh = refresh
        self.phase = "start"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._me = psutil.Process()
        self._children: list[psutil.Process] = []
        self._listed_at: float | None = None
        self._since = 0

    def sample(self, relist: bool = False) -> int:
        """The current resident set of the process tree, in bytes (`relist`: list the descendants anew)."""
        now = time.monotonic()
        if relist or self._listed_at is None or now - self._listed_at >= self.refresh:
            with contextlib.suppress(psutil.Error):
                self._children = self._me.children(recursive=True)
            self._listed_at = now
        total = 0
        for process in (self._me, *self._children):
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def _record(self, relist: bool = False) -> None:
        rss = self.sample(relist)
        if rss > self.peaks.get(self.phase, 0):
            self.peaks[self.phase] = rss
        self._since = max(self._since, rss)

    def take_peak(self) -> int:
        """The peak since the last call (or the start), whatever the phase; the next call starts afresh."""
        self._record(relist=True)
        peak, self._since = self._since, 0
        return peak

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._record()

    def enter(self, phase: str) -> None:
        """Attribute the samples from now on to `phase`."""
        self._record(relist=True)
        self.phase = phase
        self._record()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._record()

    @property
    def peak(self) -> int:
        """The largest sample of any phase."""
        return max(self.peaks.values(), default=0)
