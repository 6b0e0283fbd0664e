"""`healthpsi bench crypto --quick`: the JSON document has every figure, positive (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.sections import SECTIONS
from healthpsi.cli import app
from tests.conftest import BenchAll

RATIOS = ["blind_evaluate_vs_raw", "evaluate_vs_raw", "two_core_speedup", "ours_vs_openmined"]
RATES = [
    "raw_scalar_mult_per_s",
    "blind_evaluate_per_s",
    "raw_hash_to_group_mult_per_s",
    "evaluate_per_s",
    "blind_evaluate_two_cores_per_s",
    "evaluate_two_cores_per_s",
    "ours_seconds",
    "openmined_seconds",
]


def test_bench_crypto_quick_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "crypto", "--quick", "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == json.loads((tmp_path / "bench-crypto.json").read_text())
    crypto = document["crypto"]
    for key in RATIOS + RATES:
        assert isinstance(crypto[key], float) and crypto[key] > 0, key
    assert crypto["intersection_size"] == crypto["settings"]["psi_overlap"] > 0
    assert crypto["settings"]["psi_server"] > crypto["settings"]["psi_client"]
    assert all(low <= high for low, high in crypto["rate_ranges"].values())
    assert 0 <= crypto["machine"]["other_processes_cpu_share"] <= 1
    assert crypto["two_core_speedup"] == min(crypto["two_core_speedup_by_operation"].values())
    assert "Evaluate vs raw" in result.stderr  # the table, kept off stdout with --json


def test_bench_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["bench", "crypto", "--help"])
    assert result.exit_code == 0
    assert "Example: healthpsi bench crypto" in result.output


@pytest.mark.slow
def test_bench_all_quick_has_every_section_and_writes_each(bench_all_quick: BenchAll) -> None:
    """`bench all --quick`: one section per benchmark, the crypto one with its figures, each written to its
    own file under --out exactly as printed."""
    document = bench_all_quick.document
    assert set(document) == set(SECTIONS)
    assert document["crypto"]["ours_vs_openmined"] > 0
    for name, section in document.items():
        assert json.loads((bench_all_quick.out / f"bench-{name}.json").read_text()) == {name: section}
