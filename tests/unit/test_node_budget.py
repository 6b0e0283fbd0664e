"""Per-partition budgets: default caps, configuration, persistence, refusals and idempotent retries."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crypto.auditlog import AuditLog
from healthpsi.cli import app
from nodes.budget import BudgetLedger, BudgetPolicy, BudgetSpecError, config_path, default_cap, write_budget
from nodes.startup import set_budget
from proto.errors import FailedPrecondition, ResourceExhausted

DAY = "cell-hour@2020-01-20"
STATIC = "household@static"


def test_default_caps_are_well_below_the_partition() -> None:
    assert default_cap(DAY, 5000) == 625
    assert default_cap(STATIC, 3000) == 375
    assert default_cap(DAY, 10) == 4  # a small partition still answers a case's few tokens...
    assert default_cap(DAY, 3) == 3  # ...never more than it holds
    assert BudgetPolicy().cap("identity@static", 1500) == 187
    for entries in (40, 578, 1500, 100_000):
        assert BudgetPolicy().cap(DAY, entries) <= entries // 8


def test_configured_caps_most_specific_wins() -> None:
    policy = BudgetPolicy.parse(["500", "stays=700", "static=9", "household=11", f"{DAY}=3", "*=600"])
    assert policy.cap(DAY, 10_000) == 3
    assert policy.cap("cell-hour@2020-01-21", 10_000) == 700
    assert policy.cap("region-day@2020-01-21", 10_000) == 700
    assert policy.cap(STATIC, 10_000) == 11
    assert policy.cap("identity@static", 10_000) == 9
    assert policy.cap("trip@2020-01-20", 10_000) == 600
    assert BudgetPolicy.parse(["day=10,static=20"]).cap("trip@2020-01-20", 1) == 10


def test_the_operators_file_holds_caps_the_command_line_overrides(tmp_path: Path) -> None:
    path = write_budget(tmp_path, "police", BudgetPolicy.parse(["identity=1200", "household=40"]))
    assert path == config_path(tmp_path, "police")
    stored = BudgetPolicy.read(path)
    assert stored.cap("identity@static", 1500) == 1200 and stored.cap(STATIC, 578) == 40
    merged = BudgetPolicy.parse(["household=10"]).over(stored)
    assert merged.cap(STATIC, 578) == 10 and merged.cap("identity@static", 1500) == 1200
    assert BudgetPolicy.read(tmp_path / "none.conf") == BudgetPolicy()
    path.write_text("identity=lots\n")
    with pytest.raises(BudgetSpecError, match=r"budget\.conf"):
        BudgetPolicy.read(path)


@pytest.mark.parametrize("spec", ["lots", "stays=", "=5", "stays=-1", "a b=3"])
def test_bad_budget_spec(spec: str) -> None:
    with pytest.raises(BudgetSpecError, match="expected N or SCOPE=N"):
        BudgetPolicy.parse([spec])


def respond(left: int) -> bytes:
    """A stand-in serialized response that records the budget left."""
    return f"left={left}".encode()


def test_charge_refuse_and_message(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "state.sqlite")
    ledger.set_total(DAY, 10)
    assert ledger.commit(DAY, "", b"d1", 6, respond) == b"left=4"
    assert ledger.check(DAY, 4).left == 4
    with pytest.raises(ResourceExhausted) as refused:
        ledger.check(DAY, 5)
    message = str(refused.value)
    assert "cap 10" in message and "used 6" in message and "asks for 5" in message and DAY in message
    with pytest.raises(ResourceExhausted):
        ledger.commit(DAY, "k", b"d2", 5, respond)
    # a refused request is not charged and not stored
    assert ledger.budget(DAY).used == 6
    assert ledger.replay(DAY, "k", b"d2") is None


def test_retry_with_same_key_is_not_charged_twice(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "state.sqlite")
    ledger.set_total(DAY, 100)
    first = ledger.commit(DAY, "epoch-1/batch-0", b"digest", 40, respond)
    assert ledger.replay(DAY, "epoch-1/batch-0", b"digest") == first
    assert ledger.budget(DAY).used == 40
    with pytest.raises(FailedPrecondition, match="different blinded elements"):
        ledger.replay(DAY, "epoch-1/batch-0", b"other digest")
    # keys are per partition; no key means no replay
    assert ledger.replay("cell-hour@2020-01-21", "epoch-1/batch-0", b"digest") is None
    assert ledger.replay(DAY, "", b"digest") is None


def test_budget_persists_and_cap_can_change(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    ledger = BudgetLedger(path)
    ledger.set_total(DAY, 50)
    ledger.commit(DAY, "k1", b"d", 20, respond)
    ledger.close()
    reopened = BudgetLedger(path)
    assert reopened.budget(DAY).used == 20
    assert reopened.set_total(DAY, 30).left == 10
    assert reopened.replay(DAY, "k1", b"d") == b"left=30"
    with pytest.raises(KeyError):
        reopened.budget("unknown@static")
    reopened.close()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_failure_while_responding_rolls_back(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "state.sqlite")
    ledger.set_total(DAY, 10)

    def broken(left: int) -> bytes:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        ledger.commit(DAY, "k", b"d", 3, broken)
    assert ledger.budget(DAY).used == 0
    assert ledger.replay(DAY, "k", b"d") is None


def test_a_static_budget_is_per_epoch_and_its_reset_is_logged_first(tmp_path: Path) -> None:
    ledger, audit = BudgetLedger(tmp_path / "state.sqlite"), AuditLog(tmp_path / "audit.jsonl")
    day = dt.date(2020, 1, 20)
    try:
        for pid in (STATIC, DAY):
            set_budget(ledger, audit, pid, 10, day)
            ledger.commit(pid, "", b"x", 7, lambda left: b"")
        set_budget(ledger, audit, STATIC, 10, day)  # the same epoch: nothing resets
        assert ledger.budget(STATIC).used == 7
        set_budget(ledger, audit, STATIC, 10, day + dt.timedelta(days=1))
        set_budget(ledger, audit, DAY, 10, day + dt.timedelta(days=1))
        assert ledger.budget(STATIC).used == 0 and ledger.budget(DAY).used == 7
        assert ledger.epoch(STATIC) == "2020-01-21"
    finally:
        ledger.close()
        audit.close()
    resets = [json.loads(line)["data"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "budget_reset"]
    assert [(r["epoch"], r["used_before"]) for r in resets] == [("2020-01-20", 0), ("2020-01-21", 7)]


def test_a_day_budget_is_per_key_and_its_reset_is_logged(tmp_path: Path) -> None:
    ledger, audit = BudgetLedger(tmp_path / "state.sqlite"), AuditLog(tmp_path / "audit.jsonl")
    day = dt.date(2020, 1, 20)
    try:
        set_budget(ledger, audit, DAY, 10, day, key_version=1)
        ledger.commit(DAY, "", b"x", 7, lambda left: b"")
        set_budget(ledger, audit, DAY, 10, day + dt.timedelta(days=1), key_version=1)  # same key: kept
        assert ledger.budget(DAY).used == 7
        set_budget(ledger, audit, DAY, 10, day + dt.timedelta(days=1), key_version=2)  # late rows, new key
        assert ledger.budget(DAY).used == 0
    finally:
        ledger.close()
        audit.close()
    resets = [json.loads(line)["data"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "budget_reset"]
    assert [(r["key_version"], r["used_before"]) for r in resets] == [(2, 7)]


def test_node_init_stores_the_operators_caps_and_refuses_a_bad_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    runner = CliRunner()
    init = ["node", "init", "--run", str(run), "--agency", "police"]
    bad = runner.invoke(app, [*init, "--budget", "identity=x"])
    assert bad.exit_code == 2 and "--budget" in bad.output
    assert not config_path(run, "police").exists()
    result = runner.invoke(app, [*init, "--budget", "identity=1200", "--budget", "household=40"])
    assert result.exit_code == 0, result.output
    stored = BudgetPolicy.read(config_path(run, "police"))
    assert stored == BudgetPolicy({"identity": 1200, "household": 40})
