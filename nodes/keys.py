"""Per-partition OPRF keys: one key pair per partition and build, bound to the rows it indexes, sealed at
rest under a wrapping key that is destroyed when the partition's day leaves the window.

A partition key `k_p` is a ristretto255 scalar. It seals exactly one label set: the key is stored with its
version (1, 2, … per partition) and the digest of the rows its index was built from, and a partition whose
rows change is rebuilt under a fresh key (`bound_digest` tells which). On disk, `<dir>/<partition_id>.key`:

    magic "HPK3" (4 bytes) || crypto.sealing.seal(wrapping key, "healthpsi partition key|agency|partition",
                                                  version (u32 BE) || rows digest (32) || sk (32))

The wrapping key of a dated partition is its day's key, 32 random bytes in `<day_key_dir>/<day>.key`
(mode 0600, kept with the node's secrets, not with what it seals); destroying that file crypto-shreds every
key of the day, including copies of the sealed files kept elsewhere. A static partition's key is wrapped by
the node's storage key. In a simulation run keys come from the run's DRBG, so sealed files are reproducible
byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crypto import oprf, sealing
from crypto.drbg import Rng, default_rng
from crypto.errors import CryptoError
from crypto.group import SCALAR_BYTES, base_mult
from proto import tokens
from runctx.files import write_atomic

MAGIC = b"HPK3"
DIGEST_BYTES = 32
_HEAD = struct.Struct(">I")
SEALED_BYTES = len(MAGIC) + sealing.OVERHEAD + _HEAD.size + DIGEST_BYTES + SCALAR_BYTES
SUFFIX = ".key"

DayKeyRng = Callable[[str], Rng | None]
"""The randomness of a day's wrapping key, by day ("YYYY-MM-DD"); None: the operating system's."""


class KeyStoreError(Exception):
    """A sealed partition key that cannot be used: wrong size, wrong wrapping key, tampered or shredded."""


class KeyReuseError(KeyStoreError):
    """An attempt to seal a second, different label set under a partition key that already sealed one."""


@dataclass(frozen=True)
class PartitionKey:
    """A partition's key pair, its version and the digest of the rows it sealed (one label set per key)."""

    sk: bytes = field(repr=False)
    pk: bytes
    version: int
    rows_digest: bytes

    def check_seals(self, rows_digest: bytes) -> None:
        """Refuse (KeyReuseError) to seal rows other than those this key is bound to."""
        if rows_digest != self.rows_digest:
            raise KeyReuseError(
                f"key version {self.version} of this partition already sealed rows "
                f"{self.rows_digest.hex()[:16]}; rows {rows_digest.hex()[:16]} need a fresh key"
            )


def generate(version: int, rows_digest: bytes, rng: Rng | None = None) -> PartitionKey:
    """A fresh partition key of `version`, bound to `rows_digest`."""
    sk, pk = oprf.generate_key_pair(default_rng(rng))
    return PartitionKey(sk, pk, version, rows_digest)


def _no_rng(day: str) -> Rng | None:
    """Operating-system randomness for every day key."""
    return None


class KeyStore:
    """The sealed partition keys of one agency node, in one directory, and the day keys that wrap them."""

    def __init__(
        self, directory: Path, agency: str, storage_key: bytes, day_key_dir: Path | None = None,
        day_key_rng: DayKeyRng = _no_rng,
    ) -> None:
        if len(storage_key) != 32:
            raise KeyStoreError(f"storage key must be 32 bytes, got {len(storage_key)}")
        self.directory = Path(directory)
        self.day_key_dir = Path(day_key_dir) if day_key_dir is not None else self.directory / "days"
        self.agency = agency
        self._storage_key = storage_key
        self._day_key_rng = day_key_rng

    def path(self, partition_id: str) -> Path:
        """The sealed key file of a partition."""
        return self.directory / f"{partition_id}{SUFFIX}"

    def day_key_path(self, day: str) -> Path:
        """The wrapping key file of a day."""
        return self.day_key_dir / f"{day}{SUFFIX}"

    def _aad(self, partition_id: str) -> bytes:
        """Associated data binding a sealed key to this agency and partition."""
        return f"healthpsi partition key|{self.agency}|{partition_id}".encode()

    def _wrapping_key(self, partition_id: str, create: bool) -> bytes | None:
        """The key that wraps a partition's key: its day's key (made when `create`), or the storage key."""
        _, day = tokens.parse_partition_id(partition_id)
        if day is None:
            return self._storage_key
        path = self.day_key_path(day.isoformat())
        if path.exists():
            data = path.read_bytes()
            if len(data) != sealing.KEY_BYTES:
                raise KeyStoreError(f"{path}: a day key is {sealing.KEY_BYTES} bytes, got {len(data)}")
            return data
        if not create:
            return None
        data = default_rng(self._day_key_rng(day.isoformat())).random_bytes(sealing.KEY_BYTES)
        write_atomic(path, data, private=True)
        return data

    def partitions(self) -> list[str]:
        """Partition ids that have a sealed key on disk, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name[: -len(SUFFIX)] for p in self.directory.glob(f"*{SUFFIX}"))

    def days(self) -> list[str]:
        """Days ("YYYY-MM-DD") that have a wrapping key on disk, sorted."""
        if not self.day_key_dir.is_dir():
            return []
        return sorted(p.name[: -len(SUFFIX)] for p in self.day_key_dir.glob(f"*{SUFFIX}"))

    def load(self, partition_id: str) -> PartitionKey | None:
        """Unseal a partition's key, or None if it has none; KeyStoreError if unusable (or shredded)."""
        path = self.path(partition_id)
        if not path.exists():
            return None
        blob = path.read_bytes()
        if len(blob) != SEALED_BYTES or not blob.startswith(MAGIC):
            raise KeyStoreError(f"{path}: not a sealed partition key ({len(blob)} bytes)")
        wrapping = self._wrapping_key(partition_id, create=False)
        if wrapping is None:
            raise KeyStoreError(f"{path}: its day key is gone (the key was destroyed)")
        try:
            plain = sealing.unseal(wrapping, self._aad(partition_id), blob[len(MAGIC) :])
        except sealing.SealError as exc:
            raise KeyStoreError(f"{path}: does not open under this node's wrapping key") from exc
        (version,) = _HEAD.unpack_from(plain)
        digest, sk = plain[_HEAD.size : _HEAD.size + DIGEST_BYTES], plain[_HEAD.size + DIGEST_BYTES :]
        try:
            return PartitionKey(sk, base_mult(sk), version, digest)
        except CryptoError as exc:
            raise KeyStoreError(f"{path}: sealed value is not a valid scalar: {exc}") from exc

    def store(self, partition_id: str, key: PartitionKey) -> None:
        """Seal a partition key (replacing the one on disk) under its wrapping key."""
        wrapping = self._wrapping_key(partition_id, create=True)
        assert wrapping is not None
        plain = _HEAD.pack(key.version) + key.rows_digest + key.sk
        write_atomic(self.path(partition_id), MAGIC + sealing.seal(wrapping, self._aad(partition_id), plain),
                     private=True)

    def destroy(self, partition_id: str) -> bool:
        """Delete a partition's sealed key; True if there was one. Its day key (`shred_day`) is what makes
        the deletion final."""
        path = self.path(partition_id)
        if not path.exists():
            return False
        path.unlink()
        return True

    def shred_day(self, day: str) -> bool:
        """Delete a day's wrapping key, so no copy of that day's sealed keys opens again; True if there was
        one."""
        path = self.day_key_path(day)
        if not path.exists():
            return False
        path.unlink()
        return True
