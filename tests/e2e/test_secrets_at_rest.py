"""A run without its deterministic option: no node secret is in, or derivable from, any file the coordinator
reads. Every secret of every node (identity, TLS and storage keys, day keys, each partition's OPRF key) is
looked for, raw and hex-encoded, in every file of the run outside the nodes' own directories and the
agencies' data."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from crypto import oprf
from nodes.keys import KeyStore
from nodes.secrets import NodeSecrets
from proto.tokens import AGENCIES
from runctx.pki import PkiPaths
from runctx.scenario import Scenario


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("system") / "run"
    cmd = [sys.executable, "-m", "healthpsi.cli", "run", "--preset", "city-20k", "--seed", "5"]
    cmd += ["--persons", "600", "--out", str(out), "--workers", "1", "--system-random"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def node_secrets(run: Path, agency: str) -> Iterator[tuple[str, bytes]]:
    """(what, bytes) of every secret a node holds."""
    secrets = NodeSecrets.of(run, agency)
    identity = secrets.load_identity().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    yield "identity key", identity
    yield "TLS key", secrets.load_tls().private_numbers().private_value.to_bytes(32, "big")
    yield "TLS key file", secrets.tls_key.read_bytes()
    storage = secrets.load_storage()
    yield "storage key", storage
    for day in sorted(secrets.day_keys.glob("*.key")):
        yield f"day key {day.stem}", day.read_bytes()
    store = KeyStore(run / "nodes" / agency / "keys", agency, storage, secrets.day_keys)
    for pid in store.partitions():
        key = store.load(pid)
        assert key is not None
        yield f"partition key {pid}", key.sk


def coordinator_readable(run: Path) -> Iterator[Path]:
    """Every file of the run outside the nodes' directories (RUN/nodes/) and the agencies' data."""
    for path in sorted(run.rglob("*")):
        relative = path.relative_to(run).parts
        if path.is_file() and relative[0] not in ("nodes", "data"):
            yield path


def test_no_node_secret_is_in_any_file_the_coordinator_reads(run_dir: Path) -> None:
    scenario = Scenario.load(run_dir)
    assert scenario.randomness == "system"
    files = {path: path.read_bytes() for path in coordinator_readable(run_dir)}
    assert any(p.parent.name == "coordinator" for p in files) and (run_dir / "scenario.json") in files
    secrets = [
        (f"{agency} {what}", value) for agency in AGENCIES for what, value in node_secrets(run_dir, agency)
    ]
    assert sum(what.split(" ", 1)[1].startswith("partition key") for what, _ in secrets) > 20
    found = [
        (what, str(path.relative_to(run_dir)))
        for what, value in secrets
        for path, data in files.items()
        if value in data or value.hex().encode() in data
    ]
    assert found == []
    # the scan finds a secret that is there: the coordinator's own storage key, in RUN/pki
    own = PkiPaths(run_dir).coordinator_storage_key.read_bytes()
    assert any(own in data for data in files.values())


def test_no_partition_key_follows_from_the_seed(run_dir: Path) -> None:
    """What anyone holding scenario.json computes, were the run deterministic, is not what the nodes hold."""
    seeded = dataclasses.replace(Scenario.load(run_dir), deterministic=True)
    for agency in AGENCIES:
        for what, sk in node_secrets(run_dir, agency):
            if not what.startswith("partition key"):
                continue
            pid = what.removeprefix("partition key ")
            derived, _ = oprf.generate_key_pair(seeded.rng(f"node/{agency}/{pid}"))
            assert derived != sk, (agency, pid)
