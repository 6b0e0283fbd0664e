"""Per-partition OPRF keys: one key pair per partition, sealed at rest, destroyed when the partition expires.

A partition key `k_p` is a ristretto255 scalar. On disk it is sealed (`crypto.sealing`) under the node's
storage key (RUN/pki/nodes/<agency>.storage.key), bound to the agency and the partition, in
`<dir>/<partition_id>.key`:

    magic "HPK2" (4 bytes) || crypto.sealing.seal(storage key, "healthpsi partition key|agency|partition", sk)

In a simulation run the key comes from the run's DRBG child for the partition and the nonce is synthetic,
so the sealed file is reproducible byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path

from crypto import oprf, sealing
from crypto.drbg import Rng, default_rng
from crypto.errors import CryptoError
from crypto.group import SCALAR_BYTES, base_mult
from runctx.files import write_atomic

MAGIC = b"HPK2"
SEALED_BYTES = len(MAGIC) + sealing.OVERHEAD + SCALAR_BYTES
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
        self._storage_key = storage_key

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
        try:
            sk = sealing.unseal(self._storage_key, self._aad(partition_id), blob[len(MAGIC) :])
        except sealing.SealError as exc:
            raise KeyStoreError(f"{path}: does not open under this node's storage key") from exc
        try:
            return sk, base_mult(sk)
        except CryptoError as exc:
            raise KeyStoreError(f"{path}: sealed value is not a valid scalar: {exc}") from exc

    def create(self, partition_id: str, rng: Rng | None = None) -> tuple[bytes, bytes]:
        """Generate a partition key pair from `rng`, seal it to disk, and return (sk, pk)."""
        sk, pk = oprf.generate_key_pair(default_rng(rng))
        self.adopt(partition_id, sk)
        return sk, pk

    def adopt(self, partition_id: str, sk: bytes) -> None:
        """Seal a key generated elsewhere and write it to disk (the same key seals to the same bytes)."""
        blob = MAGIC + sealing.seal(self._storage_key, self._aad(partition_id), sk)
        write_atomic(self.path(partition_id), blob, private=True)

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
