"""Partition indexes: one VOPRF evaluation per distinct token, sealed labels, canonical bytes, chunks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crypto import labels, oprf
from crypto.drbg import Drbg
from nodes import index as idx
from proto import ids

PID = "trip@2020-01-20"


def rows_for(spec: dict[str, list[int]]) -> pd.DataFrame:
    """Distinct (subject_id, token) rows from {token: [subject bodies]}."""
    pairs = [(ids.from_int(body), token) for token, bodies in spec.items() for body in bodies]
    return pd.DataFrame(pairs, columns=["subject_id", "token"])


SPEC = {
    "trip|G101|2020-01-20": [11000000000000001, 11000000000000007, 11000000000000003],
    "trip|G102|2020-01-20": [11000000000000007, 11000000000000003],
    "trip|D7|2020-01-20": [41000000000000002],
    "trip|D8|2020-01-20": [41000000000000002, 11000000000000001, 41000000000000009, 41000000000000005,
                                 41000000000000011],
}


@pytest.fixture(scope="module")
def key() -> tuple[bytes, bytes]:
    """A fixed partition key pair."""
    return oprf.generate_key_pair(Drbg(b"test").child("node/transport/" + PID))


def test_entries_open_to_the_subjects_at_each_token(key: tuple[bytes, bytes]) -> None:
    sk, _ = key
    entries = idx.build_entries(sk, rows_for(SPEC))
    assert len(entries) == len(SPEC)
    assert entries == sorted(entries)
    by_tag = {}
    for entry in entries:
        tag, length = idx.ENTRY_HEADER.unpack_from(entry)
        assert len(entry) == idx.ENTRY_HEADER.size + length
        by_tag[tag] = entry[idx.ENTRY_HEADER.size :]
    for token, bodies in SPEC.items():
        tag, label_key = labels.derive_tag_key(oprf.evaluate(sk, token.encode(), oprf.Mode.VOPRF))
        assert labels.open_label(label_key, by_tag[tag]) == sorted(bodies)
    # label sizes are padded to powers of two: 5 subjects -> 8 entries
    sizes = sorted(len(sealed) for sealed in by_tag.values())
    assert sizes == [8 + 16, 16 + 16, 32 + 16, 64 + 16]


def test_coordinator_side_blinding_finds_the_entry(key: tuple[bytes, bytes]) -> None:
    sk, pk = key
    entries = idx.build_entries(sk, rows_for(SPEC))
    token = b"trip|G102|2020-01-20"
    blinds, blinded = oprf.blind_many([token], oprf.Mode.VOPRF, Drbg(b"coordinator"))
    evaluated = oprf.blind_evaluate_packed(sk, blinded)
    proof = oprf.generate_proof(sk, pk, [blinded], [evaluated])
    oprf.verify_proof(pk, [blinded], [evaluated], proof)
    (y,) = oprf.finalize_many([token], blinds, evaluated)
    tag, label_key = labels.derive_tag_key(y)
    found = [e for e in entries if e[:16] == tag]
    assert len(found) == 1
    bodies = labels.open_label(label_key, found[0][idx.ENTRY_HEADER.size :])
    assert [ids.from_int(b) for b in bodies] == [ids.from_int(b) for b in sorted(SPEC[token.decode()])]


def test_one_evaluation_per_distinct_token(key: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[bytes]] = []
    real = oprf.evaluate_many

    def spy(sk: bytes, inputs: list[bytes], mode: oprf.Mode, executor: object = None) -> list[bytes]:
        seen.append(list(inputs))
        assert mode == oprf.Mode.VOPRF
        return real(sk, inputs, mode, executor)

    monkeypatch.setattr(oprf, "evaluate_many", spy)
    rows = rows_for(SPEC)
    # many records of the same tokens: still one evaluation per distinct token
    idx.build_entries(key[0], pd.concat([rows] * 5, ignore_index=True))
    assert len(seen) == 1
    assert sorted(seen[0]) == sorted(t.encode() for t in SPEC)


def test_a_day_splits_into_one_partition_per_kind_and_none_mixes_kinds(
    key: tuple[bytes, bytes], tmp_path: Path
) -> None:
    carriages = {
        "carriage|G101|2020-01-20|3": [11000000000000007],
        "carriage|D7|2020-01-20|1": [41000000000000002],
    }
    mixed = {**SPEC, **carriages}
    split = idx.split_kinds(idx.group_rows(rows_for(mixed)))
    assert sorted(split) == ["carriage", "trip"]
    assert split["trip"].tokens == sorted(SPEC)
    assert split["trip"].digest() == idx.group_rows(rows_for(SPEC)).digest()
    assert [int(b) for b in split["carriage"].bodies] == [41000000000000002, 11000000000000007]
    with pytest.raises(ValueError, match="trip tokens only"):
        idx.build_index(tmp_path, PID, *key, rows_for(mixed))


def test_rows_fingerprint_ignores_order_but_not_content() -> None:
    rows = rows_for(SPEC)
    shuffled = rows.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert idx.group_rows(rows).digest() == idx.group_rows(shuffled).digest()
    changed = rows.copy()
    changed.loc[0, "subject_id"] = ids.from_int(99000000000000001)
    assert idx.group_rows(rows).digest() != idx.group_rows(changed).digest()


def test_build_write_open_and_chunk(tmp_path: Path, key: tuple[bytes, bytes]) -> None:
    sk, pk = key
    spec = {f"trip|T{i}|2020-01-20": [10000000000000000 + j for j in range(i % 7 + 1)] for i in range(200)}
    rows = rows_for(spec)
    meta = idx.build_index(tmp_path, PID, sk, pk, rows)[0]
    data = (tmp_path / f"{PID}.idx").read_bytes()
    assert meta.entry_count == 200
    assert meta.index_bytes == len(data)
    assert meta.index_digest == hashlib.sha256(data).digest()
    assert meta.token_kinds == ("trip",)
    assert (meta.dataset, meta.day) == ("tickets", "2020-01-20")
    assert idx.load_meta(tmp_path, PID) == meta
    index = idx.open_index(tmp_path, meta)
    try:
        chunks = list(index.chunks(0, max_bytes=1000))
        assert len(chunks) > 5
        assert b"".join(c[2] for c in chunks) == data
        assert sum(c[1] for c in chunks) == 200
        assert [c[0] for c in chunks] == list(np.cumsum([0] + [c[1] for c in chunks[:-1]]))
        assert all(len(c[2]) <= 1000 for c in chunks)
        # resume from an entry offset: the tail of the same bytes
        resumed = b"".join(c[2] for c in index.chunks(57, max_bytes=1000))
        assert data.endswith(resumed)
        assert len(resumed) == len(data) - int(index.offsets[57])
        # a chunk smaller than one entry still carries one whole entry
        tiny = list(index.chunks(0, max_bytes=1))
        assert len(tiny) == 200 and all(c[1] == 1 for c in tiny)
        assert list(index.chunks(200)) == []
    finally:
        index.close()
    # the same key and rows give the same bytes
    again = idx.build_index(tmp_path / "again", PID, sk, pk, rows.iloc[::-1])[0]
    assert again.index_digest == meta.index_digest


def test_tampered_index_is_detected(tmp_path: Path, key: tuple[bytes, bytes]) -> None:
    sk, pk = key
    meta, offsets = idx.build_index(tmp_path, PID, sk, pk, rows_for(SPEC))
    path = tmp_path / f"{PID}.idx"
    data = bytearray(path.read_bytes())
    idx.open_index(tmp_path, meta, offsets).close()  # the builder's offsets: only the size is checked
    path.write_bytes(bytes(data[:-1]))
    with pytest.raises(idx.IndexFileError, match="bytes, metadata says"):
        idx.open_index(tmp_path, meta, offsets)
    data[40] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(idx.IndexFileError, match="digest"):
        idx.open_index(tmp_path, meta)
    path.unlink()
    with pytest.raises(idx.IndexFileError):
        idx.open_index(tmp_path, meta)
    assert idx.remove_index(tmp_path, PID)
    assert idx.load_meta(tmp_path, PID) is None
    assert idx.indexed_partitions(tmp_path) == []


def test_ragged_index_bytes_are_refused() -> None:
    entry = idx.ENTRY_HEADER.pack(b"t" * 16, 24) + b"x" * 24
    assert list(idx.entry_offsets(entry + entry)) == [0, 44, 88]
    with pytest.raises(idx.IndexFileError, match="past the end"):
        idx.entry_offsets(entry + entry[:30])
    with pytest.raises(idx.IndexFileError, match="truncated"):
        idx.entry_offsets(entry + entry[:5])


def test_malformed_metadata_is_ignored(tmp_path: Path) -> None:
    (tmp_path / f"{PID}.json").write_text("{not json")
    assert idx.load_meta(tmp_path, PID) is None
    assert idx.indexed_partitions(tmp_path) == [PID]
