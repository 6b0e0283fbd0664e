"""A newcomer's mistakes, made with the real command: each exits 2, names the problem and what to do next,
creates nothing and prints no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _healthpsi(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "healthpsi.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={"COLUMNS": "200",
                          "PATH": "/usr/bin:/bin", "NO_COLOR": "1"})


def _refused(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    text = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    for name in names:
        assert name in text, f"{name!r} not in: {text}"
    return text


@pytest.fixture(scope="module")
def keyed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated run with its PKI, and no node running."""
    run = tmp_path_factory.mktemp("newcomer") / "run"
    steps = (("simulate", "--persons", "200", "--seed", "5", "--out", run), ("keys", "init", "--run", run))
    for args in steps:
        proc = _healthpsi(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return run


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--seed", "-1"), "--seed"),
        (("--preset", "metropolis"), "--preset"),
        (("--persons", "3"), "--persons"),
        (("--workers", "0"), "--workers"),
    ],
)
def test_run_checks_its_options_before_any_work(tmp_path: Path, args: tuple[str, ...], option: str) -> None:
    out = tmp_path / "run"
    _refused(_healthpsi("run", *args, "--out", out), option)
    assert not out.exists()


def test_a_node_address_without_port_is_refused(keyed_run: Path) -> None:
    text = _refused(_healthpsi("coordinator", "epoch", "--run", keyed_run, "--node", "carrier=localhost"),
                    "--node", "localhost")
    assert "port" in text


def test_an_unreachable_node_is_named_with_the_command_that_starts_it(keyed_run: Path) -> None:
    proc = _healthpsi("coordinator", "epoch", "--run", keyed_run, "--node", "carrier=127.0.0.1:9",
                      "--node", "police=127.0.0.1:9", timeout=60)
    _refused(proc, "carrier", "127.0.0.1:9", f"healthpsi node serve --run {keyed_run} --agency carrier")
    assert not (keyed_run / "coordinator" / "codes.sqlite").exists()


def test_keys_init_does_not_create_a_mistyped_run(tmp_path: Path) -> None:
    typo = tmp_path / "rnus" / "demo"
    _refused(_healthpsi("keys", "init", "--run", typo), str(typo), "does not exist")
    assert not typo.exists() and not typo.parent.exists()


def test_a_run_without_scenario_names_it_and_the_command_that_makes_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(_healthpsi("coordinator", "epoch", "--run", empty, "--in-process"), "scenario.json",
             "healthpsi simulate")
    _refused(_healthpsi("reference", "--run", empty), "scenario.json")
    assert list(empty.iterdir()) == []


def test_a_node_without_pki_names_it_and_the_command_that_makes_it(keyed_run: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "scenario.json").write_bytes((keyed_run / "scenario.json").read_bytes())
    (bare / "data").symlink_to(keyed_run / "data")
    _refused(_healthpsi("node", "serve", "--run", bare, "--agency", "carrier", "--listen", "127.0.0.1:0"),
             "pki", f"healthpsi keys init --run {bare}")
    assert not (bare / "nodes").exists()
