"""Who applies for a health code: most of the population, each declaring id, name and birth date.

In 2020 the city issued 2.19 M codes to 2.4 M people, and refused declarations that did not match the
population register. The simulation reproduces both: a share of the registered population applies, and a
few declarations are false (a wrong birth date or a wrong name), which the coordinator must refuse.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from proto.ids import valid_mask

APPLY_RATE = 2.19 / 2.4
FALSE_RATE = 0.003
SCHEMA = pa.schema([("subject_id", pa.string()), ("name", pa.string()), ("birth_date", pa.date32())])


def applicants_table(
    population: pa.Table, seed: int, apply_rate: float = APPLY_RATE, false_rate: float = FALSE_RATE
) -> pa.Table:
    """Applications (subject_id, name, birth_date) from the registered population, in register order."""
    rng = np.random.default_rng([seed, 0xA991])
    frame = population.select(["subject_id", "name", "birth_date"]).to_pandas()
    frame = frame[valid_mask(frame["subject_id"])].drop_duplicates("subject_id")
    frame = frame[rng.random(len(frame)) < apply_rate].reset_index(drop=True)
    lie = rng.random(len(frame)) < false_rate
    wrong_birth = lie & (rng.random(len(frame)) < 0.5)
    wrong_name = lie & ~wrong_birth
    frame.loc[wrong_birth, "birth_date"] = [
        d - dt.timedelta(days=1) for d in frame.loc[wrong_birth, "birth_date"]
    ]
    frame.loc[wrong_name, "name"] = frame.loc[wrong_name, "name"].str[:-1] + "伪"
    return pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)


def write_applicants(run_dir: Path, seed: int) -> int:
    """Write RUN/health/applicants.parquet from the police register; return the number of applications."""
    population = pq.read_table(run_dir / "data" / "police" / "population.parquet")
    population = population.filter(pc.invert(pc.is_null(population["birth_date"])))
    table = applicants_table(population, seed)
    pq.write_table(table, run_dir / "health" / "applicants.parquet", compression="zstd", store_schema=False)
    return table.num_rows
