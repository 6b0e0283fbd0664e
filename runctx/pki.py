"""The run's PKI files: where each lives under RUN/pki (`PkiPaths`), how the whole PKI is written
(`create_pki`, deterministic from a seed) and bootstrapped from the scenario (`init_keys`), and the
run-level loaders and writers over that layout. The primitives are in `crypto.pki`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from crypto.drbg import Rng, default_rng
from crypto.pki import (
    COORDINATOR_DNS,
    DEFAULT_ISSUER,
    FORMAT_HEALTHPSI,
    NO_EXPIRY,
    STORAGE_KEY_BYTES,
    VALID_AFTER,
    VALID_BEFORE,
    Identities,
    RevocationList,
    agency_name,
    ec_private_key,
    ed25519_private_key,
    issue_certificate,
    load_certificate,
    load_ec_private_key,
    make_identities,
    make_revocations,
    make_trust_list,
    parse_identities,
    parse_revocations,
    read_json,
    spki_kid,
    utc,
)
from runctx.files import write_atomic
from runctx.scenario import Scenario, ScenarioError


@dataclass(frozen=True)
class PkiPaths:
    """Where each PKI file of a run lives (`RUN/pki/...`); the only place file names are spelled out."""

    run_dir: Path

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "run_dir", Path(run_dir))

    @property
    def pki_dir(self) -> Path:
        """`RUN/pki`."""
        return self.run_dir / "pki"

    @property
    def root_cert(self) -> Path:
        """Health-authority root CA certificate (PEM)."""
        return self.pki_dir / "root.pem"

    @property
    def root_key(self) -> Path:
        """Root CA private key (PKCS8 PEM)."""
        return self.pki_dir / "root.key"

    @property
    def nodes_ca_cert(self) -> Path:
        """CA certificate that issues node TLS server certificates (PEM)."""
        return self.pki_dir / "nodes-ca.pem"

    @property
    def nodes_ca_key(self) -> Path:
        """Nodes CA private key."""
        return self.pki_dir / "nodes-ca.key"

    @property
    def coordinator_cert(self) -> Path:
        """Coordinator TLS client certificate, issued by the root."""
        return self.pki_dir / "coordinator.pem"

    @property
    def coordinator_key(self) -> Path:
        """Coordinator TLS private key."""
        return self.pki_dir / "coordinator.key"

    @property
    def coordinator_identity_key(self) -> Path:
        """Coordinator Ed25519 audit-log key (PKCS8 PEM)."""
        return self.pki_dir / "coordinator.identity.key"

    @property
    def coordinator_storage_key(self) -> Path:
        """Coordinator key-encryption key for query openings at rest (32 raw bytes)."""
        return self.pki_dir / "coordinator.storage.key"

    @property
    def signing_cert(self) -> Path:
        """Code-signing certificate (ECDSA P-256), issued by the root."""
        return self.pki_dir / "signing.pem"

    @property
    def signing_key(self) -> Path:
        """Code-signing private key."""
        return self.pki_dir / "signing.key"

    @property
    def identities(self) -> Path:
        """Root-signed list of Ed25519 identity public keys."""
        return self.pki_dir / "identities.json"

    @property
    def trustlist(self) -> Path:
        """Root-signed trust list for code verifiers."""
        return self.pki_dir / "trustlist.json"

    @property
    def revocations(self) -> Path:
        """Root-signed list of revoked code ids."""
        return self.pki_dir / "revocations.json"

    @property
    def nodes_dir(self) -> Path:
        """`RUN/pki/nodes`."""
        return self.pki_dir / "nodes"

    def node_cert(self, agency: str) -> Path:
        """A node's TLS server certificate (issued by the nodes CA from the node's request; the node's keys
        never leave it, see `nodes.secrets`)."""
        return self.nodes_dir / f"{agency_name(agency)}.pem"

    def exists(self) -> bool:
        """Whether any PKI has been written for this run."""
        return self.pki_dir.is_dir() and any(self.pki_dir.iterdir())


@dataclass(frozen=True)
class _Issued:
    """A private key and the certificate issued for it."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def write_revocations(paths: PkiPaths, code_ids: Iterable[str], *, issued_at: datetime) -> RevocationList:
    """Re-sign and write `revocations.json` with the root key; return the new list."""
    doc = make_revocations(code_ids, load_ec_private_key(paths.root_key), issued_at=issued_at)
    save_json(paths.revocations, doc)
    return parse_revocations(doc, load_certificate(paths.root_cert))


def load_identities(paths: PkiPaths) -> Identities:
    """Read `identities.json` and check it against the run's root certificate."""
    return parse_identities(read_json(paths.identities, "identities"), load_certificate(paths.root_cert))


def load_signing_key(paths: PkiPaths) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """The code-signing key and its kid (SHA-256 of the SPKI DER, first 8 bytes)."""
    key = load_ec_private_key(paths.signing_key)
    return key, spki_kid(key.public_key())


def save_json(path: str | os.PathLike[str], doc: Any) -> None:
    """Write a JSON document (indented, sorted keys) atomically."""
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_atomic(Path(path), text.encode("utf-8"))


def _pem_cert(certificate: x509.Certificate) -> bytes:
    """PEM bytes of a certificate."""
    return certificate.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS8 PEM bytes of a private key."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_pki(
    paths: PkiPaths,
    *,
    rng: Rng | None = None,
    now: datetime | None = None,
    issuer: str = DEFAULT_ISSUER,
) -> None:
    """Write the authority's side of a run's PKI (see `PkiPaths`): the CAs, the coordinator's TLS
    certificate, identity and storage keys, the code-signing certificate, and the root-signed identities
    (nodes join it by enrollment, `runctx.enroll`), trust list and (empty) revocation list. No node key.

    With a `Drbg` and a fixed `now` the output is byte-for-byte reproducible. Certificates are valid from
    `now` - 30 days to `now` + 365 days; but when `now` is given (a simulated clock, e.g. a scenario's
    as_of in 2020), the CA and TLS certificates never expire, so the run's mutual TLS, which checks the
    wall clock, keeps working however long after `now` it runs. The code-signing certificate always
    keeps the one-year window.
    """
    rng = default_rng(rng)
    simulated = now is not None
    now = utc(now or datetime.now(UTC)).replace(microsecond=0)
    signing_validity = {"not_before": now - VALID_BEFORE, "not_after": now + VALID_AFTER}
    validity = {**signing_validity, "not_after": NO_EXPIRY} if simulated else signing_validity

    def make(name: str, cn: str, issuer_ca: _Issued | None, **kwargs: Any) -> _Issued:
        """A key from `rng.child(name)` and its certificate, issued by `issuer_ca` (None: self-signed)."""
        child = rng.child(name)
        key = ec_private_key(child)
        signer_key, signer_cert = (key, None) if issuer_ca is None else (issuer_ca.key, issuer_ca.certificate)
        cert = issue_certificate(cn, key.public_key(), signer_key, signer_cert, rng=child, **kwargs)
        return _Issued(key, cert)

    root = make("root", f"{issuer} root CA", None, ca=True, **validity)
    nodes_ca = make("nodes-ca", "healthpsi nodes CA", None, ca=True, **validity)
    coordinator = make("coordinator", COORDINATOR_DNS, root, usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
                       dns_names=[COORDINATOR_DNS], **validity)
    signing = make("signing", f"{issuer} code signing", root, **signing_validity)
    coordinator_identity = ed25519_private_key(rng.child("coordinator/identity"))
    coordinator_storage = rng.child("coordinator/storage").random_bytes(STORAGE_KEY_BYTES)

    files: dict[Path, tuple[bytes, bool]] = {
        paths.root_cert: (_pem_cert(root.certificate), False),
        paths.root_key: (_pem_key(root.key), True),
        paths.nodes_ca_cert: (_pem_cert(nodes_ca.certificate), False),
        paths.nodes_ca_key: (_pem_key(nodes_ca.key), True),
        paths.coordinator_cert: (_pem_cert(coordinator.certificate), False),
        paths.coordinator_key: (_pem_key(coordinator.key), True),
        paths.coordinator_identity_key: (_pem_key(coordinator_identity), True),
        paths.coordinator_storage_key: (coordinator_storage, True),
        paths.signing_cert: (_pem_cert(signing.certificate), False),
        paths.signing_key: (_pem_key(signing.key), True),
    }
    for path, (data, private) in files.items():
        write_atomic(path, data, private=private)
    root_cert = root.certificate
    save_json(paths.identities, make_identities({}, coordinator_identity.public_key(), root.key,
                                                issued_at=now))
    save_json(paths.trustlist, make_trust_list([(signing.certificate, FORMAT_HEALTHPSI)], root_cert, root.key,
                                               issuer=issuer, issued_at=now))
    save_json(paths.revocations, make_revocations([], root.key, issued_at=now, issuer=issuer))


class KeysError(Exception):
    """`keys init` cannot proceed; the message says why."""


def init_keys(run_dir: Path, *, force: bool = False) -> PkiPaths:
    """Write RUN/pki (deterministic from the scenario's seed when there is one); refuse to overwrite
    an existing PKI unless `force`."""
    paths = PkiPaths(run_dir)
    if paths.exists():
        if not force:
            raise KeysError(f"{paths.pki_dir} already exists; use --force to replace it")
        shutil.rmtree(paths.pki_dir)
    try:
        scenario = Scenario.read(run_dir)
    except ScenarioError as exc:
        raise KeysError(str(exc)) from None
    if scenario is None:
        create_pki(paths)
    else:
        now = datetime.combine(scenario.as_of, time(), UTC)
        create_pki(paths, rng=scenario.rng("pki"), now=now)
    return paths
