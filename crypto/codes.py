"""Signed health codes: claims -> CBOR -> COSE_Sign1 (ES256) -> zlib -> base45 -> "HCP1:".

The same shape as the EU Digital COVID Certificate, whose "HC1:" payloads the verifier also accepts
(ES256 and PS256, kid in the protected or the unprotected header, the protected one winning). Each
decoding layer is a public function that raises `CodeFormatError` naming what is wrong; verification
raises `UnknownKeyError`, `SignatureError`, `IssuerError`, `ExpiredError` or `RevokedError`.
`check_payload` turns those verdicts into a report for the command line.

Claims (a CBOR map, CWT keys): 1 iss (the issuing authority's GB/T 2260 region code, which must be the
issuer the trust list names for the signing key), 4 exp, 6 iat (integer seconds since the epoch, UTC),
and -260 {1: hcp}
where hcp = {"id": code id, "c": colour, "pv": policy version, "n": masked name, "sid": masked subject id,
and optionally "vd": the ISO date until which the colour holds}. The issuer builds them
(`coordinator.claims`); QR images are made and read in `coordinator.qr`.
"""

from __future__ import annotations

import base64
import functools
import io
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import base45
import cbor2
import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from crypto.errors import (
    CodeFormatError,
    CryptoError,
    ExpiredError,
    IssuerError,
    RevokedError,
    SignatureError,
    UnknownKeyError,
)
from crypto.pki import FORMAT_DCC, FORMAT_HEALTHPSI, PublicKey, RevocationList, TrustList, utc

Revocations = RevocationList | Iterable[RevocationList] | None
"""The revocation lists a verifier holds: one, several (one per issuing authority) or none."""

HCP_PREFIX = "HCP1:"
DCC_PREFIX = "HC1:"
PREFIXES = {HCP_PREFIX: FORMAT_HEALTHPSI, DCC_PREFIX: FORMAT_DCC}
_ES256_CURVES = {
    FORMAT_HEALTHPSI: {"secp256r1": "P-256"},
    FORMAT_DCC: {"secp256r1": "P-256", "secp384r1": "P-384"},
}
"""The curves an ES256 key may be on, per format (code name in `cryptography` → its usual name)."""

CLAIM_ISS = 1
CLAIM_EXP = 4
CLAIM_IAT = 6
CLAIM_HCERT = -260
HCERT_ENTRY = 1
CLAIM_NAMES = {CLAIM_ISS: "iss", CLAIM_EXP: "exp", CLAIM_IAT: "iat", CLAIM_HCERT: "hcert"}

HEADER_ALG = 1
HEADER_KID = 4
ALG_ES256 = -7
ALG_PS256 = -37
ALGS = {ALG_ES256: "ES256", ALG_PS256: "PS256"}
TAG_COSE_SIGN1 = 18
TAG_CWT = 61

COLOURS = ("green", "yellow", "red")
CODE_VALIDITY = timedelta(hours=24)
MAX_PAYLOAD_CHARS = 8192
"""Longest payload text accepted (a version-40 QR code holds 4296 alphanumeric characters)."""
MAX_COSE_BYTES = 65536
"""Largest decompressed COSE message accepted (guards against decompression bombs)."""

_P256_BYTES = 32
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
"""The order n of the P-256 group (SEC 2); a low-S signature has s ≤ n / 2."""
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


# ------------------------------------------------------------------------------------ decoding layers


def unprefix(payload: str) -> tuple[str, str]:
    """Split a payload into its format ("healthpsi" for "HCP1:", "eu-dcc" for "HC1:") and base45 text."""
    if not isinstance(payload, str):
        raise CodeFormatError(f"payload: expected text, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_CHARS:
        raise CodeFormatError(f"payload: {len(payload)} characters, over the limit of {MAX_PAYLOAD_CHARS}")
    for prefix, fmt in PREFIXES.items():
        if payload.startswith(prefix):
            return fmt, payload[len(prefix):]
    head = payload.split(":", 1)[0][:8] + ":" if ":" in payload[:9] else "no prefix"
    raise CodeFormatError(f"payload prefix: expected {HCP_PREFIX!r} or {DCC_PREFIX!r}, got {head!r}")


def b45decode(text: str) -> bytes:
    """Decode base45 (RFC 9285) text; CodeFormatError on a character outside the alphabet or a bad length."""
    if not isinstance(text, str):
        raise CodeFormatError(f"base45: expected text, got {type(text).__name__}")
    if "\n" in text:
        raise CodeFormatError("base45: line break inside the encoded text")
    try:
        return base45.b45decode(text)
    except (ValueError, TypeError):
        raise CodeFormatError("base45: not valid base45 (character outside the alphabet, value out of range, "
                              "or a dangling character)") from None


_B45_ALPHABET = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


@functools.cache
def _b45_pairs() -> np.ndarray:
    """The three base45 characters of every big-endian byte pair (65,536 × 3 bytes, built once)."""
    n = np.arange(1 << 16)
    alphabet = np.frombuffer(_B45_ALPHABET, np.uint8)
    return np.stack([alphabet[n % 45], alphabet[n // 45 % 45], alphabet[n // 2025]], axis=1)


def b45encode(data: bytes) -> str:
    """Encode bytes as base45 text (RFC 9285): each big-endian byte pair's three characters come from a
    table of all 65,536 pairs (a trailing odd byte gives the first two characters of its row)."""
    table = _b45_pairs()
    data = bytes(data)
    text = table[np.frombuffer(data, ">u2", count=len(data) // 2)].tobytes()
    if len(data) & 1:
        text += table[data[-1], :2].tobytes()
    return text.decode("ascii")


def decompress(data: bytes) -> bytes:
    """Inflate zlib data; raise CodeFormatError if it is not complete, valid zlib or inflates too far."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_COSE_BYTES)
    except zlib.error as exc:
        raise CodeFormatError(f"zlib: not valid compressed data ({exc})") from None
    if inflater.unconsumed_tail:
        raise CodeFormatError(f"zlib: inflates to more than {MAX_COSE_BYTES} bytes")
    if not inflater.eof:
        raise CodeFormatError("zlib: compressed data is truncated")
    if inflater.unused_data:
        raise CodeFormatError(f"zlib: {len(inflater.unused_data)} bytes of trailing data")
    return out


def cbor_loads(data: bytes, what: str) -> Any:
    """Decode exactly one CBOR item from `data`; anything malformed or trailing raises CodeFormatError."""
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises many types on hostile input; all mean "not CBOR"
        raise CodeFormatError(f"{what}: not valid CBOR ({type(exc).__name__}: {exc})") from None
    if stream.tell() != len(data):
        raise CodeFormatError(f"{what}: {len(data) - stream.tell()} bytes of trailing data after the item")
    return item


@dataclass(frozen=True)
class CoseSign1:
    """A decoded COSE_Sign1 message (RFC 9052): headers, payload and signature."""

    protected_bytes: bytes
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes

    @property
    def alg(self) -> int:
        """The signature algorithm: the protected header's, else the unprotected header's."""
        alg = self.protected.get(HEADER_ALG, self.unprotected.get(HEADER_ALG))
        if not isinstance(alg, int) or isinstance(alg, bool):
            raise CodeFormatError("COSE: no integer alg (1) in the protected or the unprotected header")
        return alg

    @property
    def kid(self) -> bytes:
        """The key id: the protected header's, else the unprotected header's."""
        kid = self.protected.get(HEADER_KID, self.unprotected.get(HEADER_KID))
        if not isinstance(kid, bytes):
            raise CodeFormatError("COSE: no kid (4) byte string in the protected or the unprotected header")
        return kid

    def to_be_signed(self) -> bytes:
        """The Sig_structure bytes: ["Signature1", protected, external_aad = b"", payload]."""
        return sig_structure(self.protected_bytes, self.payload)

    def encode(self) -> bytes:
        """The tagged COSE_Sign1 encoding."""
        body = [self.protected_bytes, self.unprotected, self.payload, self.signature]
        return cbor2.dumps(cbor2.CBORTag(TAG_COSE_SIGN1, body), canonical=True)


def _bstr(data: bytes) -> bytes:
    """A CBOR byte string: the head (major type 2, the length in its shortest form) and the bytes."""
    n = len(data)
    if n < 24:
        return bytes([0x40 | n]) + data
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([0x40 | info]) + n.to_bytes(size, "big") + data
    raise ValueError(f"byte string of {n} bytes is too long for CBOR")  # pragma: no cover


_SIG_STRUCTURE_HEAD = bytes([0x84]) + cbor2.dumps("Signature1")
_SIGN1_HEAD = cbor2.dumps(cbor2.CBORTag(TAG_COSE_SIGN1, None))[:-1] + bytes([0x84])
_EMPTY_BSTR, _EMPTY_MAP = bytes([0x40]), bytes([0xA0])


def sig_structure(protected_bytes: bytes, payload: bytes) -> bytes:
    """The COSE Sig_structure ["Signature1", protected, b"", payload] in CBOR, built directly (no
    encoder pass: it is the same bytes on every path, signing and verifying)."""
    return _SIG_STRUCTURE_HEAD + _bstr(protected_bytes) + _EMPTY_BSTR + _bstr(payload)


def decode_cose(data: bytes) -> CoseSign1:
    """Parse a COSE_Sign1 message (tag 18 optional, inside an optional CWT tag 61); raises CodeFormatError."""
    item = cbor_loads(data, "COSE")
    if isinstance(item, cbor2.CBORTag) and item.tag == TAG_CWT:
        item = item.value
    if isinstance(item, cbor2.CBORTag):
        if item.tag != TAG_COSE_SIGN1:
            raise CodeFormatError(f"COSE: tag {item.tag} is not COSE_Sign1 ({TAG_COSE_SIGN1})")
        item = item.value
    if not isinstance(item, list | tuple) or len(item) != 4:
        raise CodeFormatError("COSE: COSE_Sign1 must be an array of 4 items")
    protected_bytes, unprotected, payload, signature = item
    if not isinstance(protected_bytes, bytes):
        raise CodeFormatError("COSE: protected header must be a byte string")
    if not isinstance(unprotected, Mapping):
        raise CodeFormatError("COSE: unprotected header must be a map")
    if not isinstance(payload, bytes):
        raise CodeFormatError("COSE: payload must be a byte string (detached payloads are not supported)")
    if not isinstance(signature, bytes):
        raise CodeFormatError("COSE: signature must be a byte string")
    protected = cbor_loads(protected_bytes, "COSE protected header") if protected_bytes else {}
    if not isinstance(protected, Mapping):
        raise CodeFormatError("COSE: protected header must encode a map")
    return CoseSign1(protected_bytes, dict(protected), dict(unprotected), payload, signature)


def decode_claims(payload: bytes) -> dict[Any, Any]:
    """The CWT claims map of a COSE payload; raises CodeFormatError unless it is a CBOR map."""
    claims = cbor_loads(payload, "claims")
    if not isinstance(claims, Mapping):
        raise CodeFormatError(f"claims: expected a CBOR map, got {type(claims).__name__}")
    return dict(claims)


@dataclass(frozen=True)
class DecodedCode:
    """A payload taken apart down to its COSE message (nothing verified yet)."""

    format: str
    cose: CoseSign1


def decode_payload(payload: str) -> DecodedCode:
    """Unprefix, base45-decode, inflate and parse a payload; CodeFormatError names the layer that failed."""
    fmt, text = unprefix(payload)
    return DecodedCode(fmt, decode_cose(decompress(b45decode(text))))


# --------------------------------------------------------------------------------------------- signing


def issue_code(claims: Mapping[Any, Any], key: ec.EllipticCurvePrivateKey, kid: bytes) -> str:
    """Sign `claims` as an "HCP1:" payload: canonical CBOR, COSE_Sign1 ES256 (deterministic), zlib (stored),
    base45."""
    # zlib as the format asks, in stored blocks (level 0): signed masked claims do not compress (level 9 gave
    # 232 bytes from 231, the QR stays the same version) and deflating took a quarter of the issuing time.
    return HCP_PREFIX + b45encode(zlib.compress(sign_claims(claims, key, kid), 0))


def sign_claims(claims: Mapping[Any, Any], key: ec.EllipticCurvePrivateKey, kid: bytes) -> bytes:
    """`claims` as canonical CBOR in a tagged COSE_Sign1 ES256 message (deterministic, low-S) under `kid`."""
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise TypeError("sign_claims: the signing key must be an ECDSA P-256 private key")
    if not isinstance(kid, bytes) or not kid:
        raise ValueError("sign_claims: kid must be a non-empty byte string")
    protected = _es256_protected(kid)
    payload = cbor2.dumps(dict(claims), canonical=True)
    der = key.sign(sig_structure(protected, payload), _ES256_DETERMINISTIC)
    r, s = decode_dss_signature(der)
    s = min(s, P256_ORDER - s)  # low-S form: verifiers refuse the malleable high-S twin
    signature = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
    # the tagged COSE_Sign1 [protected, {}, payload, signature], as CoseSign1.encode writes it
    return _SIGN1_HEAD + _bstr(protected) + _EMPTY_MAP + _bstr(payload) + _bstr(signature)


_ES256_DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


@functools.lru_cache(maxsize=64)
def _es256_protected(kid: bytes) -> bytes:
    """The protected header of an ES256 code signed under `kid` (canonical CBOR)."""
    return cbor2.dumps({HEADER_ALG: ALG_ES256, HEADER_KID: kid}, canonical=True)


def verify_signature(cose: CoseSign1, public_key: PublicKey, fmt: str = FORMAT_HEALTHPSI) -> None:
    """Check a COSE_Sign1 signature; raises SignatureError.

    healthpsi codes: ES256 with a P-256 key and a low-S signature only. EU DCCs (`fmt` eu-dcc): ES256 with a
    P-256 or a P-384 key (RFC 8152 does not bind ES256 to a curve and EU verifiers accept both), or PS256
    with an RSA key.
    """
    alg = cose.alg
    data = cose.to_be_signed()
    try:
        if alg == ALG_ES256:
            curves = _ES256_CURVES[fmt]
            if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in curves:
                raise SignatureError(f"alg ES256 needs a {' or '.join(curves.values())} key; the trusted key "
                                     "is not one")
            size = (public_key.curve.key_size + 7) // 8
            if len(cose.signature) != 2 * size:
                raise SignatureError(f"ES256 signature is {len(cose.signature)} bytes, expected {2 * size}")
            r = int.from_bytes(cose.signature[:size], "big")
            s = int.from_bytes(cose.signature[size:], "big")
            if fmt == FORMAT_HEALTHPSI and s > P256_ORDER // 2:
                raise SignatureError("ES256 signature is high-S (malleable); healthpsi codes are low-S")
            public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        elif alg == ALG_PS256:
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise SignatureError("alg PS256 needs an RSA key; the trusted key is not one")
            public_key.verify(cose.signature, data, _PSS, hashes.SHA256())
        else:
            raise SignatureError(f"unsupported COSE alg {alg} (supported: ES256 -7, PS256 -37)")
    except InvalidSignature:
        raise SignatureError(f"{ALGS[alg]} signature does not verify (kid {cose.kid.hex()})") from None


def verify_cose(cose: CoseSign1, trust: TrustList, fmt: str) -> None:
    """Find the message's kid in the trust list for `fmt` and check the signature.

    healthpsi codes must carry ES256 in the protected header; EU DCCs may put alg and kid in the unprotected
    header (an unprotected alg still has to match the trusted key's type). Raises UnknownKeyError,
    SignatureError or CodeFormatError.
    """
    alg = cose.alg  # CodeFormatError when there is none: malformed before any key is looked up
    if alg not in ALGS:
        raise SignatureError(f"unsupported COSE alg {alg} (supported: ES256 -7, PS256 -37)")
    if fmt == FORMAT_HEALTHPSI and cose.protected.get(HEADER_ALG) != ALG_ES256:
        raise SignatureError("healthpsi codes carry ES256 (-7) in the protected header; this one has "
                             f"{cose.protected.get(HEADER_ALG)!r}")
    verify_signature(cose, trust.find(cose.kid, fmt).public_key, fmt)


# ----------------------------------------------------------------------------------------- claims


def _epoch(claims: Mapping[Any, Any], key: int) -> datetime | None:
    """A numeric date claim as a UTC datetime (None when absent); CodeFormatError if not a number."""
    if key not in claims:
        return None
    value = claims[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodeFormatError(f"claims: {CLAIM_NAMES[key]} ({key}) must be a number of seconds")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise CodeFormatError(f"claims: {CLAIM_NAMES[key]} ({key}) is out of range: {value}") from None


def check_time(claims: Mapping[Any, Any], at: datetime) -> None:
    """Raise ExpiredError unless iat <= at <= exp (exp required; CodeFormatError if missing or malformed)."""
    at = utc(at)
    issued, expires = _epoch(claims, CLAIM_IAT), _epoch(claims, CLAIM_EXP)
    if expires is None:
        raise CodeFormatError("claims: no expiry (exp, 4)")
    if issued is not None and at < issued:
        raise ExpiredError(f"not yet valid: issued at {issued.isoformat()}, checked at {at.isoformat()}")
    if at > expires:
        raise ExpiredError(f"expired at {expires.isoformat()}, checked at {at.isoformat()}")


def health_certificate(claims: Mapping[Any, Any], fmt: str) -> dict[Any, Any]:
    """The certificate map inside claim -260/1 (healthpsi: hcp with "id" and "c"; eu-dcc: the DGC)."""
    hcert = claims.get(CLAIM_HCERT)
    entry = hcert.get(HCERT_ENTRY) if isinstance(hcert, Mapping) else None
    if not isinstance(entry, Mapping):
        raise CodeFormatError("claims: no health certificate map at -260/1")
    if fmt == FORMAT_HEALTHPSI and (not isinstance(entry.get("id"), str) or entry.get("c") not in COLOURS):
        raise CodeFormatError(f"claims: healthpsi certificate needs a string id and a colour in {COLOURS}")
    return dict(entry)


def code_id(claims: Mapping[Any, Any], fmt: str) -> str | None:
    """The id a revocation list names: hcp "id", or an EU DCC's certificate identifier (ci) if present."""
    entry = health_certificate(claims, fmt)
    if fmt == FORMAT_HEALTHPSI:
        return entry["id"]
    for group in ("v", "t", "r"):
        items = entry.get(group)
        first = items[0] if isinstance(items, list) and items else None
        if isinstance(first, Mapping) and isinstance(first.get("ci"), str):
            return first["ci"]
    return None


def check_issuer(claims: Mapping[Any, Any], trust: TrustList, kid: bytes, fmt: str) -> None:
    """A healthpsi code's `iss` must be the issuing authority the trust list names for the key that signed it
    (no authority signs under another's name). Raises IssuerError."""
    if fmt != FORMAT_HEALTHPSI:
        return
    key = trust.find(kid, fmt)
    issuer = claims.get(CLAIM_ISS)
    if key.issuer and issuer != key.issuer:
        raise IssuerError(f"code claims issuer {issuer!r} but is signed by the key of issuer {key.issuer} "
                          f"(kid {kid.hex()})")


def unknown_key_reason(exc: UnknownKeyError, claims: Mapping[Any, Any] | None, trust: TrustList) -> str:
    """Why a code's key is unknown, naming its issuer when the trust list does not list that issuer."""
    issuer = None if claims is None else claims.get(CLAIM_ISS)
    if isinstance(issuer, str) and trust.issuers and issuer not in trust.issuers:
        listed = ", ".join(sorted(trust.issuers))
        return f"issuer {issuer} is not on the trust list (it lists {listed}); {exc}"
    return str(exc)


def revoking_list(revocations: Revocations, cid: str | None, issuer: Any) -> RevocationList | None:
    """The revocation list that revokes code `cid` of `issuer`, if any: a list applies to its own issuer's
    codes (a list without an issuer to every code)."""
    if cid is None or revocations is None:
        return None
    lists = [revocations] if isinstance(revocations, RevocationList) else list(revocations)
    return next((r for r in lists if r.is_revoked(cid) and (not r.issuer or r.issuer == issuer)), None)


# ---------------------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class VerifiedCode:
    """A code whose signature, validity period and revocation status all checked out."""

    format: str
    kid: bytes
    claims: dict[Any, Any]
    certificate: dict[Any, Any]
    code_id: str | None
    issuer: str | None
    issued_at: datetime | None
    expires_at: datetime


def verify_payload(
    payload: str, trust: TrustList, at: datetime, revocations: Revocations = None
) -> VerifiedCode:
    """Verify a "HCP1:" or "HC1:" payload at time `at`.

    Raises CodeFormatError (unusable input), UnknownKeyError, SignatureError, IssuerError, ExpiredError or
    RevokedError.
    """
    decoded = decode_payload(payload)
    verify_cose(decoded.cose, trust, decoded.format)
    claims = decode_claims(decoded.cose.payload)
    check_issuer(claims, trust, decoded.cose.kid, decoded.format)
    certificate = health_certificate(claims, decoded.format)
    check_time(claims, at)
    cid = code_id(claims, decoded.format)
    issuer = claims.get(CLAIM_ISS)
    revoking = revoking_list(revocations, cid, issuer)
    if revoking is not None:
        raise RevokedError(f"code {cid} is revoked (revocation list of {revoking.issued_at.isoformat()})")
    expires = _epoch(claims, CLAIM_EXP)
    assert expires is not None  # check_time requires it
    return VerifiedCode(
        format=decoded.format,
        kid=decoded.cose.kid,
        claims=claims,
        certificate=certificate,
        code_id=cid,
        issuer=issuer if isinstance(issuer, str) else None,
        issued_at=_epoch(claims, CLAIM_IAT),
        expires_at=expires,
    )


@dataclass(frozen=True)
class VerificationReport:
    """What a verifier shows: the verdict, each check, the first reason it failed, and the claims."""

    valid: bool
    signature_ok: bool
    time_ok: bool
    revoked: bool
    format: str
    reason: str
    claims: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """The report as the JSON object `healthpsi verify --json` prints."""
        return {
            "valid": self.valid,
            "signature_ok": self.signature_ok,
            "time_ok": self.time_ok,
            "revoked": self.revoked,
            "format": self.format,
            "reason": self.reason,
            "claims": self.claims,
        }


def check_payload(
    payload: str, trust: TrustList, at: datetime, revocations: Revocations = None
) -> VerificationReport:
    """Run every check on a payload and report each one; raises CodeFormatError only for unusable input.

    A code whose envelope parses but whose signature fails is reported invalid (signature_ok False) even if
    its claims do not decode; a correctly signed code with malformed claims is unusable input.
    """
    decoded = decode_payload(payload)
    reasons: list[str] = []
    unknown: UnknownKeyError | None = None
    try:
        verify_cose(decoded.cose, trust, decoded.format)
        signature_ok = True
    except CodeFormatError:
        raise
    except UnknownKeyError as exc:
        signature_ok, unknown = False, exc
    except CryptoError as exc:  # SignatureError
        signature_ok = False
        reasons.append(str(exc))
    try:
        decoded_claims = decode_claims(decoded.cose.payload)
        health_certificate(decoded_claims, decoded.format)
        claims: dict[Any, Any] | None = decoded_claims
    except CodeFormatError:
        if signature_ok:
            raise
        claims = None
    if unknown is not None:
        reasons.append(unknown_key_reason(unknown, claims, trust))
    if signature_ok and claims is not None:
        try:
            check_issuer(claims, trust, decoded.cose.kid, decoded.format)
        except IssuerError as exc:
            signature_ok = False
            reasons.append(str(exc))
    time_ok = revoked = False
    if claims is not None:
        try:
            check_time(claims, at)
            time_ok = True
        except ExpiredError as exc:
            reasons.append(str(exc))
        except CodeFormatError as exc:
            if signature_ok:
                raise
            reasons.append(str(exc))
        cid = code_id(claims, decoded.format)
        revoked = revoking_list(revocations, cid, claims.get(CLAIM_ISS)) is not None
        if revoked:
            reasons.append(f"code {cid} is revoked")
    valid = signature_ok and time_ok and not revoked
    return VerificationReport(
        valid=valid,
        signature_ok=signature_ok,
        time_ok=time_ok,
        revoked=revoked,
        format=decoded.format,
        reason="valid" if valid else reasons[0],
        claims=None if claims is None else claims_json(claims, decoded.format),
    )


def claims_json(claims: Mapping[Any, Any], fmt: str) -> dict[str, Any]:
    """Claims in JSON form: iss/iat/exp by name, the certificate as "hcp" (healthpsi) or "dgc" (eu-dcc)."""
    out: dict[str, Any] = {}
    for key, value in claims.items():
        if key == CLAIM_HCERT and isinstance(value, Mapping) and HCERT_ENTRY in value:
            out["hcp" if fmt == FORMAT_HEALTHPSI else "dgc"] = _jsonable(value[HCERT_ENTRY])
        else:
            out[CLAIM_NAMES.get(key, str(key))] = _jsonable(value)
    return out


def _jsonable(value: Any) -> Any:
    """A CBOR-decoded value made JSON-serialisable (bytes as base64, tags as {"tag", "value"})."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, cbor2.CBORTag):
        return {"tag": value.tag, "value": _jsonable(value.value)}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
