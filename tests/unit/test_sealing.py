"""At-rest sealing (`crypto.sealing`, the coordinator's openings and cache, the nodes' partition keys): the
synthetic nonce and the AES-256-GCM key are two HKDF subkeys of the storage key, never the key itself."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coordinator import sealing as coordinator_sealing
from crypto import sealing

KEY = bytes(range(32))
CONTEXT = b"RUN/coordinator/openings/police/identity@static/x.query"
PLAIN = b'{"tokens":["identity|11010519491231002X|\\u5f20\\u4e09|1949-12-31"]}'


def subkey(purpose: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=f"healthpsi seal/{purpose}".encode()).derive(KEY)


def test_nonce_and_encryption_use_separate_subkeys() -> None:
    sealed = sealing.seal(KEY, CONTEXT, PLAIN)
    nonce, body = sealed[: sealing.NONCE_BYTES], sealed[sealing.NONCE_BYTES :]
    message = CONTEXT + b"\x00" + PLAIN
    assert nonce == hmac.digest(subkey("nonce"), message, hashlib.sha256)[: sealing.NONCE_BYTES]
    assert nonce != hmac.digest(KEY, message, hashlib.sha256)[: sealing.NONCE_BYTES]
    assert AESGCM(subkey("encrypt")).decrypt(nonce, body, CONTEXT) == PLAIN
    for other in (KEY, subkey("nonce")):  # neither the storage key nor the nonce subkey encrypts
        with pytest.raises(InvalidTag):
            AESGCM(other).decrypt(nonce, body, CONTEXT)
    assert len({KEY, subkey("nonce"), subkey("encrypt")}) == 3


def test_the_coordinators_sealed_files_use_the_same_format() -> None:
    name = "batch-0.query"
    assert coordinator_sealing.seal(KEY, name, PLAIN) == sealing.seal(KEY, name.encode(), PLAIN)
    assert coordinator_sealing.unseal(KEY, name, coordinator_sealing.seal(KEY, name, PLAIN)) == PLAIN
    with pytest.raises(coordinator_sealing.SealedFileError):
        coordinator_sealing.unseal(KEY, "other.query", coordinator_sealing.seal(KEY, name, PLAIN))
