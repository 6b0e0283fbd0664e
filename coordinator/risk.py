"""The coordinator's inputs: the run's scenario and health records, and the risk set grouped per node and
partition. The risk rule itself is `proto.risk.risk_tokens`, shared with the plaintext reference."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from proto.risk import risk_tokens
from runctx.scenario import Scenario, ScenarioError

HEALTH_FILES = ("cases.parquet", "investigations.parquet", "risk_regions.parquet")


class InputError(ValueError):
    """A missing or unusable coordinator input (scenario, health records)."""


def load_scenario(run_dir: Path) -> Scenario:
    """Read RUN/scenario.json (`runctx.scenario.Scenario.load`); InputError names what is wrong."""
    try:
        return Scenario.load(run_dir)
    except ScenarioError as exc:
        raise InputError(str(exc)) from None


@dataclass(frozen=True)
class Health:
    """The health authority's records: cases, investigation tokens, risk regions."""

    cases: pd.DataFrame
    investigations: pd.DataFrame
    risk_regions: pd.DataFrame


def load_health(run_dir: Path) -> Health:
    """Read RUN/health/{cases,investigations,risk_regions}.parquet."""
    frames = []
    for name in HEALTH_FILES:
        path = Path(run_dir) / "health" / name
        try:
            frames.append(pd.read_parquet(path))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read ({exc})") from None
    return Health(*frames)


def files_digest(paths: Iterable[Path], extra: Iterable[str] = ()) -> str:
    """SHA-256 (hex) over the names and bytes of files (absent ones marked) and extra strings."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\x00")
        h.update(path.read_bytes() if path.exists() else b"\xff absent")
        h.update(b"\x00")
    for item in extra:
        h.update(item.encode() + b"\x00")
    return h.hexdigest()


def tokens_digest(tokens: Iterable[str]) -> str:
    """The commitment to a set of tokens: SHA-256 (hex) of the sorted distinct tokens, each UTF-8 + "\\n"."""
    distinct = sorted(set(tokens.tolist() if isinstance(tokens, pd.Series) else tokens))
    text = "".join(token + "\n" for token in distinct)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class RiskPartition:
    """The distinct risk tokens of one node partition, sorted."""

    agency: str
    partition_id: str
    tokens: tuple[str, ...]

    @property
    def digest(self) -> str:
        """Commitment to the partition's risk tokens (see `tokens_digest`)."""
        return tokens_digest(self.tokens)


@dataclass(frozen=True)
class RiskSet:
    """The risk set rows (token, case_id, case_subject_id, partition_id, agency) and their grouping."""

    rows: pd.DataFrame
    partitions: dict[str, dict[str, RiskPartition]]

    @property
    def token_count(self) -> int:
        """Number of distinct risk tokens."""
        return sum(len(p.tokens) for parts in self.partitions.values() for p in parts.values())


def group_by_partition(rows: pd.DataFrame) -> dict[str, dict[str, RiskPartition]]:
    """Risk tokens grouped by agency, then partition id (both sorted)."""
    out: dict[str, dict[str, RiskPartition]] = {}
    distinct = rows[["agency", "partition_id", "token"]].drop_duplicates()
    for (agency, pid), group in sorted(distinct.groupby(["agency", "partition_id"]), key=lambda g: g[0]):
        out.setdefault(str(agency), {})[str(pid)] = RiskPartition(
            str(agency), str(pid), tuple(sorted(group["token"]))
        )
    return out


def build_risk_set(health: Health, as_of: dt.date, window_days: int) -> RiskSet:
    """The risk set of the window ending at `as_of` (rule: `proto.risk.risk_tokens`), grouped."""
    rows = risk_tokens(health.investigations, health.risk_regions, health.cases, as_of, window_days)
    return RiskSet(rows=rows, partitions=group_by_partition(rows))
