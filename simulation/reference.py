"""The plaintext oracle: the exact matches a private run must reproduce, by a plain join.

matches = the (subject, token) pairs every node records (through `nodes.store` and `nodes.tokenize`, the
nodes' own code) joined on token with the risk set (`proto.risk.risk_tokens`, the coordinator's rule),
without the case's own subject. One row per (subject_id, agency, token, case_id), sorted by those.
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


def load_scenario(run_dir: str | Path) -> dict[str, object]:
    """RUN/scenario.json as a dict (raises ReferenceError if missing or unreadable)."""
    path = Path(run_dir) / "scenario.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReferenceError(f"cannot read {path}: {exc}") from exc


def run_risk_tokens(run_dir: str | Path) -> pd.DataFrame:
    """The risk set of a RUN, from its health files and scenario (as_of, window_days)."""
    run = Path(run_dir)
    scenario = load_scenario(run)
    frames = {}
    for name in ("cases", "investigations", "risk_regions"):
        path = run / "health" / f"{name}.parquet"
        if not path.is_file():
            raise ReferenceError(f"missing health file {path}")
        frames[name] = pd.read_parquet(path)
    return risk.risk_tokens(
        frames["investigations"],
        frames["risk_regions"],
        frames["cases"],
        dt.date.fromisoformat(str(scenario["as_of"])),
        int(scenario["window_days"]),  # type: ignore[call-overload]
    )


def compute_reference(
    run_dir: str | Path, progress: Callable[[str, int, int], None] | None = None
) -> Reference:
    """Join every agency's recorded tokens with the risk set, partition by partition."""
    run = Path(run_dir)
    scenario = load_scenario(run)
    window = risk.window(dt.date.fromisoformat(str(scenario["as_of"])), int(scenario["window_days"]))  # type: ignore[call-overload]
    tokens = run_risk_tokens(run)
    parts: list[pa.Table] = []
    malformed: dict[str, dict[str, dict[str, int]]] = {}
    for agency in AGENCIES:
        store = AgencyStore(run, agency)
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
    return Reference(matches=table.to_pandas(), table=table, risk=tokens, malformed=malformed)


def reference_matches(run_dir: str | Path) -> pd.DataFrame:
    """The exact matches of a RUN; also writes RUN/reference/matches.parquet."""
    ref = compute_reference(run_dir)
    write_table(Path(run_dir) / "reference" / "matches.parquet", ref.table)
    return ref.matches
