"""A later day's epoch on a run simulated over several days: nodes dated that day read the files delivered
by then (late rows included), the coordinator's risk set holds the records known by then, and the private
matches equal the plaintext oracle of that day, row for row."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from coordinator.epoch import run_epoch
from coordinator.transport import InProcessTransport
from nodes.startup import open_node
from proto.tokens import AGENCIES
from simulation.reference import compute_reference

DAY2 = dt.date(2020, 2, 1)


@pytest.fixture(scope="module")
def run(two_day_city: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the integration suite's two-day city (`--persons 1500`, seed 7, late rows)."""
    return Path(shutil.copytree(two_day_city, tmp_path_factory.mktemp("days") / "run"))


def test_the_second_days_epoch_equals_that_days_oracle(run: Path) -> None:
    handlers = {agency: open_node(run, agency, as_of=DAY2) for agency in AGENCIES}
    try:
        assert {h.as_of for h in handlers.values()} == {DAY2}
        transports = {agency: InProcessTransport(h, agency) for agency, h in handlers.items()}
        run_epoch(run, transports, as_of=DAY2)
    finally:
        for h in handlers.values():
            h.close()
    private = pq.read_table(run / "coordinator" / "matches.parquet").replace_schema_metadata(None)
    oracle = compute_reference(run, as_of=DAY2).table.replace_schema_metadata(None)
    first_day = compute_reference(run).table.replace_schema_metadata(None)
    assert private.num_rows > 0
    assert private.to_pylist() == oracle.to_pylist()
    assert oracle.to_pylist() != first_day.to_pylist()
