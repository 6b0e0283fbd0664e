"""Real `healthpsi node serve` processes on loopback: signed manifests, resumable index streams, mutual TLS
refusals, typed errors, budgets, idempotent retries, no plaintext on the wire, crash restart, clean stop."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from crypto import labels, oprf
from crypto.auditlog import verify_file
from crypto.group import ORDER
from crypto.pki import load_certificate, load_ec_private_key
from nodes.budget import BudgetPolicy, config_path, default_cap
from nodes.index import ENTRY_HEADER, entry_offsets
from nodes.manifest import ManifestError, verify_manifest
from nodes.secrets import NodeSecrets
from nodes.store import AgencyStore
from proto import ids, risk, tokens
from proto.healthpsi.v1 import node_pb2
from runctx.pki import PkiPaths, load_identities

from .conftest import AGENCIES, TEST_CHUNK_BYTES, NodeClient, NodeProcess, copy_run

SERVICE = "healthpsi.v1.MatchingNode"


# ------------------------------------------------------------------------------------------ helpers


def scenario(run: Path) -> dict[str, object]:
    """RUN/scenario.json."""
    return json.loads((run / "scenario.json").read_text())


def window(run: Path) -> tuple[dt.date, dt.date]:
    """The run's 14-day window."""
    sc = scenario(run)
    return risk.window(dt.date.fromisoformat(str(sc["as_of"])), int(sc.get("window_days", 14)))


def manifest_of(run: Path, agency: str, signed: node_pb2.SignedManifest) -> node_pb2.Manifest:
    """A manifest verified against the root-signed identities.json."""
    identity = load_identities(PkiPaths(run)).node(agency).public_bytes_raw()
    return verify_manifest(signed, identity)


def fetch_manifest(node: NodeProcess) -> node_pb2.Manifest:
    """A node's verified manifest."""
    with NodeClient(node.run, node.agency, node.address) as client:
        return manifest_of(node.run, node.agency, client.manifest())


def download(client: NodeClient, info: node_pb2.PartitionInfo) -> bytes:
    """A whole index, checking each chunk's digest and offset."""
    chunks = client.stream(info.partition_id, digest=info.index_digest)
    expected = 0
    for chunk in chunks:
        assert chunk.digest == hashlib.sha256(chunk.entries).digest()
        assert (chunk.offset, chunk.total) == (expected, info.entry_count)
        assert chunk.partition_id == info.partition_id
        assert len(entry_offsets(chunk.entries)) - 1 == chunk.count
        expected += chunk.count
    assert expected == info.entry_count
    return b"".join(c.entries for c in chunks)


def audit(run: Path, agency: str) -> list[dict[str, object]]:
    """A node's audit log entries."""
    path = run / "nodes" / agency / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def partition_tokens(run: Path, agency: str, partition_id: str) -> dict[str, list[str]]:
    """token -> subject ids of one partition, read the way the node reads it."""
    for pid, rows in AgencyStore(run, agency).iter_partitions(window(run)):
        if pid == partition_id:
            grouped = rows.astype(str).groupby("token")["subject_id"]
            return {t: sorted(s) for t, s in grouped}
    raise AssertionError(f"no partition {partition_id}")


def rpc_error(fn, *args: object, **kwargs: object) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    """Call fn expecting a gRPC error, and return it."""
    with pytest.raises(grpc.RpcError) as caught:
        fn(*args, **kwargs)
    return caught.value


def blinded_batch(n: int, label: str = "x") -> bytes:
    """n valid blinded elements of made-up inputs."""
    return oprf.blind_many([f"{label}|{i}".encode() for i in range(n)], oprf.Mode.VOPRF)[1]


def day_partitions(manifest: node_pb2.Manifest) -> list[node_pb2.PartitionInfo]:
    """The manifest's day partitions, by id."""
    return sorted((p for p in manifest.partitions if p.day != tokens.STATIC), key=lambda p: p.partition_id)


# --------------------------------------------------------------------------------------------- tests


def test_health_and_reflection(nodes: dict[str, NodeProcess]) -> None:
    node = nodes["transport"]
    with NodeClient(node.run, node.agency, node.address) as client:
        assert client.health() == health_pb2.HealthCheckResponse.SERVING
        assert client.health(SERVICE) == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = stub.ServerReflectionInfo(iter([request]))
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_manifests_verify_against_identities(city_run: Path, nodes: dict[str, NodeProcess]) -> None:
    as_of = str(scenario(city_run)["as_of"])
    for agency in AGENCIES:
        node = nodes[agency]
        with NodeClient(city_run, agency, node.address) as client:
            signed = client.manifest()
        manifest = manifest_of(city_run, agency, signed)
        assert (manifest.agency, manifest.suite, manifest.as_of) == (agency, "ristretto255-SHA512", as_of)
        assert manifest.window_days == 14 and manifest.max_batch > 0
        store = AgencyStore(city_run, agency)
        caps = BudgetPolicy.read(config_path(city_run, agency))
        assert dict(manifest.malformed) == store.malformed
        ids_ = [p.partition_id for p in manifest.partitions]
        assert ids_ == sorted(ids_) and set(ids_) <= set(store.partition_ids(window(city_run)))
        assert len({p.public_key for p in manifest.partitions}) == len(ids_)  # one key per partition
        for info in manifest.partitions:
            assert info.entry_count > 0 and len(info.index_digest) == 32 and len(info.public_key) == 32
            assert info.budget_total == caps.cap(info.partition_id, info.entry_count)
            if info.partition_id != "identity@static":  # the police operator declared the applications
                assert info.budget_total == default_cap(info.partition_id, info.entry_count)
            assert set(info.token_kinds) <= {k for k, v in tokens.KINDS.items() if v[0] == agency}
        other = next(a for a in AGENCIES if a != agency)
        with pytest.raises(ManifestError):
            verify_manifest(signed, load_identities(PkiPaths(city_run)).node(other).public_bytes_raw())


def test_index_downloaded_twice_is_identical_and_matches_manifest(nodes: dict[str, NodeProcess]) -> None:
    for agency in AGENCIES:
        node = nodes[agency]
        with NodeClient(node.run, agency, node.address) as client:
            manifest = manifest_of(node.run, agency, client.manifest())
            partitions = sorted(manifest.partitions, key=lambda p: -p.index_bytes)[:4]
            for info in partitions:
                first, second = download(client, info), download(client, info)
                assert first == second
                assert hashlib.sha256(first).digest() == info.index_digest and len(first) == info.index_bytes
                tags = [first[a : a + 16] for a in entry_offsets(first)[:-1]]
                assert tags == sorted(tags) and len(set(tags)) == len(tags)


def test_cut_stream_resumes_from_its_offset(nodes: dict[str, NodeProcess]) -> None:
    node = nodes["carrier"]
    with NodeClient(node.run, node.agency, node.address) as client:
        manifest = manifest_of(node.run, node.agency, client.manifest())
        info = max(manifest.partitions, key=lambda p: p.index_bytes)
        assert info.index_bytes > 3 * TEST_CHUNK_BYTES
        head = client.stream(info.partition_id, digest=info.index_digest, limit=2)
        assert len(head) == 2
        offset = head[-1].offset + head[-1].count
        assert 0 < offset < info.entry_count
        tail = client.stream(info.partition_id, offset=offset, digest=info.index_digest)
        assert tail[0].offset == offset
        data = b"".join(c.entries for c in head + tail)
        assert hashlib.sha256(data).digest() == info.index_digest
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cut = [
            e["data"]
            for e in audit(node.run, node.agency)
            if e["kind"] == "index_streamed"
            and e["data"]["partition_id"] == info.partition_id
            and not e["data"]["complete"]
        ]
        if cut:
            break
        time.sleep(0.2)
    assert cut and cut[-1]["offset"] == 0 and 0 < cut[-1]["entries"] < info.entry_count


def throwaway_client_cert(tmp_path: Path) -> tuple[bytes, bytes]:
    """A client certificate (CN of the coordinator, clientAuth) issued by a CA made here, and its key."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "elsewhere CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coordinator.healthpsi.local")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_clients_without_the_coordinator_certificate_are_refused_at_the_handshake(
    city_run: Path, nodes: dict[str, NodeProcess], tmp_path: Path
) -> None:
    node = nodes["police"]
    pki = PkiPaths(city_run)
    before = sum(e["kind"] == "manifest_published" for e in audit(city_run, "police"))
    foreign_cert, foreign_key = throwaway_client_cert(tmp_path)
    attempts = {
        "no certificate": {"certificate": None, "key": None},
        "another CA": {"certificate": foreign_cert, "key": foreign_key},
        "a node's own certificate": {
            "certificate": pki.node_cert("police").read_bytes(),
            "key": NodeSecrets.of(city_run, "police").tls_key.read_bytes(),
        },
    }
    for name, creds in attempts.items():
        with NodeClient(city_run, "police", node.address, use_coordinator=False, **creds) as client:
            error = rpc_error(client.manifest)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, name
            assert client.health() == health_pb2.HealthCheckResponse.UNKNOWN, name
    # no handler ran: nothing was published
    assert sum(e["kind"] == "manifest_published" for e in audit(city_run, "police")) == before
    with NodeClient(city_run, "police", node.address) as client:
        assert client.manifest().manifest


def test_a_root_issued_certificate_that_is_not_the_coordinator_is_denied(
    city_run: Path, nodes: dict[str, NodeProcess]
) -> None:
    pki = PkiPaths(city_run)
    root_key, root = load_ec_private_key(pki.root_key), load_certificate(pki.root_cert)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the coordinator")]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    node = nodes["police"]
    with NodeClient(
        city_run,
        "police",
        node.address,
        use_coordinator=False,
        certificate=cert.public_bytes(serialization.Encoding.PEM),
        key=pem_key,
    ) as client:
        error = rpc_error(client.manifest)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        error = rpc_error(client.evaluate, "identity@static", blinded_batch(1))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    refused = [e["data"] for e in audit(city_run, "police") if e["kind"] == "refused"]
    assert [(r["call"], r["status"]) for r in refused[-2:]] == [
        ("GetManifest", "PERMISSION_DENIED"), ("Evaluate", "PERMISSION_DENIED")
    ]


def test_undecodable_requests_are_refused_and_logged_with_lengths_capped(
    city_run: Path, nodes: dict[str, NodeProcess]
) -> None:
    node = nodes["carrier"]
    blob = node_pb2.EvaluateRequest(blinded_elements=b"\xff" * (1 << 20)).SerializeToString()
    megabyte = b"\x0a" + blob[1:]  # the same bytes as field 1: a 1 MB partition id, not UTF-8
    sent = {
        "Evaluate": [b"\x0a\x05ab", b"\x0f", megabyte],
        "StreamIndex": [b"\x0a\x05ab"],
        "GetManifest": [b"\x0f"],
    }
    with NodeClient(city_run, "carrier", node.address) as client:
        unary, stream = client.channel.unary_unary, client.channel.unary_stream  # bytes in, bytes out
        for call, requests in sent.items():
            for request in requests:
                method = f"/{SERVICE}/{call}"
                if call == "StreamIndex":
                    error = rpc_error(lambda r, m=method: list(stream(m)(r, timeout=30)), request)
                else:
                    error = rpc_error(unary(method), request, timeout=30)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (call, request[:8])
                assert f"a request of {len(request)} bytes that is not a {call} request" in error.details()
                assert len(error.details()) < 1000
        assert client.manifest().manifest  # the node still serves
    refused = [e for e in audit(city_run, "carrier") if e["kind"] == "refused"][-5:]
    assert [(e["data"]["call"], e["data"]["status"]) for e in refused] == [
        (call, "INVALID_ARGUMENT") for call, requests in sent.items() for _ in requests
    ]
    assert f"{len(megabyte)} bytes" in refused[2]["data"]["reason"]
    log_bytes = (city_run / "nodes" / "carrier" / "audit.jsonl").read_bytes()
    assert max(len(line) for line in log_bytes.splitlines()) < 4096


def test_invalid_requests_get_typed_errors(nodes: dict[str, NodeProcess]) -> None:
    node = nodes["transport"]
    with NodeClient(node.run, node.agency, node.address) as client:
        manifest = manifest_of(node.run, node.agency, client.manifest())
        # a partition whose cap fits every batch below: only their contents are wrong
        pid = max(day_partitions(manifest), key=lambda p: p.budget_total).partition_id
        good = blinded_batch(1)
        invalid = {
            "identity": bytes(32),
            "non-canonical (not reduced)": (2**255 - 19).to_bytes(32, "little"),
            "non-canonical (negative)": (1).to_bytes(32, "little"),
            "high bit set": good[:31] + bytes([good[31] | 0x80]),
            "not a point": ORDER.to_bytes(32, "little"),
            "short": good[:31],
            "long": good + b"\x00",
            "empty": b"",
            "second of two": good + bytes(32),
        }
        for name, blinded in invalid.items():
            error = rpc_error(client.evaluate, pid, blinded)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        error = rpc_error(client.evaluate, pid, blinded_batch(manifest.max_batch + 1))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"max_batch {manifest.max_batch}" in error.details()
        assert rpc_error(client.evaluate, "trip@1999-01-01", good).code() == grpc.StatusCode.NOT_FOUND
        assert rpc_error(client.stream, "nowhere@static").code() == grpc.StatusCode.NOT_FOUND
        stale = rpc_error(client.stream, pid, digest=b"\x00" * 32)
        assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION
        after = manifest_of(node.run, node.agency, client.manifest())
        assert (
            next(p for p in after.partitions if p.partition_id == pid).budget_left
            == next(p for p in manifest.partitions if p.partition_id == pid).budget_left
        )


def test_over_budget_is_refused_and_logged(city_run: Path, nodes: dict[str, NodeProcess]) -> None:
    node = nodes["transport"]
    with NodeClient(city_run, "transport", node.address) as client:
        info = day_partitions(manifest_of(city_run, "transport", client.manifest()))[1]
        cap = info.budget_total
        assert info.budget_left == cap
        too_many = blinded_batch(cap + 1, "over")
        error = rpc_error(client.evaluate, info.partition_id, too_many)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"cap {cap} elements, used 0" in error.details() and f"asks for {cap + 1}" in error.details()
        assert client.evaluate(info.partition_id, blinded_batch(cap - 1, "fits")).budget_left == 1
        error = rpc_error(client.evaluate, info.partition_id, blinded_batch(2, "more"))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"cap {cap} elements, used {cap - 1}, 1 left" in error.details()
        after = manifest_of(city_run, "transport", client.manifest())
        assert next(p for p in after.partitions if p.partition_id == info.partition_id).budget_left == 1
    logged = [
        e["data"]
        for e in audit(city_run, "transport")
        if e["kind"] == "evaluate" and e["data"]["partition_id"] == info.partition_id
    ]
    refused = [e for e in logged if e.get("status") == "RESOURCE_EXHAUSTED"]
    assert [e["inputs_sha256"] for e in refused][:1] == [hashlib.sha256(too_many).hexdigest()]
    assert refused[0]["count"] == cap + 1 and refused[0]["budget_left"] == cap
    assert [e["outcome"] for e in logged] == ["refused", "charged", "refused"]


def test_retried_evaluate_is_answered_identically_and_charged_once(
    city_run: Path, nodes: dict[str, NodeProcess]
) -> None:
    node = nodes["transport"]
    with NodeClient(city_run, "transport", node.address) as client:
        info = day_partitions(manifest_of(city_run, "transport", client.manifest()))[2]
        at_token = partition_tokens(city_run, "transport", info.partition_id)
        token = sorted(at_token, key=lambda t: (-len(at_token[t]), t))[0]
        inputs = [token.encode(), b"trip|NOWHERE|" + info.day.encode()]
        blinds, blinded = oprf.blind_many(inputs, oprf.Mode.VOPRF)
        first = client.evaluate(info.partition_id, blinded, key="epoch-1/retry")
        second = client.evaluate(info.partition_id, blinded, key="epoch-1/retry")
        assert first.SerializeToString() == second.SerializeToString()
        assert first.budget_left == info.budget_total - 2
        changed = rpc_error(client.evaluate, info.partition_id, blinded[:32], key="epoch-1/retry")
        assert changed.code() == grpc.StatusCode.FAILED_PRECONDITION
        after = manifest_of(city_run, "transport", client.manifest())
        assert (
            next(p for p in after.partitions if p.partition_id == info.partition_id).budget_left
            == info.budget_total - 2
        )
        # the answer is right: the proof verifies and the token's label opens to its subjects
        evaluated = [first.evaluated_elements[:32], first.evaluated_elements[32:]]
        oprf.verify_proof(info.public_key, [blinded[:32], blinded[32:]], evaluated, first.proof)
        outputs = oprf.finalize_many(inputs, blinds, first.evaluated_elements)
        index = download(client, info)
        entries = {
            index[a : a + 16]: index[a + ENTRY_HEADER.size : b]
            for a, b in zip(entry_offsets(index)[:-1], entry_offsets(index)[1:], strict=True)
        }
        tag, key = labels.derive_tag_key(outputs[0])
        assert [ids.from_int(b) for b in labels.open_label(key, entries[tag])] == at_token[token]
        assert labels.derive_tag_key(outputs[1])[0] not in entries
    outcomes = [
        e["data"]["outcome"]
        for e in audit(city_run, "transport")
        if e["kind"] == "evaluate" and e["data"]["idempotency_key"] == "epoch-1/retry"
    ]
    assert outcomes == ["charged", "replayed", "refused"]


def _token_hits(transcript: bytes, all_tokens: set[str]) -> list[str]:
    """Every token of `all_tokens` that occurs in the transcript (each token starts with '<kind>|')."""
    by_kind: dict[str, set[bytes]] = {}
    for t in all_tokens:
        by_kind.setdefault(t.split("|", 1)[0], set()).add(t.encode())
    hits = []
    for kind, encoded in by_kind.items():
        lengths = sorted({len(t) for t in encoded})
        prefix = (kind + "|").encode()
        at = transcript.find(prefix)
        while at != -1:
            hits += [transcript[at : at + n].decode() for n in lengths if transcript[at : at + n] in encoded]
            at = transcript.find(prefix, at + 1)
    return hits


def _body_hits(transcript: bytes, bodies: np.ndarray) -> np.ndarray:
    """Subject bodies whose 8-byte big-endian form occurs anywhere (at any alignment) in the transcript."""
    table = np.unique(bodies.astype(np.uint64))
    found = []
    for k in range(min(8, max(0, len(transcript) - 7))):
        words = np.frombuffer(transcript, dtype=">u8", count=(len(transcript) - k) // 8, offset=k)
        words = words.astype(np.uint64)
        at = np.minimum(np.searchsorted(table, words), len(table) - 1)
        found.append(words[table[at] == words])
    return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.uint64)


@pytest.mark.parametrize("agency", AGENCIES)
def test_nothing_the_node_sends_contains_a_token_or_subject_id(
    city_run: Path, nodes: dict[str, NodeProcess], agency: str
) -> None:
    node = nodes[agency]
    all_tokens: set[str] = set()
    subjects: set[str] = set()
    some_tokens: dict[str, list[str]] = {}
    for pid, rows in AgencyStore(city_run, agency).iter_partitions(window(city_run)):
        some_tokens[pid] = sorted(set(rows["token"].astype(str)))[:16]
        all_tokens.update(rows["token"].astype(str))
        subjects.update(rows["subject_id"].astype(str))
    assert all_tokens and subjects
    with NodeClient(city_run, agency, node.address) as client:
        client.health()
        manifest = manifest_of(city_run, agency, client.manifest())
        for info in manifest.partitions:
            download(client, info)
        info = manifest.partitions[-1]
        mine = some_tokens[info.partition_id][: info.budget_left]
        client.evaluate(info.partition_id, oprf.blind_many([t.encode() for t in mine], oprf.Mode.VOPRF)[1])
        for bad in (bytes(32), b"\x01" * 31):
            rpc_error(client.evaluate, info.partition_id, bad)
        rpc_error(client.stream, info.partition_id, digest=b"\x00" * 32)
        transcript = b"\n".join(client.transcript)
    assert len(transcript) > sum(p.index_bytes for p in manifest.partitions)
    assert _token_hits(transcript, all_tokens) == []
    ids_found = {m.group(1).decode() for m in re.finditer(rb"(?=([0-9]{17}[0-9X]))", transcript)}
    assert ids_found & subjects == set()
    bodies_found = {m.group(1).decode() for m in re.finditer(rb"(?=([0-9]{17}))", transcript)}
    assert bodies_found & {s[:17] for s in subjects} == set()
    bodies = np.array(sorted(ids.to_int(s) for s in subjects), dtype=np.uint64)
    assert _body_hits(transcript, bodies).size == 0
    # the checks can fail: a transcript holding one of them is caught
    probe = transcript + sorted(subjects)[0].encode() + int(bodies[3]).to_bytes(8, "big")
    assert _body_hits(probe, bodies).size == 1
    assert _token_hits(transcript + sorted(all_tokens)[0].encode(), all_tokens) == [sorted(all_tokens)[0]]


@pytest.fixture(scope="module")
def spare_run(city_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the city with no node state, for tests that kill or stop their own node."""
    return copy_run(city_run, tmp_path_factory.mktemp("spare") / "run")


SPARE = "transport"


def test_killed_node_restarts_and_serves_the_same_index_without_rebuilding(spare_run: Path) -> None:
    first = NodeProcess(spare_run, SPARE).wait_ready()
    try:
        before = fetch_manifest(first)
        assert "index built" in first.log()
    finally:
        first.kill()
    assert first.process.returncode == -9
    index_dir = spare_run / "nodes" / SPARE / "index"
    mtimes = {p.name: p.stat().st_mtime_ns for p in index_dir.iterdir()}
    second = NodeProcess(spare_run, SPARE).wait_ready()
    try:
        after = fetch_manifest(second)
        assert [(p.partition_id, p.index_digest, p.public_key) for p in after.partitions] == [
            (p.partition_id, p.index_digest, p.public_key) for p in before.partitions
        ]
        log = second.log()
        assert "index built" not in log
        assert log.count("index reused") == len(after.partitions)
        assert {p.name: p.stat().st_mtime_ns for p in index_dir.iterdir()} == mtimes
        with NodeClient(spare_run, SPARE, second.address) as client:
            info = after.partitions[0]
            assert hashlib.sha256(download(client, info)).digest() == info.index_digest
    finally:
        assert second.terminate() == 0
    identity = load_identities(PkiPaths(spare_run)).node(SPARE)
    chain = verify_file(spare_run / "nodes" / SPARE / "audit.jsonl", identity)
    assert chain.ok, chain.summary()


def test_sigterm_drains_a_running_stream_and_exits_zero(spare_run: Path) -> None:
    node = NodeProcess(spare_run, SPARE).wait_ready()
    try:
        with NodeClient(spare_run, SPARE, node.address) as client:
            manifest = manifest_of(spare_run, SPARE, client.manifest())
            info = max(manifest.partitions, key=lambda p: p.index_bytes)
            call = client.stub.StreamIndex(
                node_pb2.StreamIndexRequest(partition_id=info.partition_id, index_digest=info.index_digest),
                timeout=60,
            )
            chunks = [next(call)]
            node.process.send_signal(15)
            time.sleep(0.5)
            chunks += list(call)
            data = b"".join(c.entries for c in chunks)
            assert hashlib.sha256(data).digest() == info.index_digest
        assert node.process.wait(timeout=30) == 0
    finally:
        node.kill()
    assert not node.port_file.exists()
    assert "stopped" in node.log()
    identity = load_identities(PkiPaths(spare_run)).node(SPARE)
    chain = verify_file(spare_run / "nodes" / SPARE / "audit.jsonl", identity)
    assert chain.ok and chain.unsigned_tail == 0, chain.summary()


def test_a_node_on_the_run_clock_rolls_when_its_date_file_changes(
    city_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = copy_run(city_run, tmp_path_factory.mktemp("rolling") / "run")
    node = NodeProcess(run, SPARE, "--clock", "run").wait_ready()
    try:
        before = fetch_manifest(node)
        as_of = dt.date.fromisoformat(before.as_of)
        next_day = as_of + dt.timedelta(days=2)
        first = (next_day - dt.timedelta(days=before.window_days - 1)).isoformat()
        leaving = [p for p in before.partitions if p.day != "static" and p.day < first]
        assert leaving  # two days leave the window; at least one of them has tickets
        (run / "nodes" / SPARE / "date").write_text(next_day.isoformat() + "\n")
        deadline = time.monotonic() + 600
        after = before
        while after.as_of != next_day.isoformat() and time.monotonic() < deadline:
            time.sleep(0.5)
            after = fetch_manifest(node)
        assert after.as_of == next_day.isoformat(), node.log()[-2000:]
        assert not {p.partition_id for p in leaving} & {p.partition_id for p in after.partitions}
        with NodeClient(run, SPARE, node.address) as client:
            error = rpc_error(client.evaluate, leaving[0].partition_id, blinded_batch(1))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert node.process.poll() is None  # the same process, never restarted
    finally:
        assert node.terminate() == 0
    for part in leaving:
        assert not (run / "nodes" / f"{SPARE}.secrets" / "days" / f"{part.day}.key").exists()
        assert not (run / "nodes" / SPARE / "keys" / f"{part.partition_id}.key").exists()
    rolled = [e["data"]["as_of"] for e in audit(run, SPARE) if e["kind"] == "node_rolled"]
    assert rolled == [next_day.isoformat()]
