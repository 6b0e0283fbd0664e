"""The plaintext oracle: the exact matches a private run must reproduce, by a plain join.

matches = the (subject, token) pairs every node records (through `nodes.store` and `nodes.tokenize`, the
nodes' own code) joined on token with the risk set (`proto.risk.risk_tokens`, the coordinator's rule),
without the case's own subject. One row per (subject_id, agency, token, case_id), sorted by those.

The oracle of epoch date X (`compute_reference(run, as_of=X)`) sees what that day's epoch sees: the window of
`window_days` ending on X, health records known by X, and agency files delivered by X (`proto.layout`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from nodes.store import AgencyStore
from proto import risk
from proto.tokens import AGENCIES
from simulation.writer import SCHEMAS, write_table

MATCH_COLUMNS = ("subject_id", "agency", "token", "case_id")


class ReferenceError(ValueError):
    """A RUN directory the oracle cannot read (no scenario.json, health files missing)."""


@dataclass
class Reference:
    """The oracle's result: the matches (as a frame of `str` columns, where a region token's case_id is
    missing, and as an Arrow table), the risk set, and the malformed rows each agency skipped."""

    matches: pd.DataFrame
    table: pa.Table
    risk: pd.DataFrame
    malformed: dict[str, dict[str, dict[str, int]]]
    as_of: dt.date


def load_scenario(run_dir: str | Path) -> dict[str, object]:
    """RUN/scenario.json as a dict (raises ReferenceError if missing or unreadable)."""
    path = Path(run_dir) / "scenario.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReferenceError(f"cannot read {path}: {exc}") from exc


def _epochs(run_dir: str | Path) -> tuple[list[dt.date], int]:
    """The run's epoch dates (scenario.json's `as_of` and the `days` − 1 days after it) and window length."""
    scenario = load_scenario(run_dir)
    try:
        first, days = dt.date.fromisoformat(str(scenario["as_of"])), int(str(scenario.get("days", 1)))
        window_days = int(str(scenario.get("window_days", 14)))
    except (KeyError, ValueError) as exc:
        path = Path(run_dir) / "scenario.json"
        raise ReferenceError(f"{path}: needs as_of (YYYY-MM-DD), days and window_days ({exc})") from None
    return [first + dt.timedelta(days=i) for i in range(days)], window_days


def epoch_dates(run_dir: str | Path) -> list[dt.date]:
    """The run's epoch dates: scenario.json's `as_of` and the `days` − 1 days after it."""
    return _epochs(run_dir)[0]


def _as_of(run_dir: str | Path, as_of: dt.date | None) -> tuple[dt.date, int]:
    """The epoch date (the scenario's first when None) and the window's length."""
    dates, window_days = _epochs(run_dir)
    return as_of or dates[0], window_days


def run_risk_tokens(run_dir: str | Path, as_of: dt.date | None = None) -> pd.DataFrame:
    """The risk set of a RUN's epoch `as_of` (the scenario's first by default), from its health files."""
    run = Path(run_dir)
    date, window_days = _as_of(run, as_of)
    frames = {}
    for name in ("cases", "investigations", "risk_regions"):
        path = run / "health" / f"{name}.parquet"
        if not path.is_file():
            raise ReferenceError(f"missing health file {path}")
        frames[name] = pd.read_parquet(path)
    return risk.risk_tokens(
        frames["investigations"], frames["risk_regions"], frames["cases"], date, window_days
    )


def compute_reference(
    run_dir: str | Path,
    progress: Callable[[str, int, int], None] | None = None,
    as_of: dt.date | None = None,
) -> Reference:
    """The oracle as of `as_of` (the scenario's first epoch by default): every agency's tokens recorded in
    the files delivered by then, joined with that day's risk set, partition by partition."""
    run = Path(run_dir)
    date, window_days = _as_of(run, as_of)
    window = risk.window(date, window_days)
    tokens = run_risk_tokens(run, date)
    parts: list[pa.Table] = []
    malformed: dict[str, dict[str, dict[str, int]]] = {}
    for agency in AGENCIES:
        store = AgencyStore(run, agency, date)
        wanted = {pid: frame for pid, frame in tokens[tokens.agency == agency].groupby("partition_id")}
        pids = store.partition_ids(window)
        for i, (pid, frame) in enumerate(store.iter_partitions(window)):
            if progress is not None:
                progress(agency, i + 1, len(pids))
            asked = wanted.get(pid)
            if asked is None or not len(frame):
                continue
            hit = frame[frame["token"].isin(asked["token"])]
            if not len(hit):
                continue
            asked = asked[["token", "case_id", "case_subject_id"]].astype("str")
            m = hit.astype("str").merge(asked, on="token")
            m = m[m["case_subject_id"].isna() | (m["subject_id"] != m["case_subject_id"])]
            m = m.assign(agency=agency)[list(MATCH_COLUMNS)]
            parts.append(pa.Table.from_pandas(m, schema=SCHEMAS["matches"], preserve_index=False))
        malformed[agency] = store.malformed_by_dataset
    # rows are distinct by construction: a partition's (subject, token) pairs and the risk set's
    # (token, case) pairs are distinct, and no token lies in two partitions
    table = pa.concat_tables(parts) if parts else SCHEMAS["matches"].empty_table()
    table = table.sort_by([(c, "ascending", "at_end") for c in MATCH_COLUMNS])
    return Reference(matches=table.to_pandas(), table=table, risk=tokens, malformed=malformed, as_of=date)


def epoch_path(run_dir: str | Path, as_of: dt.date) -> Path:
    """RUN/reference/epochs/<date>/matches.parquet: the oracle of one epoch among several."""
    return Path(run_dir) / "reference" / "epochs" / as_of.isoformat() / "matches.parquet"


def write_reference(run_dir: str | Path, ref: Reference, latest: bool, per_epoch: bool) -> list[Path]:
    """Write an oracle's matches: to RUN/reference/matches.parquet when it is the `latest`, and under
    epochs/<date>/ when `per_epoch`; returns the paths written."""
    paths = ([Path(run_dir) / "reference" / "matches.parquet"] if latest else []) + (
        [epoch_path(run_dir, ref.as_of)] if per_epoch else []
    )
    for path in paths:
        write_table(path, ref.table)
    return paths


def reference_matches(run_dir: str | Path, as_of: dt.date | None = None) -> pd.DataFrame:
    """The exact matches of a RUN's epoch `as_of` (the scenario's first by default); also writes
    RUN/reference/matches.parquet."""
    ref = compute_reference(run_dir, as_of=as_of)
    write_reference(run_dir, ref, latest=True, per_epoch=False)
    return ref.matches
