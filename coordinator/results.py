"""The coordinator's published results and their digests: `matches.parquet` rows and schema, and the
row digests that the epoch log records and the auditor recomputes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from coordinator.store import CodeStore

MATCHES_SCHEMA = pa.schema(
    [("subject_id", pa.string()), ("agency", pa.string()), ("token", pa.string()), ("case_id", pa.string())]
)
"""Schema of RUN/coordinator/matches.parquet."""


def assemble_matches(
    risk_rows: pd.DataFrame, found: Mapping[tuple[str, str], Mapping[str, list[str]]]
) -> pd.DataFrame:
    """matches.parquet rows: each subject recorded at a risk token, per case that token came from, the case's
    own subject excluded; sorted and distinct.

    Joined and sorted in Arrow: a label holds distinct subjects, a token lies in one partition and the risk
    rows are made distinct per (agency, token, case), so the joined rows are distinct.
    """
    agencies, tokens, counts, subjects = [], [], [], []
    for (agency, _), by_token in found.items():
        for token, recorded in by_token.items():
            agencies.append(agency)
            tokens.append(token)
            counts.append(len(recorded))
            subjects.append(recorded)
    repeat = np.asarray(counts, dtype=np.int64)
    hits = pa.table(
        {
            "agency": pa.array(np.repeat(np.asarray(agencies, dtype=object), repeat), pa.string()),
            "token": pa.array(np.repeat(np.asarray(tokens, dtype=object), repeat), pa.string()),
            "subject_id": pa.array(list(itertools.chain.from_iterable(subjects)), pa.string()),
        }
    )
    risk = risk_rows[["agency", "token", "case_id", "case_subject_id"]].drop_duplicates()
    risk_table = pa.table(
        {c: pa.array(risk[c].astype(object).where(risk[c].notna(), None), pa.string()) for c in risk.columns}
    )
    rows = hits.join(risk_table, keys=["agency", "token"], join_type="inner")
    own = pc.fill_null(pc.equal(rows["subject_id"], rows["case_subject_id"]), False)
    rows = rows.filter(pc.invert(own)).select(list(MATCHES_SCHEMA.names))
    rows = rows.sort_by([(c, "ascending", "at_end") for c in MATCHES_SCHEMA.names])
    out = rows.to_pandas()
    out = out.astype({"subject_id": str, "agency": str, "token": str})
    out["case_id"] = out["case_id"].astype(object).where(out["case_id"].notna(), None)
    return out


def matches_table(matches: pd.DataFrame) -> pa.Table:
    """The matches frame as an Arrow table with the published schema."""
    return pa.Table.from_pandas(matches, schema=MATCHES_SCHEMA, preserve_index=False)


def frame_digest(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    """SHA-256 (hex) over rows as "|"-joined fields (empty for null), one line each, in frame order."""
    if frame.empty:
        return hashlib.sha256(b"").hexdigest()
    lines = _joined_lines(frame, columns)
    if lines is not None:
        return hashlib.sha256(lines).hexdigest()
    fields = [frame[c].astype(object).where(frame[c].notna(), "").astype(str) for c in columns]
    text = fields[0]
    for field_values in fields[1:]:
        text = text + "|" + field_values
    return hashlib.sha256(("\n".join(text) + "\n").encode()).hexdigest()


_ARROW_AS_STR = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_date32)
"""Arrow types whose cast to string is what `str()` gives for the same Python value."""


def _joined_lines(frame: pd.DataFrame, columns: Sequence[str]) -> bytes | None:
    """`frame_digest`'s bytes built in Arrow, or None when a column's type might print differently there
    (booleans, floats, timestamps...): the caller then takes the Python path."""
    arrays = []
    for c in columns:
        try:
            array = pa.array(frame[c], from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError):
            return None
        if not any(check(array.type) for check in _ARROW_AS_STR):
            return None
        arrays.append(pc.fill_null(array.cast(pa.large_string()), ""))
    bar, newline = pa.scalar("|", pa.large_string()), pa.scalar("\n", pa.large_string())
    lines = pc.binary_join_element_wise(*arrays, bar)
    lines = pc.binary_join_element_wise(lines, pa.scalar("", pa.large_string()), newline)
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    return lines.buffers()[2].to_pybytes()[int(offsets[0]) : int(offsets[-1])]


def epoch_codes_digest(store: CodeStore, epoch: str) -> str:
    """SHA-256 (hex) of an epoch's codes, every field of each (`CodeStore.code_lines`) in code id order: the
    payload whole, so a swapped or re-signed code changes it."""
    digest = hashlib.sha256()
    for lines in store.code_lines(epoch):
        digest.update("".join(lines).encode())
    return digest.hexdigest()


SUMMARY_UNBOUND = ("seconds", "bytes", "files")
"""Members of the epoch summary its digest leaves out: timings and bytes transferred, measured on this run,
and where the files lie (all differ between a run and its re-run, whose logs must be equal byte for byte)."""


def summary_digest(summary: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of an epoch summary (epoch.json) in canonical JSON, without `SUMMARY_UNBOUND`."""
    bound = {k: v for k, v in summary.items() if k not in SUMMARY_UNBOUND}
    text = json.dumps(bound, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def directory_digests(directory: Path) -> dict[str, str]:
    """{file name: SHA-256 (hex)} of the regular files directly in a directory (none when it is absent)."""
    if not directory.is_dir():
        return {}
    return {p.name: file_digest(p) for p in sorted(directory.iterdir()) if p.is_file()}
