"""Applicants for a health code and the check of their declarations.

Each applicant declares a subject id, a name and a birth date (`RUN/health/applicants.parquet`). The
coordinator checks a declaration by PSI membership of its `identity` token in the police node's population
register — blinded, evaluated and looked up like any risk token — and refuses, with a reason, a declaration
that is malformed or not in the register.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from coordinator.openings import Query
from proto import ids
from proto import tokens as tk

APPLICANTS_FILE = Path("health") / "applicants.parquet"
PURPOSE = "identity"
REASON_BAD_ID = "BAD_ID"
"""The declared id is not 17 digits and the right check character."""
REASON_INCOMPLETE = "INCOMPLETE"
"""The declaration lacks a name or a birth date."""
REASON_NOT_IN_REGISTER = "NOT_IN_REGISTER"
"""No person with this id, name and birth date is in the population register."""


@dataclass(frozen=True)
class Declarations:
    """Applicants' declarations with their identity tokens, and those refused before any query."""

    checked: pd.DataFrame
    """subject_id, name, birth_date, token: well-formed declarations, one per subject id."""
    refused: list[tuple[str, str]]
    """(subject_id, reason) of malformed declarations."""
    duplicates: int
    """Later declarations of a subject id already declared (ignored)."""


def applicants_path(run_dir: Path) -> Path:
    """`RUN/health/applicants.parquet`."""
    return Path(run_dir) / APPLICANTS_FILE


def load_applicants(run_dir: Path, as_of: dt.date | None = None) -> pd.DataFrame | None:
    """The applicants (subject_id, name, birth_date) who applied by `as_of` (`applied_on`, when the file has
    it), or None when the run has no applicants file."""
    path = applicants_path(run_dir)
    if not path.exists():
        return None
    frame = pd.read_parquet(path)
    missing = {"subject_id", "name", "birth_date"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    if as_of is not None and "applied_on" in frame.columns:
        applied = pd.to_datetime(frame["applied_on"], errors="coerce")
        frame = frame[applied.notna() & (applied <= pd.Timestamp(as_of))]
    return frame[["subject_id", "name", "birth_date"]]


def load_symptoms(run_dir: Path, as_of: dt.date) -> pd.DataFrame:
    """Applicants who declared symptoms by `as_of` (subject_id, applied_on: the latest such application);
    empty when the run has no applicants file or the file has no `symptoms` column."""
    path = applicants_path(run_dir)
    empty = pd.DataFrame(
        {"subject_id": pd.Series([], dtype=object), "applied_on": pd.Series([], dtype=object)}
    )
    if not path.exists():
        return empty
    frame = pd.read_parquet(path)
    if "symptoms" not in frame.columns or "applied_on" not in frame.columns:
        return empty
    applied = pd.to_datetime(frame["applied_on"]).dt.date
    declared = frame["symptoms"].map(lambda s: s is not None and len(s) > 0)
    chosen = frame.assign(applied_on=applied)[declared & (applied <= as_of)]
    latest = chosen.groupby("subject_id")["applied_on"].max()
    return pd.DataFrame({"subject_id": latest.index.astype(object), "applied_on": latest.to_numpy()})


def _birth(value: object) -> dt.date | None:
    """A birth date as a date, or None when missing or unparseable."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(stamp) else stamp.date()


def _births(values: pd.Series) -> list[dt.date | None]:
    """`_birth` of every value: converted in one pass, value by value only where that pass gives up."""
    try:
        stamps = pd.to_datetime(values, errors="coerce")
    except (TypeError, ValueError):  # e.g. mixed time zones: every value on its own
        return [_birth(v) for v in values]
    days = [None if pd.isna(d) else d for d in stamps.dt.date]
    for i in np.flatnonzero(stamps.isna().to_numpy() & values.notna().to_numpy()):
        days[i] = _birth(values.iloc[i])
    return days


def prepare(applicants: pd.DataFrame) -> Declarations:
    """Identity tokens of the well-formed declarations (first per subject id); refusals for the others."""
    first = applicants.drop_duplicates("subject_id", keep="first").reset_index(drop=True)
    duplicates = len(applicants) - len(first)
    valid = ids.valid_mask(first["subject_id"])
    names = first["name"]
    named = np.array([isinstance(n, str) and bool(n.strip()) for n in names], dtype=bool)
    days = _births(first["birth_date"])
    dated = np.array([d is not None for d in days], dtype=bool)
    bad = ~(valid & named & dated)
    refused = [
        ("" if subject is None else str(subject), REASON_INCOMPLETE if ok else REASON_BAD_ID)
        for subject, ok in zip(first["subject_id"][bad], valid[bad], strict=True)
    ]
    keep = np.flatnonzero(~bad)
    subjects = [str(s) for s in first["subject_id"].to_numpy()[keep]]
    kept_names = names.to_numpy()[keep].tolist()
    kept_days = [day for day in (days[i] for i in keep) if day is not None]
    checked = pd.DataFrame(
        {
            "subject_id": subjects,
            "name": kept_names,
            "birth_date": kept_days,
            "token": [tk.identity(s, n, d) for s, n, d in zip(subjects, kept_names, kept_days, strict=True)],
        },
        columns=["subject_id", "name", "birth_date", "token"],
    )
    return Declarations(checked=checked, refused=refused, duplicates=duplicates)


def identity_query(declarations: Declarations) -> list[Query]:
    """The query for the declarations' identity tokens (all in the police population partition)."""
    if declarations.checked.empty:
        return []
    pid = tk.parse(declarations.checked["token"].iloc[0]).partition_id
    return [Query("police", pid, PURPOSE, tuple(sorted(set(declarations.checked["token"].tolist()))))]


def decide(
    declarations: Declarations, found: Mapping[str, list[str]]
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Split declarations by the register's answer (identity token → subject ids recorded at it):
    (accepted subject_id/name/birth_date, refusals including the malformed ones)."""
    checked = declarations.checked
    get = found.get
    ok = [
        subject in get(token, ())
        for subject, token in zip(checked["subject_id"].tolist(), checked["token"].tolist(), strict=True)
    ]
    mask = pd.Series(ok, index=checked.index, dtype=bool)
    accepted = checked[mask][["subject_id", "name", "birth_date"]].reset_index(drop=True)
    refused = declarations.refused + [(s, REASON_NOT_IN_REGISTER) for s in checked[~mask]["subject_id"]]
    return accepted, refused
