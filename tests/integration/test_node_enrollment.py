"""Node-held secrets: `keys init` writes no node key, each node makes its own (`node init`), the authority
certifies it from its request alone (`keys enroll`), and a node refuses secrets others can read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from crypto.pki import load_certificate
from nodes.secrets import NodeSecrets, NodeSecretsError
from nodes.startup import open_node
from runctx.pki import PkiPaths, load_identities

from .conftest import AGENCIES, healthpsi


def _private_values(secrets: NodeSecrets) -> list[bytes]:
    """Every node secret, in the forms it could be copied in: the files' bytes and the raw key material."""
    identity = secrets.load_identity().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    tls = secrets.load_tls().private_numbers().private_value.to_bytes(32, "big")
    return [*(p.read_bytes() for p in secrets.files()), identity, tls]


def test_node_keys_are_made_at_the_node_and_never_held_by_the_authority(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "scenario.json").write_text(json.dumps({"as_of": "2020-01-31", "seed": 5}))
    healthpsi("keys", "init", "--run", str(run))
    assert not (run / "nodes").exists()  # the authority wrote nothing for or about the nodes
    for agency in AGENCIES[:2]:
        healthpsi("node", "init", "--run", str(run), "--agency", agency)
        secrets = NodeSecrets.of(run, agency)
        hidden = tmp_path / f"{agency}.away"
        shutil.move(secrets.directory, hidden)  # the authority enrolls with no node secret on the machine
        healthpsi("keys", "enroll", "--run", str(run), "--agency", agency)
        shutil.move(hidden, secrets.directory)
        cert = load_certificate(PkiPaths(run).node_cert(agency))
        assert cert.public_key() == secrets.load_tls().public_key()
        assert load_identities(PkiPaths(run)).node(agency) == secrets.load_identity().public_key()
    for agency in AGENCIES[:2]:
        secrets = NodeSecrets.of(run, agency)
        values = _private_values(secrets)
        for path in run.rglob("*"):
            if path.is_file() and secrets.directory not in path.parents:
                data = path.read_bytes()
                assert not any(v in data for v in values), f"{agency} node secret found in {path}"


def test_a_node_refuses_secrets_others_can_read(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "scenario.json").write_text(json.dumps({"as_of": "2020-01-31", "seed": 5}))
    healthpsi("keys", "init", "--run", str(run))
    with pytest.raises(NodeSecretsError, match="node init"):
        open_node(run, "transport")
    healthpsi("node", "init", "--run", str(run), "--agency", "transport")
    secrets = NodeSecrets.of(run, "transport")
    secrets.storage_key.chmod(0o644)
    with pytest.raises(NodeSecretsError, match=r"readable by others \(mode 644\): chmod 600"):
        open_node(run, "transport")
    secrets.storage_key.chmod(0o600)
    secrets.directory.chmod(0o755)
    with pytest.raises(NodeSecretsError, match="chmod 700"):
        open_node(run, "transport")
