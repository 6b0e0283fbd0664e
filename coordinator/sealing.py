"""The coordinator's storage key and AES-256-GCM sealed files at rest (query openings, cached PRF answers).

The key lives in `RUN/pki/coordinator.storage.key` (32 bytes), written by `keys init`; a PKI made without
one gets it on first use — from the run's DRBG in a simulation run, else from the system generator.
A sealed file is `crypto.sealing.seal(key, file name, plaintext)`: bound to its file name, and equal files
seal to equal bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crypto import sealing
from crypto.drbg import Rng, default_rng
from crypto.pki import STORAGE_KEY_BYTES, load_storage_key
from runctx.files import write_atomic
from runctx.pki import PkiPaths


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
    return sealing.seal(key, name.encode(), plaintext)


def unseal(key: bytes, name: str, sealed: bytes) -> bytes:
    """Open bytes sealed with `seal` under the same name; SealedFileError if they do not open."""
    try:
        return sealing.unseal(key, name.encode(), sealed)
    except sealing.SealError as exc:
        raise SealedFileError(f"sealed file {name}: {exc}") from None


def write_sealed_json(key: bytes, path: Path, doc: Any) -> None:
    """Seal a JSON document (sorted keys) into `path` atomically."""
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    write_atomic(path, seal(key, path.name, data), private=True)


def read_sealed_json(key: bytes, path: Path) -> Any:
    """Open a sealed JSON document written by `write_sealed_json`."""
    return json.loads(unseal(key, path.name, path.read_bytes()))
