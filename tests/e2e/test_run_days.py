"""End to end: `healthpsi run --days 3` with late rows, long-running node processes rolling from day to day,
each day's private matches checked against that day's plaintext join."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from coordinator.risk import load_scenario
from proto import layout
from proto.tokens import AGENCIES, parse_partition_id, partition_dataset
from simulation.reference import compute_reference

DAYS = 3


def healthpsi(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the command line and return its output (the test fails with it on a non-zero exit)."""
    proc = subprocess.run([sys.executable, "-m", "healthpsi.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("e2e-days") / "run"
    healthpsi("run", "--preset", "city-20k", "--seed", "11", "--persons", "1500", "--days", str(DAYS),
              "--out", str(out), "--workers", "2")
    return out


def epochs(run: Path) -> list[dt.date]:
    return load_scenario(run).epochs


def node_log(run: Path, agency: str) -> list[dict[str, Any]]:
    lines = (run / "nodes" / agency / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_each_days_matches_equal_that_days_plaintext_join(run_dir: Path) -> None:
    dates = epochs(run_dir)
    assert len(dates) == DAYS
    tables = []
    for date in dates:
        path = run_dir / "coordinator" / "epochs" / date.isoformat() / "matches.parquet"
        private = pq.read_table(path).replace_schema_metadata(None).to_pylist()
        oracle = compute_reference(run_dir, as_of=date).table.replace_schema_metadata(None).to_pylist()
        assert private and private == oracle
        kinds = {row["token"].split("|")[0] for row in private}
        assert {"venue-hour", "place-day"} <= kinds, (date, kinds)  # the venues node and declarations too
        tables.append(private)
    assert tables[0] != tables[-1]  # the days differ, so each day was really checked against its own data
    latest = pq.read_table(run_dir / "coordinator" / "matches.parquet").replace_schema_metadata(None)
    assert latest.to_pylist() == tables[-1]


def late_partitions(run: Path, agency: str, date: dt.date) -> set[str]:
    """Dataset days ("<dataset>@<day>") that the node already served the day before `date` and that got rows
    delivered on `date` (late rows)."""
    scenario = load_scenario(run)
    first, last = scenario.with_window(date - dt.timedelta(days=1)).window
    root = run / "data" / agency
    out = set()
    for directory in (p for p in root.iterdir() if p.is_dir()):
        for f in layout.partitioned_files(directory):
            assert f.day is not None
            if f.delivered == date and first <= f.day <= last:
                out.add(f"{directory.name}@{f.day.isoformat()}")
    return out


def test_partitions_with_late_rows_got_a_new_key_the_others_kept_theirs(run_dir: Path) -> None:
    late_total = 0
    for agency in AGENCIES:
        entries = node_log(run_dir, agency)
        rolls = [i for i, e in enumerate(entries) if e["kind"] == "node_rolled"]
        assert [entries[i]["data"]["as_of"] for i in rolls] == [d.isoformat() for d in epochs(run_dir)[1:]]
        start = 0
        for date, end in zip(epochs(run_dir)[1:], rolls, strict=True):
            replaced = {
                str(e["data"]["partition_id"]): e["data"] for e in entries[start:end]
                if e["kind"] == "partition_key_destroyed" and e["data"].get("reason") == "rows changed"
            }
            created = {
                str(e["data"]["partition_id"]): e["data"]
                for e in entries[start:end]
                if e["kind"] == "partition_key_created"
            }
            expected = late_partitions(run_dir, agency, date)
            # each dataset day with late rows got a fresh key for the kinds whose rows changed, no other did
            days = {f"{partition_dataset(pid)}@{parse_partition_id(pid)[1]}" for pid in replaced}
            assert days == expected, (agency, date)
            for pid, old in replaced.items():  # a fresh key of the next version, never the old one again
                assert created[pid]["key_version"] == old["key_version"] + 1
                assert created[pid]["public_key"] != old["public_key"]
            late_total += len(expected)
            start = end
    assert late_total > 0


def test_keys_of_days_out_of_the_window_are_gone(run_dir: Path) -> None:
    scenario = load_scenario(run_dir)
    first_kept = scenario.with_window(epochs(run_dir)[-1]).window[0]
    first_ever = scenario.window[0]
    left = [first_ever + dt.timedelta(days=i) for i in range((first_kept - first_ever).days)]
    assert len(left) == DAYS - 1
    for agency in AGENCIES:
        days_dir = run_dir / "nodes" / f"{agency}.secrets" / "days"
        kept = sorted(p.stem for p in days_dir.glob("*.key"))
        assert kept and min(kept) >= first_kept.isoformat()
        for day in left:
            assert not (days_dir / f"{day.isoformat()}.key").exists()
            assert not list((run_dir / "nodes" / agency / "keys").glob(f"*@{day.isoformat()}.key"))
        shredded = {e["data"]["partition_id"] for e in node_log(run_dir, agency)
                    if e["kind"] == "partition_key_destroyed" and "day_key_shredded" in e["data"]}
        served = {p for p in shredded if any(str(p).endswith(d.isoformat()) for d in left)}
        assert served == shredded


def test_later_epochs_reuse_answers_and_query_less(run_dir: Path) -> None:
    summary = json.loads((run_dir / "run.json").read_text())
    days = summary["days"]
    assert [d["as_of"] for d in days] == [d.isoformat() for d in epochs(run_dir)]
    assert all(d["reference_equal"] for d in days)
    assert days[0]["reused_answers"] == 0
    assert 0 < days[1]["queried"] < days[0]["queried"]
    assert days[1]["reused_answers"] > 0 and days[1]["indexes_cached"] > 0
    for d in days:
        assert sum(d["colours"].values()) == d["codes_issued"] > 0
    report = (run_dir / "report.html").read_text()
    assert "Day by day" in report
    assert "The active policy against the 2020 rules" in report
    comparison = json.loads((run_dir / "report.json").read_text())["policy_comparison"]
    assert [row["policy"].split(" (")[0] for row in comparison] == ["active", "2020 rules"]
    assert all(row["red"] + row["yellow"] > 0 for row in comparison)


def test_audit_replay_holds_on_the_finished_run(run_dir: Path) -> None:
    proc = healthpsi("audit", "replay", str(run_dir), "--json", timeout=1200)
    report = json.loads(proc.stdout)
    assert report["ok"] is True
