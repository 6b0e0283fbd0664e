"""How well the codes of a simulated run match the epidemic's ground truth (simulation only)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def truth_metrics(run_dir: Path, codes: pd.DataFrame, as_of: dt.date) -> dict[str, Any]:
    """Sensitivity, specificity and quarantine burden of the issued codes against truth/infections.parquet.

    `codes` has one row per coded subject: `subject_id`, `color` and `quarantine_until` (date or null).
    Truly infected = infected on or before the end of `as_of`. Sensitivity: infected people coded red or
    yellow; specificity: uninfected people coded green; quarantine: person-days from as_of to each
    subject's quarantine end.
    """
    truth = pq.read_table(run_dir / "truth" / "infections.parquet", columns=["subject_id", "infected_at"])
    truth = truth.to_pandas()
    cutoff = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    infected = set(truth.loc[truth["infected_at"] < cutoff, "subject_id"])
    is_infected = codes["subject_id"].isin(infected).to_numpy()
    flagged = codes["color"].isin(["red", "yellow"]).to_numpy()
    until = pd.to_datetime(codes["quarantine_until"])
    days = (until - pd.Timestamp(as_of)).dt.days.fillna(0).clip(lower=0).to_numpy(dtype=np.int64)
    n_inf, n_uninf = int(is_infected.sum()), int((~is_infected).sum())
    return {
        "coded_subjects": len(codes),
        "infected_coded": n_inf,
        "infected_flagged": int((is_infected & flagged).sum()),
        "sensitivity": float((is_infected & flagged).sum() / n_inf) if n_inf else None,
        "uninfected_coded": n_uninf,
        "uninfected_green": int((~is_infected & ~flagged).sum()),
        "specificity": float((~is_infected & ~flagged).sum() / n_uninf) if n_uninf else None,
        "quarantine_person_days": int(days[flagged].sum()),
        "infected_total": len(infected),
    }
