"""`healthpsi bench daily`: its JSON section and table at the quick sizes (from the suite's one `bench all
--quick` run), both days checked against their plaintext join, the steady-state day querying less than the
cold one, and a Dask scaling curve of 1 and 2 workers; the command itself with its options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthpsi.cli import app
from tests.conftest import BenchAll


@pytest.mark.slow
def test_bench_daily_quick_section(bench_all_quick: BenchAll) -> None:
    """The daily section of `bench all --quick` (the daily benchmark at its quick sizes) and its table."""
    section = bench_all_quick.document["daily"]
    assert json.loads((bench_all_quick.out / "bench-daily.json").read_text())["daily"] == section
    assert section["matches_equal_plaintext"] is True
    assert len(section["days"]) == 2
    cold, steady = section["cold_epoch"], section["steady_epoch"]
    assert cold["reused_answers"] == 0 and cold["indexes_cached"] == 0
    assert 0 < steady["queried"] < cold["queried"]
    assert steady["reused_answers"] > 0 and steady["indexes_cached"] > 0
    for key in ("cold_seconds", "steady_seconds", "plaintext_seconds"):
        assert section[key] > 0
    ratio = section["steady_seconds"] / section["plaintext_seconds"]
    assert section["steady_privacy_price"] == pytest.approx(ratio)
    curve = section["dask_scaling"]
    assert [p["dask_workers"] for p in curve] == [1, 2]
    assert curve[0]["cold_speedup"] == 1.0 and curve[0]["steady_speedup"] == 1.0
    for point in curve:
        assert point["cold_seconds"] > 0 and point["steady_seconds"] > 0
        assert point["steady_speedup"] == pytest.approx(curve[0]["steady_seconds"] / point["steady_seconds"])
    assert "Dask, 2 workers" in bench_all_quick.output


@pytest.mark.slow
def test_bench_daily_command_applies_its_options(tmp_path: Path) -> None:
    """`healthpsi bench daily` itself, on a smaller city without the scaling curve: the options reach the
    benchmark, both days equal their plaintext join, and the document printed is the one written."""
    args = ["bench", "daily", "--quick", "--persons", "300", "--no-scaling", "--json", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == json.loads((tmp_path / "bench-daily.json").read_text())
    section = document["daily"]
    assert section["persons"] == 300
    assert section["matches_equal_plaintext"] is True and len(section["days"]) == 2
    assert section["dask_scaling"] == []


def test_bench_daily_refuses_a_curve_and_no_curve() -> None:
    result = CliRunner().invoke(app, ["bench", "daily", "--dask-workers", "2", "--no-scaling"])
    assert result.exit_code == 2
    assert "--dask-workers" in result.output
