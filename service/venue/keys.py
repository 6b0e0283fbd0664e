"""The venue agency's QR-signing key and the signed venue QR.

The key belongs to the venue agency, not to the code issuer: an ECDSA P-256 key made on first use in the
agency's own directory (RUN/venues/signing.key, mode 0600), with a certificate signed by the run's root
(RUN/venues/signing.pem) so that anyone holding the root can check a venue QR. In a deterministic simulation
run both derive from the scenario's seed, like the rest of the run's PKI.

A venue QR is `HCV1:` + base45 of a COSE_Sign1 (ES256, `crypto.codes.sign_claims`) over the claims
{1 iss: "healthpsi venues", 2 sub: venue id, 6 iat, "v": {"n": name, "k": kind, "r": region code}}.
"""

from __future__ import annotations

import datetime as dt
import fcntl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crypto import codes
from crypto.drbg import default_rng
from crypto.errors import CodeFormatError, CryptoError, SignatureError
from crypto.pki import (
    NO_EXPIRY,
    VALID_AFTER,
    VALID_BEFORE,
    ec_private_key,
    issue_certificate,
    load_certificate,
    load_ec_private_key,
    spki_kid,
)
from runctx.files import write_atomic
from runctx.pki import PkiPaths
from runctx.scenario import Scenario

PREFIX = "HCV1:"
ISSUER = "healthpsi venues"
CLAIM_SUB = 2
CLAIM_VENUE = "v"
MAX_PAYLOAD_CHARS = 1024


def agency_dir(run: Path) -> Path:
    """RUN/venues/: the venue agency's own state (signing key, register, check-in journal)."""
    return Path(run) / "venues"


class VenueKeyError(RuntimeError):
    """The venue agency's key cannot be made or loaded (no run PKI, or a certificate not the root's)."""


class VenueQrError(ValueError):
    """A scanned text that is not a valid venue QR; `reason` is a short code the pages translate."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Venue:
    """What a venue QR names."""

    venue_id: str
    name: str
    kind: str
    region_code: str


@dataclass(frozen=True)
class VenueKey:
    """The venue agency's signing key, its root-signed certificate and its kid."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def kid(self) -> bytes:
        """SHA-256 of the public key's SPKI DER, first 8 bytes (as the code-signing keys' kids)."""
        return spki_kid(self.key.public_key())

    def sign(self, venue: Venue, issued_at: dt.datetime) -> str:
        """The venue's QR payload, signed now."""
        claims: dict[Any, Any] = {
            codes.CLAIM_ISS: ISSUER,
            CLAIM_SUB: venue.venue_id,
            codes.CLAIM_IAT: int(issued_at.timestamp()),
            CLAIM_VENUE: {"n": venue.name, "k": venue.kind, "r": venue.region_code},
        }
        return PREFIX + codes.b45encode(codes.sign_claims(claims, self.key, self.kid))

    def read(self, payload: str) -> Venue:
        """The venue a scanned QR names, once its signature is checked against this key; VenueQrError with
        the reason otherwise (not a venue code, signed by another key, altered)."""
        text = payload.strip()
        if len(text) > MAX_PAYLOAD_CHARS:
            raise VenueQrError("not-a-venue-code", f"{len(text)} characters: too long for a venue code")
        if text.startswith((codes.HCP_PREFIX, codes.DCC_PREFIX)):
            raise VenueQrError("health-code", "this is a health code, not a venue code")
        if not text.startswith(PREFIX):
            raise VenueQrError("not-a-venue-code", f"a venue code starts with {PREFIX}")
        try:
            cose = codes.decode_cose(codes.b45decode(text[len(PREFIX) :]))
            if cose.protected.get(codes.HEADER_ALG) != codes.ALG_ES256:
                raise VenueQrError("not-a-venue-code", "a venue code is signed ES256 in its protected header")
            if cose.kid != self.kid:
                raise VenueQrError("unknown-key", f"signed by key {cose.kid.hex()}, not the venue agency's")
            codes.verify_signature(cose, self.key.public_key())
            claims = codes.decode_claims(cose.payload)
        except SignatureError as exc:
            raise VenueQrError("bad-signature", f"the signature does not verify: {exc}") from None
        except (CodeFormatError, CryptoError) as exc:
            raise VenueQrError("not-a-venue-code", str(exc)) from None
        venue = claims.get(CLAIM_VENUE)
        sub = claims.get(CLAIM_SUB)
        if claims.get(codes.CLAIM_ISS) != ISSUER or not isinstance(sub, str) or not isinstance(venue, dict):
            raise VenueQrError("not-a-venue-code", "the signed claims do not name a venue")
        return Venue(sub, str(venue.get("n", "")), str(venue.get("k", "")), str(venue.get("r", "")))


def venue_key(run: Path) -> VenueKey:
    """The venue agency's key, made on first use (under a lock: several workers may ask at once) and
    certified by the run's root; VenueKeyError when the run has no PKI or the certificate does not hold."""
    directory = agency_dir(run)
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / "signing.key", directory / "signing.pem"
    paths = PkiPaths(run)
    try:
        root = load_certificate(paths.root_cert)
    except (OSError, ValueError, CryptoError) as exc:
        raise VenueKeyError(f"no run root certificate ({exc}); create it: healthpsi keys init") from None
    with (directory / ".signing.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cert_path.exists():
            _make(run, paths, key_path, cert_path, root)
    certificate = load_certificate(cert_path)
    try:
        certificate.verify_directly_issued_by(root)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise VenueKeyError(f"{cert_path} is not signed by the run's root ({type(exc).__name__})") from None
    key = load_ec_private_key(key_path)
    if certificate.public_key() != key.public_key():
        raise VenueKeyError(f"{cert_path} certifies another key than {key_path}")
    return VenueKey(key, certificate)


def _make(run: Path, paths: PkiPaths, key_path: Path, cert_path: Path, root: x509.Certificate) -> None:
    """A new key and its root-signed certificate (deterministic from the seed in a deterministic run)."""
    scenario = Scenario.read(run)
    rng = default_rng(None if scenario is None else scenario.rng("venues/signing"))
    simulated = scenario is not None and scenario.seed is not None
    now = (
        dt.datetime.combine(scenario.as_of, dt.time(), dt.UTC)
        if simulated and scenario is not None
        else dt.datetime.now(dt.UTC).replace(microsecond=0)
    )
    try:
        root_key = load_ec_private_key(paths.root_key)
    except (OSError, ValueError, CryptoError) as exc:
        raise VenueKeyError(f"cannot certify the venue key: no run root key ({exc})") from None
    key = ec_private_key(rng.child("key"))
    certificate = issue_certificate(
        "venues venue-code signing",
        key.public_key(),
        root_key,
        root,
        rng=rng.child("certificate"),
        not_before=now - VALID_BEFORE,
        not_after=NO_EXPIRY if simulated else now + VALID_AFTER,
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(key_path, pem, private=True)
    write_atomic(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
