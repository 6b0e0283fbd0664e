"""The plaintext oracle: the exact matches a private run must reproduce, by a plain join.

matches = the (subject, token) pairs the agency files record — read here with pyarrow, the malformed rows
dropped by the contract's rules, tokenised by the contract's tokeniser (`proto.tokenize`) — joined on token
with the risk set (`proto.risk.risk_tokens`, the coordinator's rule), without the case's own subject. One
row per (subject_id, agency, token, case_id), sorted by those. The oracle shares no code with the nodes.

The oracle of epoch date X (`compute_reference(run, as_of=X)`) sees what that day's epoch sees: the window of
`window_days` ending on X, health records known by X (`proto.risk.known_by`), and the agency files delivered
by X (`proto.layout`); a day reads only the row groups of its own and earlier days' files that can reach it.
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

from proto import ids, layout, risk
from proto import tokenize as tz
from proto.schemas import SCHEMAS
from proto.tokens import AGENCIES, dataset_kinds, dataset_partition_ids
from runctx.parquet import write_table
from runctx.progress import Progress
from runctx.scenario import Scenario, ScenarioError

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
    as_of: dt.date


def load_scenario(run_dir: str | Path) -> Scenario:
    """RUN/scenario.json (raises ReferenceError if missing or unusable)."""
    try:
        return Scenario.load(run_dir)
    except ScenarioError as exc:
        raise ReferenceError(str(exc)) from exc


def epoch_dates(run_dir: str | Path) -> list[dt.date]:
    """The run's epoch dates: scenario.json's `as_of` and the `days` − 1 days after it."""
    return load_scenario(run_dir).epochs


def run_risk_tokens(run_dir: str | Path, as_of: dt.date | None = None) -> pd.DataFrame:
    """The risk set of a RUN's epoch `as_of` (the scenario's first by default), from its health files."""
    run = Path(run_dir)
    scenario = load_scenario(run).with_window(as_of)
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
    run_dir: str | Path, progress: Progress | None = None, as_of: dt.date | None = None
) -> Reference:
    """The oracle as of `as_of` (the scenario's first epoch by default): every agency's tokens recorded in
    the files delivered by then, joined with that day's risk set, partition by partition."""
    run = Path(run_dir)
    scenario = load_scenario(run).with_window(as_of)
    window = scenario.window
    tokens = run_risk_tokens(run, scenario.as_of)
    parts: list[pa.Table] = []
    malformed: dict[str, dict[str, dict[str, int]]] = {}
    days = (window[1] - window[0]).days + 1
    for agency in AGENCIES:
        files = _AgencyFiles(run, agency, scenario.as_of)
        wanted = {pid: frame for pid, frame in tokens[tokens.agency == agency].groupby("partition_id")}
        total = sum(
            len(dataset_kinds(ds.name)) * (1 if ds.date_column is None else days) for ds in files.datasets
        )
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
    return Reference(
        matches=table.to_pandas(), table=table, risk=tokens, malformed=malformed, as_of=scenario.as_of
    )


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


# ------------------------------------------------------------------------------------ the agency files


class _AgencyFiles:
    """One agency's files under RUN/data/<agency>/ delivered by `as_of` (`proto.layout`), read with pyarrow:
    rows reaching a day, malformed rows by the contract's rules (a row counts once, under the first rule it
    breaks)."""

    def __init__(self, run: Path, agency: str, as_of: dt.date) -> None:
        self.root = run / "data" / agency
        self.as_of = as_of
        self.datasets = tz.DATASETS[agency]
        self.cells: pd.DataFrame | None = None
        if agency == "carrier":
            cells = pq.read_table(self._paths("cells")[0], columns=["cell_id", "region_code"])
            self.cells = cells.to_pandas()

    def _files(self, name: str) -> list[layout.DataFile]:
        """A dataset's files delivered by `as_of`: one single file, or the day partitions' files."""
        try:
            return layout.dataset_files(self.root, name, self.as_of)
        except layout.LayoutError as exc:
            raise ReferenceError(str(exc)) from None

    def _paths(self, name: str, day: int | None = None) -> list[Path]:
        """The paths of a dataset's files delivered by `as_of`; with `day`, only the files that can hold
        records reaching it (a day partition's records start on its day, so none of a later one)."""
        limit = None if day is None else dt.date(1970, 1, 1) + dt.timedelta(days=day)
        return [f.path for f in self._files(name) if limit is None or f.day is None or f.day <= limit]

    def _read(self, name: str, paths: list[Path], keep: pads.Expression | None = None) -> pa.Table:
        """The token columns of the rows of these files that `keep` selects (none without files)."""
        columns = list(tz.dataset(name).columns)
        if not paths:
            return SCHEMAS[name].empty_table().select(columns)
        return pads.dataset(paths, format="parquet").to_table(columns=columns, filter=keep)

    def _rules(self, name: str, table: pa.Table) -> list[tuple[str, np.ndarray]]:
        """(category, rows that break it) for one dataset's rows, in the contract's order."""

        def flags(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
            return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)

        rules = [
            (
                "missing_value",
                np.logical_or.reduce(
                    [table[c].is_null().to_numpy(zero_copy_only=False) for c in tz.dataset(name).required]
                ),
            ),
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
        if name == "checkins":
            at = table["at"].cast(pa.timestamp("s")).cast(pa.int64())
            length = pc.subtract(table["leave"].cast(pa.timestamp("s")).cast(pa.int64()), at)
            rules += [
                ("end_not_after_start", flags(pc.less_equal(length, 0))),
                ("visit_too_long", flags(pc.greater(length, tz.MAX_VISIT_DAYS * _DAY))),
            ]
        if name == "declarations":
            rules.append(("end_not_after_start", flags(pc.less(table["to_date"], table["from_date"]))))
        return rules

    def good(self, name: str, table: pa.Table) -> pa.Table:
        """The rows no rule rejects."""
        bad = np.logical_or.reduce(
            [np.zeros(table.num_rows, dtype=bool)] + [mask for _, mask in self._rules(name, table)]
        )
        return table.filter(pa.array(~bad))

    def malformed(self) -> dict[str, dict[str, int]]:
        """Malformed rows per dataset and category, over the whole files (every category listed)."""
        out = {}
        for ds in self.datasets:
            counts = pd.Series(0, index=list(tz.CATEGORIES), dtype=np.int64)
            for path in self._paths(ds.name):
                reader = pq.ParquetFile(path)
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
        paths = self._paths(name, day)
        if name == "stays":
            keep = (pads.field("start") < hi) & (pads.field("end") > lo)
        elif name == "tickets":
            keep = pads.field("service_date") == date
        elif name == "checkins":  # a check-in lasts at most 31 days (a longer one is malformed)
            earliest = pa.scalar((day - tz.MAX_VISIT_DAYS) * _DAY, pa.int64()).cast(pa.timestamp("s"))
            keep = (pads.field("at") < hi) & (pads.field("at") >= earliest)
        elif name == "declarations":
            keep = (pads.field("from_date") <= date) & (pads.field("to_date") >= date)
        else:  # hotel_stays: checked in by that day, and still staying
            keep = pads.field("check_in") <= date
        table = self._read(name, paths, keep)
        if name == "hotel_stays":
            check_in = table["check_in"].cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
            nights = table["nights"].cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
            table = table.filter(pa.array(check_in + nights > day))
        return self.good(name, table)

    def partitions(self, window: tuple[dt.date, dt.date]) -> Iterator[tuple[str, pd.DataFrame]]:
        """(partition id, its distinct (subject_id, token) rows) for the static partitions and every day of
        the window, one partition per token kind."""
        first, last = (int(np.datetime64(d, "D").astype(np.int64)) for d in window)
        for ds in self.datasets:
            if ds.date_column is None:
                rows = self.good(ds.name, self._read(ds.name, self._paths(ds.name)))
                tokens = tz.population_tokens(rows.to_pandas())
                for pid in dataset_partition_ids(ds.name, None):
                    yield pid, _pairs(tokens[tokens["partition_id"] == pid])
                continue
            for day in range(first, last + 1):
                rows = self._reaching(ds.name, day).to_pandas()
                if ds.name == "stays":
                    tokens = tz.stay_tokens(rows, self.cells)
                elif ds.name == "tickets":
                    tokens = tz.ticket_tokens(rows)
                elif ds.name == "checkins":
                    tokens = tz.checkin_tokens(rows)
                elif ds.name == "declarations":
                    # only this day of each declaration covering it: a long tenancy would otherwise yield
                    # every day of its span, for each window day
                    one = np.datetime64(day, "D")
                    tokens = tz.declaration_tokens(rows.assign(from_date=one, to_date=one))
                else:
                    tokens = tz.hotel_tokens(rows)
                for pid in dataset_partition_ids(ds.name, dt.date(1970, 1, 1) + dt.timedelta(days=day)):
                    yield pid, _pairs(tokens[tokens["partition_id"] == pid])


def _pairs(tokens: pd.DataFrame) -> pd.DataFrame:
    """The (subject_id, token) columns of a token frame, as strings."""
    return tokens[["subject_id", "token"]].astype(str).reset_index(drop=True)
