"""Run PKI: deterministic creation, certificate chains and usages, signed trust/revocation/identity lists."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from crypto import pki
from crypto.drbg import Drbg
from crypto.errors import TrustListError, UnknownKeyError
from nodes.secrets import NodeSecrets, init_node
from runctx import pki as run_pki
from runctx.enroll import enroll_node
from runctx.pki import PkiPaths
from runner.enrollment import enroll_nodes

NOW = datetime(2020, 2, 10, tzinfo=UTC)
AGENCIES = ["carrier", "transport", "police"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    """A deterministic PKI with three enrolled agency nodes."""
    p = PkiPaths(tmp_path_factory.mktemp("run"))
    run_pki.create_pki(p, rng=Drbg(b"pki-test"), now=NOW)
    _enrolled(p)
    return p


def _enrolled(p: PkiPaths, agencies: list[str] = AGENCIES) -> None:
    """Each agency's node keys made on the node's side and enrolled, in a run whose clock is NOW."""
    scenario = {"as_of": NOW.date().isoformat(), "seed": 3, "deterministic": True}
    (p.run_dir / "scenario.json").write_text(json.dumps(scenario))
    enroll_nodes(p.run_dir, agencies)


def _secrets(p: PkiPaths, agency: str) -> NodeSecrets:
    return NodeSecrets.of(p.run_dir, agency)


def _files(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def test_layout(paths: PkiPaths) -> None:
    expected = {
        "root.pem", "root.key", "nodes-ca.pem", "nodes-ca.key", "coordinator.pem", "coordinator.key",
        "coordinator.identity.key", "coordinator.storage.key", "root.fingerprint", "issuer",
        "identities.json", "trustlist.json",
    } | {f"issuers/411200/{name}" for name in ("signing.pem", "signing.key", "revocations.json")} | {
        f"dask/{name}" for name in ("ca.pem", "client.pem", "client.key", "worker.pem", "worker.key")
    } | {f"nodes/{a}.pem" for a in AGENCIES} | {"venues/signing.pem", "venues/signing.key"}
    assert set(_files(paths.pki_dir)) == expected  # no node private key on the authority's side
    assert paths.node_cert("carrier") == paths.run_dir / "pki" / "nodes" / "carrier.pem"
    assert paths.exists()
    private_files = (paths.root_key, paths.signing_key, paths.venue_signing_key)
    for private in (*private_files, *_secrets(paths, "police").files()):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(_secrets(paths, "police").directory.stat().st_mode) == 0o700


def test_deterministic_from_drbg(paths: PkiPaths, tmp_path: Path) -> None:
    again = PkiPaths(tmp_path / "again")
    run_pki.create_pki(again, rng=Drbg(b"pki-test"), now=NOW)
    _enrolled(again)
    assert _files(again.pki_dir) == _files(paths.pki_dir)
    other = PkiPaths(tmp_path / "other")
    run_pki.create_pki(other, rng=Drbg(b"another seed"), now=NOW)
    assert _files(other.pki_dir)["root.key"] != _files(paths.pki_dir)["root.key"]


def test_system_randomness_differs(tmp_path: Path) -> None:
    a, b = PkiPaths(tmp_path / "a"), PkiPaths(tmp_path / "b")
    run_pki.create_pki(a, now=NOW)
    run_pki.create_pki(b, now=NOW)
    assert a.signing_key.read_bytes() != b.signing_key.read_bytes()


def test_chains_and_usages(paths: PkiPaths) -> None:
    root = pki.load_certificate(paths.root_cert)
    nodes_ca = pki.load_certificate(paths.nodes_ca_cert)
    coordinator = pki.load_certificate(paths.coordinator_cert)
    signing = pki.load_certificate(paths.signing_cert)
    node = pki.load_certificate(paths.node_cert("transport"))
    root.verify_directly_issued_by(root)
    nodes_ca.verify_directly_issued_by(nodes_ca)
    coordinator.verify_directly_issued_by(root)
    signing.verify_directly_issued_by(root)
    node.verify_directly_issued_by(nodes_ca)
    with pytest.raises(ValueError):
        node.verify_directly_issued_by(root)  # node certificates cannot act as clients of other nodes
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not node.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = x509.ExtendedKeyUsage
    assert ExtendedKeyUsageOID.CLIENT_AUTH in coordinator.extensions.get_extension_for_class(eku).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in node.extensions.get_extension_for_class(eku).value
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["transport.healthpsi.local", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert node.not_valid_before_utc == signing.not_valid_before_utc == NOW - timedelta(days=30)
    assert signing.not_valid_after_utc == NOW + timedelta(days=365)
    assert node.not_valid_after_utc == root.not_valid_after_utc == pki.NO_EXPIRY  # TLS outlives the run clock


def test_real_clock_validity(tmp_path: Path) -> None:
    paths = PkiPaths(tmp_path)
    run_pki.create_pki(paths)
    init_node(tmp_path, "carrier")
    enroll_node(tmp_path, "carrier")
    node = pki.load_certificate(paths.node_cert("carrier"))
    assert node.not_valid_after_utc - node.not_valid_before_utc == timedelta(days=395)
    assert node.not_valid_before_utc < datetime.now(UTC) < node.not_valid_after_utc


def test_keys_match_their_certificates(paths: PkiPaths) -> None:
    key, kid = run_pki.load_signing_key(paths)
    signing = pki.load_certificate(paths.signing_cert)
    assert key.public_key() == signing.public_key()
    spki = signing.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    assert kid == hashlib.sha256(spki).digest()[:8]
    assert _secrets(paths, "police").load_tls().public_key() == \
        pki.load_certificate(paths.node_cert("police")).public_key()
    assert len(_secrets(paths, "carrier").load_storage()) == 32
    assert pki.load_storage_key(paths.coordinator_storage_key) != _secrets(paths, "carrier").load_storage()
    with pytest.raises(ValueError, match="Ed25519"):
        pki.load_identity_key(paths.root_key)
    with pytest.raises(ValueError, match="EC key"):
        pki.load_ec_private_key(paths.coordinator_identity_key)
    with pytest.raises(ValueError, match="cannot read"):
        pki.load_storage_key(paths.run_dir / "nobody.storage.key")


def test_identities(paths: PkiPaths) -> None:
    ids = run_pki.load_identities(paths)
    assert set(ids.nodes) == set(AGENCIES)
    for agency in AGENCIES:
        assert ids.node(agency) == _secrets(paths, agency).load_identity().public_key()
    assert ids.coordinator == pki.load_identity_key(paths.coordinator_identity_key).public_key()
    with pytest.raises(UnknownKeyError, match="nobody"):
        ids.node("nobody")
    doc = json.loads(paths.identities.read_text())
    assert set(doc) == {"type", "version", "issued_at", "nodes", "coordinator", "signature"}
    doc["nodes"]["carrier"] = doc["nodes"]["police"]
    with pytest.raises(TrustListError, match="does not verify"):
        pki.parse_identities(doc, pki.load_certificate(paths.root_cert))


def test_trust_list(paths: PkiPaths) -> None:
    trust = pki.load_trust_list(paths.trustlist)
    _, kid = run_pki.load_signing_key(paths)
    assert [(k.kid, k.format, k.issuer) for k in trust.keys] == [(kid, "healthpsi", pki.DEFAULT_ISSUER)]
    assert trust.find(kid, "healthpsi").certificate == pki.load_certificate(paths.signing_cert)
    assert trust.root == pki.load_certificate(paths.root_cert)
    assert trust.issuer == pki.NATIONAL_ROOT and trust.issued_at == NOW
    assert trust.max_age == pki.TRUSTLIST_MAX_AGE and trust.issuers == {pki.DEFAULT_ISSUER}
    with pytest.raises(UnknownKeyError):
        trust.find(kid, "eu-dcc")
    assert pki.load_trust_list(paths.trustlist, root=trust.root).keys == trust.keys


def _tampered(path: Path, change: object) -> dict:
    doc = json.loads(path.read_text())
    change(doc)  # type: ignore[operator]
    return doc


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(issuer="someone else"), "does not verify"),
        (lambda d: d["keys"].append(dict(d["keys"][0])), "does not verify"),
        (lambda d: d.update(type="healthpsi-revocations"), "expected a healthpsi-trustlist"),
        (lambda d: d.pop("signature"), "signature"),
        (lambda d: d["signature"].update(value="AAAA"), "expected 64"),
        (lambda d: d.update(root="not base64!"), "base64"),
        (lambda d: d.update(version=1), "version"),
        (lambda d: d.update(max_age=0), "does not verify"),
    ],
)
def test_trust_list_tampering(paths: PkiPaths, change: object, match: str) -> None:
    with pytest.raises(TrustListError, match=match):
        pki.parse_trust_list(_tampered(paths.trustlist, change))


def test_trust_list_pinning_and_issuance(paths: PkiPaths, tmp_path: Path) -> None:
    other = PkiPaths(tmp_path)
    run_pki.create_pki(other, rng=Drbg(b"other authority"), now=NOW)
    with pytest.raises(TrustListError, match="pinned root"):
        pki.load_trust_list(other.trustlist, root=pki.load_certificate(paths.root_cert))
    # a list signed by our root that vouches for a signing certificate our root did not issue
    root_cert, root_key = pki.load_certificate(paths.root_cert), pki.load_ec_private_key(paths.root_key)
    foreign = pki.load_certificate(other.signing_cert)
    doc = pki.make_trust_list([(foreign, "healthpsi", "411200")], root_cert, root_key, issued_at=NOW)
    with pytest.raises(TrustListError, match="not issued by the root"):
        pki.parse_trust_list(doc)
    doc = pki.make_trust_list([(foreign, "eu-dcc", "")], root_cert, root_key, issued_at=NOW)
    assert pki.parse_trust_list(doc).keys[0].certificate == foreign  # EU DCC signers have their own CAs
    doc["keys"][0]["kid"] = doc["keys"][0]["kid"][::-1]
    with pytest.raises(TrustListError):
        pki.parse_trust_list(doc)
    with pytest.raises(TrustListError, match="cannot read"):
        pki.load_trust_list(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(TrustListError, match="not valid JSON"):
        pki.load_trust_list(tmp_path / "bad.json")


def test_revocations(paths: PkiPaths, tmp_path: Path) -> None:
    empty = pki.load_revocations(paths.revocations, pki.load_trust_list(paths.trustlist))
    assert empty.revoked == frozenset() and empty.issued_at == NOW and empty.issuer == pki.DEFAULT_ISSUER
    copy = PkiPaths(tmp_path)
    run_pki.create_pki(copy, rng=Drbg(b"pki-test"), now=NOW)
    later = NOW + timedelta(hours=5)
    written = run_pki.write_revocations(copy, ["b", "a", "a"], issued_at=later)
    assert written.revoked == {"a", "b"} and written.is_revoked("a") and not written.is_revoked("c")
    doc = json.loads(copy.revocations.read_text())
    assert doc["revoked"] == ["a", "b"] and doc["issued_at"] == "2020-02-10T05:00:00Z"
    trust = pki.load_trust_list(copy.trustlist)
    assert pki.load_revocations(copy.revocations, trust) == written
    doc["revoked"] = ["a"]
    with pytest.raises(TrustListError, match="does not verify against the key of issuer 411200"):
        pki.parse_revocations(doc, trust)
    with pytest.raises(TrustListError, match="expected a healthpsi-revocations"):
        pki.load_revocations(copy.trustlist, trust)
    # signed by the code-signing key of another PKI's issuer: its kid is not on this trust list
    foreign = PkiPaths(tmp_path / "foreign")
    run_pki.create_pki(foreign, rng=Drbg(b"another authority"), now=NOW)
    with pytest.raises(TrustListError, match="not in the trust list"):
        pki.load_revocations(foreign.revocations, trust)
    with pytest.raises(TrustListError, match="stale"):
        written.check_fresh(later + pki.REVOCATIONS_MAX_AGE + timedelta(seconds=1))
    written.check_fresh(later + pki.REVOCATIONS_MAX_AGE)


def test_parse_certificate_forms(paths: PkiPaths) -> None:
    cert = pki.load_certificate(paths.signing_cert)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert pki.parse_certificate(der) == cert
    assert pki.parse_certificate(base64.b64encode(der).decode()) == cert
    assert pki.parse_certificate(cert.public_bytes(serialization.Encoding.PEM)) == cert
    with pytest.raises(TrustListError, match="certificate"):
        pki.parse_certificate("not a certificate")


def test_bad_agency_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="agency"):
        init_node(tmp_path, "../evil")
    with pytest.raises(ValueError, match="agency"):
        enroll_node(tmp_path, "../evil")


def _handshake(paths: PkiPaths, client_cert: Path, client_key: Path, server_name: str) -> str:
    """Run one mutual-TLS handshake the way node and coordinator are configured; return the error or ''."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(paths.node_cert("carrier"), _secrets(paths, "carrier").tls_key)
    server_ctx.load_verify_locations(paths.root_cert)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(paths.nodes_ca_cert)
    client_ctx.load_cert_chain(client_cert, client_key)
    client_ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
    server_ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
    a, b = socket.socketpair()
    errors: list[str] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(f"server: {exc}")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=server_name) as c:
            c.sendall(b"x")
            c.recv(1)
    except (ssl.SSLError, OSError) as exc:
        errors.append(f"client: {exc}")
    thread.join(5)
    return "; ".join(errors)


def test_certificates_work_for_mutual_tls(paths: PkiPaths) -> None:
    carrier = "carrier.healthpsi.local"
    assert _handshake(paths, paths.coordinator_cert, paths.coordinator_key, carrier) == ""
    refused = _handshake(paths, paths.node_cert("police"), _secrets(paths, "police").tls_key, carrier)
    assert "server" in refused  # a node's certificate is not a client certificate the root issued
    wrong_name = _handshake(paths, paths.coordinator_cert, paths.coordinator_key, "police.healthpsi.local")
    assert "client" in wrong_name and "hostname" in wrong_name.lower()



def test_der_ending_in_a_whitespace_byte() -> None:
    """DER is taken byte for byte: a certificate whose last byte looks like whitespace is not truncated."""
    key = pki.ec_private_key(Drbg(b"der"))
    for seed in range(2000):  # deterministic: the first certificate whose DER ends in b" \t\n\r\x0b\x0c"
        cert = pki.issue_certificate("t", key.public_key(), key, None, rng=Drbg(seed.to_bytes(4, "big")),
                                     not_before=NOW, not_after=NOW + timedelta(days=1))
        der = cert.public_bytes(serialization.Encoding.DER)
        if der[-1:].isspace():
            break
    assert der[-1:].isspace()
    assert pki.parse_certificate(der) == cert
    assert pki.parse_certificate(base64.b64encode(der).decode() + "\n") == cert
