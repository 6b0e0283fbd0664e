"""The run's PKI files: where each lives under RUN/pki (`PkiPaths`), how the whole PKI is written
(`create_pki`, deterministic from a seed) and bootstrapped from the scenario (`init_keys`), and the
run-level loaders and writers over that layout. The primitives are in `crypto.pki`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from crypto.drbg import Rng, default_rng
from crypto.errors import TrustListError
from crypto.pki import (
    COORDINATOR_DNS,
    DEFAULT_ISSUER,
    DNS_SUFFIX,
    FORMAT_HEALTHPSI,
    NATIONAL_ROOT,
    NO_EXPIRY,
    STORAGE_KEY_BYTES,
    VALID_AFTER,
    VALID_BEFORE,
    Identities,
    RevocationList,
    TrustList,
    agency_name,
    ec_private_key,
    ed25519_private_key,
    issue_certificate,
    load_certificate,
    load_ec_private_key,
    load_trust_list,
    make_identities,
    make_revocations,
    make_trust_list,
    parse_identities,
    parse_revocations,
    read_json,
    region_code,
    root_fingerprint,
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
    def root_fingerprint(self) -> Path:
        """The verifier's pin: SHA-256 of the national root certificate's DER, hex (`--root-fingerprint`)."""
        return self.pki_dir / "root.fingerprint"

    @property
    def home_issuer_file(self) -> Path:
        """The region code of the authority this run's coordinator issues for (the first `--issuer`)."""
        return self.pki_dir / "issuer"

    @property
    def home_issuer(self) -> str:
        """The coordinator's issuing authority (region code), as `keys init` recorded it."""
        try:
            return region_code(self.home_issuer_file.read_text(encoding="ascii").strip())
        except FileNotFoundError:
            return DEFAULT_ISSUER

    @property
    def venue_signing_cert(self) -> Path:
        """RUN/pki/venues/signing.pem: the venue agency's QR-signing certificate, signed by the root."""
        return self.pki_dir / "venues" / "signing.pem"

    @property
    def venue_signing_key(self) -> Path:
        """RUN/pki/venues/signing.key: the venue agency's QR-signing key (mode 0600)."""
        return self.pki_dir / "venues" / "signing.key"

    def issuer_dir(self, region: str) -> Path:
        """`RUN/pki/issuers/<region>`: one issuing authority's code-signing key and revocation list."""
        return self.pki_dir / "issuers" / region_code(region)

    def issuers(self) -> list[str]:
        """The issuing authorities that have a directory here, sorted."""
        base = self.pki_dir / "issuers"
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

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
        """The home issuer's code-signing certificate (ECDSA P-256), issued by the root."""
        return self.issuer_dir(self.home_issuer) / "signing.pem"

    @property
    def signing_key(self) -> Path:
        """The home issuer's code-signing private key."""
        return self.issuer_dir(self.home_issuer) / "signing.key"

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
        """The home issuer's revocation list (signed with its code-signing key)."""
        return self.issuer_dir(self.home_issuer) / "revocations.json"

    @property
    def dask_dir(self) -> Path:
        """`RUN/pki/dask`: the TLS certificates of the coordinator's Dask cluster (its own CA)."""
        return self.pki_dir / "dask"

    @property
    def dask_ca_cert(self) -> Path:
        """The CA every Dask party checks its peers against."""
        return self.dask_dir / "ca.pem"

    @property
    def dask_client_cert(self) -> Path:
        """The coordinator's Dask client certificate (client auth)."""
        return self.dask_dir / "client.pem"

    @property
    def dask_client_key(self) -> Path:
        """The Dask client's private key."""
        return self.dask_dir / "client.key"

    @property
    def dask_worker_cert(self) -> Path:
        """The scheduler's and workers' certificate (server and client auth)."""
        return self.dask_dir / "worker.pem"

    @property
    def dask_worker_key(self) -> Path:
        """The scheduler's and workers' private key."""
        return self.dask_dir / "worker.key"

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
    """Re-sign the home issuer's `revocations.json` with its code-signing key, write it, return the list."""
    doc = make_revocations(
        code_ids, load_ec_private_key(paths.signing_key), issued_at=issued_at, issuer=paths.home_issuer
    )
    save_json(paths.revocations, doc)
    return parse_revocations(doc, load_pinned_trust_list(paths))


def load_pinned_trust_list(paths: PkiPaths) -> TrustList:
    """The run's trust list, checked against the pinned root fingerprint (`RUN/pki/root.fingerprint`)."""
    return load_trust_list(paths.trustlist, fingerprint=read_fingerprint(paths.root_fingerprint))


def read_fingerprint(path: Path) -> str:
    """A pinned root fingerprint file: 64 hex digits. Raises TrustListError naming the file."""
    try:
        text = path.read_text(encoding="ascii").strip().lower()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustListError(f"root fingerprint {path}: cannot read ({exc})") from None
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise TrustListError(f"root fingerprint {path}: expected 64 hex digits (SHA-256 of the root's DER)")
    return text


def load_identities(paths: PkiPaths) -> Identities:
    """Read `identities.json` and check it against the run's root certificate."""
    return parse_identities(read_json(paths.identities, "identities"), load_certificate(paths.root_cert))


def load_signing_key(paths: PkiPaths, issuer: str | None = None) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """An issuer's code-signing key (default: the home issuer's) and its kid (SHA-256 of the SPKI DER, first
    8 bytes)."""
    path = paths.signing_key if issuer is None else paths.issuer_dir(issuer) / "signing.key"
    key = load_ec_private_key(path)
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
    issuers: Sequence[str] = (DEFAULT_ISSUER,),
) -> None:
    """Write the authority's side of a run's PKI (see `PkiPaths`): the CAs, the coordinator's TLS
    certificate, identity and storage keys, one code-signing certificate and (empty, self-signed) revocation
    list per issuing authority in `issuers` (region codes; the first is the coordinator's), the venue agency's
    QR-signing key and certificate, the root-signed identities (nodes join it by enrollment, `runctx.enroll`)
    and trust list of every issuer, and the root's fingerprint that verifiers pin. No node key.

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
    issuers = [region_code(r) for r in issuers]
    if not issuers or len(set(issuers)) != len(issuers):
        raise ValueError(f"expected one or more distinct issuers, got {issuers}")

    def make(name: str, cn: str, issuer_ca: _Issued | None, **kwargs: Any) -> _Issued:
        """A key from `rng.child(name)` and its certificate, issued by `issuer_ca` (None: self-signed)."""
        child = rng.child(name)
        key = ec_private_key(child)
        signer_key, signer_cert = (key, None) if issuer_ca is None else (issuer_ca.key, issuer_ca.certificate)
        cert = issue_certificate(cn, key.public_key(), signer_key, signer_cert, rng=child, **kwargs)
        return _Issued(key, cert)

    root = make("root", f"{NATIONAL_ROOT} CA", None, ca=True, **validity)
    nodes_ca = make("nodes-ca", "healthpsi nodes CA", None, ca=True, **validity)
    coordinator = make(
        "coordinator",
        COORDINATOR_DNS,
        root,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        dns_names=[COORDINATOR_DNS],
        **validity,
    )
    signing = {r: make(f"signing/{r}", f"{r} code signing", root, **signing_validity) for r in issuers}
    venues = make("venues/signing", "venues venue-code signing", root, **validity)
    dask_ca = make("dask-ca", "healthpsi dask CA", None, ca=True, **validity)  # its key is not kept
    loopback = {"dns_names": ["localhost"], "ip_addresses": ["127.0.0.1"]}
    dask_client = make(
        "dask/client",
        "dask-client" + DNS_SUFFIX,
        dask_ca,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        **loopback,
        **validity,
    )
    dask_worker = make(
        "dask/worker",
        "dask-worker" + DNS_SUFFIX,
        dask_ca,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        **loopback,
        **validity,
    )
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
        paths.root_fingerprint: ((root_fingerprint(root.certificate) + "\n").encode(), False),
        paths.dask_ca_cert: (_pem_cert(dask_ca.certificate), False),
        paths.dask_client_cert: (_pem_cert(dask_client.certificate), False),
        paths.dask_client_key: (_pem_key(dask_client.key), True),
        paths.dask_worker_cert: (_pem_cert(dask_worker.certificate), False),
        paths.dask_worker_key: (_pem_key(dask_worker.key), True),
        paths.home_issuer_file: ((issuers[0] + "\n").encode(), False),
        paths.venue_signing_cert: (_pem_cert(venues.certificate), False),
        paths.venue_signing_key: (_pem_key(venues.key), True),
    }
    for region, issued in signing.items():
        files[paths.issuer_dir(region) / "signing.pem"] = (_pem_cert(issued.certificate), False)
        files[paths.issuer_dir(region) / "signing.key"] = (_pem_key(issued.key), True)
    for path, (data, private) in files.items():
        write_atomic(path, data, private=private)
    root_cert = root.certificate
    save_json(
        paths.identities, make_identities({}, coordinator_identity.public_key(), root.key, issued_at=now)
    )
    entries = [(issued.certificate, FORMAT_HEALTHPSI, region) for region, issued in signing.items()]
    save_json(paths.trustlist, make_trust_list(entries, root_cert, root.key, issued_at=now))
    for region, issued in signing.items():
        save_json(
            paths.issuer_dir(region) / "revocations.json",
            make_revocations([], issued.key, issued_at=now, issuer=region),
        )


class KeysError(Exception):
    """`keys init` cannot proceed; the message says why."""


def init_keys(run_dir: Path, *, force: bool = False, issuers: Sequence[str] = (DEFAULT_ISSUER,)) -> PkiPaths:
    """Write RUN/pki for the issuing authorities `issuers` (the first is the coordinator's), deterministic
    from the scenario's seed in a deterministic simulation; refuse to overwrite an existing PKI unless
    `force`."""
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
        create_pki(paths, issuers=issuers)
    else:
        now = datetime.combine(scenario.as_of, time(), UTC)
        create_pki(paths, rng=scenario.rng("pki"), now=now, issuers=issuers)
    return paths
