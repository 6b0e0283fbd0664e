"""Coordinator building blocks without nodes: transports' error mapping and retries, sealed files, index
entry parsing, the index cache's digest checks, manifests against the identity list, matches assembly."""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from coordinator.errors import IndexIntegrityError, ManifestError
from coordinator.index_cache import EntryMap, IndexCache, Wanted
from coordinator.matching import verify_manifest
from coordinator.results import assemble_matches, frame_digest
from coordinator.sealing import SealedFileError, read_sealed_json, seal, unseal, write_sealed_json
from coordinator.transport import (
    GrpcTransport,
    InProcessTransport,
    NodeUnavailable,
    TransportError,
    error_from_rpc,
)
from crypto.pki import Identities
from proto.errors import NotFound, ResourceExhausted
from proto.healthpsi.v1 import node_pb2
from runctx.pki import PkiPaths, create_pki

KEY = bytes(range(32))


class FakeRpcError(grpc.RpcError, grpc.Call):
    """A failed call with a status code and details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> Any:
        return None

    def trailing_metadata(self) -> Any:
        return None

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.UNAVAILABLE, NodeUnavailable),
        (grpc.StatusCode.UNAUTHENTICATED, TransportError),
    ],
)
def test_grpc_status_maps_to_protocol_error(code: grpc.StatusCode, kind: type[Exception]) -> None:
    error = error_from_rpc(FakeRpcError(code, "why"), "carrier")
    assert isinstance(error, kind)
    assert error.status == code.name and "carrier" in str(error) and "why" in str(error)


def free_port() -> int:
    """A port nothing listens on (just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_grpc_transport_retries_then_reports_unavailable(tmp_path: Path) -> None:
    create_pki(PkiPaths(tmp_path), now=dt.datetime(2020, 2, 14))
    transport = GrpcTransport(
        f"127.0.0.1:{free_port()}", "carrier", PkiPaths(tmp_path), deadline=0.5, retries=2, backoff=0.01
    )
    with transport, pytest.raises(NodeUnavailable, match="carrier"):
        transport.get_manifest()
    with pytest.raises(NodeUnavailable):
        list(
            GrpcTransport(
                f"127.0.0.1:{free_port()}", "carrier", PkiPaths(tmp_path), deadline=0.5
            ).stream_index("stays@2020-02-01", 0, b"")
        )


def test_grpc_transport_needs_the_coordinator_certificate(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="TLS material"):
        GrpcTransport("127.0.0.1:1", "carrier", PkiPaths(tmp_path))


class Handlers:
    """Node handlers stand-in: a manifest, a two-chunk stream, a refusal on Evaluate."""

    def get_manifest(self, request: node_pb2.GetManifestRequest) -> node_pb2.SignedManifest:
        return node_pb2.SignedManifest(manifest=b"m", signature=b"s", identity_key=b"k")

    def stream_index(self, request: node_pb2.StreamIndexRequest) -> Iterator[node_pb2.IndexChunk]:
        for n in range(request.offset, 2):
            yield node_pb2.IndexChunk(partition_id=request.partition_id, offset=n, count=1)

    def evaluate(self, request: node_pb2.EvaluateRequest) -> node_pb2.EvaluateResponse:
        raise ResourceExhausted("over budget")


def test_in_process_transport_copies_counts_and_passes_errors() -> None:
    transport = InProcessTransport(Handlers(), "carrier")
    assert transport.get_manifest().manifest == b"m"
    assert [c.offset for c in transport.stream_index("p", 1, b"")] == [1]
    with pytest.raises(ResourceExhausted):
        transport.evaluate(node_pb2.EvaluateRequest(partition_id="p", blinded_elements=bytes(32)))
    assert transport.counter.sent > 0 and transport.counter.received > 0
    # the index stream is counted apart too: its request and its one chunk
    streamed = (
        node_pb2.StreamIndexRequest(partition_id="p", offset=1).ByteSize()
        + node_pb2.IndexChunk(partition_id="p", offset=1, count=1).ByteSize()
    )
    assert transport.counter.streamed == streamed < transport.counter.total


def test_sealed_files(tmp_path: Path) -> None:
    path = tmp_path / "x.query"
    write_sealed_json(KEY, path, {"tokens": ["a"]})
    assert read_sealed_json(KEY, path) == {"tokens": ["a"]}
    assert b"tokens" not in path.read_bytes()
    assert seal(KEY, "n", b"data") == seal(KEY, "n", b"data") != seal(KEY, "n", b"date")
    with pytest.raises(SealedFileError):
        unseal(KEY, "other-name", seal(KEY, "n", b"data"))
    tampered = bytearray(path.read_bytes())
    tampered[-1] ^= 1
    path.write_bytes(bytes(tampered))
    with pytest.raises(SealedFileError):
        read_sealed_json(KEY, path)


def entry(tag: int, label: bytes) -> bytes:
    """One canonical index entry."""
    return bytes([tag]) * 16 + struct.pack(">I", len(label)) + label


def test_entry_parsing() -> None:
    data = entry(1, b"abc") + entry(2, b"") + entry(3, b"xy")
    wanted = Wanted({bytes([t]) * 16: (f"t{t}", b"k") for t in (1, 3, 9)})
    assert wanted.take(data, "x") == 3
    assert wanted.found == {"t1": b"abc", "t3": b"xy"}
    head = Wanted({bytes([t]) * 16: (f"t{t}", b"k") for t in (1, 3)})
    assert head.take_prefix(data[:-1]) == (2, len(entry(1, b"abc") + entry(2, b"")))
    assert head.found == {"t1": b"abc"}  # the cut entry is not taken
    with pytest.raises(IndexIntegrityError, match="overruns"):
        Wanted({}).take(data[:-1], "x")
    with pytest.raises(IndexIntegrityError, match="header"):
        Wanted({}).take(data + b"\x00", "x")


@given(
    st.lists(st.tuples(st.integers(0, 7), st.binary(max_size=40)), max_size=30),
    st.sets(st.integers(0, 7)),
)
def test_take_finds_what_a_plain_parse_finds(entries: list[tuple[int, bytes]], asked: set[int]) -> None:
    """Wanted.take keeps, per wanted tag, the label of its last entry, as a header-by-header parse does."""
    data = b"".join(entry(tag, label) for tag, label in entries)
    expected, pos = {}, 0
    while pos < len(data):
        tag, length = struct.unpack_from(">16sI", data, pos)
        if tag[0] in asked:
            expected[f"t{tag[0]}"] = data[pos + 20 : pos + 20 + length]
        pos += 20 + length
    wanted = Wanted({bytes([t]) * 16: (f"t{t}", b"k") for t in asked})
    assert wanted.take(data, "x") == len(entries)
    assert wanted.found == expected
    assert Wanted({}).take_prefix(data) == (len(entries), len(data))
    assert Wanted({}).take_prefix(data + entry(9, b"x" * 100)[:30])[1] == len(data)


@given(
    st.lists(st.binary(min_size=16, max_size=16), unique=True, max_size=120),
    st.lists(st.binary(max_size=30), min_size=120, max_size=120),
    st.data(),
)
def test_entry_map_reads_what_a_walk_takes(
    tags: list[bytes], bodies: list[bytes], data: st.DataObject
) -> None:
    """Labels read through an EntryMap are those a walk over the whole index keeps; too many wanted tags or
    tags out of order leave it to the walk."""
    tags = sorted(tags)
    index = b"".join(struct.pack(">16sI", t, len(b)) + b for t, b in zip(tags, bodies, strict=False))
    most = max(0, len(tags) // EntryMap.SPARSE - 1)  # with the absent tag, still a sparse lookup
    asked = data.draw(st.lists(st.sampled_from(tags), unique=True, max_size=most) if tags else st.just([]))
    absent = data.draw(st.binary(min_size=16, max_size=16))
    keys = {t: (t.hex(), b"k") for t in [*asked, absent]}
    walked, entry_map = Wanted(dict(keys)), EntryMap()
    cut = data.draw(st.integers(0, len(index)))
    _, used = walked.take_prefix(index[:cut], entry_map)  # as a resumed download does, then the rest
    walked.take(index[used:], "x", entry_map)
    path = Path(tempfile.mkdtemp()) / "index"
    path.write_bytes(index)
    if len(keys) * EntryMap.SPARSE > len(tags):
        assert not entry_map.read_labels(path, Wanted(dict(keys)))
        return
    read = Wanted(dict(keys))
    assert entry_map.read_labels(path, read)
    assert read.found == walked.found


def test_entry_map_leaves_unordered_tags_to_the_walk(tmp_path: Path) -> None:
    entries = [entry(i, bytes([i])) for i in (5, 3, *range(10, 40))]
    entry_map = EntryMap()
    Wanted({}).take(b"".join(entries), "x", entry_map)
    (tmp_path / "index").write_bytes(b"".join(entries))
    assert not entry_map.read_labels(tmp_path / "index", Wanted({bytes([3]) * 16: ("t3", b"k")}))


class StreamingNode:
    """A transport that streams a fixed index in one-entry chunks, optionally corrupting one chunk."""

    agency = "carrier"

    def __init__(self, entries: list[bytes], corrupt: int | None = None) -> None:
        self.entries, self.corrupt, self.calls = entries, corrupt, 0

    def stream_index(self, partition_id: str, offset: int, digest: bytes) -> Iterator[node_pb2.IndexChunk]:
        self.calls += 1
        for n in range(offset, len(self.entries)):
            data = self.entries[n]
            digest_of = hashlib.sha256(data).digest() if n != self.corrupt else bytes(32)
            yield node_pb2.IndexChunk(
                partition_id=partition_id,
                offset=n,
                count=1,
                entries=data,
                digest=digest_of,
                total=len(self.entries),
            )


def info_for(entries: list[bytes]) -> node_pb2.PartitionInfo:
    """The manifest entry of an index made of these entries."""
    data = b"".join(entries)
    return node_pb2.PartitionInfo(
        partition_id="stays@2020-02-01",
        entry_count=len(entries),
        index_digest=hashlib.sha256(data).digest(),
        index_bytes=len(data),
    )


def test_index_cache_downloads_once_and_checks_digests(tmp_path: Path) -> None:
    entries = [entry(i, bytes([i]) * 3) for i in range(5)]
    node, info = StreamingNode(entries), info_for(entries)
    cache = IndexCache(tmp_path)
    wanted = Wanted({bytes([2]) * 16: ("t2", b"k")})
    assert cache.lookup(node, info, wanted) is True
    assert wanted.found == {"t2": b"\x02\x02\x02"}
    again = Wanted({bytes([4]) * 16: ("t4", b"k")})
    assert cache.lookup(node, info, again) is False and node.calls == 1
    assert again.found == {"t4": b"\x04\x04\x04"}
    cache.path("carrier", info).write_bytes(b"".join(entries[:4]))  # a damaged cache file is fetched again
    assert cache.lookup(node, info, Wanted({})) is True and node.calls == 2
    with pytest.raises(IndexIntegrityError, match="chunk digest"):
        IndexCache(tmp_path / "other").lookup(StreamingNode(entries, corrupt=3), info, Wanted({}))
    forged = info_for([*entries[:4], entry(9, b"z")])
    with pytest.raises(IndexIntegrityError, match="manifest digest"):
        IndexCache(tmp_path / "third").lookup(StreamingNode(entries), forged, Wanted({}))


def test_prefetch_downloads_ahead_and_leaves_failures_to_the_lookup(tmp_path: Path) -> None:
    entries = [entry(i, bytes([i]) * 3) for i in range(5)]
    node, info = StreamingNode(entries), info_for(entries)
    cache = IndexCache(tmp_path)
    cache.prefetch(node, info, 1)
    assert node.calls == 1 and cache.path("carrier", info).exists()
    wanted = Wanted({bytes([1]) * 16: ("t1", b"k")})
    assert cache.lookup(node, info, wanted) is True and node.calls == 1  # downloaded by the prefetch
    assert wanted.found == {"t1": b"\x01\x01\x01"}
    assert cache.lookup(node, info, Wanted({})) is False and node.calls == 1
    cache.prefetch(node, info, 1)  # already cached: nothing to fetch
    assert node.calls == 1
    bad = IndexCache(tmp_path / "bad")
    with pytest.raises(IndexIntegrityError, match="chunk digest"):
        bad.prefetch(StreamingNode(entries, corrupt=2), info, 1)
    assert not bad.path("carrier", info).exists()
    assert bad.lookup(node, info, Wanted({})) is True and node.calls == 2  # the lookup fetches it itself


def test_manifest_must_be_signed_by_the_listed_identity() -> None:
    key, other = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    identities = Identities(nodes={"carrier": key.public_key()}, coordinator=other.public_key())
    raw = key.public_key().public_bytes_raw()
    body = node_pb2.Manifest(agency="carrier", suite="ristretto255-SHA512", max_batch=8).SerializeToString()
    ok = node_pb2.SignedManifest(manifest=body, signature=key.sign(body), identity_key=raw)
    assert verify_manifest(ok, "carrier", identities).max_batch == 8
    forged = node_pb2.SignedManifest(manifest=body, signature=other.sign(body), identity_key=raw)
    with pytest.raises(ManifestError, match="signature"):
        verify_manifest(forged, "carrier", identities)
    wrong_key = node_pb2.SignedManifest(
        manifest=body, signature=other.sign(body), identity_key=other.public_key().public_bytes_raw()
    )
    with pytest.raises(ManifestError, match="identity key"):
        verify_manifest(wrong_key, "carrier", identities)
    with pytest.raises(ManifestError, match="names agency"):
        verify_manifest(
            ok, "police", Identities(nodes={"police": key.public_key()}, coordinator=other.public_key())
        )


def test_assemble_matches_excludes_the_case_and_keeps_region_tokens() -> None:
    risk = pd.DataFrame(
        [
            ("trip|G1|2020-02-01", "c1", "A", "transport"),
            ("trip|G1|2020-02-01", "c2", "B", "transport"),
            ("region-day|R1|2020-02-01", None, None, "carrier"),
        ],
        columns=["token", "case_id", "case_subject_id", "agency"],
    )
    found = {
        ("transport", "tickets@2020-02-01"): {"trip|G1|2020-02-01": ["A", "B", "C"]},
        ("carrier", "stays@2020-02-01"): {"region-day|R1|2020-02-01": ["A"]},
    }
    got = assemble_matches(risk, found)
    assert list(got.itertuples(index=False, name=None)) == [
        ("A", "carrier", "region-day|R1|2020-02-01", None),
        ("A", "transport", "trip|G1|2020-02-01", "c2"),
        ("B", "transport", "trip|G1|2020-02-01", "c1"),
        ("C", "transport", "trip|G1|2020-02-01", "c1"),
        ("C", "transport", "trip|G1|2020-02-01", "c2"),
    ]


def _digest_by_python(frame: pd.DataFrame, columns: list[str]) -> str:
    """frame_digest's definition, spelled out row by row."""
    lines = []
    for row in frame[columns].itertuples(index=False, name=None):
        lines.append("|".join("" if v is None or (isinstance(v, float) and v != v) else str(v) for v in row))
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def test_frame_digest_is_its_definition_for_every_column_type() -> None:
    frame = pd.DataFrame(
        {
            "subject_id": pd.Series(["B", "A", "张三"], dtype="str"),
            "case_id": pd.Series(["c1", None, "c2"], dtype=object),
            "count": np.array([3, 0, -7], dtype=np.int32),
            "flag": [True, False, True],
            "day": [dt.date(2020, 1, 31), None, dt.date(2020, 2, 1)],
            "share": [0.5, 1.0, float("nan")],
        }
    )
    for columns in (["subject_id", "case_id"], ["count", "day"], list(frame.columns), ["flag"], ["share"]):
        assert frame_digest(frame, columns) == _digest_by_python(frame, columns), columns
    table = pa.Table.from_pandas(frame[["subject_id", "case_id", "count", "day"]], preserve_index=False)
    from_parquet = table.to_pandas()
    assert frame_digest(from_parquet, list(from_parquet.columns)) == _digest_by_python(
        from_parquet, list(from_parquet.columns)
    )
