"""The plaintext oracle: the exact matches a private run must reproduce, by a plain join.

matches = the (subject, token) pairs the agency files record — read here with pyarrow, the malformed rows
dropped by the contract's rules, tokenised by the contract's tokeniser (`proto.tokenize`) — joined on token
with the risk set (`proto.risk.risk_tokens`, the coordinator's rule), without the case's own subject. One
row per (subject_id, agency, token, case_id), sorted by those. The oracle shares no code with the nodes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from proto import ids, risk
from proto import tokenize as tz
from proto.tokens import AGENCIES, partition_id
from runctx.progress import Progress
from runctx.scenario import Scenario, ScenarioError
from simulation.writer import SCHEMAS, write_table

MATCH_COLUMNS = ("subject_id", "agency", "token", "case_id")
_DAY = 86400
_BATCH_ROWS = 1 << 20


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


def load_scenario(run_dir: str | Path) -> Scenario:
    """RUN/scenario.json (raises ReferenceError if missing or unusable)."""
    try:
        return Scenario.load(run_dir)
    except ScenarioError as exc:
        raise ReferenceError(str(exc)) from exc


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
        scenario.as_of,
        scenario.window_days,
    )


def compute_reference(
    run_dir: str | Path, progress: Progress | None = None
) -> Reference:
    """Join every agency's recorded tokens with the risk set, partition by partition."""
    run = Path(run_dir)
    scenario = load_scenario(run)
    window = scenario.window
    tokens = run_risk_tokens(run)
    parts: list[pa.Table] = []
    malformed: dict[str, dict[str, dict[str, int]]] = {}
    days = (window[1] - window[0]).days + 1
    for agency in AGENCIES:
        files = _AgencyFiles(run, agency)
        wanted = {pid: frame for pid, frame in tokens[tokens.agency == agency].groupby("partition_id")}
        total = sum(1 if ds.date_column is None else days for ds in files.datasets)
        for i, (pid, frame) in enumerate(files.partitions(window)):
            if progress is not None:
                progress(agency, i + 1, total)
            asked = wanted.get(pid)
            if asked is None or not len(frame):
                continue
            hit = frame[frame["token"].isin(asked["token"])]
            if not len(hit):
                continue
            asked = asked[["token", "case_id", "case_subject_id"]].astype("str")
            m = hit.merge(asked, on="token")
            m = m[m["case_subject_id"].isna() | (m["subject_id"] != m["case_subject_id"])]
            m = m.assign(agency=agency)[list(MATCH_COLUMNS)]
            parts.append(pa.Table.from_pandas(m, schema=SCHEMAS["matches"], preserve_index=False))
        malformed[agency] = files.malformed()
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


# ------------------------------------------------------------------------------------ the agency files


class _AgencyFiles:
    """One agency's files under RUN/data/<agency>/, read with pyarrow: rows reaching a day, malformed rows
    by the contract's rules (a row counts once, under the first rule it breaks)."""

    def __init__(self, run: Path, agency: str) -> None:
        self.root = run / "data" / agency
        self.datasets = tz.DATASETS[agency]
        self.cells: pd.DataFrame | None = None
        if agency == "carrier":
            self.cells = pq.read_table(self._path("cells"), columns=["cell_id", "region_code"]).to_pandas()

    def _path(self, name: str) -> Path:
        path = self.root / f"{name}.parquet"
        if not path.is_file():
            raise ReferenceError(f"missing data file {path}")
        return path

    def _rules(self, name: str, table: pa.Table) -> list[tuple[str, np.ndarray]]:
        """(category, rows that break it) for one dataset's rows, in the contract's order."""

        def flags(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
            return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)

        columns = tz.dataset(name).columns
        rules = [
            ("missing_value", np.logical_or.reduce([table[c].is_null().to_numpy(zero_copy_only=False)
                                                   for c in columns])),
            ("bad_subject_id", ~ids.parse(table["subject_id"])[0]),
        ]
        if name == "stays":
            assert self.cells is not None
            cell_ids = pa.array(self.cells["cell_id"], pa.int64())
            known = pc.is_in(table["cell_id"].cast(pa.int64()), value_set=cell_ids)
            rules += [
                ("end_not_after_start", flags(pc.less_equal(table["end"], table["start"]))),
                ("unknown_cell", ~flags(known)),
            ]
        if name == "hotel_stays":
            rules.append(("bad_nights", flags(pc.less(table["nights"], 1))))
        return rules

    def good(self, name: str, table: pa.Table) -> pa.Table:
        """The rows no rule rejects."""
        bad = np.logical_or.reduce([np.zeros(table.num_rows, dtype=bool)]
                                   + [mask for _, mask in self._rules(name, table)])
        return table.filter(pa.array(~bad))

    def malformed(self) -> dict[str, dict[str, int]]:
        """Malformed rows per dataset and category, over the whole files (every category listed)."""
        out = {}
        for ds in self.datasets:
            counts = pd.Series(0, index=list(tz.CATEGORIES), dtype=np.int64)
            reader = pq.ParquetFile(self._path(ds.name))
            for batch in reader.iter_batches(batch_size=_BATCH_ROWS, columns=list(ds.columns)):
                rules = self._rules(ds.name, pa.Table.from_batches([batch]))
                first = np.select([mask for _, mask in rules], [category for category, _ in rules], "")
                counts = counts.add(pd.Series(first[first != ""]).value_counts(), fill_value=0)
            out[ds.name] = {category: int(n) for category, n in counts.items()}
        return out

    def _reaching(self, name: str, day: int) -> pa.Table:
        """The rows of a dated dataset whose records give tokens on `day` (days since 1970)."""
        lo = pa.scalar(day * _DAY, pa.int64()).cast(pa.timestamp("s"))
        hi = pa.scalar((day + 1) * _DAY, pa.int64()).cast(pa.timestamp("s"))
        date = pa.scalar(day, pa.int32()).cast(pa.date32())
        data = pads.dataset(self._path(name))
        if name == "stays":
            keep = (pads.field("start") < hi) & (pads.field("end") > lo)
        elif name == "tickets":
            keep = pads.field("service_date") == date
        else:  # hotel_stays: checked in by that day, and still staying
            keep = pads.field("check_in") <= date
        table = data.to_table(columns=list(tz.dataset(name).columns), filter=keep)
        if name == "hotel_stays":
            check_in = table["check_in"].cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
            nights = table["nights"].cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
            table = table.filter(pa.array(check_in + nights > day))
        return self.good(name, table)

    def partitions(self, window: tuple[dt.date, dt.date]) -> Iterator[tuple[str, pd.DataFrame]]:
        """(partition id, its distinct (subject_id, token) rows) for the static partitions and every day of
        the window."""
        first, last = (int(np.datetime64(d, "D").astype(np.int64)) for d in window)
        for ds in self.datasets:
            if ds.date_column is None:
                rows = self.good(ds.name, pq.read_table(self._path(ds.name), columns=list(ds.columns)))
                yield partition_id(ds.name, None), _pairs(tz.population_tokens(rows.to_pandas()))
                continue
            for day in range(first, last + 1):
                pid = partition_id(ds.name, dt.date(1970, 1, 1) + dt.timedelta(days=day))
                rows = self._reaching(ds.name, day).to_pandas()
                if ds.name == "stays":
                    tokens = tz.stay_tokens(rows, self.cells)
                elif ds.name == "tickets":
                    tokens = tz.ticket_tokens(rows)
                else:
                    tokens = tz.hotel_tokens(rows)
                yield pid, _pairs(tokens[tokens["partition_id"] == pid])


def _pairs(tokens: pd.DataFrame) -> pd.DataFrame:
    """The (subject_id, token) columns of a token frame, as strings."""
    return tokens[["subject_id", "token"]].astype(str).reset_index(drop=True)
