"""Sealed per-partition OPRF keys: round trip, determinism, binding to agency, partition and rows, one label
set per key, and crypto-shredding by day."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto.drbg import Drbg
from crypto.group import base_mult
from nodes import keys as nk
from nodes.keys import SEALED_BYTES, KeyReuseError, KeyStore, KeyStoreError

PID = "cell-hour@2020-01-20"
ROWS = b"r" * 32


def store(tmp_path: Path, key: bytes = b"k" * 32, agency: str = "carrier") -> KeyStore:
    """A key store in a temporary directory, its day keys in a sibling directory."""
    return KeyStore(tmp_path / "keys", agency, key, tmp_path / "secrets" / "days")


def test_store_and_load_round_trip(tmp_path: Path) -> None:
    keys = store(tmp_path)
    key = nk.generate(1, ROWS)
    keys.store(PID, key)
    assert key.pk == base_mult(key.sk)
    assert keys.load(PID) == key
    assert keys.partitions() == [PID]
    assert keys.days() == ["2020-01-20"]
    blob = keys.path(PID).read_bytes()
    assert len(blob) == SEALED_BYTES and key.sk not in blob
    assert keys.path(PID).stat().st_mode & 0o077 == 0
    assert keys.day_key_path("2020-01-20").stat().st_mode & 0o077 == 0


def test_missing_key_loads_as_none(tmp_path: Path) -> None:
    assert store(tmp_path).load(PID) is None


def test_drbg_keys_are_reproducible_byte_for_byte(tmp_path: Path) -> None:
    a = store(tmp_path / "a")
    b = store(tmp_path / "b")
    key_a = nk.generate(1, ROWS, Drbg(b"seed").child(f"node/carrier/{PID}"))
    key_b = nk.generate(1, ROWS, Drbg(b"seed").child(f"node/carrier/{PID}"))
    assert key_a == key_b
    a = KeyStore(tmp_path / "a", "carrier", b"k" * 32, tmp_path / "a-days", lambda d: Drbg(b"seed").child(d))
    b = KeyStore(tmp_path / "b", "carrier", b"k" * 32, tmp_path / "b-days", lambda d: Drbg(b"seed").child(d))
    a.store(PID, key_a)
    b.store(PID, key_b)
    assert a.path(PID).read_bytes() == b.path(PID).read_bytes()


def test_static_key_is_wrapped_by_the_storage_key(tmp_path: Path) -> None:
    keys = store(tmp_path)
    keys.store("identity@static", nk.generate(1, ROWS))
    assert keys.days() == []
    with pytest.raises(KeyStoreError, match="does not open"):
        store(tmp_path, key=b"x" * 32).load("identity@static")


def test_sealed_key_is_bound_to_its_partition_and_agency(tmp_path: Path) -> None:
    keys = store(tmp_path)
    keys.store(PID, nk.generate(1, ROWS))
    keys.store("cell-hour@2020-01-21", nk.generate(1, ROWS))
    moved = keys.path("cell-hour@2020-01-21")
    moved.write_bytes(keys.path(PID).read_bytes())
    with pytest.raises(KeyStoreError):
        keys.load("cell-hour@2020-01-21")
    with pytest.raises(KeyStoreError):
        store(tmp_path, agency="police").load(PID)


def test_tampered_or_truncated_key_is_refused(tmp_path: Path) -> None:
    keys = store(tmp_path)
    keys.store(PID, nk.generate(1, ROWS))
    blob = bytearray(keys.path(PID).read_bytes())
    blob[-1] ^= 1
    keys.path(PID).write_bytes(bytes(blob))
    with pytest.raises(KeyStoreError, match="does not open"):
        keys.load(PID)
    keys.path(PID).write_bytes(bytes(blob[:10]))
    with pytest.raises(KeyStoreError, match="not a sealed partition key"):
        keys.load(PID)


def test_a_key_seals_only_the_rows_it_is_bound_to() -> None:
    key = nk.generate(1, ROWS)
    key.check_seals(ROWS)
    with pytest.raises(KeyReuseError, match="fresh key"):
        key.check_seals(b"s" * 32)


def test_shredding_the_day_key_makes_every_copy_of_the_day_unopenable(tmp_path: Path) -> None:
    keys = store(tmp_path)
    keys.store(PID, nk.generate(1, ROWS))
    copy = keys.path(PID).read_bytes()
    assert keys.destroy(PID) and keys.shred_day("2020-01-20")
    assert not keys.path(PID).exists() and keys.load(PID) is None
    assert not keys.destroy(PID) and not keys.shred_day("2020-01-20")
    keys.path(PID).write_bytes(copy)  # a backup of the sealed file, restored
    with pytest.raises(KeyStoreError, match="day key is gone"):
        keys.load(PID)
    assert keys.partitions() == [PID] and keys.days() == []


def test_storage_key_must_be_32_bytes(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="32 bytes"):
        store(tmp_path, key=b"short")
