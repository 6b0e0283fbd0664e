"""The benchmark sections behind `healthpsi bench`: each one's default or quick settings, its progress steps
and its run, and where its JSON section is written."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import Step
from benchmarks.crypto import CryptoBenchSettings, run_crypto_bench
from benchmarks.daily import DailyBenchSettings, run_daily_bench
from benchmarks.epoch import EpochBenchSettings, run_epoch_bench
from benchmarks.issue import IssueBenchSettings, run_issue_bench
from benchmarks.service import ServiceBenchSettings, run_service_bench


def write_section(out: Path | None, section: str, result: dict[str, Any]) -> None:
    """Write `{section: result}` to `out/bench-<section>.json` (nothing when `out` is None)."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps({section: result}, indent=2) + "\n"
        (out / f"bench-{section}.json").write_text(text, encoding="utf-8")


def crypto_settings(quick: bool) -> CryptoBenchSettings:
    """The crypto benchmark's default or quick sizes."""
    return CryptoBenchSettings.quick() if quick else CryptoBenchSettings()


def epoch_settings(quick: bool) -> EpochBenchSettings:
    """The epoch benchmark's default (city-20k) or quick sizes."""
    return EpochBenchSettings.quick() if quick else EpochBenchSettings()


def daily_settings(quick: bool) -> DailyBenchSettings:
    """The daily benchmark's default (city-20k) or quick sizes."""
    return DailyBenchSettings.quick() if quick else DailyBenchSettings()


def issue_settings(quick: bool) -> IssueBenchSettings:
    """The issuance benchmark's default or quick sizes."""
    return IssueBenchSettings.quick() if quick else IssueBenchSettings()


def service_settings(quick: bool) -> ServiceBenchSettings:
    """The load benchmark's default or quick sizes."""
    return ServiceBenchSettings.quick() if quick else ServiceBenchSettings()


@dataclasses.dataclass(frozen=True)
class Section:
    """One benchmark as `bench all` runs it: its progress steps and its run."""

    steps: Callable[[bool], int]
    run: Callable[[bool, Step], dict[str, Any]]


SECTIONS: dict[str, Section] = {
    "crypto": Section(
        steps=lambda quick: crypto_settings(quick).steps(),
        run=lambda quick, step: run_crypto_bench(crypto_settings(quick), step),
    ),
    "epoch": Section(
        steps=lambda quick: epoch_settings(quick).steps(),
        run=lambda quick, step: run_epoch_bench(epoch_settings(quick), step),
    ),
    "issue": Section(
        steps=lambda quick: issue_settings(quick).steps(),
        run=lambda quick, step: run_issue_bench(issue_settings(quick), step),
    ),
    "daily": Section(
        steps=lambda quick: daily_settings(quick).steps(),
        run=lambda quick, step: run_daily_bench(daily_settings(quick), step),
    ),
    "service": Section(
        steps=lambda quick: service_settings(quick).steps(),
        run=lambda quick, step: run_service_bench(service_settings(quick), step),
    ),
}
"""The benchmarks `bench all` runs, in order; a benchmark joins it by an entry here and a table in the CLI."""
