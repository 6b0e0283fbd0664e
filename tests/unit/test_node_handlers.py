"""NodeHandlers in-process over a small hand-made transport dataset: manifest, index, Evaluate, budgets,
audit log, restart reuse and key destruction."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import shutil
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from crypto import labels, oprf
from crypto.auditlog import verify_file
from crypto.drbg import Drbg
from crypto.group import ORDER, base_mult
from nodes import index as idx
from nodes import startup as startup_module
from nodes.budget import BudgetPolicy
from nodes.handlers import NodeHandlers
from nodes.manifest import ManifestError, verify_manifest
from nodes.startup import NodeBusy, open_node
from proto import ids
from proto.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from proto.healthpsi.v1 import node_pb2
from runctx.pki import PkiPaths, create_pki, load_identities
from runner.enrollment import enroll_nodes

AS_OF = dt.date(2020, 1, 20)
FIRST_DAY = dt.date(2020, 1, 3)  # three days before the 14-day window
DAYS = 20
BAD_IDS = 2


def ticket_rows(day_index: int) -> list[dict[str, object]]:
    """Tickets of one day: three trips of four carriages, a dozen riders each."""
    day = FIRST_DAY + dt.timedelta(days=day_index)
    rows = []
    for trip in range(3):
        for rider in range(12):
            body = 11000000000000000 + day_index * 1000 + trip * 100 + rider
            rows.append({"subject_id": ids.from_int(body), "trip_id": f"G{trip}", "service_date": day,
                         "carriage": rider % 4 + 1})
    return rows


def write_run(run: Path) -> None:
    """scenario.json, a PKI and transport tickets (one row group per day, with malformed rows)."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "scenario.json").write_text(
        json.dumps({"as_of": AS_OF.isoformat(), "window_days": 14, "seed": 7, "deterministic": True})
    )
    create_pki(PkiPaths(run), rng=Drbg(b"test pki"), now=dt.datetime(2020, 1, 20))
    enroll_nodes(run, ["transport"])
    schema = pa.schema([("subject_id", pa.string()), ("trip_id", pa.string()),
                        ("service_date", pa.date32()), ("carriage", pa.int16())])
    path = run / "data" / "transport" / "tickets.parquet"
    path.parent.mkdir(parents=True)
    with pq.ParquetWriter(path, schema) as writer:
        for d in range(DAYS):
            rows = ticket_rows(d)
            if d == 10:
                rows += [{**rows[0], "subject_id": "12345678901234567Z"}, {**rows[1], "subject_id": "1"}]
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with data and PKI, no node state."""
    run = tmp_path_factory.mktemp("run")
    write_run(run)
    return run


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of the run for one test."""
    target = tmp_path / "run"
    shutil.copytree(base_run, target)
    return target


@pytest.fixture
def node(run: Path) -> NodeHandlers:
    """Handlers over the fresh run, every cap set to 1024 by the operator (closed after the test)."""
    handlers = open_node(run, "transport", budget=BudgetPolicy.parse(["1024"]))
    yield handlers
    handlers.close()


def day_pid(day: dt.date) -> str:
    """The carriage partition of a day (12 tokens a day)."""
    return f"carriage@{day.isoformat()}"


def trip_pid(day: dt.date) -> str:
    """The trip partition of a day (3 tokens a day)."""
    return f"trip@{day.isoformat()}"


def day_pids(day: dt.date) -> list[str]:
    """Both partitions of a day, one per token kind, in build order."""
    return [day_pid(day), trip_pid(day)]


def download(node: NodeHandlers, pid: str, offset: int = 0) -> bytes:
    """A partition's index bytes from an offset, checking chunk digests and offsets."""
    out = b""
    expected = offset
    for chunk in node.stream_index(node_pb2.StreamIndexRequest(partition_id=pid, offset=offset)):
        assert chunk.digest == hashlib.sha256(chunk.entries).digest()
        assert chunk.offset == expected
        expected += chunk.count
        out += chunk.entries
    return out


def audit_entries(run: Path) -> list[dict[str, object]]:
    """The node's audit log entries."""
    path = run / "nodes" / "transport" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_manifest_is_signed_and_describes_the_window(run: Path, node: NodeHandlers) -> None:
    signed = node.get_manifest(node_pb2.GetManifestRequest())
    identity = load_identities(PkiPaths(run)).node("transport").public_bytes_raw()
    manifest = verify_manifest(signed, identity)
    assert manifest.agency == "transport" and manifest.suite == "ristretto255-SHA512"
    assert manifest.as_of == "2020-01-20" and manifest.window_days == 14
    # simulated clock of a seeded run: the end of the as_of day
    assert manifest.issued_at == "2020-01-21T00:00:00"
    days = [AS_OF - dt.timedelta(days=i) for i in range(14)]
    expected = sorted(f"{kind}@{d.isoformat()}" for d in days for kind in ("carriage", "trip"))
    assert sorted(p.partition_id for p in manifest.partitions) == expected
    assert manifest.malformed["bad_subject_id"] == BAD_IDS
    for info in manifest.partitions:  # one partition per kind: 12 carriages, 3 trips a day
        kind = info.partition_id.split("@")[0]
        assert tuple(info.token_kinds) == (kind,) and info.dataset == "tickets"
        assert info.entry_count == {"carriage": 12, "trip": 3}[kind]
        assert info.budget_total == info.budget_left == 1024  # the operator's cap
        data = download(node, info.partition_id)
        assert hashlib.sha256(data).digest() == info.index_digest and len(data) == info.index_bytes
    forged = node_pb2.SignedManifest()
    forged.CopyFrom(signed)
    forged.manifest = signed.manifest[:-1] + bytes([signed.manifest[-1] ^ 1])
    with pytest.raises(ManifestError):
        verify_manifest(forged, identity)


def test_evaluate_finds_the_riders_of_a_carriage(node: NodeHandlers) -> None:
    pid = day_pid(AS_OF)
    info = next(p for p in node.manifest().partitions if p.partition_id == pid)
    day_index = (AS_OF - FIRST_DAY).days
    token = f"carriage|G1|{AS_OF.isoformat()}|2".encode()
    absent = f"carriage|G9|{AS_OF.isoformat()}|2".encode()
    blinds, blinded = oprf.blind_many([token, absent], oprf.Mode.VOPRF)
    response = node.evaluate(node_pb2.EvaluateRequest(partition_id=pid, blinded_elements=blinded,
                                                      verifiable=True, idempotency_key="t1"))
    assert response.inputs_digest == hashlib.sha256(blinded).digest()
    assert response.budget_left == 1022
    evaluated = [response.evaluated_elements[i : i + 32] for i in (0, 32)]
    oprf.verify_proof(info.public_key, [blinded[:32], blinded[32:]], evaluated, response.proof)
    outputs = oprf.finalize_many([token, absent], blinds, response.evaluated_elements)
    entries = download(node, pid)
    offsets = idx.entry_offsets(entries)
    by_tag = {entries[a : a + 16]: entries[a + 20 : b] for a, b in itertools.pairwise(offsets)}
    tag, key = labels.derive_tag_key(outputs[0])
    riders = [ids.from_int(b) for b in labels.open_label(key, by_tag[tag])]
    expected = [ids.from_int(11000000000000000 + day_index * 1000 + 100 + r) for r in (1, 5, 9)]
    assert riders == expected
    assert labels.derive_tag_key(outputs[1])[0] not in by_tag


@pytest.mark.parametrize(
    ("blinded", "reason"),
    [
        (b"", "non-empty multiple of 32"),
        (bytes(31), "multiple of 32"),
        (bytes(32), "identity"),
        ((2**255 - 1).to_bytes(32, "little"), "non-canonical"),
        (base_mult((5).to_bytes(32, "little"))[:31] + b"\xff", "blinded element 0"),
        (base_mult((5).to_bytes(32, "little")) + bytes(32), "blinded element 1: the identity"),
        (ORDER.to_bytes(32, "little"), "blinded element 0"),
    ],
    ids=["empty", "short", "identity", "non-canonical", "not-a-point", "second-is-identity", "order"],
)
def test_invalid_elements_are_invalid_argument_and_logged(
    run: Path, node: NodeHandlers, blinded: bytes, reason: str
) -> None:
    pid = day_pid(AS_OF)
    with pytest.raises(InvalidArgument, match=reason):
        node.evaluate(node_pb2.EvaluateRequest(partition_id=pid, blinded_elements=blinded, verifiable=True))
    last = audit_entries(run)[-1]
    assert last["kind"] == "evaluate"
    assert last["data"]["outcome"] == "refused" and last["data"]["status"] == "INVALID_ARGUMENT"
    assert last["data"]["inputs_sha256"] == hashlib.sha256(blinded).hexdigest()
    assert node.ledger.budget(pid).used == 0


def test_oversized_batch_and_unknown_partition(node: NodeHandlers) -> None:
    node.max_batch = 4
    _, blinded = oprf.blind_many([b"a"] * 5, oprf.Mode.VOPRF)
    with pytest.raises(InvalidArgument, match="max_batch 4"):
        node.evaluate(node_pb2.EvaluateRequest(partition_id=day_pid(AS_OF), blinded_elements=blinded))
    with pytest.raises(NotFound):
        node.evaluate(node_pb2.EvaluateRequest(partition_id="carriage@1999-01-01", blinded_elements=blinded))
    with pytest.raises(NotFound):
        node.stream_index(node_pb2.StreamIndexRequest(partition_id=day_pid(FIRST_DAY)))


def test_stream_index_checks_digest_and_offset_and_resumes(node: NodeHandlers) -> None:
    pid = day_pid(AS_OF)
    info = next(p for p in node.manifest().partitions if p.partition_id == pid)
    with pytest.raises(FailedPrecondition, match="fetch the manifest again"):
        node.stream_index(node_pb2.StreamIndexRequest(partition_id=pid, index_digest=b"x" * 32))
    with pytest.raises(InvalidArgument, match="past the end"):
        node.stream_index(node_pb2.StreamIndexRequest(partition_id=pid, offset=info.entry_count + 1))
    node.chunk_bytes = 100
    whole = download(node, pid)
    assert whole.endswith(download(node, pid, offset=7))
    assert download(node, pid, offset=info.entry_count) == b""


def test_budget_refusal_and_idempotent_retry(run: Path) -> None:
    node = open_node(run, "transport", budget=BudgetPolicy.parse(["tickets=5"]))
    try:
        pid = day_pid(AS_OF)
        _, blinded = oprf.blind_many([b"a", b"b", b"c"], oprf.Mode.VOPRF)
        request = node_pb2.EvaluateRequest(partition_id=pid, blinded_elements=blinded, verifiable=True,
                                           idempotency_key="epoch-1/0")
        first = node.evaluate(request)
        assert first.budget_left == 2
        again = node.evaluate(request)
        assert again == first
        assert node.ledger.budget(pid).used == 3
        refusal = r"cap 5 elements, used 3, 2 left, this request asks for 3"
        with pytest.raises(ResourceExhausted, match=refusal):
            node.evaluate(node_pb2.EvaluateRequest(partition_id=pid, blinded_elements=blinded,
                                                   idempotency_key="epoch-1/1"))
        with pytest.raises(FailedPrecondition, match="different blinded elements"):
            node.evaluate(node_pb2.EvaluateRequest(partition_id=pid, blinded_elements=blinded[:64],
                                                   idempotency_key="epoch-1/0"))
        info = next(p for p in node.manifest().partitions if p.partition_id == pid)
        assert (info.budget_total, info.budget_left) == (5, 2)
    finally:
        node.close()
    evaluations = [e["data"] for e in audit_entries(run) if e["kind"] == "evaluate"]
    outcomes = [(e["outcome"], e.get("status")) for e in evaluations]
    assert outcomes == [("charged", None), ("replayed", None), ("refused", "RESOURCE_EXHAUSTED"),
                        ("refused", "FAILED_PRECONDITION")]
    refused = evaluations[2]
    assert refused["count"] == 3 and refused["budget_left"] == 2 and refused["idempotency_key"] == "epoch-1/1"
    # the budget survives a restart
    reopened = open_node(run, "transport", budget=BudgetPolicy.parse(["tickets=5"]))
    try:
        assert reopened.ledger.budget(pid).left == 2
        assert reopened.evaluate(request) == first
    finally:
        reopened.close()


def test_restart_reuses_indexes_and_rebuilds_only_changed_partitions(
    run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = open_node(run, "transport")
    digests = {p.partition_id: p.index_digest for p in first.manifest().partitions}
    first.close()
    index_dir = run / "nodes" / "transport" / "index"
    mtimes = {p.name: p.stat().st_mtime_ns for p in index_dir.iterdir()}
    caplog.set_level("INFO", logger="healthpsi.node")
    second = open_node(run, "transport")
    assert {p.partition_id: p.index_digest for p in second.manifest().partitions} == digests
    second.close()
    assert {p.name: p.stat().st_mtime_ns for p in index_dir.iterdir()} == mtimes
    assert sum("index reused" in r.message for r in caplog.records) == 2 * 14  # two kinds a day
    assert not any("index built" in r.message for r in caplog.records)
    # a corrupted index file is detected and rebuilt to the same digest (same key, same rows)
    victim = index_dir / f"{day_pid(AS_OF)}.idx"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    caplog.clear()
    third = open_node(run, "transport")
    assert {p.partition_id: p.index_digest for p in third.manifest().partitions} == digests
    third.close()
    assert [r.message.split(":")[0] for r in caplog.records if "index built" in r.message] == [
        f"index built for {day_pid(AS_OF)}"
    ]
    chain = verify_file(run / "nodes" / "transport" / "audit.jsonl",
                        load_identities(PkiPaths(run)).node("transport"))
    assert chain.ok and chain.unsigned_tail == 0, chain.summary()


def test_keys_are_destroyed_when_partitions_leave_the_window(run: Path) -> None:
    node = open_node(run, "transport")
    oldest = day_pid(AS_OF - dt.timedelta(days=13))
    _, blinded = oprf.blind_many([b"a"], oprf.Mode.VOPRF)
    request = node_pb2.EvaluateRequest(partition_id=oldest, blinded_elements=blinded, idempotency_key="k")
    node.evaluate(request)
    node.close()
    keys_dir = run / "nodes" / "transport" / "keys"
    assert (keys_dir / f"{day_pid(AS_OF - dt.timedelta(days=13))}.key").exists()
    later = AS_OF + dt.timedelta(days=2)  # the last day with data
    node = open_node(run, "transport", as_of=later)
    served = {p.partition_id for p in node.manifest().partitions}
    node.close()
    gone = [AS_OF - dt.timedelta(days=d) for d in (13, 12)]
    for day in gone:
        assert not (keys_dir / f"{day_pid(day)}.key").exists()
        assert not (run / "nodes" / "transport" / "index" / f"{day_pid(day)}.idx").exists()
    entries = audit_entries(run)
    destroyed = [e["data"]["partition_id"] for e in entries if e["kind"] == "partition_key_destroyed"]
    assert sorted(destroyed) == sorted(pid for d in gone for pid in day_pids(d))
    stored = sqlite3.connect(run / "nodes" / "transport" / "state.sqlite").execute(
        "SELECT COUNT(*) FROM requests WHERE partition_id = ?", (oldest,)).fetchone()[0]
    assert stored == 0
    assert day_pid(later) in served and not served & {pid for d in gone for pid in day_pids(d)}


def test_seeded_runs_are_reproducible(base_run: Path, tmp_path: Path) -> None:
    manifests = []
    for name in ("a", "b"):
        target = tmp_path / name
        shutil.copytree(base_run, target)
        node = open_node(target, "transport")
        manifests.append(node.manifest().SerializeToString(deterministic=True))
        node.close()
    assert manifests[0] == manifests[1]
    key_a = (tmp_path / "a" / "nodes" / "transport" / "keys" / f"{day_pid(AS_OF)}.key").read_bytes()
    key_b = (tmp_path / "b" / "nodes" / "transport" / "keys" / f"{day_pid(AS_OF)}.key").read_bytes()
    assert key_a == key_b
    log_a = (tmp_path / "a" / "nodes" / "transport" / "audit.jsonl").read_bytes()
    log_b = (tmp_path / "b" / "nodes" / "transport" / "audit.jsonl").read_bytes()
    assert log_a == log_b


def test_restart_with_unchanged_files_skips_reading_the_data(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_node(run, "transport")
    digests = {p.partition_id: p.index_digest for p in first.manifest().partitions}
    malformed = dict(first.manifest().malformed)
    first.close()

    def no_store(*args: object) -> None:
        raise AssertionError("the data files were read again")

    monkeypatch.setattr(startup_module, "AgencyStore", no_store)
    second = open_node(run, "transport")
    try:
        manifest = second.manifest()
        assert {p.partition_id: p.index_digest for p in manifest.partitions} == digests
        assert dict(manifest.malformed) == malformed
    finally:
        second.close()


def test_changed_data_rebuilds_only_the_partitions_whose_rows_changed(
    run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = open_node(run, "transport")
    digests = {p.partition_id: p.index_digest for p in first.manifest().partitions}
    first.close()
    path = run / "data" / "transport" / "tickets.parquet"
    table = pq.read_table(path)
    extra = {**ticket_rows(15)[0], "subject_id": ids.from_int(99000000000000001)}
    changed_day = FIRST_DAY + dt.timedelta(days=15)
    with pq.ParquetWriter(path, table.schema) as writer:
        for d in range(DAYS):
            day_rows = table.filter(pc.equal(table["service_date"], FIRST_DAY + dt.timedelta(days=d)))
            if d == 15:
                day_rows = pa.concat_tables([day_rows, pa.Table.from_pylist([extra], schema=table.schema)])
            writer.write_table(day_rows)
    caplog.set_level("INFO", logger="healthpsi.node")
    second = open_node(run, "transport")
    try:
        now = {p.partition_id: p.index_digest for p in second.manifest().partitions}
    finally:
        second.close()
    built = [r.message.split(":")[0] for r in caplog.records if "index built" in r.message]
    assert built == [f"index built for {pid}" for pid in day_pids(changed_day)]  # the new rider's two kinds
    assert {pid for pid in now if now[pid] != digests[pid]} == set(day_pids(changed_day))


def test_one_node_per_state_directory(run: Path) -> None:
    node = open_node(run, "transport")
    try:
        with pytest.raises(NodeBusy, match="in use by another node"):
            open_node(run, "transport")
    finally:
        node.close()
    open_node(run, "transport").close()


def _tags(index: bytes) -> set[bytes]:
    """The tags of a partition's canonical index bytes."""
    return {index[o : o + 16] for o in idx.entry_offsets(index) if o < len(index)}


def test_a_partition_with_late_rows_is_rebuilt_under_a_fresh_key(run: Path) -> None:
    changed = FIRST_DAY + dt.timedelta(days=15)
    pid, untouched = day_pid(changed), day_pid(AS_OF)
    first = open_node(run, "transport")
    try:
        before = {p.partition_id: p for p in first.manifest().partitions}
        old_index = download(first, pid)
    finally:
        first.close()
    old_sealed = (run / "nodes" / "transport" / "keys" / f"{pid}.key").read_bytes()
    path = run / "data" / "transport" / "tickets.parquet"
    table = pq.read_table(path)
    late = pa.Table.from_pylist([{**ticket_rows(15)[0], "subject_id": ids.from_int(99000000000000001)}],
                                schema=table.schema)
    with pq.ParquetWriter(path, table.schema) as writer:  # the late row arrives as a group of its own
        writer.write_table(table)
        writer.write_table(late)
    second = open_node(run, "transport")
    try:
        after = {p.partition_id: p for p in second.manifest().partitions}
        new_index = download(second, pid)
    finally:
        second.close()
    assert (before[pid].key_version, after[pid].key_version) == (1, 2)
    assert after[pid].public_key != before[pid].public_key
    assert not _tags(old_index) & _tags(new_index)
    assert after[untouched].key_version == 1 and after[untouched].public_key == before[untouched].public_key
    sealed = (run / "nodes" / "transport" / "keys" / f"{pid}.key").read_bytes()
    assert sealed != old_sealed
    destroyed = [e["data"] for e in audit_entries(run) if e["kind"] == "partition_key_destroyed"]
    assert [(d["partition_id"], d["key_version"], d["public_key"]) for d in destroyed] == [
        (p, 1, before[p].public_key.hex()) for p in day_pids(changed)  # the late rider has both kinds
    ]


def test_a_charge_never_commits_without_its_audit_entry(
    node: NodeHandlers, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = day_pid(AS_OF)
    _, blinded = oprf.blind_many([b"a", b"b"], oprf.Mode.VOPRF)
    request = node_pb2.EvaluateRequest(partition_id=pid, blinded_elements=blinded, idempotency_key="crash")
    append = node.audit.append

    def crash_on_charge(kind: str, data: dict[str, object] | None = None) -> dict[str, object]:
        if kind == "evaluate" and data is not None and data.get("outcome") == "charged":
            raise OSError("the node died while writing its audit log")
        return append(kind, data)

    monkeypatch.setattr(node.audit, "append", crash_on_charge)
    with pytest.raises(OSError, match="died"):
        node.evaluate(request)
    assert node.ledger.budget(pid).used == 0
    assert node.ledger.replay(pid, "crash", hashlib.sha256(blinded).digest()) is None
    monkeypatch.setattr(node.audit, "append", append)
    assert node.evaluate(request).budget_left == node.ledger.budget(pid).total - 2


def test_a_serving_node_rolls_to_its_next_date(run: Path) -> None:
    late_day, next_day = AS_OF - dt.timedelta(days=5), AS_OF + dt.timedelta(days=1)
    leaving = AS_OF - dt.timedelta(days=13)
    node = open_node(run, "transport")
    try:
        before = {p.partition_id: p for p in node.manifest().partitions}
        path = run / "data" / "transport" / "tickets.parquet"
        table = pq.read_table(path)
        row = {**ticket_rows((late_day - FIRST_DAY).days)[0], "subject_id": ids.from_int(99000000000000002)}
        with pq.ParquetWriter(path, table.schema) as writer:  # a late row, delivered while the node serves
            writer.write_table(table)
            writer.write_table(pa.Table.from_pylist([row], schema=table.schema))
        assert node.roller is not None and node.roller.roll(next_day)
        assert not node.roller.roll(next_day)
        with pytest.raises(ValueError, match="only moves forward"):
            node.roller.roll(AS_OF)
        signed = node.get_manifest(node_pb2.GetManifestRequest())
        identity = load_identities(PkiPaths(run)).node("transport").public_bytes_raw()
        manifest = verify_manifest(signed, identity)
        after = {p.partition_id: p for p in manifest.partitions}
        assert manifest.as_of == next_day.isoformat()
        assert set(after) - set(before) == set(day_pids(next_day))
        assert set(before) - set(after) == set(day_pids(leaving))
        assert after[day_pid(late_day)].key_version == 2
        assert after[day_pid(late_day)].public_key != before[day_pid(late_day)].public_key
        assert after[day_pid(AS_OF)].public_key == before[day_pid(AS_OF)].public_key
        assert download(node, day_pid(next_day))
        _, blinded = oprf.blind_many([b"a"], oprf.Mode.VOPRF)
        with pytest.raises(NotFound):
            node.evaluate(node_pb2.EvaluateRequest(partition_id=day_pid(leaving), blinded_elements=blinded))
        with pytest.raises(NotFound):
            download(node, day_pid(leaving))
    finally:
        node.close()
    secrets = run / "nodes" / "transport.secrets" / "days"
    assert not (run / "nodes" / "transport" / "keys" / f"{day_pid(leaving)}.key").exists()
    assert not (secrets / f"{leaving.isoformat()}.key").exists()
    assert (secrets / f"{next_day.isoformat()}.key").exists()
    entries = audit_entries(run)
    left = [e["data"] for e in entries if e["kind"] == "partition_key_destroyed" and "window" in e["data"]]
    shredded = [(d["partition_id"], d["day_key_shredded"]) for d in left]
    assert shredded == [(p, True) for p in day_pids(leaving)]
    assert [e["data"]["as_of"] for e in entries if e["kind"] == "node_rolled"] == [next_day.isoformat()]
    chain = verify_file(run / "nodes" / "transport" / "audit.jsonl",
                        load_identities(PkiPaths(run)).node("transport"))
    assert chain.ok and chain.unsigned_tail == 0, chain.summary()
