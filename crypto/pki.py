"""PKI primitives and signed documents: certificates and key ids, the root-signed trust list, revocation
list and identity list that verifiers, nodes and auditors load, and key files read back. A run's file layout
and its bootstrap (`PkiPaths`, `create_pki`) live in `runctx.pki`.

Everything is deterministic when a `Drbg` is given (keys drawn from it, ECDSA signatures per RFC 6979), so
`keys init` on the same scenario writes the same bytes. The three JSON documents (`trustlist.json`,
`revocations.json`, `identities.json`) carry a `type`, their content and a `signature` object
`{"alg": "ES256", "value": base64(r || s)}` over the canonical JSON (sorted keys, no whitespace, UTF-8) of the
document without its `signature` member: the national root signs the trust list (every issuing authority's
code-signing keys) and the identities; each issuing authority signs its own revocation list with its
code-signing key. Both lists carry `issued_at` and `max_age` and are refused when stale; verifiers pin the
root by the SHA-256 fingerprint of its DER (`root_fingerprint`).
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
from cryptography.x509.oid import NameOID

from crypto.drbg import Rng, default_rng
from crypto.errors import TrustListError, UnknownKeyError

FORMAT_HEALTHPSI = "healthpsi"
FORMAT_DCC = "eu-dcc"
FORMATS = (FORMAT_HEALTHPSI, FORMAT_DCC)
DEFAULT_ISSUER = "411200"
"""The issuing authority when none is named: Sanmenxia's GB/T 2260 region code, the simulated city's."""
NATIONAL_ROOT = "healthpsi national root"
"""Who signs the one trust list of every issuing authority (its `issuer` member)."""
TRUSTLIST_MAX_AGE = timedelta(days=30)
"""A trust list is refused this long after it was issued..."""
REVOCATIONS_MAX_AGE = timedelta(days=2)
"""...and a revocation list this long (codes live 24 h; a daily epoch re-signs the list)."""
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
LIST_VERSION = 2
"""Trust and revocation lists: version 2 names each key's issuer and carries max_age."""
_REGION_RE = re.compile(r"[1-9][0-9]{5}")

_AGENCY_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def region_code(region: str) -> str:
    """Check that an issuer is a six-digit GB/T 2260 region code (e.g. "411200", Sanmenxia)."""
    if not isinstance(region, str) or not _REGION_RE.fullmatch(region):
        raise ValueError(f"issuer {region!r}: expected a six-digit GB/T 2260 region code such as 411200")
    return region


def root_fingerprint(certificate: x509.Certificate) -> str:
    """What a verifier pins: SHA-256 over the root certificate's DER, lowercase hex."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def agency_name(agency: str) -> str:
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


def verify_document(
    doc: Any, public_key: ec.EllipticCurvePublicKey, doc_type: str, version: int = DOCUMENT_VERSION,
    signer: str = "the root key",
) -> dict[str, Any]:
    """Check a signed document's type, version and signature by `public_key`; return its body. Raises
    TrustListError."""
    if not isinstance(doc, dict):
        raise TrustListError(f"{doc_type}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("type") != doc_type:
        raise TrustListError(f"expected a {doc_type} document, got type {doc.get('type')!r}")
    if doc.get("version") != version:
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
        raise TrustListError(f"{doc_type}: signature does not verify against {signer}") from None
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
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc(moment: datetime) -> datetime:
    """Aware UTC datetime; naive datetimes are taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_time(value: Any, what: str) -> datetime:
    """Parse an ISO 8601 time from a document, raising TrustListError."""
    if not isinstance(value, str):
        raise TrustListError(f"{what}: expected an ISO time string")
    try:
        return utc(datetime.fromisoformat(value))
    except ValueError:
        raise TrustListError(f"{what}: not an ISO time: {value!r}") from None


def read_json(path: str | os.PathLike[str], what: str) -> Any:
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


def _max_age(value: Any, what: str) -> timedelta:
    """A list's `max_age`: a positive whole number of seconds. Raises TrustListError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TrustListError(f"{what} max_age: expected a positive number of seconds, got {value!r}")
    return timedelta(seconds=value)


def check_fresh(what: str, issued_at: datetime, max_age: timedelta, at: datetime) -> None:
    """Refuse a list checked after `issued_at + max_age` (a stale or rolled-back list). Raises
    TrustListError with the dates."""
    at = utc(at)
    if at > issued_at + max_age:
        raise TrustListError(
            f"{what} is stale: issued {_iso(issued_at)}, max_age {int(max_age.total_seconds())} s "
            f"(until {_iso(issued_at + max_age)}), checked at {_iso(at)}; fetch a current one"
        )


@dataclass(frozen=True)
class TrustedKey:
    """A code-signing certificate a verifier trusts, under the key id codes of its format carry, and the
    issuing authority (GB/T 2260 region code) it signs for ("" when not named: EU DCC, `--cert`)."""

    kid: bytes
    certificate: x509.Certificate
    format: str
    issuer: str = ""

    @property
    def public_key(self) -> PublicKey:
        """The certificate's public key."""
        return _public_key(self.certificate)


@dataclass(frozen=True)
class TrustList:
    """The keys a verifier accepts, looked up by (kid, format); the root that signed the list, if any, and
    how long the list may be used (`issued_at + max_age`)."""

    keys: tuple[TrustedKey, ...]
    issuer: str = ""
    root: x509.Certificate | None = None
    issued_at: datetime | None = None
    max_age: timedelta | None = None
    _index: dict[tuple[bytes, str], TrustedKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {(k.kid, k.format): k for k in self.keys})

    @property
    def issuers(self) -> frozenset[str]:
        """The issuing authorities (region codes) the list names."""
        return frozenset(k.issuer for k in self.keys if k.issuer)

    def find(self, kid: bytes, fmt: str) -> TrustedKey:
        """The trusted key with this kid for codes of format `fmt`; raises UnknownKeyError."""
        try:
            return self._index[(kid, fmt)]
        except KeyError:
            raise UnknownKeyError(f"kid {kid.hex()} is not in the trust list for {fmt} codes") from None

    def check_fresh(self, at: datetime) -> None:
        """Refuse the list when it is used after `issued_at + max_age` (TrustListError)."""
        if self.issued_at is not None and self.max_age is not None:
            check_fresh("trust list", self.issued_at, self.max_age, at)

    @classmethod
    def from_certificates(cls, certificates: Iterable[x509.Certificate]) -> TrustList:
        """Trust certificates given directly (`--cert`): each under its healthpsi and its EU DCC key id."""
        keys = tuple(TrustedKey(kid_for(c, fmt), c, fmt) for c in certificates for fmt in FORMATS)
        return cls(keys=keys)


def make_trust_list(
    entries: Sequence[tuple[x509.Certificate, str, str]],
    root_cert: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    *,
    issuer: str = NATIONAL_ROOT,
    issued_at: datetime,
    max_age: timedelta = TRUSTLIST_MAX_AGE,
) -> dict[str, Any]:
    """A signed trust-list document for (certificate, format, issuer region) entries (region "" for EU DCC
    signers); the root certificate rides along, but verifiers pin its fingerprint."""
    keys = []
    for cert, fmt, region in entries:
        entry = {"kid": base64.b64encode(kid_for(cert, fmt)).decode("ascii"), "certificate": _der_b64(cert),
                 "format": fmt}
        if fmt == FORMAT_HEALTHPSI:
            entry["issuer"] = region_code(region)
        keys.append(entry)
    body = {
        "type": TRUSTLIST_TYPE,
        "version": LIST_VERSION,
        "issuer": issuer,
        "issued_at": _iso(issued_at),
        "max_age": int(max_age.total_seconds()),
        "root": _der_b64(root_cert),
        "keys": keys,
    }
    return sign_document(body, root_key)


def parse_trust_list(
    doc: Any, root: x509.Certificate | None = None, fingerprint: str | None = None
) -> TrustList:
    """Check a trust-list document against a pinned root (its certificate, or the SHA-256 `fingerprint` of its
    DER) and return it; with neither pin the list only proves it is self-consistent.

    Each healthpsi key must name its issuer (a region code) and be a certificate issued by the root, and each
    kid must be the one its format derives from the certificate. Raises TrustListError.
    """
    if not isinstance(doc, dict) or doc.get("type") != TRUSTLIST_TYPE:
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise TrustListError(f"expected a {TRUSTLIST_TYPE} document, got {got!r}")
    listed_root = parse_certificate(_b64(doc.get("root"), "trust list root"))
    if root is not None and listed_root != root:
        raise TrustListError("trust list: its root certificate is not the pinned root")
    if fingerprint is not None and root_fingerprint(listed_root) != fingerprint.strip().lower():
        raise TrustListError(f"trust list: its root's fingerprint {root_fingerprint(listed_root)} is not the "
                             f"pinned {fingerprint.strip().lower()} (a substituted list)")
    root_key = listed_root.public_key()
    if not isinstance(root_key, ec.EllipticCurvePublicKey):
        raise TrustListError("trust list: root key is not an EC key")
    body = verify_document(doc, root_key, TRUSTLIST_TYPE, LIST_VERSION)
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
        region = ""
        if fmt == FORMAT_HEALTHPSI:
            try:
                region = region_code(entry.get("issuer"))  # type: ignore[arg-type]
            except ValueError as exc:
                raise TrustListError(f"trust list key {i}: {exc}") from None
            try:
                cert.verify_directly_issued_by(listed_root)
            except (ValueError, TypeError, InvalidSignature):
                raise TrustListError(f"trust list key {i}: certificate is not issued by the root") from None
        keys.append(TrustedKey(kid, cert, fmt, region))
    return TrustList(
        keys=tuple(keys), issuer=body["issuer"], root=listed_root,
        issued_at=_parse_time(body.get("issued_at"), "trust list issued_at"),
        max_age=_max_age(body.get("max_age"), "trust list"),
    )


def load_trust_list(
    path: str | os.PathLike[str], root: x509.Certificate | None = None, fingerprint: str | None = None
) -> TrustList:
    """Read and check `trustlist.json` (against a pinned root or root fingerprint). Raises TrustListError."""
    return parse_trust_list(read_json(path, "trust list"), root, fingerprint)


# ----------------------------------------------------------------------------------- revocation list


@dataclass(frozen=True)
class RevocationList:
    """Code ids revoked by one issuing authority (region code), as of `issued_at`, usable for `max_age`."""

    revoked: frozenset[str]
    issued_at: datetime
    issuer: str = DEFAULT_ISSUER
    max_age: timedelta = REVOCATIONS_MAX_AGE

    def is_revoked(self, code_id: str) -> bool:
        """Whether this code id is on the list."""
        return code_id in self.revoked

    def check_fresh(self, at: datetime) -> None:
        """Refuse the list when it is used after `issued_at + max_age` (TrustListError)."""
        check_fresh(f"revocation list of issuer {self.issuer}", self.issued_at, self.max_age, at)


def make_revocations(
    code_ids: Iterable[str], signing_key: ec.EllipticCurvePrivateKey, *, issued_at: datetime,
    issuer: str = DEFAULT_ISSUER, max_age: timedelta = REVOCATIONS_MAX_AGE,
) -> dict[str, Any]:
    """A revocation document listing `code_ids` (sorted, deduplicated), signed by the issuer's own
    code-signing key, whose healthpsi kid it names."""
    ids = sorted(set(code_ids))
    if not all(isinstance(i, str) and i for i in ids):
        raise ValueError("code ids must be non-empty strings")
    body = {
        "type": REVOCATIONS_TYPE,
        "version": LIST_VERSION,
        "issuer": region_code(issuer),
        "kid": base64.b64encode(spki_kid(signing_key.public_key())).decode("ascii"),
        "issued_at": _iso(issued_at),
        "max_age": int(max_age.total_seconds()),
        "revoked": ids,
    }
    return sign_document(body, signing_key)


def parse_revocations(doc: Any, trust: TrustList) -> RevocationList:
    """Check a revocation document: signed by a key of the trust list that belongs to the issuer the document
    names. Raises TrustListError."""
    if not isinstance(doc, dict) or doc.get("type") != REVOCATIONS_TYPE:
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise TrustListError(f"expected a {REVOCATIONS_TYPE} document, got {got!r}")
    issuer, kid = doc.get("issuer"), _b64(doc.get("kid"), "revocations kid")
    try:
        key = trust.find(kid, FORMAT_HEALTHPSI)
    except UnknownKeyError:
        raise TrustListError(f"revocations of issuer {issuer!r}: signed by kid {kid.hex()}, which is not in "
                             "the trust list") from None
    if key.issuer != issuer:
        raise TrustListError(f"revocations name issuer {issuer!r} but are signed by the key of issuer "
                             f"{key.issuer!r}")
    public_key = key.public_key
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise TrustListError("revocations: the issuer's key is not an EC key")
    body = verify_document(doc, public_key, REVOCATIONS_TYPE, LIST_VERSION, f"the key of issuer {issuer}")
    revoked = body.get("revoked")
    if not isinstance(revoked, list) or not all(isinstance(i, str) for i in revoked):
        raise TrustListError("revocations: 'revoked' must be a list of code id strings")
    return RevocationList(
        revoked=frozenset(revoked),
        issued_at=_parse_time(body.get("issued_at"), "revocations issued_at"),
        issuer=key.issuer,
        max_age=_max_age(body.get("max_age"), "revocations"),
    )


def load_revocations(path: str | os.PathLike[str], trust: TrustList) -> RevocationList:
    """Read and check a `revocations.json` against the trust list. Raises TrustListError."""
    return parse_revocations(read_json(path, "revocation list"), trust)


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
        "nodes": {agency_name(a): _ed_hex(k) for a, k in sorted(nodes.items())},
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
