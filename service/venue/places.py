"""Where a venue is: its cell, checked against the run's cell map, or the nearest cell of its county to a
position (as the simulation places a venue on a cell of its county)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


class PlaceError(ValueError):
    """A place that names no cell of the venue's county; the message says what is wrong."""


@functools.lru_cache(maxsize=4)
def _cells(path: Path, mtime_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cells.parquet as arrays: ids, region codes, x and y in km (read again when the file changes)."""
    table = pq.read_table(path, columns=["cell_id", "region_code", "x_km", "y_km"])
    return (
        table.column("cell_id").to_numpy().astype(np.int64),
        np.asarray(table.column("region_code").to_pylist(), dtype=object),
        table.column("x_km").to_numpy().astype(np.float64),
        table.column("y_km").to_numpy().astype(np.float64),
    )


def locate(run: Path, region_code: str, cell_id: int | None, x_km: float | None, y_km: float | None) -> int:
    """The venue's cell: `cell_id` when it lies in the county, else the county's cell nearest to (x, y)."""
    path = Path(run) / "data" / "carrier" / "cells.parquet"
    if not path.is_file():
        raise PlaceError("the run has no cell map (data/carrier/cells.parquet)")
    ids, regions, xs, ys = _cells(path, path.stat().st_mtime_ns)
    in_county = regions == region_code
    if cell_id is not None:
        found = np.nonzero(ids == cell_id)[0]
        if not len(found):
            raise PlaceError(f"cell_id: no cell {cell_id} in the city")
        if not in_county[found[0]]:
            raise PlaceError(f"cell_id: cell {cell_id} lies in {regions[found[0]]}, not in {region_code}")
        return cell_id
    if not in_county.any() or x_km is None or y_km is None:
        raise PlaceError(f"region_code: the cell map has no cell in {region_code}")
    candidates = np.nonzero(in_county)[0]
    nearest = candidates[np.argmin((xs[candidates] - x_km) ** 2 + (ys[candidates] - y_km) ** 2)]
    return int(ids[nearest])
