"""The venue agency's QR-signing key and the signed venue QR.

The key belongs to the venue agency, not to the code issuer: an ECDSA P-256 key that `healthpsi keys init`
makes with the run's PKI (RUN/pki/venues/signing.key, mode 0600), with a certificate signed by the run's root
(RUN/pki/venues/signing.pem) so that anyone holding the root can check a venue QR. The service only reads
them; it never touches the root's key.

A venue QR is `HCV1:` + base45 of a COSE_Sign1 (ES256, `crypto.codes.sign_claims`) over the claims
{1 iss: "healthpsi venues", 2 sub: venue id, 6 iat, "v": {"n": name, "k": kind, "r": region code}}.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from crypto import codes
from crypto.errors import CodeFormatError, CryptoError, SignatureError
from crypto.pki import (
    load_certificate,
    load_ec_private_key,
    spki_kid,
)
from runctx.pki import PkiPaths

PREFIX = "HCV1:"
ISSUER = "healthpsi venues"
CLAIM_SUB = 2
CLAIM_VENUE = "v"
MAX_PAYLOAD_CHARS = 1024


def agency_dir(run: Path) -> Path:
    """RUN/venues/: the venue agency's own state (register of venues, check-in journal)."""
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
    """The venue agency's key and its root-signed certificate (made by `healthpsi keys init`); VenueKeyError
    when the run has no PKI or the certificate does not hold."""
    paths = PkiPaths(run)
    try:
        root = load_certificate(paths.root_cert)
        certificate = load_certificate(paths.venue_signing_cert)
        key = load_ec_private_key(paths.venue_signing_key)
    except (OSError, ValueError, CryptoError) as exc:
        raise VenueKeyError(
            f"no venue signing key in the run's PKI ({exc}); create it: healthpsi keys init"
        ) from None
    try:
        certificate.verify_directly_issued_by(root)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise VenueKeyError(
            f"{paths.venue_signing_cert} is not signed by the run's root ({type(exc).__name__})"
        ) from None
    if certificate.public_key() != key.public_key():
        raise VenueKeyError(
            f"{paths.venue_signing_cert} certifies another key than {paths.venue_signing_key}"
        )
    return VenueKey(key, certificate)
