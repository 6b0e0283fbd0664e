"""A run's PKI: certificate authorities, TLS and code-signing certificates, identity keys, and the signed
trust list, revocation list and identity list that verifiers, nodes and auditors load.

Everything is deterministic when a `Drbg` is given (keys drawn from it, ECDSA signatures per RFC 6979), so
`keys init` on the same scenario writes the same bytes. The three JSON documents (`trustlist.json`,
`revocations.json`, `identities.json`) carry a `type`, their content and a `signature` object
`{"alg": "ES256", "value": base64(r || s)}` made by the root key over the canonical JSON (sorted keys, no
whitespace, UTF-8) of the document without its `signature` member.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crypto.drbg import Rng, default_rng
from crypto.errors import TrustListError, UnknownKeyError

FORMAT_HEALTHPSI = "healthpsi"
FORMAT_DCC = "eu-dcc"
FORMATS = (FORMAT_HEALTHPSI, FORMAT_DCC)
DEFAULT_ISSUER = "healthpsi health authority"
DNS_SUFFIX = ".healthpsi.local"
COORDINATOR_DNS = "coordinator" + DNS_SUFFIX
KID_BYTES = 8
STORAGE_KEY_BYTES = 32
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
VALID_BEFORE = timedelta(days=30)
"""Certificates become valid this long before the PKI's reference time..."""
VALID_AFTER = timedelta(days=365)
"""...and stay valid this long after it."""
NO_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
"""RFC 5280's "no well-defined expiration": CA and TLS certificates of a simulated run (fixed clock)."""

TRUSTLIST_TYPE = "healthpsi-trustlist"
REVOCATIONS_TYPE = "healthpsi-revocations"
IDENTITIES_TYPE = "healthpsi-identities"
DOCUMENT_VERSION = 1

_AGENCY_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


# --------------------------------------------------------------------------------------------- paths


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
        """A node's TLS server certificate (issued by the nodes CA)."""
        return self.nodes_dir / f"{_agency(agency)}.pem"

    def node_key(self, agency: str) -> Path:
        """A node's TLS private key."""
        return self.nodes_dir / f"{_agency(agency)}.key"

    def node_identity_key(self, agency: str) -> Path:
        """A node's Ed25519 identity key (manifest and audit-head signatures)."""
        return self.nodes_dir / f"{_agency(agency)}.identity.key"

    def node_storage_key(self, agency: str) -> Path:
        """A node's key-encryption key for partition keys at rest (32 raw bytes)."""
        return self.nodes_dir / f"{_agency(agency)}.storage.key"

    def exists(self) -> bool:
        """Whether any PKI has been written for this run."""
        return self.pki_dir.is_dir() and any(self.pki_dir.iterdir())


def _agency(agency: str) -> str:
    """Check that an agency name is a safe file name and DNS label."""
    if not isinstance(agency, str) or not _AGENCY_RE.fullmatch(agency):
        raise ValueError(f"agency name {agency!r}: expected lowercase letters, digits and '-'")
    return agency


# ---------------------------------------------------------------------------------------- key ids


def spki_kid(public_key: PublicKey) -> bytes:
    """healthpsi key id: the first 8 bytes of SHA-256 over the key's SubjectPublicKeyInfo DER."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()[:KID_BYTES]


def certificate_kid(certificate: x509.Certificate) -> bytes:
    """EU DCC key id: the first 8 bytes of SHA-256 over the signer certificate's DER."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()[:KID_BYTES]


def kid_for(certificate: x509.Certificate, fmt: str) -> bytes:
    """The key id that codes of format `fmt` ("healthpsi" or "eu-dcc") use for this certificate."""
    if fmt == FORMAT_HEALTHPSI:
        return spki_kid(_public_key(certificate))
    if fmt == FORMAT_DCC:
        return certificate_kid(certificate)
    raise ValueError(f"unknown code format {fmt!r}; expected one of {FORMATS}")


def _public_key(certificate: x509.Certificate) -> PublicKey:
    """The certificate's public key, which must be EC or RSA (the algorithms codes are signed with)."""
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TrustListError(f"certificate {certificate.subject.rfc4514_string()}: unsupported key type "
                             f"{type(key).__name__}")
    return key


# ------------------------------------------------------------------------------------ key generation


def ec_private_key(rng: Rng | None = None) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key with its scalar drawn uniformly from `rng` (None = system randomness)."""
    rng = default_rng(rng)
    return ec.derive_private_key(rng.random_int(P256_ORDER - 1) + 1, ec.SECP256R1())


def ed25519_private_key(rng: Rng | None = None) -> ed25519.Ed25519PrivateKey:
    """An Ed25519 private key from 32 bytes of `rng`."""
    rng = default_rng(rng)
    return ed25519.Ed25519PrivateKey.from_private_bytes(rng.random_bytes(32))


def _serial(rng: Rng) -> int:
    """A positive 159-bit certificate serial number."""
    return (int.from_bytes(rng.random_bytes(20), "big") >> 1) or 1


@dataclass(frozen=True)
class _Issued:
    """A private key and the certificate issued for it."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def issue_certificate(
    common_name: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer_cert: x509.Certificate | None,
    *,
    rng: Rng,
    not_before: datetime,
    not_after: datetime,
    ca: bool = False,
    usages: Sequence[x509.ObjectIdentifier] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> x509.Certificate:
    """Issue an X.509 certificate (self-signed when `issuer_cert` is None), signed deterministically."""
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "healthpsi"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    issuer_name = subject if issuer_cert is None else issuer_cert.subject
    issuer_public = issuer_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(_serial(rng))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if dns_names or ip_addresses:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256(), ecdsa_deterministic=True)


# ---------------------------------------------------------------------------------- signed documents


def canonical_json(obj: Any) -> bytes:
    """The canonical bytes of a JSON value: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_document(body: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """Return `body` with a `signature` member: ES256 (deterministic) over its canonical JSON."""
    if "signature" in body:
        raise ValueError("document already has a 'signature' member")
    r, s = decode_dss_signature(key.sign(canonical_json(body), _ECDSA))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return {**body, "signature": {"alg": "ES256", "value": base64.b64encode(raw).decode("ascii")}}


def verify_document(doc: Any, public_key: ec.EllipticCurvePublicKey, doc_type: str) -> dict[str, Any]:
    """Check a signed document's type and root signature; return its body. Raises TrustListError."""
    if not isinstance(doc, dict):
        raise TrustListError(f"{doc_type}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("type") != doc_type:
        raise TrustListError(f"expected a {doc_type} document, got type {doc.get('type')!r}")
    if doc.get("version") != DOCUMENT_VERSION:
        raise TrustListError(f"{doc_type}: unsupported version {doc.get('version')!r}")
    sig = doc.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != "ES256" or not isinstance(sig.get("value"), str):
        raise TrustListError(f"{doc_type}: missing or malformed signature (expected alg ES256)")
    raw = _b64(sig["value"], f"{doc_type} signature")
    if len(raw) != 64:
        raise TrustListError(f"{doc_type}: signature is {len(raw)} bytes, expected 64")
    body = {k: v for k, v in doc.items() if k != "signature"}
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public_key.verify(der, canonical_json(body), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise TrustListError(f"{doc_type}: signature does not verify against the root key") from None
    return body


def _b64(value: Any, what: str) -> bytes:
    """Strict base64 decoding, raising TrustListError that names `what`."""
    if not isinstance(value, str):
        raise TrustListError(f"{what}: expected a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TrustListError(f"{what}: not valid base64") from None


def _iso(moment: datetime) -> str:
    """An aware datetime as ISO 8601 UTC with a Z suffix."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(moment: datetime) -> datetime:
    """Aware UTC datetime; naive datetimes are taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_time(value: Any, what: str) -> datetime:
    """Parse an ISO 8601 time from a document, raising TrustListError."""
    if not isinstance(value, str):
        raise TrustListError(f"{what}: expected an ISO time string")
    try:
        return _utc(datetime.fromisoformat(value))
    except ValueError:
        raise TrustListError(f"{what}: not an ISO time: {value!r}") from None


def _read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Read a JSON file, raising TrustListError naming the file on any problem."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrustListError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrustListError(f"{what} {path}: not valid JSON ({exc})") from None


def parse_certificate(data: bytes | str) -> x509.Certificate:
    """A certificate from PEM, DER, or base64 DER (as in the EU DCC test data). Raises TrustListError."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    try:
        if raw[:1] == b"\x30":  # DER: a SEQUENCE; taken as is (its last bytes may look like whitespace)
            return x509.load_der_x509_certificate(raw)
        text = raw.strip()
        if text.startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(text)
        return x509.load_der_x509_certificate(base64.b64decode(b"".join(text.split()), validate=True))
    except (ValueError, binascii.Error) as exc:
        raise TrustListError(f"not a PEM, DER or base64 DER certificate ({exc})") from None


def _der_b64(certificate: x509.Certificate) -> str:
    """Base64 of a certificate's DER."""
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")


# ---------------------------------------------------------------------------------------- trust list


@dataclass(frozen=True)
class TrustedKey:
    """A code-signing certificate a verifier trusts, under the key id codes of its format carry."""

    kid: bytes
    certificate: x509.Certificate
    format: str

    @property
    def public_key(self) -> PublicKey:
        """The certificate's public key."""
        return _public_key(self.certificate)


@dataclass(frozen=True)
class TrustList:
    """The keys a verifier accepts, looked up by (kid, format); the root that signed the list, if any."""

    keys: tuple[TrustedKey, ...]
    issuer: str = ""
    root: x509.Certificate | None = None
    issued_at: datetime | None = None
    _index: dict[tuple[bytes, str], TrustedKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {(k.kid, k.format): k for k in self.keys})

    def find(self, kid: bytes, fmt: str) -> TrustedKey:
        """The trusted key with this kid for codes of format `fmt`; raises UnknownKeyError."""
        try:
            return self._index[(kid, fmt)]
        except KeyError:
            raise UnknownKeyError(f"kid {kid.hex()} is not in the trust list for {fmt} codes") from None

    @classmethod
    def from_certificates(cls, certificates: Iterable[x509.Certificate]) -> TrustList:
        """Trust certificates given directly (`--cert`): each under its healthpsi and its EU DCC key id."""
        keys = tuple(TrustedKey(kid_for(c, fmt), c, fmt) for c in certificates for fmt in FORMATS)
        return cls(keys=keys)


def make_trust_list(
    entries: Sequence[tuple[x509.Certificate, str]],
    root_cert: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    *,
    issuer: str = DEFAULT_ISSUER,
    issued_at: datetime,
) -> dict[str, Any]:
    """A signed trust-list document for (certificate, format) entries; the root certificate rides along."""
    keys = [
        {
            "kid": base64.b64encode(kid_for(cert, fmt)).decode("ascii"),
            "certificate": _der_b64(cert),
            "format": fmt,
        }
        for cert, fmt in entries
    ]
    body = {
        "type": TRUSTLIST_TYPE,
        "version": DOCUMENT_VERSION,
        "issuer": issuer,
        "issued_at": _iso(issued_at),
        "root": _der_b64(root_cert),
        "keys": keys,
    }
    return sign_document(body, root_key)


def parse_trust_list(doc: Any, root: x509.Certificate | None = None) -> TrustList:
    """Check a trust-list document (signature by its root, or by `root` when pinned) and return it.

    Each healthpsi key must be a certificate issued by the root, and each kid must be the one its format
    derives from the certificate. Raises TrustListError.
    """
    if not isinstance(doc, dict) or doc.get("type") != TRUSTLIST_TYPE:
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise TrustListError(f"expected a {TRUSTLIST_TYPE} document, got {got!r}")
    listed_root = parse_certificate(_b64(doc.get("root"), "trust list root"))
    if root is not None and listed_root != root:
        raise TrustListError("trust list: its root certificate is not the pinned root")
    root_key = listed_root.public_key()
    if not isinstance(root_key, ec.EllipticCurvePublicKey):
        raise TrustListError("trust list: root key is not an EC key")
    body = verify_document(doc, root_key, TRUSTLIST_TYPE)
    if not isinstance(body.get("keys"), list) or not isinstance(body.get("issuer"), str):
        raise TrustListError("trust list: expected 'issuer' (string) and 'keys' (list)")
    keys = []
    for i, entry in enumerate(body["keys"]):
        if not isinstance(entry, dict) or entry.get("format") not in FORMATS:
            raise TrustListError(f"trust list key {i}: expected an object with format in {FORMATS}")
        cert = parse_certificate(_b64(entry.get("certificate"), f"trust list key {i} certificate"))
        kid = _b64(entry.get("kid"), f"trust list key {i} kid")
        fmt = entry["format"]
        if kid != kid_for(cert, fmt):
            raise TrustListError(f"trust list key {i}: kid {kid.hex()} does not match its certificate")
        if fmt == FORMAT_HEALTHPSI:
            try:
                cert.verify_directly_issued_by(listed_root)
            except (ValueError, TypeError, InvalidSignature):
                raise TrustListError(f"trust list key {i}: certificate is not issued by the root") from None
        keys.append(TrustedKey(kid, cert, fmt))
    issued_at = _parse_time(body.get("issued_at"), "trust list issued_at")
    return TrustList(keys=tuple(keys), issuer=body["issuer"], root=listed_root, issued_at=issued_at)


def load_trust_list(path: str | os.PathLike[str], root: x509.Certificate | None = None) -> TrustList:
    """Read and check `trustlist.json` (optionally against a pinned root). Raises TrustListError."""
    return parse_trust_list(_read_json(path, "trust list"), root)


# ----------------------------------------------------------------------------------- revocation list


@dataclass(frozen=True)
class RevocationList:
    """Code ids revoked by the root, as of `issued_at`."""

    revoked: frozenset[str]
    issued_at: datetime
    issuer: str = DEFAULT_ISSUER

    def is_revoked(self, code_id: str) -> bool:
        """Whether this code id is on the list."""
        return code_id in self.revoked


def make_revocations(
    code_ids: Iterable[str], root_key: ec.EllipticCurvePrivateKey, *, issued_at: datetime,
    issuer: str = DEFAULT_ISSUER,
) -> dict[str, Any]:
    """A signed revocation document listing `code_ids` (sorted, deduplicated)."""
    ids = sorted(set(code_ids))
    if not all(isinstance(i, str) and i for i in ids):
        raise ValueError("code ids must be non-empty strings")
    body = {
        "type": REVOCATIONS_TYPE,
        "version": DOCUMENT_VERSION,
        "issuer": issuer,
        "issued_at": _iso(issued_at),
        "revoked": ids,
    }
    return sign_document(body, root_key)


def parse_revocations(doc: Any, root: x509.Certificate) -> RevocationList:
    """Check a revocation document's root signature and return it. Raises TrustListError."""
    root_key = root.public_key()
    if not isinstance(root_key, ec.EllipticCurvePublicKey):
        raise TrustListError("revocations: root key is not an EC key")
    body = verify_document(doc, root_key, REVOCATIONS_TYPE)
    revoked = body.get("revoked")
    if not isinstance(revoked, list) or not all(isinstance(i, str) for i in revoked):
        raise TrustListError("revocations: 'revoked' must be a list of code id strings")
    return RevocationList(
        revoked=frozenset(revoked),
        issued_at=_parse_time(body.get("issued_at"), "revocations issued_at"),
        issuer=str(body.get("issuer", "")),
    )


def load_revocations(path: str | os.PathLike[str], root: x509.Certificate) -> RevocationList:
    """Read and check `revocations.json` against the root certificate. Raises TrustListError."""
    return parse_revocations(_read_json(path, "revocation list"), root)


def write_revocations(paths: PkiPaths, code_ids: Iterable[str], *, issued_at: datetime) -> RevocationList:
    """Re-sign and write `revocations.json` with the root key; return the new list."""
    doc = make_revocations(code_ids, load_ec_private_key(paths.root_key), issued_at=issued_at)
    save_json(paths.revocations, doc)
    return parse_revocations(doc, load_certificate(paths.root_cert))


# ------------------------------------------------------------------------------------------ identities


@dataclass(frozen=True)
class Identities:
    """The root-certified Ed25519 identity keys of the nodes and the coordinator."""

    nodes: dict[str, ed25519.Ed25519PublicKey]
    coordinator: ed25519.Ed25519PublicKey

    def node(self, agency: str) -> ed25519.Ed25519PublicKey:
        """A node's identity key; raises UnknownKeyError for an agency not listed."""
        try:
            return self.nodes[agency]
        except KeyError:
            raise UnknownKeyError(f"no identity key for agency {agency!r}") from None


def make_identities(
    nodes: Mapping[str, ed25519.Ed25519PublicKey], coordinator: ed25519.Ed25519PublicKey,
    root_key: ec.EllipticCurvePrivateKey, *, issued_at: datetime,
) -> dict[str, Any]:
    """A root-signed `{"nodes": {agency: hex}, "coordinator": hex}` document."""
    body = {
        "type": IDENTITIES_TYPE,
        "version": DOCUMENT_VERSION,
        "issued_at": _iso(issued_at),
        "nodes": {_agency(a): _ed_hex(k) for a, k in sorted(nodes.items())},
        "coordinator": _ed_hex(coordinator),
    }
    return sign_document(body, root_key)


def _ed_hex(key: ed25519.Ed25519PublicKey) -> str:
    """Raw Ed25519 public key as hex."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def _ed_from_hex(value: Any, what: str) -> ed25519.Ed25519PublicKey:
    """Ed25519 public key from 64 hex characters, raising TrustListError."""
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
        if len(raw) != 32:
            raise ValueError
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise TrustListError(f"identities: {what} is not a 32-byte hex Ed25519 key") from None


def parse_identities(doc: Any, root: x509.Certificate) -> Identities:
    """Check an identities document's root signature and return the keys. Raises TrustListError."""
    root_key = root.public_key()
    if not isinstance(root_key, ec.EllipticCurvePublicKey):
        raise TrustListError("identities: root key is not an EC key")
    body = verify_document(doc, root_key, IDENTITIES_TYPE)
    nodes = body.get("nodes")
    if not isinstance(nodes, dict):
        raise TrustListError("identities: 'nodes' must be an object")
    return Identities(
        nodes={a: _ed_from_hex(v, f"node {a}") for a, v in nodes.items()},
        coordinator=_ed_from_hex(body.get("coordinator"), "coordinator"),
    )


def load_identities(paths: PkiPaths) -> Identities:
    """Read `identities.json` and check it against the run's root certificate."""
    return parse_identities(_read_json(paths.identities, "identities"), load_certificate(paths.root_cert))


# ------------------------------------------------------------------------------------- load and save


def load_certificate(path: str | os.PathLike[str]) -> x509.Certificate:
    """Read a PEM (or DER) certificate file. Raises TrustListError."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TrustListError(f"certificate {path}: cannot read ({exc.strerror or exc})") from None
    return parse_certificate(data)


def load_private_key(path: str | os.PathLike[str]) -> Any:
    """Read an unencrypted PKCS8 PEM private key. Raises ValueError naming the file."""
    try:
        return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise ValueError(f"private key {path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"private key {path}: not an unencrypted PEM private key ({exc})") from None


def load_ec_private_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePrivateKey:
    """Read a P-256 private key (root, CA, TLS or code-signing key)."""
    key = load_private_key(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"private key {path}: expected an EC key, got {type(key).__name__}")
    return key


def load_identity_key(path: str | os.PathLike[str]) -> ed25519.Ed25519PrivateKey:
    """Read an Ed25519 identity key (node or coordinator)."""
    key = load_private_key(path)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"private key {path}: expected an Ed25519 key, got {type(key).__name__}")
    return key


def load_storage_key(path: str | os.PathLike[str]) -> bytes:
    """Read a node's 32-byte storage key."""
    try:
        key = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"storage key {path}: cannot read ({exc.strerror or exc})") from None
    if len(key) != STORAGE_KEY_BYTES:
        raise ValueError(f"storage key {path}: expected {STORAGE_KEY_BYTES} bytes, got {len(key)}")
    return key


def load_signing_key(paths: PkiPaths) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """The code-signing key and its kid (SHA-256 of the SPKI DER, first 8 bytes)."""
    key = load_ec_private_key(paths.signing_key)
    return key, spki_kid(key.public_key())


def save_json(path: str | os.PathLike[str], doc: Any) -> None:
    """Write a JSON document (indented, sorted keys) atomically."""
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_atomic(Path(path), text.encode("utf-8"))


def write_atomic(path: Path, data: bytes, *, private: bool = False, durable: bool = True) -> None:
    """Write a file atomically (temporary file, fsync, rename); private files get mode 0600.

    `durable=False` skips the fsync, for large files whose digest is checked before they are used again
    (after a crash they may be incomplete, never half-replaced).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:  # a buffered write loops until every byte is written
        fh.write(data)
        fh.flush()
        if durable:
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def _pem_cert(certificate: x509.Certificate) -> bytes:
    """PEM bytes of a certificate."""
    return certificate.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS8 PEM bytes of a private key."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# -------------------------------------------------------------------------------------------- create


def create_pki(
    paths: PkiPaths,
    agencies: Sequence[str],
    *,
    rng: Rng | None = None,
    now: datetime | None = None,
    issuer: str = DEFAULT_ISSUER,
) -> None:
    """Write a run's whole PKI (see `PkiPaths`): CAs, TLS certificates, identity and storage keys, the
    code-signing certificate, and the root-signed identities, trust list and (empty) revocation list.

    With a `Drbg` and a fixed `now` the output is byte-for-byte reproducible. Certificates are valid from
    `now` - 30 days to `now` + 365 days; but when `now` is given (a simulated clock, e.g. a scenario's
    as_of in 2020), the CA and TLS certificates never expire, so the run's mutual TLS, which checks the
    wall clock, keeps working however long after `now` it runs. The code-signing certificate always
    keeps the one-year window.
    """
    rng = default_rng(rng)
    simulated = now is not None
    now = _utc(now or datetime.now(UTC)).replace(microsecond=0)
    signing_validity = {"not_before": now - VALID_BEFORE, "not_after": now + VALID_AFTER}
    validity = {**signing_validity, "not_after": NO_EXPIRY} if simulated else signing_validity
    agencies = [_agency(a) for a in agencies]
    if len(set(agencies)) != len(agencies):
        raise ValueError(f"duplicate agency names in {agencies}")

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
    node_identities = {}
    for agency in agencies:
        node = make(f"node/{agency}", agency + DNS_SUFFIX, nodes_ca, usages=[ExtendedKeyUsageOID.SERVER_AUTH],
                    dns_names=[agency + DNS_SUFFIX, "localhost"], ip_addresses=["127.0.0.1"], **validity)
        identity = ed25519_private_key(rng.child(f"node/{agency}/identity"))
        node_identities[agency] = identity.public_key()
        files[paths.node_cert(agency)] = (_pem_cert(node.certificate), False)
        files[paths.node_key(agency)] = (_pem_key(node.key), True)
        files[paths.node_identity_key(agency)] = (_pem_key(identity), True)
        storage = rng.child(f"node/{agency}/storage").random_bytes(STORAGE_KEY_BYTES)
        files[paths.node_storage_key(agency)] = (storage, True)

    for path, (data, private) in files.items():
        write_atomic(path, data, private=private)
    root_cert = root.certificate
    save_json(paths.identities, make_identities(node_identities, coordinator_identity.public_key(), root.key,
                                                issued_at=now))
    save_json(paths.trustlist, make_trust_list([(signing.certificate, FORMAT_HEALTHPSI)], root_cert, root.key,
                                               issuer=issuer, issued_at=now))
    save_json(paths.revocations, make_revocations([], root.key, issued_at=now, issuer=issuer))
