"""Sealed per-partition OPRF keys: round trip, determinism, binding to agency and partition, destruction."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto.drbg import Drbg
from crypto.group import base_mult
from nodes.keys import SEALED_BYTES, KeyStore, KeyStoreError

PID = "stays@2020-01-20"


def store(tmp_path: Path, key: bytes = b"k" * 32, agency: str = "carrier") -> KeyStore:
    """A key store in a temporary directory."""
    return KeyStore(tmp_path / "keys", agency, key)


def test_create_and_load_round_trip(tmp_path: Path) -> None:
    keys = store(tmp_path)
    sk, pk = keys.create(PID)
    assert pk == base_mult(sk)
    assert keys.load(PID) == (sk, pk)
    assert keys.partitions() == [PID]
    blob = keys.path(PID).read_bytes()
    assert len(blob) == SEALED_BYTES and sk not in blob
    assert keys.path(PID).stat().st_mode & 0o077 == 0


def test_missing_key_loads_as_none(tmp_path: Path) -> None:
    assert store(tmp_path).load(PID) is None


def test_drbg_keys_are_reproducible_byte_for_byte(tmp_path: Path) -> None:
    a = store(tmp_path / "a")
    b = store(tmp_path / "b")
    pair_a = a.create(PID, Drbg(b"seed").child(f"node/carrier/{PID}"))
    pair_b = b.create(PID, Drbg(b"seed").child(f"node/carrier/{PID}"))
    assert pair_a == pair_b
    assert a.path(PID).read_bytes() == b.path(PID).read_bytes()
    other = a.create("stays@2020-01-21", Drbg(b"seed").child("node/carrier/stays@2020-01-21"))
    assert other[0] != pair_a[0]


def test_wrong_storage_key_does_not_open(tmp_path: Path) -> None:
    store(tmp_path).create(PID)
    with pytest.raises(KeyStoreError, match="storage key"):
        store(tmp_path, key=b"x" * 32).load(PID)


def test_sealed_key_is_bound_to_its_partition_and_agency(tmp_path: Path) -> None:
    keys = store(tmp_path)
    keys.create(PID)
    moved = keys.path("stays@2020-01-21")
    moved.write_bytes(keys.path(PID).read_bytes())
    with pytest.raises(KeyStoreError):
        keys.load("stays@2020-01-21")
    with pytest.raises(KeyStoreError):
        store(tmp_path, agency="police").load(PID)


def test_tampered_or_truncated_key_is_refused_and_replaced(tmp_path: Path) -> None:
    keys = store(tmp_path)
    sk, _ = keys.create(PID)
    blob = bytearray(keys.path(PID).read_bytes())
    blob[-1] ^= 1
    keys.path(PID).write_bytes(bytes(blob))
    with pytest.raises(KeyStoreError, match="does not open"):
        keys.load(PID)
    keys.path(PID).write_bytes(bytes(blob[:10]))
    with pytest.raises(KeyStoreError, match="not a sealed partition key"):
        keys.load(PID)
    (new_sk, _), created = keys.load_or_create(PID)
    assert created and new_sk != sk
    assert keys.load_or_create(PID) == ((new_sk, base_mult(new_sk)), False)


def test_destroy_deletes_the_key(tmp_path: Path) -> None:
    keys = store(tmp_path)
    keys.create(PID)
    assert keys.destroy(PID)
    assert not keys.path(PID).exists()
    assert keys.load(PID) is None
    assert not keys.destroy(PID)
    assert keys.partitions() == []


def test_storage_key_must_be_32_bytes(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="32 bytes"):
        store(tmp_path, key=b"short")
