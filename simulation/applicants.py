"""Who applies for a health code, and when: most of the population, each declaring id, name and birth date.

In 2020 the city issued 2.19 M codes to 2.4 M people, and refused declarations that did not match the
population register. The simulation reproduces both: a share of the registered population applies, and a
few declarations are false (a wrong birth date or a wrong name), which the coordinator must refuse.

Most people apply in the week before the first epoch; the others apply day by day after it (`applied_on`).
Whoever has no phone (a child, an elderly parent) is applied for by a household member who has one
(`applied_by`, and that member's `phone`). An applicant ill with the disease and not yet reported declares
a fever (and often a cough); a few others declare the symptoms of a cold.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from proto.ids import valid_mask

APPLY_RATE = 2.19 / 2.4
FALSE_RATE = 0.003
EARLY_SHARE = 0.85
"""Applicants who apply in the week before the first epoch; the others apply later, day by day."""
LATER_PER_DAY = 0.3
"""The chance that a later applicant applies on each day after the first epoch (geometric)."""
COLD_RATE = 0.01
"""Applicants who declare a cold's symptoms without the disease."""
ILL_DAYS = 7
"""How long an unreported symptomatic case keeps declaring symptoms after onset."""
SCHEMA = pa.schema(
    [
        ("subject_id", pa.string()),
        ("name", pa.string()),
        ("birth_date", pa.date32()),
        ("phone", pa.string()),
        ("applied_on", pa.date32()),
        ("symptoms", pa.list_(pa.string())),
        ("applied_by", pa.string()),
    ]
)
_COLDS = (["cough"], ["sore throat"], ["fever"], ["cough", "sore throat"])


def _family_phones(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """For each person without a phone, the first household member (in register order) who has one: that
    member's subject id and phone (None where nobody in the household has a phone)."""
    owners = frame[frame["phone"].notna()].drop_duplicates("household_id")
    by_household = owners.set_index("household_id")
    need = frame["phone"].isna()
    applier = frame["household_id"].map(by_household["subject_id"]).where(need)
    phone = frame["household_id"].map(by_household["phone"]).where(need, frame["phone"])
    return applier, phone


def applicants_table(
    population: pa.Table,
    seed: int,
    as_of: dt.date,
    last_day: dt.date,
    ill: pd.DataFrame,
    apply_rate: float = APPLY_RATE,
    false_rate: float = FALSE_RATE,
) -> pa.Table:
    """Applications (`SCHEMA`) from the registered population, in register order, of those who applied by
    `last_day`. `ill` holds (subject_id, onset, report) dates of the symptomatic (report NaT if never)."""
    rng = np.random.default_rng([seed, 0xA991])
    frame = population.select(["subject_id", "name", "birth_date", "household_id", "phone"]).to_pandas()
    frame = frame[valid_mask(frame["subject_id"])].drop_duplicates("subject_id").reset_index(drop=True)
    frame["applied_by"], frame["phone"] = _family_phones(frame)
    frame = frame[(rng.random(len(frame)) < apply_rate) & frame["phone"].notna()].reset_index(drop=True)
    lie = rng.random(len(frame)) < false_rate
    wrong_birth = lie & (rng.random(len(frame)) < 0.5)
    wrong_name = lie & ~wrong_birth
    frame.loc[wrong_birth, "birth_date"] = [
        d - dt.timedelta(days=1) for d in frame.loc[wrong_birth, "birth_date"]
    ]
    frame.loc[wrong_name, "name"] = frame.loc[wrong_name, "name"].str[:-1] + "伪"

    first = np.datetime64(as_of, "D")
    early = rng.random(len(frame)) < EARLY_SHARE
    offset = np.where(early, -rng.integers(0, 7, len(frame)), rng.geometric(LATER_PER_DAY, len(frame)))
    frame["applied_on"] = first + offset.astype("timedelta64[D]")
    frame = frame[frame["applied_on"] <= np.datetime64(last_day, "D")].reset_index(drop=True)

    sick = frame[["subject_id", "applied_on"]].merge(ill, on="subject_id", how="left")
    until = sick["report"].fillna(sick["onset"] + pd.Timedelta(days=ILL_DAYS))
    has_it = ((sick["onset"] <= sick["applied_on"]) & (sick["applied_on"] < until)).to_numpy()
    cough = rng.random(len(frame)) < 0.6
    cold = rng.random(len(frame)) < COLD_RATE
    which = rng.integers(0, len(_COLDS), len(frame))
    frame["symptoms"] = [
        (["fever", "cough"] if c else ["fever"]) if h else (list(_COLDS[w]) if k else [])
        for h, c, k, w in zip(has_it, cough, cold, which, strict=True)
    ]
    frame["applied_on"] = frame["applied_on"].dt.date
    return pa.Table.from_pandas(frame[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def write_applicants(run_dir: Path, seed: int, as_of: dt.date, last_day: dt.date, ill: pd.DataFrame) -> int:
    """Write RUN/health/applicants.parquet from the police register; return the number of applications."""
    population = pq.read_table(run_dir / "data" / "police" / "population.parquet")
    population = population.filter(pc.invert(pc.is_null(population["birth_date"])))
    table = applicants_table(population, seed, as_of, last_day, ill)
    pq.write_table(table, run_dir / "health" / "applicants.parquet", compression="zstd", store_schema=False)
    return table.num_rows
