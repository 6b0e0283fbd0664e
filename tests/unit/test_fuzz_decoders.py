"""Property-based fuzzing of every decoder that faces untrusted input: health-code payloads (base45, zlib,
CBOR, COSE), gRPC messages and manifests, index chunks, sealed labels, tokens, audit logs, trust and
revocation lists, and agency Parquet files. Each must return or raise its own documented error — never
another exception, never hang.

`make test` runs a few dozen examples per decoder; `make fuzz` runs many more
(HEALTHPSI_FUZZ_EXAMPLES, default here 40).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import zlib
from collections.abc import Callable
from typing import Any

import cbor2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.claims import health_claims
from coordinator.errors import IndexIntegrityError
from coordinator.index_cache import ENTRY_HEADER, Wanted
from crypto import codes, labels
from crypto.auditlog import AuditLog, verify_chain
from crypto.errors import CryptoError
from crypto.pki import (
    load_certificate,
    load_trust_list,
    make_revocations,
    parse_revocations,
    parse_trust_list,
)
from nodes.manifest import ManifestError, public_key_bytes, sign_manifest, verify_manifest
from nodes.store import AgencyStore, StoreError
from proto import tokens as tk
from proto.healthpsi.v1 import node_pb2
from proto.schemas import SCHEMAS
from runctx.pki import PkiPaths, init_keys, load_signing_key

EXAMPLES = int(os.environ.get("HEALTHPSI_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ISSUED = dt.datetime(2020, 2, 10, 6, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    """A run's PKI (roots, signing key, trust list), made once."""
    run = tmp_path_factory.mktemp("fuzz")
    (run / "scenario.json").write_text(json.dumps({"preset": "city-20k", "seed": 7, "as_of": "2020-02-10"}))
    return init_keys(run)


@pytest.fixture(scope="module")
def payload(pki: PkiPaths) -> str:
    """A valid health code."""
    claims = health_claims(code_id="c-1", issuer="healthpsi", colour="red", policy_version="1",
                           name="张三", subject_id="11010519491231002X", issued_at=ISSUED)
    return codes.issue_code(claims, *load_signing_key(pki))


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    """Overwrite bytes of `data` at (position mod length, value) pairs."""
    out = bytearray(data)
    for pos, value in edits:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6)


# ------------------------------------------------------------------------------------------ health codes


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_decodes_or_names_its_layer(text: str) -> None:
    for candidate in (text, "HCP1:" + text, "HC1:" + text):
        with contextlib.suppress(CryptoError):
            codes.decode_payload(candidate)


@FUZZ
@given(data=st.binary(max_size=600))
def test_any_bytes_inside_valid_outer_layers_are_refused_cleanly(data: bytes) -> None:
    for inner in (data, zlib.compress(data)):
        try:
            decoded = codes.decode_payload("HCP1:" + codes.b45encode(inner))
            codes.decode_claims(decoded.cose.payload)
        except CryptoError:
            pass


@FUZZ
@given(edits=EDITS, layer=st.sampled_from(["text", "zlib", "cose"]))
def test_a_mutated_code_never_verifies_and_never_crashes(
    pki: PkiPaths, payload: str, edits: list[tuple[int, int]], layer: str
) -> None:
    """A code changed at any layer either fails to decode, fails its signature, or (an edit that changes
    nothing the signature covers) is still the same code."""
    trust = pki_trust(pki)
    body = payload[len("HCP1:"):]
    cose = codes.decompress(codes.b45decode(body))
    if layer == "text":
        candidate = "HCP1:" + mutate(body.encode(), edits).decode("latin-1")
    elif layer == "zlib":
        candidate = "HCP1:" + codes.b45encode(mutate(zlib.compress(cose), edits))
    else:
        candidate = "HCP1:" + codes.b45encode(zlib.compress(mutate(cose, edits)))
    try:
        report = codes.check_payload(candidate, trust, ISSUED + dt.timedelta(hours=1), None)
    except CryptoError:
        return
    if report.valid:
        original = codes.decode_payload(payload).cose
        again = codes.decode_payload(candidate).cose
        assert (again.payload, again.signature) == (original.payload, original.signature)


def pki_trust(pki: PkiPaths) -> Any:
    """The run's trust list, checked against its root."""
    return load_trust_list(pki.trustlist, load_certificate(pki.root_cert))


@FUZZ
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.integers() | st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=12,
))
def test_any_cbor_value_as_a_cose_message_is_refused_cleanly(value: object) -> None:
    for wrapped in (value, cbor2.CBORTag(18, value)):
        with contextlib.suppress(CryptoError):
            codes.decode_cose(cbor2.dumps(wrapped))


# ---------------------------------------------------------------------------- trust and revocation lists


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=15,
)


@FUZZ
@given(doc=JSON, value=JSON,
       key=st.sampled_from(["type", "version", "issued_at", "revoked", "signature", "keys", "x"]))
def test_trust_and_revocation_lists_refuse_any_edit_cleanly(
    pki: PkiPaths, doc: Any, key: str, value: Any
) -> None:
    root = load_certificate(pki.root_cert)
    trust = parse_trust_list(json.loads(pki.trustlist.read_text()), root)
    checks: tuple[tuple[Any, Callable[[Any], object]], ...] = (
        (json.loads(pki.trustlist.read_text()), lambda d: parse_trust_list(d, root)),
        (json.loads(pki.revocations.read_text()), lambda d: parse_revocations(d, trust)),
    )
    for original, parse in checks:
        edited = {**original, key: value}
        for candidate in (doc, edited):
            try:
                parse(candidate)
            except CryptoError:
                continue
            assert candidate == original or candidate.get(key) == original.get(key)


def test_a_revocation_list_signed_by_another_key_is_refused(pki: PkiPaths) -> None:
    doc = make_revocations(["c-1"], ec.generate_private_key(ec.SECP256R1()), issued_at=ISSUED)
    trust = parse_trust_list(json.loads(pki.trustlist.read_text()), load_certificate(pki.root_cert))
    with pytest.raises(CryptoError, match="not in the trust list"):
        parse_revocations(doc, trust)
    genuine = json.loads(pki.revocations.read_text())
    with pytest.raises(CryptoError, match="does not verify"):
        parse_revocations({**doc, "kid": genuine["kid"]}, trust)  # claims the issuer's key, signed by another


# ----------------------------------------------------------------------------- gRPC messages, manifests


MESSAGES = (node_pb2.EvaluateRequest, node_pb2.EvaluateResponse, node_pb2.SignedManifest, node_pb2.Manifest,
            node_pb2.StreamIndexRequest, node_pb2.IndexChunk, node_pb2.GetManifestRequest)


@FUZZ
@given(data=st.binary(max_size=400))
def test_grpc_messages_parse_or_raise_decode_error(data: bytes) -> None:
    for message in MESSAGES:
        with contextlib.suppress(DecodeError):
            message.FromString(data)


NODE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@FUZZ
@given(edits=EDITS, data=st.binary(max_size=300))
def test_manifests_refuse_any_change_cleanly(edits: list[tuple[int, int]], data: bytes) -> None:
    manifest = node_pb2.Manifest(agency="carrier", as_of="2020-02-10")
    signed = sign_manifest(manifest, NODE_KEY)
    wire = signed.SerializeToString()
    for candidate in (mutate(wire, edits), data):
        try:
            parsed = node_pb2.SignedManifest.FromString(candidate)
        except DecodeError:
            continue
        try:
            verify_manifest(parsed, public_key_bytes(NODE_KEY))
        except ManifestError:
            continue
        assert parsed.manifest == signed.manifest or parsed == signed


# ------------------------------------------------------------------------------ index chunks and labels


@FUZZ
@given(data=st.binary(max_size=500), wanted=st.binary(min_size=16, max_size=16))
def test_index_chunks_walk_or_name_the_problem(data: bytes, wanted: bytes) -> None:
    chunk = data if len(data) < 20 else ENTRY_HEADER.pack(wanted, len(data) - 20) + data[20:]
    for candidate in (data, chunk):
        found = Wanted({wanted: ("token", bytes(32))})
        try:
            found.take(candidate, "chunk")
        except IndexIntegrityError:
            continue
        assert set(found.found) <= {"token"}
        found.take_prefix(candidate)


@FUZZ
@given(sealed=st.binary(max_size=200), key=st.binary(min_size=32, max_size=32))
def test_sealed_labels_open_only_under_their_key(sealed: bytes, key: bytes) -> None:
    try:
        labels.open_label(key, sealed)
    except CryptoError:
        return
    pytest.fail("random bytes opened as a sealed label")


@FUZZ
@given(text=st.text(max_size=120))
def test_tokens_and_partition_ids_parse_or_raise_their_error(text: str) -> None:
    for parse in (tk.parse, tk.parse_partition_id):
        with contextlib.suppress(tk.TokenError, ValueError):
            parse(text)


# ------------------------------------------------------------------------------------------ audit logs


@FUZZ
@given(lines=st.lists(st.binary(max_size=200), max_size=6), edits=EDITS)
def test_audit_log_verification_names_rather_than_crashes(
    lines: list[bytes], edits: list[tuple[int, int]]
) -> None:
    stream = io.BytesIO()
    log = AuditLog(stream)
    for i in range(3):
        log.append("evaluate", {"i": i})
    log.sign_head(NODE_KEY, "e")
    real = stream.getvalue().split(b"\n")[:-1]
    mutated = [mutate(line, edits) for line in real]
    for candidate in (lines, mutated, real + lines):
        report = verify_chain(candidate, NODE_KEY.public_key())
        assert len(report.entries) == len(candidate) - (1 if candidate[-1:] == [b""] else 0)
    if mutated != real:
        assert not verify_chain(mutated, NODE_KEY.public_key()).ok


# ------------------------------------------------------------------------------------ agency Parquet files


COLUMN_VALUES = st.sampled_from([
    pa.array([1, 2], pa.int64()), pa.array(["a", "b"]), pa.array([1.5, float("nan")]),
    pa.array([None, None], pa.int32()), pa.array([True, False]),
    pa.array([dt.date(2020, 2, 10), None], pa.date32()),
    pa.array([0, 2**40], pa.timestamp("s")), pa.array(["x" * 200, ""]),
])


@FUZZ
@given(columns=st.lists(COLUMN_VALUES, min_size=5, max_size=5), raw=st.binary(max_size=64),
       as_bytes=st.booleans())
def test_agency_files_of_any_types_are_served_or_named(
    tmp_path_factory: pytest.TempPathFactory, columns: list[pa.Array], raw: bytes, as_bytes: bool
) -> None:
    run = tmp_path_factory.mktemp("agency")
    root = run / "data" / "police"
    root.mkdir(parents=True)
    names = ("subject_id", "name", "birth_date", "household_id")
    pq.write_table(pa.table(dict(zip(names, columns[:4], strict=True))), root / "population.parquet")
    pq.write_table(SCHEMAS["declarations"].empty_table(), root / "declarations.parquet")
    hotel = root / "hotel_stays.parquet"
    if as_bytes:
        hotel.write_bytes(raw)
    else:
        hotel_names = ("subject_id", "hotel_id", "room", "check_in", "nights")
        pq.write_table(pa.table(dict(zip(hotel_names, [*columns[1:], columns[0]], strict=True))), hotel)
    try:
        store = AgencyStore(run, "police")
    except StoreError:
        pytest.fail("a bad file stopped the store instead of being named")
    for _pid, frame in store.iter_partitions((dt.date(2020, 2, 10), dt.date(2020, 2, 11))):
        assert list(frame.columns) == ["subject_id", "token"]
    assert set(store.unreadable) <= {str(root / "population.parquet"), str(hotel)}
