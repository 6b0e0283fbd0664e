"""Per-partition OPRF keys: one key pair per partition, sealed at rest, destroyed when the partition expires.

A partition key `k_p` is a ristretto255 scalar. On disk it is sealed with AES-256-GCM under the node's
storage key (RUN/pki/nodes/<agency>.storage.key), bound by the associated data to the agency and the
partition, in `<dir>/<partition_id>.key`:

    magic "HPK1" (4 bytes) || nonce (12 bytes) || AES-GCM(sk) (32 + 16 bytes)

In a simulation run the key and the nonce come from the run's DRBG child for the partition, so the
sealed file is reproducible byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto import oprf
from crypto.drbg import Rng, default_rng
from crypto.errors import CryptoError
from crypto.group import SCALAR_BYTES, base_mult

MAGIC = b"HPK1"
NONCE_BYTES = 12
SEALED_BYTES = len(MAGIC) + NONCE_BYTES + SCALAR_BYTES + 16
SUFFIX = ".key"


class KeyStoreError(Exception):
    """A sealed partition key that cannot be used: wrong size, wrong storage key, or tampered."""


class KeyStore:
    """The sealed partition keys of one agency node, in one directory."""

    def __init__(self, directory: Path, agency: str, storage_key: bytes) -> None:
        if len(storage_key) != 32:
            raise KeyStoreError(f"storage key must be 32 bytes, got {len(storage_key)}")
        self.directory = Path(directory)
        self.agency = agency
        self._aead = AESGCM(storage_key)

    def path(self, partition_id: str) -> Path:
        """The sealed key file of a partition."""
        return self.directory / f"{partition_id}{SUFFIX}"

    def _aad(self, partition_id: str) -> bytes:
        """Associated data binding a sealed key to this agency and partition."""
        return f"healthpsi partition key|{self.agency}|{partition_id}".encode()

    def partitions(self) -> list[str]:
        """Partition ids that have a sealed key on disk, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name[: -len(SUFFIX)] for p in self.directory.glob(f"*{SUFFIX}"))

    def load(self, partition_id: str) -> tuple[bytes, bytes] | None:
        """Unseal a partition's key pair (sk, pk), or None if it has none; KeyStoreError if unusable."""
        path = self.path(partition_id)
        if not path.exists():
            return None
        blob = path.read_bytes()
        if len(blob) != SEALED_BYTES or not blob.startswith(MAGIC):
            raise KeyStoreError(f"{path}: not a sealed partition key ({len(blob)} bytes)")
        nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        try:
            sk = self._aead.decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES :], self._aad(partition_id))
        except InvalidTag as exc:
            raise KeyStoreError(f"{path}: does not open under this node's storage key") from exc
        try:
            return sk, base_mult(sk)
        except CryptoError as exc:
            raise KeyStoreError(f"{path}: sealed value is not a valid scalar: {exc}") from exc

    def create(self, partition_id: str, rng: Rng | None = None) -> tuple[bytes, bytes]:
        """Generate a partition key pair from `rng` (the nonce too), seal it to disk, and return (sk, pk)."""
        rng = default_rng(rng)
        sk, pk = oprf.generate_key_pair(rng)
        self.adopt(partition_id, sk, rng)
        return sk, pk

    def adopt(self, partition_id: str, sk: bytes, rng: Rng) -> None:
        """Seal a key generated from `rng` elsewhere (the nonce comes from the same stream, so the file is
        byte for byte what `create` writes from that stream) and write it to disk."""
        nonce = rng.random_bytes(NONCE_BYTES)
        blob = MAGIC + nonce + self._aead.encrypt(nonce, sk, self._aad(partition_id))
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(partition_id)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def load_or_create(self, partition_id: str, rng: Rng | None = None) -> tuple[tuple[bytes, bytes], bool]:
        """The partition's key pair and whether it was created now (an unusable sealed key is replaced)."""
        try:
            pair = self.load(partition_id)
        except KeyStoreError:
            pair = None
        if pair is not None:
            return pair, False
        return self.create(partition_id, rng), True

    def destroy(self, partition_id: str) -> bool:
        """Overwrite and delete a partition's sealed key; True if there was one."""
        path = self.path(partition_id)
        if not path.exists():
            return False
        size = path.stat().st_size
        with path.open("r+b") as fh:
            fh.write(bytes(size))
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink()
        return True
