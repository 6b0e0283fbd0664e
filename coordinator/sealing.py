"""The coordinator's storage key and AES-256-GCM sealed files at rest (query openings, cached PRF answers).

The key lives in `RUN/pki/coordinator.storage.key` (32 bytes), written by `keys init`; a PKI made without
one gets it on first use — from the run's DRBG in a simulation run, else from the system generator.
A sealed file is `nonce (12) || AES-256-GCM(key, nonce, plaintext, aad = file name)`; the nonce is synthetic
(HMAC-SHA256(key, name || plaintext)[:12]), so equal files seal to equal bytes and different plaintexts
never share a nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.drbg import Rng, default_rng
from crypto.pki import STORAGE_KEY_BYTES, PkiPaths, load_storage_key, write_atomic

NONCE_BYTES = 12


class SealedFileError(RuntimeError):
    """A sealed file that does not open (wrong key, tampered or truncated)."""


def storage_key(run_dir: Path, rng: Rng | None = None) -> bytes:
    """The coordinator's storage key, created (mode 0600) from `rng` (None: system randomness) if missing."""
    path = PkiPaths(run_dir).coordinator_storage_key
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = default_rng(rng).random_bytes(STORAGE_KEY_BYTES)
        write_atomic(path, key, private=True)
    return load_storage_key(path)


def seal(key: bytes, name: str, plaintext: bytes) -> bytes:
    """Seal bytes under the storage key, bound to `name` (the file's name)."""
    aad = name.encode()
    nonce = hmac.digest(key, aad + b"\x00" + plaintext, hashlib.sha256)[:NONCE_BYTES]
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, name: str, sealed: bytes) -> bytes:
    """Open bytes sealed with `seal` under the same name; SealedFileError if they do not open."""
    if len(sealed) < NONCE_BYTES + 16:
        raise SealedFileError(f"sealed file {name}: {len(sealed)} bytes is too short")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], name.encode())
    except InvalidTag:
        raise SealedFileError(f"sealed file {name} does not open (wrong key or tampered)") from None


def write_sealed_json(key: bytes, path: Path, doc: Any) -> None:
    """Seal a JSON document (sorted keys) into `path` atomically."""
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    write_atomic(path, seal(key, path.name, data), private=True)


def read_sealed_json(key: bytes, path: Path) -> Any:
    """Open a sealed JSON document written by `write_sealed_json`."""
    return json.loads(unseal(key, path.name, path.read_bytes()))
