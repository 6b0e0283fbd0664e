"""`healthpsi bench epoch` and `bench issue` (--quick): the JSON documents outside readers depend on, and the
memory sampler. No timing assertions: the figures only have to be there and be positive."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.city import RssSampler
from benchmarks.epoch import MEMORY_NOTE, crypto_floor_seconds
from healthpsi.cli import app
from tests.conftest import BenchAll

STAGES = ("tokenise", "index", "evaluate", "stream", "match", "issue")


@pytest.mark.slow
def test_bench_epoch_quick_section(bench_all_quick: BenchAll) -> None:
    """The epoch section of `bench all --quick` (the epoch benchmark at its quick sizes) and its table."""
    epoch = bench_all_quick.document["epoch"]
    assert json.loads((bench_all_quick.out / "bench-epoch.json").read_text()) == {"epoch": epoch}
    assert epoch["preset"] == "city-20k" and epoch["persons"] == 1500 and epoch["transport"] == "inprocess"
    for key in ("seconds", "privacy_price", "plaintext_seconds", "privacy_price_matching",
                "privacy_price_without_issuance", "matching_epoch_seconds"):
        assert isinstance(epoch[key], float) and epoch[key] > 0, key
    assert isinstance(epoch["peak_rss_bytes"], int) and epoch["peak_rss_bytes"] > 0
    assert epoch["privacy_price"] == epoch["repetitions"][0]["seconds"] / epoch["plaintext_seconds"]
    for stage in STAGES:
        assert set(epoch["stages"][stage]) == {"seconds", "bytes"}
        assert epoch["stages"][stage]["seconds"] >= 0
    assert epoch["stages"]["evaluate"]["bytes"] > 0 and epoch["stages"]["stream"]["bytes"] > 0
    assert sum(s["seconds"] for s in epoch["stages"].values()) <= epoch["seconds"] * 1.01
    assert epoch["memory_note"] == MEMORY_NOTE
    assert epoch["matches_equal_plaintext"] is True
    assert epoch["counts"]["matches"] == epoch["counts"]["plaintext_matches"] > 0
    assert {"nodes", "epoch", "plaintext"} <= set(epoch["peak_rss_by_phase"])
    assert epoch["crypto_floor_seconds"] > 0
    assert epoch["crypto_floor_price"] == epoch["crypto_floor_seconds"] / epoch["plaintext_seconds"]
    raw = epoch["raw_operation_seconds"]
    assert set(raw) == {"point_add", "scalar_mult", "hash_to_group_mult"} and all(v > 0 for v in raw.values())
    assert "price of privacy" in bench_all_quick.output  # the table


@pytest.mark.slow
def test_bench_epoch_command_applies_its_options(tmp_path: Path) -> None:
    """`healthpsi bench epoch` itself, on a smaller city: the options reach the benchmark, the private matches
    equal the plaintext join, and the document printed is the one written (the table kept off stdout)."""
    args = ["bench", "epoch", "--quick", "--persons", "300", "--seed", "11", "--json", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == json.loads((tmp_path / "bench-epoch.json").read_text())
    epoch = document["epoch"]
    assert (epoch["persons"], epoch["seed"], epoch["transport"]) == (300, 11, "inprocess")
    assert epoch["matches_equal_plaintext"] is True
    assert "price of privacy" in result.stderr


def test_crypto_floor_counts_each_entry_and_query() -> None:
    raw = {"hash_to_group_mult": 3.0, "scalar_mult": 2.0, "point_add": 0.5}
    assert crypto_floor_seconds({"index_entries": 10, "queried": 0}, raw, 1) == 30.0
    per_query = 3.0 + 5 * 2.0 + 3 * 0.5
    assert crypto_floor_seconds({"index_entries": 0, "queried": 4}, raw, 2) == 4 * per_query / 2


def test_bench_issue_quick_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "issue", "--quick", "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    issue = json.loads(result.stdout)["issue"]
    assert json.loads((tmp_path / "bench-issue.json").read_text()) == {"issue": issue}
    for key in ("sign_per_s", "verify_per_s", "raw_sign_per_s", "raw_verify_per_s", "sign_workers_per_s",
                "sign_vs_raw", "verify_vs_raw"):
        assert isinstance(issue[key], float) and issue[key] > 0, key
    assert all(low <= high for low, high in issue["rate_ranges"].values())


def test_bench_epoch_and_issue_help_have_an_example() -> None:
    for section in ("epoch", "issue"):
        result = CliRunner().invoke(app, ["bench", section, "--help"])
        assert result.exit_code == 0
        assert f"Example: healthpsi bench {section}" in result.output


CHILD_BYTES = 200 << 20


@contextlib.contextmanager
def child_holding_memory() -> Iterator[None]:
    """A child process holding CHILD_BYTES, from when it says so until the block ends."""
    child = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time; b = bytearray({CHILD_BYTES}); sys.stdout.write('x\\n'); "
         "sys.stdout.flush(); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"x\n"
        yield
    finally:
        child.kill()
        child.wait()


def test_rss_sampler_counts_children() -> None:
    with child_holding_memory(), RssSampler(interval=0.01) as rss:
        rss.enter("with child")
        own = rss.sample()
    assert own >= CHILD_BYTES
    assert rss.peaks["with child"] >= CHILD_BYTES


def test_rss_sampler_lists_new_children_at_a_phase_change() -> None:
    with RssSampler(interval=0.01, refresh=3600.0) as rss:
        before = rss.sample()
        with child_holding_memory():
            assert rss.sample() < before + CHILD_BYTES  # the list predates the child and is kept an hour
            rss.enter("with child")
            assert rss.peaks["with child"] >= before + CHILD_BYTES
