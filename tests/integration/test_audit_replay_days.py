"""The audit replay of a two-day run checks each day's epoch: `RUN/coordinator/epochs/<date>/` against the
entries that epoch logged, so an earlier day's altered matches are caught even though the latest files hold.

The run is the integration suite's two-day city (`--persons 1500`, seed 7, late rows), its nodes opened
in-process on day 1 and rolled to day 2; each tampering test works on its own copy.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from audit.replay import replay
from audit.verdicts import ReplayReport, Verdict
from coordinator.epoch import epoch_dir, run_epoch
from coordinator.risk import load_scenario
from coordinator.transport import InProcessTransport
from nodes.startup import open_node
from proto.tokens import AGENCIES
from runner.days import advance_nodes


@pytest.fixture(scope="module")
def done(two_day_city: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the two-day city after the epochs of both its days, nodes rolled from day 1 to day 2
    without a restart."""
    run = Path(shutil.copytree(two_day_city, tmp_path_factory.mktemp("audit-days") / "run"))
    day1, day2 = load_scenario(run).epochs
    handlers = {agency: open_node(run, agency, as_of=day1) for agency in AGENCIES}
    try:
        transports = {agency: InProcessTransport(h, agency) for agency, h in handlers.items()}
        run_epoch(run, transports, as_of=day1)
        advance_nodes(run, transports, day2)
        run_epoch(run, transports, as_of=day2)
    finally:
        for h in handlers.values():
            h.close()
    return run


@pytest.fixture
def run(done: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run to tamper with."""
    return Path(shutil.copytree(done, tmp_path / "run"))


def days(run: Path) -> list[dt.date]:
    return list(load_scenario(run).epochs)


def verdicts(report: ReplayReport, item: str) -> list[Verdict]:
    return [v for v in report.verdicts if v.section == "results" and v.item == item]


def test_each_days_files_are_checked_and_hold(done: Path) -> None:
    report = replay(done)
    assert report.ok, [(v.item, v.reason) for v in report.failures]
    for day in days(done):
        for name in ("matches.parquet", "features.parquet", "epoch.json"):
            found = verdicts(report, f"epochs/{day.isoformat()}/{name}")
            assert [v.status for v in found] == ["ok"], (day, name, found)
            assert "line" in found[0].reason  # names the log entry it was checked against
    first = verdicts(report, f"epochs/{days(done)[0].isoformat()}/matches.parquet")[0]
    assert "every row from a queried, justified token" in first.reason


def test_an_earlier_days_altered_matches_are_caught(run: Path) -> None:
    day1, day2 = days(run)
    path = epoch_dir(run, day1) / "matches.parquet"
    table = pq.read_table(path)
    assert table.num_rows > 1
    pq.write_table(table.slice(1), path)  # one match of day 1 removed, the file otherwise well formed
    report = replay(run)
    assert not report.ok
    failed = {v.item for v in report.failures}
    assert failed == {f"epochs/{day1.isoformat()}/matches.parquet"}, report.failures
    reason = verdicts(report, f"epochs/{day1.isoformat()}/matches.parquet")[0].reason
    assert f"{table.num_rows - 1} rows" in reason and "altered" in reason
    # the latest day's files, which earlier audits alone looked at, still hold
    assert all(v.status == "ok" for v in verdicts(report, f"epochs/{day2.isoformat()}/matches.parquet"))
    assert all(v.status == "ok" for v in verdicts(report, "matches.parquet"))


def test_an_earlier_days_missing_features_and_a_stray_day_are_named(run: Path) -> None:
    day1, day2 = days(run)
    (epoch_dir(run, day1) / "features.parquet").unlink()
    stray = epoch_dir(run, day2 + dt.timedelta(days=1))
    shutil.copytree(epoch_dir(run, day2), stray)
    report = replay(run)
    failed = {v.item: v.reason for v in report.failures}
    assert set(failed) == {f"epochs/{day1.isoformat()}/features.parquet", f"epochs/{stray.name}/"}
    assert "missing" in failed[f"epochs/{day1.isoformat()}/features.parquet"]
    assert "no epoch of that date" in failed[f"epochs/{stray.name}/"]
