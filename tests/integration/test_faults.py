"""Fault suite: real nodes and a real `healthpsi coordinator epoch` process, each fault injected once — kill
-9 of a node mid-stream and mid-Evaluate, of the coordinator mid-epoch and mid-issuance, a slow node behind
a throttled relay — and each run ended by running the epoch again: its codes equal a clean run's, and
`healthpsi audit replay` (without a re-run: a faulted run's logs rightly differ from a clean one's) passes.

The city is the integration suite's (`--persons 1500`, seed 7, deterministic); its node indexes are built once
and every test works on its own copy. A node killed with -9 leaves its port file behind: the restart through
`runner.processes` must not take it for the new node's port.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from audit.replay import replay
from runner.processes import NodeProcess, spawn_node, start_nodes, wait_serving

from .conftest import AGENCIES, copy_run, healthpsi
from .proxy import Proxy

EPOCH_TIMEOUT = 900.0
FAULT_TIMEOUT = 600.0
"""How long a test waits for its fault's moment before it fails."""


@pytest.fixture(scope="module")
def built(city_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The city with its health records and every node's indexes built, before any epoch (the four `node
    build` processes side by side, as `runner.processes.start_nodes` starts the nodes)."""
    run = copy_run(city_run, tmp_path_factory.mktemp("faults") / "built")
    shutil.copytree(city_run / "health", run / "health")
    with ThreadPoolExecutor(len(AGENCIES)) as pool:
        builds = [
            pool.submit(healthpsi, "node", "build", "--run", str(run), "--agency", agency, "--workers", "1")
            for agency in AGENCIES
        ]
        for build in builds:
            build.result()
    return run


def fresh(built: Path, target: Path) -> Path:
    """A private copy of the built run."""
    return Path(shutil.copytree(built, target))


def epoch_command(run: Path, addresses: dict[str, str]) -> list[str]:
    """`healthpsi coordinator epoch` against these node addresses."""
    cmd = [sys.executable, "-m", "healthpsi.cli", "coordinator", "epoch", "--run", str(run), "--workers", "1"]
    for agency, address in addresses.items():
        cmd += ["--node", f"{agency}={address}"]
    return cmd


def start_epoch(run: Path, addresses: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], Path]:
    """The epoch as a background process, its output in RUN/<name>.log."""
    log_path = run / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(epoch_command(run, addresses), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    return proc, log_path


def finish_epoch(run: Path, addresses: dict[str, str]) -> None:
    """Run the epoch (again) to its end; fail the test with its output if it fails."""
    proc, log_path = start_epoch(run, addresses, f"epoch-{time.monotonic_ns()}")
    if proc.wait(timeout=EPOCH_TIMEOUT) != 0:
        pytest.fail(f"the epoch exited {proc.returncode}:\n{log_path.read_text(errors='replace')[-4000:]}")


def wait_for(condition: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until `condition` holds; fail if it does not within FAULT_TIMEOUT or `proc` ends first."""
    deadline = time.monotonic() + FAULT_TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {FAULT_TIMEOUT:.0f}s")


def log_kinds(path: Path, kind: str, **match: object) -> int:
    """How many entries of this kind (whose data has these values) a JSONL audit log holds so far."""
    if not path.exists():
        return 0
    count = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # a line being written
            continue
        if entry.get("kind") == kind and all(entry["data"].get(k) == v for k, v in match.items()):
            count += 1
    return count


def codes(run: Path) -> list[tuple[object, ...]]:
    """Every code the run issued, with its colour, reasons and payload, and every revocation."""
    with sqlite3.connect(f"file:{run / 'coordinator' / 'codes.sqlite'}?mode=ro", uri=True) as db:
        issued = db.execute("SELECT code_id, subject_id, color, reasons, issued_at, expires_at, payload "
                            "FROM codes ORDER BY code_id").fetchall()
        revoked = db.execute("SELECT code_id, reason FROM revocations ORDER BY code_id").fetchall()
    return [*issued, ("revocations", *revoked)]


def issued_count(run: Path) -> int:
    """Codes in the database so far (0 before it exists)."""
    path = run / "coordinator" / "codes.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM codes").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def check_audit(run: Path) -> None:
    """`healthpsi audit replay --no-rerun` passes."""
    report = replay(run)
    assert report.ok, [f"{v.section} {v.item}: {v.reason}" for v in report.failures]


class Nodes:
    """The three nodes of a run, each behind its own relay (so one can be restarted on another port)."""

    def __init__(self, run: Path, delay: dict[str, float] | None = None) -> None:
        self.run = run
        self.processes = start_nodes(run, AGENCIES, workers=1)
        delays = delay or {}
        self.proxies = {a: Proxy(p.address, delay=delays.get(a, 0.0)) for a, p in self.processes.items()}

    @property
    def addresses(self) -> dict[str, str]:
        """What the coordinator is given: the relays."""
        return {agency: proxy.address for agency, proxy in self.proxies.items()}

    def kill(self, agency: str) -> None:
        """kill -9 a node."""
        self.processes[agency].process.kill()
        self.processes[agency].process.wait(timeout=30)

    def restart(self, agency: str) -> NodeProcess:
        """Start a killed node again and point its relay at it; its stale port file must not be trusted."""
        port_file = self.run / "nodes" / agency / "port"
        stale = port_file.read_text().strip()
        assert stale == self.processes[agency].address.rsplit(":", 1)[1], "a kill -9 leaves the port file"
        proc, log_path = spawn_node(self.run, agency, 1)
        node = wait_serving(self.run, agency, proc, log_path)
        expected = f"listening on {node.address}: serving"
        deadline = time.monotonic() + 30  # the node publishes its port file just before it prints this line
        while True:
            lines = log_path.read_text(errors="replace").splitlines()
            said = [line for line in lines if "listening on" in line]
            if said[-1].endswith(expected) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert said[-1].endswith(expected)  # the new node's port, not the old
        self.processes[agency] = node
        self.proxies[agency].target = node.address
        return node

    def stop(self) -> None:
        """Stop every node and relay."""
        for proxy in self.proxies.values():
            proxy.close()
        for node in self.processes.values():
            if node.process.poll() is None:
                node.stop()


@pytest.fixture
def serving(built: Path, tmp_path: Path) -> Iterator[Callable[..., Nodes]]:
    """Start the nodes of a private copy of the built run (closed after the test)."""
    started: list[Nodes] = []

    def start(delay: dict[str, float] | None = None) -> Nodes:
        nodes = Nodes(fresh(built, tmp_path / "run"), delay)
        started.append(nodes)
        return nodes

    yield start
    for nodes in started:
        nodes.stop()


@pytest.fixture(scope="module")
def clean(built: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[object, ...]]:
    """The codes of a clean run of the epoch (no fault), its audit passing."""
    nodes = Nodes(fresh(built, tmp_path_factory.mktemp("faults") / "clean"))
    try:
        finish_epoch(nodes.run, nodes.addresses)
    finally:
        nodes.stop()
    check_audit(nodes.run)
    issued = codes(nodes.run)
    assert len(issued) > 100
    return issued


def test_a_node_killed_mid_stream_restarts_and_the_epoch_resumes(
    serving: Callable[..., Nodes], clean: list[tuple[object, ...]]
) -> None:
    nodes = serving()
    carrier = nodes.proxies["carrier"]
    # past its manifest, into the index streams (the carrier's stays partitions are the largest)
    carrier.trip_at(64 << 10, lambda: nodes.kill("carrier"))
    proc, log_path = start_epoch(nodes.run, nodes.addresses, "epoch-faulted")
    wait_for(lambda: nodes.processes["carrier"].process.poll() is not None, "kill mid-stream", proc)
    assert nodes.processes["carrier"].process.returncode == -9
    nodes.restart("carrier")
    proc.wait(timeout=EPOCH_TIMEOUT)
    said = log_path.read_text(errors="replace")
    assert "node carrier" in said and ("resuming" in said or "retry" in said), said[-3000:]
    finish_epoch(nodes.run, nodes.addresses)
    assert codes(nodes.run) == clean
    check_audit(nodes.run)


def test_a_node_killed_mid_evaluate_restarts_and_the_epoch_resumes(
    serving: Callable[..., Nodes], clean: list[tuple[object, ...]]
) -> None:
    nodes = serving()
    audit = nodes.run / "nodes" / "transport" / "audit.jsonl"
    proc, _ = start_epoch(nodes.run, nodes.addresses, "epoch-faulted")
    # the first charge is logged inside its ledger transaction, before it commits: kill right then
    wait_for(lambda: log_kinds(audit, "evaluate", outcome="charged") > 0, "charged Evaluate", proc)
    nodes.kill("transport")
    nodes.restart("transport")
    proc.wait(timeout=EPOCH_TIMEOUT)
    finish_epoch(nodes.run, nodes.addresses)
    assert codes(nodes.run) == clean
    check_audit(nodes.run)


def test_the_coordinator_killed_mid_epoch_resumes(
    serving: Callable[..., Nodes], clean: list[tuple[object, ...]]
) -> None:
    nodes = serving()
    log = nodes.run / "coordinator" / "audit.jsonl"
    proc, _ = start_epoch(nodes.run, nodes.addresses, "epoch-killed")
    wait_for(lambda: log_kinds(log, "evaluate") > 0, "evaluated batch", proc)
    proc.kill()
    assert proc.wait(timeout=30) == -9
    assert issued_count(nodes.run) == 0
    finish_epoch(nodes.run, nodes.addresses)
    assert codes(nodes.run) == clean
    check_audit(nodes.run)


def test_the_coordinator_killed_mid_issuance_resumes(
    serving: Callable[..., Nodes], clean: list[tuple[object, ...]]
) -> None:
    nodes = serving()
    proc, _ = start_epoch(nodes.run, nodes.addresses, "epoch-killed")
    # codes are committed in transactions of thousands (the unit test of the store kills between them):
    # kill once the first is in, before the epoch has logged, listed, imaged and closed them
    wait_for(lambda: issued_count(nodes.run) > 0, "issued code", proc)
    proc.kill()
    assert proc.wait(timeout=30) == -9
    with sqlite3.connect(f"file:{nodes.run / 'coordinator' / 'codes.sqlite'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT finished_at FROM epochs").fetchall() == [(None,)]
    finish_epoch(nodes.run, nodes.addresses)
    assert codes(nodes.run) == clean
    check_audit(nodes.run)


def test_a_slow_node_behind_a_throttled_relay_gives_the_same_codes(
    serving: Callable[..., Nodes], clean: list[tuple[object, ...]]
) -> None:
    nodes = serving(delay={"police": 0.02})  # 20 ms before each piece of up to 16 KiB the police node sends
    finish_epoch(nodes.run, nodes.addresses)
    assert nodes.proxies["police"].sent_by_node > 0
    assert codes(nodes.run) == clean
    check_audit(nodes.run)
