"""Byte-reproducible Parquet files: fixed options (zstd, dictionary encoding, statistics, format 2.6) and no
pandas metadata or timestamps, so the same table gives the same bytes whoever writes it."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
}


def write_table(path: Path, table: pa.Table, row_groups: np.ndarray | None = None) -> None:
    """Write a table with fixed options; `row_groups` (sorted label per row): one row group per label."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, table.schema, **_OPTIONS) as writer:
        if row_groups is None or table.num_rows == 0:
            writer.write_table(table, row_group_size=max(1, table.num_rows))
            return
        cuts = np.r_[0, np.nonzero(row_groups[1:] != row_groups[:-1])[0] + 1, table.num_rows]
        for a, b in itertools.pairwise(cuts):
            writer.write_table(table.slice(a, b - a), row_group_size=int(b - a))
