"""End to end: `healthpsi run` with real node processes, checked against the plaintext oracle."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "run"
    cmd = [sys.executable, "-m", "healthpsi.cli", "run", "--preset", "city-20k", "--seed", "11"]
    cmd += ["--persons", "1500", "--out", str(out), "--workers", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out.parent / "run-output.txt").write_text(proc.stdout + proc.stderr)
    return out


def test_run_output_has_no_grpc_fork_warning_or_traceback(run_dir: Path) -> None:
    output = (run_dir.parent / "run-output.txt").read_text()
    assert "Report:" in output
    assert "fork" not in output.lower()
    assert "Traceback" not in output


def test_verify_help_examples_work_as_printed(run_dir: Path) -> None:
    """The examples of `healthpsi verify --help`, run in a shell where runs/demo is this run."""
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "healthpsi.cli", "verify", "--help"]
    help_text = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60).stdout
    flat = " ".join(help_text.split())
    examples = re.findall(r"(healthpsi verify --file .*?--at \S+(?: --json)?)(?= healthpsi| ╭|$)", flat)
    assert len(examples) == 2, flat
    (run_dir.parent / "runs").mkdir(exist_ok=True)
    demo = run_dir.parent / "runs" / "demo"
    if not demo.exists():
        demo.symlink_to(run_dir)
    bin_dir = run_dir.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "healthpsi"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m healthpsi.cli \"$@\"\n")
    shim.chmod(0o755)
    for example in examples:
        proc = subprocess.run(["bash", "-c", example], cwd=run_dir.parent, capture_output=True, text=True,
                              env={**env, "PATH": f"{bin_dir}:{env['PATH']}"}, timeout=120)
        assert proc.returncode == 0, example + "\n" + proc.stdout + proc.stderr
    assert examples[-1].endswith("--json")
    assert json.loads(proc.stdout)["valid"] is True


def test_private_matches_equal_plaintext_join_row_for_row(run_dir: Path) -> None:
    private = pq.read_table(run_dir / "coordinator" / "matches.parquet").replace_schema_metadata(None)
    oracle = pq.read_table(run_dir / "reference" / "matches.parquet").replace_schema_metadata(None)
    assert private.num_rows > 0
    assert private.column_names == ["subject_id", "agency", "token", "case_id"]
    assert private.to_pylist() == oracle.to_pylist()
    assert {"carrier", "police", "venues"} <= set(private.column("agency").to_pylist())
    kinds = {token.split("|")[0] for token in private.column("token").to_pylist()}
    assert {"cell-hour", "venue-hour", "place-day"} <= kinds


def test_nodes_were_real_processes_and_stopped_cleanly(run_dir: Path) -> None:
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["node_exit_codes"] == {"carrier": 0, "transport": 0, "police": 0, "venues": 0}
    assert summary["randomness"] == "deterministic"  # `healthpsi run`'s default, stated in run.json
    for agency in ("carrier", "transport", "police", "venues"):
        log = (run_dir / "nodes" / agency / "serve.log").read_text()
        assert log, f"{agency} node wrote no log"
        assert (run_dir / "nodes" / agency / "audit.jsonl").stat().st_size > 0
    assert summary["reference_equal"] is True


def test_codes_issued_and_verified(run_dir: Path) -> None:
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["verified"]["checked"] > 0
    assert summary["verified"]["valid"] == summary["verified"]["checked"]
    with sqlite3.connect(run_dir / "coordinator" / "codes.sqlite") as db:
        colours = dict(db.execute("SELECT color, COUNT(*) FROM codes GROUP BY color").fetchall())
        payload = db.execute("SELECT payload FROM codes LIMIT 1").fetchone()[0]
    assert sum(colours.values()) == summary["epoch"]["codes_issued"]
    assert payload.startswith("HCP1:")
    trust = str(run_dir / "pki" / "trustlist.json")
    cmd = [sys.executable, "-m", "healthpsi.cli", "verify", payload, "--trust", trust]
    cmd += ["--at", summary["epoch"]["issued_at"], "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["valid"] is True


def test_report_has_tables_plots_and_truth(run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    metrics = report["metrics"]
    assert 0.0 <= metrics["sensitivity"] <= 1.0
    assert 0.0 <= metrics["specificity"] <= 1.0
    assert sum(report["colours"].values()) == metrics["coded_subjects"]


def test_report_reads_as_a_report(run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    sections = {s["title"]: s for s in report["sections"]}
    stages = {row["stage"]: row["bytes on the wire"] for row in sections[next(
        t for t in sections if t.startswith("Epoch stages"))]["rows"]}
    assert stages["total"] == sum(v for k, v in stages.items() if k != "total") > 0
    shares = [row["share"] for row in sections["Health codes"]["rows"]]
    assert all(re.fullmatch(r"\d+\.\d%", s) for s in shares), shares
    checks = {row["check"]: row["result"] for row in sections["Checks"]["rows"]}
    assert checks["private matches equal the plaintext join"] == "yes, row for row"
    assert re.fullmatch(r"[\d,]+ of [\d,]+ valid", checks["sample of codes verified offline"])
    html = (run_dir / "report.html").read_text()
    for raw in ("True", "None", '{"checked"', "coded_subjects"):
        assert raw not in html, raw


def test_policy_evaluate_on_the_oracle_equals_the_private_run(run_dir: Path, tmp_path: Path) -> None:
    """`policy evaluate --plaintext` (features from the oracle's matches) gives the private run's figures, and
    a simulated run without an epoch is refused with the option that helps."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    policies = ["--policy", "coordinator/policies/2020.toml", "--policy", "coordinator/policies/default.toml"]

    def evaluate(*extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "healthpsi.cli", "policy", "evaluate", "--run", str(run), *policies]
        cmd += extra
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)

    private, plaintext = evaluate("--json"), evaluate("--json", "--plaintext")
    assert private.returncode == 0 and plaintext.returncode == 0, private.stderr + plaintext.stderr
    figures = [[p["summary"] for p in json.loads(out.stdout)["policies"]] for out in (private, plaintext)]
    assert figures[0] == figures[1]
    assert figures[0][0]["red"]["median"] > 0

    (run / "coordinator" / "features.parquet").unlink()
    refused = evaluate()
    assert refused.returncode == 2
    assert "coordinator/features.parquet" in refused.stderr and "--plaintext" in refused.stderr
