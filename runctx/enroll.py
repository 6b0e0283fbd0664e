"""The authority's side of a node's enrollment: it reads the node's request (RUN/nodes/<agency>/request.json,
written by `healthpsi node init` where the node runs), checks it, issues the node's TLS certificate from the
nodes CA and lists the node's identity public key in the root-signed identities.json. It never sees a node's
private key.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from crypto.drbg import default_rng
from crypto.pki import (
    DNS_SUFFIX,
    NO_EXPIRY,
    VALID_AFTER,
    VALID_BEFORE,
    agency_name,
    issue_certificate,
    load_certificate,
    load_ec_private_key,
    make_identities,
)
from runctx.files import write_atomic
from runctx.pki import PkiPaths, load_identities, save_json
from runctx.scenario import Scenario


class EnrollError(ValueError):
    """A node's enrollment request that is missing or does not check out."""


def _request(run_dir: Path, agency: str) -> tuple[x509.CertificateSigningRequest, ed25519.Ed25519PublicKey]:
    """The node's certificate request and identity key, each checked against its own signature."""
    path = Path(run_dir) / "nodes" / agency / "request.json"
    try:
        doc: Any = json.loads(path.read_text())
        csr_pem = str(doc["csr"]).encode()
        csr = x509.load_pem_x509_csr(csr_pem)
        identity = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(doc["identity_key"]))
        identity.verify(bytes.fromhex(doc["identity_signature"]), csr_pem)
    except FileNotFoundError:
        raise EnrollError(f"{path} is missing: run `healthpsi node init --run {run_dir} --agency {agency}` "
                          "where the node runs") from None
    except InvalidSignature:
        raise EnrollError(f"{path}: the identity signature does not verify") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EnrollError(f"{path}: not an enrollment request ({exc})") from None
    if doc.get("agency") != agency:
        raise EnrollError(f"{path}: a request for {doc.get('agency')!r}, not {agency!r}")
    if not csr.is_signature_valid:
        raise EnrollError(f"{path}: the certificate request's signature does not verify")
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
        raise EnrollError(f"{path}: the certificate request's key is not an EC key")
    return csr, identity


def enroll_node(run_dir: Path, agency: str) -> Path:
    """Issue a node's TLS certificate (RUN/pki/nodes/<agency>.pem) from its request and list its identity
    key in identities.json, re-signed by the root; return the certificate's path. In a seeded run the
    certificate is reproducible and, like the run's CAs, does not expire."""
    agency = agency_name(agency)
    paths = PkiPaths(run_dir)
    csr, identity = _request(Path(run_dir), agency)
    public_key = csr.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    scenario = Scenario.read(run_dir)
    if scenario is not None:
        now = datetime.combine(scenario.as_of, time(), UTC)
        not_after, rng = NO_EXPIRY, scenario.rng("pki")
    else:
        now = datetime.now(UTC).replace(microsecond=0)
        not_after, rng = now + VALID_AFTER, None
    certificate = issue_certificate(
        agency + DNS_SUFFIX, public_key, load_ec_private_key(paths.nodes_ca_key),
        load_certificate(paths.nodes_ca_cert), rng=default_rng(rng).child(f"node/{agency}"),
        not_before=now - VALID_BEFORE, not_after=not_after, usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        dns_names=[agency + DNS_SUFFIX, "localhost"], ip_addresses=["127.0.0.1"],
    )
    write_atomic(paths.node_cert(agency), certificate.public_bytes(serialization.Encoding.PEM))
    listed = load_identities(paths)
    nodes = {**listed.nodes, agency: identity}
    root_key = load_ec_private_key(paths.root_key)
    save_json(paths.identities, make_identities(nodes, listed.coordinator, root_key, issued_at=now))
    return paths.node_cert(agency)
