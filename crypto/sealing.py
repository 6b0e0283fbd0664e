"""Sealed bytes at rest, one format for every party: AES-256-GCM under a subkey of a 32-byte storage key,
with a synthetic nonce from a second subkey.

    sealed = nonce (12) || AES-256-GCM(enc_key, nonce, plaintext, aad = context)
    enc_key = HKDF-SHA256(storage key, info "healthpsi seal/encrypt")
    nonce   = HMAC-SHA256(nonce_key, context || 0x00 || plaintext)[:12],
    nonce_key = HKDF-SHA256(storage key, info "healthpsi seal/nonce")

The nonce is derived from what is sealed (SIV-style), so equal plaintexts under the same context seal to
equal bytes (a seeded run is reproducible byte for byte) and different plaintexts never share a nonce; the
context (a file name, an agency and partition) binds the sealed bytes to where they belong.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.errors import CryptoError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = NONCE_BYTES + TAG_BYTES
"""Bytes a sealed value adds to its plaintext."""


class SealError(CryptoError):
    """Sealed bytes that do not open: wrong key or context, tampered or truncated."""


def _subkey(key: bytes, purpose: str) -> bytes:
    """One of the storage key's subkeys (HKDF-SHA256, no salt)."""
    if len(key) != KEY_BYTES:
        raise SealError(f"a storage key is {KEY_BYTES} bytes, got {len(key)}")
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=f"healthpsi seal/{purpose}".encode()).derive(key)


def seal(key: bytes, context: bytes, plaintext: bytes) -> bytes:
    """Seal bytes under a storage key, bound to `context`."""
    nonce = hmac.digest(_subkey(key, "nonce"), context + b"\x00" + plaintext, hashlib.sha256)[:NONCE_BYTES]
    return nonce + AESGCM(_subkey(key, "encrypt")).encrypt(nonce, plaintext, context)


def unseal(key: bytes, context: bytes, sealed: bytes) -> bytes:
    """Open bytes sealed by `seal` under the same key and context; SealError if they do not open."""
    if len(sealed) < OVERHEAD:
        raise SealError(f"{len(sealed)} bytes is too short to be sealed")
    try:
        return AESGCM(_subkey(key, "encrypt")).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)
    except InvalidTag:
        raise SealError("does not open (wrong key or context, or tampered)") from None
