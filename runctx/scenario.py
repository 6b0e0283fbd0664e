"""RUN/scenario.json, read and checked once for every party: the epoch's date and window, and in a simulation
run its seed, its simulated clock and whether its secrets are derived from the seed (`deterministic`).

This module is the one place that decides where a secret comes from: `Scenario.rng` gives the seed's stream
only when the scenario says `"deterministic": true` (a simulation whose auditor re-runs it byte for byte);
every other run draws every secret from the operating system."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crypto.drbg import Drbg, Rng
from proto import risk, tokens

DEFAULT_WINDOW_DAYS = 14
"""Days in the risk window when the scenario does not say."""
SCENARIO_FILE = "scenario.json"


class ScenarioError(ValueError):
    """RUN/scenario.json is missing or unusable; the message names the file and the field."""


@dataclass(frozen=True)
class Scenario:
    """The run's as_of date (its first epoch's), its number of daily epochs, its window and, in a simulation
    run, its seed and whether secrets derive from it; `raw` is the whole file."""

    as_of: dt.date
    window_days: int = DEFAULT_WINDOW_DAYS
    seed: int | None = None
    days: int = 1
    deterministic: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, run_dir: Path | str) -> Scenario:
        """Read and check RUN/scenario.json: a JSON object with an as_of date (YYYY-MM-DD), an optional
        window_days and days (epochs) of at least 1, an optional seed in [0, 2^64) (checked first) and an
        optional boolean `deterministic`, refused unless the run is a simulation (has a seed)."""
        path = Path(run_dir) / SCENARIO_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ScenarioError(f"{path}: cannot read ({exc.strerror or exc})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ScenarioError(f"{path}: expected a JSON object")
        seed = raw.get("seed")
        if seed is not None and (type(seed) is not int or not 0 <= seed < 2**64):
            raise ScenarioError(f"{path}: seed must be an integer in [0, 2^64), got {seed!r}")
        try:
            as_of = dt.date.fromisoformat(str(raw["as_of"]))
        except (KeyError, ValueError):
            got = raw.get("as_of")
            raise ScenarioError(f"{path}: needs an as_of date (YYYY-MM-DD), got {got!r}") from None
        days = raw.get("window_days") or DEFAULT_WINDOW_DAYS
        if type(days) is not int or days < 1:
            raise ScenarioError(f"{path}: window_days must be an integer of at least 1, got {days!r}")
        epochs = raw.get("days", 1)
        if type(epochs) is not int or epochs < 1:
            raise ScenarioError(f"{path}: days must be an integer of at least 1, got {epochs!r}")
        deterministic = raw.get("deterministic", False)
        if type(deterministic) is not bool:
            raise ScenarioError(f"{path}: deterministic must be true or false, got {deterministic!r}")
        if deterministic and seed is None:
            raise ScenarioError(f"{path}: deterministic is refused outside a simulation (there is no seed)")
        return cls(
            as_of=as_of, window_days=days, seed=seed, days=epochs, deterministic=deterministic, raw=raw
        )

    @classmethod
    def read(cls, run_dir: Path | str) -> Scenario | None:
        """`load`, or None when the run has no scenario file (an agency's own deployment)."""
        return cls.load(run_dir) if (Path(run_dir) / SCENARIO_FILE).exists() else None

    def with_window(self, as_of: dt.date | None = None, window_days: int | None = None) -> Scenario:
        """This scenario with the date or window given on the command line instead (None: keep)."""
        if window_days is not None and window_days < 1:
            raise ScenarioError(f"window_days must be at least 1, got {window_days}")
        days = window_days or self.window_days
        return dataclasses.replace(self, as_of=as_of or self.as_of, window_days=days)

    @property
    def epochs(self) -> list[dt.date]:
        """The epoch dates: as_of and the `days` − 1 days after it."""
        return [self.as_of + dt.timedelta(days=i) for i in range(self.days)]

    @property
    def window(self) -> tuple[dt.date, dt.date]:
        """First and last day of the window, inclusive."""
        return risk.window(self.as_of, self.window_days)

    def in_window(self, partition_id: str) -> bool:
        """Whether a partition is static or its day lies in the window."""
        _, day = tokens.parse_partition_id(partition_id)
        first, last = self.window
        return day is None or first <= day <= last

    @property
    def randomness(self) -> str:
        """How the run's secrets are drawn, as manifests, log heads and reports state it: "deterministic"
        (derived from the seed in scenario.json, for the auditor's re-run) or "system" (the OS)."""
        return "deterministic" if self.deterministic else "system"

    def rng(self, purpose: str) -> Rng | None:
        """The run's deterministic random stream for one purpose ("pki", "node/<agency>/<partition>",
        "coordinator/storage", ...) in a deterministic simulation run; None (system randomness) otherwise."""
        if not self.deterministic or self.seed is None:
            return None
        return Drbg(b"healthpsi" + self.seed.to_bytes(8, "big")).child(purpose)

    def clock(self) -> dt.datetime:
        """Now, in UTC to the second: in a seeded simulation run the simulated time (the end of the as_of
        day), else the wall clock."""
        if self.seed is None:
            return dt.datetime.now(dt.UTC).replace(microsecond=0)
        return dt.datetime.combine(self.as_of + dt.timedelta(days=1), dt.time(), dt.UTC)
