"""A later day's epoch on a run simulated over several days: nodes dated that day read the files delivered
by then (late rows included), the coordinator's risk set holds the records known by then, and the private
matches equal the plaintext oracle of that day, row for row."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from coordinator.epoch import run_epoch
from coordinator.transport import InProcessTransport
from nodes.startup import open_node
from proto.tokens import AGENCIES
from runctx.pki import init_keys
from runner.enrollment import enroll_nodes
from simulation.reference import compute_reference
from simulation.scenario import simulate

DAY2 = dt.date(2020, 2, 1)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("days") / "run"
    simulate("city-20k", 7, out, persons=1500, days=2, late_rate=0.05)
    init_keys(out)
    enroll_nodes(out, AGENCIES)
    return out


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
