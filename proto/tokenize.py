"""The canonical tokeniser: agency records → (subject_id, token, partition_id) rows, by the design's rules.

Part of the contract: one implementation, used by the nodes, by the simulation (to write investigations)
and by the plaintext oracle, so that all three agree token for token; with it, the agency files each
tokeniser reads and the rules that make a row malformed. Everything is vectorised with NumPy/pandas.

Every function returns distinct rows sorted by (partition_id, token, subject_id). The three columns are
pandas Categoricals whose categories are the (sorted) strings actually used: a day of carrier data holds
tens of millions of (subject, token) pairs but few distinct strings, so this keeps memory small while
behaving like string columns (`==`, `isin`, `merge`, `.str`, iteration all see `str` values).

Rules (docs/tokens.md, "Canonical tokens"):

- cell-hour: each clock hour that overlaps a stay by at least 10 minutes;
- region-day: a subject's total time in a region's cells that day is at least 120 minutes;
- trip and carriage: one of each per ticket;
- hotel-night and room-night: each night from check_in for `nights` nights;
- household and identity: one of each per person;
- venue-hour: each clock hour that overlaps a check-in [at, leave or at + 1 h) by at least 10 minutes;
- place-day: each day of a host's declaration, from `from_date` to `to_date`.

Times are naive local timestamps; a day runs from local midnight to midnight. Rows must already be
valid (`CATEGORIES` names the rules; the nodes' store applies them); rows that cannot yield a token (an end
not after its start, a cell with no region, a null) simply yield none.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from proto import tokens as tk

CATEGORIES = (
    "missing_value", "bad_subject_id", "out_of_range", "too_long", "end_not_after_start", "unknown_cell",
    "bad_nights", "visit_too_long",
)
"""Why a row is malformed, in the order rows are checked (a row counts under the first it breaks): a null
(or NaN) in a token column (a check-in's `leave` may be null), a subject id whose check character fails, a
value out of its type's range (a `cell_id` beyond int32, a fractional one), a value longer than its limit
(`MAX_NAME_CHARS`, `MAX_ID_BYTES`), a stay or check-in whose end is not after its start (a declaration
whose `to_date` is before its `from_date`), a stay in a cell the carrier does not list, a hotel stay of
fewer than one night, a stay, hotel visit or check-in of more than `MAX_VISIT_DAYS`."""
MAX_NAME_CHARS = 64
"""The longest name a row may carry, in characters."""
MAX_ID_BYTES = 64
"""The longest identifier (trip, seat, hotel, room, household...) a row may carry, in UTF-8 bytes."""
MAX_VISIT_DAYS = 31
"""The longest stay, hotel visit or check-in a row may describe, in days."""


@dataclass(frozen=True)
class Dataset:
    """How one agency file is read: its token columns and the column that dates a row."""

    name: str
    columns: tuple[str, ...]
    date_column: str | None  # None: a static dataset, one partition
    nullable: tuple[str, ...] = ()  # token columns whose null is meaningful, not a missing value

    @property
    def required(self) -> tuple[str, ...]:
        """The token columns a row must fill."""
        return tuple(c for c in self.columns if c not in self.nullable)


DATASETS: dict[str, tuple[Dataset, ...]] = {
    "carrier": (Dataset("stays", ("subject_id", "cell_id", "start", "end"), "start"),),
    "transport": (Dataset("tickets", ("subject_id", "trip_id", "service_date", "carriage"), "service_date"),),
    "police": (
        Dataset("population", ("subject_id", "name", "birth_date", "household_id"), None),
        Dataset("hotel_stays", ("subject_id", "hotel_id", "room", "check_in", "nights"), "check_in"),
        Dataset("declarations", ("subject_id", "place_id", "from_date", "to_date"), "from_date"),
    ),
    "venues": (Dataset("checkins", ("subject_id", "venue_id", "at", "leave"), "at", nullable=("leave",)),),
}


def dataset(name: str) -> Dataset:
    """The agency dataset of that name (KeyError if none)."""
    return {ds.name: ds for group in DATASETS.values() for ds in group}[name]


COLUMNS = ("subject_id", "token", "partition_id")
CELL_HOUR_MIN_SECONDS = 10 * 60
VENUE_DEFAULT_SECONDS = 3600
REGION_DAY_MIN_SECONDS = 120 * 60
CHUNK_STAYS = 1_000_000
DENSE_TABLE_LIMIT = 1 << 26
_HOUR = 3600
_DAY = 86400


def empty() -> pd.DataFrame:
    """An empty token frame with the standard columns and dtypes."""
    cat = pd.Categorical([], categories=pd.Index([], dtype="str"))
    return pd.DataFrame({c: cat for c in COLUMNS})


def seconds(values: pd.Series | np.ndarray) -> np.ndarray:
    """Naive timestamps (any datetime64 unit, or datetime objects) as int64 seconds since 1970-01-01."""
    arr = np.asarray(values)
    if arr.dtype.kind != "M":
        arr = pd.to_datetime(pd.Series(arr)).to_numpy()
    return arr.astype("datetime64[s]").astype(np.int64)


def days(values: pd.Series | np.ndarray) -> np.ndarray:
    """Dates (date32 / datetime.date / datetime64) as int64 days since 1970-01-01."""
    arr = np.asarray(values)
    if arr.dtype.kind != "M":
        arr = pd.to_datetime(pd.Series(arr)).to_numpy()
    return arr.astype("datetime64[D]").astype(np.int64)


def day_strings(day_numbers: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 as ISO date strings (object array)."""
    return np.datetime_as_string(np.asarray(day_numbers, dtype="datetime64[D]"), unit="D").astype(object)


def factorize(values: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and the distinct values (object array) of a column; Categoricals are used as they are."""
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(np.int64), values.cat.categories.to_numpy(dtype=object)
    codes, uniques = pd.factorize(values)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def group_rows(*columns: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Group rows by several integer columns: each row's group number and each group's column values."""
    key = np.zeros(len(columns[0]), dtype=np.int64)
    sizes, uniques_list = [], []
    for col in columns:
        codes, uniques = pd.factorize(col)
        sizes.append(max(len(uniques), 1))
        uniques_list.append(np.asarray(uniques))
        key = key * sizes[-1] + codes
    inverse, group_keys = pd.factorize(key)
    values: list[np.ndarray] = []
    rest = np.asarray(group_keys, dtype=np.int64)
    for size, uniques in zip(reversed(sizes), reversed(uniques_list), strict=True):
        rest, codes = np.divmod(rest, size)
        values.append(uniques[codes])
    return inverse.astype(np.int64), values[::-1]


def ranges(first: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The runs of counts[i] consecutive integers from first[i], concatenated (a negative count is 0)."""
    counts = np.maximum(np.asarray(counts, dtype=np.int64), 0)
    value = np.arange(int(counts.sum()), dtype=np.int64)
    value += np.repeat(np.asarray(first, dtype=np.int64) - (np.cumsum(counts) - counts), counts)
    return value


def explode(first: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expand row i into counts[i] consecutive integers from first[i]: (source row, value) per output row."""
    counts = np.maximum(np.asarray(counts, dtype=np.int64), 0)
    return np.repeat(np.arange(len(counts)), counts), ranges(first, counts)


def sorted_distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array, ascending (sorts `values` in place; sorting then comparing
    neighbours is much faster than hashing for large arrays)."""
    values.sort()
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def _str(values: np.ndarray | pd.Series) -> pd.Series:
    """A Series of pandas `str` dtype (with a fresh index), for vectorised concatenation."""
    return pd.Series(values.array if isinstance(values, pd.Series) else values).astype("str")


def _partition_strings(kind: str, day_numbers: np.ndarray) -> np.ndarray:
    """Partition ids "<kind>@<YYYY-MM-DD>" for an array of day numbers."""
    return (f"{kind}@" + _str(day_strings(day_numbers))).to_numpy(dtype=object)


def assemble(
    subject_codes: np.ndarray,
    subjects: np.ndarray | pa.Array,
    token_codes: np.ndarray,
    tokens: np.ndarray | pa.Array,
    partitions: np.ndarray | pa.Array,
    distinct: bool = False,
) -> pd.DataFrame:
    """Build the standard frame from row codes into `subjects` and `tokens` (with each token's partition).

    The strings come as object arrays or arrow string arrays. Duplicate (subject, token) pairs are dropped
    (the caller may promise there are none: `distinct`), unused categories removed, and rows sorted by
    (partition_id, token, subject_id).
    """
    if len(subject_codes) == 0:
        return empty()
    n_subjects = max(len(subjects), 1)
    if not distinct:
        bits = _bits(n_subjects)
        pairs = sorted_distinct((np.asarray(token_codes, dtype=np.int64) << bits) | subject_codes)
        token_codes, subject_codes = pairs >> bits, pairs & ((1 << bits) - 1)

    used_tokens, token_codes = dense_ranks(token_codes, len(tokens))
    tok = _strings(tokens).take(used_tokens)
    part = _strings(partitions).take(used_tokens)
    distinct_parts = pc.unique(part)
    part_cats = distinct_parts.take(pc.array_sort_indices(distinct_parts))
    part_of_token = pc.index_in(part, value_set=part_cats).to_numpy().astype(np.int32)
    order = pc.sort_indices(
        pa.table({"p": part_of_token, "t": tok}), sort_keys=[("p", "ascending"), ("t", "ascending")]
    ).to_numpy()
    tok_rank = np.empty(len(order), dtype=np.int64)
    tok_rank[order] = np.arange(len(order), dtype=np.int64)

    used_subjects, subject_codes = dense_ranks(subject_codes, n_subjects)
    subj = _strings(subjects).take(used_subjects)
    subj_order = pc.array_sort_indices(subj).to_numpy()
    subj_rank = np.empty(len(subj_order), dtype=np.int32)
    subj_rank[subj_order] = np.arange(len(subj_order), dtype=np.int32)

    bits = _bits(len(subj))
    rows = tok_rank[token_codes]
    rows <<= bits
    rows |= subj_rank[subject_codes]
    del token_codes, subject_codes
    rows.sort()
    row_tok = (rows >> bits).astype(np.int32)
    row_subj = (rows & ((1 << bits) - 1)).astype(np.int32)
    del rows
    return pd.DataFrame(
        {
            "subject_id": _categorical(row_subj, subj.take(subj_order)),
            "token": _categorical(row_tok, tok.take(order)),
            "partition_id": _categorical(part_of_token[order][row_tok], part_cats),
        }
    )


def _strings(values: np.ndarray | pa.Array) -> pa.Array:
    """Strings (an object array or an arrow array) as one arrow large_string array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values.cast(pa.large_string())
    return pa.array(np.asarray(values, dtype=object), pa.large_string())


def _categorical(codes: np.ndarray, categories: pa.Array) -> pd.Categorical:
    """A Categorical of `str` categories from int32 codes known to be in range."""
    dtype = pd.CategoricalDtype(pd.Index(pd.array(categories, dtype="str")))
    return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)


def dense_ranks(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values among codes in [0, size), ascending, and each code's rank among them (int32, or
    `codes` themselves when every value is used)."""
    present = np.zeros(max(size, 1), dtype=bool)
    present[codes] = True
    if present.all():
        return np.arange(len(present)), codes
    return np.flatnonzero(present), (np.cumsum(present, dtype=np.int32) - 1)[codes]


def _bits(size: int) -> int:
    """The number of bits that hold any integer in [0, size)."""
    return max(size - 1, 0).bit_length()


def _dense_keys(keys: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank (int32) of each key in [0, space) among the distinct keys, and the distinct keys, ascending."""
    if space <= DENSE_TABLE_LIMIT:
        distinct, ranks = dense_ranks(keys, space)
        return ranks, distinct
    codes, uniques = pd.factorize(keys, sort=True)
    return codes.astype(np.int32), np.asarray(uniques)


def _from_row_strings(subject_ids: pd.Series, tokens: np.ndarray, partitions: np.ndarray) -> pd.DataFrame:
    """The standard frame from one token string and partition per row."""
    if len(subject_ids) == 0:
        return empty()
    subj_codes, subjects = factorize(subject_ids)
    tok_codes, tok_uniques = factorize(pd.Series(tokens, dtype=object))
    part = np.empty(len(tok_uniques), dtype=object)
    part[tok_codes] = np.asarray(partitions, dtype=object)
    return assemble(subj_codes, subjects, tok_codes, tok_uniques, part)


def stay_tokens(stays: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """cell-hour and region-day tokens of carrier stays (subject_id, cell_id, start, end).

    `cells` (cell_id, region_code) maps cells to regions; a stay in a cell it does not list still yields
    its cell-hours but counts toward no region.
    """
    if len(stays) == 0:
        return empty()
    subj_codes, subjects = factorize(stays["subject_id"])
    cell = np.asarray(stays["cell_id"], dtype=np.int64)
    s = seconds(stays["start"])
    e = seconds(stays["end"])
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    # cell-hour: every clock hour [h, h+1) with overlap >= 10 minutes. Stays are taken in chunks of whole
    # subjects (so that the chunks' distinct pairs are disjoint), to bound memory.
    valid = e > s
    if valid.any():
        cell_codes, cell_values = pd.factorize(cell)
        h_min = int(s[valid].min() // _HOUR)
        n_hours = int((e[valid].max() - 1) // _HOUR) - h_min + 1
        space = max(len(cell_values), 1) * n_hours
        key_bits = _bits(space)  # (subject, cell-hour) pairs as one integer, the cell-hour in the low bits
        order = np.argsort(subj_codes)
        sorted_subjects = subj_codes[order]
        cuts = np.searchsorted(
            sorted_subjects, sorted_subjects[np.arange(CHUNK_STAYS, len(s), CHUNK_STAYS) - 1], side="right"
        )
        pair_subjects, pair_keys = [], []
        for lo, hi in itertools.pairwise(np.unique(np.r_[0, cuts, len(s)])):
            idx = order[lo:hi]
            cs, ce = s[idx], e[idx]
            # only a stay's first and last hours can overlap it by less than an hour: drop them if short
            h0, h1 = cs // _HOUR, (ce - 1) // _HOUR
            h0 += np.minimum(ce, (h0 + 1) * _HOUR) - cs < CELL_HOUR_MIN_SECONDS
            h1 -= ce - np.maximum(cs, h1 * _HOUR) < CELL_HOUR_MIN_SECONDS
            base = (subj_codes[idx] << key_bits) + cell_codes[idx] * n_hours - h_min
            pair = ranges(base + h0, np.where(ce > cs, h1 - h0 + 1, 0))
            pair = sorted_distinct(pair)
            subj_part, key_part = pair >> key_bits, pair & ((1 << key_bits) - 1)
            pair_subjects.append(subj_part.astype(np.int32))
            pair_keys.append(key_part)
        key = np.concatenate(pair_keys)
        if len(key):
            token_ids, distinct = _dense_keys(key, space)
            d_cell, d_hour = cell_values[distinct // n_hours], distinct % n_hours + h_min
            hour_text = np.datetime_as_string(d_hour.astype("datetime64[h]"), unit="h").astype(object)
            tokens = ("cell-hour|" + _str(d_cell.astype(str)) + "|" + _str(hour_text)).to_numpy(object)
            partitions = _partition_strings("cell-hour", d_hour // 24)
            frames.append((np.concatenate(pair_subjects), token_ids, tokens, partitions))
        del key, pair_keys, pair_subjects

    # region-day: total seconds per (subject, region, day) >= 120 minutes
    cells_ids = pd.Index(np.asarray(cells["cell_id"], dtype=np.int64))
    region_codes, regions = pd.factorize(np.asarray(cells["region_code"], dtype=object))
    pos = cells_ids.get_indexer(cell)
    known = (pos >= 0) & (e > s)
    region = np.where(pos >= 0, region_codes[np.maximum(pos, 0)], -1)
    idx = np.nonzero(known)[0]
    d0 = s[idx] // _DAY
    r, day = explode(d0, (e[idx] - 1) // _DAY - d0 + 1)
    src = idx[r]
    inside = np.minimum(e[src], (day + 1) * _DAY) - np.maximum(s[src], day * _DAY)
    if len(src):
        inverse, (g_subj, g_region, g_day) = group_rows(subj_codes[src], region[src], day)
        total = np.bincount(inverse, weights=inside, minlength=len(g_subj))
        ok = total >= REGION_DAY_MIN_SECONDS
        if ok.any():
            rd_inverse, (rd_region, rd_day) = group_rows(g_region[ok], g_day[ok])
            region_text = np.asarray(regions, dtype=object)[rd_region]
            tokens = ("region-day|" + _str(region_text) + "|" + _str(day_strings(rd_day))).to_numpy(object)
            frames.append((g_subj[ok], rd_inverse, tokens, _partition_strings("region-day", rd_day)))

    if not frames:
        return empty()
    offset = 0
    subj_parts, tok_parts = [], []
    for subj_rows, tok_rows, tokens, _ in frames:
        subj_parts.append(subj_rows.astype(np.int32, copy=False))
        tok_parts.append((tok_rows + offset).astype(np.int32, copy=False))
        offset += len(tokens)
    frames_tokens = np.concatenate([f[2] for f in frames])
    frames_partitions = np.concatenate([f[3] for f in frames])
    frames.clear()
    return assemble(
        np.concatenate(subj_parts),
        subjects,
        np.concatenate(tok_parts),
        frames_tokens,
        frames_partitions,
        distinct=True,
    )


def ticket_tokens(tickets: pd.DataFrame) -> pd.DataFrame:
    """trip and carriage tokens of transport tickets (subject_id, trip_id, service_date, carriage)."""
    if len(tickets) == 0:
        return empty()
    day = days(tickets["service_date"])
    date_text = _str(day_strings(day))
    trip_id = _str(tickets["trip_id"])
    trip = ("trip|" + trip_id + "|" + date_text).to_numpy(object)
    carriage_no = _str(np.asarray(tickets["carriage"], dtype=np.int64).astype(str))
    carriage = ("carriage|" + trip_id + "|" + date_text + "|" + carriage_no).to_numpy(object)
    parts = [_partition_strings("trip", day), _partition_strings("carriage", day)]
    subjects = pd.concat([tickets["subject_id"], tickets["subject_id"]], ignore_index=True)
    return _from_row_strings(subjects, np.concatenate([trip, carriage]), np.concatenate(parts))


def hotel_tokens(hotel_stays: pd.DataFrame) -> pd.DataFrame:
    """hotel-night and room-night tokens of hotel stays (subject_id, hotel_id, room, check_in, nights)."""
    if len(hotel_stays) == 0:
        return empty()
    row, night = explode(days(hotel_stays["check_in"]), np.asarray(hotel_stays["nights"], dtype=np.int64))
    if len(row) == 0:
        return empty()
    date_text = _str(day_strings(night))
    hotel = _str(np.asarray(hotel_stays["hotel_id"], dtype=object)[row])
    room = _str(np.asarray(hotel_stays["room"], dtype=object)[row])
    hotel_night = ("hotel-night|" + hotel + "|" + date_text).to_numpy(object)
    room_night = ("room-night|" + hotel + "|" + room + "|" + date_text).to_numpy(object)
    parts = [_partition_strings("hotel-night", night), _partition_strings("room-night", night)]
    subject = np.asarray(hotel_stays["subject_id"], dtype=object)[row]
    return _from_row_strings(
        pd.Series(np.concatenate([subject, subject])),
        np.concatenate([hotel_night, room_night]),
        np.concatenate(parts),
    )


def population_tokens(population: pd.DataFrame) -> pd.DataFrame:
    """household and identity tokens of the population (subject_id, name, birth_date, household_id)."""
    if len(population) == 0:
        return empty()
    subj_codes, subjects = factorize(population["subject_id"])
    household_codes, households = pd.factorize(_str(population["household_id"]))
    birth = _str(day_strings(days(population["birth_date"])))
    identity = "identity|" + _str(population["subject_id"]) + "|" + _str(population["name"]) + "|" + birth
    identity_codes, identities = pd.factorize(identity)
    household = _strings(pa.array("household|" + _str(households)))
    tokens = pa.concat_arrays([household, _strings(pa.array(identities))])
    return assemble(
        np.concatenate([subj_codes, subj_codes]),
        subjects,
        np.concatenate([household_codes, identity_codes + len(households)]),
        tokens,
        pa.concat_arrays([
            pa.repeat(pa.scalar(tk.partition_id(kind, None), pa.large_string()), n)
            for kind, n in (("household", len(households)), ("identity", len(identities)))
        ]),
    )


def checkin_ends(checkins: pd.DataFrame) -> np.ndarray:
    """Each check-in's end as int64 seconds: its `leave`, or one hour after `at` when `leave` is null."""
    at = seconds(checkins["at"])
    leave = pd.to_datetime(pd.Series(np.asarray(checkins["leave"])))
    missing = leave.isna().to_numpy()
    end = np.where(missing, at + VENUE_DEFAULT_SECONDS, 0)
    if (~missing).any():
        end[~missing] = seconds(leave[~missing].to_numpy())
    return end


def checkin_tokens(checkins: pd.DataFrame) -> pd.DataFrame:
    """venue-hour tokens of venue check-ins (subject_id, venue_id, at, leave): each clock hour overlapping
    [at, leave or at + 1 h) by at least 10 minutes."""
    if len(checkins) == 0:
        return empty()
    s, e = seconds(checkins["at"]), checkin_ends(checkins)
    h0, h1 = s // _HOUR, (e - 1) // _HOUR
    h0 = h0 + (np.minimum(e, (h0 + 1) * _HOUR) - s < CELL_HOUR_MIN_SECONDS)
    h1 = h1 - (e - np.maximum(s, h1 * _HOUR) < CELL_HOUR_MIN_SECONDS)
    row, hour = explode(h0, np.where(e > s, h1 - h0 + 1, 0))
    if len(row) == 0:
        return empty()
    hour_text = _str(np.datetime_as_string(hour.astype("datetime64[h]"), unit="h").astype(object))
    venue = _str(np.asarray(checkins["venue_id"], dtype=object)[row])
    tokens = ("venue-hour|" + venue + "|" + hour_text).to_numpy(object)
    subject = pd.Series(np.asarray(checkins["subject_id"], dtype=object)[row])
    return _from_row_strings(subject, tokens, _partition_strings("venue-hour", hour // 24))


def declaration_tokens(declarations: pd.DataFrame) -> pd.DataFrame:
    """place-day tokens of hosts' declarations (subject_id, place_id, from_date, to_date): each day from
    from_date to to_date, both included."""
    if len(declarations) == 0:
        return empty()
    first = days(declarations["from_date"])
    row, day = explode(first, days(declarations["to_date"]) - first + 1)
    if len(row) == 0:
        return empty()
    place = _str(np.asarray(declarations["place_id"], dtype=object)[row])
    tokens = ("place-day|" + place + "|" + _str(day_strings(day))).to_numpy(object)
    subject = pd.Series(np.asarray(declarations["subject_id"], dtype=object)[row])
    return _from_row_strings(subject, tokens, _partition_strings("place-day", day))
