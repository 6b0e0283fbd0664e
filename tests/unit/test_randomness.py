"""Where a run's secrets come from: derived from the seed only in a deterministic simulation
(`"deterministic": true` in scenario.json), from the OS otherwise, and every manifest and log head says
which."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, datetime, time
from pathlib import Path

import pytest

from crypto import oprf
from nodes.startup import open_node
from runctx.pki import PkiPaths, create_pki, init_keys
from runctx.scenario import Scenario, ScenarioError
from tests.unit.test_node_handlers import AS_OF, day_pid, write_run


def _set_deterministic(run: Path, deterministic: bool) -> Scenario:
    path = run / "scenario.json"
    raw = json.loads(path.read_text())
    raw["deterministic"] = deterministic
    path.write_text(json.dumps(raw))
    return Scenario.load(run)


def _partition_key(run: Path, deterministic: bool) -> tuple[bytes, bytes, dict[str, object]]:
    """Open the transport node; return the public key it serves for the as_of partition, the one an attacker
    re-derives from scenario.json's seed, and the node's first log head."""
    scenario = _set_deterministic(run, deterministic)
    node = open_node(run, "transport")
    try:
        manifest = node.manifest()
        served = next(p.public_key for p in manifest.partitions if p.partition_id == day_pid(AS_OF))
        assert manifest.randomness == scenario.randomness
    finally:
        node.close()
    # what anyone who reads scenario.json computes: the seed's stream for this partition
    attacker = dataclasses.replace(scenario, deterministic=True).rng(f"node/transport/{day_pid(AS_OF)}")
    _, derived = oprf.generate_key_pair(attacker)
    lines = (run / "nodes" / "transport" / "audit.jsonl").read_text().splitlines()
    head = next(json.loads(line) for line in lines if json.loads(line)["kind"] == "head")
    return served, derived, head


def test_without_the_option_no_partition_key_follows_from_the_seed(tmp_path: Path) -> None:
    write_run(tmp_path / "system")
    served, derived, head = _partition_key(tmp_path / "system", deterministic=False)
    assert served != derived
    assert head["data"]["randomness"] == "system"


def test_with_the_option_the_seed_gives_the_key_and_the_run_says_so(tmp_path: Path) -> None:
    write_run(tmp_path / "seeded")
    served, derived, head = _partition_key(tmp_path / "seeded", deterministic=True)
    assert served == derived  # the derivation is the real one, so the other test's difference means something
    assert head["data"]["randomness"] == "deterministic"


def test_keys_init_draws_from_the_os_unless_deterministic(tmp_path: Path) -> None:
    for deterministic in (False, True):
        run = tmp_path / str(deterministic)
        write_run(run)
        shutil.rmtree(run / "pki")
        scenario = _set_deterministic(run, deterministic)
        init_keys(run)
        rederived = PkiPaths(tmp_path / f"rederived-{deterministic}")
        now = datetime.combine(scenario.as_of, time(), UTC)
        create_pki(rederived, rng=dataclasses.replace(scenario, deterministic=True).rng("pki"), now=now)
        actual = PkiPaths(run)
        for secret in ("root_key", "signing_key", "coordinator_storage_key", "coordinator_identity_key"):
            same = getattr(actual, secret).read_bytes() == getattr(rederived, secret).read_bytes()
            assert same is deterministic, secret


def test_deterministic_is_refused_outside_a_simulation(tmp_path: Path) -> None:
    (tmp_path / "scenario.json").write_text(json.dumps({"as_of": "2020-01-20", "deterministic": True}))
    with pytest.raises(ScenarioError, match="refused outside a simulation"):
        Scenario.load(tmp_path)
    bad = {"as_of": "2020-01-20", "seed": 1, "deterministic": 1}
    (tmp_path / "scenario.json").write_text(json.dumps(bad))
    with pytest.raises(ScenarioError, match="true or false"):
        Scenario.load(tmp_path)
    (tmp_path / "scenario.json").write_text(json.dumps({"as_of": "2020-01-20", "seed": 1}))
    scenario = Scenario.load(tmp_path)
    assert scenario.rng("pki") is None and scenario.randomness == "system"
