"""Typed errors raised by crypto/: every bad input becomes one of these, with a message naming the problem."""

from __future__ import annotations


class CryptoError(ValueError):
    """Base class of every error raised by crypto/ on bad input or a failed check."""


class InvalidElement(CryptoError):
    """A group element is malformed: wrong length, not a canonical ristretto255 encoding, or the identity."""


class InvalidScalar(CryptoError):
    """A scalar is malformed: wrong length, not reduced modulo the group order, or zero where unsafe."""


class ProofError(CryptoError):
    """A DLEQ proof is malformed or does not verify against the public key and elements."""


class LabelError(CryptoError):
    """A sealed label does not open under the given key, or its contents are malformed."""


class CodeFormatError(CryptoError):
    """A health-code input is unusable: bad prefix, base45, zlib, CBOR or COSE structure."""


class SignatureError(CryptoError):
    """A signature does not verify."""


class UnknownKeyError(CryptoError):
    """A key identifier is not in the trust list."""


class ExpiredError(CryptoError):
    """A health code is outside its validity period at the verification time."""


class RevokedError(CryptoError):
    """A health code, or the key that signed it, has been revoked."""


class TrustListError(CryptoError):
    """A trust list or revocation list is malformed or badly signed."""


class IssuerError(CryptoError):
    """A code's issuer (iss) is not the authority its signing key belongs to, or is not on the trust list."""
